//! pop's kernel/userspace ABI: the one Rust definition of every map key and value,
//! action, drop reason and constant shared with the C data plane
//! (`pop-ebpf/src/abi.h`). The test `tests/tests/abi_btf.rs` compares these layouts
//! with the BTF of the compiled object, so the two cannot drift apart silently.
#![no_std]
#![deny(missing_docs)]

pub mod fib4;
pub mod fib6;

/// Interfaces pop can be attached to at once (slots in `iface_counters`).
pub const MAX_IFACES: u32 = 1024;
/// The record of `iface_counters` that counts packets on interfaces pop does
/// not know (the one after the interfaces' slots).
pub const NO_IFACE_SLOT: u32 = MAX_IFACES;
/// Next hops per route (ECMP width).
pub const MAX_ECMP: usize = 8;
/// Entries of the `nexthops` array.
pub const MAX_NEXTHOPS: u32 = 65536;
/// Next hops of configured routes: ids 1..=this; the upper half of the
/// next-hop array belongs to routes learned from the kernel.
pub const MAX_CONFIGURED_NEXTHOPS: u32 = MAX_NEXTHOPS / 2 - 1;
/// Customer ids are 1..MAX_CUSTOMERS (0 means "no customer").
pub const MAX_CUSTOMERS: u32 = 16384;
/// Capacity of `routes_v4`.
pub const MAX_ROUTES_V4: u32 = 2_097_152;
/// Capacity of `routes_v6`.
pub const MAX_ROUTES_V6: u32 = 524_288;
/// Capacity of each of `cust_v4` and `cust_v6`.
pub const MAX_CUSTOMER_PREFIXES: u32 = 65536;
/// Capacity of each of `local_v4` and `local_v6`: the host's own addresses.
/// Sized for hosts with many (service and anycast addresses); what exceeds it
/// is left out and counted, never an error.
pub const MAX_LOCAL_ADDRS: u32 = 65536;
/// ACL rules per copy (the maps hold two copies, see [`PopConfig::acl_copy`]).
pub const MAX_ACL_RULES: u32 = 131_072;
/// ACL decision-tree nodes ([`PopAclNode`], each [`ACL_NODE_LEVELS`] binary
/// levels; both families together) per copy.
pub const MAX_ACL_NODES: u32 = 393_216;
/// Blocks of ACL leaf rules ([`PopAclLeafBlock`]) per copy.
pub const MAX_ACL_LEAF_BLOCKS: u32 = 65_536;
/// Match fields of an ACL rule ([`AclField`]).
pub const ACL_FIELDS: usize = 12;
/// Deepest ACL tree the data plane walks (root at depth 0, leaves at most here).
pub const ACL_MAX_DEPTH: u32 = 48;
/// Most rules one ACL leaf may list (the data plane checks at most this many).
pub const ACL_LEAF_MAX: u32 = 64;
/// Most decision trees per address family (rules are grouped by shape, one
/// tree per group; a packet walks each and takes the first match overall).
pub const ACL_MAX_TREES: usize = 8;
/// "No rule": a rule index beyond every real one.
pub const ACL_NO_RULE: u32 = 0xFFFF_FFFF;
/// Port value of packets without ports (non-TCP/UDP, non-first fragments):
/// outside 0..=65535, so only port-wildcard rules match them.
pub const ACL_NO_PORT: u32 = 65_536;
/// Binary tree levels packed into one [`PopAclNode`].
pub const ACL_NODE_LEVELS: u32 = 3;
/// (field, threshold) slots of a [`PopAclNode`]: `2^ACL_NODE_LEVELS - 1`.
pub const ACL_NODE_SLOTS: usize = 7;
/// Child refs of a [`PopAclNode`]: `2^ACL_NODE_LEVELS`.
pub const ACL_NODE_CHILDREN: usize = 8;
/// Most nodes on a root-to-leaf path: [`ACL_MAX_DEPTH`] / [`ACL_NODE_LEVELS`].
pub const ACL_MAX_NODE_DEPTH: u32 = 16;
/// Leaf rules per [`PopAclLeafBlock`].
pub const ACL_LEAF_BLOCK: usize = 8;
/// Fields of the ACL first-stage filter (`acl_filter`), in this order: source
/// address, destination address, protocol, destination port.
pub const ACL_FILTER_FIELDS: usize = 4;
/// Cells per filter field: a key value's cell is `(value >> shift) & 0xffff`,
/// shift 16 for IPv4 addresses, else 0.
pub const ACL_FILTER_CELLS: usize = 65_536;
/// Bytes of a [`PopAclFilter`]: both families, every field and cell.
pub const ACL_FILTER_BYTES: usize = 2 * ACL_FILTER_FIELDS * ACL_FILTER_CELLS;
/// An ACL tree reference (root or child) with this bit is a leaf: `count`
/// rules (in [`ACL_REF_COUNT`] << [`ACL_REF_COUNT_SHIFT`]) filling the blocks
/// `acl_leaf_rules[start..]` in order, `start` in [`ACL_REF_START`]. Without
/// it, a node index.
pub const ACL_REF_LEAF: u32 = 0x8000_0000;
/// Mask of a leaf ref's first block in `acl_leaf_rules`.
pub const ACL_REF_START: u32 = 0x000F_FFFF;
/// Shift of a leaf ref's rule count.
pub const ACL_REF_COUNT_SHIFT: u32 = 20;
/// Mask of a leaf ref's rule count (after the shift).
pub const ACL_REF_COUNT: u32 = 0x7F;
/// Entries of `policers`: one bucket per customer and direction.
pub const MAX_POLICERS: u32 = MAX_CUSTOMERS * 2;
/// Capacity of `spoof_src_v4` and of `spoof_src_v6`, each: (anti-spoofing
/// port, prefix of a customer attached there) entries.
pub const MAX_SPOOF_PREFIXES: u32 = 65_536;
/// IPv6 extension headers the data plane walks before it gives a packet to
/// the kernel (a longer chain is passed, not parsed).
pub const IPV6_EXT_MAX: u32 = 6;
/// Capacity of `upper_macs`: MACs the host accepts on pop's interfaces
/// besides their own (of macvlan/macvtap devices, VRRP virtual MACs among
/// them; a VLAN device's port's).
pub const MAX_UPPER_MACS: u32 = 4096;
/// Bytes of a sampled frame's start kept in a [`PopSample`] (sFlow header record).
pub const SAMPLE_HEADER_BYTES: usize = 128;
/// Most bytes of a frame kept in a [`PopCapture`].
pub const CAPTURE_BYTES: usize = 2048;
/// Size of the ring buffer `sample_ring`.
pub const SAMPLE_RING_BYTES: u32 = 256 * 1024;
/// Size of the ring buffer `capture_ring`.
pub const CAPTURE_RING_BYTES: u32 = 4 * 1024 * 1024;
/// `PopObserveConfig::capture`: a capture is armed.
pub const CAPTURE_ON: u32 = 1 << 0;
/// `PopObserveConfig::capture`: only packets in or out by `capture_ifindex`.
pub const CAPTURE_IFACE: u32 = 1 << 1;
/// `PopObserveConfig::capture`: only packets from or to `capture_customer`.
pub const CAPTURE_CUSTOMER: u32 = 1 << 2;
/// `PopObserveConfig::capture`: only dropped packets.
pub const CAPTURE_DROPS: u32 = 1 << 3;
/// `PopObserveConfig::capture`: only packets dropped for `capture_reason`.
pub const CAPTURE_DROP_REASON: u32 = 1 << 4;
/// `PopObserveScratch::pending`: the packet is sampled.
pub const PENDING_SAMPLE: u32 = 1 << 0;
/// `PopObserveScratch::pending`: a capture is armed.
pub const PENDING_CAPTURE: u32 = 1 << 1;
/// Capacity of `fib4_routes`: distinct IPv4 route records (ECMP groups,
/// [`PopRoute`] values) at once; routes with equal values share one.
pub const MAX_ROUTE_RECORDS_V4: u32 = 65_536;
/// Elements of `ifaces_by_index`: an interface whose ifindex is below this
/// has its [`PopIface`] there too (besides `ifaces`), found by index.
pub const IFACES_BY_INDEX: u32 = 4096;

