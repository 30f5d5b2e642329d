//! Prometheus exposition (CONTRACT §5), built with prometheus-client from the
//! per-CPU maps at scrape time (summed over CPUs), so a scrape always shows the
//! data plane's current counters and nothing is cached in popd.
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
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
    reg.register(
        "pop_build",
        "pop version",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_string())]),
    );
    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String");
    out
}
