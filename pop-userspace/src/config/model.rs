//! The desired state of a PoP: the TOML config file (docs/reference.md), which is also
//! what `popctl export` prints and `popctl apply` takes.
use serde::{Deserialize, Serialize};

/// The whole desired state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(bound(
    serialize = "R: Serialize + RouteList",
    deserialize = "R: Deserialize<'de> + Default"
))]
pub struct Config<R = Vec<Route>> {
    /// Data plane settings.
    #[serde(default)]
    pub dataplane: DataplaneConfig,
    /// Interfaces the XDP program is attached to.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Customers (counted, policed, protected against spoofing).
    #[serde(default)]
    pub customers: Vec<Customer>,
    /// Static routes: their text form (`Vec<Route>`) as the config file and
    /// popctl give them, or popd's typed table
    /// ([`crate::config::routes::ConfiguredRoutes`]) in its state file.
    #[serde(default, skip_serializing_if = "RouteList::is_empty")]
    pub routes: R,
    /// Firewall rules.
    #[serde(default)]
    pub acls: Vec<Acl>,
    /// The ICMP errors pop sends itself.
    #[serde(default)]
    pub icmp: IcmpConfig,
    /// Learn routes from a kernel routing table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_routes: Option<KernelRoutes>,
    /// sFlow v5 export (`[sflow]`); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sflow: Option<SflowConfig>,
}

/// What a config's `routes` can be.
pub trait RouteList {
    /// Whether there are no routes (then `routes` is left out when
    /// serialised).
    fn is_empty(&self) -> bool;
}

impl RouteList for Vec<Route> {
    fn is_empty(&self) -> bool {
        Vec::is_empty(self)
    }
}

impl RouteList for crate::config::routes::ConfiguredRoutes {
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<R> Config<R> {
    /// The same config with other routes, and the routes it had.
    pub fn with_routes<T>(self, routes: T) -> (Config<T>, R) {
        let Config {
            dataplane,
            interfaces,
            customers,
            routes: old,
            acls,
            icmp,
            kernel_routes,
            sflow,
        } = self;
        (
            Config {
                dataplane,
                interfaces,
                customers,
                routes,
                acls,
                icmp,
                kernel_routes,
                sflow,
            },
            old,
        )
    }
}

/// `[icmp]`: the rate limit of the ICMP errors pop sends itself (Time
/// Exceeded, Fragmentation Needed, Packet Too Big): a token bucket per CPU,
/// like the kernel's `icmp_msgs_per_sec` / `icmp_msgs_burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpConfig {
    /// Errors per second, per CPU.
    #[serde(default = "IcmpConfig::default_rate_per_s")]
    pub rate_per_s: u64,
    /// Errors a CPU may send at once after a quiet period.
    #[serde(default = "IcmpConfig::default_burst")]
    pub burst: u64,
}

impl IcmpConfig {
    /// `rate_per_s` when not set.
    pub const DEFAULT_RATE_PER_S: u64 = 1000;
    /// `burst` when not set.
    pub const DEFAULT_BURST: u64 = 50;

    fn default_rate_per_s() -> u64 {
        Self::DEFAULT_RATE_PER_S
    }

    fn default_burst() -> u64 {
        Self::DEFAULT_BURST
    }
}

impl Default for IcmpConfig {
    fn default() -> Self {
        Self {
            rate_per_s: Self::DEFAULT_RATE_PER_S,
            burst: Self::DEFAULT_BURST,
        }
    }
}

/// `[kernel_routes]`: popd follows a kernel routing table (which a BGP daemon
/// such as bird2 or FRR fills) and forwards by its routes. They are not part of
/// the desired state: the kernel table is their source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelRoutes {
    /// The routing table number (`ip route show table N`).
    pub table: u32,
}

/// `[sflow]`: flow samples (1 in `sampling_rate` packets at ingress, dropped
/// ones included) and interface counters, sent as sFlow v5 to the collectors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SflowConfig {
    /// Collectors as "ip:port" ("[v6]:port" for IPv6), e.g. "192.0.2.50:6343".
    pub collectors: Vec<String>,
    /// Sample 1 in N packets, per interface, at ingress.
    #[serde(default = "default_sampling_rate")]
    pub sampling_rate: u64,
    /// Seconds between interface counter samples; 0 turns them off.
    #[serde(default = "default_polling_interval")]
    pub polling_interval: u64,
    /// The agent address in the datagrams; default: the first address of the
    /// first upstream interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_address: Option<String>,
}

fn default_sampling_rate() -> u64 {
    1000
}

fn default_polling_interval() -> u64 {
    20
}

/// `[dataplane]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneConfig {
    /// How to attach XDP.
    #[serde(default)]
    pub xdp_mode: XdpMode,
    /// What to do with packets that have no route.
    #[serde(default)]
    pub no_route: NoRouteAction,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        Self {
            xdp_mode: XdpMode::Auto,
            no_route: NoRouteAction::Pass,
        }
    }
}

/// `xdp_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native, else generic with a warning and a metric.
    #[default]
    Auto,
    /// Driver mode only.
    Native,
    /// Generic (skb) mode only.
    Generic,
}

/// `no_route`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoRouteAction {
    /// Hand to the kernel.
    #[default]
    Pass,
    /// Drop and count as `no_route`.
    Drop,
}

/// `[[interfaces]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// Kernel interface name.
    pub name: String,
    /// `upstream` or `customer`.
    pub role: InterfaceRole,
}

/// Interface role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceRole {
    /// Transit / peering.
    Upstream,
    /// Customer-facing.
    Customer,
}

/// `[[customers]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    /// Unique name (metric label).
    pub name: String,
    /// Prefixes (IPv4 and IPv6) that belong to the customer, e.g. "198.51.100.0/24".
    pub prefixes: Vec<String>,
    /// Ports where the customer attaches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// 802.1Q id on those ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Drop traffic from its ports whose source is outside its prefixes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anti_spoofing: bool,
    /// Policer rate in bits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_bps: Option<u64>,
    /// Policer burst in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_bytes: Option<u64>,
}

/// `[[routes]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Destination prefix, e.g. "0.0.0.0/0".
    pub prefix: String,
    /// Next-hop addresses (same family as the prefix); several means ECMP.
    pub via: Vec<String>,
    /// Egress interface (one of `interfaces`).
    pub dev: String,
}

/// `[[acls]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acl {
    /// Lower is evaluated first; unique.
    pub priority: u32,
    /// `allow` or `drop`.
    pub action: AclAction,
    /// Source prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// Destination prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Source port or range "1000-2000".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<String>,
    /// Destination port or range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<String>,
    /// Ingress interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_iface: Option<String>,
}

/// ACL action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclAction {
    /// Let the packet continue.
    Allow,
    /// Drop, counted as `acl`.
    Drop,
}
