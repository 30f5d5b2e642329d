//! End-to-end firewall (issue #3): ACLs, anti-spoofing and per-customer
//! policers in the network-namespace lab (`pte2f-*`), driven with popctl, with
//! real TCP, ping and UDP traffic. Needs root.
//!
//! One test runs the scenarios in order on one lab; the lab is removed at the
//! end, also on failure.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use pop_lab::popd::{customer_stats, metric_value};
use pop_lab::{topology, Popd};
use pop_tests::lab_env::{LabEnv, Scenario};

const PREFIX: &str = "pte2f-";

type Env = LabEnv;

fn start() -> Result<Env> {
    let mut env = LabEnv::new(PREFIX, |_| Ok(()))?;
    env.start_resolved()?;
    Ok(env)
}

fn drops(popd: &Popd, customer: &str, reason: &str) -> Result<u64> {
    let stats = popd.popctl_json(&["stats"])?;
    let c = customer_stats(&stats, customer)
        .with_context(|| format!("no customer {customer} in {stats}"))?;
    Ok(c["drops"][reason].as_u64().unwrap_or(0))
}

/// Whether a TCP connection (an iperf3 control connection and a short test)
/// from the upstream to c1's `port` works.
fn tcp_works(env: &Env, port: u16) -> Result<bool> {
    let out = env.lab.exec(
        "up",
        &[
            "iperf3",
            "-c",
            topology::C1_V4,
            "-p",
            &port.to_string(),
            "-t",
            "1",
            "--connect-timeout",
            "1500",
        ],
    )?;
    Ok(out.status.success())
}

#[test]
fn firewall_end_to_end() {
    let mut env = start().unwrap_or_else(|e| panic!("setting up the lab and popd: {e:#}"));
    let scenarios: &[(&str, Scenario)] = &[
        (
            "acl drops TCP/22 towards a customer while TCP/443 passes",
            acl,
        ),
        (
            "anti-spoofing drops a spoofed source from a customer port",
            anti_spoofing,
        ),
        (
            "a policed customer's UDP throughput lands near its rate",
            policer,
        ),
        (
            "a policed customer's TCP throughput with the default burst lands near its rate",
            policer_tcp,
        ),
        (
            "a VLAN customer is accepted before its VLAN device exists",
            vlan_customer_without_device,
        ),
    ];
    env.run_scenarios("firewall", scenarios);
}

