/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* Per-CPU counters. Every verdict leaves exactly one interface/action count. */
#ifndef POP_COUNTERS_H
#define POP_COUNTERS_H

#include "maps.h"

static __always_inline void counter_add(void *map, __u32 index, __u32 bytes)
{
	struct pop_counter *c = bpf_map_lookup_elem(map, &index);

	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}

static __always_inline void count_iface(const struct pop_iface *iface,
					__u32 action, __u32 bytes)
{
	if (iface && iface->slot < POP_MAX_IFACES)
		counter_add(&iface_stats, iface->slot * POP_ACTION_MAX + action,
			    bytes);
}

static __always_inline void count_customer(__u32 customer_id, __u32 dir,
					   __u32 bytes)
{
	if (customer_id && customer_id < POP_MAX_CUSTOMERS)
		counter_add(&cust_stats, customer_id * POP_DIR_MAX + dir, bytes);
}

static __always_inline void count_customer_drop(__u32 customer_id,
						__u32 reason, __u32 bytes)
{
	if (customer_id && customer_id < POP_MAX_CUSTOMERS &&
	    reason < POP_DROP_MAX)
		counter_add(&cust_drops, customer_id * POP_DROP_MAX + reason,
			    bytes);
}

static __always_inline int verdict_drop(const struct pop_iface *iface,
					__u32 reason, __u32 bytes)
{
	counter_add(&drop_stats, reason, bytes);
	count_iface(iface, POP_ACTION_DROP, bytes);
	return XDP_DROP;
}

static __always_inline int verdict_pass(const struct pop_iface *iface,
					__u32 reason, __u32 bytes)
{
	counter_add(&pass_stats, reason, bytes);
	count_iface(iface, POP_ACTION_PASS, bytes);
	return XDP_PASS;
}

#endif
