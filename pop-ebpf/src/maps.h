/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* Every map of the data plane. All are pinned by name under popd's --bpffs
 * directory so that a restarted popd, and a reloaded program, reuse them. */
#ifndef POP_MAPS_H
#define POP_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"
#include "fib4.h"
#include "fib6.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pop_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} config SEC(".maps");

/* ifindex → interface: the XDP ports, and the VLAN devices on them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, POP_MAX_IFACES);
	__type(key, __u32);
	__type(value, struct pop_iface);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ifaces SEC(".maps");

/* The same entries as ifaces, per CPU, indexed by ifindex for the ifindexes
 * 1 .. POP_IFACES_BY_INDEX-1 (an array element costs less to find than a
 * hash entry); an element without POP_IFACE_PRESENT holds no interface.
 * Element 0 (no interface has ifindex 0) is each CPU's copy of the last
 * record found in ifaces instead (ifaces.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, POP_IFACES_BY_INDEX);
	__type(key, __u32);
	__type(value, struct pop_iface);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ifaces_by_index SEC(".maps");

/* (XDP port, VLAN id) → ifindex of the VLAN device, which has its entry in
 * ifaces: a tagged frame is handled as arriving on that device. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, POP_MAX_IFACES);
	__type(key, struct pop_vlan_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vlan_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, POP_MAX_IFACES);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, POP_MAX_ROUTES_V4);
	__type(key, struct pop_lpm_v4);
	__type(value, struct pop_route);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} routes_v4 SEC(".maps");

/* IPv4 route records (ECMP groups), indexed by the route_id of a fib4
 * answer (fib4.h): the data plane looks IPv4 routes up in fib4, not in
 * routes_v4, which popd keeps as the list of its IPv4 prefixes (read back
 * after a restart). popd writes a record before a fib4 entry points at it
 * and reuses one only after a grace period. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, POP_MAX_ROUTE_RECORDS_V4);
	__type(key, __u32);
	__type(value, struct pop_route);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fib4_routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, POP_MAX_ROUTES_V6);
	__type(key, struct pop_lpm_v6);
	__type(value, struct pop_route);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} routes_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, POP_MAX_NEXTHOPS);
	__type(key, __u32);
	__type(value, struct pop_nexthop);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nexthops SEC(".maps");

/* IPv4 customer prefixes: the list popd reads back after a restart. The
 * data plane finds IPv4 customers in fib4 (fib4.h), not here. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, POP_MAX_CUSTOMER_PREFIXES);
	__type(key, struct pop_lpm_v4);
	__type(value, struct pop_customer_ref);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cust_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, POP_MAX_CUSTOMER_PREFIXES);
	__type(key, struct pop_lpm_v6);
	__type(value, struct pop_customer_ref);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cust_v6 SEC(".maps");

/* The second copy of the customer tables: pop_config.cust_copy selects the
 * copy, so a customer change is written into the copy packets do not use and
 * made live by one config write (like the ACL copies). IPv6 only now:
 * cust_v4_1 is no longer written or read (IPv4 customers are in fib4); it
 * stays in the object so that the pinned layout does not change. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, POP_MAX_CUSTOMER_PREFIXES);
	__type(key, struct pop_lpm_v4);
	__type(value, struct pop_customer_ref);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cust_v4_1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, POP_MAX_CUSTOMER_PREFIXES);
	__type(key, struct pop_lpm_v6);
	__type(value, struct pop_customer_ref);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cust_v6_1 SEC(".maps");

/* This host's IPv4 addresses and directed broadcasts (value: 0 an address,
 * 1 a broadcast): the list popd reads back after a restart. The data plane
 * finds them in fib4 (POP_FIB4_LOCAL, POP_FIB4_BROADCAST), not here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, POP_MAX_LOCAL_ADDRS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} local_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, POP_MAX_LOCAL_ADDRS);
	__type(key, struct pop_local_v6);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} local_v6 SEC(".maps");

/* Counters (counters.h): one record per interface slot, plus the one for
 * packets on no known interface ... */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, POP_NO_IFACE_SLOT + 1);
	__type(key, __u32);
	__type(value, struct pop_iface_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} iface_counters SEC(".maps");

