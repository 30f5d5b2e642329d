/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * pop's XDP data plane. The pipeline reads top to bottom in the order a
 * packet meets it (docs/reference.md, "What the data plane does"):
 *   1. parse Ethernet, drop unicast for other hosts (hostmac.h), IPv4/IPv6
 *      (parse.h)
 *   2. hand to the kernel what is not ours to forward; drop martians
 *   3. find the customers by source and destination prefix (one fib4 or
 *      fib6 lookup per address answers route, customer and local, addr4.h,
 *      addr6.h)
 *      then admission: anti-spoofing (spoof.h), ACL (acl.h), policer (police.h)
 *   4. longest-prefix route, ECMP next hop by flow hash (route.h); what
 *      cannot be forwarded (TTL, MTU) is answered with an ICMP error (icmp.h)
 *   5. rewrite MACs and TTL, redirect through the devmap (rewrite.h)
 *   6. count everything per CPU (counters.h)
 * Around it, sampling (sFlow) and capture (observe.h).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi.h"
#include "maps.h"
#include "parse.h"
#include "hostmac.h"
#include "ifaces.h"
#include "counters.h"
#include "route.h"
#include "addr4.h"
#include "addr6.h"
#include "rewrite.h"
#include "spoof.h"
#include "acl.h"
#include "police.h"
#include "icmp.h"

static __always_inline int ipv4_is_martian_src(__be32 addr)
{
	__u32 a = bpf_ntohl(addr);

	return (a >> 24) == 0 || (a >> 24) == 127 || (a >> 28) >= 0xE;
}

static __always_inline int ipv4_is_martian_dst(__be32 addr)
{
	__u32 a = bpf_ntohl(addr);

	return (a >> 24) == 0 || (a >> 24) == 127 || ((a >> 28) == 0xF && a != 0xFFFFFFFF);
}

static __always_inline int ipv4_is_multicast_or_broadcast(__be32 addr)
{
	__u32 a = bpf_ntohl(addr);

	return (a >> 28) == 0xE || a == 0xFFFFFFFF;
}

static __always_inline int ipv4_is_link_local(__be32 addr)
{
	return (bpf_ntohl(addr) >> 16) == 0xA9FE;
}

static __always_inline int ipv6_is_unspecified_or_loopback(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return w[0] == 0 && w[1] == 0 && w[2] == 0 &&
	       (w[3] == 0 || w[3] == bpf_htonl(1));
}

/* Classify addresses: 0 = go on, else a verdict already counted. `a4`:
 * the packet's fib4 or fib6 answers. */
static __always_inline int classify_addresses(struct pop_trace *t,
					      const struct packet *pkt,
					      const struct pop_iface *iface,
					      const struct addr4_answers *a4,
					      int *verdict)
{
	__u32 len = pkt->frame_len;

	if (pkt->eth_proto == ETH_P_IP) {
		if (ipv4_is_multicast_or_broadcast(pkt->dst.v4)) {
			*verdict = verdict_pass(t, iface, POP_PASS_MULTICAST, len);
			return 1;
		}
		if (ipv4_is_martian_src(pkt->src.v4) ||
		    ipv4_is_martian_dst(pkt->dst.v4)) {
			*verdict = verdict_drop(t, iface, POP_DROP_MARTIAN, len);
			return 1;
		}
		if (ipv4_is_link_local(pkt->src.v4) ||
		    ipv4_is_link_local(pkt->dst.v4)) {
			*verdict = verdict_pass(t, iface, POP_PASS_LINK_LOCAL, len);
			return 1;
		}
		if (addr4_is_local(a4)) {
			*verdict = verdict_pass(t, iface, POP_PASS_LOCAL, len);
			return 1;
		}
		return 0;
	}

	if (pkt->dst.v6[0] == 0xff) {
		*verdict = verdict_pass(t, iface, POP_PASS_MULTICAST, len);
		return 1;
	}
	if (pkt->src.v6[0] == 0xff ||
	    ipv6_is_unspecified_or_loopback(pkt->src.v6) ||
	    ipv6_is_unspecified_or_loopback(pkt->dst.v6)) {
		*verdict = verdict_drop(t, iface, POP_DROP_MARTIAN, len);
		return 1;
	}
	if ((pkt->src.v6[0] == 0xfe && (pkt->src.v6[1] & 0xc0) == 0x80) ||
	    (pkt->dst.v6[0] == 0xfe && (pkt->dst.v6[1] & 0xc0) == 0x80)) {
		*verdict = verdict_pass(t, iface, POP_PASS_LINK_LOCAL, len);
		return 1;
	}
	if (addr4_is_local(a4)) {
		*verdict = verdict_pass(t, iface, POP_PASS_LOCAL, len);
		return 1;
	}
	return 0;
}

