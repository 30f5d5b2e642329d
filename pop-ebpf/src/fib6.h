/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * IPv6 forwarding information base: a multibit trie in BPF array maps, so
 * a route lookup costs a bounded number of array loads whatever the table's
 * size. Written by popd (dataplane/fib6, dataplane/route6.rs):
 *
 *   fib6_root    2^20 entries, one per /20, in blocks of 256 entries
 *                (element = top20 >> 8, entry = top20 & 0xff)
 *   fib6_nodes   nodes of 16 entries (4-bit strides): the node under a
 *                /20+4k entry answers the next 4 bits of the address
 *   fib6_routes  the route records (struct pop_route) entries point at,
 *                interned: every route with the same value shares one
 *
 * An entry is POP_FIB6_EXT | node (the entry's addresses hold longer
 * prefixes and the node below decides), or an answer for all its addresses:
 *   bits  0-15  the route record id (0: no route)
 *   bits 16-29  the customer id of the longest customer prefix (0: none)
 *   bit  30     POP_FIB6_LOCAL: an address of this host (only in an entry
 *               of one address, a /128)
 * So one walk per address answers route, customer and local together, with
 * no record to load for the customer. A zeroed table answers "nothing"
 * everywhere, and an entry of a table written before customers were in it
 * (a route id below 2^16) means the same route and no customer.
 *
 * A lookup is one load of the root, one per 4 bits below /20 down to the
 * longest prefix on the address's path (a /32: 3, a /48: 7, a /64: 11,
 * at most POP_FIB6_LEVELS), and the load of the record. popd writes entries
 * with aligned 32-bit stores through mmap (BPF_F_MMAPABLE), fills a node
 * before an entry points at it, writes a record before an entry points at
 * it, and reuses a node or a record only after an RCU grace period. docs/fib.md
 * has the measurements behind the layout.
 *
 * The Rust mirror is pop-common/src/fib6.rs.
 */
#ifndef POP_FIB6_H
#define POP_FIB6_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "abi.h"

/* Bits the root decides: one entry per /20. */
#define POP_FIB6_ROOT_BITS 20
#define POP_FIB6_ROOT_BLOCK_ENTRIES 256
/* Root elements: 2^20 entries / 256 per element (4 MB). */
#define POP_FIB6_ROOT_BLOCKS 4096
/* Bits each node decides, and its entries. */
#define POP_FIB6_STRIDE 4
#define POP_FIB6_NODE_ENTRIES 16
/* Node levels below the root: (128 - 20) / 4. */
#define POP_FIB6_LEVELS 27
/* Nodes at once: 48 MB of kernel memory. A 200k-route table of the
 * Internet's shape needs about 370k. */
#define POP_FIB6_MAX_NODES 786432
/* Route records at once in fib6_routes (id 0 is "no route"). */
#define POP_FIB6_MAX_ROUTES 65536
/* An entry with this bit points at the node in its low bits. */
#define POP_FIB6_EXT (1U << 31)
/* An answer entry: the route record id in its low 16 bits ... */
#define POP_FIB6_ROUTE_MASK 0xffff
/* ... the customer id in the next 14 (customer ids are below 16384) ... */
#define POP_FIB6_CUSTOMER_SHIFT 16
#define POP_FIB6_CUSTOMER_MASK 0x3fff
/* ... and this bit for an address of this host. */
#define POP_FIB6_LOCAL (1U << 30)

/* 256 root entries: an element of fib6_root. */
struct pop_fib6_block {
	__u32 entry[POP_FIB6_ROOT_BLOCK_ENTRIES];
};

/* A node: the entries for the next POP_FIB6_STRIDE bits. */
struct pop_fib6_node {
	__u32 entry[POP_FIB6_NODE_ENTRIES];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, POP_FIB6_ROOT_BLOCKS);
	__type(key, __u32);
	__type(value, struct pop_fib6_block);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fib6_root SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, POP_FIB6_MAX_NODES);
	__type(key, __u32);
	__type(value, struct pop_fib6_node);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fib6_nodes SEC(".maps");

/* IPv6 route records, indexed by a fib6 entry. popd writes a record before an
 * entry points at it and reuses one only after a grace period. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, POP_FIB6_MAX_ROUTES);
	__type(key, __u32);
	__type(value, struct pop_route);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fib6_routes SEC(".maps");

/* The answer entry for `addr` (16 bytes, network order, as in the
 * packet); 0: nothing (also if the maps are inconsistent). */
/* The walk of the address's four words, 27 levels unrolled. Inlined into
 * its one caller, the global function pop_addr6_lookup (addr6.h), which the
 * verifier checks once on its own: the pipeline still reaches the walks in
 * one state, and a packet makes one call for its two walks instead of three
 * (a call and its return cost several ns on this project's machines, whose
 * returns go through a mitigation thunk; docs/benchmarks.md). */
static __always_inline __u32 pop_fib6_walk(__u32 w0, __u32 w1, __u32 w2, __u32 w3)
{
	struct pop_fib6_block *b;
	__u32 w[4] = { w0, w1, w2, w3 };
	__u32 block, entry;
	int i;

	block = w[0] >> (32 - POP_FIB6_ROOT_BITS + 8);
	b = bpf_map_lookup_elem(&fib6_root, &block);
	if (!b)
		return 0;
	entry = b->entry[(w[0] >> (32 - POP_FIB6_ROOT_BITS)) & 0xff];
#pragma unroll
	for (i = 0; i < POP_FIB6_LEVELS; i++) {
		/* Bits [off, off + 4) of the address: never across a word. */
		const int off = POP_FIB6_ROOT_BITS + i * POP_FIB6_STRIDE;
		struct pop_fib6_node *n;
		__u32 node;

		if (!(entry & POP_FIB6_EXT))
			return entry;
		node = entry & ~POP_FIB6_EXT;
		n = bpf_map_lookup_elem(&fib6_nodes, &node);
		if (!n)
			return 0;
		entry = n->entry[(w[off / 32] >> (32 - POP_FIB6_STRIDE - off % 32)) &
				 (POP_FIB6_NODE_ENTRIES - 1)];
	}
	return entry & POP_FIB6_EXT ? 0 : entry;
}

static __always_inline __u32 fib6_lookup(const __u8 *addr)
{
	__u32 w[4];

	__builtin_memcpy(w, addr, 16);
	return pop_fib6_walk(bpf_ntohl(w[0]), bpf_ntohl(w[1]), bpf_ntohl(w[2]),
			     bpf_ntohl(w[3]));
}

static __always_inline __u32 fib6_route_id(__u32 entry)
{
	return entry & POP_FIB6_ROUTE_MASK;
}

static __always_inline __u32 fib6_customer_id(__u32 entry)
{
	return (entry >> POP_FIB6_CUSTOMER_SHIFT) & POP_FIB6_CUSTOMER_MASK;
}

#endif
