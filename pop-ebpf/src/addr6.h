/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * What the data plane knows about an IPv6 packet's two addresses, from one
 * fib6 walk each (fib6.h): the destination's route, customer and local flag,
 * and the source's customer. The answers go into the same struct as IPv4's
 * (addr4.h), with the same flags, so the stages after it read one struct
 * whatever the family and no stage repeats a lookup.
 */
#ifndef POP_ADDR6_H
#define POP_ADDR6_H

#include "maps.h"
#include "parse.h"
#include "addr4.h"

/* Both walks of an IPv6 packet (addresses as in the packet), inlined here.
 * A global (not inlined) function: the verifier checks the walks' loops
 * once, and the pipeline continues in one state with four unknown answers.
 * (Inlined into the pipeline, the program's stack passes the 512-byte limit
 * with the ICMP builder's frame, and the verifier processes 930k
 * instructions. IPv4's two lookups, a few array loads, are inlined:
 * addr4.h.) */
__noinline int pop_addr6_lookup(const struct pop_local_v6 *dst,
				const struct pop_local_v6 *src,
				struct addr4_answers *a)
{
	__u32 d, s;

	if (!dst || !src || !a)
		return 0;
	d = fib6_lookup(dst->addr);
	s = fib6_lookup(src->addr);
	a->dst_route_id = fib6_route_id(d);
	a->dst_flags = (a->dst_route_id ? POP_FIB4_ROUTE : 0) |
		       (d & POP_FIB6_LOCAL ? POP_FIB4_LOCAL : 0);
	a->dst_customer = fib6_customer_id(d);
	a->src_customer = fib6_customer_id(s);
	return 0;
}

static __always_inline void addr6_lookup(const struct packet *pkt,
					 struct addr4_answers *a)
{
	pop_addr6_lookup((const struct pop_local_v6 *)pkt->dst.v6,
			 (const struct pop_local_v6 *)pkt->src.v6, a);
}

/* The destination's route record, or NULL: no route. */
static __always_inline struct pop_route *addr6_route(const struct addr4_answers *a)
{
	__u32 id = a->dst_route_id;

	if (!id)
		return NULL;
	return bpf_map_lookup_elem(&fib6_routes, &id);
}

#endif
