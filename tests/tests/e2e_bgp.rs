//! End-to-end: routes learned from a kernel routing table that bird2 fills over
//! eBGP (`[kernel_routes] table = 100`), in the namespace lab with the edge's
//! kernel forwarding off, so every packet that arrives was forwarded by pop.
//!
//! The upstream's bird2 announces 100.64.0.0/24 (the "internet" address that
//! pings reach), a generated table and a churn block; the edge's bird2 exports
//! them into kernel table 100. The route maps are read from their pins and
//! compared with the kernel table plus the configured routes, exactly.
//! Scenarios share one lab and build on each other, in order.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use aya::maps::lpm_trie::LpmTrie;
use aya::maps::{Map, MapData};
use pop_common::PopRoute;
use pop_lab::bgp::{self, Bgp, Table, INTERNET4_PREFIX, KERNEL_TABLE};
use pop_lab::popd::metric_value;
use pop_lab::topology::{C1, EDGE, INTERNET_V4, INTERNET_V6};
use pop_lab::Lab;
use pop_tests::kernel_routes::{batch_v4, batch_v6, finish_ping, ip_batch, start_ping};
use pop_tests::lab_env::{LabEnv, Scenario};
use pop_tests::wait;

const PREFIX: &str = "ptbgp-";
/// First id of the learned half of the `nexthops` array.
const LEARNED_NH_FIRST: u32 = pop_common::MAX_NEXTHOPS / 2;
/// How long popd may take to follow a change of the kernel table.
const SETTLE: Duration = Duration::from_secs(30);
/// The traffic across the edge: a ping from c1 every 20 ms, waited for
/// 120 s at most.
const PING_INTERVAL_S: f64 = 0.02;
const PING_TIMEOUT: Duration = Duration::from_secs(120);

type Env = LabEnv;

fn configured_prefixes() -> BTreeSet<String> {
    bgp::configured_routes()
        .map(|r| r.prefix.to_string())
        .collect()
}

/// Every entry of the pinned route maps: prefix → value.
fn map_routes(lab: &Lab) -> Result<BTreeMap<String, PopRoute>> {
    let dir = lab.bpffs_dir().join("maps");
    let mut out = BTreeMap::new();
    let open = |name: &str| -> Result<Map> {
        let data = MapData::from_pin(dir.join(name)).with_context(|| format!("pin {name}"))?;
        Ok(Map::from_map_data(data)?)
    };
    let v4: LpmTrie<MapData, [u8; 4], PopRoute> = open("routes_v4")?.try_into()?;
    for k in v4.keys() {
        let k = k?;
        // An entry popd removes between listing and reading is skipped.
        let Ok(v) = v4.get(&k, 0) else { continue };
        out.insert(
            format!("{}/{}", Ipv4Addr::from(k.data()), k.prefix_len()),
            v,
        );
    }
    let v6: LpmTrie<MapData, [u8; 16], PopRoute> = open("routes_v6")?.try_into()?;
    for k in v6.keys() {
        let k = k?;
        // An entry popd removes between listing and reading is skipped.
        let Ok(v) = v6.get(&k, 0) else { continue };
        out.insert(
            format!("{}/{}", Ipv6Addr::from(k.data()), k.prefix_len()),
            v,
        );
    }
    Ok(out)
}

/// The prefixes of kernel table 100 on the edge (`ip -j route show`).
fn kernel_prefixes(lab: &Lab) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for family in ["-4", "-6"] {
        let o = lab.exec(
            EDGE,
            &[
                "ip",
                "-j",
                family,
                "route",
                "show",
                "table",
                &KERNEL_TABLE.to_string(),
            ],
        )?;
        let text = String::from_utf8_lossy(&o.stdout);
        if text.trim().is_empty() {
            continue; // no IPv6 table yet
        }
        let routes: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("ip -j route show: {text}"))?;
        for r in routes.as_array().context("a list")? {
            let dst = r["dst"].as_str().context("dst")?;
            let full = match (dst, family) {
                ("default", "-4") => "0.0.0.0/0".to_string(),
                ("default", _) => "::/0".to_string(),
                (d, _) if d.contains('/') => d.to_string(),
                (d, "-4") => format!("{d}/32"),
                (d, _) => format!("{d}/128"),
            };
            // Normalise the spelling the way the map reader prints it.
            let net: ipnet::IpNet = full.parse()?;
            out.insert(format!("{}/{}", net.network(), net.prefix_len()));
        }
    }
    Ok(out)
}