/* ... and one per customer id. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, POP_MAX_CUSTOMERS);
	__type(key, __u32);
	__type(value, struct pop_customer_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} customer_counters SEC(".maps");

/* ACL: two copies of everything; pop_config.acl_copy says which is live.
 * Index = copy * POP_MAX_ACL_<what> + i (see acl.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct pop_acl_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} acl_meta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * POP_MAX_ACL_NODES);
	__type(key, __u32);
	__type(value, struct pop_acl_node);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} acl_nodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * POP_MAX_ACL_LEAF_BLOCKS);
	__type(key, __u32);
	__type(value, struct pop_acl_leaf_block);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} acl_leaf_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * POP_MAX_ACL_RULES);
	__type(key, __u32);
	__type(value, struct pop_acl_rule);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} acl_rules SEC(".maps");

/* ACL first stage: index = copy (see acl.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct pop_acl_filter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} acl_filter SEC(".maps");

/* Hits per ACL rule, per CPU: index = the rule's slot (its index in either
 * copy of acl_rules; a rule keeps its slot in both copies, so its count goes
 * on across flips). Counted for the rule that decides a packet (allow or
 * drop). Only the first POP_MAX_ACL_RULES entries are used now. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * POP_MAX_ACL_RULES);
	__type(key, __u32);
	__type(value, struct pop_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} acl_hits SEC(".maps");

/* Anti-spoofing: ifindex -> customer id counted for spoofed packets there. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, POP_MAX_IFACES);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} spoof_ports SEC(".maps");

/* Anti-spoofing: (port, prefix of a customer attached there) -> unused u32;
 * a source may send from an anti-spoofing port iff an entry covers it. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, POP_MAX_SPOOF_PREFIXES);
	__type(key, struct pop_spoof_v4_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} spoof_src_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, POP_MAX_SPOOF_PREFIXES);
	__type(key, struct pop_spoof_v6_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} spoof_src_v6 SEC(".maps");

/* Policers: index = customer_id * POP_DIR_MAX + direction. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, POP_MAX_POLICERS);
	__type(key, __u32);
	__type(value, struct pop_policer);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policers SEC(".maps");

/* The trace program's record (struct pop_trace): one per CPU, written by
 * the run on that CPU; only popd's trace runs use it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pop_trace);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trace_out SEC(".maps");

/* ICMP errors sent, index = enum pop_icmp_type: packets and bytes of the
 * errors (whole frames). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, POP_ICMP_MAX);
	__type(key, __u32);
	__type(value, struct pop_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} icmp_stats SEC(".maps");

/* The ICMP error rate limit: one token bucket per CPU (struct pop_icmp_bucket). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pop_icmp_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} icmp_bucket SEC(".maps");
/* (interface, MAC) -> ifindex of the macvlan/macvtap device with that MAC on
 * top of the interface (or of a VLAN device's port): unicast frames to it are
 * for this host too (first-hop redundancy: VRRP virtual MACs). See hostmac.h. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, POP_MAX_UPPER_MACS);
	__type(key, struct pop_upper_mac_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} upper_macs SEC(".maps");

/* Sampling and capture (observe.h): settings, per-CPU packet state,
 * counters, and the ring buffers popd reads. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pop_observe_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} observe_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pop_observe_scratch);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} observe_scratch SEC(".maps");

/* index = enum pop_observe_stat */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, POP_OBS_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} observe_stats SEC(".maps");

/* struct pop_sample records, for popd's sFlow exporter. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, POP_SAMPLE_RING_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sample_ring SEC(".maps");

/* struct pop_capture records, for popctl capture (through popd). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, POP_CAPTURE_RING_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} capture_ring SEC(".maps");

#endif
