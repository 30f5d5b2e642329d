/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Helpers for `cargo xtask bench`'s lab throughput measurement:
 *   xdp_tx         the traffic generator: run with BPF_PROG_TEST_RUN and
 *                  BPF_F_TEST_XDP_LIVE_FRAMES, every frame leaves the port
 *   xdp_count_drop the sink: counts every frame that arrives, then drops it
 *                  (cheap, and gives the receiving veth NAPI)
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sink_packets SEC(".maps");

SEC("xdp")
int xdp_tx(struct xdp_md *ctx)
{
	return XDP_TX;
}

SEC("xdp")
int xdp_count_drop(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&sink_packets, &zero);

	if (n)
		(*n)++;
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
