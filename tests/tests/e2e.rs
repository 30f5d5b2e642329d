//! End-to-end: the real popd and popctl (target/debug) in the network-namespace lab
//! (`pte2e-up`, `pte2e-edge`, `pte2e-c1`, `pte2e-c2`), with real ping, curl and
//! promtool. Needs root.
//!
//! The scenarios share one lab and one popd and build on each other (a route added
//! before the restart must be there after it), so a single test runs them in
//! order; the lab is removed when it ends, also on failure.
use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use pop_lab::{
    cmd,
    popd::{customer_stats, metric_value},
    topology::{self, C1, C2, EDGE},
    PingStats, Popd,
};
use pop_tests::lab_env::{LabEnv, Scenario};

/// Namespace (and veth, bpffs) prefix of these tests.
const PREFIX: &str = "pte2e-";
/// The route scenario 3 adds before the restart and expects after it.
const DURABLE_ROUTE: &str = "10.99.0.0/16";

/// The lab and popd under test; dropping it kills popd and removes the lab.
type Env = LabEnv;

#[test]
fn end_to_end() {
    let mut env =
        LabEnv::started(PREFIX).unwrap_or_else(|e| panic!("setting up the lab and popd: {e:#}"));
    let scenarios: &[(&str, Scenario)] = &[
        ("1 forwarding", forwarding),
        ("3a a route added with popctl", add_durable_route),
        ("2 hitless restart", hitless_restart),
        (
            "2b hitless data-plane upgrade and downgrade",
            data_plane_upgrade,
        ),
        ("3b the route survives the restart", durable_route_survives),
        ("4 a bad route is rejected", bad_route_rejected),
        ("5 shutdown --detach", shutdown_detach),
    ];
    env.run_scenarios("e2e", scenarios);
}

/// (1) popd forwards IPv4 and IPv6 between the customers and the upstream with
/// kernel forwarding off, counts it per customer and interface, and its metrics
/// pass promtool.
fn forwarding(env: &mut Env) -> Result<()> {
    let (v4, v6) = env.lab.edge_forwarding()?;
    ensure!(
        v4 == "0" && v6 == "0",
        "kernel forwarding on the edge must be off, got ipv4 {v4}, ipv6 {v6}"
    );
    env.popd.wait_resolved(Duration::from_secs(10))?;

    let pings = [
        (C1, topology::INTERNET_V4),
        (C1, topology::INTERNET_V6),
        (C2, topology::INTERNET_V4),
        (C2, topology::INTERNET_V6),
        (C1, topology::C2_V4),
        (C1, topology::C2_V6),
        (C2, topology::C1_V4),
        (C2, topology::C1_V6),
    ];
    let mut c1 = PingStats::default();
    let mut c2 = PingStats::default();
    for (node, dst) in pings {
        let stats = env.lab.ping(node, dst, 5, 0.2)?;
        ensure!(
            stats.transmitted == 5 && stats.received == stats.transmitted,
            "ping {dst} from {node}: {stats}"
        );
        let total = if node == C1 { &mut c1 } else { &mut c2 };
        total.transmitted += stats.transmitted;
        total.received += stats.received;
    }

    let stats = env.popd.popctl_json(&["stats"])?;
    for (name, sent) in [("acme", c1), ("globex", c2)] {
        let customer = customer_stats(&stats, name)
            .with_context(|| format!("no customer {name} in `popctl -j stats`: {stats}"))?;
        let packets_out = customer["packets_out"].as_u64().context("packets_out")?;
        let packets_in = customer["packets_in"].as_u64().context("packets_in")?;
        ensure!(
            packets_out >= sent.transmitted,
            "{name}: packets_out {packets_out} < {} echo requests its host sent",
            sent.transmitted
        );
        ensure!(
            packets_in >= sent.received,
            "{name}: packets_in {packets_in} < {} echo replies its host received",
            sent.received
        );
    }

    let scrape = env.popd.metrics()?;
    let redirected = metric_value(
        &scrape,
        "pop_packets_total",
        &[("interface", "eth1"), ("action", "redirect")],
    )
    .context("no pop_packets_total{interface=\"eth1\",action=\"redirect\"} in /metrics")?;
    ensure!(
        redirected > 0.0,
        "pop_packets_total{{interface=\"eth1\",action=\"redirect\"}} is {redirected}"
    );
    for iface in ["eth0", "eth1", "eth2"] {
        let attached = metric_value(
            &scrape,
            "pop_xdp_attached",
            &[("interface", iface), ("mode", "native")],
        );
        ensure!(attached == Some(1.0), "pop_xdp_attached{{interface=\"{iface}\",mode=\"native\"}} is {attached:?}, want 1 (veth has native XDP)");
    }
    promtool_check(&scrape)
}

