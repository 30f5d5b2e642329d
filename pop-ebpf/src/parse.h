/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* Header parsing in the xdp-tools idiom: a cursor, one function per header,
 * a bounds check right before every access. Each parser returns a verdict
 * for the pipeline: continue, hand to the kernel, or drop as malformed. */
#ifndef POP_PARSE_H
#define POP_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "abi.h"

#ifndef ETH_P_8021Q
#define ETH_P_8021Q 0x8100
#endif
#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

struct hdr_cursor {
	void *pos;
};

/* What the parsers learned about a packet; the later stages read only this. */
struct packet {
	__u32 frame_len;
	__u32 l3_len; /* IP header + payload, for the MTU check */
	__u16 eth_proto; /* host order */
	__u8 l4_proto;
	__u8 non_first_fragment;
	__u16 sport; /* host order, 0 when absent */
	__u16 dport;
	union {
		__be32 v4;
		__u8 v6[16];
	} src, dst;
	/* Any fragment, the first included: hashed without ports (route.h).
	 * Kept last: inserted before sport, it shifted the stack layout enough
	 * to triple the verifier's work. */
	__u32 fragment;
	/* An ICMP / ICMPv6 error (or a type pop does not know, or truncated):
	 * never answered with an ICMP error (icmp.h). */
	__u8 icmp_error;
};

enum parse_verdict {
	PARSE_OK = 0,
	PARSE_PASS, /* hand to the kernel; pass_reason says why */
	PARSE_MALFORMED,
};

static __always_inline int parse_ethhdr(struct hdr_cursor *cur, void *data_end,
					struct ethhdr **eth)
{
	struct ethhdr *hdr = cur->pos;

	if ((void *)(hdr + 1) > data_end)
		return -1;
	cur->pos = hdr + 1;
	*eth = hdr;
	return bpf_ntohs(hdr->h_proto);
}

/* An 802.1Q / 802.1ad tag, after the MACs' EtherType slot (which holds the
 * tag's TPID). */
struct vlan_tag {
	__be16 tci;
	__be16 encap_proto;
};

/* Skips one VLAN tag: its id in *vid; returns the EtherType it carries, -1
 * when the frame ends inside it. */
static __always_inline int parse_vlan(struct hdr_cursor *cur, void *data_end,
				      __u32 *vid)
{
	struct vlan_tag *tag = cur->pos;

	if ((void *)(tag + 1) > data_end)
		return -1;
	cur->pos = tag + 1;
	*vid = bpf_ntohs(tag->tci) & 0x0FFF;
	return bpf_ntohs(tag->encap_proto);
}

/* Whether an ICMP message of `type` is an error (or unknown): RFC 792 and
 * RFC 1812 4.3.2.7 for IPv4 (the informational types 0, 8-10, 13-18 are
 * not), RFC 4443 2.1 for ICMPv6 (0-127 are errors). */
static __always_inline int icmp_type_is_error(__u16 eth_proto, __u8 type)
{
	if (eth_proto == ETH_P_IPV6)
		return type < 128;
	return !(type == 0 || (type >= 8 && type <= 10) ||
		 (type >= 13 && type <= 18));
}

/* The ports of a TCP or UDP header at the cursor. `l3_end` is where the IP
 * packet ends (its total / payload length; the frame may carry padding
 * beyond it): a transport header that does not fit inside the packet is
 * malformed (RFC 768 and RFC 9293 define no shorter headers; a first
 * fragment too short for its TCP header is the tiny-fragment attack of
 * RFC 1858), so no port is ever read from padding. Each bound is checked
 * against l3_end and, for the verifier, data_end (l3_end <= data_end). */
