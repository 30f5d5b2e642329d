/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* The reference program for benchmarks: every packet to the kernel. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
