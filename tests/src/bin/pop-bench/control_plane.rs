//! Control-plane benchmarks, through the user's path (popctl → popd → maps):
//! route table load, popd's peak RSS, route change → first forwarded packet,
//! /metrics scrape time with many customers, ACL swap time.
use std::fmt::Write as _;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use pop_lab::popd::Popd;
use pop_lab::{topology, Lab};

use crate::report::{median, ControlPlane};
use crate::Opts;
use pop_tests::rng::Rng;

/// Lab config without a default route, so 100.65.0.0/16 has no route until added.
pub fn config(
    extra_routes: &[(String, &str)],
    customers: usize,
    acls: usize,
    acl_seed: u64,
) -> String {
    let mut s = topology::base_config();
    let mut cust = 0;
    for c in topology::POP_CUSTOMERS {
        let _ = write!(
            s,
            "\n[[customers]]\nname = \"{}\"\nprefixes = [\"{}\", \"{}\"]\ninterfaces = [\"{}\"]\n",
            c.name, c.prefixes[0], c.prefixes[1], c.iface
        );
        cust += 1;
    }
    let mut i = 0u32;
    while cust < customers {
        let _ = write!(s, "\n[[customers]]\nname = \"c{i}\"\nprefixes = [\"10.{}.{}.0/24\"]\ninterfaces = [\"eth1\"]\n", i / 256, i % 256);
        i += 1;
        cust += 1;
    }
    for r in topology::POP_ROUTES
        .iter()
        .filter(|r| !r.prefix.ends_with("/0"))
    {
        let _ = write!(
            s,
            "\n[[routes]]\nprefix = \"{}\"\nvia = [\"{}\"]\ndev = \"{}\"\n",
            r.prefix, r.via, r.dev
        );
    }
    s += "\n[[routes]]\nprefix = \"100.64.0.0/24\"\nvia = [\"192.0.2.1\"]\ndev = \"eth0\"\n";
    for (p, via) in extra_routes {
        let _ = write!(
            s,
            "\n[[routes]]\nprefix = \"{p}\"\nvia = [\"{via}\"]\ndev = \"eth0\"\n"
        );
    }
    let mut rng = Rng(acl_seed | 1);
    for k in 0..acls {
        let src = rng.next() as u32 & 0xffff_ff00;
        let _ = write!(
            s,
            "\n[[acls]]\npriority = {}\naction = \"drop\"\nsrc = \"{}.{}.{}.0/24\"\nproto = \"tcp\"\ndst_port = \"{}\"\n",
            k + 1,
            10,
            (src >> 16) & 0xff,
            (src >> 8) & 0xff,
            1 + (rng.next() % 65000)
        );
    }
    s
}

/// `acl_100k_swap_s` and `acl_add_100k_ms` (10k rules with `--quick`).
fn acl_changes(o: &Opts, popd: &Popd, cp: &mut ControlPlane) -> Result<()> {
    if !pop_common::maps::ALL.iter().any(|m| m.starts_with("acl")) {
        return Ok(());
    }
    let rules = if o.quick { 10_000 } else { 100_000 };
    apply_file(o, popd, &config(&[], 0, rules, 1))?;
    let took = apply_file(o, popd, &config(&[], 0, rules, 2))?;
    cp.acl_100k_swap_s = Some(took.as_secs_f64());
    // Priorities above every rule loaded: the new rule goes last.
    let first = rules + 10;
    cp.acl_add_100k_ms = Some(timed_changes(o, popd, |k| {
        let priority = (first + k).to_string();
        (
            vec![
                "acl".into(),
                "add".into(),
                priority.clone(),
                "--action".into(),
                "drop".into(),
                "--src".into(),
                format!("198.18.{k}.0/24"),
            ],
            vec!["acl".into(), "del".into(), priority],
        )
    })?);
    // A rule in the middle of the priority order deleted (timed), then one
    // added in its place: deletions can bring hidden rules back.
    cp.acl_del_100k_middle_ms = Some(timed_changes(o, popd, |k| {
        let priority = (rules / 2 + k).to_string();
        (
            vec!["acl".into(), "del".into(), priority.clone()],
            vec![
                "acl".into(),
                "add".into(),
                priority,
                "--action".into(),
                "drop".into(),
                "--src".into(),
                format!("10.{k}.1.0/24"),
                "--proto".into(),
                "tcp".into(),
                "--dport".into(),
                "443".into(),
            ],
        )
    })?);
    eprintln!(
        "  ACL: apply of {rules} rules {:.2} s; acl add on top {:.1} ms, acl del in the middle {:.1} ms",
        took.as_secs_f64(),
        cp.acl_add_100k_ms.unwrap_or_default(),
        cp.acl_del_100k_middle_ms.unwrap_or_default()
    );
    Ok(())
}