fn acl(env: &mut Env) -> Result<()> {
    for port in ["22", "443"] {
        let s = env
            .lab
            .spawn("c1", &["iperf3", "-s", "-p", port, "-B", topology::C1_V4])?;
        env.children.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    ensure!(tcp_works(env, 22)?, "TCP/22 must work before the rule");
    env.popd.popctl_ok(&[
        "acl",
        "add",
        "100",
        "--action",
        "drop",
        "--dst",
        "198.51.100.10/32",
        "--proto",
        "tcp",
        "--dport",
        "22",
    ])?;
    ensure!(
        !tcp_works(env, 22)?,
        "TCP/22 towards acme still connects after `acl add 100 ... --dport 22`"
    );
    ensure!(tcp_works(env, 443)?, "TCP/443 towards acme must still pass");
    trace_explains(env)?;
    let n = drops(&env.popd, "acme", "acl")?;
    ensure!(n > 0, "acme's acl drop counter is {n}");
    let scrape = env.popd.metrics()?;
    let global = metric_value(&scrape, "pop_drops_total", &[("reason", "acl")]).unwrap_or(0.0);
    ensure!(
        global >= n as f64,
        "pop_drops_total{{reason=\"acl\"}} {global} < acme's {n}"
    );
    acl_hits(env)?;
    // Deleting the rule lets TCP/22 through again.
    env.popd.popctl_ok(&["acl", "del", "100"])?;
    ensure!(
        tcp_works(env, 22)?,
        "TCP/22 still blocked after `acl del 100`"
    );
    Ok(())
}

/// With rule 100 dropping TCP/22 towards acme: its hits count the blocked
/// connection's packets, a rule no packet matches stays at 0, the table has
/// a HITS column, and adding an unrelated rule (an ACL swap) keeps rule
/// 100's count; `pop_acl_hits_total` has the drops.
fn acl_hits(env: &mut Env) -> Result<()> {
    let blocked = env.acl_hits(100)?;
    ensure!(
        blocked > 0,
        "rule 100 blocked TCP/22 but counts {blocked} hits"
    );
    env.popd.popctl_ok(&[
        "acl", "add", "90", "--action", "allow", "--proto", "udp", "--dport", "9",
    ])?;
    ensure!(
        env.acl_hits(100)? >= blocked,
        "rule 100's hits went from {blocked} to {} after adding rule 90",
        env.acl_hits(100)?
    );
    ensure!(
        env.acl_hits(90)? == 0,
        "rule 90 matched nothing yet counts hits"
    );
    ensure!(!tcp_works(env, 22)?, "TCP/22 must still be dropped");
    let after = env.acl_hits(100)?;
    ensure!(
        after > blocked,
        "rule 100's hits did not grow: {blocked} then {after}"
    );
    let table = env.popd.popctl_ok(&["acl", "show"])?;
    let header = table.lines().next().unwrap_or_default();
    ensure!(
        header.contains("HITS"),
        "no HITS column in `popctl acl show`:\n{table}"
    );
    let scrape = env.popd.metrics()?;
    let total = metric_value(&scrape, "pop_acl_hits_total", &[("action", "drop")]).unwrap_or(0.0);
    ensure!(
        total >= after as f64,
        "pop_acl_hits_total{{action=\"drop\"}} {total} < rule 100's {after}"
    );
    ensure!(
        !scrape.contains("pop_acl_rule_hits_total"),
        "per-rule hit series without --metrics-acl-rules"
    );
    // A restart (adopting the data plane) keeps the counts; with
    // --metrics-acl-rules each rule has its own series.
    env.popd.kill()?;
    env.popd.set_extra_args(&["--metrics-acl-rules"]);
    env.popd.start()?;
    let restarted = env.acl_hits(100)?;
    ensure!(
        restarted >= after,
        "rule 100's hits went from {after} to {restarted} over a restart of popd"
    );
    let scrape = env.popd.metrics()?;
    let per_rule = metric_value(
        &scrape,
        "pop_acl_rule_hits_total",
        &[("priority", "100"), ("action", "drop")],
    )
    .unwrap_or(0.0);
    ensure!(
        per_rule >= after as f64,
        "pop_acl_rule_hits_total{{priority=\"100\"}} is {per_rule}, rule 100 has {after} hits"
    );
    env.popd.popctl_ok(&["acl", "del", "90"])?;
    single_changes_name_rules_like_a_restart(env)
}

/// `acl add` / `acl del` book the metrics' rules one rule at a time: the
/// per-rule series then are those a restart (which rebuilds them from every
/// rule) shows, a deleted rule has none, and an added rule counts from 0 in
/// a slot of its own (not another rule's count).
fn single_changes_name_rules_like_a_restart(env: &mut Env) -> Result<()> {
    env.popd.popctl_ok(&[
        "acl", "add", "95", "--action", "allow", "--proto", "udp", "--dport", "7",
    ])?;
    env.popd.popctl_ok(&[
        "acl", "add", "97", "--action", "drop", "--proto", "udp", "--dport", "8",
    ])?;
    env.popd.popctl_ok(&["acl", "del", "97"])?;
    // The rule count, and the per-rule series' labels without their values
    // (rule 100 may still count retransmissions).
    // Sorted: a family's series come in no fixed order.
    let series = |scrape: &str| -> Vec<String> {
        let mut s: Vec<String> = scrape
            .lines()
            .filter(|l| {
                l.starts_with("pop_acl_rule_hits_total{") || l.starts_with("pop_acl_rules ")
            })
            .map(|l| match l.strip_prefix("pop_acl_rule_hits_total") {
                Some(_) => l.rsplit_once(' ').map_or(l, |(k, _)| k).to_string(),
                None => l.to_string(),
            })
            .collect();
        s.sort();
        s
    };
    let scrape = env.popd.metrics()?;
    let changed = series(&scrape);
    let rule95 = metric_value(
        &scrape,
        "pop_acl_rule_hits_total",
        &[("priority", "95"), ("action", "allow")],
    );
    ensure!(
        rule95 == Some(0.0),
        "rule 95, just added, shows {rule95:?} hits:\n{scrape}"
    );
    for gone in ["90", "97"] {
        ensure!(
            !changed
                .iter()
                .any(|l| l.contains(&format!("priority=\"{gone}\""))),
            "deleted rule {gone} still has a series: {changed:?}"
        );
    }
    env.popd.kill()?;
    env.popd.start()?;
    let restarted = series(&env.popd.metrics()?);
    ensure!(
        changed == restarted,
        "per-rule series after single changes {changed:?}, after a restart {restarted:?}"
    );
    env.popd.popctl_ok(&["acl", "del", "95"])?;
    Ok(())
}

/// `popctl trace` tells what the live data plane does with a packet, and
/// counts nothing: with ACL rule 100 (TCP/22 towards acme) in place.
fn trace_explains(env: &mut Env) -> Result<()> {
    let stats_before = env.popd.popctl_json(&["stats"])?;
    let trace = |dport: &str| {
        env.popd.popctl_json(&[
            "trace",
            "--in",
            "eth0",
            "--src",
            topology::INTERNET_V4,
            "--dst",
            topology::C1_V4,
            "--proto",
            "tcp",
            "--dport",
            dport,
        ])
    };
    let t = trace("22")?;
    ensure!(
        t["action"] == "drop"
            && t["reason"] == "acl"
            && t["acl_rule"] == 100
            && t["customer_in"] == "acme",
        "trace of TCP/22 towards acme: {t}"
    );
    let t = trace("443")?;
    ensure!(
        t["action"] == "redirect"
            && t["egress"] == "eth1"
            && t["route"]["prefix"] == "198.51.100.0/24",
        "trace of TCP/443 towards acme: {t}"
    );
    let t = env.popd.popctl_json(&[
        "trace",
        "--in",
        "eth1",
        "--src",
        topology::C1_V4,
        "--dst",
        "198.51.100.1",
    ])?;
    ensure!(
        t["action"] == "pass" && t["reason"] == "local",
        "trace towards the edge's own address: {t}"
    );
    let text = env.popd.popctl_ok(&[
        "trace",
        "--in",
        "eth0",
        "--src",
        topology::INTERNET_V4,
        "--dst",
        topology::C1_V4,
        "--dport",
        "22",
    ])?;
    ensure!(
        text.contains("verdict") && text.contains("drop (acl, rule 100)"),
        "popctl trace output: {text}"
    );
    let stats_after = env.popd.popctl_json(&["stats"])?;
    ensure!(
        stats_before == stats_after,
        "traces were counted: stats before {stats_before}, after {stats_after}"
    );
    Ok(())
}

fn anti_spoofing(env: &mut Env) -> Result<()> {
    env.popd.popctl_ok(&["customer", "del", "acme"])?;
    env.popd.popctl_ok(&[
        "customer",
        "add",
        "acme",
        "--prefix",
        "198.51.100.0/24",
        "--prefix",
        "2001:db8:a::/48",
        "--iface",
        "eth1",
        "--anti-spoofing",
    ])?;
    env.lab
        .exec_ok("c1", &["ip", "addr", "add", "10.99.0.1/32", "dev", "eth0"])?;
    let spoofed = env.lab.exec(
        "c1",
        &[
            "ping",
            "-c",
            "5",
            "-i",
            "0.2",
            "-W",
            "1",
            "-I",
            "10.99.0.1",
            topology::INTERNET_V4,
        ],
    )?;
    let text = String::from_utf8_lossy(&spoofed.stdout);
    ensure!(
        text.contains(" 0 received"),
        "spoofed pings got through: {text}"
    );
    let n = drops(&env.popd, "acme", "spoofed")?;
    ensure!(n >= 5, "acme's spoofed counter is {n}, expected >= 5");
    let ok = env.lab.ping("c1", topology::INTERNET_V4, 5, 0.2)?;
    ensure!(ok.received == 5, "acme's own source must still pass: {ok}");
    Ok(())
}

fn policer(env: &mut Env) -> Result<()> {
    const RATE_BPS: u64 = 20_000_000;
    const DATAGRAM: u64 = 1400;
    // 10 ms at the rate: the burst adds < 1% to a 4 s measurement.
    police_globex(env, RATE_BPS, Some(25_000))?;
    // Offer three times the rate for 4 s.
    let out = iperf3_to_upstream(
        env,
        "5301",
        &[
            "-u",
            "-b",
            "60M",
            "-l",
            &DATAGRAM.to_string(),
            "-t",
            "4",
            "-J",
        ],
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).context("iperf3 -J output")?;
    let sum = &v["end"]["sum"];
    let sent_bps = sum["bits_per_second"]
        .as_f64()
        .context("end.sum.bits_per_second")?;
    let lost = sum["lost_percent"]
        .as_f64()
        .context("end.sum.lost_percent")?;
    let received_payload_bps = sent_bps * (1.0 - lost / 100.0);
    // The policer counts whole frames: payload + UDP 8 + IPv4 20 + Ethernet 14.
    let expected_payload_bps = RATE_BPS as f64 * DATAGRAM as f64 / (DATAGRAM + 42) as f64;
    let ratio = received_payload_bps / expected_payload_bps;
    eprintln!("policer: offered {sent_bps:.0} b/s, {lost:.1}% lost, received {received_payload_bps:.0} b/s of payload = {ratio:.3} x the policed rate");
    ensure!((0.95..=1.05).contains(&ratio), "received {received_payload_bps:.0} b/s, policed rate {expected_payload_bps:.0} b/s of payload: ratio {ratio:.3} outside 0.95..1.05");
    let n = drops(&env.popd, "globex", "policed")?;
    ensure!(n > 0, "globex's policed counter is {n}");
    Ok(())
}

/// TCP cannot be policed with a tiny burst (a policer drops where a shaper
/// would queue, and TCP takes the drops as congestion); the default burst,
/// 250 ms at the rate, must let one flow use most of the rate.
fn policer_tcp(env: &mut Env) -> Result<()> {
    const RATE_BPS: u64 = 20_000_000;
    police_globex(env, RATE_BPS, None)?;
    let shown = env.popd.popctl_json(&["customer", "show"])?;
    let burst = shown
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "globex"))
        .map(|c| c["burst_bytes"].clone());
    ensure!(
        burst == Some(serde_json::json!(RATE_BPS / 32)),
        "default burst of a 20 Mbit/s policer: {burst:?}, expected {} bytes (250 ms)",
        RATE_BPS / 32
    );
    let out = iperf3_to_upstream(env, "5302", &["-t", "5", "-J"])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("iperf3 -J output")?;
    let received_bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("end.sum_received.bits_per_second")?;
    let ratio = received_bps / RATE_BPS as f64;
    eprintln!("policer, TCP: {received_bps:.0} b/s of payload = {ratio:.3} x the policed rate");
    // Payload is ~96% of the policed frames; the burst adds ~5% over 5 s.
    ensure!(
        (0.80..=1.10).contains(&ratio),
        "TCP through a {RATE_BPS} b/s policer with the default burst: {received_bps:.0} b/s, ratio {ratio:.3} outside 0.80..1.10"
    );
    Ok(())
}

