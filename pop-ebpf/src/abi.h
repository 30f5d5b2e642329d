/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The kernel/userspace ABI of pop: every map key and value, every constant
 * shared with userspace. The Rust mirror is pop-common/src/lib.rs; the test
 * pop-tests/tests/abi_btf.rs checks both against the compiled object's BTF,
 * so a change here without the same change there fails CI.
 */
#ifndef POP_ABI_H
#define POP_ABI_H

#include <linux/types.h>
#include <linux/bpf.h> /* struct bpf_spin_lock */

#define POP_MAX_IFACES 1024
#define POP_MAX_ECMP 8
#define POP_MAX_NEXTHOPS 65536
#define POP_MAX_CUSTOMERS 16384
#define POP_MAX_ROUTES_V4 2097152
#define POP_MAX_ROUTES_V6 524288
#define POP_MAX_CUSTOMER_PREFIXES 65536
#define POP_MAX_LOCAL_ADDRS 65536
#define POP_IPV6_EXT_MAX 6
#define POP_MAX_ACL_RULES 131072
#define POP_MAX_ACL_NODES 393216
#define POP_MAX_ACL_LEAF_BLOCKS 65536
#define POP_MAX_POLICERS (POP_MAX_CUSTOMERS * 2)
/* Capacity of spoof_src_v4 and of spoof_src_v6: (anti-spoofing port, prefix
 * of a customer attached there) entries, each. */
#define POP_MAX_SPOOF_PREFIXES 65536
/* MACs the kernel accepts on pop's interfaces besides their own (map
 * upper_macs): macvlan/macvtap upper devices' (VRRP virtual MACs among them),
 * and on a VLAN device with a MAC of its own, its port's. */
#define POP_MAX_UPPER_MACS 4096
/* IPv4 route records (ECMP groups) at once in fib4_routes: distinct
 * struct pop_route values, shared by every route with the same value. */
#define POP_MAX_ROUTE_RECORDS_V4 65536
/* Elements of ifaces_by_index: interfaces whose ifindex is below this are
 * found there by index, the others in the hash ifaces. */
#define POP_IFACES_BY_INDEX 4096
/* An ACL tree reference (a root in pop_acl_meta, a child in pop_acl_node):
 * with POP_ACL_REF_LEAF set it is a leaf, count =
 * (ref >> POP_ACL_REF_COUNT_SHIFT) & POP_ACL_REF_COUNT rules in the blocks
 * acl_leaf_rules[start ..], start = ref & POP_ACL_REF_START, filled in order
 * (POP_ACL_LEAF_BLOCK rules per block); else it is the index of a node in
 * acl_nodes. */
#define POP_ACL_REF_LEAF 0x80000000U
#define POP_ACL_REF_START 0x000FFFFFU
#define POP_ACL_REF_COUNT_SHIFT 20
#define POP_ACL_REF_COUNT 0x7FU

/* What the program finally did with a packet, counted per ingress interface. */
enum pop_action {
	POP_ACTION_REDIRECT = 0,
	POP_ACTION_TX = 1,
	POP_ACTION_PASS = 2,
	POP_ACTION_DROP = 3,
	POP_ACTION_MAX = 4,
};

/* Why a packet was dropped. One enum for the counters, metrics and popctl. */
enum pop_drop_reason {
	POP_DROP_MALFORMED = 0,
	POP_DROP_ACL = 1,
	POP_DROP_SPOOFED = 2,
	POP_DROP_POLICED = 3,
	POP_DROP_NO_ROUTE = 4,
	POP_DROP_MARTIAN = 5,
	POP_DROP_OTHER_HOST = 6, /* unicast to a MAC the host does not accept there */
	POP_DROP_ADJUST_HEAD = 7, /* the frame could not be resized for its VLAN tag */
	POP_DROP_ICMP_RATE = 8, /* an ICMP error pop would send, over [icmp] rate */
	POP_DROP_BLACKHOLE = 9, /* a blackhole/unreachable/prohibit route matched */
	POP_DROP_MAX = 16,
};

/* Why a packet was handed to the kernel instead of being forwarded. */
enum pop_pass_reason {
	POP_PASS_NON_IP = 0,
	POP_PASS_VLAN = 1,
	POP_PASS_LOCAL = 2,
	POP_PASS_MULTICAST = 3,
	POP_PASS_LINK_LOCAL = 4,
	POP_PASS_TTL = 5,
	POP_PASS_NO_ROUTE = 6,
	POP_PASS_UNRESOLVED = 7,
	POP_PASS_MTU = 8,
	POP_PASS_IP_OPTIONS = 9,
	POP_PASS_UNKNOWN_IFACE = 10,
	POP_PASS_MAX = 16,
};