/// `PopConfig::flags`: drop (instead of pass to the kernel) packets without a route.
pub const CFG_NO_ROUTE_DROP: u32 = 1 << 0;
/// `PopNexthop::flags`: the slot is in use.
pub const NH_VALID: u32 = 1 << 0;
/// `PopNexthop::flags`: the neighbour's MAC address is known.
pub const NH_RESOLVED: u32 = 1 << 1;
/// `PopRoute::flags`: the route is a blackhole: matching packets are dropped,
/// counted as [`DropReason::Blackhole`].
pub const ROUTE_BLACKHOLE: u32 = 1 << 0;
/// `PopIface::flags`: a customer with anti-spoofing attaches here; sources must
/// lie in a prefix `spoof_src_v4` / `spoof_src_v6` hold for this port.
pub const IFACE_ANTI_SPOOFING: u32 = 1 << 0;
/// `PopIface::flags`, set only in `ifaces_by_index`: the element holds an
/// interface (an element never written is all zero and is not one).
pub const IFACE_PRESENT: u32 = 1 << 1;

/// Names of the maps, as pinned under popd's `--bpffs` directory.
pub mod maps {
    /// Global settings ([`super::PopConfig`], one entry).
    pub const CONFIG: &str = "config";
    /// ifindex → [`super::PopIface`].
    pub const IFACES: &str = "ifaces";
    /// ifindex → egress device (DEVMAP_HASH).
    pub const TX_PORTS: &str = "tx_ports";
    /// [`super::LpmV4`] → [`super::PopRoute`].
    pub const ROUTES_V4: &str = "routes_v4";
    /// [`super::LpmV6`] → [`super::PopRoute`].
    pub const ROUTES_V6: &str = "routes_v6";
    /// id → [`super::PopNexthop`].
    pub const NEXTHOPS: &str = "nexthops";
    /// [`super::LpmV4`] → [`super::PopCustomerRef`].
    pub const CUST_V4: &str = "cust_v4";
    /// [`super::LpmV6`] → [`super::PopCustomerRef`].
    pub const CUST_V6: &str = "cust_v6";
    /// Copy 1 of [`CUST_V4`] (see [`super::PopConfig::cust_copy`]).
    pub const CUST_V4_1: &str = "cust_v4_1";
    /// Copy 1 of [`CUST_V6`].
    pub const CUST_V6_1: &str = "cust_v6_1";
    /// IPv4 address (network order u32) of this host → unused u32.
    pub const LOCAL_V4: &str = "local_v4";
    /// [`super::PopLocalV6`] → unused u32.
    pub const LOCAL_V6: &str = "local_v6";
    /// Interface slot (or [`super::NO_IFACE_SLOT`]) →
    /// [`super::PopIfaceCounters`] per CPU: actions, drop and pass reasons.
    pub const IFACE_COUNTERS: &str = "iface_counters";
    /// Customer id → [`super::PopCustomerCounters`] per CPU: forwarded
    /// packets by direction, drops by reason.
    pub const CUSTOMER_COUNTERS: &str = "customer_counters";
    /// ACL copy (0 or 1) → [`super::PopAclMeta`].
    pub const ACL_META: &str = "acl_meta";
    /// copy * MAX_ACL_NODES + node → [`super::PopAclNode`].
    pub const ACL_NODES: &str = "acl_nodes";
    /// copy * MAX_ACL_LEAF_BLOCKS + i → [`super::PopAclLeafBlock`].
    pub const ACL_LEAF_RULES: &str = "acl_leaf_rules";
    /// copy * MAX_ACL_RULES + rule → [`super::PopAclRule`].
    pub const ACL_RULES: &str = "acl_rules";
    /// ACL copy (0 or 1) → [`super::PopAclFilter`]: the ACL's first stage,
    /// the trees each cell rules out.
    pub const ACL_FILTER: &str = "acl_filter";
    /// ifindex → customer id of the anti-spoofing customer on that port (u32).
    pub const SPOOF_PORTS: &str = "spoof_ports";
    /// LPM [`super::PopSpoofV4Key`] → unused u32: (port, IPv4 prefix of a
    /// customer attached there); sources it covers may send from that port.
    pub const SPOOF_SRC_V4: &str = "spoof_src_v4";
    /// LPM [`super::PopSpoofV6Key`] → unused u32: the same for IPv6.
    pub const SPOOF_SRC_V6: &str = "spoof_src_v6";
    /// customer_id * 2 + direction → [`super::PopPolicer`].
    pub const POLICERS: &str = "policers";
    /// [`super::PopVlanKey`] → ifindex of the VLAN device (u32).
    pub const VLAN_IFACES: &str = "vlan_ifaces";
    /// ifindex → [`super::PopIface`] per CPU, for ifindexes below
    /// [`super::IFACES_BY_INDEX`]: the same records as [`IFACES`], found by
    /// index, with [`super::IFACE_PRESENT`] set; element 0 is the data
    /// plane's scratch copy of a record found in [`IFACES`].
    pub const IFACES_BY_INDEX: &str = "ifaces_by_index";
    /// Per CPU, index 0 → [`super::PopTrace`]: the trace program's record.
    pub const TRACE_OUT: &str = "trace_out";
    /// [`super::PopUpperMacKey`] → ifindex of the macvlan/macvtap device with
    /// that MAC (u32): unicast frames to it are for this host too.
    pub const UPPER_MACS: &str = "upper_macs";
    /// [`super::IcmpType`] → [`super::PopCounter`] per CPU: ICMP errors sent
    /// (bytes: the errors' frames).
    pub const ICMP_STATS: &str = "icmp_stats";
    /// Per CPU, index 0 → [`super::PopIcmpBucket`]: the ICMP error rate limit.
    pub const ICMP_BUCKET: &str = "icmp_bucket";
    /// copy * MAX_ACL_RULES + rule → [`super::PopCounter`] per CPU: the hits of
    /// each ACL rule (packets it decided, allow or drop), indexed like [`ACL_RULES`].
    pub const ACL_HITS: &str = "acl_hits";
    /// Index 0 → [`super::PopObserveConfig`]: sampling and capture settings.
    pub const OBSERVE_CONFIG: &str = "observe_config";
    /// Per CPU, index 0 → [`super::PopObserveScratch`]: one packet's sampling state.
    pub const OBSERVE_SCRATCH: &str = "observe_scratch";
    /// [`super::ObserveStat`] → u64 per CPU.
    pub const OBSERVE_STATS: &str = "observe_stats";
    /// Ring buffer of [`super::PopSample`] (sFlow flow samples).
    pub const SAMPLE_RING: &str = "sample_ring";
    /// Ring buffer of [`super::PopCapture`] (`popctl capture`).
    pub const CAPTURE_RING: &str = "capture_ring";
    /// route id → [`super::PopRoute`]: the IPv4 route records that the
    /// answers of the fib4 maps point at.
    pub const FIB4_ROUTES: &str = "fib4_routes";
    /// The IPv4 FIB's tables ([`crate::fib4`]).
    pub use crate::fib4::maps::{FIB4_RESULTS, FIB4_TBL24, FIB4_TBL8};
    /// The IPv6 FIB's tables and route records ([`crate::fib6`]).
    pub use crate::fib6::maps::{FIB6_NODES, FIB6_ROOT, FIB6_ROUTES};
    /// Every map pop pins, for adoption and cleanup.
    pub const ALL: &[&str] = &[
        CONFIG,
        IFACES,
        TX_PORTS,
        ROUTES_V4,
        ROUTES_V6,
        NEXTHOPS,
        CUST_V4,
        CUST_V6,
        CUST_V4_1,
        CUST_V6_1,
        LOCAL_V4,
        LOCAL_V6,
        IFACE_COUNTERS,
        CUSTOMER_COUNTERS,
        ACL_META,
        ACL_NODES,
        ACL_LEAF_RULES,
        ACL_RULES,
        SPOOF_PORTS,
        SPOOF_SRC_V4,
        SPOOF_SRC_V6,
        POLICERS,
        TRACE_OUT,
        VLAN_IFACES,
        UPPER_MACS,
        ICMP_STATS,
        ICMP_BUCKET,
        ACL_HITS,
        OBSERVE_CONFIG,
        OBSERVE_SCRATCH,
        OBSERVE_STATS,
        SAMPLE_RING,
        CAPTURE_RING,
        FIB4_TBL24,
        FIB4_TBL8,
        FIB4_RESULTS,
        FIB4_ROUTES,
        FIB6_ROOT,
        FIB6_NODES,
        FIB6_ROUTES,
        ACL_FILTER,
        IFACES_BY_INDEX,
    ];
}

