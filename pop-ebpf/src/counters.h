/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* Per-CPU counters. Every verdict leaves exactly one interface/action count.
 *
 * `t` is the trace record of the trace program (pop_trace) and NULL in the
 * live program, where the compiler removes every `if (t)` branch: a traced
 * packet is recorded in `t` and counted nowhere. */
#ifndef POP_COUNTERS_H
#define POP_COUNTERS_H

#include "maps.h"
#include "observe.h"

static __always_inline void counter_add(void *map, __u32 index, __u32 bytes)
{
	struct pop_counter *c = bpf_map_lookup_elem(map, &index);

	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}

static __always_inline void count_iface(struct pop_trace *t,
					const struct pop_iface *iface,
					__u32 action, __u32 bytes)
{
	if (t) {
		t->action = action == POP_ACTION_TX	  ? XDP_TX :
			    action == POP_ACTION_REDIRECT ? XDP_REDIRECT :
			    action == POP_ACTION_PASS	  ? XDP_PASS :
							    XDP_DROP;
		t->done = 1;
		return;
	}
	if (iface && iface->slot < POP_MAX_IFACES)
		counter_add(&iface_stats, iface->slot * POP_ACTION_MAX + action,
			    bytes);
}

static __always_inline void count_customer(struct pop_trace *t,
					   __u32 customer_id, __u32 dir,
					   __u32 bytes)
{
	if (t)
		return;
	if (customer_id && customer_id < POP_MAX_CUSTOMERS)
		counter_add(&cust_stats, customer_id * POP_DIR_MAX + dir, bytes);
}

static __always_inline void count_customer_drop(struct pop_trace *t,
						__u32 customer_id,
						__u32 reason, __u32 bytes)
{
	if (t)
		return;
	if (customer_id && customer_id < POP_MAX_CUSTOMERS &&
	    reason < POP_DROP_MAX)
		counter_add(&cust_drops, customer_id * POP_DROP_MAX + reason,
			    bytes);
}

static __always_inline int verdict_drop(struct pop_trace *t,
					const struct pop_iface *iface,
					__u32 reason, __u32 bytes)
{
	if (t) {
		t->drop_reason = reason;
	} else {
		counter_add(&drop_stats, reason, bytes);
		observe_note_reason(reason);
	}
	count_iface(t, iface, POP_ACTION_DROP, bytes);
	return XDP_DROP;
}

static __always_inline int verdict_pass(struct pop_trace *t,
					const struct pop_iface *iface,
					__u32 reason, __u32 bytes)
{
	if (t) {
		t->pass_reason = reason;
	} else {
		counter_add(&pass_stats, reason, bytes);
		observe_note_reason(reason);
	}
	count_iface(t, iface, POP_ACTION_PASS, bytes);
	return XDP_PASS;
}

#endif
