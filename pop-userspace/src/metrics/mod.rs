//! Prometheus exposition (the `pop_*` metrics in docs/reference.md), built with prometheus-client from the
//! per-CPU maps at scrape time (summed over CPUs), so a scrape always shows the
//! data plane's current counters and nothing is cached in popd.
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::daemon::controller::Controller;

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
pub fn render(c: &Controller) -> String {
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
    for s in c.customer_stats() {
        for (dir, p, b) in [
            ("in", s.packets_in, s.bytes_in),
            ("out", s.packets_out, s.bytes_out),
        ] {
            let l = vec![("customer", s.name.clone()), ("direction", dir.to_string())];
            cust_packets.get_or_create(&l).inc_by(p);
            cust_bytes.get_or_create(&l).inc_by(b);
        }
        for (reason, n) in &s.drops {
            cust_drops
                .get_or_create(&vec![
                    ("customer", s.name.clone()),
                    ("reason", reason.clone()),
                ])
                .inc_by(*n);
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
    for (iface, action, p, b) in c.interface_counters() {
        let l = vec![("interface", iface), ("action", action.label().to_string())];
        packets.get_or_create(&l).inc_by(p);
        bytes.get_or_create(&l).inc_by(b);
    }
    let drops = counter_family(&mut reg, "pop_drops", "Packets dropped by XDP per reason");
    for (r, n) in c.drop_counters() {
        drops
            .get_or_create(&vec![("reason", r.label().to_string())])
            .inc_by(n);
    }
    let passes = counter_family(
        &mut reg,
        "pop_kernel_passes",
        "Packets handed to the kernel per reason",
    );
    for (r, n) in c.pass_counters() {
        passes
            .get_or_create(&vec![("reason", r.label().to_string())])
            .inc_by(n);
    }
    let icmp = counter_family(
        &mut reg,
        "pop_icmp_sent",
        "ICMP errors the data plane sent itself, per type",
    );
    for (kind, n) in c.icmp_counters() {
        icmp.get_or_create(&vec![("type", kind.label().to_string())])
            .inc_by(n);
    }
    let attached = gauge_family(
        &mut reg,
        "pop_xdp_attached",
        "1 per interface with XDP attached, by mode",
    );
    for (iface, mode) in c.attached() {
        attached
            .get_or_create(&vec![
                ("interface", iface.clone()),
                ("mode", mode.label().to_string()),
            ])
            .set(1);
    }
    let routes = gauge_family(
        &mut reg,
        "pop_routes",
        "Routes per address family and source: config (the desired state) or kernel \
         (learned from the [kernel_routes] table, shadowed or not)",
    );
    let ((c4, c6), (k4, k6)) = c.route_counts();
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
    kernel_route_metrics(&mut reg, c);
    let not_loaded = gauge_family(
        &mut reg,
        "pop_local_addresses_not_loaded",
        "Host addresses beyond the capacity of the local-address maps: packets to them are routed, not handed to the kernel",
    );
    let (v4, v6) = c.local_not_loaded();
    for (family, n) in [("ipv4", v4), ("ipv6", v6)] {
        not_loaded
            .get_or_create(&vec![("family", family.to_string())])
            .set(n as i64);
    }
    let st = c.state();
    let acl_rules = Gauge::<i64>::default();
    acl_rules.set(st.config.acls.len() as i64);
    reg.register("pop_acl_rules", "ACL rules in the desired state", acl_rules);
    acl_hits(&mut reg, c);
    let customers = Gauge::<i64>::default();
    customers.set(st.config.customers.len() as i64);
    reg.register("pop_customers", "Customers in the desired state", customers);
    let generation = Gauge::<i64>::default();
    generation.set(st.generation as i64);
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
    let (flows, counters) = c
        .sflow
        .as_ref()
        .map_or((0, 0), |x| (x.flow_samples(), x.counter_samples()));
    for (kind, n) in [("flow", flows), ("counter", counters)] {
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
fn acl_hits(reg: &mut Registry, c: &Controller) {
    let action_label = |a: crate::config::model::AclAction| match a {
        crate::config::model::AclAction::Allow => "allow",
        crate::config::model::AclAction::Drop => "drop",
    };
    let rules = c.acl_rules_with_hits();
    let totals = counter_family(
        reg,
        "pop_acl_hits",
        "Packets decided by ACL rules (the first matching rule), by the rule's action",
    );
    for action in ["allow", "drop"] {
        let n = rules
            .iter()
            .filter(|r| action_label(r.acl.action) == action)
            .map(|r| r.hits)
            .sum();
        totals
            .get_or_create(&vec![("action", action.to_string())])
            .inc_by(n);
    }
    if c.acl_rule_metrics {
        let per_rule = counter_family(
            reg,
            "pop_acl_rule_hits",
            "Packets decided by each ACL rule, by priority (popd --metrics-acl-rules)",
        );
        for r in &rules {
            per_rule
                .get_or_create(&vec![
                    ("priority", r.acl.priority.to_string()),
                    ("action", action_label(r.acl.action).to_string()),
                ])
                .inc_by(r.hits);
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
fn kernel_route_metrics(reg: &mut Registry, c: &Controller) {
    use crate::daemon::kernel_routes::{RESYNCS, SYNCED};
    use std::sync::atomic::Ordering;
    let learned = c.learned();
    let synced = Gauge::<i64>::default();
    synced.set(i64::from(
        c.kernel_table().is_some() && SYNCED.load(Ordering::Relaxed),
    ));
    reg.register(
        "pop_kernel_routes_synced",
        "1 when the learned routes equal the [kernel_routes] table, 0 while a dump is due \
         or under way (or no table is followed)",
        synced,
    );
    let resyncs = Counter::<u64>::default();
    resyncs.inc_by(RESYNCS.load(Ordering::Relaxed));
    reg.register(
        "pop_kernel_routes_resyncs",
        "Dumps of the [kernel_routes] table after the first (lost notifications, table or port changes)",
        resyncs,
    );
    let k = learned.counters;
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
    let (o4, o6) = learned.overflowed();
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