macro_rules! labelled_enum {
    ($(#[$m:meta])* $name:ident, $slots:expr, { $($(#[$vm:meta])* $v:ident = $n:expr => $label:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum $name { $($(#[$vm])* $v = $n),* }
        impl $name {
            /// Every value, in numeric order.
            pub const ALL: &'static [$name] = &[$($name::$v),*];
            /// Slots reserved for this enum in the C arrays.
            pub const SLOTS: u32 = $slots;
            /// The label used in metrics and `popctl`.
            pub const fn label(self) -> &'static str { match self { $($name::$v => $label),* } }
            /// From the numeric value in the maps.
            pub fn from_u32(v: u32) -> Option<Self> { match v { $($n => Some($name::$v),)* _ => None } }
        }
    };
}

labelled_enum!(
    /// What the program finally did with a packet (`enum pop_action`).
    Action, 4, {
        /// Sent out another port through the devmap.
        Redirect = 0 => "redirect",
        /// Sent back out of the port it came in on.
        Tx = 1 => "tx",
        /// Handed to the kernel.
        Pass = 2 => "pass",
        /// Dropped (see [`DropReason`]).
        Drop = 3 => "drop",
    }
);

labelled_enum!(
    /// Why a packet was dropped (`enum pop_drop_reason`).
    DropReason, 16, {
        /// Truncated or inconsistent headers.
        Malformed = 0 => "malformed",
        /// An ACL rule with action drop matched.
        Acl = 1 => "acl",
        /// Source outside the customer's prefixes on an anti-spoofing port.
        Spoofed = 2 => "spoofed",
        /// Over the customer's policer rate.
        Policed = 3 => "policed",
        /// No route, with `no_route = "drop"`.
        NoRoute = 4 => "no_route",
        /// Source or destination never valid on the wire (0/8, 127/8, ...).
        Martian = 5 => "martian",
        /// Unicast to a MAC the host does not accept on the receiving
        /// interface (neither its own nor a macvlan/VRRP upper device's): a
        /// frame for another host on a shared segment.
        OtherHost = 6 => "other_host",
        /// The frame could not be resized for its egress VLAN tag
        /// (`bpf_xdp_adjust_head` failed).
        AdjustHead = 7 => "adjust_head",
        /// pop would answer with an ICMP error, but its `[icmp]` rate limit
        /// (per CPU) is used up.
        IcmpRateLimited = 8 => "icmp_rate_limited",
        /// A blackhole, unreachable or prohibit route (learned from the
        /// kernel) matched the destination.
        Blackhole = 9 => "blackhole",
    }
);

labelled_enum!(
    /// Why a packet was handed to the kernel (`enum pop_pass_reason`).
    PassReason, 16, {
        /// ARP, LLDP and other non-IP frames.
        NonIp = 0 => "non_ip",
        /// 802.1Q/802.1ad tagged frames.
        Vlan = 1 => "vlan",
        /// Addressed to this host.
        Local = 2 => "local",
        /// Multicast or broadcast.
        Multicast = 3 => "multicast",
        /// Link-local source or destination.
        LinkLocal = 4 => "link_local",
        /// TTL or hop limit <= 1 that pop does not answer itself: about an
        /// ICMP error or a non-first fragment, or no source address for the
        /// reply (see [`IcmpType`]).
        Ttl = 5 => "ttl",
        /// No route, with `no_route = "pass"`.
        NoRoute = 6 => "no_route",
        /// The next hop's MAC is unknown or its port is not in the devmap.
        Unresolved = 7 => "unresolved",
        /// Larger than the egress MTU and not answered by pop: IPv4 without
        /// DF (XDP cannot fragment), or not to be answered (as for [`PassReason::Ttl`]).
        Mtu = 8 => "mtu",
        /// IPv4 options or IPv6 hop-by-hop / deep extension chains.
        IpOptions = 9 => "ip_options",
        /// Arrived on an interface pop does not manage.
        UnknownIface = 10 => "unknown_iface",
    }
);

labelled_enum!(
    /// Role of an interface (`enum pop_iface_role`).
    Role, 2, {
        /// Towards transit or peering.
        Upstream = 0 => "upstream",
        /// Where customers attach.
        Customer = 1 => "customer",
    }
);

labelled_enum!(
    /// What an ACL rule does with a matching packet (`enum pop_acl_action`).
    AclVerdict, 2, {
        /// Let the packet continue.
        Allow = 0 => "allow",
        /// Drop it, counted as [`DropReason::Acl`].
        Drop = 1 => "drop",
    }
);

labelled_enum!(
    /// The u32 match fields of an ACL rule and of a packet's ACL key
    /// (`enum pop_acl_field`), in the order of [`PopAclRule::lo`]. IPv4 addresses
    /// use `Src0`/`Dst0` (host order), IPv6 addresses all four words, most
    /// significant first; the unused words of an IPv4 key are 0.
    AclField, ACL_FIELDS as u32, {
        /// Source address, bits 127..96 (IPv4: the whole address).
        Src0 = 0 => "src0",
        /// Source address, bits 95..64.
        Src1 = 1 => "src1",
        /// Source address, bits 63..32.
        Src2 = 2 => "src2",
        /// Source address, bits 31..0.
        Src3 = 3 => "src3",
        /// Destination address, bits 127..96 (IPv4: the whole address).
        Dst0 = 4 => "dst0",
        /// Destination address, bits 95..64.
        Dst1 = 5 => "dst1",
        /// Destination address, bits 63..32.
        Dst2 = 6 => "dst2",
        /// Destination address, bits 31..0.
        Dst3 = 7 => "dst3",
        /// IP protocol (IPv6: the last next header).
        Proto = 8 => "proto",
        /// Source port, or [`ACL_NO_PORT`].
        SrcPort = 9 => "src_port",
        /// Destination port, or [`ACL_NO_PORT`].
        DstPort = 10 => "dst_port",
        /// Ingress ifindex.
        InIface = 11 => "in_iface",
    }
);

labelled_enum!(
    /// The ICMP errors pop sends itself (`enum pop_icmp_type`, index of
    /// `icmp_stats`).
    IcmpType, 4, {
        /// ICMP Time Exceeded (TTL) or ICMPv6 Time Exceeded (hop limit).
        TimeExceeded = 0 => "time_exceeded",
        /// ICMP Destination Unreachable, Fragmentation Needed and DF set.
        FragNeeded = 1 => "frag_needed",
        /// ICMPv6 Packet Too Big.
        PacketTooBig = 2 => "packet_too_big",
    }
);

labelled_enum!(
    /// Direction of customer counters (`enum pop_direction`).
    Direction, 2, {
        /// Towards the customer (matched by destination).
        In = 0 => "in",
        /// From the customer (matched by source).
        Out = 1 => "out",
    }
);

labelled_enum!(
    /// Counters of sampling and capture (`enum pop_observe_stat`, map `observe_stats`).
    ObserveStat, 4, {
        /// A sample found `sample_ring` full (reported as sFlow drops).
        SampleLost = 0 => "sample_lost",
        /// A matching packet found `capture_ring` full.
        CaptureLost = 1 => "capture_lost",
        /// A matching packet was over the capture rate.
        CaptureLimited = 2 => "capture_limited",
    }
);

/// `struct pop_config`: global settings, one entry in map `config`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopConfig {
    /// `CFG_*` bits.
    pub flags: u32,
    /// Generation of the desired state that is live.
    pub generation: u32,
    /// Which copy (0 or 1) of the ACL maps the data plane uses. Each packet reads
    /// it once, so flipping it after writing the other copy swaps rule sets
    /// atomically.
    pub acl_copy: u32,
    /// Which copy (0: `cust_v6`, 1: `cust_v6_1`) of the IPv6 customer
    /// tables the data plane uses, read once per packet; a customer change
    /// is written into the other copy and made live by flipping it. IPv4
    /// customers are in fib4 and change in place, one prefix at a time.
    pub cust_copy: u32,
    /// ICMP errors pop may send per second, per CPU (`[icmp] rate_per_s`);
    /// 0: no limit.
    pub icmp_rate_per_s: u32,
    /// ICMP errors a CPU may send at once (`[icmp] burst`).
    pub icmp_burst: u32,
}

