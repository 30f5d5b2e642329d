/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * ICMP errors that pop sends itself (step 7 of the pipeline): a packet pop
 * would forward but cannot (TTL / hop limit <= 1, larger than the egress MTU
 * with DF set or IPv6) is answered from the receiving interface, because the
 * kernel holds none of pop's routes and could not.
 *
 * The reply is built in place: the frame grows at the front by the new IP
 * and ICMP headers, the Ethernet header (and its VLAN tag) moves to the new
 * front with its MACs swapped, the offending packet stays where it is as the
 * quote, and the tail is cut where RFC 1812 (576 bytes) or RFC 4443 (1280
 * bytes) end the error. It leaves by XDP_TX, out of the receiving port.
 *
 * The builder is a global function: the verifier checks it once, not once
 * per path of the pipeline that reaches it.
 */
#ifndef POP_ICMP_H
#define POP_ICMP_H

#include "maps.h"
#include "parse.h"
#include "counters.h"
#include "police.h" /* NS_PER_SEC */

#ifndef IP_DF
#define IP_DF 0x4000
#endif

/* ICMP (RFC 792) and ICMPv6 (RFC 4443) numbers; linux/icmp.h would pull in
 * libc headers. */
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4 /* code of ICMP_DEST_UNREACH */
#define ICMP_TIME_EXCEEDED 11
#define ICMP_EXC_TTL 0 /* code of ICMP_TIME_EXCEEDED */
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3
#define ICMPV6_EXC_HOPLIMIT 0 /* code of ICMPV6_TIME_EXCEED */

/* The ICMP / ICMPv6 header: type, code, checksum, one 32-bit word that
 * carries the MTU for Fragmentation Needed (low 16 bits) and Packet Too Big
 * (all 32), else zero. */
struct pop_icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 word;
};

/* Longest ICMP error, IP header included: RFC 1812 4.3.2.3, RFC 4443 2.4 (c). */
#define POP_ICMP_V4_MAX_LEN 576
#define POP_ICMP_V6_MAX_LEN 1280
/* New IP + ICMP headers in front of the quote. */
#define POP_ICMP_V4_HDRS (20 + 8)
#define POP_ICMP_V6_HDRS (40 + 8)
/* TTL / hop limit of the errors (the kernel's default). */
#define POP_ICMP_TTL 64
/* IPv4 TOS of ICMP errors: precedence "internetwork control", like Linux. */
#define POP_ICMP_TOS 0xc0

/* What to build: filled by the pipeline, read by pop_icmp_build. */
struct pop_icmp_request {
	__u32 l2_len; /* Ethernet header and VLAN tag: 14 or 18 */
	__u32 l3_len; /* the offending IP packet's length */
	__u32 ipv6; /* 1: ICMPv6 */
	__u32 type; /* ICMP / ICMPv6 type and code */
	__u32 code;
	__u32 mtu; /* for Fragmentation Needed and Packet Too Big */
	__u8 src[16]; /* the reply's source: ours (IPv4: first 4 bytes) */
	__u8 dst[16]; /* the offending packet's source */
};

/* Ones' complement sum of 32-bit words (as csum_partial) → checksum field. */
static __always_inline __u16 csum_fold64(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum & 0xffff;
}

/* Sum of the first `words` (at most 10) 32-bit words at `buf`, read
 * through a copy: reading a struct of 16-bit fields as words directly would
 * break C's aliasing rules, and clang would sum stale values. */
static __always_inline __u64 sum_words(const void *buf, int words)
{
	__u32 w[10];
	__u64 sum = 0;
	int i;

	__builtin_memcpy(w, buf, words * 4);
#pragma unroll
	for (i = 0; i < words; i++)
		sum += w[i];
	return sum;
}

/* What icmp_sum_word adds up: the 32-bit words of the frame from `offset`
 * (at most 62: Ethernet, a VLAN tag, IPv6). */
struct icmp_sum_words {
	struct xdp_md *xdp;
	__u32 offset;
	__u32 beyond; /* set when a word was beyond the frame */
	__u64 sum;
};

/* bpf_loop callback: adds word `i` (at most 310: 1280 bytes less the IPv6
 * header). The masks only bound the offset for the verifier. */
static long icmp_sum_word(__u32 i, void *arg)
{
	struct icmp_sum_words *w = arg;
	void *data = (void *)(long)w->xdp->data;
	void *data_end = (void *)(long)w->xdp->data_end;
	__u32 *word = data + (w->offset & 0x7f) + (i & 0x1ff) * 4;

	if ((void *)(word + 1) > data_end) {
		w->beyond = 1;
		return 1;
	}
	w->sum += *word;
	return 0;
}

/* Turns the frame into the ICMP error `r` describes. Returns the new frame
 * length, or -1 when the frame could not be resized (it may then be
 * half-built: drop it). */
