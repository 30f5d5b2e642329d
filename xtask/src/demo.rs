//! `cargo xtask demo`: a virtual PoP, configured with popctl, forwarding real traffic.
use std::{
    collections::BTreeMap,
    path::Path,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use pop_lab::{
    popd::customer_stats,
    topology::{self, C1, C2, UP},
    Lab, PingStats, Popd,
};

use crate::{
    lab::{stop_popd, PREFIX, STATE_DIR},
    prereqs::{self, Needs},
    workspace::{self, step},
};

/// Echo requests per ping run.
const PING_COUNT: u32 = 10;
/// Seconds between echo requests.
const PING_INTERVAL_S: f64 = 0.2;
/// Seconds of each iperf3 run.
const IPERF_SECONDS: &str = "3";
/// Rate of the UDP iperf3 run.
const UDP_RATE: &str = "20M";

/// Runs the demo; the lab is torn down whatever happens.
pub fn run() -> Result<()> {
    prereqs::ensure_prereqs("demo", Needs::Lab)?;
    workspace::build(false)?;
    let lab = Lab::new(PREFIX);
    stop_popd(&lab);
    let mut demo = Demo {
        lab,
        popd: None,
        iperf_server: None,
        bgp: None,
    };
    let result = demo.run();
    if let Err(e) = &result {
        eprintln!("\ndemo failed: {e:#}");
        if let Some(popd) = &demo.popd {
            eprintln!(
                "popd log ({}) ends with:\n{}",
                popd.log_path().display(),
                popd.log_tail(20)
            );
        }
    }
    let teardown = demo.teardown();
    result?;
    teardown?;
    println!("\ndemo finished: pop forwarded IPv4 and IPv6, ICMP, TCP and UDP with kernel forwarding off");
    Ok(())
}

/// What the demo started; [`Demo::teardown`] (also run on drop) removes it all.
struct Demo {
    lab: Lab,
    popd: Option<Popd>,
    iperf_server: Option<Child>,
    bgp: Option<pop_lab::bgp::Bgp>,
}

impl Demo {
    fn run(&mut self) -> Result<()> {
        step(&format!("creating the lab: {PREFIX}up (transit), {PREFIX}edge (popd), {PREFIX}c1 and {PREFIX}c2 (customers)"));
        self.lab.up()?;
        workspace::attach_host_xdp(&self.lab)?;
        let (v4, v6) = self.lab.edge_forwarding()?;
        println!("kernel forwarding on the edge: ipv4 {v4}, ipv6 {v6} (off: only XDP forwards)");

        step("starting popd in the edge namespace (config: [dataplane] and interfaces only)");
        let state_dir = Path::new(STATE_DIR);
        let _ = std::fs::remove_dir_all(state_dir);
        let mut popd = Popd::new(
            &self.lab,
            &workspace::debug_bin_dir(),
            state_dir,
            &topology::base_config(),
        )?;
        println!(
            "{}:\n{}",
            popd.config_path().display(),
            topology::base_config().trim_end()
        );
        println!("$ {}", pop_lab::cmd::describe(&popd.command()));
        popd.start()?;
        let popd = self.popd.insert(popd);

        step("pushing routes and customers with popctl");
        for args in topology::POP_ROUTES
            .iter()
            .map(|r| r.popctl_add())
            .chain(topology::POP_CUSTOMERS.iter().map(|c| c.popctl_add()))
        {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            println!("$ popctl {}", args.join(" "));
            print!("{}", popd.popctl_ok(&args)?);
        }
        for args in [["status"].as_slice(), &["route", "show"]] {
            println!("\n$ popctl {}", args.join(" "));
            print!("{}", popd.popctl_ok(args)?);
        }
        wait_resolved(popd);

        step(&format!(
            "ping: {PING_COUNT} echo requests each, {PING_INTERVAL_S} s apart"
        ));
        let mut sent: BTreeMap<&str, PingStats> = BTreeMap::new();
        let pings = [
            (C1, topology::INTERNET_V4),
            (C1, topology::INTERNET_V6),
            (C2, topology::INTERNET_V4),
            (C2, topology::INTERNET_V6),
            (C1, topology::C2_V4),
            (C1, topology::C2_V6),
        ];
        for (node, dst) in pings {
            let stats = self.lab.ping(node, dst, PING_COUNT, PING_INTERVAL_S)?;
            println!("{node} -> {dst:<20} {stats}");
            if stats.received == 0 {
                bail!("no reply from {dst} to {node}: pop is not forwarding");
            }
            let customer = customer_of(node);
            let total = sent.entry(customer).or_default();
            total.transmitted += stats.transmitted;
            total.received += stats.received;
        }

        step("traceroute: pop answers TTL 1 itself (ICMP Time Exceeded built in XDP)");
        let argv = [
            "traceroute",
            "-n",
            "-q",
            "1",
            "-w",
            "2",
            "-m",
            "4",
            topology::INTERNET_V4,
        ];
        println!("$ {}", argv.join(" "));
        let out = self.lab.exec_ok(C1, &argv)?;
        print!("{out}");
        let first_hop = out.lines().find(|l| l.trim_start().starts_with("1 "));
        if first_hop.is_none_or(|l| l.contains('*')) {
            bail!("traceroute from {C1}: no answer from the edge for TTL 1");
        }

        step(&format!(
            "TCP and UDP with iperf3 (server in {PREFIX}up on {})",
            topology::INTERNET_V4
        ));
        let mut server = self
            .lab
            .command(UP, &["iperf3", "-s", "-B", topology::INTERNET_V4]);
        server
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.iperf_server = Some(server.spawn().context("cannot start the iperf3 server")?);
        println!(
            "TCP, c1 -> {} for {IPERF_SECONDS} s:",
            topology::INTERNET_V4
        );
        self.iperf(C1, &["-t", IPERF_SECONDS])?;
        println!(
            "UDP at {UDP_RATE}bit/s, c2 -> {} for {IPERF_SECONDS} s:",
            topology::INTERNET_V4
        );
        self.iperf(C2, &["-u", "-b", UDP_RATE, "-t", IPERF_SECONDS])?;

        let popd = self.popd.as_ref().expect("started above");
        step("per-customer counters");
        println!("$ popctl stats");
        print!("{}", popd.popctl_ok(&["stats"])?);
        let stats = popd.popctl_json(&["stats"])?;
        for customer in topology::POP_CUSTOMERS {
            let ping = sent.get(customer.name).copied().unwrap_or_default();
            let counters = customer_stats(&stats, customer.name).with_context(|| {
                format!(
                    "customer {} missing from `popctl -j stats`: {stats}",
                    customer.name
                )
            })?;
            let out = counters["packets_out"].as_u64().unwrap_or(0);
            let inn = counters["packets_in"].as_u64().unwrap_or(0);
            if out < ping.transmitted || inn < ping.received {
                bail!(
                    "{}: counters too low: packets out {out} < {} ping requests sent, or packets in {inn} < {} replies received",
                    customer.name,
                    ping.transmitted,
                    ping.received
                );
            }
            println!(
                "{}: packets out {out} >= {} ping requests sent, packets in {inn} >= {} ping replies received: OK",
                customer.name, ping.transmitted, ping.received
            );
        }

        step("an ACL rule, and popctl trace asking the data plane about two packets");
        let acl = [
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
        ];
        println!("$ popctl {}", acl.join(" "));
        print!("{}", popd.popctl_ok(&acl)?);
        println!("$ popctl acl show");
        print!("{}", popd.popctl_ok(&["acl", "show"])?);
        for (port, want) in [("22", "drop"), ("443", "redirect")] {
            let args = [
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
                port,
            ];
            println!("\n$ popctl {}", args.join(" "));
            print!("{}", popd.popctl_ok(&args)?);
            let traced = popd.popctl_json(&args)?;
            if traced["action"] != want {
                bail!("popctl trace of TCP/{port} to acme: {traced}, expected {want}");
            }
        }

        self.learned_route()?;

        step(&format!(
            "metrics (curl http://{}/metrics in {PREFIX}edge), pop_ lines",
            topology::METRICS_ADDR
        ));
        let scrape = self.popd.as_ref().context("popd")?.metrics()?;
        for line in scrape.lines().filter(|l| l.starts_with("pop_")) {
            println!("{line}");
        }
        Ok(())
    }

    /// bird2 on the upstream announces the "internet" prefix over eBGP, bird2
    /// on the edge puts it into kernel table 100, popd learns it from there;
    /// with the configured default route gone, pings still reach the upstream.
    fn learned_route(&mut self) -> Result<()> {
        use pop_lab::bgp::{Bgp, Table, INTERNET4_PREFIX, KERNEL_TABLE};
        step(&format!(
            "a learned route: bird2 in {PREFIX}up announces {INTERNET4_PREFIX} and 100 more \
             prefixes over eBGP, bird2 in {PREFIX}edge exports them into kernel table \
             {KERNEL_TABLE}, popd follows that table"
        ));
        let bgp = self.bgp.insert(Bgp::start(
            &self.lab,
            Table {
                v4: 100,
                v6: 20,
                churn_v4: 0,
            },
        )?);
        let (v4, v6) = bgp.announced();
        bgp.wait_kernel_routes(v4, v6, Duration::from_secs(60))?;
        let popd = self.popd.as_ref().context("popd")?;
        let mut config = popd.popctl_json(&["export"])?["config"]
            .as_str()
            .context("export")?
            .to_string();
        config.push_str(&format!("\n[kernel_routes]\ntable = {KERNEL_TABLE}\n"));
        let file = Path::new(STATE_DIR).join("with-kernel-routes.toml");
        std::fs::write(&file, &config)?;
        let file = file.to_string_lossy();
        for args in [
            vec!["apply", file.as_ref()],
            vec!["route", "del", "0.0.0.0/0"],
        ] {
            println!("$ popctl {}", args.join(" "));
            print!("{}", popd.popctl_ok(&args)?);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        // Until the follower has the route, `route get` finds none (exit 1).
        while !popd
            .popctl_json(&["route", "get", topology::INTERNET_V4])
            .is_ok_and(|r| r["source"] == "kernel")
        {
            if Instant::now() >= deadline {
                bail!("popd did not learn {INTERNET4_PREFIX} from kernel table {KERNEL_TABLE}");
            }
            thread::sleep(Duration::from_millis(200));
        }
        wait_resolved(popd);
        println!("$ popctl route get {}", topology::INTERNET_V4);
        print!(
            "{}",
            popd.popctl_ok(&["route", "get", topology::INTERNET_V4])?
        );
        let stats = self
            .lab
            .ping(C1, topology::INTERNET_V4, PING_COUNT, PING_INTERVAL_S)?;
        println!(
            "{C1} -> {:<20} {stats} (by the learned route)",
            topology::INTERNET_V4
        );
        if stats.received == 0 {
            bail!("no reply by the learned route {INTERNET4_PREFIX}");
        }
        Ok(())
    }

    /// Runs an iperf3 client from `node` to the upstream and prints its summary.
    fn iperf(&self, node: &str, extra: &[&str]) -> Result<()> {
        let mut argv = vec!["iperf3", "-c", topology::INTERNET_V4, "-f", "m"];
        argv.extend_from_slice(extra);
        // The server may need a moment to listen.
        let deadline = Instant::now() + Duration::from_secs(5);
        let out = loop {
            let out = self.lab.exec(node, &argv)?;
            if out.status.success() || Instant::now() >= deadline {
                break out;
            }
            thread::sleep(Duration::from_millis(200));
        };
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "iperf3 from {node} failed: {}{}",
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        for line in text
            .lines()
            .filter(|l| l.contains("sender") || l.contains("receiver"))
        {
            println!("  {line}");
        }
        Ok(())
    }

    /// Stops popd with `popctl shutdown --detach` and removes the lab.
    fn teardown(&mut self) -> Result<()> {
        step("stopping popd (popctl shutdown --detach) and tearing down the lab");
        if let Some(mut server) = self.iperf_server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        self.bgp = None;
        let mut result = Ok(());
        if let Some(mut popd) = self.popd.take() {
            if popd.is_running() {
                println!("$ popctl shutdown --detach");
                result = popd.shutdown_detach();
            }
        }
        self.lab.down()?;
        let _ = std::fs::remove_dir_all(STATE_DIR);
        println!("lab is down");
        result
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.popd.is_some() || self.iperf_server.is_some() {
            if let Err(e) = self.teardown() {
                eprintln!("teardown: {e:#}");
            }
        }
    }
}

fn customer_of(node: &str) -> &'static str {
    topology::POP_CUSTOMERS
        .iter()
        .find(|c| c.node == node)
        .map_or("?", |c| c.name)
}

/// Waits (up to 10 s) until popd reports every next hop resolved, so the first
/// pings are not punted to the kernel, which does not forward here.
fn wait_resolved(popd: &Popd) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let states = popd
            .popctl_json(&["route", "show"])
            .map(|v| nexthop_states(&v));
        match states {
            Ok(states) if !states.is_empty() && states.iter().all(|s| s == "resolved") => {
                println!("\nall {} next hops resolved", states.len());
                return;
            }
            _ if Instant::now() >= deadline => {
                println!("\nwarning: not every next hop is resolved after 10 s; pinging anyway");
                return;
            }
            _ => thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Every `state` of every object in a `nexthops` array of `popctl -j route show`.
fn nexthop_states(value: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                if key == "nexthops" {
                    for nh in v.as_array().into_iter().flatten() {
                        out.push(nh["state"].as_str().unwrap_or("").to_string());
                    }
                } else {
                    out.extend(nexthop_states(v));
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| out.extend(nexthop_states(v))),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_nexthop_states_from_route_show() {
        let routes: serde_json::Value = serde_json::from_str(
            r#"[{"prefix":"0.0.0.0/0","dev":"eth0","nexthops":[{"via":"192.0.2.1","state":"resolved"}]},
                {"prefix":"::/0","dev":"eth0","nexthops":[{"via":"2001:db8:ffff::1","state":"unresolved"}]}]"#,
        )
        .unwrap();
        assert_eq!(nexthop_states(&routes), ["resolved", "unresolved"]);
    }

    #[test]
    fn customers_map_to_their_hosts() {
        assert_eq!(customer_of(C1), "acme");
        assert_eq!(customer_of(C2), "globex");
    }
}