/// `struct pop_iface`: an attached interface, keyed by ifindex.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopIface {
    /// Index into `iface_counters` (0..MAX_IFACES).
    pub slot: u32,
    /// [`Role`] as u32.
    pub role: u32,
    /// Reserved.
    pub flags: u32,
    /// MTU of the interface.
    pub mtu: u32,
    /// The MAC the kernel accepts as its own here (a VLAN device's own);
    /// unicast frames to other MACs are dropped unless in `upper_macs`.
    pub mac: [u8; 6],
    /// Zero.
    pub pad: u16,
    /// Source address (network order) of the ICMP errors pop sends from here;
    /// all zero: none, such packets go to the kernel.
    pub icmp_src_v4: [u8; 4],
    /// Source address of the ICMPv6 errors pop sends from here; all zero: none.
    pub icmp_src_v6: [u8; 16],
}

/// `struct pop_lpm_v4`: LPM trie key for IPv4.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LpmV4 {
    /// Prefix length in bits.
    pub prefixlen: u32,
    /// Address in network byte order.
    pub addr: [u8; 4],
}

/// `struct pop_lpm_v6`: LPM trie key for IPv6.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LpmV6 {
    /// Prefix length in bits.
    pub prefixlen: u32,
    /// Address in network byte order.
    pub addr: [u8; 16],
}

/// `struct pop_route`: up to [`MAX_ECMP`] next-hop ids.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopRoute {
    /// `ROUTE_*` bits.
    pub flags: u32,
    /// How many of `nh_ids` are used.
    pub nh_count: u32,
    /// Indexes into `nexthops`.
    pub nh_ids: [u32; MAX_ECMP],
}

/// `struct pop_nexthop`: a next hop resolved to an egress port and MACs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopNexthop {
    /// Egress XDP port (for a VLAN device, the port it sits on).
    pub ifindex: u32,
    /// `NH_*` bits.
    pub flags: u32,
    /// The neighbour's MAC.
    pub dmac: [u8; 6],
    /// The egress interface's MAC.
    pub smac: [u8; 6],
    /// Egress MTU (L3 bytes); 0 disables the check.
    pub mtu: u32,
    /// 802.1Q id the packet leaves with; 0: untagged.
    pub vlan: u16,
    /// Padding.
    pub pad: u16,
}

