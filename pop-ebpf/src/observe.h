/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Sampling (sFlow) and capture (popctl capture), around the pipeline:
 *   observe_begin  before it: decides whether this packet is sampled (1 in
 *                  N, random skips per CPU, as sFlow v5 specifies) and keeps
 *                  its first bytes as they arrived; marks it pending when a
 *                  capture is armed;
 *   observe_note_* in it: the verdict helpers (counters.h) and the forwarding
 *                  step record the drop/pass reason and the egress port of a
 *                  pending packet;
 *   observe_end    after it: sends the sample to sample_ring, and the packet,
 *                  if it matches the capture filter and the per-CPU capture
 *                  rate allows, to capture_ring.
 * With nothing armed a packet pays one lookup of observe_config before the
 * pipeline and one of observe_scratch in it (notes) and after it.
 */
#ifndef POP_OBSERVE_H
#define POP_OBSERVE_H

/* -DPOP_NO_OBSERVE builds the data plane without the hooks, only to measure
 * what they cost (docs/benchmarks.md); pop never ships it. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "abi.h"
#include "maps.h"

/* Keeps the compiler from dropping a bound the verifier needs to see. */
#define observe_bound(v) asm volatile("" : "+r"(v))

static __always_inline struct pop_observe_scratch *observe_scratch_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&observe_scratch, &zero);
}

static __always_inline void observe_count(__u32 stat)
{
	__u64 *n = bpf_map_lookup_elem(&observe_stats, &stat);

	if (n)
		*n += 1;
}

/* The verdict helpers' note: why a pending packet was dropped or passed. */
static __always_inline void observe_note_reason(__u32 reason)
{
#ifdef POP_NO_OBSERVE
	return;
#endif
	struct pop_observe_scratch *s = observe_scratch_get();

	if (s && s->pending)
		s->reason = reason;
}

/* The forwarding step's note: the port a pending packet leaves by. */
static __always_inline void observe_note_egress(__u32 ifindex)
{
#ifdef POP_NO_OBSERVE
	return;
#endif
	struct pop_observe_scratch *s = observe_scratch_get();

	if (s && s->pending)
		s->egress_ifindex = ifindex;
}

/* Packets until the next sample: uniform in [1, 2N-1], mean N. */
static __always_inline __u32 observe_skip(__u32 rate)
{
	if (rate <= 1)
		return 1;
	return bpf_get_prandom_u32() % (2 * rate - 1) + 1;
}

__noinline int observe_begin_armed(struct xdp_md *ctx)
{
	struct pop_observe_config *c;
	struct pop_observe_scratch *s;
	__u32 zero = 0, pending = 0, rate, len = 0, header_len;

	c = bpf_map_lookup_elem(&observe_config, &zero);
	if (!c || !(c->sampling_rate | c->capture))
		return 0;
	s = observe_scratch_get();
	if (!s)
		return 0;
	rate = c->sampling_rate;
	if (rate) {
		if (s->skip_rate != rate || s->skip == 0) {
			s->skip_rate = rate;
			s->skip = s->skip_drawn = observe_skip(rate);
		}
		if (--s->skip == 0) {
			/* The sample pool grows by the packets the skip covered. */
			s->unreported += s->skip_drawn;
			s->skip = s->skip_drawn = observe_skip(rate);
			len = bpf_xdp_get_buff_len(ctx);
			header_len = len < POP_SAMPLE_HEADER_BYTES ? len : POP_SAMPLE_HEADER_BYTES;
			observe_bound(header_len);
			if (header_len >= 1 && header_len <= POP_SAMPLE_HEADER_BYTES &&
			    bpf_xdp_load_bytes(ctx, 0, s->header, header_len) == 0) {
				s->header_len = header_len;
				pending |= POP_PENDING_SAMPLE;
			}
		}
	}
	if (c->capture & POP_CAPTURE_ON)
		pending |= POP_PENDING_CAPTURE;
	if (!pending)
		return 0;
	s->pending = pending;
	s->reason = 0;
	s->egress_ifindex = 0;
	s->ingress_ifindex = ctx->ingress_ifindex;
	s->frame_len = len;
	return 0;
}

/* XDP action -> enum pop_action. */
static __always_inline __u32 observe_action(int verdict)
{
	switch (verdict) {
	case XDP_REDIRECT:
		return POP_ACTION_REDIRECT;
	case XDP_TX:
		return POP_ACTION_TX;
	case XDP_PASS:
		return POP_ACTION_PASS;
	default:
		return POP_ACTION_DROP;
	}
}

/* Not inlined: its signature puts struct pop_sample in the object's BTF,
 * where the ABI test finds it. */
static __noinline void observe_fill_sample(struct pop_sample *rec,
					   struct pop_observe_scratch *s,
					   __u32 action)
{
	rec->skipped = s->unreported;
	rec->ingress_ifindex = s->ingress_ifindex;
	rec->egress_ifindex = s->egress_ifindex;
	rec->action = action;
	rec->reason = s->reason;
	rec->frame_len = s->frame_len;
	rec->header_len = s->header_len;
	rec->sampling_rate = s->skip_rate;
	__builtin_memcpy(rec->header, s->header, POP_SAMPLE_HEADER_BYTES);
}

static __always_inline void observe_sample(struct pop_observe_scratch *s,
					   __u32 action)
{
	struct pop_sample *rec;

	rec = bpf_ringbuf_reserve(&sample_ring, sizeof(*rec), 0);
	if (!rec) {
		/* Its packets stay in unreported: the next sample counts them. */
		observe_count(POP_OBS_SAMPLE_LOST);
		return;
	}
	observe_fill_sample(rec, s, action);
	s->unreported = 0;
	bpf_ringbuf_submit(rec, 0);
}

