//! The popd API on its Unix socket: one JSON [`Request`] per line from the client,
//! one JSON [`Response`] per line back. popctl is a thin client of this.
use serde::{Deserialize, Serialize};

use crate::config::model::{Acl, Customer, Route};

/// A request to popd.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Interfaces, attach modes, program id, map fill, generation.
    Status,
    /// Add (or replace) a route.
    RouteAdd(Route),
    /// Delete the route with exactly this prefix.
    RouteDel {
        /// e.g. "10.0.0.0/8"
        prefix: String,
    },
    /// Every route with its resolution state.
    RouteShow {
        /// Only routes of this source: "config" or "kernel".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    /// Longest-prefix match for an address, like `ip route get`.
    RouteGet {
        /// e.g. "10.1.2.3"
        address: String,
    },
    /// Add a customer (error if the name exists).
    CustomerAdd(Customer),
    /// Delete a customer by name.
    CustomerDel {
        /// Customer name.
        name: String,
    },
    /// Every customer.
    CustomerShow,
    /// Add an ACL rule (error if the priority is taken).
    AclAdd(Acl),
    /// Delete the ACL rule with this priority.
    AclDel {
        /// Priority of the rule.
        priority: u32,
    },
    /// Every ACL rule, by priority.
    AclShow,
    /// Counters per customer (all, or one by name).
    Stats {
        /// Only this customer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        customer: Option<String>,
    },
    /// Replace the whole desired state with this config file text (TOML).
    Apply {
        /// The config file's contents.
        config: String,
        /// Validate and report the changes without applying.
        #[serde(default)]
        dry_run: bool,
    },
    /// The whole desired state as a config file (TOML).
    Export,
    /// What the live data plane does with a packet (`popctl trace`).
    Trace(TraceRequest),
    /// Arm a packet capture and stream the matching packets
    /// ([`CaptureStart`], then one [`CapturedPacket`] per line) until the
    /// client disconnects or `count` packets were sent.
    Capture(CaptureRequest),
    /// Stop popd; with `detach`, remove the data plane too.
    Shutdown {
        /// Detach XDP and unpin everything.
        #[serde(default)]
        detach: bool,
    },
}

/// popd's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    /// Success, with a command-specific JSON document (see the `*Info` types).
    Ok {
        /// The result.
        #[serde(default)]
        data: serde_json::Value,
    },
    /// Failure: one line naming the bad field and value; nothing was changed.
    Error {
        /// e.g. "route 10.0.0.0/33: prefix length 33 exceeds 32"
        message: String,
    },
}

/// `status` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// popd version.
    pub version: String,
    /// Kernel id of the attached XDP program.
    pub program_id: Option<u32>,
    /// Generation of the live desired state (increments on every change).
    pub generation: u64,
    /// Attached interfaces.
    pub interfaces: Vec<InterfaceStatus>,
    /// Map fill.
    pub maps: Vec<MapFill>,
}

/// One interface in `status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    /// Name.
    pub name: String,
    /// Kernel ifindex.
    pub ifindex: u32,
    /// `upstream` or `customer`.
    pub role: String,
    /// `native`, `generic` or `detached`.
    pub xdp_mode: String,
}

/// Fill of one map in `status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MapFill {
    /// Map name.
    pub name: String,
    /// Entries in use.
    pub entries: u64,
    /// Capacity.
    pub max_entries: u64,
}

/// The packet `popctl trace` asks about.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceRequest {
    /// Ingress interface.
    pub in_iface: String,
    /// Source address.
    pub src: String,
    /// Destination address.
    pub dst: String,
    /// tcp, udp, icmp, icmpv6 or a number; default: tcp when a port is given,
    /// else an ICMP (ICMPv6) echo request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Source port (TCP/UDP; default 40000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    /// Destination port (TCP/UDP; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// 802.1Q id of the packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// TTL / hop limit (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u8>,
    /// IP packet length in bytes, headers included (default: the headers and
    /// 18 bytes of payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u16>,
}