static __always_inline int parse_ports(struct hdr_cursor *cur, void *data_end,
				       void *l3_end, struct packet *pkt)
{
	if (pkt->non_first_fragment)
		return PARSE_OK;
	if ((pkt->eth_proto == ETH_P_IP && pkt->l4_proto == IPPROTO_ICMP) ||
	    (pkt->eth_proto == ETH_P_IPV6 && pkt->l4_proto == IPPROTO_ICMPV6)) {
		__u8 *type = cur->pos;

		/* A type outside the IP packet is read as an error: never answered. */
		pkt->icmp_error = (void *)(type + 1) > data_end ||
				  (void *)(type + 1) > l3_end ||
				  icmp_type_is_error(pkt->eth_proto, *type);
		return PARSE_OK;
	}
	if (pkt->l4_proto == IPPROTO_TCP) {
		struct tcphdr *tcp = cur->pos;

		if ((void *)(tcp + 1) > l3_end || (void *)(tcp + 1) > data_end)
			return PARSE_MALFORMED;
		pkt->sport = bpf_ntohs(tcp->source);
		pkt->dport = bpf_ntohs(tcp->dest);
	} else if (pkt->l4_proto == IPPROTO_UDP) {
		struct udphdr *udp = cur->pos;

		if ((void *)(udp + 1) > l3_end || (void *)(udp + 1) > data_end)
			return PARSE_MALFORMED;
		pkt->sport = bpf_ntohs(udp->source);
		pkt->dport = bpf_ntohs(udp->dest);
	}
	return PARSE_OK;
}

/* Folds a sum of 32-bit words into the 16-bit ones' complement sum. */
static __always_inline __u32 csum_fold_words(__u64 sum)
{
	sum = (sum & 0xFFFFFFFF) + (sum >> 32);
	sum = (sum & 0xFFFFFFFF) + (sum >> 32);
	sum = (sum & 0xFFFF) + (sum >> 16);
	sum = (sum & 0xFFFF) + (sum >> 16);
	return (__u32)sum;
}

/* RFC 1071: a header whose checksum is right sums to 0xFFFF (-0). The
 * 20-byte header without options, already inside the frame. */
static __always_inline int ipv4_checksum_ok(const struct iphdr *iph)
{
	const __u32 *word = (const __u32 *)iph;

	return csum_fold_words((__u64)word[0] + word[1] + word[2] + word[3] +
			       word[4]) == 0xFFFF;
}

/* The same for a header with options (IHL 6..15): a bounded walk over its
 * 32-bit words, each checked inside the frame. */
static __always_inline int ipv4_checksum_with_options_ok(const struct iphdr *iph,
							 void *data_end)
{
	const __u32 *word = (const __u32 *)iph;
	__u32 words = iph->ihl;
	__u64 sum = (__u64)word[0] + word[1] + word[2] + word[3] + word[4];
	int i;

#pragma unroll
	for (i = 5; i < 15; i++) {
		if (i < words) {
			if ((void *)(word + i + 1) > data_end)
				return 0;
			sum += word[i];
		}
	}
	return csum_fold_words(sum) == 0xFFFF;
}

static __always_inline int parse_ipv4(struct hdr_cursor *cur, void *data_end,
				      struct packet *pkt, struct iphdr **out,
				      __u32 *pass_reason)
{
	struct iphdr *iph = cur->pos;
	__u32 tot_len;

	if ((void *)(iph + 1) > data_end)
		return PARSE_MALFORMED;
	if (iph->version != 4 || iph->ihl < 5)
		return PARSE_MALFORMED;
	tot_len = bpf_ntohs(iph->tot_len);
	if (tot_len < iph->ihl * 4 || (void *)iph + tot_len > data_end)
		return PARSE_MALFORMED;
	if (iph->ihl != 5) {
		if (!ipv4_checksum_with_options_ok(iph, data_end))
			return PARSE_MALFORMED;
		*pass_reason = POP_PASS_IP_OPTIONS;
		return PARSE_PASS;
	}
	if (!ipv4_checksum_ok(iph))
		return PARSE_MALFORMED;
	*out = iph;
	pkt->l3_len = tot_len;
	pkt->l4_proto = iph->protocol;
	pkt->non_first_fragment = (bpf_ntohs(iph->frag_off) & IP_OFFSET) != 0;
	pkt->fragment = (bpf_ntohs(iph->frag_off) & (IP_MF | IP_OFFSET)) != 0;
	pkt->src.v4 = iph->saddr;
	pkt->dst.v4 = iph->daddr;
	cur->pos = iph + 1;
	return parse_ports(cur, data_end, (void *)iph + tot_len, pkt);
}

