//! Human-readable differences between two desired states, as printed by
//! `popctl apply`:
//!
//! ```text
//! ~ dataplane no_route = "drop"
//! + interface eth3 (customer)
//! - customer acme
//! ~ customer beta
//! + route 10.0.0.0/8 via 192.0.2.1 dev eth0
//! + acl 100 drop dst 198.51.100.10/32 tcp dport 22
//! ```
//!
//! Sections come in dependency order (dataplane, interfaces, customers, routes,
//! ACLs); within a section objects are sorted by key (name, prefix in address order,
//! priority). `+` is added, `-` removed, `~` changed (shown with its new value).
use std::collections::BTreeMap;
use std::net::IpAddr;

use super::model::{Acl, AclAction, Config, Customer, Interface, InterfaceRole, Route};
use super::validate::{parse_prefix, parse_proto, proto_name};

/// The change lines that turn `old` into `new`; empty when they are equal.
/// Runs in O(n log n), and does not require either config to be valid.
pub fn diff(old: &Config, new: &Config) -> Vec<String> {
    diff_with(old, new, |lines| {
        section(
            lines,
            &old.routes,
            &new.routes,
            |r| prefix_key(&r.prefix),
            route_text,
        )
    })
}

/// [`diff`] with the route lines appended, in their place, by `routes`
/// (popd keeps its routes in a table of their own).
pub fn diff_with(old: &Config, new: &Config, routes: impl FnOnce(&mut Vec<String>)) -> Vec<String> {
    let mut lines = Vec::new();
    let (od, nd) = (&old.dataplane, &new.dataplane);
    if od.xdp_mode != nd.xdp_mode {
        lines.push(format!(
            "~ dataplane xdp_mode = {}",
            enum_text(&nd.xdp_mode)
        ));
    }
    if od.no_route != nd.no_route {
        lines.push(format!(
            "~ dataplane no_route = {}",
            enum_text(&nd.no_route)
        ));
    }
    for (field, o, n) in [
        ("rate_per_s", old.icmp.rate_per_s, new.icmp.rate_per_s),
        ("burst", old.icmp.burst, new.icmp.burst),
    ] {
        if o != n {
            lines.push(format!("~ icmp {field} = {n}"));
        }
    }
    section(
        &mut lines,
        &old.interfaces,
        &new.interfaces,
        |i| i.name.clone(),
        interface_text,
    );
    section(
        &mut lines,
        &old.customers,
        &new.customers,
        |c| c.name.clone(),
        customer_text,
    );
    routes(&mut lines);
    section(&mut lines, &old.acls, &new.acls, |a| a.priority, acl_text);
    match (&old.kernel_routes, &new.kernel_routes) {
        (None, Some(k)) => lines.push(format!("+ kernel_routes table {}", k.table)),
        (Some(k), None) => lines.push(format!("- kernel_routes table {}", k.table)),
        (Some(a), Some(b)) if a != b => lines.push(format!("~ kernel_routes table {}", b.table)),
        _ => {}
    }
    match (&old.sflow, &new.sflow) {
        (None, Some(s)) => lines.push(format!("+ {}", sflow_text(s))),
        (Some(s), None) => lines.push(format!("- {}", sflow_text(s))),
        (Some(a), Some(b)) if a != b => lines.push(format!("~ {}", sflow_text(b))),
        _ => {}
    }
    lines
}

fn sflow_text(s: &super::model::SflowConfig) -> String {
    let mut text = format!(
        "sflow to {} sampling_rate {} polling_interval {}",
        s.collectors.join(","),
        s.sampling_rate,
        s.polling_interval
    );
    if let Some(a) = &s.agent_address {
        text.push_str(&format!(" agent_address {a}"));
    }
    text
}

