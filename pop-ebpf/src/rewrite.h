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

/* The Ethernet header for the next hop: its MACs, and its VLAN tag
 * (nh->vlan, 0: none). A frame that came tagged keeps its tag with the new
 * id (and its priority bits), loses it, or an untagged one gets one
 * (bpf_xdp_adjust_head by 4 bytes either way: the EtherType after the tag is
 * already where it belongs, so only the MACs are written). Every packet
 * pointer is invalid afterwards. Returns 0, or -1 when the frame could not be
 * resized. */
static __always_inline int rewrite_l2(struct xdp_md *ctx, int tagged,
				      const struct pop_nexthop *nh)
{
	struct ethhdr *eth;
	struct vlan_tag *tag;
	void *data_end;
	__u16 vlan = nh->vlan & 0x0FFF;

	if (tagged && !vlan) {
		if (bpf_xdp_adjust_head(ctx, (int)sizeof(struct vlan_tag)))
			return -1;
	} else if (!tagged && vlan) {
		if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct vlan_tag)))
			return -1;
	}
	eth = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if ((void *)(eth + 1) > data_end)
		return -1;
	__builtin_memcpy(eth->h_dest, nh->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, nh->smac, ETH_ALEN);
	if (vlan) {
		tag = (void *)(eth + 1);
		if ((void *)(tag + 1) > data_end)
			return -1;
		eth->h_proto = bpf_htons(ETH_P_8021Q);
		tag->tci = bpf_htons((tagged ? bpf_ntohs(tag->tci) & 0xF000 : 0) | vlan);
	}
	return 0;
}

#endif