/* The fib4 or fib6 answers (addr4.h, addr6.h). */
static __always_inline __u32 customer_of(const struct addr4_answers *a4,
					 int by_dst)
{
	return by_dst ? a4->dst_customer : a4->src_customer;
}

static __always_inline int no_route(struct pop_trace *t,
				    const struct pop_iface *iface,
				    __u32 cfg_flags,
				    const struct pop_counts *counts, __u32 len)
{
	if (cfg_flags & POP_CFG_NO_ROUTE_DROP) {
		count_customer_drop(t, counts, POP_DIR_OUT, POP_DROP_NO_ROUTE, len);
		return verdict_drop(t, iface, POP_DROP_NO_ROUTE, len);
	}
	return verdict_pass(t, iface, POP_PASS_NO_ROUTE, len);
}

/* The whole pipeline. `t` is NULL in the live program (pop_xdp), where every
 * `if (t)` branch compiles away, and the trace record in pop_trace. */
static __always_inline int pop_pipeline(struct xdp_md *ctx, struct pop_trace *t)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	/* The XDP port, and the interface the packet is on: the port, or the
	 * VLAN device for its tag. */
	__u32 port = ctx->ingress_ifindex, ifindex = port, vid = 0;
	int tagged = 0;
	struct hdr_cursor cur = { .pos = data };
	struct packet pkt = {};
	struct addr4_answers a4 = {};
	struct pop_iface *iface;
	struct iphdr *iph = NULL;
	struct ipv6hdr *ip6h = NULL;
	struct ethhdr *eth;
	struct pop_route *route;
	struct pop_nexthop *nh;
	__u32 customer_out, customer_in, pass_reason = 0, len;
	__u32 drop_customer, zero = 0, cfg_flags = 0, acl_copy = 0;
	struct pop_config *cfg;
	struct pop_counts counts = {};
	int proto, parsed, verdict;

	len = pkt.frame_len = data_end - data;
	iface = lookup_iface(ifindex);
	if (!iface)
		return verdict_unknown_iface(t, len);

	/* 1. Parse. */
	proto = parse_ethhdr(&cur, data_end, &eth);
	if (proto < 0)
		return verdict_drop(t, iface, POP_DROP_MALFORMED, len);
	if (proto == ETH_P_8021Q || proto == ETH_P_8021AD) {
		struct pop_vlan_key vkey = { .ifindex = port };
		struct pop_iface *vlan_iface;
		__u32 *dev;

		proto = parse_vlan(&cur, data_end, &vid);
		if (proto < 0)
			return verdict_drop(t, iface, POP_DROP_MALFORMED, len);
		/* Double tags (QinQ), and ids popd does not serve: the kernel's. */
		if (proto == ETH_P_8021Q || proto == ETH_P_8021AD)
			return verdict_pass(t, iface, POP_PASS_VLAN, len);
		vkey.vid = vid;
		dev = bpf_map_lookup_elem(&vlan_ifaces, &vkey);
		if (!dev)
			return verdict_pass(t, iface, POP_PASS_VLAN, len);
		ifindex = *dev;
		vlan_iface = lookup_iface(ifindex);
		if (!vlan_iface)
			return verdict_pass(t, iface, POP_PASS_VLAN, len);
		iface = vlan_iface;
		tagged = 1;
	}
	if (proto != ETH_P_IP && proto != ETH_P_IPV6)
		return verdict_pass(t, iface, POP_PASS_NON_IP, len);
	if (eth->h_dest[0] & 1)
		return verdict_pass(t, iface, POP_PASS_MULTICAST, len);
	/* Unicast to a MAC the host does not accept here: another router's. */
	if (!mac_is_for_host(iface, ifindex, eth->h_dest))
		return verdict_drop(t, iface, POP_DROP_OTHER_HOST, len);
	pkt.eth_proto = proto;
	if (proto == ETH_P_IP)
		parsed = parse_ipv4(&cur, data_end, &pkt, &iph, &pass_reason);
	else
		parsed = parse_ipv6(&cur, data_end, &pkt, &ip6h, &pass_reason);
	if (parsed == PARSE_MALFORMED)
		return verdict_drop(t, iface, POP_DROP_MALFORMED, len);
	if (parsed == PARSE_PASS)
		return verdict_pass(t, iface, pass_reason, len);

	/* 2. Not ours to forward, or never valid. */
	if (proto == ETH_P_IP)
		addr4_lookup(&pkt, &a4);
	else
		addr6_lookup(&pkt, &a4);
	if (classify_addresses(t, &pkt, iface, &a4, &verdict))
		return verdict;

	/* The global settings, read once: the ACL copy a packet uses must not
	 * change under it. */
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (cfg) {
		cfg_flags = cfg->flags;
		acl_copy = *(volatile __u32 *)&cfg->acl_copy & 1;
	}

	/* 3. Customers: the source's is sending (out), the destination's receiving (in). */
	customer_out = customer_of(&a4, 0);
	customer_in = customer_of(&a4, 1);
	if (t) {
		t->customer_out = customer_out;
		t->customer_in = customer_in;
	}
	/* Their counter records, looked up once here (counters.h). */
	if (counts_find_customers(t, &counts, customer_out, customer_in))
		return XDP_ABORTED;

	/* Admission (steps 4-6): anti-spoofing (spoof.h), ACL
	 * (acl.h), policer (police.h). Each costs ~nothing when unconfigured. */
	drop_customer = spoofed_on_port(iface, ifindex, &pkt, customer_out);
	if (drop_customer) {
		count_customer_drop_id(t, &counts, drop_customer,
				       POP_DROP_SPOOFED, len);
		return verdict_drop(t, iface, POP_DROP_SPOOFED, len);
	}
	if (acl_drops(&pkt, ifindex, acl_copy, len, t)) {
		count_customer_drop(t, &counts,
				    customer_out ? POP_DIR_OUT : POP_DIR_IN,
				    POP_DROP_ACL, len);
		return verdict_drop(t, iface, POP_DROP_ACL, len);
	}
	drop_customer = policer_drops(customer_out, customer_in, len, t != NULL);
	if (drop_customer) {
		if (t)
			t->policed_customer = drop_customer;
		count_customer_drop_id(t, &counts, drop_customer,
				       POP_DROP_POLICED, len);
		return verdict_drop(t, iface, POP_DROP_POLICED, len);
	}

	/* 4. Route and next hop. */
	route = proto == ETH_P_IP ? addr4_route(&a4) : addr6_route(&a4);
	if (!route)
		return no_route(t, iface, cfg_flags, &counts, len);
	if (t)
		t->route_found = 1;
	if (route->flags & POP_ROUTE_BLACKHOLE) {
		count_customer_drop(t, &counts, POP_DIR_OUT, POP_DROP_BLACKHOLE,
				    len);
		return verdict_drop(t, iface, POP_DROP_BLACKHOLE, len);
	}
	if ((iph && iph->ttl <= 1) || (ip6h && ip6h->hop_limit <= 1))
		return answer_icmp(ctx, t, iface, &pkt, tagged ? 18 : 14, cfg,
				   POP_ICMP_TIME_EXCEEDED, 0, POP_PASS_TTL);
	nh = nexthop_select(route, &pkt);
	if (t && nh) {
		t->egress_ifindex = nh->ifindex;
		__builtin_memcpy(t->dmac, nh->dmac, 6);
		__builtin_memcpy(t->smac, nh->smac, 6);
	}
	if (!nh || (nh->flags & (POP_NH_VALID | POP_NH_RESOLVED)) !=
			   (POP_NH_VALID | POP_NH_RESOLVED))
		return verdict_pass(t, iface, POP_PASS_UNRESOLVED, len);
	/* Too big: IPv4 without DF would need fragmenting, which XDP cannot
	 * do; the kernel gets it as before. */
	if (nh->mtu && pkt.l3_len > nh->mtu) {
		if (ip6h)
			return answer_icmp(ctx, t, iface, &pkt, tagged ? 18 : 14,
					   cfg, POP_ICMP_PACKET_TOO_BIG,
					   nh->mtu, POP_PASS_MTU);
		if (iph && (iph->frag_off & bpf_htons(IP_DF)))
			return answer_icmp(ctx, t, iface, &pkt, tagged ? 18 : 14,
					   cfg, POP_ICMP_FRAG_NEEDED,
					   nh->mtu, POP_PASS_MTU);
		return verdict_pass(t, iface, POP_PASS_MTU, len);
	}
	/* Choose the devmap slot before touching the packet: a redirect that
	 * falls back to the stack after a MAC rewrite would be dropped there.
	 * bpf_redirect_map does the one lookup and records the target for
	 * when the program returns XDP_REDIRECT; a port missing from the
	 * devmap answers XDP_PASS (the flags' low bits) and the packet goes
	 * to the kernel untouched. */
	if (nh->ifindex != port &&
	    bpf_redirect_map(&tx_ports, nh->ifindex, XDP_PASS) != XDP_REDIRECT)
		return verdict_pass(t, iface, POP_PASS_UNRESOLVED, len);

	/* 5. Rewrite and send: TTL first, while the IP header pointers hold,
	 * then the Ethernet header and VLAN tag for the next hop. */
	if (iph)
		ipv4_decrease_ttl(iph);
	else if (ip6h)
		ip6h->hop_limit--;
	/* Drivers leave XDP_PACKET_HEADROOM (256 bytes) before the frame, so
	 * growing it by a tag does not fail in practice. */
	if (rewrite_l2(ctx, tagged, nh))
		return verdict_drop(t, iface, POP_DROP_ADJUST_HEAD, len);

	/* 6. Count. */
	if (!t)
		observe_note_egress(nh->ifindex);
	count_customers(t, &counts, len);
	if (nh->ifindex == port) {
		count_iface(t, iface, POP_ACTION_TX, len);
		return XDP_TX;
	}
	count_iface(t, iface, POP_ACTION_REDIRECT, len);
	return XDP_REDIRECT;
}

