/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Helpers for `cargo xtask bench`'s lab throughput measurement:
 *   xdp_tx         the traffic generator: run with BPF_PROG_TEST_RUN and
 *                  BPF_F_TEST_XDP_LIVE_FRAMES, every frame leaves the port.
 *                  Frames are recycled through the kernel's page pool after
 *                  the receivers rewrote them in place (TTL, MACs), so each
 *                  run first restores the first 60 bytes from gen_template.
 *   xdp_count_drop the sink: counts and drops the benchmark's UDP frames (to
 *                  port 9), passes everything else (ARP, ND, ping) so the
 *                  lab keeps working; attached, it also gives the veth NAPI
 *   xdp_cycle      the test_run cost driver: before each run it overwrites the
 *                  frame's first CYCLE_HEADER_LEN bytes with the next of up to
 *                  CYCLE_MAX_FRAMES headers (addresses drawn from the tables,
 *                  so lookups miss caches as real traffic does), then tail
 *                  calls the program under test (cycle_target[0]). Every case,
 *                  the references included, pays the same copy and tail call.
 *   xdp_redirect_min the lab's ceiling: a minimal router that only rewrites the
 *                  MACs and redirects to one port (min_route[0]).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sink_packets SEC(".maps");

#define GEN_TEMPLATE_LEN 60

struct gen_template {
	__u8 bytes[GEN_TEMPLATE_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_template);
} gen_template SEC(".maps");

SEC("xdp")
int xdp_tx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct gen_template *t = bpf_map_lookup_elem(&gen_template, &zero);

	if (t && data + GEN_TEMPLATE_LEN <= data_end)
		__builtin_memcpy(data, t->bytes, GEN_TEMPLATE_LEN);
	return XDP_TX;
}

SEC("xdp")
int xdp_count_drop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	struct udphdr *udp = (void *)(iph + 1);
	__u32 zero = 0;
	__u64 *n;

	if ((void *)(udp + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    iph->ihl != 5 || iph->protocol != IPPROTO_UDP || udp->dest != bpf_htons(9))
		return XDP_PASS;
	n = bpf_map_lookup_elem(&sink_packets, &zero);
	if (n)
		(*n)++;
	return XDP_DROP;
}

#define CYCLE_HEADER_LEN 64
#define CYCLE_MAX_FRAMES 65536

struct cycle_header {
	__u8 bytes[CYCLE_HEADER_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CYCLE_MAX_FRAMES);
	__type(key, __u32);
	__type(value, struct cycle_header);
} cycle_frames SEC(".maps");

/* [0]: how many of cycle_frames are used (1..CYCLE_MAX_FRAMES). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cycle_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cycle_cursor SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cycle_target SEC(".maps");

SEC("xdp")
int xdp_cycle(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0, *count = bpf_map_lookup_elem(&cycle_count, &zero);
	__u32 *cursor = bpf_map_lookup_elem(&cycle_cursor, &zero);
	struct cycle_header *h;
	__u32 i;

	if (!count || !cursor || *count == 0 || data + CYCLE_HEADER_LEN > data_end)
		return XDP_ABORTED;
	i = *cursor;
	*cursor = i + 1 < *count ? i + 1 : 0;
	h = bpf_map_lookup_elem(&cycle_frames, &i);
	if (!h)
		return XDP_ABORTED;
	__builtin_memcpy(data, h->bytes, CYCLE_HEADER_LEN);
	bpf_tail_call(ctx, &cycle_target, 0);
	return XDP_ABORTED;
}

/* The next hop of xdp_redirect_min. */
struct min_route {
	__u8 dmac[6];
	__u8 smac[6];
	__u32 ifindex;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct min_route);
} min_route SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} min_ports SEC(".maps");

SEC("xdp")
int xdp_redirect_min(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0;
	struct min_route *r;

	if ((void *)(eth + 1) > data_end ||
	    (eth->h_proto != bpf_htons(ETH_P_IP) && eth->h_proto != bpf_htons(ETH_P_IPV6)))
		return XDP_PASS;
	r = bpf_map_lookup_elem(&min_route, &zero);
	if (!r)
		return XDP_PASS;
	__builtin_memcpy(eth->h_dest, r->dmac, 6);
	__builtin_memcpy(eth->h_source, r->smac, 6);
	return bpf_redirect_map(&min_ports, 0, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