/// Appends `-`, `+` and `~` lines for one kind of object, merged in key order.
fn section<T: PartialEq, K: Ord>(
    lines: &mut Vec<String>,
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> K,
    text: impl Fn(&T) -> String,
) {
    let mut by_key: BTreeMap<K, (Option<&T>, Option<&T>)> = BTreeMap::new();
    for o in old {
        by_key.entry(key(o)).or_default().0 = Some(o);
    }
    for n in new {
        by_key.entry(key(n)).or_default().1 = Some(n);
    }
    for (o, n) in by_key.into_values() {
        match (o, n) {
            (Some(o), None) => lines.push(format!("- {}", text(o))),
            (None, Some(n)) => lines.push(format!("+ {}", text(n))),
            (Some(o), Some(n)) if o != n => lines.push(format!("~ {}", text(n))),
            _ => {}
        }
    }
}

/// Sorts valid prefixes by family, address and length; invalid ones last, by text.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum PrefixKey {
    Valid(IpAddr, u8),
    Invalid(String),
}

fn prefix_key(text: &str) -> PrefixKey {
    match parse_prefix(text) {
        Ok(net) => PrefixKey::Valid(net.network(), net.prefix_len()),
        Err(_) => PrefixKey::Invalid(text.to_string()),
    }
}

/// `"drop"`, `"native"`: the value as it is written in the config file.
fn enum_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn interface_text(i: &Interface) -> String {
    let role = match i.role {
        InterfaceRole::Upstream => "upstream",
        InterfaceRole::Customer => "customer",
    };
    format!("interface {} ({role})", i.name)
}

fn customer_text(c: &Customer) -> String {
    format!("customer {}", c.name)
}

/// `route 10.0.0.0/8 via 192.0.2.1,192.0.2.2 dev eth0`, as `popctl route add` takes it.
pub fn route_text(r: &Route) -> String {
    format!("route {} via {} dev {}", r.prefix, r.via.join(","), r.dev)
}