/// `struct pop_vlan_key`: key of `vlan_ifaces`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PopVlanKey {
    /// The XDP port.
    pub ifindex: u32,
    /// VLAN id.
    pub vid: u32,
}

/// `struct pop_upper_mac_key`: key of `upper_macs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PopUpperMacKey {
    /// The interface (an XDP port, or a VLAN device on one) the upper device
    /// sits on.
    pub ifindex: u32,
    /// The upper device's MAC.
    pub mac: [u8; 6],
    /// Zero (part of the hash key).
    pub pad: u16,
}

/// `struct pop_customer_ref`: value of `cust_v4`/`cust_v6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopCustomerRef {
    /// 1..MAX_CUSTOMERS.
    pub customer_id: u32,
}

/// `struct pop_local_v6`: key of `local_v6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PopLocalV6 {
    /// Address in network byte order.
    pub addr: [u8; 16],
}

/// `struct pop_counter`: one per-CPU counter pair.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopCounter {
    /// Packets.
    pub packets: u64,
    /// Bytes (whole frames).
    pub bytes: u64,
}

impl PopCounter {
    /// Sum of per-CPU values.
    pub fn sum<'a>(values: impl IntoIterator<Item = &'a PopCounter>) -> PopCounter {
        values
            .into_iter()
            .fold(PopCounter::default(), |a, c| PopCounter {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
            })
    }
}

/// `struct pop_iface_counters`: every counter of one interface, per CPU
/// (map `iface_counters`, indexed by [`PopIface::slot`]). A packet's verdict
/// adds to one action and, when dropped or passed, one reason of one record:
/// the drop and pass totals are the sums over all records.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopIfaceCounters {
    /// By [`Action`].
    pub action: [PopCounter; Action::SLOTS as usize],
    /// By [`DropReason`].
    pub drop: [PopCounter; DropReason::SLOTS as usize],
    /// By [`PassReason`].
    pub pass: [PopCounter; PassReason::SLOTS as usize],
}

impl PopIfaceCounters {
    /// Sum of per-CPU records, field by field.
    pub fn sum<'a>(values: impl IntoIterator<Item = &'a PopIfaceCounters>) -> PopIfaceCounters {
        let mut total = PopIfaceCounters::default();
        for v in values {
            total.add(v);
        }
        total
    }

    /// Adds `other` to this record, field by field.
    pub fn add(&mut self, other: &PopIfaceCounters) {
        add_counters(&mut self.action, &other.action);
        add_counters(&mut self.drop, &other.drop);
        add_counters(&mut self.pass, &other.pass);
    }
}

/// `struct pop_customer_counters`: every counter of one customer, per CPU
/// (map `customer_counters`, indexed by customer id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopCustomerCounters {
    /// Forwarded, by [`Direction`].
    pub dir: [PopCounter; Direction::SLOTS as usize],
    /// Dropped, by [`DropReason`].
    pub drop: [PopCounter; DropReason::SLOTS as usize],
}

impl PopCustomerCounters {
    /// Sum of per-CPU records, field by field.
    pub fn sum<'a>(
        values: impl IntoIterator<Item = &'a PopCustomerCounters>,
    ) -> PopCustomerCounters {
        let mut total = PopCustomerCounters::default();
        for v in values {
            total.add(v);
        }
        total
    }

    /// Adds `other` to this record, field by field.
    pub fn add(&mut self, other: &PopCustomerCounters) {
        add_counters(&mut self.dir, &other.dir);
        add_counters(&mut self.drop, &other.drop);
    }
}

fn add_counters(to: &mut [PopCounter], from: &[PopCounter]) {
    for (a, b) in to.iter_mut().zip(from) {
        a.packets += b.packets;
        a.bytes += b.bytes;
    }
}

/// `struct pop_acl_rule`: one ACL rule as a hyper-rectangle over [`AclField`]s.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopAclRule {
    /// Lowest matching value per field (inclusive).
    pub lo: [u32; ACL_FIELDS],
    /// Highest matching value per field (inclusive).
    pub hi: [u32; ACL_FIELDS],
    /// [`AclVerdict`] as u32.
    pub action: u32,
    /// The rule's priority (for tracing; the order is the rule index).
    pub priority: u32,
}

/// `struct pop_acl_node`: [`ACL_NODE_LEVELS`] levels of the binary ACL
/// decision tree. Slot `s` (heap order: 0 on top, `2s+1` and `2s+2` below)
/// sends `key[field[s]] <= threshold[s]` left, else right; after the last
/// level `s` is `ACL_NODE_SLOTS + c` and `child[c]` is the next ref
/// ([`ACL_REF_LEAF`]). Padding slots (a binary leaf above the last level)
/// have threshold `u32::MAX` (always left) and repeat the leaf.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopAclNode {
    /// Threshold per slot.
    pub threshold: [u32; ACL_NODE_SLOTS],
    /// [`AclField`] per slot (`field[ACL_NODE_SLOTS]` is unused).
    pub field: [u8; ACL_NODE_CHILDREN],
    /// Next ref per outcome of the last level.
    pub child: [u32; ACL_NODE_CHILDREN],
}

/// `struct pop_acl_leaf_rule`: a rule of an ACL leaf, its index and its two
/// narrowest fields, checked before the rule itself is read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopAclLeafRule {
    /// Index in `acl_rules`.
    pub rule: u32,
    /// The [`AclField`]s checked first.
    pub field: [u8; 2],
    /// Zero.
    pub pad: u16,
    /// The rule's lowest value of each of `field`.
    pub lo: [u32; 2],
    /// The rule's highest value of each of `field`.
    pub hi: [u32; 2],
}

/// `struct pop_acl_leaf_block`: [`ACL_LEAF_BLOCK`] rules of an ACL leaf, in
/// priority order (one map element, one lookup).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopAclLeafBlock {
    /// The rules; past the leaf's count, unused.
    pub rule: [PopAclLeafRule; ACL_LEAF_BLOCK],
}

/// `struct pop_acl_filter`: the ACL's first stage, one per copy. Bit `t` of
/// `skip[(family * ACL_FILTER_FIELDS + field) * ACL_FILTER_CELLS + cell]`
/// (family 0 IPv4, 1 IPv6) says no rule of tree `t` of that family can match
/// a key in that cell, so the packet skips the tree. All zero skips nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PopAclFilter {
    /// Trees ruled out, per family, field and cell.
    pub skip: [u8; ACL_FILTER_BYTES],
}