/// Waits until the maps hold exactly the kernel table plus the configured
/// routes and popd says it is in sync.
fn wait_exact(env: &Env, what: &str) -> Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let mut want = kernel_prefixes(&env.lab)?;
        want.extend(configured_prefixes());
        let got: BTreeSet<String> = map_routes(&env.lab)?.into_keys().collect();
        let synced = env
            .popd
            .metrics()
            .ok()
            .and_then(|m| metric_value(&m, "pop_kernel_routes_synced", &[]));
        if got == want && synced == Some(1.0) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let missing: Vec<_> = want.difference(&got).take(5).collect();
            let extra: Vec<_> = got.difference(&want).take(5).collect();
            bail!(
                "{what}: maps hold {} routes, kernel table + config {}; missing {missing:?}, \
                 extra {extra:?}; pop_kernel_routes_synced {synced:?}",
                got.len(),
                want.len()
            );
        }
        thread::sleep(Duration::from_millis(250));
    }
}

fn metric(env: &Env, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    let m = env.popd.metrics()?;
    metric_value(&m, name, labels).with_context(|| format!("no {name}{labels:?} in /metrics"))
}

fn ping_ok(env: &Env, dst: &str) -> Result<()> {
    let s = env.lab.ping(C1, dst, 3, 0.2)?;
    ensure!(s.received == 3, "ping {dst} from c1: {s}");
    Ok(())
}

fn route_get(env: &Env, addr: &str) -> Result<serde_json::Value> {
    env.popd.popctl_json(&["route", "get", addr])
}

fn wait_for(what: &str, ok: impl FnMut() -> Result<bool>) -> Result<()> {
    wait::until(what, SETTLE, Duration::from_millis(100), ok)
}

#[test]
fn bgp_end_to_end() {
    let mut env = LabEnv::with_config(PREFIX, &bgp::popd_config(), |_| Ok(()))
        .unwrap_or_else(|e| panic!("setting up the lab and popd: {e:#}"));
    let scenarios: &[(&str, Scenario)] = &[
        ("learned routes forward", learned_routes_forward),
        (
            "a configured route wins, its deletion falls back",
            configured_wins,
        ),
        (
            "[kernel_routes] off and on with popctl apply",
            kernel_routes_off_and_on,
        ),
        ("a withdraw stops forwarding", withdraw_stops_forwarding),
        (
            "blackhole, unreachable and prohibit routes drop",
            blackhole_drops,
        ),
        (
            "routes via unattached devices are skipped and counted",
            unattached_device_skipped,
        ),
        ("multipath routes become ECMP groups", multipath_routes),
        (
            "withdraw/announce cycles lose no packet",
            churn_loses_nothing,
        ),
        ("kill -9 under traffic", kill_under_traffic),
        (
            "a data-plane upgrade fills the new maps with learned routes",
            upgrade_under_traffic,
        ),
        ("forced ENOBUFS re-sync", enobufs_resync),
        ("changes while popd is down", changes_while_down),
        (
            "a full route map never blocks a configured route",
            overflow_never_blocks_configured,
        ),
    ];
    env.run_scenarios("e2e_bgp", scenarios);
}

