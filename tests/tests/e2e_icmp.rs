//! End-to-end ICMP errors (issue #10): with the edge's kernel forwarding off,
//! pop itself answers what it cannot forward, in the network-namespace lab
//! (`ptic-*`), with the real traceroute and ping. Needs root.
//!
//! - traceroute (UDP and ICMP probes, IPv4 and IPv6) from customer c1 shows
//!   the edge as hop 1, from the address of its port towards c1;
//! - with the edge's upstream link at MTU 1400, a DF ping of 1428 bytes gets
//!   "Frag needed and DF set (mtu = 1400)" and an IPv6 one "Packet too big";
//! - `popctl trace` says so, and `pop_icmp_sent_total` counts each type;
//! - `[icmp]` applied with `popctl apply` limits them.
//!
//! One test runs the scenarios in order on one lab; the lab is removed at the
//! end, also on failure.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use pop_lab::popd::metric_value;
use pop_lab::topology;
use pop_tests::lab_env::{LabEnv, Scenario};

const PREFIX: &str = "ptic-";
/// The edge's address on c1's link: the source of the errors c1 gets.
const EDGE_C1_V4: &str = "198.51.100.1";
const EDGE_C1_V6: &str = "2001:db8:a::1";
/// The MTU the edge's upstream link gets for the path-MTU scenario.
const LOW_MTU: u32 = 1400;

type Env = LabEnv;

fn start() -> Result<Env> {
    // So that the hosts' veths take the errors pop sends back with XDP_TX
    // at once (a veth quirk, see Lab::attach_host_xdp).
    let mut env = LabEnv::new(PREFIX, |lab| lab.attach_host_xdp(pop_ebpf::pass_object()))?;
    env.start_resolved()?;
    Ok(env)
}

fn icmp_sent(env: &Env, kind: &str) -> Result<f64> {
    let scrape = env.popd.metrics()?;
    metric_value(&scrape, "pop_icmp_sent_total", &[("type", kind)])
        .with_context(|| format!("no pop_icmp_sent_total{{type=\"{kind}\"}} in\n{scrape}"))
}

