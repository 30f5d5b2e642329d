//! Parsing and validation of the desired state (the config file in docs/reference.md).
//!
//! [`validate`] checks a whole [`Config`] and returns a [`Validated`] holding every
//! string already parsed (prefixes, addresses, protocol numbers, port ranges), so popd
//! never parses twice. The per-object checks ([`check_route`], [`check_customer`],
//! [`check_acl`], [`check_interface_name`]) are public so popctl can reject bad input
//! before it reaches popd, with the same message popd would give.
//!
//! Every error is one line naming the object, the field and the value:
//! `route 10.0.0.0/33: prefix length 33 exceeds 32`,
//! `customer acme: prefix "198.51.100.0/33": prefix length 33 exceeds 32`,
//! `acl 100: dst_port "70000": port exceeds 65535`.
//!
//! Validation is O(n log n) in the size of the config: popd validates the whole
//! candidate state on every change, with up to millions of routes.
mod error;
mod parse;
mod route_list;
mod sections;
mod sflow;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::model::{
    Acl, AclAction, Config, Customer, DataplaneConfig, Interface, InterfaceRole, Route,
};
use crate::config::routes::ConfiguredRoutes;
pub use error::{ConfigError, PortError, PrefixError, Problem};
pub use parse::{parse_port_range, parse_prefix, parse_proto, proto_name, PROTO_NAMES};
pub use route_list::{RouteDev, RouteList};
pub use sflow::{check_sflow, SflowError, ValidSflow};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFACE_NAME_LEN: usize = 15;

/// Most ICMP errors per second per CPU `[icmp] rate_per_s` may ask for.
pub const MAX_ICMP_RATE_PER_S: u64 = 1_000_000;
/// Largest `[icmp] burst`.
pub const MAX_ICMP_BURST: u64 = 1_000_000;

/// Smallest default policer burst: ten full-size Ethernet frames.
pub const MIN_DEFAULT_BURST_BYTES: u64 = 15_000;

/// A validated `[[interfaces]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidInterface {
    /// Kernel interface name.
    pub name: String,
    /// Upstream or customer.
    pub role: InterfaceRole,
}

/// A validated `[[routes]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidRoute {
    /// Destination (host bits clear).
    pub prefix: IpNet,
    /// 1..=MAX_ECMP next hops of the prefix's family, no duplicates, in config order.
    pub via: Vec<IpAddr>,
    /// Egress interface (a configured one).
    pub dev: String,
}

/// A validated `[[customers]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidCustomer {
    /// Unique name, `[A-Za-z0-9_.-]+`.
    pub name: String,
    /// At least one; none overlaps another customer's.
    pub prefixes: Vec<IpNet>,
    /// Configured interfaces with role customer.
    pub interfaces: Vec<String>,
    /// 1..=4094.
    pub vlan: Option<u16>,
    /// Drop traffic from its ports with a source outside `prefixes`.
    pub anti_spoofing: bool,
    /// Policer rate (> 0).
    pub rate_bps: Option<u64>,
    /// Policer burst: as configured, or [`default_burst_bytes`] when only the rate
    /// is set. `Some` exactly when `rate_bps` is.
    pub burst_bytes: Option<u64>,
}

/// A validated `[[acls]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidAcl {
    /// Unique; lower is evaluated first.
    pub priority: u32,
    /// Allow or drop.
    pub action: AclAction,
    /// Source prefix (same family as `dst` when both are set).
    pub src: Option<IpNet>,
    /// Destination prefix.
    pub dst: Option<IpNet>,
    /// IP protocol number.
    pub proto: Option<u8>,
    /// Inclusive source port range (only with proto tcp or udp).
    pub src_port: Option<(u16, u16)>,
    /// Inclusive destination port range (only with proto tcp or udp).
    pub dst_port: Option<(u16, u16)>,
    /// Ingress interface (a configured one).
    pub in_iface: Option<String>,
}