/// bird2 → kernel table 100 → popd: the upstream's "internet" is reachable
/// only by learned routes; route show/get, metrics and the maps agree.
fn learned_routes_forward(env: &mut Env) -> Result<()> {
    let (v4, v6) = env.lab.edge_forwarding()?;
    ensure!(v4 == "0" && v6 == "0", "edge kernel forwarding must be off");
    let bgp = Bgp::start(
        &env.lab,
        Table {
            v4: 2000,
            v6: 500,
            churn_v4: 10_000,
        },
    )?;
    let (a4, a6) = bgp.announced();
    bgp.wait_kernel_routes(a4, a6, Duration::from_secs(60))?;
    env.bgp = Some(bgp);
    env.popd.start()?;
    wait_exact(env, "after start")?;
    env.popd.wait_resolved(Duration::from_secs(10))?;
    ping_ok(env, INTERNET_V4)?;
    ping_ok(env, INTERNET_V6)?;

    let get = route_get(env, INTERNET_V4)?;
    ensure!(
        get["source"] == "kernel" && get["prefix"] == INTERNET4_PREFIX && get["dev"] == "eth0",
        "route get {INTERNET_V4}: {get}"
    );
    ensure!(get["nexthops"][0]["via"] == "192.0.2.1", "{get}");
    let kernel = env
        .popd
        .popctl_json(&["route", "show", "--source", "kernel"])?;
    let kernel = kernel.as_array().context("a list")?;
    ensure!(
        kernel.len() == a4 + a6 && kernel.iter().all(|r| r["source"] == "kernel"),
        "route show --source kernel lists {} routes, want {}",
        kernel.len(),
        a4 + a6
    );
    let config = env
        .popd
        .popctl_json(&["route", "show", "--source", "config"])?;
    ensure!(
        config.as_array().map(Vec::len) == Some(configured_prefixes().len()),
        "route show --source config: {config}"
    );
    let export = env.popd.popctl_ok(&["export"])?;
    ensure!(
        !export.contains(&bgp::generated_v4(0)) && export.contains("[kernel_routes]"),
        "export prints learned routes or lacks [kernel_routes]:\n{export}"
    );
    for (family, n) in [("ipv4", a4), ("ipv6", a6)] {
        let got = metric(
            env,
            "pop_routes",
            &[("family", family), ("source", "kernel")],
        )?;
        ensure!(
            got == n as f64,
            "pop_routes{{family={family},source=kernel}} is {got}, want {n}"
        );
    }
    let configured = configured_prefixes();
    let v6 = configured.iter().filter(|p| p.contains(':')).count();
    for (family, n) in [("ipv4", configured.len() - v6), ("ipv6", v6)] {
        let got = metric(
            env,
            "pop_routes",
            &[("family", family), ("source", "config")],
        )?;
        ensure!(
            got == n as f64,
            "pop_routes{{family={family},source=config}} is {got}, want {n}"
        );
    }
    Ok(())
}

/// The learned-half or configured-half next hop the map entry for `prefix` uses.
fn entry_nh(env: &Env, prefix: &str) -> Result<u32> {
    let routes = map_routes(&env.lab)?;
    let r = routes
        .get(prefix)
        .with_context(|| format!("{prefix} not in the maps"))?;
    ensure!(r.nh_count == 1, "{prefix}: {r:?}");
    Ok(r.nh_ids[0])
}

fn configured_wins(env: &mut Env) -> Result<()> {
    env.popd.popctl_ok(&[
        "route",
        "add",
        INTERNET4_PREFIX,
        "via",
        "192.0.2.1",
        "dev",
        "eth0",
    ])?;
    let get = route_get(env, INTERNET_V4)?;
    ensure!(
        get["source"] == "config",
        "route get after route add: {get}"
    );
    let nh = entry_nh(env, INTERNET4_PREFIX)?;
    ensure!(
        nh < LEARNED_NH_FIRST,
        "the map entry uses next hop {nh}, not the configured one"
    );
    ping_ok(env, INTERNET_V4)?;
    env.popd.popctl_ok(&["route", "del", INTERNET4_PREFIX])?;
    let get = route_get(env, INTERNET_V4)?;
    ensure!(
        get["source"] == "kernel",
        "route get after route del: {get}"
    );
    let nh = entry_nh(env, INTERNET4_PREFIX)?;
    ensure!(
        nh >= LEARNED_NH_FIRST,
        "after the delete the map entry uses next hop {nh}, not the learned one"
    );
    ping_ok(env, INTERNET_V4)
}

/// `popctl apply` without `[kernel_routes]` removes the learned routes (and
/// only them); applying it again learns the table back (what the demo does).
fn kernel_routes_off_and_on(env: &mut Env) -> Result<()> {
    let with = bgp::popd_config();
    let without = with
        .split("\n[kernel_routes]")
        .next()
        .context("config")?
        .to_string();
    let dir = tempfile::Builder::new().prefix("ptbgp-apply").tempdir()?;
    let file = dir.path().join("pop.toml");
    std::fs::write(&file, &without)?;
    env.popd.popctl_ok(&["apply", &file.to_string_lossy()])?;
    wait_for("the learned routes to go", || {
        let got: BTreeSet<String> = map_routes(&env.lab)?.into_keys().collect();
        Ok(got == configured_prefixes())
    })?;
    let synced = metric(env, "pop_kernel_routes_synced", &[])?;
    ensure!(
        synced == 0.0,
        "pop_kernel_routes_synced is {synced} without [kernel_routes]"
    );
    ensure!(
        route_get(env, INTERNET_V4).is_err(),
        "route get answers without learned routes"
    );
    std::fs::write(&file, &with)?;
    env.popd.popctl_ok(&["apply", &file.to_string_lossy()])?;
    wait_exact(env, "after applying [kernel_routes] again")?;
    env.popd.wait_resolved(Duration::from_secs(10))?;
    ping_ok(env, INTERNET_V4)
}