/// The first hop traceroute prints for `argv` (e.g. `["-n", ...]`), run in c1.
fn first_hop(env: &Env, argv: &[&str]) -> Result<String> {
    let mut cmd = vec!["traceroute", "-n", "-q", "1", "-w", "2", "-m", "3"];
    cmd.extend_from_slice(argv);
    let out = env.lab.exec("c1", &cmd)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let hop = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("1 "))
        .with_context(|| {
            format!(
                "`{}` printed no hop 1:\n{text}{}",
                cmd.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    Ok(hop
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// traceroute through pop: the edge is hop 1, answering from its c1 port.
fn traceroute_shows_the_edge(env: &mut Env) -> Result<()> {
    let (v4, v6) = env.lab.edge_forwarding()?;
    ensure!(
        v4 == "0" && v6 == "0",
        "kernel forwarding on the edge must be off, got ipv4 {v4}, ipv6 {v6}"
    );
    let before = icmp_sent(env, "time_exceeded")?;
    for (what, argv, edge) in [
        ("udp", vec![topology::INTERNET_V4], EDGE_C1_V4),
        ("icmp", vec!["-I", topology::INTERNET_V4], EDGE_C1_V4),
        ("udp ipv6", vec!["-6", topology::INTERNET_V6], EDGE_C1_V6),
        (
            "icmp ipv6",
            vec!["-6", "-I", topology::INTERNET_V6],
            EDGE_C1_V6,
        ),
    ] {
        let hop = first_hop(env, &argv)?;
        ensure!(
            hop == edge,
            "traceroute ({what}) to {}: hop 1 is {hop:?}, not the edge {edge}",
            argv.last().unwrap()
        );
    }
    let after = icmp_sent(env, "time_exceeded")?;
    ensure!(
        after >= before + 4.0,
        "pop_icmp_sent_total{{type=\"time_exceeded\"}} went from {before} to {after}"
    );
    Ok(())
}

/// The output of `ping` in c1 with `args`, stdout and stderr together.
fn ping(env: &Env, args: &[&str]) -> Result<String> {
    let mut cmd = vec!["ping", "-c", "1", "-W", "2"];
    cmd.extend_from_slice(args);
    let out = env.lab.exec("c1", &cmd)?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Path-MTU discovery: a DF packet larger than the upstream link's MTU gets
/// Fragmentation Needed / Packet Too Big with that MTU, from the edge.
fn too_big_gets_the_mtu(env: &mut Env) -> Result<()> {
    let mtu = LOW_MTU.to_string();
    env.lab
        .exec_ok("edge", &["ip", "link", "set", "dev", "eth0", "mtu", &mtu])?;
    // popd follows the link change; the next hop's MTU follows with it.
    let size = (LOW_MTU - 28 + 1).to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = ping(env, &["-M", "do", "-s", &size, topology::INTERNET_V4])?;
        if text.contains("Frag needed") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    if !(text.contains(&format!("From {EDGE_C1_V4}"))
        && text.contains(&format!("Frag needed and DF set (mtu = {LOW_MTU})")))
    {
        let trace = env.popd.popctl(&[
            "-j",
            "trace",
            "--in",
            "eth1",
            "--src",
            topology::C1_V4,
            "--dst",
            topology::INTERNET_V4,
            "--size",
            "1401",
        ])?;
        anyhow::bail!(
            "ping -M do -s {size} to {}: no Frag needed (mtu = {LOW_MTU}) from {EDGE_C1_V4}:\n{text}\n\
             popctl trace of such a packet: {}{}",
            topology::INTERNET_V4,
            String::from_utf8_lossy(&trace.stdout),
            String::from_utf8_lossy(&trace.stderr)
        );
    }
    ensure!(icmp_sent(env, "frag_needed")? >= 1.0);
    // Fitting packets still pass (c1's kernel now knows the path MTU).
    let fits = (LOW_MTU - 28).to_string();
    let text = ping(env, &["-M", "do", "-s", &fits, topology::INTERNET_V4])?;
    ensure!(
        text.contains("1 received"),
        "a {LOW_MTU}-byte DF ping must pass:\n{text}"
    );

    let size = (LOW_MTU - 48 + 1).to_string();
    let text = ping(env, &["-6", "-M", "do", "-s", &size, topology::INTERNET_V6])?;
    ensure!(
        text.contains(&format!("From {EDGE_C1_V6}"))
            && text.to_lowercase().contains("packet too big")
            && text.contains(&mtu),
        "ping -6 -M do -s {size} to {}: no Packet too big (mtu {LOW_MTU}) from {EDGE_C1_V6}:\n{text}",
        topology::INTERNET_V6
    );
    ensure!(icmp_sent(env, "packet_too_big")? >= 1.0);
    Ok(())
}

/// `popctl trace` reports the ICMP error pop answers with.
fn trace_reports_it(env: &mut Env) -> Result<()> {
    let base = [
        "trace",
        "--in",
        "eth1",
        "--src",
        topology::C1_V4,
        "--dst",
        topology::INTERNET_V4,
    ];
    let mut args = base.to_vec();
    args.extend(["--ttl", "1"]);
    let t = env.popd.popctl_json(&args)?;
    ensure!(
        t["action"] == "tx" && t["icmp_error"] == "time_exceeded" && t["egress"] == "eth1",
        "trace --ttl 1: {t}"
    );
    let plain = String::from_utf8_lossy(&env.popd.popctl(&args)?.stdout).into_owned();
    // As docs/operations.md shows it.
    let want = "packet    icmp 198.51.100.10 > 100.64.0.1 ttl 1 in eth1\n\
                customers acme (source, out)\n\
                route     0.0.0.0/0 via 192.0.2.1 dev eth0\n\
                verdict   answer with icmp time_exceeded out of eth1 to the source\n";
    ensure!(plain == want, "popctl trace --ttl 1 prints:\n{plain}");
    let mut args = base.to_vec();
    args.extend(["--size", "1500"]);
    let t = env.popd.popctl_json(&args)?;
    ensure!(
        t["icmp_error"] == "frag_needed" && t["icmp_mtu"] == LOW_MTU,
        "trace --size 1500: {t}"
    );
    let t = env.popd.popctl_json(&base)?;
    ensure!(
        t["action"] == "redirect" && t.get("icmp_error").is_none(),
        "trace without --ttl: {t}"
    );
    Ok(())
}

/// `[icmp]` applied with `popctl apply` reaches the data plane: with one
/// error per second and a burst of 1 (per CPU), a quick series of TTL-1
/// pings gets about one error per CPU, the rest are dropped and counted.
fn rate_limit_applies(env: &mut Env) -> Result<()> {
    let exported = env.popd.popctl_json(&["export"])?;
    let mut config = exported["config"]
        .as_str()
        .context("popctl export gave no config")?
        .to_string();
    config.push_str("\n[icmp]\nrate_per_s = 1\nburst = 1\n");
    let file = env.popd.state_dir().join("icmp-limited.toml");
    std::fs::write(&file, &config)?;
    let out = env.popd.popctl_ok(&["apply", &file.to_string_lossy()])?;
    ensure!(
        out.contains("~ icmp rate_per_s = 1"),
        "popctl apply printed:\n{out}"
    );
    let dropped = |env: &Env| -> Result<f64> {
        let scrape = env.popd.metrics()?;
        metric_value(
            &scrape,
            "pop_drops_total",
            &[("reason", "icmp_rate_limited")],
        )
        .context("no pop_drops_total{reason=\"icmp_rate_limited\"}")
    };
    let before = (dropped(env)?, icmp_sent(env, "time_exceeded")?);
    let text = ping(
        env,
        &["-t", "1", "-c", "10", "-i", "0.01", topology::INTERNET_V4],
    )?;
    let after = (dropped(env)?, icmp_sent(env, "time_exceeded")?);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    ensure!(
        after.1 - before.1 >= 1.0 && after.1 - before.1 <= 2.0 * cpus,
        "10 TTL-1 pings at a limit of 1/s, burst 1, on {cpus} CPUs: {} errors sent\n{text}",
        after.1 - before.1
    );
    ensure!(
        (after.0 - before.0) + (after.1 - before.1) == 10.0,
        "every ping either answered or dropped as icmp_rate_limited: {before:?} -> {after:?}\n{text}"
    );
    Ok(())
}

#[test]
fn icmp_errors_end_to_end() {
    let mut env = start().unwrap_or_else(|e| panic!("setting up the lab and popd: {e:#}"));
    let scenarios: &[(&str, Scenario)] = &[
        ("traceroute shows the edge", traceroute_shows_the_edge),
        ("too big gets the mtu", too_big_gets_the_mtu),
        ("popctl trace reports it", trace_reports_it),
        ("[icmp] rate limit applies", rate_limit_applies),
    ];
    env.run_scenarios("e2e icmp", scenarios);
}
