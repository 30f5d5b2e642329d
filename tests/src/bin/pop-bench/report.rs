//! Result types, the stdout tables, the JSON document and the SVG plots.
use std::path::Path;

use anyhow::Result;
use serde_json::{json, Value};

/// One test_run case.
#[derive(Clone, Debug)]
pub struct TestRunRow {
    /// Case name.
    pub case: String,
    /// Routes loaded (IPv4 or IPv6 per the case).
    pub routes: u64,
    /// ACL rules loaded.
    pub acl_rules: u64,
    /// Customers loaded.
    pub customers: u64,
    /// Median ns per packet.
    pub ns_per_packet: f64,
    /// Median of (case / XDP_PASS) over rounds.
    pub ratio_to_xdp_pass: f64,
    /// Median of (case / xdp_redirect_min) over rounds.
    pub ratio_to_redirect_min: f64,
}

/// One lab case.
#[derive(Clone, Debug)]
pub struct LabRow {
    /// kernel_forward | kernel_forward_nft | pop.
    pub case: String,
    /// ACL (or nftables) rules in place.
    pub acl_rules: u64,
    /// Median received pps.
    pub pps_median: f64,
    /// Every round's pps.
    pub pps_rounds: Vec<f64>,
    /// Median CPU time of the whole path per received packet, ns (the
    /// generator thread's, which runs every receiver's softirq).
    pub cpu_ns_median: f64,
    /// Every round's CPU ns per packet.
    pub cpu_ns_rounds: Vec<f64>,
}

/// Control-plane timings (None = not measured in this build).
#[derive(Clone, Debug, Default)]
pub struct ControlPlane {
    /// Seconds to load the route table (1M routes; 100k with --quick).
    pub routes_1m_load_s: Option<f64>,
    /// Routes actually loaded.
    pub routes_loaded: u64,
    /// ms for `popctl route add` of a /24 with those routes loaded, until it
    /// returns (median; each a new prefix, deleted after).
    pub route_add_1m_ms: Option<f64>,
    /// The same for a /8.
    pub route_add_1m_slash8_ms: Option<f64>,
    /// The same for 0.0.0.0/0.
    pub route_add_1m_default_ms: Option<f64>,
    /// ms for a ~100-byte append + fdatasync on the state dir's filesystem
    /// (median of 20): the floor for a durable change.
    pub append_fsync_ms: Option<f64>,
    /// Seconds for a 100k-rule ACL swap.
    pub acl_100k_swap_s: Option<f64>,
    /// ms for `popctl customer add` (one /24) with 10k customers loaded,
    /// until it returns (median; each a new customer, deleted after).
    pub customer_add_10k_ms: Option<f64>,
    /// ms for `popctl acl add` (one rule) with 100k rules loaded, until it
    /// returns (median; each deleted after).
    pub acl_add_100k_ms: Option<f64>,
    /// ms for `popctl acl del` of a rule in the middle of the priority
    /// order with 100k rules loaded.
    pub acl_del_100k_middle_ms: Option<f64>,
    /// ms from `popctl route add` returning to the first forwarded packet.
    pub route_change_ms: Option<f64>,
    /// ms for one /metrics scrape with 10k customers (median).
    pub metrics_10k_customers_ms: Option<f64>,
    /// Customers loaded for the scrape.
    pub customers_loaded: u64,
    /// popd peak RSS (VmHWM) in MB after loading the routes.
    pub popd_rss_mb_1m_routes: Option<f64>,
    /// bird2 → kernel table → pop holding every route, ÷ bird2 → kernel table.
    pub bgp_full_table_ratio: Option<f64>,
    /// Learned route updates per second (netlink writes into the followed
    /// table) absorbed with update-to-map lag p99 ≤ 1 s and no loss.
    pub route_churn_per_s: Option<f64>,
    /// The update-to-map lag p99 at that rate, ms.
    pub route_churn_lag_p99_ms: Option<f64>,
    /// popd peak RSS (VmHWM) in MB with the full table learned.
    pub popd_rss_mb_full_table: Option<f64>,
    /// Routes bird2 announced for those (IPv4 + IPv6).
    pub bgp_routes: u64,
}

