//! The errors of config validation: one line naming the object, field and value.
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

/// Why a prefix string is not a network prefix.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PrefixError {
    /// Not `ADDRESS/LENGTH` with a valid address.
    #[error("not an IP prefix (expected ADDRESS/LENGTH)")]
    Syntax,
    /// A bare address: pop wants the length spelled out.
    #[error("missing prefix length (write \"{0}/{1}\" for a single address)")]
    MissingLength(IpAddr, u8),
    /// The length is not a number.
    #[error("prefix length {0:?} is not a number")]
    BadLength(String),
    /// The length exceeds the address size.
    #[error("prefix length {len} exceeds {max}")]
    LengthExceeds {
        /// Given length.
        len: u32,
        /// 32 or 128.
        max: u8,
    },
    /// Bits beyond the prefix length are set (like `ip route`, this is refused).
    #[error("host bits set (did you mean {0}?)")]
    HostBits(IpNet),
}

/// Why a port string is not a port or port range.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PortError {
    /// Not `N` or `A-B`.
    #[error("not a port or range (expected N or A-B)")]
    Syntax,
    /// A number above 65535.
    #[error("port exceeds 65535")]
    Exceeds,
    /// `A-B` with A > B.
    #[error("range start {0} exceeds end {1}")]
    Reversed(u16, u16),
}

/// What is wrong with one field of one object.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Problem {
    /// The route's own prefix.
    #[error("{0}")]
    Prefix(PrefixError),
    /// A prefix-valued field (`prefix`, `src`, `dst`).
    #[error("{field} {value:?}: {error}")]
    FieldPrefix {
        /// Field name.
        field: &'static str,
        /// Value as given.
        value: String,
        /// Why it is invalid.
        error: PrefixError,
    },
    /// A port field (`src_port`, `dst_port`).
    #[error("{field} {value:?}: {error}")]
    Port {
        /// Field name.
        field: &'static str,
        /// Value as given.
        value: String,
        /// Why it is invalid.
        error: PortError,
    },
    /// `proto` is not a known name or a number 0-255.
    #[error("proto {0:?}: expected tcp, udp, icmp, icmpv6 or a number 0-255")]
    Proto(String),
    /// A port match on a protocol without ports.
    #[error("{0} needs proto tcp or udp")]
    PortNeedsProto(&'static str),
    /// `src` and `dst` of one rule are of different families.
    #[error("src {0:?} and dst {1:?} differ in address family")]
    AclFamily(String, String),
    /// An ACL priority of 4294967295, which the data plane keeps to mark
    /// "no rule".
    #[error("priority exceeds the maximum of {max}", max = u32::MAX - 1)]
    AclPriority,
    /// `via` is empty.
    #[error("no next hop (via is empty)")]
    NoNexthop,
    /// More next hops than the data plane's ECMP width.
    #[error("{0} next hops exceed the maximum of {max}", max = pop_common::MAX_ECMP)]
    TooManyNexthops(usize),
    /// A next hop that is not an address.
    #[error("via {0:?}: not an IP address")]
    NexthopSyntax(String),
    /// A next hop of the other family.
    #[error("via {0:?}: address family differs from the prefix")]
    NexthopFamily(String),
    /// A next hop that cannot be a neighbour (unspecified, multicast, broadcast).
    #[error("via {0:?}: not a unicast address")]
    NexthopNotUnicast(String),
    /// The same next hop twice.
    #[error("via {0:?}: listed twice")]
    NexthopTwice(String),
    /// `dev`, `in_iface` or a customer interface not in `[[interfaces]]`.
    #[error("{field} {value:?} is not a configured interface")]
    UnknownInterface {
        /// Field name.
        field: &'static str,
        /// Interface name.
        value: String,
    },
    /// A customer interface with role upstream.
    #[error("interface {0:?} has role upstream, not customer")]
    NotCustomerInterface(String),
    /// A customer lists an interface twice.
    #[error("interface {0:?} listed twice")]
    InterfaceTwice(String),
    /// Interface name not acceptable to the kernel.
    #[error("{field} {name:?} {why}")]
    BadInterfaceName {
        /// Field name (`name`, `dev`, `interface`, `in_iface`).
        field: &'static str,
        /// The name.
        name: String,
        /// Why.
        why: &'static str,
    },
    /// The same object twice.
    #[error("{0} listed twice")]
    Duplicate(&'static str),
    /// Customer name unusable as a metric label.
    #[error("name {0:?}: only letters, digits, '_', '.' and '-' are allowed")]
    BadCustomerName(String),
    /// Empty customer name.
    #[error("name is empty")]
    EmptyName,
    /// A customer without prefixes.
    #[error("needs at least one prefix")]
    NoPrefixes,
    /// A customer prefix listed twice.
    #[error("prefix {0:?} listed twice")]
    PrefixTwice(String),
    /// A customer prefix overlapping another customer's.
    #[error("prefix {prefix:?} overlaps prefix {other_prefix:?} of customer {other}")]
    PrefixOverlap {
        /// This customer's prefix.
        prefix: String,
        /// The other customer's prefix.
        other_prefix: String,
        /// The other customer.
        other: String,
    },
    /// VLAN id outside 1..=4094.
    #[error("vlan {0} out of range 1-4094")]
    Vlan(u16),
    /// `rate_bps = 0`.
    #[error("rate_bps must be greater than 0")]
    ZeroRate,
    /// `burst_bytes = 0`.
    #[error("burst_bytes must be greater than 0")]
    ZeroBurst,
    /// `burst_bytes` without `rate_bps`.
    #[error("burst_bytes requires rate_bps")]
    BurstWithoutRate,
    /// `rate_bps` beyond what the policer's refill arithmetic holds.
    #[error("rate_bps {rate} exceeds the maximum of {max}")]
    RateExceeds {
        /// The configured rate.
        rate: u64,
        /// The policer's limit.
        max: u64,
    },
    /// `burst_bytes` beyond what the policer's bucket holds.
    #[error("burst_bytes {burst} exceeds the maximum of {max}")]
    BurstExceeds {
        /// The configured burst.
        burst: u64,
        /// The bucket's limit.
        max: u64,
    },
    /// A next hop that no longer fits the next-hop table (one entry per
    /// distinct (dev, via) pair over all routes).
    #[error(
        "via {via:?} is next hop {count}, beyond the maximum of {max} distinct (dev, via) pairs"
    )]
    NexthopsFull {
        /// The next hop.
        via: String,
        /// Distinct next hops so far, this one included.
        count: usize,
        /// The table's capacity.
        max: usize,
    },
    /// A customer port that no longer fits an anti-spoofing table (one entry
    /// per (port, prefix of a customer attached there) on the ports where a
    /// customer with anti-spoofing attaches, per address family).
    #[error(
        "interface {iface:?} brings the {family} anti-spoofing entries to {count}, beyond the maximum of {max} (interface, prefix) entries"
    )]
    SpoofEntriesFull {
        /// The interface.
        iface: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// Entries of that family so far, this interface's included.
        count: usize,
        /// The table's capacity.
        max: usize,
    },
}