enum pop_iface_role {
	POP_ROLE_UPSTREAM = 0,
	POP_ROLE_CUSTOMER = 1,
};

/* The ICMP errors pop sends itself (index of icmp_stats). */
enum pop_icmp_type {
	POP_ICMP_TIME_EXCEEDED = 0, /* ICMP and ICMPv6 Time Exceeded */
	POP_ICMP_FRAG_NEEDED = 1, /* ICMP Destination Unreachable, Fragmentation Needed */
	POP_ICMP_PACKET_TOO_BIG = 2, /* ICMPv6 Packet Too Big */
	POP_ICMP_MAX = 4,
};

/* Direction of customer counters: in = towards the customer, out = from it. */
enum pop_direction {
	POP_DIR_IN = 0,
	POP_DIR_OUT = 1,
	POP_DIR_MAX = 2,
};

/* What a matching ACL rule does. */
enum pop_acl_action {
	POP_ACL_ALLOW = 0,
	POP_ACL_DROP = 1,
};

/* The u32 match fields of an ACL rule and of a packet's ACL key. Addresses are
 * host-order words, most significant first; IPv4 uses SRC0/DST0 only. */
enum pop_acl_field {
	POP_ACL_F_SRC0 = 0,
	POP_ACL_F_DST0 = 4,
	POP_ACL_F_PROTO = 8,
	POP_ACL_F_SPORT = 9,
	POP_ACL_F_DPORT = 10,
	POP_ACL_F_IFINDEX = 11,
	POP_ACL_FIELDS = 12,
};

enum pop_acl_limits {
	POP_ACL_MAX_DEPTH = 48, /* deepest leaf the walk reaches */
	POP_ACL_LEAF_MAX = 64, /* most rules a leaf lists */
	POP_ACL_NO_PORT = 65536, /* port value of packets without ports */
	POP_ACL_MAX_TREES = 8, /* trees per address family */
	POP_ACL_NODE_LEVELS = 3, /* binary tree levels packed into one node */
	POP_ACL_NODE_SLOTS = 7, /* (field, threshold) slots: 2^LEVELS - 1 */
	POP_ACL_NODE_CHILDREN = 8, /* child refs: 2^LEVELS */
	POP_ACL_MAX_NODE_DEPTH = 16, /* nodes on a path: MAX_DEPTH / LEVELS */
	POP_ACL_LEAF_BLOCK = 8, /* leaf rules per acl_leaf_rules element */
	POP_ACL_FILTER_FIELDS = 4, /* first-stage filter fields: src, dst, proto, dport */
	POP_ACL_FILTER_CELLS = 65536, /* cells per filter field */
};

/* A rule index beyond every real one: no match. */
#define POP_ACL_NO_RULE 0xFFFFFFFFU

/* pop_iface.flags: a customer with anti-spoofing attaches at this port. */
#define POP_IFACE_ANTI_SPOOFING (1U << 0)
/* pop_iface.flags, set only in ifaces_by_index: this element holds an
 * interface (an element popd never wrote is all zero). */
#define POP_IFACE_PRESENT (1U << 1)

/* pop_config.flags */
#define POP_CFG_NO_ROUTE_DROP (1U << 0)

/* pop_nexthop.flags */
#define POP_NH_VALID (1U << 0)
#define POP_NH_RESOLVED (1U << 1)

/* pop_route.flags */
/* A blackhole route drops, counted as POP_DROP_BLACKHOLE. */
#define POP_ROUTE_BLACKHOLE (1U << 0)

/* Global settings, one entry in the array map `config`. */
struct pop_config {
	__u32 flags;
	__u32 generation;
	__u32 acl_copy; /* 0 or 1: the ACL copy packets use, read once per packet */
	__u32 cust_copy; /* 0 or 1: cust_v6 (0) or cust_v6_1 (1), read once per packet (IPv4: fib4) */
	__u32 icmp_rate_per_s; /* ICMP errors per second per CPU; 0: no limit */
	__u32 icmp_burst; /* ICMP errors a CPU may send at once */
};

/* Interfaces pop is attached to, keyed by ifindex (map `ifaces`). */
struct pop_iface {
	__u32 slot; /* 0..POP_MAX_IFACES-1: index into iface_counters */
	__u32 role; /* enum pop_iface_role */
	__u32 flags;
	__u32 mtu;
	/* The MAC the kernel accepts as its own on this interface (a VLAN
	 * device's own); upper devices' MACs are in upper_macs. */
	__u8 mac[6];
	__u16 pad;
	/* Source of the ICMP errors pop sends from this interface (network
	 * order; all zero: none, the packet goes to the kernel as before). */
	__u8 icmp_src_v4[4];
	__u8 icmp_src_v6[16];
};