/// The whole run.
#[derive(Default)]
pub struct Report {
    /// test_run rows.
    pub test_run: Vec<TestRunRow>,
    /// lab rows.
    pub lab: Vec<LabRow>,
    /// control plane.
    pub control_plane: ControlPlane,
}

impl Report {
    /// The JSON document of issue #4 (exactly those keys).
    pub fn to_json(&self) -> Value {
        let cp = &self.control_plane;
        json!({
            "test_run": self.test_run.iter().map(|r| json!({
                "case": r.case, "routes": r.routes, "acl_rules": r.acl_rules,
                "customers": r.customers, "ns_per_packet": r.ns_per_packet,
                "ratio_to_xdp_pass": r.ratio_to_xdp_pass,
                "ratio_to_redirect_min": r.ratio_to_redirect_min,
            })).collect::<Vec<_>>(),
            "lab": self.lab.iter().map(|r| json!({
                "case": r.case, "acl_rules": r.acl_rules, "pps_median": r.pps_median,
                "ratio_to_kernel": lab_ratio(&self.lab, r, "kernel_forward"),
                "ratio_to_redirect_min": lab_ratio(&self.lab, r, "xdp_redirect_min"),
            })).collect::<Vec<_>>(),
            "control_plane": {
                "routes_1m_load_s": cp.routes_1m_load_s,
                "acl_100k_swap_s": cp.acl_100k_swap_s,
                "customer_add_10k_ms": cp.customer_add_10k_ms,
                "acl_add_100k_ms": cp.acl_add_100k_ms,
                "acl_del_100k_middle_ms": cp.acl_del_100k_middle_ms,
                "route_change_ms": cp.route_change_ms,
                "route_add_1m_ms": cp.route_add_1m_ms,
                "route_add_1m_slash8_ms": cp.route_add_1m_slash8_ms,
                "route_add_1m_default_ms": cp.route_add_1m_default_ms,
                "append_fsync_ms": cp.append_fsync_ms,
                "metrics_10k_customers_ms": cp.metrics_10k_customers_ms,
                "popd_rss_mb_1m_routes": cp.popd_rss_mb_1m_routes,
                "bgp_full_table_ratio": cp.bgp_full_table_ratio,
                "route_churn_per_s": cp.route_churn_per_s,
                "route_churn_lag_p99_ms": cp.route_churn_lag_p99_ms,
                "popd_rss_mb_full_table": cp.popd_rss_mb_full_table,
            },
        })
    }
}

/// Median of a non-empty slice.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The test_run table.
pub fn print_test_run(rows: &[TestRunRow]) {
    println!(
        "{:<30} {:>9} {:>9} {:>9} {:>12} {:>9} {:>9}",
        "CASE", "ROUTES", "ACL", "CUSTOMERS", "NS/PACKET", "xPASS", "xMIN"
    );
    for r in rows {
        println!(
            "{:<30} {:>9} {:>9} {:>9} {:>12.1} {:>9.2} {:>9.2}",
            r.case,
            r.routes,
            r.acl_rules,
            r.customers,
            r.ns_per_packet,
            r.ratio_to_xdp_pass,
            r.ratio_to_redirect_min
        );
    }
}

/// The lab table.
/// Median over rounds of `row`'s pps ÷ the `case` row's pps in the same
/// round (robust to a machine whose load drifts between rounds).
pub fn lab_ratio(rows: &[LabRow], row: &LabRow, case: &str) -> Option<f64> {
    let base = rows.iter().find(|r| r.case == case)?;
    let per_round: Vec<f64> = row
        .pps_rounds
        .iter()
        .zip(&base.pps_rounds)
        .filter(|(_, b)| **b > 0.0)
        .map(|(a, b)| a / b)
        .collect();
    (!per_round.is_empty()).then(|| median(&per_round))
}