fn random_routes(n: u64) -> Vec<(String, &'static str)> {
    let mut rng = Rng(0xc0ffee | 1);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n as usize);
    while (out.len() as u64) < n {
        let a = rng.next() as u32 & 0xffff_ff00;
        let first = a >> 24;
        if !(1..=99).contains(&first) && !(128..=191).contains(&first) || first == 10 {
            continue;
        }
        if seen.insert(a) {
            out.push((
                format!("{}.{}.{}.0/24", a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff),
                "192.0.2.1",
            ));
        }
    }
    out
}

/// `popctl ARGS` with no timeout (a 1M-route apply takes a while).
fn popctl(o: &Opts, popd: &Popd, args: &[&str]) -> Result<()> {
    let out = Command::new(o.bin_dir.join("popctl"))
        .arg("--socket")
        .arg(popd.socket())
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "popctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn apply_file(o: &Opts, popd: &Popd, text: &str) -> Result<Duration> {
    let path = popd.state_dir().join("bench-apply.toml");
    std::fs::write(&path, text)?;
    let t = Instant::now();
    popctl(o, popd, &["apply", &path.to_string_lossy()])?;
    Ok(t.elapsed())
}

/// popd's peak RSS (VmHWM) in MB.
pub fn peak_rss_mb(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))?;
    Ok(kb / 1024.0)
}