/// What the data plane did with a traced packet. The packet went through the
/// live program's pipeline on the live maps (a copy of the program that
/// counts nothing and takes no policer tokens).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceInfo {
    /// The packet, e.g. `tcp 198.51.100.10:40000 > 100.64.0.1:443 in eth1`.
    pub packet: String,
    /// `redirect`, `tx`, `pass` (to the kernel) or `drop`.
    pub action: String,
    /// Drop or pass reason (`acl`, `spoofed`, `local`, `no_route`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The source's customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_out: Option<String>,
    /// The destination's customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_in: Option<String>,
    /// The customer whose policer drops it (with no tokens left right now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policed_by: Option<String>,
    /// The ACL rule (priority) that matched it first, allow or drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl_rule: Option<u32>,
    /// The route that matched, with its next hops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteInfo>,
    /// The port it leaves by (redirect or tx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<String>,
    /// Destination MAC it leaves with: the next hop the flow hash chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nexthop_mac: Option<String>,
    /// The ICMP error pop answers with instead of forwarding
    /// (`time_exceeded`, `frag_needed`, `packet_too_big`), sent back out of
    /// the ingress port to the source; with action `drop` and reason
    /// `icmp_rate_limited`, the error it would send were it not over the rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_error: Option<String>,
    /// The MTU that error carries (`frag_needed`, `packet_too_big`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_mtu: Option<u32>,
}

/// One route in `route show` / `route get`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteInfo {
    /// Prefix.
    pub prefix: String,
    /// Next hops with their resolution.
    pub nexthops: Vec<NexthopInfo>,
    /// Egress interface.
    pub dev: String,
    /// Where the route comes from: "config" (the desired state) or "kernel"
    /// (learned from `[kernel_routes]`).
    #[serde(default)]
    pub source: String,
    /// A blackhole (also unreachable, prohibit) route: matching packets are dropped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blackhole: bool,
}

/// A next hop of a route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NexthopInfo {
    /// Next-hop address.
    pub via: String,
    /// Its MAC address, when resolved.
    pub mac: Option<String>,
    /// `resolved` or `unresolved`.
    pub state: String,
}

/// One customer's counters in `stats`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerStats {
    /// Customer name.
    pub name: String,
    /// Packets towards the customer.
    pub packets_in: u64,
    /// Bytes towards the customer.
    pub bytes_in: u64,
    /// Packets from the customer.
    pub packets_out: u64,
    /// Bytes from the customer.
    pub bytes_out: u64,
    /// Drops by reason label (only non-zero ones).
    pub drops: std::collections::BTreeMap<String, u64>,
}

/// `apply` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplyInfo {
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// Human-readable change lines ("+ route 10.0.0.0/8 via ...", "- customer acme"),
    /// at most [`MAX_CHANGE_LINES`].
    pub changes: Vec<String>,
    /// Changes beyond the lines listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more: u64,
    /// Generation after the apply (unchanged on dry run).
    pub generation: u64,
}

/// At most this many change lines are listed by `apply` (a million-route
/// config would otherwise answer with a million lines); the rest are counted.
pub const MAX_CHANGE_LINES: usize = 10_000;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// An ACL rule as `acl show` lists it: the rule and its hit counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclInfo {
    /// The rule.
    #[serde(flatten)]
    pub acl: Acl,
    /// Packets this rule decided (allow or drop): it was the first to match.
    #[serde(default)]
    pub hits: u64,
    /// Bytes (whole frames) of those packets.
    #[serde(default)]
    pub hit_bytes: u64,
}

/// What `popctl capture` asks for. Every given filter must match.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureRequest {
    /// Packets arriving on or leaving by this pop interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    /// Packets from or to this customer's prefixes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// Only dropped packets.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drops: bool,
    /// Only packets dropped for this reason (`acl`, `spoofed`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
    /// Stop after this many packets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Bytes kept of each packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<u32>,
}

/// popd's first answer to a capture: the capture is armed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureStart {
    /// pop's interfaces (the packets' `in` and `out` are among them).
    pub interfaces: Vec<String>,
    /// Bytes kept of each packet.
    pub snaplen: u32,
}

/// A captured packet, one per line after [`CaptureStart`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CapturedPacket {
    /// When the data plane saw it, ns since the Unix epoch.
    pub ts_ns: u64,
    /// The interface it arrived on.
    #[serde(rename = "in")]
    pub in_iface: String,
    /// The interface it left by (redirect, tx).
    #[serde(default, rename = "out", skip_serializing_if = "Option::is_none")]
    pub out_iface: Option<String>,
    /// `redirect`, `tx`, `pass` or `drop`.
    pub action: String,
    /// Drop or pass reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Frame length.
    pub len: u32,
    /// The first bytes of the frame, hex.
    pub data: String,
}