struct ipv6_opt_hdr_min {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct ipv6_frag_hdr_min {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

static __always_inline int parse_ipv6(struct hdr_cursor *cur, void *data_end,
				      struct packet *pkt, struct ipv6hdr **out,
				      __u32 *pass_reason)
{
	struct ipv6hdr *ip6h = cur->pos;
	__u32 payload_len;
	void *l3_end;
	__u8 nexthdr;
	int i;

	if ((void *)(ip6h + 1) > data_end)
		return PARSE_MALFORMED;
	if (ip6h->version != 6)
		return PARSE_MALFORMED;
	payload_len = bpf_ntohs(ip6h->payload_len);
	l3_end = (void *)(ip6h + 1) + payload_len;
	if (l3_end > data_end)
		return PARSE_MALFORMED;
	/* Payload length 0 means a jumbogram (RFC 2675), whose Jumbo Payload
	 * option sits in a hop-by-hop header; that goes to the kernel below,
	 * which checks the option. Without one, the length is wrong. */
	if (payload_len == 0 && ip6h->nexthdr != IPPROTO_HOPOPTS)
		return PARSE_MALFORMED;
	*out = ip6h;
	pkt->l3_len = sizeof(*ip6h) + payload_len;
	__builtin_memcpy(pkt->src.v6, &ip6h->saddr, 16);
	__builtin_memcpy(pkt->dst.v6, &ip6h->daddr, 16);
	cur->pos = ip6h + 1;
	nexthdr = ip6h->nexthdr;

	/* Walk extension headers to a fixed bound; hop-by-hop goes to the kernel. */
#pragma unroll
	for (i = 0; i < POP_IPV6_EXT_MAX; i++) {
		if (nexthdr == IPPROTO_HOPOPTS) {
			*pass_reason = POP_PASS_IP_OPTIONS;
			return PARSE_PASS;
		}
		if (nexthdr == IPPROTO_ROUTING || nexthdr == IPPROTO_DSTOPTS) {
			struct ipv6_opt_hdr_min *opt = cur->pos;

			if ((void *)(opt + 1) > l3_end ||
			    (void *)(opt + 1) > data_end)
				return PARSE_MALFORMED;
			nexthdr = opt->nexthdr;
			cur->pos = (void *)opt + (opt->hdrlen + 1) * 8;
			continue;
		}
		if (nexthdr == IPPROTO_FRAGMENT) {
			struct ipv6_frag_hdr_min *frag = cur->pos;

			if ((void *)(frag + 1) > l3_end ||
			    (void *)(frag + 1) > data_end)
				return PARSE_MALFORMED;
			nexthdr = frag->nexthdr;
			if (bpf_ntohs(frag->frag_off) & 0xFFF8)
				pkt->non_first_fragment = 1;
			pkt->fragment = 1;
			cur->pos = frag + 1;
			continue;
		}
		break;
	}
	if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	    nexthdr == IPPROTO_DSTOPTS || nexthdr == IPPROTO_FRAGMENT) {
		/* Deeper chain than we walk: let the kernel deal with it. */
		*pass_reason = POP_PASS_IP_OPTIONS;
		return PARSE_PASS;
	}
	/* The last extension header must end inside the packet too. */
	if (cur->pos > l3_end)
		return PARSE_MALFORMED;
	pkt->l4_proto = nexthdr;
	return parse_ports(cur, data_end, l3_end, pkt);
}

#endif