#ifdef POP_VARIANT
/* Upgrade tests load this build beside the regular one: its instructions and
 * its maps differ (one extra map counting packets), as a real new release's
 * would. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} variant_marker SEC(".maps");
#endif

SEC("xdp")
int pop_xdp(struct xdp_md *ctx)
{
#ifdef POP_VARIANT
	__u32 zero = 0, *seen = bpf_map_lookup_elem(&variant_marker, &zero);

	if (seen)
		__sync_fetch_and_add(seen, 1);
#endif
	/* Sampling and capture (observe.h) see the packet before and after. */
#ifndef POP_NO_OBSERVE
	observe_begin(ctx);
	return observe_end(ctx, pop_pipeline(ctx, NULL));
#else
	return pop_pipeline(ctx, NULL);
#endif
}

/* `popctl trace`: the same pipeline on the same maps, run by popd through
 * BPF_PROG_TEST_RUN on a made-up packet, never attached. It records what it
 * did in trace_out, counts nothing and takes no policer tokens. */
SEC("xdp")
int pop_trace(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct pop_trace *t = bpf_map_lookup_elem(&trace_out, &zero);

	if (!t)
		return XDP_ABORTED;
	__builtin_memset(t, 0, sizeof(*t));
	return pop_pipeline(ctx, t);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