/* LPM trie keys. */
struct pop_lpm_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct pop_lpm_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};

/* A route: up to POP_MAX_ECMP next-hop ids (indexes into `nexthops`). */
struct pop_route {
	__u32 flags;
	__u32 nh_count;
	__u32 nh_ids[POP_MAX_ECMP];
};

/* A resolved next hop: where and how to send (map `nexthops`, array). */
struct pop_nexthop {
	__u32 ifindex; /* the XDP port it leaves by (a VLAN device's lower port) */
	__u32 flags;
	__u8 dmac[6];
	__u8 smac[6];
	__u32 mtu;
	__u16 vlan; /* 802.1Q id to leave with; 0: untagged */
	__u16 pad;
};

/* Key of vlan_ifaces: a tagged frame on an XDP port belongs to the VLAN
 * device (ip link ... type vlan) for that port and id, if popd knows one. */
struct pop_vlan_key {
	__u32 ifindex; /* the XDP port */
	__u32 vid;
};

/* Key of upper_macs: unicast frames to `mac` on `ifindex` (an XDP port or a
 * VLAN device on one) are for this host: a macvlan/macvtap device on top of
 * it has that MAC (or, for a VLAN device, its port has). pad is zero. */
struct pop_upper_mac_key {
	__u32 ifindex;
	__u8 mac[6];
	__u16 pad;
};

/* A customer's prefix points at its id (maps cust_v4/cust_v6). */
struct pop_customer_ref {
	__u32 customer_id;
};

/* Address of this host (maps local_v4/local_v6): its value is unused. */
struct pop_local_v6 {
	__u8 addr[16];
};

/* Every counter is a pair, per CPU. */
struct pop_counter {
	__u64 packets;
	__u64 bytes;
};

/* The record of iface_counters for packets on no interface pop knows: the
 * one after the interfaces' slots (= POP_MAX_IFACES). */
#define POP_NO_IFACE_SLOT 1024

/* Every counter of one interface that a packet may touch (map
 * iface_counters, per CPU, indexed by pop_iface.slot; POP_NO_IFACE_SLOT for
 * packets on an unknown interface). A packet's verdict adds to one action
 * and, when dropped or passed, to one reason of the same record: the drop
 * and pass totals by reason are the sums over all records. */
struct pop_iface_counters {
	struct pop_counter action[POP_ACTION_MAX]; /* enum pop_action */
	struct pop_counter drop[POP_DROP_MAX]; /* enum pop_drop_reason */
	struct pop_counter pass[POP_PASS_MAX]; /* enum pop_pass_reason */
};

/* Every counter of one customer that a packet may touch (map
 * customer_counters, per CPU, indexed by customer id; record 0, "no
 * customer", is never written). */
struct pop_customer_counters {
	struct pop_counter dir[POP_DIR_MAX]; /* forwarded, enum pop_direction */
	struct pop_counter drop[POP_DROP_MAX]; /* enum pop_drop_reason */
};

/* An ACL rule: a hyper-rectangle, lo[f] <= key[f] <= hi[f] for every field.
 * Rules are stored in priority order; the index is the order. */
struct pop_acl_rule {
	__u32 lo[POP_ACL_FIELDS];
	__u32 hi[POP_ACL_FIELDS];
	__u32 action; /* enum pop_acl_action */
	__u32 priority;
};

/* A decision-tree node: POP_ACL_NODE_LEVELS levels of the binary HyperSplit
 * tree in one map element. Slot s (heap order: 0 the top, 2s+1 and 2s+2
 * below s) sends key[field[s]] <= threshold[s] left, else right; after
 * LEVELS steps s is POP_ACL_NODE_SLOTS + c and child[c] is the next ref
 * (POP_ACL_REF_*). A binary leaf above the last level pads: threshold
 * 0xFFFFFFFF always goes left, and its children repeat the leaf. */
struct pop_acl_node {
	__u32 threshold[POP_ACL_NODE_SLOTS];
	__u8 field[POP_ACL_NODE_CHILDREN]; /* [SLOTS] unused */
	__u32 child[POP_ACL_NODE_CHILDREN];
};

/* A rule of a leaf: its index and its two narrowest fields, so most rules a
 * packet does not match are rejected without reading the rule itself. */
