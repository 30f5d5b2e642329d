//! Prometheus exposition (the `pop_*` metrics in docs/reference.md), built with prometheus-client.
//!
//! A scrape takes no lock the controller holds while it writes a change. It
//! reads two things:
//! - the counters, from the per-CPU maps at scrape time (summed over CPUs),
//!   through a [`CounterReader`] with map handles of its own, so a scrape
//!   always shows the data plane's current counters;
//! - a [`Snapshot`] of the rest (names of customers and interfaces, ACL rule
//!   slots, route counts, generation, ...), which the controller publishes
//!   after every change it makes ([`Published`]). Taking it costs a short
//!   lock around an `Arc` clone.
use std::sync::{Arc, Mutex};

use pop_common::{Action, DropReason, IcmpType, PassReason};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::dataplane::counter_reader::CounterReader;

mod acl_rules;
pub use acl_rules::AclRuleTable;

/// Everything but the counters that a scrape needs, as of the last change.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// The counter maps; `None` once the data plane is removed.
    pub counters: Option<Arc<CounterReader>>,
    /// Names and slots; rebuilt only when they may have changed.
    pub names: Arc<Names>,
    /// Generation of the live desired state.
    pub generation: u64,
    /// Routes: (IPv4, IPv6) configured, (IPv4, IPv6) learned from the kernel.
    pub routes: ((usize, usize), (usize, usize)),
    /// Host addresses (IPv4, IPv6) left out of the local-address maps.
    pub local_not_loaded: (usize, usize),
    /// Whether a `[kernel_routes]` table is followed.
    pub follows_kernel_table: bool,
    /// The learned routes' counters.
    pub learned: LearnedFacts,
    /// The sFlow exporter's sample counts, when it runs.
    pub sflow: Option<crate::sflow::SampleCounts>,
}

/// The names and slots of the desired state that label the counters.
#[derive(Clone, Debug, Default)]
pub struct Names {
    /// (customer, id), in config order.
    pub customers: Vec<(String, u32)>,
    /// Customers in the desired state.
    pub customer_count: usize,
    /// (interface, counter slot), in config order.
    pub interfaces: Vec<(String, u32)>,
    /// (interface, attach mode label) of every attached interface, by name.
    pub attached: Vec<(String, &'static str)>,
    /// The desired ACL rules by priority, with their hit slot in the live copy.
    pub acl_rules: AclRuleTable,
}

/// One desired ACL rule, for `pop_acl_hits_total` and `pop_acl_rule_hits_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AclRuleSlot {
    /// Its priority.
    pub priority: u32,
    /// "allow" or "drop".
    pub action: &'static str,
    /// Its slot in `acl_hits`; `None` when the data plane does not hold it
    /// (its `in_iface` does not exist): it matches nothing.
    pub slot: Option<u32>,
}

/// Counters of the routes learned from the kernel.
#[derive(Clone, Copy, Debug, Default)]
pub struct LearnedFacts {
    /// Skipped: via a device pop does not forward out of.
    pub skipped_foreign_device: u64,
    /// Skipped: device routes without a gateway.
    pub skipped_no_gateway: u64,
    /// Skipped: a route type pop does not forward.
    pub skipped_type: u64,
    /// Skipped: no next-hop id left.
    pub skipped_nexthops_full: u64,
    /// Times a learned route found its route map full.
    pub overflow: u64,
    /// Learned routes (IPv4, IPv6) not in the maps for lack of room.
    pub not_installed: (usize, usize),
}

/// The kernel-routes follower's state, read at scrape time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Follower {
    /// The learned routes equal the followed table.
    pub synced: bool,
    /// Dumps after the first.
    pub resyncs: u64,
}

/// Where the controller publishes its [`Snapshot`] and scrapes take it.
#[derive(Clone, Default)]
pub struct Published(Arc<Mutex<Arc<Snapshot>>>);

impl Published {
    /// Replaces the snapshot.
    pub fn publish(&self, snapshot: Snapshot) {
        let new = Arc::new(snapshot);
        let old = std::mem::replace(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()), new);
        // Freed outside the lock.
        drop(old);
    }

    /// The last snapshot published.
    pub fn current(&self) -> Arc<Snapshot> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

