/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Per-customer policer (step 6 of the packet path): a token bucket per customer and
 * direction, shared by all CPUs under a bpf_spin_lock. Tokens are counted in
 * bit-nanoseconds (bytes * 8e9): refilling adds elapsed_ns * rate_bps, a packet
 * costs len * 8e9, so there is no division and no rounding drift at low rates.
 * The refill is capped at fill_ns (the time to fill an empty bucket), which
 * also keeps the product from overflowing.
 */
#ifndef POP_POLICE_H
#define POP_POLICE_H

#include "maps.h"

#define NS_PER_SEC 1000000000ULL

/* 1 when the packet conforms (and its tokens were taken unless `peek`), 0
 * when over rate. */
static __always_inline int policer_admit(__u32 customer_id, __u32 dir,
					 __u32 bytes, int peek)
{
	__u32 index = customer_id * POP_DIR_MAX + dir;
	__u64 cost = (__u64)bytes * 8 * NS_PER_SEC;
	struct pop_policer *p;
	__u64 now, elapsed, add;
	int ok;

	if (!customer_id || customer_id >= POP_MAX_CUSTOMERS)
		return 1;
	p = bpf_map_lookup_elem(&policers, &index);
	if (!p || p->rate_bps == 0)
		return 1;
	/* Helpers cannot be called under the lock: read the clock first. */
	now = bpf_ktime_get_ns();
	bpf_spin_lock(&p->lock);
	elapsed = now > p->last_ns ? now - p->last_ns : 0;
	if (now > p->last_ns)
		p->last_ns = now;
	if (elapsed >= p->fill_ns) {
		p->tokens = p->capacity;
	} else {
		add = elapsed * p->rate_bps;
		if (add >= p->capacity - p->tokens)
			p->tokens = p->capacity;
		else
			p->tokens += add;
	}
	ok = p->tokens >= cost;
	if (ok && !peek)
		p->tokens -= cost;
	bpf_spin_unlock(&p->lock);
	return ok;
}

/* Gives back the tokens policer_admit took for a packet that was dropped
 * later, so a packet the receiver's bucket refuses does not also use up the
 * sender's rate. */
static __always_inline void policer_refund(__u32 customer_id, __u32 dir,
					   __u32 bytes)
{
	__u32 index = customer_id * POP_DIR_MAX + dir;
	__u64 cost = (__u64)bytes * 8 * NS_PER_SEC;
	struct pop_policer *p;

	if (!customer_id || customer_id >= POP_MAX_CUSTOMERS)
		return;
	p = bpf_map_lookup_elem(&policers, &index);
	if (!p || p->rate_bps == 0)
		return;
	bpf_spin_lock(&p->lock);
	if (cost >= p->capacity - p->tokens)
		p->tokens = p->capacity;
	else
		p->tokens += cost;
	bpf_spin_unlock(&p->lock);
}

/* Step 6: 0 when the packet may go on, else the customer whose policer
 * dropped it (the sender's bucket is checked before the receiver's; when the
 * receiver's refuses, the sender gets its tokens back). `peek` (the trace
 * program) asks without taking tokens. */
/* A global (not inlined) function of scalars: the verifier checks the two
 * buckets once, on their own, and the pipeline continues with one unknown
 * answer instead of a state per admit/refuse path. */
__noinline __u32 pop_policer_drops(__u32 customer_out, __u32 customer_in,
				   __u32 bytes, int peek)
{
	if (!policer_admit(customer_out, POP_DIR_OUT, bytes, peek))
		return customer_out;
	if (!policer_admit(customer_in, POP_DIR_IN, bytes, peek)) {
		if (!peek)
			policer_refund(customer_out, POP_DIR_OUT, bytes);
		return customer_in;
	}
	return 0;
}

_Static_assert((POP_MAX_CUSTOMERS & (POP_MAX_CUSTOMERS - 1)) == 0,
	       "policer_rate masks customer ids");

/* The rate of customer `customer_id`'s bucket in direction `dir`, 0 when it
 * has none: one array load, which the verifier inlines. A hint only, read
 * without the lock (pop_policer_drops reads it again under it). The id is
 * masked, not compared: compared, the verifier would carry what it learned
 * about the id through the rest of the pipeline in twice the states. An id
 * out of range reads another customer's rate, which at worst makes the call
 * that answers for it. */
static __always_inline __u64 policer_rate(__u32 customer_id, __u32 dir)
{
	__u32 index = (customer_id & (POP_MAX_CUSTOMERS - 1)) * POP_DIR_MAX + dir;
	struct pop_policer *p = bpf_map_lookup_elem(&policers, &index);

	return p ? p->rate_bps : 0;
}

/* The call into pop_policer_drops costs more than the two loads that tell
 * whether either customer has a policer at all (most have none): only a
 * packet with a policer on its way makes it. Customer 0 ("none") has no
 * bucket. */
static __always_inline __u32 policer_drops(__u32 customer_out,
					   __u32 customer_in, __u32 bytes,
					   int peek)
{
	if ((policer_rate(customer_out, POP_DIR_OUT) |
	     policer_rate(customer_in, POP_DIR_IN)) == 0)
		return 0;
	return pop_policer_drops(customer_out, customer_in, bytes, peek);
}

#endif