struct pop_acl_leaf_rule {
	__u32 rule; /* index in acl_rules */
	__u8 field[2];
	__u16 pad;
	__u32 lo[2];
	__u32 hi[2];
};

/* An element of acl_leaf_rules: POP_ACL_LEAF_BLOCK rules of a leaf, in
 * priority order, read with one lookup. */
struct pop_acl_leaf_block {
	struct pop_acl_leaf_rule rule[POP_ACL_LEAF_BLOCK];
};

/* The first stage of one ACL copy (map acl_filter, indexed by copy): per
 * family (0 IPv4, 1 IPv6), filter field and cell, the trees (bit t = tree t
 * of the family) no rule of which can match in that cell, at
 * skip[(family * POP_ACL_FILTER_FIELDS + field) * POP_ACL_FILTER_CELLS +
 * cell]. A packet skips every tree one of its cells rules out; all zero (an
 * unwritten copy) skips nothing. One element, so one lookup per packet. */
struct pop_acl_filter {
	__u8 skip[2 * POP_ACL_FILTER_FIELDS * POP_ACL_FILTER_CELLS];
};

/* Roots of one ACL copy (map acl_meta, indexed by copy). Rules are grouped
 * by shape into up to POP_ACL_MAX_TREES trees per family; a packet walks each
 * and the lowest matching rule index wins. */
struct pop_acl_meta {
	__u32 rule_count; /* 0: no ACL, the trees are not walked */
	__u32 node_count;
	__u32 trees_v4;
	__u32 trees_v6;
	__u32 root_v4[POP_ACL_MAX_TREES];
	__u32 first_rule_v4[POP_ACL_MAX_TREES]; /* lowest rule priority in the tree */
	__u32 root_v6[POP_ACL_MAX_TREES];
	__u32 first_rule_v6[POP_ACL_MAX_TREES];
};

/* LPM keys of spoof_src_v4 / spoof_src_v6: a prefix of a customer attached
 * at an anti-spoofing port. prefixlen = 32 + the prefix's length: the ifindex
 * (big-endian, so it is the key's first 32 bits) always matches whole. */
struct pop_spoof_v4_key {
	__u32 prefixlen;
	__u32 ifindex; /* big-endian */
	__u8 addr[4];
};

struct pop_spoof_v6_key {
	__u32 prefixlen;
	__u32 ifindex; /* big-endian */
	__u8 addr[16];
};

/* A token bucket per customer and direction. Tokens are bit-nanoseconds
 * (bytes * 8e9), so a refill is elapsed_ns * rate_bps with no division. */
struct pop_policer {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 rate_bps; /* 0: no policer */
	__u64 capacity; /* burst_bytes * 8e9 */
	__u64 fill_ns; /* capacity / rate_bps: refills longer than this fill up */
	__u64 tokens;
	__u64 last_ns;
};

/* What the trace program (pop_trace) did with one packet: popctl trace runs
 * a made-up packet through it with BPF_PROG_TEST_RUN. It is the live
 * pipeline on the live maps, except that it counts nothing and takes no
 * policer tokens. Map trace_out, per CPU, one entry. */
struct pop_trace {
	__u32 done; /* 1 once the program has written this record */
	__u32 action; /* XDP action: 1 drop, 2 pass, 3 tx, 4 redirect */
	__u32 drop_reason; /* enum pop_drop_reason, when action is drop */
	__u32 pass_reason; /* enum pop_pass_reason, when action is pass */
	__u32 customer_out; /* the source's customer id, 0: none */
	__u32 customer_in; /* the destination's customer id, 0: none */
	__u32 acl_matched; /* 1 when an ACL rule matched (allow or drop) */
	__u32 acl_priority; /* that rule's priority */
	__u32 policed_customer; /* the customer whose policer would drop it */
	__u32 route_found; /* 1 when a route matched */
	__u32 egress_ifindex; /* the chosen next hop's port */
	__u8 dmac[6]; /* the next hop's MAC */
	__u8 smac[6]; /* the egress port's MAC */
	__u32 icmp_type; /* 1 + enum pop_icmp_type when pop answers with an ICMP error, else 0 */
	__u32 icmp_mtu; /* the MTU a Fragmentation Needed / Packet Too Big carries */
};

/* The ICMP error rate limit of one CPU (map icmp_bucket, per CPU): credit
 * in nanoseconds, one error costs 1e9 / icmp_rate_per_s, capped at
 * icmp_burst errors' worth. */
struct pop_icmp_bucket {
	__u64 credit_ns;
	__u64 last_ns;
};