/// `acl 100 drop src 0.0.0.0/0 dst 198.51.100.10/32 tcp dport 22 iif eth0`.
pub fn acl_text(a: &Acl) -> String {
    let action = match a.action {
        AclAction::Allow => "allow",
        AclAction::Drop => "drop",
    };
    let mut text = format!("acl {} {action}", a.priority);
    let mut field = |name: &str, value: &Option<String>| {
        if let Some(v) = value {
            if !name.is_empty() {
                text.push(' ');
                text.push_str(name);
            }
            text.push(' ');
            text.push_str(v);
        }
    };
    field("src", &a.src);
    field("dst", &a.dst);
    let proto = a
        .proto
        .as_ref()
        .map(|p| match parse_proto(p).and_then(proto_name) {
            Some(name) => name.to_string(),
            None => format!("proto {p}"),
        });
    field("", &proto);
    field("sport", &a.src_port);
    field("dport", &a.dst_port);
    field("iif", &a.in_iface);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{DataplaneConfig, NoRouteAction, XdpMode};

    fn route(prefix: &str, via: &[&str], dev: &str) -> Route {
        Route {
            prefix: prefix.into(),
            via: via.iter().map(|s| s.to_string()).collect(),
            dev: dev.into(),
        }
    }

    fn customer(name: &str, prefix: &str) -> Customer {
        Customer {
            name: name.into(),
            prefixes: vec![prefix.into()],
            interfaces: vec![],
            vlan: None,
            anti_spoofing: false,
            rate_bps: None,
            burst_bytes: None,
        }
    }

    fn ssh_drop() -> Acl {
        Acl {
            priority: 100,
            action: AclAction::Drop,
            src: None,
            dst: Some("198.51.100.10/32".into()),
            proto: Some("tcp".into()),
            src_port: None,
            dst_port: Some("22".into()),
            in_iface: None,
        }
    }

    #[test]
    fn equal_configs_have_no_changes() {
        let cfg = Config {
            routes: vec![route("10.0.0.0/8", &["192.0.2.1"], "eth0")],
            acls: vec![ssh_drop()],
            ..Config::default()
        };
        assert!(diff(&cfg, &cfg).is_empty());
        // Order in the file is not a change.
        let mut reordered = cfg.clone();
        reordered
            .routes
            .push(route("10.1.0.0/16", &["192.0.2.1"], "eth0"));
        let mut other = reordered.clone();
        other.routes.reverse();
        assert!(diff(&reordered, &other).is_empty());
    }

    #[test]
    fn every_kind_of_change_in_section_and_key_order() {
        let old = Config {
            dataplane: DataplaneConfig::default(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                role: InterfaceRole::Upstream,
            }],
            customers: vec![
                customer("acme", "198.51.100.0/24"),
                customer("beta", "10.0.0.0/8"),
            ],
            routes: vec![
                route("2001:db8::/32", &["2001:db8::1"], "eth0"),
                route("192.0.2.0/24", &["192.0.2.1"], "eth0"),
            ],
            acls: vec![],
            icmp: Default::default(),
            kernel_routes: None,
            sflow: None,
        };
        let mut new = old.clone();
        new.icmp.burst = 10;
        new.dataplane = DataplaneConfig {
            xdp_mode: XdpMode::Native,
            no_route: NoRouteAction::Drop,
        };
        new.interfaces.push(Interface {
            name: "eth3".into(),
            role: InterfaceRole::Customer,
        });
        new.customers.remove(0);
        new.customers[0].rate_bps = Some(1_000_000);
        new.routes[1].via.push("192.0.2.2".into());
        new.routes.push(route("10.0.0.0/8", &["192.0.2.1"], "eth0"));
        new.acls.push(ssh_drop());
        new.kernel_routes = Some(crate::config::model::KernelRoutes { table: 100 });
        assert_eq!(
            diff(&old, &new),
            [
                "~ dataplane xdp_mode = \"native\"",
                "~ dataplane no_route = \"drop\"",
                "~ icmp burst = 10",
                "+ interface eth3 (customer)",
                "- customer acme",
                "~ customer beta",
                "+ route 10.0.0.0/8 via 192.0.2.1 dev eth0",
                "~ route 192.0.2.0/24 via 192.0.2.1,192.0.2.2 dev eth0",
                "+ acl 100 drop dst 198.51.100.10/32 tcp dport 22",
                "+ kernel_routes table 100",
            ]
        );
        let back = diff(&new, &old);
        assert!(back.contains(&"- kernel_routes table 100".to_string()));
        assert!(back.contains(&"- route 10.0.0.0/8 via 192.0.2.1 dev eth0".to_string()));
        assert!(back.contains(&"- acl 100 drop dst 198.51.100.10/32 tcp dport 22".to_string()));
        assert!(back.contains(&"+ customer acme".to_string()));
        assert!(back.contains(&"- interface eth3 (customer)".to_string()));
    }

    #[test]
    fn acl_text_shows_every_field() {
        let acl = Acl {
            priority: 7,
            action: AclAction::Allow,
            src: Some("10.0.0.0/8".into()),
            dst: None,
            proto: Some("47".into()),
            src_port: Some("1000-2000".into()),
            dst_port: None,
            in_iface: Some("eth0".into()),
        };
        assert_eq!(
            acl_text(&acl),
            "acl 7 allow src 10.0.0.0/8 proto 47 sport 1000-2000 iif eth0"
        );
    }

    #[test]
    fn routes_sort_by_address_not_text() {
        let old = Config::default();
        let new = Config {
            routes: vec![
                route("10.0.0.0/8", &["192.0.2.1"], "eth0"),
                route("9.0.0.0/8", &["192.0.2.1"], "eth0"),
                route("10.0.0.0/16", &["192.0.2.1"], "eth0"),
            ],
            ..Config::default()
        };
        let prefixes: Vec<String> = diff(&old, &new)
            .iter()
            .map(|l| l.split(' ').nth(2).unwrap().to_string())
            .collect();
        assert_eq!(prefixes, ["9.0.0.0/8", "10.0.0.0/8", "10.0.0.0/16"]);
    }
}