impl ValidAcl {
    /// A rule with no match field: it matches every packet. The base of
    /// rules built in code, e.g. `ValidAcl { proto: Some(17),
    /// ..ValidAcl::match_all(10, AclAction::Drop) }`.
    pub fn match_all(priority: u32, action: AclAction) -> Self {
        ValidAcl {
            priority,
            action,
            src: None,
            dst: None,
            proto: None,
            src_port: None,
            dst_port: None,
            in_iface: None,
        }
    }
}

/// A config that passed [`validate`], with every field parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    /// `[dataplane]`.
    pub dataplane: DataplaneConfig,
    /// Interfaces, in config order.
    pub interfaces: Vec<ValidInterface>,
    /// Routes, typed (the table the controller keeps).
    pub routes: ConfiguredRoutes,
    /// Each `dev` the routes name, with its first route, in config order.
    pub route_devs: Vec<RouteDev>,
    /// Customers, in config order.
    pub customers: Vec<ValidCustomer>,
    /// ACL rules sorted by priority (evaluation order).
    pub acls: Vec<ValidAcl>,
    /// `[sflow]`, when present.
    pub sflow: Option<ValidSflow>,
}

/// Parses a config file. A syntax error or unknown field is one line with its line
/// number: `config line 7: unknown field `prefx`, expected ...`.
pub fn parse_config(text: &str) -> Result<Config, ConfigError> {
    if let Some(parsed) = sections::parse::<Vec<Route>>(text) {
        return parsed.map(|(mut config, routes)| {
            config.routes = routes;
            config
        });
    }
    parse_whole(text)
}

/// [`parse_config`] with the routes read straight into a [`RouteList`]
/// (checked one by one as they are read; [`validate_with`] finishes the
/// checks): the returned config has no `routes`. With a million routes this
/// holds ~20 MB of typed routes where records took ~200 MB.
pub fn parse_config_routes(text: &str) -> Result<(Config, RouteList), ConfigError> {
    if let Some(parsed) = sections::parse::<RouteList>(text) {
        return parsed;
    }
    let mut config = parse_whole(text)?;
    let routes = RouteList::from_routes(&std::mem::take(&mut config.routes));
    Ok((config, routes))
}

fn parse_whole(text: &str) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim().replace('\n', " ");
        match e.span() {
            Some(span) => ConfigError::Syntax {
                line: text[..span.start.min(text.len())].matches('\n').count() + 1,
                message,
            },
            None => ConfigError::Toml(message),
        }
    })
}

/// Renders a config as the TOML file [`parse_config`] reads back to an equal value:
/// `[dataplane]` first, then the non-empty `[[interfaces]]`, `[[customers]]`,
/// `[[routes]]` and `[[acls]]` sections, in that order, then `[sflow]`.
pub fn to_toml(cfg: &Config) -> String {
    fn section<T: serde::Serialize + ?Sized>(name: &str, value: &T) -> String {
        // Plain structs of strings, integers and enums always serialize.
        toml::to_string(&std::collections::BTreeMap::from([(name, value)]))
            .expect("config sections always serialize to TOML")
    }
    let mut sections = vec![section("dataplane", &cfg.dataplane)];
    if cfg.icmp != crate::config::model::IcmpConfig::default() {
        sections.push(section("icmp", &cfg.icmp));
    }
    if !cfg.interfaces.is_empty() {
        sections.push(section("interfaces", &cfg.interfaces));
    }
    if !cfg.customers.is_empty() {
        sections.push(section("customers", &cfg.customers));
    }
    if !cfg.routes.is_empty() {
        sections.push(section("routes", &cfg.routes));
    }
    if !cfg.acls.is_empty() {
        sections.push(section("acls", &cfg.acls));
    }
    if let Some(k) = &cfg.kernel_routes {
        sections.push(section("kernel_routes", k));
    }
    if let Some(sflow) = &cfg.sflow {
        sections.push(section("sflow", sflow));
    }
    sections.join("\n")
}