/// `struct pop_acl_meta`: where the trees of one ACL copy start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopAclMeta {
    /// Rule slots in this copy (slots above hold no rule; a slot may hold a
    /// deleted rule that matches nothing); 0 means no ACL (everything
    /// allowed, trees not walked).
    pub rule_count: u32,
    /// Nodes in this copy.
    pub node_count: u32,
    /// IPv4 trees in use (<= [`ACL_MAX_TREES`]).
    pub trees_v4: u32,
    /// IPv6 trees in use.
    pub trees_v6: u32,
    /// Root node of each IPv4 tree, by ascending `first_rule_v4`.
    pub root_v4: [u32; ACL_MAX_TREES],
    /// Lowest rule priority in each IPv4 tree: a tree is skipped once a
    /// match with a lower priority is known.
    pub first_rule_v4: [u32; ACL_MAX_TREES],
    /// Root node of each IPv6 tree.
    pub root_v6: [u32; ACL_MAX_TREES],
    /// Lowest rule priority in each IPv6 tree.
    pub first_rule_v6: [u32; ACL_MAX_TREES],
}

/// `struct pop_spoof_v4_key`: LPM key of `spoof_src_v4`. `prefixlen` is 32 +
/// the prefix's length, so the port always matches whole.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PopSpoofV4Key {
    /// 32 + the address prefix's length.
    pub prefixlen: u32,
    /// The port's ifindex, big-endian (`ifindex.to_be()`).
    pub ifindex: u32,
    /// The prefix (network order).
    pub addr: [u8; 4],
}

/// `struct pop_spoof_v6_key`: LPM key of `spoof_src_v6`, like
/// [`PopSpoofV4Key`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PopSpoofV6Key {
    /// 32 + the address prefix's length.
    pub prefixlen: u32,
    /// The port's ifindex, big-endian (`ifindex.to_be()`).
    pub ifindex: u32,
    /// The prefix (network order).
    pub addr: [u8; 16],
}

/// `struct pop_policer`: a token bucket, shared by all CPUs under `lock`.
///
/// Tokens are counted in bit-nanoseconds (bytes x 8e9), so refilling is an exact
/// multiplication `elapsed_ns * rate_bps` without division.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopPolicer {
    /// `struct bpf_spin_lock` (owned by the kernel; write 0).
    pub lock: u32,
    /// Padding.
    pub pad: u32,
    /// Rate in bits per second; 0 disables the policer.
    pub rate_bps: u64,
    /// Bucket size: burst_bytes * 8e9.
    pub capacity: u64,
    /// Time to fill an empty bucket: capacity / rate_bps (caps the refill product).
    pub fill_ns: u64,
    /// Tokens now, in bit-nanoseconds.
    pub tokens: u64,
    /// `bpf_ktime_get_ns` of the last refill.
    pub last_ns: u64,
}

/// `struct pop_trace`: what the trace program (`pop_trace`, run by `popctl
/// trace`) did with one packet. It runs the live pipeline on the live maps but
/// counts nothing and takes no policer tokens.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopTrace {
    /// 1 once the program has written the record.
    pub done: u32,
    /// XDP action: 1 drop, 2 pass, 3 tx, 4 redirect.
    pub action: u32,
    /// [`DropReason`] when dropped.
    pub drop_reason: u32,
    /// [`PassReason`] when passed to the kernel.
    pub pass_reason: u32,
    /// The source's customer id (0: none).
    pub customer_out: u32,
    /// The destination's customer id (0: none).
    pub customer_in: u32,
    /// 1 when an ACL rule matched (allow or drop).
    pub acl_matched: u32,
    /// That rule's priority.
    pub acl_priority: u32,
    /// The customer whose policer would drop it (0: none).
    pub policed_customer: u32,
    /// 1 when a route matched.
    pub route_found: u32,
    /// The chosen next hop's port.
    pub egress_ifindex: u32,
    /// The next hop's MAC.
    pub dmac: [u8; 6],
    /// The egress port's MAC.
    pub smac: [u8; 6],
    /// 1 + [`IcmpType`] when pop answers with that ICMP error; 0: none.
    pub icmp_type: u32,
    /// The MTU the error carries (Fragmentation Needed, Packet Too Big).
    pub icmp_mtu: u32,
}

/// `struct pop_icmp_bucket`: the ICMP error rate limit of one CPU. One error
/// costs `1e9 / icmp_rate_per_s` ns of credit; the credit grows with time up
/// to `icmp_burst` errors' worth.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopIcmpBucket {
    /// Credit in nanoseconds.
    pub credit_ns: u64,
    /// `bpf_ktime_get_ns` of the last update.
    pub last_ns: u64,
}

/// `struct pop_observe_config`: sampling and capture settings, one entry in
/// map `observe_config`. All zero: nothing sampled or captured.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopObserveConfig {
    /// Sample 1 in N packets at ingress; 0: off.
    pub sampling_rate: u32,
    /// `CAPTURE_*` bits; 0: no capture.
    pub capture: u32,
    /// With [`CAPTURE_IFACE`]: the port.
    pub capture_ifindex: u32,
    /// With [`CAPTURE_CUSTOMER`]: the customer id.
    pub capture_customer: u32,
    /// With [`CAPTURE_DROP_REASON`]: the [`DropReason`].
    pub capture_reason: u32,
    /// Bytes kept of each frame (at most [`CAPTURE_BYTES`]).
    pub capture_snaplen: u32,
    /// Per CPU, one captured packet per interval ...
    pub capture_interval_ns: u64,
    /// ... with bursts of `capture_burst_ns / capture_interval_ns` packets.
    pub capture_burst_ns: u64,
}

/// `struct pop_observe_scratch`: per-CPU state of one packet's sampling and
/// capture (map `observe_scratch`); only the data plane writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PopObserveScratch {
    /// `PENDING_*` bits.
    pub pending: u32,
    /// Packets until the next sample on this CPU.
    pub skip: u32,
    /// The rate `skip` was drawn for.
    pub skip_rate: u32,
    /// Drop or pass reason the pipeline gave.
    pub reason: u32,
    /// Port a forwarded packet leaves by.
    pub egress_ifindex: u32,
    /// Port it arrived on.
    pub ingress_ifindex: u32,
    /// Frame length.
    pub frame_len: u32,
    /// Bytes in `header`.
    pub header_len: u32,
    /// The skip last drawn: packets from one sample to the next.
    pub skip_drawn: u32,
    /// Packets this CPU skipped that no sent sample has reported yet.
    pub unreported: u32,
    /// Capture rate state (theoretical arrival time, ns).
    pub capture_tat_ns: u64,
    /// The frame's first bytes as it arrived.
    pub header: [u8; SAMPLE_HEADER_BYTES],
}

/// `struct pop_sample`: a flow sample from ring buffer `sample_ring`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PopSample {
    /// Port it arrived on.
    pub ingress_ifindex: u32,
    /// Action redirect or tx: the port it left by; else 0.
    pub egress_ifindex: u32,
    /// [`Action`] as u32.
    pub action: u32,
    /// [`DropReason`] (action drop) or [`PassReason`] (action pass).
    pub reason: u32,
    /// Frame length.
    pub frame_len: u32,
    /// Bytes of `header` that are the frame's.
    pub header_len: u32,
    /// The rate it was sampled at.
    pub sampling_rate: u32,
    /// Packets this CPU saw since its last sample that reached popd, this one
    /// included: what the sample adds to the sample pool.
    pub skipped: u32,
    /// The frame's first bytes as it arrived.
    pub header: [u8; SAMPLE_HEADER_BYTES],
}

