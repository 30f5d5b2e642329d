/*
 * BPF side of gate.c (see there): the same random tbl24 as one 64 MB array
 * (loads_big, as fib4.h today) and as INNER_BLOCKS-element inner arrays of
 * 1 KB blocks behind an ARRAY_OF_MAPS (loads_mom; loads_mom2 also splits the
 * result records; loads_dxr emulates a DXR-style range table of the size the
 * 1M-route test table needs). Each program does two lookups (destination,
 * source).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef INNER_BLOCKS
#define INNER_BLOCKS 31
#endif
#define OUTER_N ((65536 + INNER_BLOCKS - 1) / INNER_BLOCKS)
#define RES_INNER 1984
#define RES_OUTER ((65536 + RES_INNER - 1) / RES_INNER)

struct blk { __u32 entry[256]; };
struct res { __u32 route_id, customer_id, flags, pad; };

struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 65536); __type(key, __u32); __type(value, struct blk); __uint(map_flags, BPF_F_MMAPABLE);} big24 SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 65536); __type(key, __u32); __type(value, struct res); __uint(map_flags, BPF_F_MMAPABLE);} bigres SEC(".maps");

struct inner24 { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, INNER_BLOCKS); __type(key, __u32); __type(value, struct blk); };
struct { __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS); __uint(max_entries, OUTER_N); __type(key, __u32); __array(values, struct inner24);} mom24 SEC(".maps");
struct innerres { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, RES_INNER); __type(key, __u32); __type(value, struct res); };
struct { __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS); __uint(max_entries, RES_OUTER); __type(key, __u32); __array(values, struct innerres);} momres SEC(".maps");

struct hdr { __u8 b[64]; };
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 65536); __type(key, __u32); __type(value, struct hdr);} frames SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u32);} cursor SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u32);} target SEC(".maps");

SEC("xdp") int cycle(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0, *c = bpf_map_lookup_elem(&cursor, &zero), i;
	struct hdr *h;
	if (!c || data + 64 > data_end) return XDP_ABORTED;
	i = *c; *c = (i + 1) & 65535;
	h = bpf_map_lookup_elem(&frames, &i);
	if (!h) return XDP_ABORTED;
	__builtin_memcpy(data, h->b, 64);
	bpf_tail_call(ctx, &target, 0);
	return XDP_ABORTED;
}

SEC("xdp") int pass(struct xdp_md *ctx) { return XDP_PASS; }

static __always_inline const struct res *look_big(__be32 a)
{
	__u32 host = bpf_ntohl(a), block = host >> 16, e;
	struct blk *b = bpf_map_lookup_elem(&big24, &block);
	if (!b) return 0;
	e = b->entry[(host >> 8) & 0xff];
	return bpf_map_lookup_elem(&bigres, &e);
}

static __always_inline const struct res *look_mom(__be32 a, int momr)
{
	__u32 host = bpf_ntohl(a), block = host >> 16, o = block / INNER_BLOCKS, in = block % INNER_BLOCKS, e;
	void *m = bpf_map_lookup_elem(&mom24, &o);
	struct blk *b;
	if (!m) return 0;
	b = bpf_map_lookup_elem(m, &in);
	if (!b) return 0;
	e = b->entry[(host >> 8) & 0xff];
	if (momr) {
		__u32 ro = e / RES_INNER, ri = e % RES_INNER;
		void *rm = bpf_map_lookup_elem(&momres, &ro);
		if (!rm) return 0;
		return bpf_map_lookup_elem(rm, &ri);
	}
	return bpf_map_lookup_elem(&bigres, &e);
}

#define LOADS(name, expr_d, expr_s) \
SEC("xdp") int name(struct xdp_md *ctx) { \
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end; \
	struct iphdr *iph = data + sizeof(struct ethhdr); const struct res *d, *s; __u32 sum = 0; \
	if ((void *)(iph + 1) > data_end) return XDP_ABORTED; \
	d = expr_d; s = expr_s; \
	if (d) sum += d->flags + d->route_id; if (s) sum += s->customer_id; \
	return sum == 0xffffffff ? XDP_DROP : XDP_PASS; }

LOADS(loads_big, look_big(iph->daddr), look_big(iph->saddr))
LOADS(loads_mom, look_mom(iph->daddr, 0), look_mom(iph->saddr, 0))
LOADS(loads_mom2, look_mom(iph->daddr, 1), look_mom(iph->saddr, 1))


/* DXR-style emulation: a direct table per /16 (pos | n << 24) into range
 * blocks; each range is start (low 16 bits of the address) << 16 | record. */
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 256); __type(key, __u32); __type(value, struct blk);} dxr_direct SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 8192); __type(key, __u32); __type(value, struct blk);} dxr_ranges SEC(".maps");

static __always_inline const struct res *look_dxr(__be32 a)
{
	__u32 host = bpf_ntohl(a), chunk = host >> 16, key = host & 0xffff, db = chunk >> 8, e, n, pos, rb, off, lo = 0, hi;
	struct blk *d = bpf_map_lookup_elem(&dxr_direct, &db), *r;
	if (!d) return 0;
	e = d->entry[chunk & 0xff];
	n = e >> 24; pos = e & 0xffffff;
	if (n <= 1) { e = e & 0xffff; return bpf_map_lookup_elem(&bigres, &e); }
	rb = pos >> 8; off = pos & 0xff;
	r = bpf_map_lookup_elem(&dxr_ranges, &rb);
	if (!r) return 0;
	hi = n;
#pragma unroll
	for (int i = 0; i < 7; i++) {
		if (hi - lo > 1) {
			__u32 mid = (lo + hi) >> 1;
			if ((r->entry[(off + mid) & 0xff] >> 16) <= key) lo = mid; else hi = mid;
		}
	}
	e = r->entry[(off + lo) & 0xff] & 0xffff;
	return bpf_map_lookup_elem(&bigres, &e);
}
LOADS(loads_dxr, look_dxr(iph->daddr), look_dxr(iph->saddr))

char LICENSE[] SEC("license") = "Dual BSD/GPL";