/// `promtool check metrics` must accept the scrape.
fn promtool_check(scrape: &str) -> Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run promtool (apt-get install prometheus)")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(scrape.as_bytes())?;
    let out = cmd::wait_output_timeout(child, Duration::from_secs(30))?;
    ensure!(
        out.status.success(),
        "promtool check metrics rejects the scrape: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// (3, before the restart) a route added with popctl shows in `route show`.
fn add_durable_route(env: &mut Env) -> Result<()> {
    env.popd.popctl_ok(&[
        "route",
        "add",
        DURABLE_ROUTE,
        "via",
        "192.0.2.1",
        "dev",
        "eth0",
    ])?;
    let shown = env.popd.popctl_ok(&["route", "show"])?;
    ensure!(
        shown.contains(DURABLE_ROUTE),
        "`popctl route show` lacks {DURABLE_ROUTE} just after adding it:\n{shown}"
    );
    Ok(())
}

/// Runs `restart` while c1 pings the upstream every 50 ms; the ping's stats.
fn ping_across(
    env: &mut Env,
    what: &str,
    restart: impl FnOnce(&mut Env) -> Result<()>,
) -> Result<PingStats> {
    let mut ping = env.lab.command(
        C1,
        &[
            "ping",
            "-n",
            "-q",
            "-i",
            "0.05",
            "-c",
            "120",
            "-W",
            "1",
            topology::INTERNET_V4,
        ],
    );
    ping.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut ping = ping.spawn().context("cannot start ping")?;
    thread::sleep(Duration::from_millis(1500));
    ensure!(ping.try_wait()?.is_none(), "ping ended before the {what}");
    let started = Instant::now();
    restart(env)?;
    let took = started.elapsed();
    let out = cmd::wait_output_timeout(ping, Duration::from_secs(30))?;
    let stats = PingStats::parse(&String::from_utf8_lossy(&out.stdout))?;
    eprintln!(
        "  ping c1 -> {} across the {what} (popd back in {took:?}): {stats}",
        topology::INTERNET_V4
    );
    ensure!(
        stats.transmitted >= 100,
        "ping sent only {} requests: {stats}",
        stats.transmitted
    );
    ensure!(
        stats.lost() <= 1,
        "{} echo requests lost across the {what} (took {took:?}): {stats}",
        stats.lost()
    );
    Ok(stats)
}

/// SIGKILL popd and start it again.
fn kill_and_start(env: &mut Env) -> Result<()> {
    env.popd.kill()?;
    env.popd
        .start()
        .context("restarting popd with the same state dir and bpffs")
}

/// (2) SIGKILL popd and start it again while a customer pings the upstream: at most
/// one echo request is lost and the same XDP program keeps running.
fn hitless_restart(env: &mut Env) -> Result<()> {
    let program_before = program_id(&env.popd)?;
    let fib_before = fib_fill(&env.popd)?;
    ensure!(
        fib_before[0] > 0,
        "`popctl status` shows no IPv4 route records in use: {fib_before:?}"
    );
    let pid_before = env.popd.pid().context("popd is not running")?;
    ping_across(env, "restart", kill_and_start)?;
    let pid_after = env
        .popd
        .pid()
        .context("popd is not running after the restart")?;
    ensure!(
        pid_after != pid_before,
        "popd was not restarted (pid {pid_after})"
    );
    let program_after = program_id(&env.popd)?;
    ensure!(
        program_after == program_before,
        "the XDP program changed across the restart: id {program_before} before, {program_after} after"
    );
    // The restarted popd adopted the pinned IPv4 and IPv6 FIBs and their
    // route records: the same routes use as many records, answers, split /24s
    // and trie nodes as before.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fib_after = fib_fill(&env.popd)?;
        if fib_after == fib_before {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "FIB fill (fib4_routes, fib4_results, fib4_tbl8, fib6_routes, fib6_nodes) \
             {fib_before:?} before the restart, {fib_after:?} after"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Entries of `fib4_routes`, `fib4_results`, `fib4_tbl8`, `fib6_routes` and
/// `fib6_nodes` in `popctl -j status`.
fn fib_fill(popd: &Popd) -> Result<[u64; 5]> {
    let status = popd.popctl_json(&["status"])?;
    let fill = |name: &str| {
        status["maps"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == name)
            .and_then(|m| m["entries"].as_u64())
            .with_context(|| format!("no map {name} in `popctl -j status`: {status}"))
    };
    Ok([
        fill("fib4_routes")?,
        fill("fib4_results")?,
        fill("fib4_tbl8")?,
        fill("fib6_routes")?,
        fill("fib6_nodes")?,
    ])
}

/// The XDP program attached to the edge's `iface`, as the kernel reports it.
fn attached_program(env: &Env, iface: &str) -> Result<u64> {
    let out = env.lab.exec_ok(
        topology::EDGE,
        &["ip", "-j", "-d", "link", "show", "dev", iface],
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j link")?;
    v[0]["xdp"]["prog"]["id"]
        .as_u64()
        .with_context(|| format!("no XDP program on {iface}: {out}"))
}

fn acme_packets_out(env: &Env) -> Result<u64> {
    let stats = env.popd.popctl_json(&["stats"])?;
    customer_stats(&stats, "acme")
        .and_then(|c| c["packets_out"].as_u64())
        .with_context(|| format!("no acme in `popctl -j stats`: {stats}"))
}

/// (2b) A popd whose data plane is another build (other instructions, one more
/// map) replaces the running one under traffic: it loads beside it, fills its
/// maps, and swaps every link (bpf_link_update). At most one echo request is
/// lost, the interfaces run the new program, the counters go on from where they
/// were, and going back to the first build works the same way.
fn data_plane_upgrade(env: &mut Env) -> Result<()> {
    let program_before = program_id(&env.popd)?;
    // An ACL rule that every echo request towards acme hits: its count goes on.
    env.popd.popctl_ok(&[
        "acl",
        "add",
        "7",
        "--action",
        "allow",
        "--dst",
        &format!("{}/32", topology::C1_V4),
        "--proto",
        "icmp",
    ])?;
    ping_across(env, "acl rule added", |_| Ok(()))?;
    let hits_before = env.acl_hits(7)?;
    ensure!(
        hits_before > 0,
        "rule 7 counts no hits after a ping through it"
    );
    let counted_before = acme_packets_out(env)?;
    let variant = env.popd.state_dir().join("pop_variant.bpf.o");
    std::fs::write(&variant, pop_ebpf::pop_variant_object())?;
    env.popd
        .set_env("POP_DATAPLANE_OBJECT", Some(&variant.to_string_lossy()));
    ping_across(env, "data-plane upgrade", kill_and_start)?;
    let upgraded = program_id(&env.popd)?;
    ensure!(
        upgraded != program_before,
        "popd with another data-plane build still runs program {program_before}"
    );
    for iface in ["eth0", "eth1", "eth2"] {
        let attached = attached_program(env, iface)?;
        ensure!(
            attached == upgraded,
            "{iface} runs XDP program {attached}, popd reports {upgraded}"
        );
    }
    let counted_after = acme_packets_out(env)?;
    ensure!(
        counted_after > counted_before,
        "acme's packets_out went from {counted_before} to {counted_after}: counters not carried over"
    );
    let hits_after = env.acl_hits(7)?;
    ensure!(
        hits_after > hits_before,
        "ACL rule 7's hits went from {hits_before} to {hits_after} over the upgrade"
    );
    let bpffs = env.lab.bpffs_dir();
    ensure!(
        !bpffs.join("next").exists(),
        "the staging directory {} is left",
        bpffs.join("next").display()
    );
    let builds = std::fs::read_dir(bpffs.join("build"))?.count();
    ensure!(builds == 1, "{builds} build marks pinned, expected 1");
    // The same build again: adopted, not reloaded.
    kill_and_start(env)?;
    ensure!(
        program_id(&env.popd)? == upgraded,
        "a restart of the same build replaced the program"
    );
    // And back to the first build.
    env.popd.set_env("POP_DATAPLANE_OBJECT", None);
    ping_across(env, "data-plane downgrade", kill_and_start)?;
    let back = program_id(&env.popd)?;
    ensure!(back != upgraded, "the downgrade kept program {upgraded}");
    ensure!(attached_program(env, "eth1")? == back);
    ensure!(
        env.acl_hits(7)? > hits_after,
        "ACL rule 7's hits did not go on over the downgrade"
    );
    env.popd.popctl_ok(&["acl", "del", "7"])?;
    Ok(())
}

/// The XDP program id in `popctl -j status`.
fn program_id(popd: &Popd) -> Result<u64> {
    let status = popd.popctl_json(&["status"])?;
    status["program_id"]
        .as_u64()
        .with_context(|| format!("no program_id in `popctl -j status`: {status}"))
}

/// (3, after the restart) the route added before is still there, and forwarding works.
fn durable_route_survives(env: &mut Env) -> Result<()> {
    let shown = env.popd.popctl_ok(&["route", "show"])?;
    ensure!(
        shown.contains(DURABLE_ROUTE),
        "`popctl route show` lacks {DURABLE_ROUTE} after the restart:\n{shown}"
    );
    let stats = env.lab.ping(C2, topology::INTERNET_V6, 3, 0.2)?;
    ensure!(
        stats.received == stats.transmitted,
        "ping from c2 after the restart: {stats}"
    );
    Ok(())
}

/// (4) A prefix length of 33 is rejected with one line naming it, changing nothing.
fn bad_route_rejected(env: &mut Env) -> Result<()> {
    let before = env.popd.popctl_ok(&["-j", "route", "show"])?;
    let out = env.popd.popctl(&[
        "route",
        "add",
        "10.0.0.0/33",
        "via",
        "192.0.2.1",
        "dev",
        "eth0",
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "`popctl route add 10.0.0.0/33 ...` exited 0"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(
        lines.len() == 1 && lines[0].contains("33"),
        "expected one stderr line naming 33, got {stderr:?}"
    );
    let after = env.popd.popctl_ok(&["-j", "route", "show"])?;
    ensure!(
        before == after,
        "a rejected route changed `route show`:\nbefore {before}\nafter {after}"
    );
    Ok(())
}

/// (5) `popctl shutdown --detach` stops popd, removes XDP from every edge port and
/// the pins, and so stops forwarding (kernel forwarding is off).
fn shutdown_detach(env: &mut Env) -> Result<()> {
    env.popd.shutdown_detach()?;
    let attached: Vec<String> = env
        .lab
        .xdp_attached(EDGE)?
        .into_iter()
        .filter(|(name, _)| ["eth0", "eth1", "eth2"].contains(&name.as_str()))
        .map(|(name, xdp)| format!("{name}: {xdp}"))
        .collect();
    ensure!(
        attached.is_empty(),
        "XDP still attached after shutdown --detach: {attached:?}"
    );
    let bpffs = env.lab.bpffs_dir();
    ensure!(
        !bpffs.exists(),
        "{} still exists after shutdown --detach",
        bpffs.display()
    );
    let stats = env.lab.ping(C1, topology::INTERNET_V4, 2, 0.2)?;
    if stats.received != 0 {
        bail!("c1 still reaches the upstream after the data plane was removed: {stats}");
    }
    Ok(())
}