/// `struct pop_capture`: a captured packet from ring buffer `capture_ring`,
/// as the pipeline left it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PopCapture {
    /// CLOCK_MONOTONIC, ns.
    pub timestamp_ns: u64,
    /// Port it arrived on.
    pub ingress_ifindex: u32,
    /// Port it left by (redirect, tx), else 0.
    pub egress_ifindex: u32,
    /// [`Action`] as u32.
    pub action: u32,
    /// [`DropReason`] or [`PassReason`].
    pub reason: u32,
    /// Frame length.
    pub frame_len: u32,
    /// Bytes of `data` that are the frame's.
    pub capture_len: u32,
    /// The frame's first bytes.
    pub data: [u8; CAPTURE_BYTES],
}

/// Index into `policers`.
pub const fn policer_index(customer_id: u32, direction: Direction) -> u32 {
    customer_id * Direction::SLOTS + direction as u32
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are #[repr(C)] plain integers/arrays without padding holes that
    // matter to the kernel; any bit pattern is valid.
    unsafe impl aya::Pod for PopConfig {}
    unsafe impl aya::Pod for PopIface {}
    unsafe impl aya::Pod for LpmV4 {}
    unsafe impl aya::Pod for LpmV6 {}
    unsafe impl aya::Pod for PopRoute {}
    unsafe impl aya::Pod for PopNexthop {}
    unsafe impl aya::Pod for PopCustomerRef {}
    unsafe impl aya::Pod for PopLocalV6 {}
    unsafe impl aya::Pod for PopCounter {}
    unsafe impl aya::Pod for PopIfaceCounters {}
    unsafe impl aya::Pod for PopCustomerCounters {}
    unsafe impl aya::Pod for PopAclRule {}
    unsafe impl aya::Pod for PopAclNode {}
    unsafe impl aya::Pod for PopAclLeafBlock {}
    unsafe impl aya::Pod for PopAclMeta {}
    unsafe impl aya::Pod for PopAclFilter {}
    unsafe impl aya::Pod for PopSpoofV4Key {}
    unsafe impl aya::Pod for PopSpoofV6Key {}
    unsafe impl aya::Pod for PopPolicer {}
    unsafe impl aya::Pod for PopTrace {}
    unsafe impl aya::Pod for PopVlanKey {}
    unsafe impl aya::Pod for PopUpperMacKey {}
    unsafe impl aya::Pod for PopIcmpBucket {}
    unsafe impl aya::Pod for PopObserveConfig {}
    unsafe impl aya::Pod for PopObserveScratch {}
    unsafe impl aya::Pod for PopSample {}
    unsafe impl aya::Pod for PopCapture {}
}