__noinline int pop_icmp_build(struct xdp_md *ctx, struct pop_icmp_request *r)
{
	void *data, *data_end, *p;
	struct ethhdr *eth, *old;
	__u32 l2_len, hdr_len, ip_len, quote_len, max_len, icmp_off, icmp_len;
	__u32 cur_len, new_len, i, rem;
	__u64 sum = 0;
	struct icmp_sum_words words = {};
	__u8 tail[4] = {};
	int ipv6;

	if (!r)
		return -1;
	l2_len = r->l2_len;
	if (l2_len != ETH_HLEN && l2_len != ETH_HLEN + 4)
		return -1;
	ipv6 = r->ipv6 != 0;
	hdr_len = ipv6 ? POP_ICMP_V6_HDRS : POP_ICMP_V4_HDRS;
	ip_len = hdr_len - 8;
	max_len = ipv6 ? POP_ICMP_V6_MAX_LEN : POP_ICMP_V4_MAX_LEN;
	quote_len = r->l3_len;
	if (quote_len > max_len - hdr_len)
		quote_len = max_len - hdr_len;

	/* Room for the new headers in front; the Ethernet header moves there
	 * with its MACs swapped, keeping its VLAN tag and EtherType. */
	if (bpf_xdp_adjust_head(ctx, -(int)hdr_len))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	old = data + hdr_len;
	if ((void *)old + ETH_HLEN + 4 > data_end)
		return -1;
	__builtin_memcpy(eth->h_dest, old->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, old->h_dest, ETH_ALEN);
	if (l2_len == ETH_HLEN)
		__builtin_memcpy(&eth->h_proto, &old->h_proto, 2);
	else
		__builtin_memcpy(&eth->h_proto, &old->h_proto, 6);

	p = data + l2_len;
	if (!ipv6) {
		struct iphdr ip = {
			.version = 4,
			.ihl = 5,
			.tos = POP_ICMP_TOS,
			.tot_len = bpf_htons(POP_ICMP_V4_HDRS + quote_len),
			.frag_off = bpf_htons(IP_DF),
			.ttl = POP_ICMP_TTL,
			.protocol = IPPROTO_ICMP,
		};
		struct pop_icmphdr icmp = {
			.type = r->type,
			.code = r->code,
		};

		__builtin_memcpy(&ip.saddr, r->src, 4);
		__builtin_memcpy(&ip.daddr, r->dst, 4);
		ip.check = csum_fold64(sum_words(&ip, 5));
		if (r->type == ICMP_DEST_UNREACH)
			icmp.word = bpf_htonl(r->mtu & 0xffff);
		if (p + POP_ICMP_V4_HDRS > data_end)
			return -1;
		__builtin_memcpy(p, &ip, sizeof(ip));
		__builtin_memcpy(p + sizeof(ip), &icmp, sizeof(icmp));
	} else {
		struct ipv6hdr ip6 = {
			.version = 6,
			.payload_len = bpf_htons(8 + quote_len),
			.nexthdr = IPPROTO_ICMPV6,
			.hop_limit = POP_ICMP_TTL,
		};
		struct pop_icmphdr icmp6 = {
			.type = r->type,
			.code = r->code,
		};

		__builtin_memcpy(&ip6.saddr, r->src, 16);
		__builtin_memcpy(&ip6.daddr, r->dst, 16);
		if (r->type == ICMPV6_PKT_TOOBIG)
			icmp6.word = bpf_htonl(r->mtu);
		/* The pseudo-header: addresses, upper-layer length, next header. */
		sum = sum_words(&ip6.saddr, 8) + bpf_htonl(8 + quote_len) +
		      bpf_htonl(IPPROTO_ICMPV6);
		if (p + POP_ICMP_V6_HDRS > data_end)
			return -1;
		__builtin_memcpy(p, &ip6, sizeof(ip6));
		__builtin_memcpy(p + sizeof(ip6), &icmp6, sizeof(icmp6));
	}

	/* Cut what RFC 1812 / RFC 4443 do not let the error carry (and any
	 * Ethernet padding). */
	cur_len = data_end - data;
	new_len = l2_len + hdr_len + quote_len;
	if (new_len < cur_len && bpf_xdp_adjust_tail(ctx, (int)new_len - (int)cur_len))
		return -1;

	/* The ICMP checksum over header and quote, a word at a time, in a
	 * bpf_loop callback that the verifier checks once for any length. */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	icmp_off = l2_len + ip_len;
	icmp_len = 8 + quote_len;
	words.xdp = ctx;
	words.offset = icmp_off;
	words.sum = sum;
	i = icmp_len / 4;
	bpf_loop(i, icmp_sum_word, &words, 0);
	if (words.beyond)
		return -1;
	sum = words.sum;
	rem = icmp_len & 3;
	if (rem) {
		/* The last 1-3 bytes, zero-padded to a word (RFC 1071). */
		__u8 *b = data + icmp_off + i * 4;

		asm volatile("" : "+r"(b));
		if ((void *)(b + 1) > data_end)
			return -1;
		tail[0] = b[0];
		if (rem > 1) {
			if ((void *)(b + 2) > data_end)
				return -1;
			tail[1] = b[1];
		}
		if (rem > 2) {
			if ((void *)(b + 3) > data_end)
				return -1;
			tail[2] = b[2];
		}
		sum += *(__u32 *)tail;
	}
	p = data + icmp_off;
	if (p + 4 > data_end)
		return -1;
	*(__u16 *)(p + 2) = csum_fold64(sum);
	return new_len;
}