/* Not inlined, like observe_fill_sample, for struct pop_capture. */
static __noinline void observe_fill_capture(struct pop_capture *rec,
					    struct pop_observe_scratch *s,
					    __u32 action, __u32 len)
{
	rec->ingress_ifindex = s->ingress_ifindex;
	rec->egress_ifindex = s->egress_ifindex;
	rec->action = action;
	rec->reason = s->reason;
	rec->frame_len = len;
}

/* Whether the packet's source or destination belongs to `customer`: IPv4
 * in fib4, IPv6 in fib6. Reads the frame as
 * the pipeline left it (addresses are never rewritten). */
static __always_inline int observe_customer_match(struct xdp_md *ctx,
						  __u32 customer)
{
	__u32 off = ETH_HLEN, i;
	__u8 l2[ETH_HLEN + 4];
	__u8 addrs[32];
	__u16 proto;

	if (bpf_xdp_load_bytes(ctx, 0, l2, sizeof(l2)))
		return 0;
	proto = (__u16)l2[12] << 8 | l2[13];
	if (proto == 0x8100 || proto == 0x88A8) {
		proto = (__u16)l2[16] << 8 | l2[17];
		off += 4;
	}
	if (proto == ETH_P_IP) {
		const struct pop_fib4_result *r;
		__be32 addr;

		/* saddr, daddr at 12 */
		if (bpf_xdp_load_bytes(ctx, off + 12, addrs, 8))
			return 0;
		for (i = 0; i < 2; i++) {
			__builtin_memcpy(&addr, addrs + 4 * i, 4);
			r = fib4_lookup(addr);
			if (r && r->customer_id == customer)
				return 1;
		}
		return 0;
	}
	if (proto == ETH_P_IPV6) {
		/* saddr, daddr at 8 */
		if (bpf_xdp_load_bytes(ctx, off + 8, addrs, 32))
			return 0;
		for (i = 0; i < 2; i++)
			if (fib6_customer_id(fib6_lookup(addrs + 16 * i)) == customer)
				return 1;
	}
	return 0;
}

static __always_inline void observe_capture(struct xdp_md *ctx,
					    struct pop_observe_config *c,
					    struct pop_observe_scratch *s,
					    __u32 action)
{
	__u32 flags = c->capture, len, snap;
	struct pop_capture *rec;
	__u64 now, tat;

	if ((flags & POP_CAPTURE_IFACE) && s->ingress_ifindex != c->capture_ifindex &&
	    s->egress_ifindex != c->capture_ifindex)
		return;
	if ((flags & (POP_CAPTURE_DROPS | POP_CAPTURE_DROP_REASON)) &&
	    action != POP_ACTION_DROP)
		return;
	if ((flags & POP_CAPTURE_DROP_REASON) && s->reason != c->capture_reason)
		return;
	if ((flags & POP_CAPTURE_CUSTOMER) &&
	    !observe_customer_match(ctx, c->capture_customer))
		return;
	/* The rate bound (GCRA): one packet per interval, bursts up to burst.
	 * The coarse clock (a few ms) is cheap enough to read for every packet
	 * a busy capture turns away. */
	now = bpf_ktime_get_coarse_ns();
	tat = s->capture_tat_ns;
	if (tat > now + c->capture_burst_ns) {
		observe_count(POP_OBS_CAPTURE_LIMITED);
		return;
	}
	s->capture_tat_ns = (tat > now ? tat : now) + c->capture_interval_ns;

	rec = bpf_ringbuf_reserve(&capture_ring, sizeof(*rec), 0);
	if (!rec) {
		observe_count(POP_OBS_CAPTURE_LOST);
		return;
	}
	len = bpf_xdp_get_buff_len(ctx);
	snap = c->capture_snaplen;
	if (snap > len)
		snap = len;
	observe_bound(snap);
	if (snap > POP_CAPTURE_BYTES)
		snap = POP_CAPTURE_BYTES;
	if (snap < 1 || bpf_xdp_load_bytes(ctx, 0, rec->data, snap) != 0)
		snap = 0;
	rec->timestamp_ns = bpf_ktime_get_ns();
	rec->capture_len = snap;
	observe_fill_capture(rec, s, action, len);
	bpf_ringbuf_submit(rec, 0);
}

__noinline int observe_end_pending(struct xdp_md *ctx, int verdict)
{
	struct pop_observe_scratch *s = observe_scratch_get();
	struct pop_observe_config *c;
	__u32 zero = 0, pending, action;

	if (!s)
		return verdict;
	pending = s->pending;
	s->pending = 0;
	c = bpf_map_lookup_elem(&observe_config, &zero);
	if (!c)
		return verdict;
	action = observe_action(verdict);
	if (action == POP_ACTION_TX)
		s->egress_ifindex = s->ingress_ifindex;
	if (pending & POP_PENDING_SAMPLE)
		observe_sample(s, action);
	if ((pending & POP_PENDING_CAPTURE) && (c->capture & POP_CAPTURE_ON))
		observe_capture(ctx, c, s, action);
	return verdict;
}

/* Before the pipeline: with nothing armed, one lookup and a branch. The work
 * is in a separate (global) function, verified on its own, so it adds no
 * states to the pipeline's verification. */
static __always_inline void observe_begin(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct pop_observe_config *c = bpf_map_lookup_elem(&observe_config, &zero);

	if (c && (c->sampling_rate | c->capture))
		observe_begin_armed(ctx);
}

/* After the pipeline: with nothing pending, one lookup and a branch. */
static __always_inline int observe_end(struct xdp_md *ctx, int verdict)
{
	struct pop_observe_scratch *s = observe_scratch_get();

	if (s && s->pending)
		return observe_end_pending(ctx, verdict);
	return verdict;
}

#endif