/// popd's peak and current memory, by kind (anonymous, file and shared
/// pages: mapped BPF arrays count as the latter).
fn memory_line(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .filter(|l| {
            ["VmHWM:", "VmRSS:", "RssAnon:", "RssFile:", "RssShmem:"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// CPU seconds `pid` has used (user and system): a measure of the work
/// done that a busy machine stretches less than the elapsed time.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime
    // are the 12th and 13th, in clock ticks.
    let after = stat.rsplit_once(") ").map_or("", |(_, a)| a);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let ticks = 100.0; // USER_HZ on Linux
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / ticks
}

/// popd's pid: the nsenter child execs popd, so it is the child's pid.
fn popd_pid(popd: &Popd) -> Result<u32> {
    popd.pid().ok_or_else(|| anyhow!("popd pid unknown"))
}

fn route_change_ms(o: &Opts, lab: &Lab, popd: &Popd) -> Result<f64> {
    lab.exec_ok("up", &["ip", "addr", "add", "100.65.0.1/32", "dev", "lo"])?;
    let ping = lab.spawn(
        "c1",
        &[
            "ping",
            "-D",
            "-n",
            "-i",
            "0.001",
            "-W",
            "1",
            "-c",
            "2500",
            "100.65.0.1",
        ],
    )?;
    thread::sleep(Duration::from_millis(400));
    // From issuing the command: popd writes the maps before it persists the
    // state and answers, so the first packet may pass before popctl returns.
    let issued = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    popctl(
        o,
        popd,
        &[
            "route",
            "add",
            "100.65.0.0/16",
            "via",
            "192.0.2.1",
            "dev",
            "eth0",
        ],
    )?;
    let out = ping.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text
        .lines()
        .filter(|l| l.contains("bytes from"))
        .find_map(|l| l.strip_prefix('[')?.split(']').next()?.parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no reply from 100.65.0.1 after the route was added"))?;
    Ok((first - issued) * 1000.0)
}

fn scrape_ms(lab: &Lab) -> Result<f64> {
    let mut v = Vec::new();
    for _ in 0..5 {
        let out = lab.exec_ok(
            "edge",
            &[
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{time_total}",
                &format!("http://{}/metrics", topology::METRICS_ADDR),
            ],
        )?;
        v.push(out.trim().parse::<f64>().context("curl time_total")? * 1000.0);
    }
    Ok(median(&v))
}

/// `popctl route add` times on top of a loaded table.
struct RouteAdds {
    /// Median over several /24s, each a new prefix, deleted after.
    slash24_ms: f64,
    /// One /8.
    slash8_ms: f64,
    /// The default route.
    default_ms: f64,
}

/// ms for `popctl route add PREFIX` until it returns (the route is deleted
/// after, untimed). The prefixes are outside those `random_routes` draws
/// (first octets 1-99 and 128-191) and the lab's.
fn timed_route_add(o: &Opts, popd: &Popd, prefix: &str) -> Result<f64> {
    let t = Instant::now();
    popctl(
        o,
        popd,
        &["route", "add", prefix, "via", "192.0.2.1", "dev", "eth0"],
    )?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    popctl(o, popd, &["route", "del", prefix])?;
    Ok(ms)
}

/// Median ms of a few single changes, each issued until popctl returns and
/// undone after: `change(k)` gives the k-th change's popctl arguments and
/// those of its undo.
fn timed_changes(
    o: &Opts,
    popd: &Popd,
    change: impl Fn(usize) -> (Vec<String>, Vec<String>),
) -> Result<f64> {
    let rounds = if o.quick { 3 } else { 7 };
    let mut ms = Vec::new();
    for k in 0..rounds {
        let (add, undo) = change(k);
        let add: Vec<&str> = add.iter().map(String::as_str).collect();
        let undo: Vec<&str> = undo.iter().map(String::as_str).collect();
        let t = Instant::now();
        popctl(o, popd, &add)?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        popctl(o, popd, &undo)?;
    }
    Ok(median(&ms))
}

fn route_adds_on_top(o: &Opts, popd: &Popd) -> Result<RouteAdds> {
    let rounds = if o.quick { 3 } else { 7 };
    let slash24: Vec<f64> = (0..rounds)
        .map(|k| timed_route_add(o, popd, &format!("100.66.{k}.0/24")))
        .collect::<Result<_>>()?;
    Ok(RouteAdds {
        slash24_ms: median(&slash24),
        slash8_ms: timed_route_add(o, popd, "200.0.0.0/8")?,
        default_ms: timed_route_add(o, popd, "0.0.0.0/0")?,
    })
}

/// The floor for a durable change: ms to append ~100 bytes to a file in
/// `dir` (the state dir, so the same filesystem) and fdatasync it, median of
/// 20.
fn append_fsync_ms(dir: &std::path::Path) -> Result<f64> {
    use std::io::Write as _;
    let path = dir.join("bench-append-fsync");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let record = [b'x'; 100];
    let mut v = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        f.write_all(&record)?;
        f.sync_data()?;
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(median(&v))
}

/// Loads 10k customers (1k with `--quick`), then `metrics_10k_customers_ms`
/// and `customer_add_10k_ms`.
pub fn customer_changes(o: &Opts, lab: &Lab, popd: &Popd, cp: &mut ControlPlane) -> Result<()> {
    let customers = if o.quick { 1_000 } else { 10_000 };
    apply_file(o, popd, &config(&[], customers, 0, 1))?;
    cp.metrics_10k_customers_ms = Some(scrape_ms(lab)?);
    cp.customers_loaded = customers as u64;
    cp.customer_add_10k_ms = Some(timed_changes(o, popd, |k| {
        (
            vec![
                "customer".into(),
                "add".into(),
                format!("bench{k}"),
                "--prefix".into(),
                format!("172.20.{k}.0/24"),
                "--iface".into(),
                "eth1".into(),
            ],
            vec!["customer".into(), "del".into(), format!("bench{k}")],
        )
    })?);
    Ok(())
}

/// `POP_BENCH_ACL_ONLY=1` with `POP_BENCH_BIN_B=DIR`: the ACL keys for this
/// build (A) and the popd and popctl in DIR (B), alternating A, B, A, B in
/// one lab, each from a fresh state; prints each pass, each build's medians
/// and the ratios; returns A's medians.
fn acl_a_b(o: &Opts, lab: &Lab, b: std::path::PathBuf) -> Result<ControlPlane> {
    let builds = [("A", o.bin_dir.clone()), ("B", b)];
    // (swap s, add ms, del ms) per build and pass.
    let mut got: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); 2];
    for pass in 0..2 {
        for (i, (label, dir)) in builds.iter().enumerate() {
            let state = tempfile::tempdir()?;
            let mut popd = Popd::new(lab, dir, state.path(), &config(&[], 0, 0, 1))?;
            popd.start()?;
            thread::sleep(Duration::from_millis(500));
            let mut cp = ControlPlane::default();
            let ob = Opts {
                quick: o.quick,
                json: None,
                plots: None,
                bin_dir: dir.clone(),
                parts: Vec::new(),
            };
            let r = acl_changes(&ob, &popd, &mut cp);
            let _ = popd.shutdown_detach();
            r?;
            let g = (
                cp.acl_100k_swap_s.unwrap_or_default(),
                cp.acl_add_100k_ms.unwrap_or_default(),
                cp.acl_del_100k_middle_ms.unwrap_or_default(),
            );
            eprintln!(
                "  pass {pass} build {label} ({}): swap {:.2} s, acl add {:.2} ms, acl del {:.2} ms",
                dir.display(),
                g.0,
                g.1,
                g.2
            );
            got[i].push(g);
        }
    }
    let m = |i: usize, f: fn(&(f64, f64, f64)) -> f64| {
        median(&got[i].iter().map(f).collect::<Vec<_>>())
    };
    for (i, (label, _)) in builds.iter().enumerate() {
        eprintln!(
            "  build {label}: acl_100k_swap_s {:.2}, acl_add_100k_ms {:.2}, acl_del_100k_middle_ms {:.2}",
            m(i, |g| g.0),
            m(i, |g| g.1),
            m(i, |g| g.2)
        );
    }
    eprintln!(
        "  A/B: swap {:.2}x, acl add {:.2}x, acl del {:.2}x",
        m(0, |g| g.0) / m(1, |g| g.0),
        m(0, |g| g.1) / m(1, |g| g.1),
        m(0, |g| g.2) / m(1, |g| g.2)
    );
    Ok(ControlPlane {
        acl_100k_swap_s: Some(m(0, |g| g.0)),
        acl_add_100k_ms: Some(m(0, |g| g.1)),
        acl_del_100k_middle_ms: Some(m(0, |g| g.2)),
        ..Default::default()
    })
}

/// Runs the control-plane measurements in their own lab.
pub fn run(o: &Opts) -> Result<ControlPlane> {
    let lab = Lab::new("pbcp-");
    lab.up().context("lab up")?;
    let r = run_in_lab(o, &lab);
    let _ = lab.down();
    r
}

fn run_in_lab(o: &Opts, lab: &Lab) -> Result<ControlPlane> {
    if std::env::var_os("POP_BENCH_ACL_ONLY").is_some() {
        if let Some(b) = std::env::var_os("POP_BENCH_BIN_B") {
            return acl_a_b(o, lab, std::path::PathBuf::from(b));
        }
    }
    let state = tempfile::tempdir()?;
    let mut popd = Popd::new(lab, &o.bin_dir, state.path(), &config(&[], 0, 0, 1))?;
    popd.start()?;
    let mut cp = ControlPlane::default();
    let result = (|| -> Result<()> {
        thread::sleep(Duration::from_millis(500));
        if std::env::var_os("POP_BENCH_ACL_ONLY").is_some() {
            // Only the ACL keys (a quick A/B while working on the ACL path).
            return acl_changes(o, &popd, &mut cp);
        }
        cp.route_change_ms = Some(route_change_ms(o, lab, &popd)?);
        eprintln!(
            "  route change: {:.2} ms",
            cp.route_change_ms.unwrap_or_default()
        );

        let n = if o.quick { 100_000 } else { 1_000_000 };
        let routes = random_routes(n);
        let text = config(&routes, 0, 0, 1);
        drop(routes);
        let cpu_before = cpu_s(popd_pid(&popd)?);
        let took = apply_file(o, &popd, &text)?;
        let cpu = cpu_s(popd_pid(&popd)?) - cpu_before;
        cp.routes_1m_load_s = Some(took.as_secs_f64());
        cp.routes_loaded = n;
        cp.popd_rss_mb_1m_routes = Some(peak_rss_mb(popd_pid(&popd)?)?);
        eprintln!(
            "  {n} routes: {:.2} s (popd CPU time: {cpu:.2} s)",
            took.as_secs_f64()
        );
        eprintln!("  popd memory after it: {}", memory_line(popd_pid(&popd)?));
        if let Ok(log) = std::fs::read_to_string(popd.log_path()) {
            if let Some(l) = log.lines().rev().find(|l| l.contains("config applied")) {
                eprintln!("  popd: {l}");
            }
        }
        if std::env::var_os("POP_BENCH_APPLY_ONLY").is_some() {
            // Only the route load and the peak RSS (a quick measurement
            // while working on the apply path).
            return Ok(());
        }
        // Single changes on top of them, and the floor they are measured
        // against: what one durable append costs on the state dir's
        // filesystem.
        let add = route_adds_on_top(o, &popd)?;
        cp.route_add_1m_ms = Some(add.slash24_ms);
        cp.route_add_1m_slash8_ms = Some(add.slash8_ms);
        cp.route_add_1m_default_ms = Some(add.default_ms);
        cp.append_fsync_ms = Some(append_fsync_ms(popd.state_dir())?);
        eprintln!(
            "  popctl route add with {n} routes loaded: /24 {:.1} ms, /8 {:.1} ms, 0/0 {:.1} ms \
             (append + fdatasync: {:.2} ms)",
            add.slash24_ms,
            add.slash8_ms,
            add.default_ms,
            cp.append_fsync_ms.unwrap_or_default()
        );

        customer_changes(o, lab, &popd, &mut cp)?;

        acl_changes(o, &popd, &mut cp)?;
        Ok(())
    })();
    let _ = popd.shutdown_detach();
    let mut cp = result.map(|_| cp)?;
    if std::env::var_os("POP_BENCH_APPLY_ONLY").is_some()
        || std::env::var_os("POP_BENCH_ACL_ONLY").is_some()
    {
        return Ok(cp);
    }
    let b = crate::bgp::run(o)?;
    cp.bgp_full_table_ratio = b.full_table_ratio;
    cp.route_churn_per_s = b.churn_per_s;
    cp.route_churn_lag_p99_ms = b.churn_lag_p99_ms;
    cp.popd_rss_mb_full_table = b.rss_mb;
    cp.bgp_routes = b.routes;
    Ok(cp)
}