/// Re-adds globex (c2) with a policer of `rate_bps` and `burst_bytes` (None:
/// the default burst).
fn police_globex(env: &mut Env, rate_bps: u64, burst_bytes: Option<u64>) -> Result<()> {
    env.popd.popctl_ok(&["customer", "del", "globex"])?;
    let (rate, burst) = (rate_bps.to_string(), burst_bytes.map(|b| b.to_string()));
    let mut args = vec![
        "customer",
        "add",
        "globex",
        "--prefix",
        "203.0.113.0/24",
        "--prefix",
        "2001:db8:b::/48",
        "--iface",
        "eth2",
        "--rate-bps",
        &rate,
    ];
    if let Some(b) = &burst {
        args.extend(["--burst-bytes", b]);
    }
    env.popd.popctl_ok(&args)?;
    Ok(())
}

/// Runs iperf3 from c2 to an iperf3 server on the upstream at `port` with the
/// client arguments `args`; its standard output.
fn iperf3_to_upstream(env: &mut Env, port: &str, args: &[&str]) -> Result<String> {
    let server = env.lab.spawn(
        "up",
        &[
            "iperf3",
            "-s",
            "-1",
            "-p",
            port,
            "-B",
            topology::INTERNET_V4,
        ],
    )?;
    env.children.push(server);
    std::thread::sleep(Duration::from_millis(500));
    let mut argv = vec!["iperf3", "-c", topology::INTERNET_V4, "-p", port];
    argv.extend_from_slice(args);
    env.lab.exec_ok("c2", &argv)
}

/// The reference's example customer has `vlan = 100`. This kernel cannot even
/// create VLAN devices (no 802.1Q support), so popd must accept the customer
/// and hand its tagged frames to the kernel, not refuse the config.
fn vlan_customer_without_device(env: &mut Env) -> Result<()> {
    env.popd.popctl_ok(&[
        "customer",
        "add",
        "tagged",
        "--prefix",
        "10.100.0.0/24",
        "--iface",
        "eth1",
        "--vlan",
        "100",
        "--anti-spoofing",
    ])?;
    let shown = env.popd.popctl_json(&["customer", "show"])?;
    let vlan = shown
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "tagged"))
        .map(|c| c["vlan"].clone());
    ensure!(
        vlan == Some(serde_json::json!(100)),
        "customer tagged in `customer show`: {shown}"
    );
    // Untagged traffic of the other customer on that port still flows.
    let ok = env.lab.ping("c1", topology::INTERNET_V4, 3, 0.2)?;
    ensure!(
        ok.received == 3,
        "acme on eth1 after adding a VLAN customer there: {ok}"
    );
    env.popd.popctl_ok(&["customer", "del", "tagged"])?;
    Ok(())
}