fn withdraw_stops_forwarding(env: &mut Env) -> Result<()> {
    let bgp = env.bgp.as_ref().context("bird")?;
    bgp.announce("internet4", false)?;
    wait_for("the withdraw to reach the maps", || {
        Ok(!map_routes(&env.lab)?.contains_key(INTERNET4_PREFIX))
    })?;
    ensure!(
        route_get(env, INTERNET_V4).is_err(),
        "route get still answers after the withdraw"
    );
    let s = env.lab.ping(C1, INTERNET_V4, 3, 0.2)?;
    ensure!(
        s.received == 0,
        "ping {INTERNET_V4} after the withdraw: {s}"
    );
    bgp.announce("internet4", true)?;
    wait_for("the re-announce to reach the maps", || {
        Ok(map_routes(&env.lab)?.contains_key(INTERNET4_PREFIX))
    })?;
    ping_ok(env, INTERNET_V4)
}

/// Blackhole, unreachable and prohibit routes in the kernel table all drop
/// in pop, counted under `blackhole`, and show as blackholes.
fn blackhole_drops(env: &mut Env) -> Result<()> {
    let table = KERNEL_TABLE.to_string();
    for kind in ["blackhole", "unreachable", "prohibit"] {
        let before = metric(env, "pop_drops_total", &[("reason", "blackhole")])?;
        env.lab.exec_ok(
            EDGE,
            &["ip", "route", "add", kind, "100.64.0.1/32", "table", &table],
        )?;
        wait_for(&format!("the {kind} route in the maps"), || {
            Ok(map_routes(&env.lab)?
                .get("100.64.0.1/32")
                .is_some_and(|r| r.flags == pop_common::ROUTE_BLACKHOLE))
        })?;
        let get = route_get(env, INTERNET_V4)?;
        ensure!(
            get["blackhole"] == true && get["source"] == "kernel",
            "route get with a {kind} route: {get}"
        );
        let shown = env
            .popd
            .popctl_ok(&["route", "show", "--source", "kernel"])?;
        ensure!(
            shown.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.first() == Some(&"100.64.0.1/32")
                    && w.get(1) == Some(&"blackhole")
                    && w.last() == Some(&"kernel")
            }),
            "`popctl route show --source kernel` lacks the {kind} row:\n{shown}"
        );
        let s = env.lab.ping(C1, INTERNET_V4, 3, 0.2)?;
        ensure!(s.received == 0, "ping through a {kind} route: {s}");
        let after = metric(env, "pop_drops_total", &[("reason", "blackhole")])?;
        ensure!(
            after - before >= 3.0,
            "{kind} route: pop_drops_total{{reason=blackhole}} {before} -> {after}"
        );
        env.lab.exec_ok(
            EDGE,
            &["ip", "route", "del", kind, "100.64.0.1/32", "table", &table],
        )?;
        wait_for(&format!("the {kind} route to go"), || {
            Ok(!map_routes(&env.lab)?.contains_key("100.64.0.1/32"))
        })?;
        ping_ok(env, INTERNET_V4)?;
    }
    Ok(())
}

fn skipped(env: &Env, reason: &str) -> Result<f64> {
    metric(
        env,
        "pop_kernel_routes_skipped_total",
        &[("reason", reason)],
    )
}