type Labels = Vec<(&'static str, String)>;

fn counter_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

/// The whole exposition text.
pub fn render(snap: &Snapshot, follower: Follower, acl_rule_metrics: bool) -> String {
    let names = &snap.names;
    let counters = snap.counters.as_deref();
    let mut reg = Registry::default();
    let cust_packets = counter_family(
        &mut reg,
        "pop_customer_packets",
        "Packets forwarded per customer; direction in = towards it, out = from it",
    );
    let cust_bytes = counter_family(
        &mut reg,
        "pop_customer_bytes",
        "Bytes (whole frames) forwarded per customer",
    );
    let cust_drops = counter_family(
        &mut reg,
        "pop_customer_drops",
        "Packets dropped per customer and reason",
    );
    for (name, id) in names.customers.iter().filter(|_| counters.is_some()) {
        let record = counters.map(|c| c.customer_record(*id)).unwrap_or_default();
        for (dir, c) in [
            ("in", record.dir[pop_common::Direction::In as usize]),
            ("out", record.dir[pop_common::Direction::Out as usize]),
        ] {
            let l = vec![("customer", name.clone()), ("direction", dir.to_string())];
            cust_packets.get_or_create(&l).inc_by(c.packets);
            cust_bytes.get_or_create(&l).inc_by(c.bytes);
        }
        for r in DropReason::ALL {
            let n = record.drop[*r as usize].packets;
            if n == 0 {
                continue;
            }
            cust_drops
                .get_or_create(&vec![
                    ("customer", name.clone()),
                    ("reason", r.label().to_string()),
                ])
                .inc_by(n);
        }
    }
    let packets = counter_family(
        &mut reg,
        "pop_packets",
        "Packets seen by XDP per interface and final action",
    );
    let bytes = counter_family(
        &mut reg,
        "pop_bytes",
        "Bytes seen by XDP per interface and final action",
    );
    if let Some(c) = counters {
        for (iface, slot) in &names.interfaces {
            let record = c.iface_record(*slot);
            for a in Action::ALL {
                let n = record.action[*a as usize];
                let l = vec![
                    ("interface", iface.clone()),
                    ("action", a.label().to_string()),
                ];
                packets.get_or_create(&l).inc_by(n.packets);
                bytes.get_or_create(&l).inc_by(n.bytes);
            }
        }
    }
    let totals = counters.map(|c| c.reason_totals());
    let drops = counter_family(&mut reg, "pop_drops", "Packets dropped by XDP per reason");
    if let Some(t) = &totals {
        for r in DropReason::ALL {
            drops
                .get_or_create(&vec![("reason", r.label().to_string())])
                .inc_by(t.drop[*r as usize].packets);
        }
    }
    let passes = counter_family(
        &mut reg,
        "pop_kernel_passes",
        "Packets handed to the kernel per reason",
    );
    if let Some(t) = &totals {
        for r in PassReason::ALL {
            passes
                .get_or_create(&vec![("reason", r.label().to_string())])
                .inc_by(t.pass[*r as usize].packets);
        }
    }
    let icmp = counter_family(
        &mut reg,
        "pop_icmp_sent",
        "ICMP errors the data plane sent itself, per type",
    );
    if let Some(c) = counters {
        for kind in IcmpType::ALL {
            icmp.get_or_create(&vec![("type", kind.label().to_string())])
                .inc_by(c.icmp_counter(*kind).packets);
        }
    }
    let attached = gauge_family(
        &mut reg,
        "pop_xdp_attached",
        "1 per interface with XDP attached, by mode",
    );
    for (iface, mode) in &names.attached {
        attached
            .get_or_create(&vec![
                ("interface", iface.clone()),
                ("mode", mode.to_string()),
            ])
            .set(1);
    }
    let routes = gauge_family(
        &mut reg,
        "pop_routes",
        "Routes per address family and source: config (the desired state) or kernel \
         (learned from the [kernel_routes] table, shadowed or not)",
    );
    let ((c4, c6), (k4, k6)) = snap.routes;
    for (family, source, n) in [
        ("ipv4", "config", c4),
        ("ipv6", "config", c6),
        ("ipv4", "kernel", k4),
        ("ipv6", "kernel", k6),
    ] {
        routes
            .get_or_create(&vec![
                ("family", family.to_string()),
                ("source", source.to_string()),
            ])
            .set(n as i64);
    }
    kernel_route_metrics(&mut reg, snap, follower);
    let not_loaded = gauge_family(
        &mut reg,
        "pop_local_addresses_not_loaded",
        "Host addresses beyond the capacity of the local-address maps: packets to them are routed, not handed to the kernel",
    );
    let (v4, v6) = snap.local_not_loaded;
    for (family, n) in [("ipv4", v4), ("ipv6", v6)] {
        not_loaded
            .get_or_create(&vec![("family", family.to_string())])
            .set(n as i64);
    }
    let acl_rules = Gauge::<i64>::default();
    acl_rules.set(names.acl_rules.len() as i64);
    reg.register("pop_acl_rules", "ACL rules in the desired state", acl_rules);
    acl_hits(&mut reg, names, counters, acl_rule_metrics);
    let customers = Gauge::<i64>::default();
    customers.set(names.customer_count as i64);
    reg.register("pop_customers", "Customers in the desired state", customers);
    let generation = Gauge::<i64>::default();
    generation.set(snap.generation as i64);
    reg.register(
        "pop_config_generation",
        "Generation of the live desired state",
        generation,
    );
    let sflow = counter_family(
        &mut reg,
        "pop_sflow_samples",
        "sFlow samples sent to the collectors, by kind (flow, counter)",
    );
    let (flows, counter_samples) = snap.sflow.as_ref().map_or((0, 0), |x| x.get());
    for (kind, n) in [("flow", flows), ("counter", counter_samples)] {
        sflow
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc_by(n);
    }
    // A gauge, not an OpenMetrics info: the classic text format (and promtool)
    // has no info type.
    let build = gauge_family(&mut reg, "pop_build_info", "pop version (always 1)");
    build
        .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
        .set(1);
    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String");
    to_prometheus_text(&out)
}

/// `pop_acl_hits_total` per action, and per rule when popd was asked to.
fn acl_hits(
    reg: &mut Registry,
    names: &Names,
    counters: Option<&CounterReader>,
    per_rule_metrics: bool,
) {
    let hits: Vec<u64> = names
        .acl_rules
        .iter()
        .map(|r| match (r.slot, counters) {
            (Some(slot), Some(c)) => c.acl_hits(slot).packets,
            _ => 0,
        })
        .collect();
    let totals = counter_family(
        reg,
        "pop_acl_hits",
        "Packets decided by ACL rules (the first matching rule), by the rule's action",
    );
    for action in ["allow", "drop"] {
        let n = names
            .acl_rules
            .iter()
            .zip(&hits)
            .filter(|(r, _)| r.action == action)
            .map(|(_, h)| h)
            .sum();
        totals
            .get_or_create(&vec![("action", action.to_string())])
            .inc_by(n);
    }
    if per_rule_metrics {
        let per_rule = counter_family(
            reg,
            "pop_acl_rule_hits",
            "Packets decided by each ACL rule, by priority (popd --metrics-acl-rules)",
        );
        for (r, h) in names.acl_rules.iter().zip(&hits) {
            per_rule
                .get_or_create(&vec![
                    ("priority", r.priority.to_string()),
                    ("action", r.action.to_string()),
                ])
                .inc_by(*h);
        }
    }
}

/// prometheus-client writes OpenMetrics; popd serves the classic Prometheus
/// text format 0.0.4 that every scraper and `promtool check metrics` accept:
/// counters are described under their `_total` sample name and there is no
/// `# EOF` marker.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The `[kernel_routes]` follower: sync state, skipped and overflowed routes.
fn kernel_route_metrics(reg: &mut Registry, snap: &Snapshot, follower: Follower) {
    let synced = Gauge::<i64>::default();
    synced.set(i64::from(snap.follows_kernel_table && follower.synced));
    reg.register(
        "pop_kernel_routes_synced",
        "1 when the learned routes equal the [kernel_routes] table, 0 while a dump is due \
         or under way (or no table is followed)",
        synced,
    );
    let resyncs = Counter::<u64>::default();
    resyncs.inc_by(follower.resyncs);
    reg.register(
        "pop_kernel_routes_resyncs",
        "Dumps of the [kernel_routes] table after the first (lost notifications, table or port changes)",
        resyncs,
    );
    let k = snap.learned;
    let skipped = counter_family(
        reg,
        "pop_kernel_routes_skipped",
        "Kernel routes not learned, per reason",
    );
    for (reason, n) in [
        ("foreign_device", k.skipped_foreign_device),
        ("no_gateway", k.skipped_no_gateway),
        ("type", k.skipped_type),
        ("nexthops_full", k.skipped_nexthops_full),
    ] {
        skipped
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc_by(n);
    }
    let overflow = Counter::<u64>::default();
    overflow.inc_by(k.overflow);
    reg.register(
        "pop_kernel_routes_overflow",
        "Times a learned route found its route map full (it is installed when room frees)",
        overflow,
    );
    let (o4, o6) = k.not_installed;
    let pending = gauge_family(
        reg,
        "pop_kernel_routes_not_installed",
        "Learned routes not in the route maps for lack of room",
    );
    for (family, n) in [("ipv4", o4), ("ipv6", o6)] {
        pending
            .get_or_create(&vec![("family", family.to_string())])
            .set(n as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The facts a scrape shows come from the published snapshot alone.
    #[test]
    fn the_published_snapshot_is_what_a_scrape_shows() {
        let published = Published::default();
        let names = Names {
            customers: vec![("acme".into(), 1)],
            customer_count: 1,
            interfaces: vec![("eth0".into(), 0)],
            attached: vec![("eth0".into(), "native")],
            acl_rules: vec![
                AclRuleSlot {
                    priority: 10,
                    action: "drop",
                    slot: Some(0),
                },
                AclRuleSlot {
                    priority: 20,
                    action: "allow",
                    slot: None,
                },
            ]
            .into(),
        };
        published.publish(Snapshot {
            names: Arc::new(names),
            generation: 7,
            routes: ((3, 2), (1000, 0)),
            local_not_loaded: (0, 1),
            follows_kernel_table: true,
            ..Default::default()
        });
        let text = render(
            &published.current(),
            Follower {
                synced: true,
                resyncs: 4,
            },
            true,
        );
        for line in [
            "pop_config_generation 7",
            "pop_customers 1",
            "pop_acl_rules 2",
            "pop_xdp_attached{interface=\"eth0\",mode=\"native\"} 1",
            "pop_routes{family=\"ipv4\",source=\"config\"} 3",
            "pop_routes{family=\"ipv6\",source=\"config\"} 2",
            "pop_routes{family=\"ipv4\",source=\"kernel\"} 1000",
            "pop_local_addresses_not_loaded{family=\"ipv6\"} 1",
            "pop_kernel_routes_synced 1",
            "pop_kernel_routes_resyncs_total 4",
            "pop_acl_hits_total{action=\"drop\"} 0",
            "pop_acl_rule_hits_total{priority=\"20\",action=\"allow\"} 0",
            "pop_sflow_samples_total{kind=\"flow\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // Without the data plane there are no counters to label.
        for family in ["pop_customer_packets_total", "pop_drops_total"] {
            assert!(!text.contains(family), "{family} in\n{text}");
        }
        // A later snapshot replaces it.
        published.publish(Snapshot {
            generation: 8,
            ..Default::default()
        });
        let text = render(&published.current(), Follower::default(), false);
        assert!(text.lines().any(|l| l == "pop_config_generation 8"));
        assert!(text.lines().any(|l| l == "pop_kernel_routes_synced 0"));
        assert!(!text.contains("pop_acl_rule_hits"), "{text}");
    }

    #[test]
    fn counters_are_described_under_their_total_name_and_eof_is_dropped() {
        let om = "# HELP a_x Some help.\n# TYPE a_x counter\na_x_total 1\n# HELP g G.\n# TYPE g gauge\ng 2\n# EOF\n";
        let text = super::to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP a_x_total Some help.\n# TYPE a_x_total counter\na_x_total 1\n# HELP g G.\n# TYPE g gauge\ng 2\n"
        );
    }
}
