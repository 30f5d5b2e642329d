/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Test and measurement programs for fib4.h (not part of the data plane):
 *   fib4_get    looks up the IPv4 destination of the frame and writes the
 *               answer (struct pop_fib4_result) over the 16 bytes after the
 *               IPv4 header; XDP_TX on an answer, XDP_ABORTED without one.
 *   fib4_bench  one fib4 lookup per run, of bench_addrs[i++ % 65536]: run
 *               with BPF_PROG_TEST_RUN and a repeat count, random addresses
 *               (no last-lookup cache helps).
 *   lpm4_bench  the same addresses in the kernel LPM trie lpm4_routes.
 *   base_bench  the same loop without a lookup, to subtract.
 *   xdp_fib4_loads the floor of an IPv4 packet's lookups, run by pop-bench
 *               behind its xdp_cycle driver: only the two fib4 lookups
 *               (destination, source) of the frame, on pop's pinned fib4
 *               maps, then XDP_PASS. Its cost minus XDP_PASS's is what the
 *               table's cache and TLB misses cost, whatever the rest of the
 *               pipeline does.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "fib4.h"

#define BENCH_ADDRS 65536

struct lpm4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 2097152);
	__type(key, struct lpm4_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} lpm4_routes SEC(".maps");

/* Destinations (network order) the bench programs cycle through. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BENCH_ADDRS);
	__type(key, __u32);
	__type(value, __u32);
} bench_addrs SEC(".maps");

/* [0]: the next index into bench_addrs, [1]: a sink the answers go into. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} bench_state SEC(".maps");

SEC("xdp")
int fib4_get(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	struct pop_fib4_result *out = (void *)(iph + 1);
	const struct pop_fib4_result *r;

	if ((void *)(out + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	r = fib4_lookup(iph->daddr);
	if (!r)
		return XDP_ABORTED;
	__builtin_memcpy(out, r, sizeof(*out));
	return XDP_TX;
}

static __always_inline __u32 *next_addr(__u32 **sink)
{
	__u32 zero = 0, one = 1, i;
	__u32 *next = bpf_map_lookup_elem(&bench_state, &zero);

	*sink = bpf_map_lookup_elem(&bench_state, &one);
	if (!next || !*sink)
		return NULL;
	i = (*next)++ & (BENCH_ADDRS - 1);
	return bpf_map_lookup_elem(&bench_addrs, &i);
}

SEC("xdp")
int fib4_bench(struct xdp_md *ctx)
{
	__u32 *sink, *addr = next_addr(&sink);
	const struct pop_fib4_result *r;

	if (!addr)
		return XDP_ABORTED;
	r = fib4_lookup(*addr);
	if (r)
		*sink += r->route_id;
	return XDP_DROP;
}

SEC("xdp")
int lpm4_bench(struct xdp_md *ctx)
{
	__u32 *sink, *addr = next_addr(&sink);
	struct lpm4_key key = { .prefixlen = 32 };
	__u32 *route;

	if (!addr)
		return XDP_ABORTED;
	__builtin_memcpy(key.addr, addr, 4);
	route = bpf_map_lookup_elem(&lpm4_routes, &key);
	if (route)
		*sink += *route;
	return XDP_DROP;
}

SEC("xdp")
int base_bench(struct xdp_md *ctx)
{
	__u32 *sink, *addr = next_addr(&sink);

	if (!addr)
		return XDP_ABORTED;
	*sink += *addr;
	return XDP_DROP;
}

SEC("xdp")
int xdp_fib4_loads(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *iph = data + sizeof(struct ethhdr);
	const struct pop_fib4_result *d, *s;
	__u32 sum = 0;

	if ((void *)(iph + 1) > data_end)
		return XDP_ABORTED;
	d = fib4_lookup(iph->daddr);
	s = fib4_lookup(iph->saddr);
	if (d)
		sum += d->flags + d->route_id;
	if (s)
		sum += s->customer_id;
	/* Uses the answers, so the loads stay; never true for a bench table. */
	return sum == 0xffffffff ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
