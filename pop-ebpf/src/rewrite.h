/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* Egress rewrite: MACs, TTL / hop limit, incremental IPv4 checksum. */
#ifndef POP_REWRITE_H
#define POP_REWRITE_H

#include "parse.h"

/* RFC 1624 incremental update for a TTL decrement (as the kernel's
 * ip_decrease_ttl): the 16-bit word holding TTL drops by 0x0100. */
static __always_inline void ipv4_decrease_ttl(struct iphdr *iph)
{
	__u32 check = (__u32)iph->check;

	check += (__u32)bpf_htons(0x0100);
	iph->check = (__sum16)(check + (check >= 0xFFFF));
	iph->ttl--;
}

static __always_inline void rewrite_macs(struct ethhdr *eth,
					 const struct pop_nexthop *nh)
{
	__builtin_memcpy(eth->h_dest, nh->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, nh->smac, ETH_ALEN);
}

#endif