/// A route via a device pop does not attach to, and a device route without a
/// gateway: neither reaches the maps nor `route show`; both are counted.
fn unattached_device_skipped(env: &mut Env) -> Result<()> {
    let table = KERNEL_TABLE.to_string();
    let (foreign, gatewayless) = ("198.18.1.0/24", "198.18.2.0/24");
    let (foreign_before, gatewayless_before) =
        (skipped(env, "foreign_device")?, skipped(env, "no_gateway")?);
    let setup: [&[&str]; 6] = [
        &[
            "ip", "link", "add", "ptx0", "type", "veth", "peer", "name", "ptx1",
        ],
        &["ip", "link", "set", "ptx0", "up"],
        &["ip", "link", "set", "ptx1", "up"],
        &["ip", "addr", "add", "198.18.0.1/24", "dev", "ptx0"],
        &[
            "ip",
            "route",
            "add",
            foreign,
            "via",
            "198.18.0.2",
            "dev",
            "ptx0",
            "table",
            &table,
        ],
        &[
            "ip",
            "route",
            "add",
            gatewayless,
            "dev",
            "eth0",
            "table",
            &table,
        ],
    ];
    for argv in setup {
        env.lab.exec_ok(EDGE, argv)?;
    }
    let result = (|| -> Result<()> {
        wait_for("both routes counted as skipped", || {
            Ok(skipped(env, "foreign_device")? > foreign_before
                && skipped(env, "no_gateway")? > gatewayless_before)
        })?;
        // A route added after them is learned: they were seen and passed over.
        env.lab.exec_ok(
            EDGE,
            &[
                "ip",
                "route",
                "add",
                "198.18.3.0/24",
                "via",
                "192.0.2.1",
                "dev",
                "eth0",
                "table",
                &table,
            ],
        )?;
        wait_for("the route after them", || {
            Ok(map_routes(&env.lab)?.contains_key("198.18.3.0/24"))
        })?;
        let maps = map_routes(&env.lab)?;
        ensure!(
            !maps.contains_key(foreign) && !maps.contains_key(gatewayless),
            "a route pop cannot forward by is in the maps"
        );
        let shown = env
            .popd
            .popctl_json(&["route", "show", "--source", "kernel"])?;
        ensure!(
            !shown
                .as_array()
                .context("a list")?
                .iter()
                .any(|r| { r["prefix"] == foreign || r["prefix"] == gatewayless }),
            "route show lists a skipped route"
        );
        Ok(())
    })();
    for argv in [
        &["ip", "route", "del", foreign, "table", &table][..],
        &["ip", "route", "del", gatewayless, "table", &table],
        &["ip", "route", "del", "198.18.3.0/24", "table", &table],
        &["ip", "link", "del", "ptx0"],
    ] {
        let _ = env.lab.exec(EDGE, argv);
    }
    result?;
    wait_exact(env, "after removing the skipped routes")
}

/// Kernel multipath routes (IPv4 and IPv6) via two gateways on the upstream
/// link forward over both; removing one IPv6 next hop keeps the route.
fn multipath_routes(env: &mut Env) -> Result<()> {
    let table = KERNEL_TABLE.to_string();
    env.lab
        .exec_ok("up", &["ip", "addr", "add", "192.0.2.3/24", "dev", "eth0"])?;
    env.lab.exec_ok(
        "up",
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "2001:db8:ffff::3/64",
            "dev",
            "eth0",
            "nodad",
        ],
    )?;
    for (dst, a, b) in [
        ("100.64.0.1/32", "192.0.2.1", "192.0.2.3"),
        (
            "2001:db8:ffff:1::1/128",
            "2001:db8:ffff::1",
            "2001:db8:ffff::3",
        ),
    ] {
        env.lab.exec_ok(
            EDGE,
            &[
                "ip", "route", "add", dst, "table", &table, "nexthop", "via", a, "dev", "eth0",
                "nexthop", "via", b, "dev", "eth0",
            ],
        )?;
    }
    wait_for("both ECMP groups in the maps", || {
        let m = map_routes(&env.lab)?;
        Ok(["100.64.0.1/32", "2001:db8:ffff:1::1/128"]
            .iter()
            .all(|p| m.get(*p).is_some_and(|r| r.nh_count == 2)))
    })?;
    env.popd.wait_resolved(Duration::from_secs(10))?;
    ping_ok(env, INTERNET_V4)?;
    ping_ok(env, INTERNET_V6)?;
    env.lab.exec_ok(
        EDGE,
        &[
            "ip",
            "-6",
            "route",
            "del",
            "2001:db8:ffff:1::1/128",
            "via",
            "2001:db8:ffff::3",
            "table",
            &table,
        ],
    )?;
    wait_for("one IPv6 next hop left", || {
        Ok(map_routes(&env.lab)?
            .get("2001:db8:ffff:1::1/128")
            .is_some_and(|r| r.nh_count == 1))
    })?;
    ping_ok(env, INTERNET_V6)?;
    env.lab.exec_ok(
        EDGE,
        &["ip", "route", "del", "100.64.0.1/32", "table", &table],
    )?;
    env.lab.exec_ok(
        EDGE,
        &[
            "ip",
            "-6",
            "route",
            "del",
            "2001:db8:ffff:1::1/128",
            "table",
            &table,
        ],
    )?;
    wait_exact(env, "after removing the multipath routes")
}

