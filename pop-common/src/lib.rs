//! pop's kernel/userspace ABI: the one Rust definition of every map key and value,
//! action, drop reason and constant shared with the C data plane
//! (`pop-ebpf/src/abi.h`). The test `tests/tests/abi_btf.rs` compares these layouts
//! with the BTF of the compiled object, so the two cannot drift apart silently.
#![no_std]
#![deny(missing_docs)]

/// Interfaces pop can be attached to at once (slots in `iface_stats`).
pub const MAX_IFACES: u32 = 64;
/// Next hops per route (ECMP width).
pub const MAX_ECMP: usize = 8;
/// Entries of the `nexthops` array.
pub const MAX_NEXTHOPS: u32 = 65536;
/// Customer ids are 1..MAX_CUSTOMERS (0 means "no customer").
pub const MAX_CUSTOMERS: u32 = 16384;
/// Capacity of `routes_v4`.
pub const MAX_ROUTES_V4: u32 = 2_097_152;
/// Capacity of `routes_v6`.
pub const MAX_ROUTES_V6: u32 = 524_288;
/// Capacity of each of `cust_v4` and `cust_v6`.
pub const MAX_CUSTOMER_PREFIXES: u32 = 65536;
/// Capacity of each of `local_v4` and `local_v6`.
pub const MAX_LOCAL_ADDRS: u32 = 4096;

/// `PopConfig::flags`: drop (instead of pass to the kernel) packets without a route.
pub const CFG_NO_ROUTE_DROP: u32 = 1 << 0;
/// `PopNexthop::flags`: the slot is in use.
pub const NH_VALID: u32 = 1 << 0;
/// `PopNexthop::flags`: the neighbour's MAC address is known.
pub const NH_RESOLVED: u32 = 1 << 1;
/// `PopRoute::flags`: the route is a blackhole (treated as no route).
pub const ROUTE_BLACKHOLE: u32 = 1 << 0;

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
    /// IPv4 address (network order u32) of this host → unused u32.
    pub const LOCAL_V4: &str = "local_v4";
    /// [`super::PopLocalV6`] → unused u32.
    pub const LOCAL_V6: &str = "local_v6";
    /// slot * ACTION_COUNT + action → [`super::PopCounter`] per CPU.
    pub const IFACE_STATS: &str = "iface_stats";
    /// drop reason → [`super::PopCounter`] per CPU.
    pub const DROP_STATS: &str = "drop_stats";
    /// pass reason → [`super::PopCounter`] per CPU.
    pub const PASS_STATS: &str = "pass_stats";
    /// customer_id * 2 + direction → [`super::PopCounter`] per CPU.
    pub const CUST_STATS: &str = "cust_stats";
    /// customer_id * DROP_REASON_SLOTS + reason → [`super::PopCounter`] per CPU.
    pub const CUST_DROPS: &str = "cust_drops";
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
        LOCAL_V4,
        LOCAL_V6,
        IFACE_STATS,
        DROP_STATS,
        PASS_STATS,
        CUST_STATS,
        CUST_DROPS,
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
        /// TTL or hop limit <= 1: the kernel sends ICMP time exceeded.
        Ttl = 5 => "ttl",
        /// No route, with `no_route = "pass"`.
        NoRoute = 6 => "no_route",
        /// The next hop's MAC is unknown or its port is not in the devmap.
        Unresolved = 7 => "unresolved",
        /// Larger than the egress MTU: the kernel answers with ICMP.
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
    /// Direction of customer counters (`enum pop_direction`).
    Direction, 2, {
        /// Towards the customer (matched by destination).
        In = 0 => "in",
        /// From the customer (matched by source).
        Out = 1 => "out",
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
}

/// `struct pop_iface`: an attached interface, keyed by ifindex.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopIface {
    /// Index into `iface_stats` (0..MAX_IFACES).
    pub slot: u32,
    /// [`Role`] as u32.
    pub role: u32,
    /// Reserved.
    pub flags: u32,
    /// MTU of the interface.
    pub mtu: u32,
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
    /// Egress interface.
    pub ifindex: u32,
    /// `NH_*` bits.
    pub flags: u32,
    /// The neighbour's MAC.
    pub dmac: [u8; 6],
    /// The egress interface's MAC.
    pub smac: [u8; 6],
    /// Egress MTU (L3 bytes); 0 disables the check.
    pub mtu: u32,
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

/// Index into `iface_stats`.
pub const fn iface_stats_index(slot: u32, action: Action) -> u32 {
    slot * Action::SLOTS + action as u32
}

/// Index into `cust_stats`.
pub const fn cust_stats_index(customer_id: u32, direction: Direction) -> u32 {
    customer_id * Direction::SLOTS + direction as u32
}

/// Index into `cust_drops`.
pub const fn cust_drops_index(customer_id: u32, reason: DropReason) -> u32 {
    customer_id * DropReason::SLOTS + reason as u32
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
        l!("pop_config", PopConfig, [flags, generation]),
        l!("pop_iface", PopIface, [slot, role, flags, mtu]),
        l!("pop_lpm_v4", LpmV4, [prefixlen, addr]),
        l!("pop_lpm_v6", LpmV6, [prefixlen, addr]),
        l!("pop_route", PopRoute, [flags, nh_count, nh_ids]),
        l!("pop_nexthop", PopNexthop, [ifindex, flags, dmac, smac, mtu]),
        l!("pop_customer_ref", PopCustomerRef, [customer_id]),
        l!("pop_local_v6", PopLocalV6, [addr]),
        l!("pop_counter", PopCounter, [packets, bytes]),
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
        ("POP_ROLE_UPSTREAM", Role::Upstream as i64),
        ("POP_ROLE_CUSTOMER", Role::Customer as i64),
        ("POP_DIR_IN", Direction::In as i64),
        ("POP_DIR_OUT", Direction::Out as i64),
        ("POP_DIR_MAX", Direction::SLOTS as i64),
    ]
}
