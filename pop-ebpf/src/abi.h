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

#define POP_MAX_IFACES 64
#define POP_MAX_ECMP 8
#define POP_MAX_NEXTHOPS 65536
#define POP_MAX_CUSTOMERS 16384
#define POP_MAX_ROUTES_V4 2097152
#define POP_MAX_ROUTES_V6 524288
#define POP_MAX_CUSTOMER_PREFIXES 65536
#define POP_MAX_LOCAL_ADDRS 4096
#define POP_IPV6_EXT_MAX 6

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

/* Direction of customer counters: in = towards the customer, out = from it. */
enum pop_direction {
	POP_DIR_IN = 0,
	POP_DIR_OUT = 1,
	POP_DIR_MAX = 2,
};

/* pop_config.flags */
#define POP_CFG_NO_ROUTE_DROP (1U << 0)

/* pop_nexthop.flags */
#define POP_NH_VALID (1U << 0)
#define POP_NH_RESOLVED (1U << 1)

/* pop_route.flags */
#define POP_ROUTE_BLACKHOLE (1U << 0)

/* Global settings, one entry in the array map `config`. */
struct pop_config {
	__u32 flags;
	__u32 generation;
};

/* Interfaces pop is attached to, keyed by ifindex (map `ifaces`). */
struct pop_iface {
	__u32 slot; /* 0..POP_MAX_IFACES-1: index into iface_stats */
	__u32 role; /* enum pop_iface_role */
	__u32 flags;
	__u32 mtu;
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
	__u32 ifindex;
	__u32 flags;
	__u8 dmac[6];
	__u8 smac[6];
	__u32 mtu;
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

#endif
