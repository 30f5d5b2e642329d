//! End-to-end: frames pop must not route, in the network-namespace lab
//! (`ptfr-*`), with the edge's kernel forwarding off and real ping traffic.
//! Needs root.
//!
//! - A frame from customer c1 addressed to another MAC on its segment is not
//!   routed, and counted as `other_host`.
//! - A macvlan on the edge's customer port with the VRRP virtual MAC
//!   00:00:5e:00:01:01 (what keepalived creates for first-hop redundancy):
//!   c1 using that MAC for its gateway is forwarded; while the macvlan is
//!   down, and once it is gone, popd follows and the same frames are another
//!   host's again.
//! - A directed broadcast to one of the edge's subnets goes to the kernel.
//!
//! One test runs the scenarios in order on one lab; the lab is removed at the
//! end, also on failure.
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use pop_lab::popd::metric_value;
use pop_lab::topology;
use pop_tests::lab_env::{LabEnv, Scenario};

const PREFIX: &str = "ptfr-";
/// A MAC no device on c1's segment has: another router's.
const OTHER_MAC: &str = "02:00:00:00:99:99";
/// VRRP virtual router MAC for VRID 1 (RFC 5798).
const VRRP_MAC: &str = "00:00:5e:00:01:01";
/// The edge's address on c1's segment: c1's gateway.
const GATEWAY: &str = "198.51.100.1";

type Env = LabEnv;

fn start() -> Result<Env> {
    let mut env = LabEnv::new(PREFIX, |_| Ok(()))?;
    env.start_resolved()?;
    Ok(env)
}

/// `pop_drops_total{reason}` now.
fn drops(env: &Env, reason: &str) -> Result<f64> {
    let scrape = env.popd.metrics()?;
    Ok(metric_value(&scrape, "pop_drops_total", &[("reason", reason)]).unwrap_or(0.0))
}

/// Makes c1 send what it routes via its gateway to `mac`.
fn gateway_mac(env: &Env, mac: &str) -> Result<()> {
    env.lab.exec_ok(
        topology::C1,
        &[
            "ip",
            "neigh",
            "replace",
            GATEWAY,
            "lladdr",
            mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    )?;
    Ok(())
}

/// Pings the Internet from c1 (5 packets); returns how many came back.
fn ping_internet(env: &Env) -> Result<u64> {
    Ok(env
        .lab
        .ping(topology::C1, topology::INTERNET_V4, 5, 0.2)?
        .received)
}

/// Retries `ping_internet` until `want(received)` or the deadline.
fn wait_for_ping(env: &Env, what: &str, want: impl Fn(u64) -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let received = ping_internet(env)?;
        if want(received) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{what}: still {received} of 5 pings answered after 15 s"
        );
    }
}

