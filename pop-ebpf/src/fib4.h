/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * IPv4 forwarding information base: one lookup answers, for an address, the
 * route (ECMP group or blackhole), the customer and whether it is an address
 * of this host or a directed broadcast. DIR-24-8 (the layout of DPDK's
 * rte_lpm) over BPF array maps, written by popd (dataplane/fib4):
 *
 *   fib4_tbl24    2^24 entries, one per /24, in blocks of 256 entries
 *                 (element = addr >> 16, entry = (addr >> 8) & 0xff)
 *   fib4_tbl8     groups of 256 entries, one per address of a /24 that
 *                 holds a prefix longer than /24 (entry = addr & 0xff)
 *   fib4_results  the answers (struct pop_fib4_result), interned: many
 *                 entries share one record
 *
 * An entry is either a result index, or POP_FIB4_EXT | group: the /24 is
 * split and its addresses are answered by tbl8 group `group`. Entry 0 is
 * result 0, the empty answer (no route, no customer, not local), so a zeroed
 * table answers "nothing" everywhere.
 *
 * A lookup is one array load (tbl24), a second for a split /24 (tbl8), and
 * the load of the record. popd writes entries with aligned 32-bit stores
 * through mmap (BPF_F_MMAPABLE), fills a group before pointing tbl24 at it,
 * writes a record before any entry points at it, and reuses a group or a
 * record only after an RCU grace period: every lookup sees the table before
 * or after each entry's change, never a torn or foreign answer.
 *
 * The Rust mirror is pop-common/src/fib4.rs.
 */
#ifndef POP_FIB4_H
#define POP_FIB4_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define POP_FIB4_BLOCK_ENTRIES 256
/* tbl24 elements: 2^24 entries / 256 per element. */
#define POP_FIB4_TBL24_BLOCKS 65536
/* tbl8 groups: /24s that hold longer prefixes (customer /29s, local
 * addresses, /32 blackholes). 16 MB of kernel memory. */
#define POP_FIB4_MAX_GROUPS 16384
/* Distinct answers (route, customer, flags) at once. */
#define POP_FIB4_MAX_RESULTS 65536
/* An entry with this bit points at a tbl8 group (the low bits). */
#define POP_FIB4_EXT (1U << 31)

/* pop_fib4_result.flags */
#define POP_FIB4_ROUTE (1U << 0) /* route_id is the route's ECMP group */
#define POP_FIB4_BLACKHOLE (1U << 1) /* the route drops (with POP_FIB4_ROUTE) */
#define POP_FIB4_LOCAL (1U << 2) /* an address of this host */
#define POP_FIB4_BROADCAST (1U << 3) /* a directed broadcast address */

/* 256 entries: an element of fib4_tbl24 and a group of fib4_tbl8. */
struct pop_fib4_block {
	__u32 entry[POP_FIB4_BLOCK_ENTRIES];
};

/* The answer for an address. 16 bytes: an array element is 8-aligned, and
 * popd addresses records through mmap at this stride. */
struct pop_fib4_result {
	__u32 route_id; /* with POP_FIB4_ROUTE and not BLACKHOLE: the ECMP group */
	__u32 customer_id; /* 0: the address belongs to no customer */
	__u32 flags; /* POP_FIB4_* */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, POP_FIB4_TBL24_BLOCKS);
	__type(key, __u32);
	__type(value, struct pop_fib4_block);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fib4_tbl24 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, POP_FIB4_MAX_GROUPS);
	__type(key, __u32);
	__type(value, struct pop_fib4_block);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fib4_tbl8 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, POP_FIB4_MAX_RESULTS);
	__type(key, __u32);
	__type(value, struct pop_fib4_result);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fib4_results SEC(".maps");

/* The answer for `addr` (network order, as in the packet). NULL only if the
 * maps are inconsistent (an index out of range): treat it as no answer. */
static __always_inline const struct pop_fib4_result *fib4_lookup(__be32 addr)
{
	__u32 host = bpf_ntohl(addr);
	__u32 block = host >> 16;
	struct pop_fib4_block *b;
	__u32 entry;

	b = bpf_map_lookup_elem(&fib4_tbl24, &block);
	if (!b)
		return NULL;
	entry = b->entry[(host >> 8) & 0xff];
	if (entry & POP_FIB4_EXT) {
		__u32 group = entry & ~POP_FIB4_EXT;

		b = bpf_map_lookup_elem(&fib4_tbl8, &group);
		if (!b)
			return NULL;
		entry = b->entry[host & 0xff];
	}
	return bpf_map_lookup_elem(&fib4_results, &entry);
}

#endif