/// `case`'s CPU ns per packet ÷ `row`'s, the median of per-round ratios: the
/// rate ratio the path would have with a CPU of its own.
pub fn lab_cpu_ratio(rows: &[LabRow], row: &LabRow, case: &str) -> Option<f64> {
    let base = rows.iter().find(|r| r.case == case)?;
    let per_round: Vec<f64> = row
        .cpu_ns_rounds
        .iter()
        .zip(&base.cpu_ns_rounds)
        .filter(|(a, _)| **a > 0.0)
        .map(|(a, b)| b / a)
        .collect();
    (!per_round.is_empty()).then(|| median(&per_round))
}

/// The lab table. xKERNEL and xMIN are medians of per-round ratios; CPU_NS is
/// the median CPU time of the whole path per packet and CPU_xMIN the median
/// per-round ratio of `xdp_redirect_min`'s CPU_NS to the case's.
pub fn print_lab(rows: &[LabRow]) {
    println!(
        "{:<20} {:>6} {:>12} {:>10} {:>10} {:>8} {:>9}  ROUNDS",
        "CASE", "RULES", "PPS_MEDIAN", "xKERNEL", "xMIN", "CPU_NS", "CPU_xMIN"
    );
    for r in rows {
        let ratio = lab_ratio(rows, r, "kernel_forward").unwrap_or(f64::NAN);
        let to_min = lab_ratio(rows, r, "xdp_redirect_min").unwrap_or(f64::NAN);
        let cpu_to_min = lab_cpu_ratio(rows, r, "xdp_redirect_min").unwrap_or(f64::NAN);
        let rounds: Vec<String> = r.pps_rounds.iter().map(|p| format!("{:.0}", p)).collect();
        println!(
            "{:<20} {:>6} {:>12.0} {:>10.2} {:>10.2} {:>8.0} {:>9.2}  {}",
            r.case,
            r.acl_rules,
            r.pps_median,
            ratio,
            to_min,
            r.cpu_ns_median,
            cpu_to_min,
            rounds.join(" ")
        );
    }
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map(|x| format!("{x:.3} {unit}"))
        .unwrap_or_else(|| "not measured".into())
}

/// The control-plane table.
pub fn print_control_plane(cp: &ControlPlane, quick: bool) {
    let note = if quick {
        " (--quick: smaller sizes, see the counts)"
    } else {
        ""
    };
    println!(
        "routes loaded ({} routes){note}: {}",
        cp.routes_loaded,
        opt(cp.routes_1m_load_s, "s")
    );
    println!(
        "popd peak RSS after loading them: {}",
        opt(cp.popd_rss_mb_1m_routes, "MB")
    );
    println!(
        "popctl route add with them loaded: /24 {}, /8 {}, 0/0 {} (append + fdatasync alone: {})",
        opt(cp.route_add_1m_ms, "ms"),
        opt(cp.route_add_1m_slash8_ms, "ms"),
        opt(cp.route_add_1m_default_ms, "ms"),
        opt(cp.append_fsync_ms, "ms")
    );
    println!(
        "route change → first packet forwarded: {}",
        opt(cp.route_change_ms, "ms")
    );
    println!(
        "/metrics scrape with {} customers: {}",
        cp.customers_loaded,
        opt(cp.metrics_10k_customers_ms, "ms")
    );
    println!(
        "popctl customer add with {} customers loaded: {}",
        cp.customers_loaded,
        opt(cp.customer_add_10k_ms, "ms")
    );
    println!("ACL swap of 100k rules: {}", opt(cp.acl_100k_swap_s, "s"));
    println!(
        "popctl acl add with those rules loaded: {}",
        opt(cp.acl_add_100k_ms, "ms")
    );
    println!(
        "popctl acl del of a rule in their middle: {}",
        opt(cp.acl_del_100k_middle_ms, "ms")
    );
    println!(
        "BGP table ({} routes) held by pop ÷ by the kernel: {}",
        cp.bgp_routes,
        opt(cp.bgp_full_table_ratio, "")
    );
    println!(
        "learned route updates absorbed with lag p99 ≤ 1 s and no loss: {} (lag p99 {})",
        opt(cp.route_churn_per_s, "/s"),
        opt(cp.route_churn_lag_p99_ms, "ms")
    );
    println!(
        "popd peak RSS with that table learned: {}",
        opt(cp.popd_rss_mb_full_table, "MB")
    );
}

