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

char LICENSE[] SEC("license") = "Dual BSD/GPL";
