//! Prometheus exposition (CONTRACT §5), built with prometheus-client from the
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
        "Routes in the data plane per address family",
    );
    let (v4, v6) = c.route_counts();
    routes
        .get_or_create(&vec![("family", "ipv4".to_string())])
        .set(v4 as i64);
    routes
        .get_or_create(&vec![("family", "ipv6".to_string())])
        .set(v6 as i64);
    let st = c.state();
    let acl_rules = Gauge::<i64>::default();
    acl_rules.set(st.config.acls.len() as i64);
    reg.register("pop_acl_rules", "ACL rules in the desired state", acl_rules);
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