fn learned_v4(env: &Env) -> Result<f64> {
    metric(
        env,
        "pop_routes",
        &[("family", "ipv4"), ("source", "kernel")],
    )
}

fn churn_loses_nothing(env: &mut Env) -> Result<()> {
    let bgp = env.bgp.as_ref().context("bird")?;
    let (a4, _) = bgp.announced();
    let churn = bgp.table().churn_v4 as usize;
    let ping = start_ping(&env.lab, INTERNET_V4, PING_INTERVAL_S, 100_000)?;
    let result = (|| -> Result<()> {
        for cycle in 0..10 {
            bgp.announce("churn4", false)?;
            wait_for(&format!("cycle {cycle}: withdraw"), || {
                Ok(learned_v4(env)? == (a4 - churn) as f64)
            })?;
            bgp.announce("churn4", true)?;
            wait_for(&format!("cycle {cycle}: announce"), || {
                Ok(learned_v4(env)? == a4 as f64)
            })?;
        }
        Ok(())
    })();
    // SIGINT makes ping print its summary.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(ping.id() as i32, libc::SIGINT) };
    let stats = finish_ping(ping, PING_TIMEOUT)?;
    result?;
    eprintln!("  ping across 10 cycles of {churn} prefixes: {stats}");
    ensure!(stats.transmitted >= 50, "ping sent too little: {stats}");
    ensure!(stats.lost() == 0, "packets lost during the churn: {stats}");
    wait_exact(env, "after the churn")
}

fn kill_under_traffic(env: &mut Env) -> Result<()> {
    let ping = start_ping(&env.lab, INTERNET_V4, PING_INTERVAL_S, 150)?;
    thread::sleep(Duration::from_millis(500));
    env.popd.kill()?;
    thread::sleep(Duration::from_millis(500));
    env.popd.start()?;
    let stats = finish_ping(ping, PING_TIMEOUT)?;
    eprintln!("  ping across kill -9 and restart: {stats}");
    ensure!(stats.transmitted >= 140 && stats.lost() == 0, "{stats}");
    wait_exact(env, "after the restart")
}

fn program_id(env: &Env) -> Result<u64> {
    let status = env.popd.popctl_json(&["status"])?;
    status["program_id"]
        .as_u64()
        .with_context(|| format!("no program_id in `popctl -j status`: {status}"))
}

/// popd with another data-plane build: the new maps get the configured and
/// the learned routes before the links are swapped, so a flow by a learned
/// route loses nothing; and back to this build.
fn upgrade_under_traffic(env: &mut Env) -> Result<()> {
    let variant = env.popd.state_dir().join("pop_variant.bpf.o");
    std::fs::write(&variant, pop_ebpf::pop_variant_object())?;
    for object in [Some(variant.to_string_lossy().into_owned()), None] {
        let before = program_id(env)?;
        env.popd.set_env("POP_DATAPLANE_OBJECT", object.as_deref());
        // The flow runs until the links were swapped to the new program.
        let ping = start_ping(&env.lab, INTERNET_V4, PING_INTERVAL_S, 100_000)?;
        let upgrade = (|| -> Result<()> {
            thread::sleep(Duration::from_millis(300));
            env.popd.kill()?;
            env.popd.start()?;
            wait_for("the new program", || Ok(program_id(env)? != before))?;
            // `status` names the new program once it is loaded, before the
            // links are swapped and the staging directory removed.
            wait_for("the upgrade's staging directory to go", || {
                Ok(!env.lab.bpffs_dir().join("next").exists())
            })?;
            thread::sleep(Duration::from_millis(300));
            Ok(())
        })();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(ping.id() as i32, libc::SIGINT) };
        let stats = finish_ping(ping, PING_TIMEOUT)?;
        upgrade?;
        eprintln!("  ping across the data-plane swap: {stats}");
        ensure!(
            stats.transmitted >= 30 && stats.lost() == 0,
            "packets lost across the upgrade: {stats}"
        );
        wait_exact(env, "after the upgrade")?;
    }
    Ok(())
}