/// The policer burst used when `rate_bps` is set without `burst_bytes`: what the
/// rate delivers in 250 ms (Cisco's default Bc, CIR/32 bytes), at least
/// [`MIN_DEFAULT_BURST_BYTES`] so that a few full-size frames always pass at low
/// rates, at most what the bucket holds. A policer cannot queue, so TCP sees
/// its excess as loss; 250 ms lets one TCP flow reach ~95% of the rate where a
/// 10 ms burst held it to 6% (measured in the lab, docs/acl.md).
pub fn default_burst_bytes(rate_bps: u64) -> u64 {
    (rate_bps / 32).clamp(
        MIN_DEFAULT_BURST_BYTES,
        crate::dataplane::police::MAX_BURST_BYTES,
    )
}

/// Checks an interface name the way the kernel does (`dev_valid_name`).
pub fn check_interface_name(field: &'static str, name: &str) -> Result<(), Problem> {
    let why = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_IFACE_NAME_LEN {
        Some("is longer than 15 characters")
    } else if name == "." || name == ".." {
        Some("is reserved")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.contains(':') {
        Some("contains ':'")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains whitespace")
    } else {
        None
    };
    match why {
        Some(why) => Err(Problem::BadInterfaceName {
            field,
            name: name.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// Checks one route on its own: prefix and next hops. Whether `dev` is configured
/// and whether the prefix is unique are checked by [`validate`].
pub fn check_route(route: &Route) -> Result<ValidRoute, ConfigError> {
    check_route_text(&route.prefix, &route.via, &route.dev)
}

/// [`check_route`] of a route given by its fields' text.
pub fn check_route_text<S: AsRef<str>>(
    prefix_text: &str,
    via_text: &[S],
    dev: &str,
) -> Result<ValidRoute, ConfigError> {
    let err = |problem| ConfigError::Route {
        prefix: prefix_text.to_string(),
        problem,
    };
    let prefix = parse_prefix(prefix_text).map_err(|e| err(Problem::Prefix(e)))?;
    if via_text.is_empty() {
        return Err(err(Problem::NoNexthop));
    }
    if via_text.len() > pop_common::MAX_ECMP {
        return Err(err(Problem::TooManyNexthops(via_text.len())));
    }
    let mut via: Vec<IpAddr> = Vec::with_capacity(via_text.len());
    for text in via_text {
        let text = text.as_ref();
        let addr: IpAddr = text
            .parse()
            .map_err(|_| err(Problem::NexthopSyntax(text.to_string())))?;
        if addr.is_ipv4() != prefix.addr().is_ipv4() {
            return Err(err(Problem::NexthopFamily(text.to_string())));
        }
        let unicast = match addr {
            IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
            IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
        };
        if !unicast {
            return Err(err(Problem::NexthopNotUnicast(text.to_string())));
        }
        if via.contains(&addr) {
            return Err(err(Problem::NexthopTwice(text.to_string())));
        }
        via.push(addr);
    }
    check_interface_name("dev", dev).map_err(err)?;
    Ok(ValidRoute {
        prefix,
        via,
        dev: dev.to_string(),
    })
}

/// Checks one customer on its own: name, prefixes, VLAN and policer. Uniqueness,
/// overlaps with other customers and interfaces are checked by [`validate`].
pub fn check_customer(customer: &Customer) -> Result<ValidCustomer, ConfigError> {
    let err = |problem| ConfigError::Customer {
        name: customer.name.clone(),
        problem,
    };
    let name = &customer.name;
    if name.is_empty() {
        return Err(err(Problem::EmptyName));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(err(Problem::BadCustomerName(name.clone())));
    }
    if customer.prefixes.is_empty() {
        return Err(err(Problem::NoPrefixes));
    }
    let mut prefixes = Vec::with_capacity(customer.prefixes.len());
    for text in &customer.prefixes {
        let net = parse_prefix(text).map_err(|error| {
            err(Problem::FieldPrefix {
                field: "prefix",
                value: text.clone(),
                error,
            })
        })?;
        if prefixes.contains(&net) {
            return Err(err(Problem::PrefixTwice(text.clone())));
        }
        prefixes.push(net);
    }
    for (i, iface) in customer.interfaces.iter().enumerate() {
        check_interface_name("interface", iface).map_err(err)?;
        if customer.interfaces[..i].contains(iface) {
            return Err(err(Problem::InterfaceTwice(iface.clone())));
        }
    }
    if let Some(vlan) = customer.vlan {
        if !(1..=4094).contains(&vlan) {
            return Err(err(Problem::Vlan(vlan)));
        }
    }
    let burst_bytes = match (customer.rate_bps, customer.burst_bytes) {
        (Some(0), _) => return Err(err(Problem::ZeroRate)),
        (None, Some(_)) => return Err(err(Problem::BurstWithoutRate)),
        (Some(_), Some(0)) => return Err(err(Problem::ZeroBurst)),
        (Some(_), Some(burst)) => Some(burst),
        (Some(rate), None) => Some(default_burst_bytes(rate)),
        (None, None) => None,
    };
    if let Some(rate) = customer.rate_bps {
        let max = crate::dataplane::police::MAX_RATE_BPS;
        if rate > max {
            return Err(err(Problem::RateExceeds { rate, max }));
        }
    }
    if let Some(burst) = burst_bytes {
        let max = crate::dataplane::police::MAX_BURST_BYTES;
        if burst > max {
            return Err(err(Problem::BurstExceeds { burst, max }));
        }
    }
    Ok(ValidCustomer {
        name: name.clone(),
        prefixes,
        interfaces: customer.interfaces.clone(),
        vlan: customer.vlan,
        anti_spoofing: customer.anti_spoofing,
        rate_bps: customer.rate_bps,
        burst_bytes,
    })
}

/// Checks one ACL rule on its own: prefixes, protocol, ports. Whether `in_iface`
/// is configured and the priority unique are checked by [`validate`].
pub fn check_acl(acl: &Acl) -> Result<ValidAcl, ConfigError> {
    let err = |problem| ConfigError::Acl {
        priority: acl.priority,
        problem,
    };
    let prefix = |field: &'static str, value: &Option<String>| {
        value
            .as_ref()
            .map(|text| {
                parse_prefix(text).map_err(|error| {
                    err(Problem::FieldPrefix {
                        field,
                        value: text.clone(),
                        error,
                    })
                })
            })
            .transpose()
    };
    if acl.priority == u32::MAX {
        return Err(err(Problem::AclPriority));
    }
    let src = prefix("src", &acl.src)?;
    let dst = prefix("dst", &acl.dst)?;
    if let (Some(s), Some(d)) = (src, dst) {
        if s.addr().is_ipv4() != d.addr().is_ipv4() {
            let (s, d) = (acl.src.clone(), acl.dst.clone());
            return Err(err(Problem::AclFamily(
                s.unwrap_or_default(),
                d.unwrap_or_default(),
            )));
        }
    }
    let proto = match &acl.proto {
        Some(text) => Some(parse_proto(text).ok_or_else(|| err(Problem::Proto(text.clone())))?),
        None => None,
    };
    let port = |field: &'static str, value: &Option<String>| {
        let Some(text) = value else { return Ok(None) };
        let range = parse_port_range(text).map_err(|error| {
            err(Problem::Port {
                field,
                value: text.clone(),
                error,
            })
        })?;
        if !matches!(proto, Some(6) | Some(17)) {
            return Err(err(Problem::PortNeedsProto(field)));
        }
        Ok(Some(range))
    };
    let src_port = port("src_port", &acl.src_port)?;
    let dst_port = port("dst_port", &acl.dst_port)?;
    if let Some(iface) = &acl.in_iface {
        check_interface_name("in_iface", iface).map_err(err)?;
    }
    Ok(ValidAcl {
        priority: acl.priority,
        action: acl.action,
        src,
        dst,
        proto,
        src_port,
        dst_port,
        in_iface: acl.in_iface.clone(),
    })
}

fn check_limit(what: &'static str, count: usize, max: u32) -> Result<(), ConfigError> {
    if count > max as usize {
        return Err(ConfigError::Limit {
            what,
            count,
            max: max as usize,
        });
    }
    Ok(())
}

/// Checks a whole config: every object on its own, then uniqueness, references
/// between objects, customer prefix overlaps and map capacities. The first error
/// in config order is returned.
pub fn validate(cfg: &Config) -> Result<Validated, ConfigError> {
    validate_with(cfg, RouteList::from_routes(&cfg.routes))
}

/// [`validate`] with the routes read apart ([`parse_config_routes`]):
/// `cfg.routes` is not looked at.
pub fn validate_with(cfg: &Config, routes: RouteList) -> Result<Validated, ConfigError> {
    let interfaces = validate_interfaces(&cfg.interfaces)?;
    let roles: HashMap<&str, InterfaceRole> = interfaces
        .iter()
        .map(|i| (i.name.as_str(), i.role))
        .collect();

    let (routes, route_devs) = routes.finish(&roles)?;
    let customers = validate_customers(&cfg.customers, &roles)?;

    check_icmp(&cfg.icmp)?;
    if let Some(k) = &cfg.kernel_routes {
        // 0 is not a table; 255 (local) holds the host's own addresses.
        if k.table == 0 || k.table == 255 {
            return Err(ConfigError::KernelRoutesTable(k.table));
        }
    }
    check_limit("acl rules", cfg.acls.len(), pop_common::MAX_ACL_RULES)?;
    let mut acls = Vec::with_capacity(cfg.acls.len());
    let mut priorities = HashSet::with_capacity(cfg.acls.len());
    for acl in &cfg.acls {
        let valid = check_acl(acl)?;
        let err = |problem| ConfigError::Acl {
            priority: acl.priority,
            problem,
        };
        if !priorities.insert(acl.priority) {
            return Err(err(Problem::Duplicate("priority")));
        }
        if let Some(iface) = &valid.in_iface {
            if !roles.contains_key(iface.as_str()) {
                return Err(err(Problem::UnknownInterface {
                    field: "in_iface",
                    value: iface.clone(),
                }));
            }
        }
        acls.push(valid);
    }
    acls.sort_by_key(|a| a.priority);
    let sflow = cfg.sflow.as_ref().map(check_sflow).transpose()?;

    Ok(Validated {
        dataplane: cfg.dataplane.clone(),
        interfaces,
        routes,
        route_devs,
        customers,
        acls,
        sflow,
    })
}

/// Checks `[icmp]`: both values at least 1 (a bucket that never fills would
/// silently stop every error) and within what the data plane's arithmetic holds.
pub fn check_icmp(icmp: &crate::config::model::IcmpConfig) -> Result<(), ConfigError> {
    for (field, value, max) in [
        ("rate_per_s", icmp.rate_per_s, MAX_ICMP_RATE_PER_S),
        ("burst", icmp.burst, MAX_ICMP_BURST),
    ] {
        if !(1..=max).contains(&value) {
            return Err(ConfigError::Icmp {
                field,
                value,
                min: 1,
                max,
            });
        }
    }
    Ok(())
}

fn validate_interfaces(list: &[Interface]) -> Result<Vec<ValidInterface>, ConfigError> {
    check_limit("interfaces", list.len(), pop_common::MAX_IFACES)?;
    let mut seen = HashSet::with_capacity(list.len());
    let mut out = Vec::with_capacity(list.len());
    for iface in list {
        let err = |problem| ConfigError::Interface {
            name: iface.name.clone(),
            problem,
        };
        check_interface_name("name", &iface.name).map_err(err)?;
        if !seen.insert(iface.name.as_str()) {
            return Err(err(Problem::Duplicate("name")));
        }
        out.push(ValidInterface {
            name: iface.name.clone(),
            role: iface.role,
        });
    }
    Ok(out)
}

fn validate_customers(
    list: &[Customer],
    roles: &HashMap<&str, InterfaceRole>,
) -> Result<Vec<ValidCustomer>, ConfigError> {
    check_limit("customers", list.len(), pop_common::MAX_CUSTOMERS - 1)?;
    let mut names: HashSet<&str> = HashSet::with_capacity(list.len());
    let mut out: Vec<ValidCustomer> = Vec::with_capacity(list.len());
    // On a port (interface and VLAN) where a customer with anti-spoofing
    // attaches, every prefix of every customer attached there has an entry in
    // the anti-spoofing table of its family (customers without anti-spoofing
    // too: they may source traffic there).
    let spoof_ports: HashSet<(&str, Option<u16>)> = list
        .iter()
        .filter(|c| c.anti_spoofing)
        .flat_map(|c| c.interfaces.iter().map(move |i| (i.as_str(), c.vlan)))
        .collect();
    let max_entries = pop_common::MAX_SPOOF_PREFIXES as usize;
    let mut entries = [0usize; 2]; // IPv4, IPv6
    for customer in list {
        let valid = check_customer(customer)?;
        let err = |problem| ConfigError::Customer {
            name: customer.name.clone(),
            problem,
        };
        if !names.insert(customer.name.as_str()) {
            return Err(err(Problem::Duplicate("name")));
        }
        for iface in &customer.interfaces {
            match roles.get(iface.as_str()) {
                None => {
                    return Err(err(Problem::UnknownInterface {
                        field: "interface",
                        value: iface.clone(),
                    }))
                }
                Some(InterfaceRole::Upstream) => {
                    return Err(err(Problem::NotCustomerInterface(iface.clone())))
                }
                Some(InterfaceRole::Customer) => {}
            }
            if !spoof_ports.contains(&(iface.as_str(), customer.vlan)) {
                continue;
            }
            for (family, n) in ["IPv4", "IPv6"].into_iter().zip(&mut entries) {
                *n += valid
                    .prefixes
                    .iter()
                    .filter(|p| p.addr().is_ipv4() == (family == "IPv4"))
                    .count();
                if *n > max_entries {
                    return Err(err(Problem::SpoofEntriesFull {
                        iface: iface.clone(),
                        family,
                        count: *n,
                        max: max_entries,
                    }));
                }
            }
        }
        out.push(valid);
    }
    check_prefix_overlaps(list, &out)?;
    Ok(out)
}

/// Finds a prefix of one customer inside a prefix of another in O(n log n): sorted
/// by (address, length), every prefix comes right after the chain of prefixes that
/// contain it, kept on a stack. Any two prefixes on the stack overlap, so they all
/// belong to one customer and comparing with the top is enough.
fn check_prefix_overlaps(list: &[Customer], valid: &[ValidCustomer]) -> Result<(), ConfigError> {
    // (prefix, customer index, prefix index)
    let mut all: Vec<(IpNet, usize, usize)> = valid
        .iter()
        .enumerate()
        .flat_map(|(c, cust)| {
            cust.prefixes
                .iter()
                .enumerate()
                .map(move |(p, net)| (*net, c, p))
        })
        .collect();
    let v4 = all.iter().filter(|(n, _, _)| n.addr().is_ipv4()).count();
    check_limit(
        "IPv4 customer prefixes",
        v4,
        pop_common::MAX_CUSTOMER_PREFIXES,
    )?;
    check_limit(
        "IPv6 customer prefixes",
        all.len() - v4,
        pop_common::MAX_CUSTOMER_PREFIXES,
    )?;
    all.sort_unstable_by_key(|&(net, c, p)| (net.network(), net.prefix_len(), c, p));
    let mut stack: Vec<(IpNet, usize, usize)> = Vec::new();
    for &(net, c, p) in &all {
        while stack.last().is_some_and(|(top, _, _)| !top.contains(&net)) {
            stack.pop();
        }
        if let Some(&(_, oc, op)) = stack.last() {
            if oc != c {
                // Report on the customer that comes later in the config.
                let ((c, p), (oc, op)) = if c > oc {
                    ((c, p), (oc, op))
                } else {
                    ((oc, op), (c, p))
                };
                return Err(ConfigError::Customer {
                    name: list[c].name.clone(),
                    problem: Problem::PrefixOverlap {
                        prefix: list[c].prefixes[p].clone(),
                        other_prefix: list[oc].prefixes[op].clone(),
                        other: list[oc].name.clone(),
                    },
                });
            }
        }
        stack.push((net, c, p));
    }
    Ok(())
}