/* Sampling (sFlow) and capture (popctl capture), observe.h. */
/* The first bytes of a sampled frame kept, and the most of a captured one. */
#define POP_SAMPLE_HEADER_BYTES 128
#define POP_CAPTURE_BYTES 2048
/* Ring buffer sizes: 256 KiB and 4 MiB. */
#define POP_SAMPLE_RING_BYTES 262144
#define POP_CAPTURE_RING_BYTES 4194304

/* pop_observe_config.capture: what a packet must match to be captured:
 * IFACE in or out by capture_ifindex, CUSTOMER from or to capture_customer,
 * DROPS dropped, DROP_REASON dropped for capture_reason. */
#define POP_CAPTURE_ON (1U << 0)
#define POP_CAPTURE_IFACE (1U << 1)
#define POP_CAPTURE_CUSTOMER (1U << 2)
#define POP_CAPTURE_DROPS (1U << 3)
#define POP_CAPTURE_DROP_REASON (1U << 4)

/* pop_observe_scratch.pending */
#define POP_PENDING_SAMPLE (1U << 0)
#define POP_PENDING_CAPTURE (1U << 1)

/* Counters of the sampling and capture machinery (map observe_stats). */
enum pop_observe_stat {
	POP_OBS_SAMPLE_LOST = 0, /* a sample found the sample ring full */
	POP_OBS_CAPTURE_LOST = 1, /* a matching packet found the capture ring full */
	POP_OBS_CAPTURE_LIMITED = 2, /* a matching packet over the capture rate */
	POP_OBS_MAX = 4,
};

/* Sampling and capture settings, one entry in the array map observe_config,
 * written by popd. All zero: nothing is sampled or captured, and a packet
 * pays one lookup of this entry. */
struct pop_observe_config {
	__u32 sampling_rate; /* sample 1 in N packets at ingress; 0: off */
	__u32 capture; /* POP_CAPTURE_* bits; 0: no capture */
	__u32 capture_ifindex; /* POP_CAPTURE_IFACE: the port */
	__u32 capture_customer; /* POP_CAPTURE_CUSTOMER: the customer id */
	__u32 capture_reason; /* POP_CAPTURE_DROP_REASON: enum pop_drop_reason */
	__u32 capture_snaplen; /* bytes kept of each frame, <= POP_CAPTURE_BYTES */
	__u64 capture_interval_ns; /* per CPU: one packet per interval ... */
	__u64 capture_burst_ns; /* ... with bursts of burst_ns / interval_ns */
};

/* Per-CPU state of one packet's sampling and capture (map observe_scratch):
 * set before the pipeline, completed by the verdict helpers, emitted after. */
struct pop_observe_scratch {
	__u32 pending; /* POP_PENDING_*: what this packet is observed for */
	__u32 skip; /* packets until the next sample, this CPU */
	__u32 skip_rate; /* the sampling rate skip was drawn for */
	__u32 reason; /* the drop or pass reason the pipeline gave */
	__u32 egress_ifindex; /* the port a forwarded packet leaves by */
	__u32 ingress_ifindex;
	__u32 frame_len;
	__u32 header_len; /* bytes in header */
	__u32 skip_drawn; /* the skip last drawn: packets from a sample to the next */
	__u32 unreported; /* packets skipped (this CPU) not yet in a sent sample */
	__u64 capture_tat_ns; /* capture rate: theoretical arrival time */
	__u8 header[POP_SAMPLE_HEADER_BYTES]; /* the frame as it arrived */
};

/* A flow sample (ring buffer sample_ring). */
struct pop_sample {
	__u32 ingress_ifindex;
	__u32 egress_ifindex; /* action redirect or tx: the port it left by */
	__u32 action; /* enum pop_action */
	__u32 reason; /* enum pop_drop_reason (drop) or pop_pass_reason (pass) */
	__u32 frame_len;
	__u32 header_len;
	__u32 sampling_rate; /* the rate it was sampled at */
	__u32 skipped; /* packets this CPU saw since its last sample sent, this one included */
	__u8 header[POP_SAMPLE_HEADER_BYTES];
};

/* A captured packet (ring buffer capture_ring), as the pipeline left it:
 * forwarded packets with their new MACs, VLAN tag and TTL. */
struct pop_capture {
	__u64 timestamp_ns; /* CLOCK_MONOTONIC */
	__u32 ingress_ifindex;
	__u32 egress_ifindex;
	__u32 action; /* enum pop_action */
	__u32 reason;
	__u32 frame_len;
	__u32 capture_len; /* bytes in data */
	__u8 data[POP_CAPTURE_BYTES];
};

#endif