/// A config that cannot be used. Display is one line naming the object and field.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// TOML syntax or an unknown/mistyped field.
    #[error("config line {line}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// TOML error without a position.
    #[error("config: {0}")]
    Toml(String),
    /// An `[[interfaces]]` entry.
    #[error("interface {}: {problem}", Ident(.name))]
    Interface {
        /// Interface name.
        name: String,
        /// What is wrong.
        problem: Problem,
    },
    /// A `[[routes]]` entry.
    #[error("route {}: {problem}", Ident(.prefix))]
    Route {
        /// The prefix as given.
        prefix: String,
        /// What is wrong.
        problem: Problem,
    },
    /// A `[[customers]]` entry.
    #[error("customer {}: {problem}", Ident(.name))]
    Customer {
        /// Customer name.
        name: String,
        /// What is wrong.
        problem: Problem,
    },
    /// An `[[acls]]` entry.
    #[error("acl {priority}: {problem}")]
    Acl {
        /// Rule priority.
        priority: u32,
        /// What is wrong.
        problem: Problem,
    },
    /// A value of `[icmp]` outside its range.
    #[error("icmp: {field} {value} out of range {min}-{max}")]
    Icmp {
        /// `rate_per_s` or `burst`.
        field: &'static str,
        /// As given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// `[kernel_routes] table` names no table routes can be learned from.
    #[error(
        "kernel_routes: table {0}: not a table to learn routes from \
         (use 1-254 or 256-4294967295, the table your BGP daemon exports to)"
    )]
    KernelRoutesTable(u32),
    /// The `[sflow]` section.
    #[error("sflow: {0}")]
    Sflow(#[from] super::sflow::SflowError),
    /// More objects than the data plane's maps hold.
    #[error("too many {what}: {count} exceeds the maximum of {max}")]
    Limit {
        /// e.g. "customers", "IPv4 routes".
        what: &'static str,
        /// How many the config has.
        count: usize,
        /// The capacity.
        max: usize,
    },
}

/// Prints a name bare when it is a plain token, quoted otherwise (empty, spaces, ...).
struct Ident<'a>(&'a str);

impl fmt::Display for Ident<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && self
                .0
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-/:".contains(c));
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}