/// A struct's C name, size and (field name, offset) pairs.
pub type Layout = (&'static str, usize, &'static [(&'static str, usize)]);

/// Every ABI struct with its C name, size and field offsets, for the BTF check.
pub fn layouts() -> &'static [Layout] {
    use core::mem::{offset_of, size_of};
    macro_rules! l {
        ($c:expr, $t:ty, [$($f:ident),*]) => {
            ($c, size_of::<$t>(), &[$((stringify!($f), offset_of!($t, $f))),*])
        };
    }
    &[
        l!(
            "pop_config",
            PopConfig,
            [
                flags,
                generation,
                acl_copy,
                cust_copy,
                icmp_rate_per_s,
                icmp_burst
            ]
        ),
        l!(
            "pop_iface",
            PopIface,
            [slot, role, flags, mtu, mac, pad, icmp_src_v4, icmp_src_v6]
        ),
        l!("pop_lpm_v4", LpmV4, [prefixlen, addr]),
        l!("pop_lpm_v6", LpmV6, [prefixlen, addr]),
        l!("pop_route", PopRoute, [flags, nh_count, nh_ids]),
        l!(
            "pop_nexthop",
            PopNexthop,
            [ifindex, flags, dmac, smac, mtu, vlan, pad]
        ),
        l!("pop_vlan_key", PopVlanKey, [ifindex, vid]),
        l!("pop_upper_mac_key", PopUpperMacKey, [ifindex, mac, pad]),
        l!("pop_customer_ref", PopCustomerRef, [customer_id]),
        l!("pop_local_v6", PopLocalV6, [addr]),
        l!("pop_counter", PopCounter, [packets, bytes]),
        l!("pop_iface_counters", PopIfaceCounters, [action, drop, pass]),
        l!("pop_customer_counters", PopCustomerCounters, [dir, drop]),
        l!("pop_acl_rule", PopAclRule, [lo, hi, action, priority]),
        l!("pop_acl_node", PopAclNode, [threshold, field, child]),
        l!(
            "pop_acl_leaf_rule",
            PopAclLeafRule,
            [rule, field, pad, lo, hi]
        ),
        l!("pop_acl_filter", PopAclFilter, [skip]),
        l!(
            "pop_acl_meta",
            PopAclMeta,
            [
                rule_count,
                node_count,
                trees_v4,
                trees_v6,
                root_v4,
                first_rule_v4,
                root_v6,
                first_rule_v6
            ]
        ),
        l!(
            "pop_spoof_v4_key",
            PopSpoofV4Key,
            [prefixlen, ifindex, addr]
        ),
        l!(
            "pop_spoof_v6_key",
            PopSpoofV6Key,
            [prefixlen, ifindex, addr]
        ),
        l!(
            "pop_policer",
            PopPolicer,
            [lock, pad, rate_bps, capacity, fill_ns, tokens, last_ns]
        ),
        l!(
            "pop_observe_config",
            PopObserveConfig,
            [
                sampling_rate,
                capture,
                capture_ifindex,
                capture_customer,
                capture_reason,
                capture_snaplen,
                capture_interval_ns,
                capture_burst_ns
            ]
        ),
        l!(
            "pop_observe_scratch",
            PopObserveScratch,
            [
                pending,
                skip,
                skip_rate,
                reason,
                egress_ifindex,
                ingress_ifindex,
                frame_len,
                header_len,
                skip_drawn,
                unreported,
                capture_tat_ns,
                header
            ]
        ),
        l!(
            "pop_sample",
            PopSample,
            [
                ingress_ifindex,
                egress_ifindex,
                action,
                reason,
                frame_len,
                header_len,
                sampling_rate,
                skipped,
                header
            ]
        ),
        l!(
            "pop_capture",
            PopCapture,
            [
                timestamp_ns,
                ingress_ifindex,
                egress_ifindex,
                action,
                reason,
                frame_len,
                capture_len,
                data
            ]
        ),
        l!(
            "pop_trace",
            PopTrace,
            [
                done,
                action,
                drop_reason,
                pass_reason,
                customer_out,
                customer_in,
                acl_matched,
                acl_priority,
                policed_customer,
                route_found,
                egress_ifindex,
                dmac,
                smac,
                icmp_type,
                icmp_mtu
            ]
        ),
        l!("pop_icmp_bucket", PopIcmpBucket, [credit_ns, last_ns]),
        l!("pop_fib4_block", fib4::PopFib4Block, [entry]),
        l!(
            "pop_fib4_result",
            fib4::PopFib4Result,
            [route_id, customer_id, flags, pad]
        ),
        l!("pop_fib6_block", fib6::PopFib6Block, [entry]),
        l!("pop_fib6_node", fib6::PopFib6Node, [entry]),
    ]
}

/// Every C enum constant pop-common mirrors, with its value, for the BTF check.
pub fn constants() -> &'static [(&'static str, i64)] {
    &[
        ("POP_ACTION_REDIRECT", Action::Redirect as i64),
        ("POP_ACTION_TX", Action::Tx as i64),
        ("POP_ACTION_PASS", Action::Pass as i64),
        ("POP_ACTION_DROP", Action::Drop as i64),
        ("POP_ACTION_MAX", Action::SLOTS as i64),
        ("POP_DROP_MALFORMED", DropReason::Malformed as i64),
        ("POP_DROP_ACL", DropReason::Acl as i64),
        ("POP_DROP_SPOOFED", DropReason::Spoofed as i64),
        ("POP_DROP_POLICED", DropReason::Policed as i64),
        ("POP_DROP_NO_ROUTE", DropReason::NoRoute as i64),
        ("POP_DROP_MARTIAN", DropReason::Martian as i64),
        ("POP_DROP_OTHER_HOST", DropReason::OtherHost as i64),
        ("POP_DROP_ADJUST_HEAD", DropReason::AdjustHead as i64),
        ("POP_DROP_ICMP_RATE", DropReason::IcmpRateLimited as i64),
        ("POP_DROP_BLACKHOLE", DropReason::Blackhole as i64),
        ("POP_DROP_MAX", DropReason::SLOTS as i64),
        ("POP_PASS_NON_IP", PassReason::NonIp as i64),
        ("POP_PASS_VLAN", PassReason::Vlan as i64),
        ("POP_PASS_LOCAL", PassReason::Local as i64),
        ("POP_PASS_MULTICAST", PassReason::Multicast as i64),
        ("POP_PASS_LINK_LOCAL", PassReason::LinkLocal as i64),
        ("POP_PASS_TTL", PassReason::Ttl as i64),
        ("POP_PASS_NO_ROUTE", PassReason::NoRoute as i64),
        ("POP_PASS_UNRESOLVED", PassReason::Unresolved as i64),
        ("POP_PASS_MTU", PassReason::Mtu as i64),
        ("POP_PASS_IP_OPTIONS", PassReason::IpOptions as i64),
        ("POP_PASS_UNKNOWN_IFACE", PassReason::UnknownIface as i64),
        ("POP_PASS_MAX", PassReason::SLOTS as i64),
        ("POP_ICMP_TIME_EXCEEDED", IcmpType::TimeExceeded as i64),
        ("POP_ICMP_FRAG_NEEDED", IcmpType::FragNeeded as i64),
        ("POP_ICMP_PACKET_TOO_BIG", IcmpType::PacketTooBig as i64),
        ("POP_ICMP_MAX", IcmpType::SLOTS as i64),
        ("POP_ROLE_UPSTREAM", Role::Upstream as i64),
        ("POP_ROLE_CUSTOMER", Role::Customer as i64),
        ("POP_DIR_IN", Direction::In as i64),
        ("POP_DIR_OUT", Direction::Out as i64),
        ("POP_DIR_MAX", Direction::SLOTS as i64),
        ("POP_ACL_ALLOW", AclVerdict::Allow as i64),
        ("POP_ACL_DROP", AclVerdict::Drop as i64),
        ("POP_ACL_F_SRC0", AclField::Src0 as i64),
        ("POP_ACL_F_DST0", AclField::Dst0 as i64),
        ("POP_ACL_F_PROTO", AclField::Proto as i64),
        ("POP_ACL_F_SPORT", AclField::SrcPort as i64),
        ("POP_ACL_F_DPORT", AclField::DstPort as i64),
        ("POP_ACL_F_IFINDEX", AclField::InIface as i64),
        ("POP_ACL_FIELDS", ACL_FIELDS as i64),
        ("POP_ACL_MAX_DEPTH", ACL_MAX_DEPTH as i64),
        ("POP_ACL_LEAF_MAX", ACL_LEAF_MAX as i64),
        ("POP_ACL_NO_PORT", ACL_NO_PORT as i64),
        ("POP_ACL_MAX_TREES", ACL_MAX_TREES as i64),
        ("POP_ACL_NODE_LEVELS", ACL_NODE_LEVELS as i64),
        ("POP_ACL_NODE_SLOTS", ACL_NODE_SLOTS as i64),
        ("POP_ACL_NODE_CHILDREN", ACL_NODE_CHILDREN as i64),
        ("POP_ACL_MAX_NODE_DEPTH", ACL_MAX_NODE_DEPTH as i64),
        ("POP_ACL_LEAF_BLOCK", ACL_LEAF_BLOCK as i64),
        ("POP_ACL_FILTER_FIELDS", ACL_FILTER_FIELDS as i64),
        ("POP_ACL_FILTER_CELLS", ACL_FILTER_CELLS as i64),
        ("POP_OBS_SAMPLE_LOST", ObserveStat::SampleLost as i64),
        ("POP_OBS_CAPTURE_LOST", ObserveStat::CaptureLost as i64),
        (
            "POP_OBS_CAPTURE_LIMITED",
            ObserveStat::CaptureLimited as i64,
        ),
        ("POP_OBS_MAX", ObserveStat::SLOTS as i64),
    ]
}

// A leaf at ACL_MAX_DEPTH is reached within ACL_MAX_NODE_DEPTH nodes, a node
// has 2^levels children, and a leaf ref holds every leaf start and count.
const _: () = assert!(ACL_MAX_NODE_DEPTH * ACL_NODE_LEVELS >= ACL_MAX_DEPTH);
const _: () = assert!(ACL_NODE_CHILDREN == 1 << ACL_NODE_LEVELS);
const _: () = assert!(ACL_NODE_SLOTS + 1 == ACL_NODE_CHILDREN);
const _: () = assert!(MAX_ACL_LEAF_BLOCKS <= ACL_REF_START + 1);
const _: () = assert!((ACL_LEAF_MAX as usize).is_multiple_of(ACL_LEAF_BLOCK));
const _: () = assert!(ACL_LEAF_MAX <= ACL_REF_COUNT);
const _: () = assert!(MAX_ACL_NODES <= ACL_REF_LEAF);