/// A minimal SVG line plot (log-scale x), one series per name.
fn svg_plot(title: &str, xlabel: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let (w, h, l, r, t, b) = (640.0, 400.0, 70.0, 20.0, 40.0, 50.0);
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    let xmin = pts
        .iter()
        .map(|p| p.0.max(1.0).log10())
        .fold(f64::INFINITY, f64::min);
    let xmax = pts
        .iter()
        .map(|p| p.0.max(1.0).log10())
        .fold(f64::NEG_INFINITY, f64::max)
        .max(xmin + 1.0);
    let ymax = pts.iter().map(|p| p.1).fold(0.0, f64::max) * 1.15 + 1.0;
    let sx = |x: f64| l + (x.max(1.0).log10() - xmin) / (xmax - xmin) * (w - l - r);
    let sy = |y: f64| h - b - y / ymax * (h - t - b);
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{title}</text>\n\
         <line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{xlabel} (log scale)</text>\n\
         <text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">ns per packet</text>\n",
        w / 2.0, h - b, w - r, h - b, h - b, (l + w - r) / 2.0, h - 12.0, (t + h - b) / 2.0, (t + h - b) / 2.0
    );
    for i in 0..=4 {
        let y = ymax * i as f64 / 4.0;
        s += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0}</text>\n",
            l - 6.0,
            sy(y) + 4.0,
            y
        );
        s += &format!(
            "<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#ddd\"/>\n",
            sy(y),
            w - r,
            sy(y)
        );
    }
    let mut e = xmin.floor() as i32;
    while (e as f64) <= xmax {
        let x = 10f64.powi(e);
        s += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            sx(x),
            h - b + 16.0,
            x as u64
        );
        e += 1;
    }
    for (i, (name, p)) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        let path: Vec<String> = p
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n",
            path.join(" ")
        );
        for (x, y) in p {
            s += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>\n",
                sx(*x),
                sy(*y)
            );
        }
        s += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{c}\">{name}</text>\n",
            l + 10.0,
            t + 14.0 + 16.0 * i as f64
        );
    }
    s + "</svg>\n"
}

/// Writes routes.svg and acl.svg (ns/packet against table size) into `dir`.
pub fn plots(rows: &[TestRunRow], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let series = |prefix: &str, x: fn(&TestRunRow) -> u64| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| r.case == prefix)
            .map(|r| (x(r) as f64, r.ns_per_packet))
            .collect()
    };
    let pass = rows
        .iter()
        .find(|r| r.case == "xdp_pass")
        .map(|r| r.ns_per_packet);
    let mut routes = vec![
        (
            "ipv4_forward".to_string(),
            series("ipv4_forward", |r| r.routes),
        ),
        (
            "ipv6_forward".to_string(),
            series("ipv6_forward", |r| r.routes),
        ),
    ];
    if let Some(p) = pass {
        let xs: Vec<f64> = routes
            .iter()
            .flat_map(|s| s.1.iter().map(|q| q.0))
            .collect();
        let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().copied().fold(0.0, f64::max);
        routes.push(("xdp_pass".into(), vec![(lo, p), (hi, p)]));
    }
    std::fs::write(
        dir.join("routes.svg"),
        svg_plot("ns per packet vs routes", "routes", &routes),
    )?;
    let acl = series("acl_drop", |r| r.acl_rules);
    let mixed = series("acl_drop_mixed", |r| r.acl_rules);
    if !acl.is_empty() {
        let mut lines = vec![("acl_drop (one shape)".to_string(), acl)];
        if !mixed.is_empty() {
            lines.push(("acl_drop_mixed (five shapes)".to_string(), mixed));
        }
        std::fs::write(
            dir.join("acl.svg"),
            svg_plot("ns per packet vs ACL rules", "ACL rules", &lines),
        )?;
    }
    Ok(())
}