fn map_fill(env: &Env, map: &str) -> Result<u64> {
    let status = env.popd.popctl_json(&["status"])?;
    status["maps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == map)
        .and_then(|m| m["entries"].as_u64())
        .with_context(|| format!("no map {map} in `popctl -j status`: {status}"))
}

#[test]
fn frames_not_to_route() {
    let mut env = start().unwrap_or_else(|e| panic!("setting up the lab and popd: {e:#}"));
    let scenarios: &[(&str, Scenario)] = &[
        ("another host's MAC", other_hosts_mac),
        ("a macvlan (VRRP) MAC", macvlan_mac),
        ("a directed broadcast", directed_broadcast),
    ];
    env.run_scenarios("e2e_frames", scenarios);
}

/// c1 sends to a MAC that is not the edge's: pop routes none of it and counts
/// each frame as other_host.
fn other_hosts_mac(env: &mut Env) -> Result<()> {
    let (v4, v6) = env.lab.edge_forwarding()?;
    ensure!(
        v4 == "0" && v6 == "0",
        "kernel forwarding on the edge must be off, got ipv4 {v4}, ipv6 {v6}"
    );
    ensure!(
        ping_internet(env)? == 5,
        "c1 cannot reach the Internet at all"
    );
    gateway_mac(env, OTHER_MAC)?;
    let before = drops(env, "other_host")?;
    let received = ping_internet(env)?;
    let after = drops(env, "other_host")?;
    ensure!(
        received == 0,
        "{received} of 5 pings to {OTHER_MAC} were routed"
    );
    ensure!(
        after - before >= 5.0,
        "pop_drops_total{{reason=\"other_host\"}} went from {before} to {after} for 5 frames"
    );
    Ok(())
}

/// A macvlan with the VRRP MAC on the edge's port towards c1: frames to it
/// are the host's and forwarded; after the macvlan is removed they are not.
fn macvlan_mac(env: &mut Env) -> Result<()> {
    let edge = topology::EDGE;
    env.lab.exec_ok(
        edge,
        &[
            "ip", "link", "add", "link", "eth1", "name", "vrrp1", "address", VRRP_MAC, "type",
            "macvlan", "mode", "bridge",
        ],
    )?;
    env.lab
        .exec_ok(edge, &["ip", "link", "set", "vrrp1", "up"])?;
    gateway_mac(env, VRRP_MAC)?;
    // popd follows link changes over netlink.
    wait_for_ping(env, "through the macvlan's MAC", |n| n == 5)?;
    ensure!(
        map_fill(env, "upper_macs")? == 1,
        "popctl status: upper_macs should hold the macvlan's MAC"
    );
    let before = drops(env, "other_host")?;
    let received = ping_internet(env)?;
    let after = drops(env, "other_host")?;
    ensure!(
        received == 5,
        "{received} of 5 pings through {VRRP_MAC} came back"
    );
    ensure!(
        after == before,
        "frames to the macvlan's MAC were counted as other_host ({before} -> {after})"
    );

    // A macvlan that is down takes no frames in the kernel: nor in pop.
    env.lab
        .exec_ok(edge, &["ip", "link", "set", "vrrp1", "down"])?;
    wait_for_ping(env, "with the macvlan down", |n| n == 0)?;
    env.lab
        .exec_ok(edge, &["ip", "link", "set", "vrrp1", "up"])?;
    wait_for_ping(env, "with the macvlan up again", |n| n == 5)?;

    env.lab.exec_ok(edge, &["ip", "link", "del", "vrrp1"])?;
    wait_for_ping(env, "after the macvlan is removed", |n| n == 0)?;
    ensure!(
        map_fill(env, "upper_macs")? == 0,
        "popctl status: upper_macs still holds a MAC after the macvlan is gone"
    );
    let before = drops(env, "other_host")?;
    ping_internet(env)?;
    let after = drops(env, "other_host")?;
    ensure!(
        after - before >= 5.0,
        "after the macvlan is gone, frames to its MAC must be other_host ({before} -> {after})"
    );
    // c1's gateway back to the edge's own MAC: routed again.
    env.lab.exec_ok(
        topology::C1,
        &["ip", "neigh", "del", GATEWAY, "dev", "eth0"],
    )?;
    wait_for_ping(env, "through the edge's own MAC", |n| n == 5)
}

/// 198.51.100.255 is the broadcast of the edge's 198.51.100.1/24: from c2 it
/// goes to the kernel (which does not forward it), not towards c1.
fn directed_broadcast(env: &mut Env) -> Result<()> {
    let trace = |dst: &str| {
        env.popd.popctl_json(&[
            "trace",
            "--in",
            "eth2",
            "--src",
            topology::C2_V4,
            "--dst",
            dst,
        ])
    };
    let t = trace("198.51.100.255")?;
    ensure!(
        t["action"] == "pass" && t["reason"] == "local",
        "trace of a directed broadcast to 198.51.100.0/24: {t}"
    );
    // Its neighbour in the subnet is still routed.
    let t = trace("198.51.100.254")?;
    ensure!(
        t["action"] == "redirect" && t["egress"] == "eth1",
        "trace of 198.51.100.254: {t}"
    );
    Ok(())
}