/// A small receive buffer and a burst of 20k route adds: the kernel drops
/// notifications (ENOBUFS), popd dumps again and ends equal to the table.
fn enobufs_resync(env: &mut Env) -> Result<()> {
    env.popd.kill()?;
    env.popd.set_extra_args(&["--kernel-routes-rcvbuf", "4096"]);
    env.popd.start()?;
    wait_exact(env, "after the restart with a small buffer")?;
    env.popd.wait_resolved(Duration::from_secs(10))?;
    let before = metric(env, "pop_kernel_routes_resyncs_total", &[])?;
    // A flow by a learned route across the burst and the re-sync: the dump
    // replaces the table without taking any entry out of the maps.
    let ping = start_ping(&env.lab, INTERNET_V4, PING_INTERVAL_S, 100_000)?;
    let resync = (|| -> Result<()> {
        ip_batch(
            &env.lab,
            &batch_v4("add", u32::from(Ipv4Addr::new(32, 0, 0, 0)), 20_000),
        )?;
        wait_for("a re-sync", || {
            Ok(metric(env, "pop_kernel_routes_resyncs_total", &[])? > before)
        })?;
        wait_exact(env, "after the burst")
    })();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(ping.id() as i32, libc::SIGINT) };
    let stats = finish_ping(ping, PING_TIMEOUT)?;
    resync?;
    eprintln!("  ping across the burst and the re-sync: {stats}");
    ensure!(
        stats.transmitted >= 10 && stats.lost() == 0,
        "packets lost across the re-sync: {stats}"
    );
    env.lab.exec_ok(
        EDGE,
        &[
            "ip",
            "route",
            "add",
            "blackhole",
            "33.0.0.0/24",
            "table",
            &KERNEL_TABLE.to_string(),
        ],
    )?;
    wait_exact(env, "following again after the re-sync")?;
    ping_ok(env, INTERNET_V4)
}

/// popd down: 1k routes withdrawn, 1k new; after the restart the maps equal
/// the kernel table plus the config exactly.
fn changes_while_down(env: &mut Env) -> Result<()> {
    env.popd.kill()?;
    env.popd.set_extra_args(&[]);
    let mut lines = batch_v4("del", u32::from(Ipv4Addr::new(32, 0, 0, 0)), 1000);
    lines.push_str(&batch_v4(
        "add",
        u32::from(Ipv4Addr::new(34, 0, 0, 0)),
        1000,
    ));
    ip_batch(&env.lab, &lines)?;
    let ping = start_ping(&env.lab, INTERNET_V4, PING_INTERVAL_S, 100)?;
    env.popd.start()?;
    wait_exact(env, "after the restart")?;
    let stats = finish_ping(ping, PING_TIMEOUT)?;
    ensure!(stats.lost() == 0, "ping across the restart: {stats}");
    ensure!(
        !map_routes(&env.lab)?.contains_key("32.0.0.0/24"),
        "a route withdrawn while popd was down is still in the maps"
    );
    Ok(())
}

fn wait_within(what: &str, timeout: Duration, ok: impl FnMut() -> Result<bool>) -> Result<()> {
    wait::until(what, timeout, Duration::from_millis(250), ok)
}

