/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Test and measurement programs for fib6.h (not part of the data plane):
 *   fib6_get    looks up the IPv6 destination of the frame and writes the
 *               answer (the route record id, 0: none; 4 bytes, host order)
 *               over the 4 bytes after the IPv6 header; XDP_TX.
 *   fib6_bench  one fib6 lookup per run, of bench_addrs6[i++ % 65536]: run
 *               with BPF_PROG_TEST_RUN and a repeat count, random addresses
 *               (no last-lookup cache helps).
 *   lpm6_bench  the same addresses in the kernel LPM trie lpm6_routes.
 *   base6_bench the same loop without a lookup, to subtract.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "fib6.h"

#define BENCH_ADDRS 65536

struct lpm6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct bench_addr6 {
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 524288);
	__type(key, struct lpm6_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} lpm6_routes SEC(".maps");

/* Destinations (network order) the bench programs cycle through. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BENCH_ADDRS);
	__type(key, __u32);
	__type(value, struct bench_addr6);
} bench_addrs6 SEC(".maps");

/* [0]: the next index into bench_addrs6, [1]: a sink the answers go into. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} bench_state6 SEC(".maps");

SEC("xdp")
int fib6_get(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6h = (void *)(eth + 1);
	__u32 *out = (void *)(ip6h + 1);
	__u8 dst[16];

	if ((void *)(out + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IPV6))
		return XDP_PASS;
	__builtin_memcpy(dst, &ip6h->daddr, 16);
	*out = fib6_lookup(dst);
	return XDP_TX;
}

static __always_inline struct bench_addr6 *next_addr6(__u32 **sink)
{
	__u32 zero = 0, one = 1, i;
	__u32 *next = bpf_map_lookup_elem(&bench_state6, &zero);

	*sink = bpf_map_lookup_elem(&bench_state6, &one);
	if (!next || !*sink)
		return NULL;
	i = (*next)++ & (BENCH_ADDRS - 1);
	return bpf_map_lookup_elem(&bench_addrs6, &i);
}

SEC("xdp")
int fib6_bench(struct xdp_md *ctx)
{
	__u32 *sink;
	struct bench_addr6 *a = next_addr6(&sink);

	if (!a)
		return XDP_ABORTED;
	*sink += fib6_lookup(a->addr);
	return XDP_DROP;
}

SEC("xdp")
int lpm6_bench(struct xdp_md *ctx)
{
	__u32 *sink;
	struct bench_addr6 *a = next_addr6(&sink);
	struct lpm6_key key = { .prefixlen = 128 };
	__u32 *route;

	if (!a)
		return XDP_ABORTED;
	__builtin_memcpy(key.addr, a->addr, 16);
	route = bpf_map_lookup_elem(&lpm6_routes, &key);
	if (route)
		*sink += *route;
	return XDP_DROP;
}

SEC("xdp")
int base6_bench(struct xdp_md *ctx)
{
	__u32 *sink;
	struct bench_addr6 *a = next_addr6(&sink);

	if (!a)
		return XDP_ABORTED;
	*sink += a->addr[15];
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
