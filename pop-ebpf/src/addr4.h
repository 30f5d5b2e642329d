/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * What the data plane knows about an IPv4 packet's two addresses, from one
 * fib4 lookup each (fib4.h):
 *   destination: the route (ECMP group or blackhole), the receiving customer,
 *                and whether it is this host's address or a directed
 *                broadcast (then the kernel gets the packet);
 *   source:      the sending customer (also the anti-spoofing fast path,
 *                spoof.h).
 * The pipeline looks both up once, before it classifies the packet, and every
 * stage reads the copies here: no stage repeats a lookup.
 */
#ifndef POP_ADDR4_H
#define POP_ADDR4_H

#include "maps.h"
#include "parse.h"

struct addr4_answers {
	__u32 dst_flags; /* POP_FIB4_* of the destination */
	__u32 dst_route_id; /* with POP_FIB4_ROUTE: the ECMP group */
	__u32 dst_customer; /* 0: none */
	__u32 src_customer; /* 0: none */
};

/* Both lookups of an IPv4 packet (addresses in network order). A missing
 * record (inconsistent maps, which popd never writes) answers "nothing", like
 * a zeroed table. Inlined: as a global function (verified once, on its own)
 * its call and return cost ~8 ns per packet in the lab (docs/benchmarks.md,
 * "Where the lab's gap went"), and inlined the verifier still processes
 * about as many instructions: every answer is copied into `a` as a scalar,
 * so the found/missing paths meet in equal states. */
static __always_inline int pop_addr4_lookup(__u32 dst, __u32 src,
					    struct addr4_answers *a)
{
	const struct pop_fib4_result *r;

	if (!a)
		return 0;
	a->dst_flags = 0;
	a->dst_route_id = 0;
	a->dst_customer = 0;
	a->src_customer = 0;
	r = fib4_lookup(dst);
	if (r) {
		a->dst_flags = r->flags;
		a->dst_route_id = r->route_id;
		a->dst_customer = r->customer_id;
	}
	r = fib4_lookup(src);
	if (r)
		a->src_customer = r->customer_id;
	return 0;
}

static __always_inline void addr4_lookup(const struct packet *pkt,
					 struct addr4_answers *a)
{
	pop_addr4_lookup(pkt->dst.v4, pkt->src.v4, a);
}

/* Whether the destination is an address of this host or a directed
 * broadcast of one of its subnets: the kernel's to receive. */
static __always_inline int addr4_is_local(const struct addr4_answers *a)
{
	return (a->dst_flags & (POP_FIB4_LOCAL | POP_FIB4_BROADCAST)) != 0;
}

/* The destination's route record, or NULL: no route (the FIB's own
 * blackhole target counts as none; blackhole routes are records with
 * POP_ROUTE_BLACKHOLE). */
static __always_inline struct pop_route *addr4_route(const struct addr4_answers *a)
{
	__u32 id = a->dst_route_id;

	if ((a->dst_flags & (POP_FIB4_ROUTE | POP_FIB4_BLACKHOLE)) != POP_FIB4_ROUTE)
		return NULL;
	return bpf_map_lookup_elem(&fib4_routes, &id);
}

#endif