/// 100 more learned IPv6 routes than `routes_v6` holds: they are counted and
/// logged, not installed; a configured route added then still goes in (a
/// learned one makes room) and is removed cleanly; when the kernel routes go,
/// nothing is left over.
fn overflow_never_blocks_configured(env: &mut Env) -> Result<()> {
    let cap = pop_common::MAX_ROUTES_V6 as usize;
    let have = metric(
        env,
        "pop_routes",
        &[("family", "ipv6"), ("source", "kernel")],
    )? + metric(
        env,
        "pop_routes",
        &[("family", "ipv6"), ("source", "config")],
    )?;
    let n = (cap - have as usize + 100) as u32;
    let not_installed = |env: &Env| {
        metric(
            env,
            "pop_kernel_routes_not_installed",
            &[("family", "ipv6")],
        )
    };
    let overflow_before = metric(env, "pop_kernel_routes_overflow_total", &[])?;
    ip_batch(&env.lab, &batch_v6("add", n))?;
    let result = (|| -> Result<()> {
        wait_within(
            "100 learned IPv6 routes beyond the map's capacity",
            Duration::from_secs(180),
            || Ok(not_installed(env)? == 100.0),
        )?;
        ensure!(
            metric(env, "pop_kernel_routes_overflow_total", &[])? > overflow_before,
            "pop_kernel_routes_overflow_total did not grow"
        );
        let log = std::fs::read_to_string(env.popd.log_path())?;
        ensure!(
            log.lines()
                .any(|l| l.contains("routes_v6") && l.contains("is full")),
            "no log line says routes_v6 is full"
        );
        let t = Instant::now();
        env.popd.popctl_ok(&[
            "route",
            "add",
            "2001:db8:eeee::/48",
            "via",
            "2001:db8:ffff::1",
            "dev",
            "eth0",
        ])?;
        eprintln!(
            "  route add with routes_v6 full of learned routes: {:?}",
            t.elapsed()
        );
        let get = route_get(env, "2001:db8:eeee::1")?;
        ensure!(get["source"] == "config", "route get: {get}");
        ensure!(
            map_routes(&env.lab)?.contains_key("2001:db8:eeee::/48"),
            "the configured route is not in the map"
        );
        ensure!(
            not_installed(env)? == 101.0,
            "a learned route should have made room: {} not installed",
            not_installed(env)?
        );
        env.popd
            .popctl_ok(&["route", "del", "2001:db8:eeee::/48"])?;
        wait_for("the learned route back in the freed room", || {
            Ok(not_installed(env)? == 100.0)
        })
    })();
    ip_batch(&env.lab, &batch_v6("del", n))?;
    result?;
    wait_within(
        "every learned route installed again",
        Duration::from_secs(180),
        || Ok(not_installed(env)? == 0.0),
    )?;
    wait_exact(env, "after the overflow")
}

/// popd's peak memory (VmHWM) with a full table learned from bird2: 1M IPv4 and
/// 200k IPv6 prefixes; then after a restart that re-learns it over the pinned
/// maps. Minutes long: run by hand with `-- --ignored --nocapture`.
#[test]
#[ignore]
fn full_table_memory() {
    let run = || -> Result<()> {
        let mut env = LabEnv::with_config("ptfull-", &bgp::popd_config(), |_| Ok(()))?;
        let started = Instant::now();
        let b = Bgp::start(
            &env.lab,
            Table {
                v4: 1_000_000,
                v6: 200_000,
                churn_v4: 0,
            },
        )?;
        let (a4, a6) = b.announced();
        b.wait_kernel_routes(a4, a6, Duration::from_secs(600))?;
        eprintln!(
            "bird: kernel table holds {a4} + {a6} routes after {:?}",
            started.elapsed()
        );
        env.bgp = Some(b);
        for round in ["first start", "restart over the pinned maps"] {
            if round != "first start" {
                env.popd.kill()?;
            }
            let t = Instant::now();
            env.popd.start_within(Duration::from_secs(300))?;
            let ready = t.elapsed();
            wait_for_count(&env, a4, a6)?;
            let pid = env.popd.pid().context("pid")?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
            let hwm = status
                .lines()
                .find(|l| l.starts_with("VmHWM"))
                .unwrap_or("VmHWM ?");
            eprintln!(
                "{round}: API up after {ready:?}, maps full after {:?}; popd {hwm}",
                t.elapsed()
            );
        }
        Ok(())
    };
    if let Err(e) = run() {
        panic!("{e:#}");
    }
}

fn wait_for_count(env: &Env, v4: usize, v6: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let ok = env.popd.metrics().ok().is_some_and(|m| {
            metric_value(&m, "pop_kernel_routes_synced", &[]) == Some(1.0)
                && metric_value(
                    &m,
                    "pop_routes",
                    &[("family", "ipv4"), ("source", "kernel")],
                ) == Some(v4 as f64)
                && metric_value(
                    &m,
                    "pop_routes",
                    &[("family", "ipv6"), ("source", "kernel")],
                ) == Some(v6 as f64)
        });
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("popd did not learn {v4} + {v6} routes");
        }
        thread::sleep(Duration::from_millis(500));
    }
}