/* Whether pop may answer at all (RFC 1812 4.3.2.7, RFC 4443 2.4 (e)): never
 * about a non-first fragment, never about an ICMP error (or an ICMP type it
 * does not know, parse.h). Broadcast and multicast destinations and sources
 * never get here: the kernel got them, or they were dropped as martians. */
static __always_inline int icmp_error_allowed(const struct packet *pkt)
{
	return !pkt->non_first_fragment && !pkt->icmp_error;
}

/* The per-CPU token bucket of [icmp]: 1 when an error may be sent now (and
 * its token was taken unless `peek`), 0 when over the rate. */
static __always_inline int icmp_rate_allows(const struct pop_config *cfg,
					    int peek)
{
	struct pop_icmp_bucket *b;
	__u64 now, credit, cost, capacity;
	__u32 zero = 0, rate;

	if (!cfg || cfg->icmp_rate_per_s == 0)
		return 1;
	rate = cfg->icmp_rate_per_s;
	b = bpf_map_lookup_elem(&icmp_bucket, &zero);
	if (!b)
		return 1;
	cost = NS_PER_SEC / rate;
	capacity = cost * cfg->icmp_burst;
	now = bpf_ktime_get_ns();
	credit = b->credit_ns + (now - b->last_ns);
	if (credit > capacity || now < b->last_ns)
		credit = capacity;
	if (credit < cost) {
		if (!peek) {
			b->credit_ns = credit;
			b->last_ns = now;
		}
		return 0;
	}
	if (!peek) {
		b->credit_ns = credit - cost;
		b->last_ns = now;
	}
	return 1;
}

static __always_inline int addr_is_zero(const __u8 *a, int len)
{
	const __u32 *w = (const __u32 *)a;

	if (len == 4)
		return w[0] == 0;
	return (w[0] | w[1] | w[2] | w[3]) == 0;
}

/* Step 7's answer: the packet gets an ICMP error of `kind` (enum
 * pop_icmp_type, carrying `mtu` where the type has one) sent back out of the
 * receiving port, counted as tx there and in icmp_stats. When pop must not
 * answer (see icmp_error_allowed) or has no source address for the family,
 * the packet goes to the kernel as before, counted under `pass_reason`; over
 * the [icmp] rate it is dropped as icmp_rate_limited. `l2_len`: bytes before
 * the IP header. */
static __always_inline int answer_icmp(struct xdp_md *ctx, struct pop_trace *t,
				       const struct pop_iface *iface,
				       const struct packet *pkt, __u32 l2_len,
				       const struct pop_config *cfg,
				       __u32 kind, __u32 mtu, __u32 pass_reason)
{
	struct pop_icmp_request r = {};
	__u32 len = pkt->frame_len;
	int out_len;

	if (!icmp_error_allowed(pkt))
		return verdict_pass(t, iface, pass_reason, len);
	r.l2_len = l2_len;
	r.l3_len = pkt->l3_len;
	r.mtu = mtu;
	if (pkt->eth_proto == ETH_P_IP) {
		if (addr_is_zero(iface->icmp_src_v4, 4))
			return verdict_pass(t, iface, pass_reason, len);
		__builtin_memcpy(r.src, iface->icmp_src_v4, 4);
		__builtin_memcpy(r.dst, &pkt->src.v4, 4);
		r.type = kind == POP_ICMP_TIME_EXCEEDED ? ICMP_TIME_EXCEEDED : ICMP_DEST_UNREACH;
		r.code = kind == POP_ICMP_TIME_EXCEEDED ? ICMP_EXC_TTL : ICMP_FRAG_NEEDED;
	} else {
		if (addr_is_zero(iface->icmp_src_v6, 16))
			return verdict_pass(t, iface, pass_reason, len);
		__builtin_memcpy(r.src, iface->icmp_src_v6, 16);
		__builtin_memcpy(r.dst, pkt->src.v6, 16);
		r.ipv6 = 1;
		r.type = kind == POP_ICMP_TIME_EXCEEDED ? ICMPV6_TIME_EXCEED : ICMPV6_PKT_TOOBIG;
		r.code = ICMPV6_EXC_HOPLIMIT; /* Packet Too Big: 0 too */
	}
	if (t) {
		t->icmp_type = kind + 1;
		t->icmp_mtu = mtu;
	}
	if (!icmp_rate_allows(cfg, t != NULL))
		return verdict_drop(t, iface, POP_DROP_ICMP_RATE, len);
	out_len = pop_icmp_build(ctx, &r);
	if (out_len < 0)
		return verdict_drop(t, iface, POP_DROP_MALFORMED, len);
	if (!t && kind < POP_ICMP_MAX)
		counter_add(&icmp_stats, kind, out_len);
	count_iface(t, iface, POP_ACTION_TX, len);
	return XDP_TX;
}

#endif
