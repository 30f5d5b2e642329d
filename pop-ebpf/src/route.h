/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* Longest-prefix route lookup (IPv4: fib4, IPv6: fib6)
 * and ECMP next-hop choice by flow hash. */
#ifndef POP_ROUTE_H
#define POP_ROUTE_H

#include "maps.h"
#include "parse.h"

static __always_inline __u32 rotl32(__u32 x, __u32 r)
{
	return (x << r) | (x >> (32 - r));
}

/* murmur3-style mixing: cheap, and spreads 5-tuples well over ECMP sets. */
static __always_inline __u32 hash_mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = rotl32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = rotl32(h, 13);
	return h * 5 + 0xe6546b64;
}

static __always_inline __u32 hash_final(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* Fragments hash on addresses and protocol only: later fragments carry no
 * ports, and all fragments of a datagram must take the same next hop (as in
 * the kernel's multipath hash). */
static __always_inline __u32 flow_hash(const struct packet *pkt)
{
	__u32 h = 0x9747b28c;
	__u32 ports = 0;

	if (!pkt->fragment)
		ports = ((__u32)pkt->sport << 16) | pkt->dport;

	if (pkt->eth_proto == ETH_P_IP) {
		h = hash_mix(h, pkt->src.v4);
		h = hash_mix(h, pkt->dst.v4);
	} else {
		const __u32 *s = (const __u32 *)pkt->src.v6;
		const __u32 *d = (const __u32 *)pkt->dst.v6;

		h = hash_mix(h, s[0] ^ s[1] ^ s[2] ^ s[3]);
		h = hash_mix(h, d[0] ^ d[1] ^ d[2] ^ d[3]);
	}
	h = hash_mix(h, ports);
	h = hash_mix(h, pkt->l4_proto);
	return hash_final(h);
}

static __always_inline struct pop_route *route_lookup(const struct packet *pkt)
{
	if (pkt->eth_proto == ETH_P_IP) {
		const struct pop_fib4_result *r = fib4_lookup(pkt->dst.v4);
		__u32 id;

		if (!r || (r->flags & (POP_FIB4_ROUTE | POP_FIB4_BLACKHOLE)) != POP_FIB4_ROUTE)
			return NULL;
		id = r->route_id;
		return bpf_map_lookup_elem(&fib4_routes, &id);
	} else {
		__u32 id = fib6_route_id(fib6_lookup(pkt->dst.v6));

		if (!id)
			return NULL;
		return bpf_map_lookup_elem(&fib6_routes, &id);
	}
}

/* The next hop for this flow, or NULL when the route has none usable. */
static __always_inline struct pop_nexthop *
nexthop_select(const struct pop_route *route, const struct packet *pkt)
{
	__u32 count = route->nh_count;
	__u32 index = 0;
	__u32 nh_id;

	if (count == 0 || count > POP_MAX_ECMP)
		return NULL;
	if (count > 1)
		index = flow_hash(pkt) % count;
	/* Hide the value from clang, which would otherwise drop the bound
	 * check below that the verifier needs. */
	asm volatile("" : "+r"(index));
	if (index >= POP_MAX_ECMP)
		return NULL;
	nh_id = route->nh_ids[index];
	return bpf_map_lookup_elem(&nexthops, &nh_id);
}

#endif
