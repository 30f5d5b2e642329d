/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* Per-CPU counters, in two records a packet may touch (abi.h):
 *   - its interface's (pop_iface_counters in iface_counters): the action,
 *     and the drop or pass reason, written once by the packet's one verdict;
 *   - its customers' (pop_customer_counters in customer_counters): looked up
 *     once when the pipeline finds the customers (struct pop_counts) and
 *     carried to the verdict, which adds the forwarded bytes or the drop.
 * There are no global per-reason counters: readers sum the interface
 * records (the record POP_NO_IFACE_SLOT holds packets on unknown ones).
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

static __always_inline void counter_bump(struct pop_counter *c, __u32 bytes)
{
	c->packets += 1;
	c->bytes += bytes;
}

/* The customers of a packet and their records, from step 3 on. The ids are
 * 0 for "no customer"; the records are then record 0, which is never
 * written, so the pointers are valid wherever the ids are read and the
 * verifier follows no NULL case through the rest of the pipeline. All NULL
 * in the trace program. */
struct pop_counts {
	__u32 out_id; /* the source's customer: its traffic is "out" */
	__u32 in_id; /* the destination's: "in" */
	struct pop_customer_counters *out;
	struct pop_customer_counters *in;
};

/* Step 3's lookups, one per customer. Nonzero only when a lookup fails,
 * which an id below POP_MAX_CUSTOMERS never does. */
static __always_inline int counts_find_customers(struct pop_trace *t,
						 struct pop_counts *n,
						 __u32 out_id, __u32 in_id)
{
	if (out_id >= POP_MAX_CUSTOMERS)
		out_id = 0;
	if (in_id >= POP_MAX_CUSTOMERS)
		in_id = 0;
	n->out_id = out_id;
	n->in_id = in_id;
	if (t)
		return 0;
	n->out = bpf_map_lookup_elem(&customer_counters, &out_id);
	n->in = in_id == out_id ? n->out :
				  bpf_map_lookup_elem(&customer_counters, &in_id);
	return !n->out || !n->in;
}

/* The interface's record: its slot's, or the one for unknown interfaces. */
static __always_inline struct pop_iface_counters *
iface_counters_of(const struct pop_iface *iface)
{
	__u32 slot = iface && iface->slot < POP_MAX_IFACES ? iface->slot :
							      POP_NO_IFACE_SLOT;

	return bpf_map_lookup_elem(&iface_counters, &slot);
}

static __always_inline void trace_action(struct pop_trace *t, __u32 action)
{
	t->action = action == POP_ACTION_TX	  ? XDP_TX :
		    action == POP_ACTION_REDIRECT ? XDP_REDIRECT :
		    action == POP_ACTION_PASS	  ? XDP_PASS :
						    XDP_DROP;
	t->done = 1;
}

/* A forwarded packet (tx or redirect): its interface's action count. */
static __always_inline void count_iface(struct pop_trace *t,
					const struct pop_iface *iface,
					__u32 action, __u32 bytes)
{
	struct pop_iface_counters *c;

	if (t) {
		trace_action(t, action);
		return;
	}
	c = iface_counters_of(iface);
	if (c && action < POP_ACTION_MAX)
		counter_bump(&c->action[action], bytes);
}

/* A forwarded packet: out for the source's customer, in for the
 * destination's. */
static __always_inline void count_customers(struct pop_trace *t,
					    const struct pop_counts *n,
					    __u32 bytes)
{
	if (t)
		return;
	if (n->out_id)
		counter_bump(&n->out->dir[POP_DIR_OUT], bytes);
	if (n->in_id)
		counter_bump(&n->in->dir[POP_DIR_IN], bytes);
}

/* A drop charged to the packet's customer on side `dir` (POP_DIR_OUT: the
 * source's), if it has one. */
static __always_inline void count_customer_drop(struct pop_trace *t,
						const struct pop_counts *n,
						__u32 dir, __u32 reason,
						__u32 bytes)
{
	struct pop_customer_counters *c = dir == POP_DIR_OUT ? n->out : n->in;
	__u32 id = dir == POP_DIR_OUT ? n->out_id : n->in_id;

	if (t || !id || reason >= POP_DROP_MAX)
		return;
	counter_bump(&c->drop[reason], bytes);
}

/* A drop charged to customer `id`, which need not be one of the packet's
 * (anti-spoofing: the port's customer); ids at or above POP_MAX_CUSTOMERS
 * are not counted. */
static __always_inline void count_customer_drop_id(struct pop_trace *t,
						   const struct pop_counts *n,
						   __u32 id, __u32 reason,
						   __u32 bytes)
{
	struct pop_customer_counters *c;

	if (t || !id || id >= POP_MAX_CUSTOMERS || reason >= POP_DROP_MAX)
		return;
	if (id == n->out_id)
		c = n->out;
	else if (id == n->in_id)
		c = n->in;
	else
		c = bpf_map_lookup_elem(&customer_counters, &id);
	if (c)
		counter_bump(&c->drop[reason], bytes);
}

static __always_inline int verdict_drop(struct pop_trace *t,
					const struct pop_iface *iface,
					__u32 reason, __u32 bytes)
{
	struct pop_iface_counters *c;

	if (t) {
		t->drop_reason = reason;
		trace_action(t, POP_ACTION_DROP);
		return XDP_DROP;
	}
	observe_note_reason(reason);
	c = iface_counters_of(iface);
	if (c) {
		counter_bump(&c->action[POP_ACTION_DROP], bytes);
		if (reason < POP_DROP_MAX)
			counter_bump(&c->drop[reason], bytes);
	}
	return XDP_DROP;
}

static __always_inline int verdict_pass(struct pop_trace *t,
					const struct pop_iface *iface,
					__u32 reason, __u32 bytes)
{
	struct pop_iface_counters *c;

	if (t) {
		t->pass_reason = reason;
		trace_action(t, POP_ACTION_PASS);
		return XDP_PASS;
	}
	observe_note_reason(reason);
	c = iface_counters_of(iface);
	if (c) {
		counter_bump(&c->action[POP_ACTION_PASS], bytes);
		if (reason < POP_PASS_MAX)
			counter_bump(&c->pass[reason], bytes);
	}
	return XDP_PASS;
}

/* A packet on an interface pop does not serve: counted in the record
 * POP_NO_IFACE_SLOT. Sampling and capture get no reason for it. */
static __always_inline int verdict_unknown_iface(struct pop_trace *t,
						 __u32 bytes)
{
	struct pop_iface_counters *c;

	if (t) {
		t->pass_reason = POP_PASS_UNKNOWN_IFACE;
		trace_action(t, POP_ACTION_PASS);
		return XDP_PASS;
	}
	c = iface_counters_of(NULL);
	if (c) {
		counter_bump(&c->action[POP_ACTION_PASS], bytes);
		counter_bump(&c->pass[POP_PASS_UNKNOWN_IFACE], bytes);
	}
	return XDP_PASS;
}

#endif
