//! Lab throughput: 60-byte UDP from customer c1 through the edge namespace to
//! the upstream, received packets per second, for kernel forwarding, kernel
//! forwarding + an nftables ruleset equivalent to pop's ACLs, the lab's
//! ceiling (`xdp_redirect_min`: a minimal XDP router that only rewrites MACs
//! and redirects), and pop.
//!
//! Generator: an `xdp_tx` program run with BPF_PROG_TEST_RUN in live-frames
//! mode inside c1, so frames leave c1's veth at ~1 Mpps without a userspace
//! packet loop (trafgen tops out near 0.44 Mpps here). Sink: `xdp_count_drop`
//! attached natively on the upstream's veth counts and drops every frame.
use std::os::fd::AsFd;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::PerCpuArray;
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use aya::Ebpf;
use pop_lab::popd::Popd;
use pop_lab::Lab;

use crate::report::{median, LabRow};
use crate::Opts;

/// Number of ACL rules (and equivalent nftables rules) in the main comparison;
/// the full run adds 10 and 100k for the scaling of both.
pub const RULES: usize = 1000;

fn setns(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns {}", path.display()))
}

fn if_index(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("interface {name}: {}", std::io::Error::last_os_error());
    }
    Ok(i)
}

/// The sink, attached on the upstream's eth0.
struct Sink {
    ebpf: Ebpf,
}

impl Sink {
    fn attach(lab: &Lab) -> Result<Sink> {
        let ns = lab.netns_path("up");
        thread::spawn(move || -> Result<Sink> {
            setns(&ns)?;
            let mut ebpf = Ebpf::load(pop_ebpf::bench_object())?;
            let prog: &mut Xdp = ebpf
                .program_mut("xdp_count_drop")
                .ok_or_else(|| anyhow!("no xdp_count_drop"))?
                .try_into()?;
            prog.load()?;
            prog.attach("eth0", XdpMode::Driver)
                .context("attaching the sink on up/eth0")?;
            Ok(Sink { ebpf })
        })
        .join()
        .map_err(|_| anyhow!("sink thread panicked"))?
    }

    fn count(&self) -> Result<u64> {
        let m: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map("sink_packets")
                .ok_or_else(|| anyhow!("no sink map"))?,
        )?;
        Ok(m.get(&0, 0)?.iter().sum())
    }
}

/// CPU time this thread has used (user and system). The kernel runs the
/// softirqs a thread raises (the veths' NAPI polls, the edge's XDP program,
/// the redirect, the sink) on that thread's time: this kernel does not
/// account softirq time apart (no CONFIG_IRQ_TIME_ACCOUNTING), and on a
/// veth the receivers' NAPI runs in the sender's softirq context.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// This thread's scheduler statistics (/proc/thread-self/schedstat): time on
/// a CPU and time runnable but waiting for one.
fn thread_schedstat() -> (Duration, Duration) {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut v = text
        .split_whitespace()
        .map(|w| Duration::from_nanos(w.parse().unwrap_or(0)));
    (v.next().unwrap_or_default(), v.next().unwrap_or_default())
}

/// What one generator window did.
struct Generated {
    /// Frames sent.
    sent: u64,
    /// Wall time of the window.
    wall: Duration,
    /// The generator thread's CPU time over the window: the whole path's,
    /// see [`thread_cpu_time`].
    cpu: Duration,
    /// Of the wall time, how long the thread waited for a CPU while runnable
    /// (other processes' load), and how long it slept (neither running nor
    /// runnable: in the test_run call's setup and teardown).
    waiting: Duration,
    sleeping: Duration,
    /// test_run calls made.
    calls: u32,
}

/// Sends copies of `frame` out of c1's eth0 in chunks of 50k until `window`
/// has passed.
fn generate(lab: &Lab, frame: Vec<u8>, window: Duration) -> Result<Generated> {
    let ns = lab.netns_path("c1");
    thread::spawn(move || -> Result<Generated> {
        setns(&ns)?;
        let mut ebpf = Ebpf::load(pop_ebpf::bench_object())?;
        // The frame's 60 bytes, restored by xdp_tx before every send.
        let mut template = [0u8; 60];
        template.copy_from_slice(&frame[..60]);
        let mut tmap: aya::maps::Array<_, [u8; 60]> = aya::maps::Array::try_from(
            ebpf.map_mut("gen_template")
                .ok_or_else(|| anyhow!("no gen_template"))?,
        )?;
        tmap.set(0, template, 0)?;
        let prog: &mut Xdp = ebpf
            .program_mut("xdp_tx")
            .ok_or_else(|| anyhow!("no xdp_tx"))?
            .try_into()?;
        prog.load()?;
        // Attached, the program stays in the kernel's XDP dispatcher, so that
        // test_run does not add it before each call and remove it after:
        // each change waits for an RCU grace period (synchronize_rcu) and
        // patches kernel text, 20-50 ms per call, which left the generator
        // asleep for 70% of the window and made the rate measure the grace
        // periods more than the path. Frames never reach the parked port.
        prog.attach(GEN_PARKING, XdpMode::Driver)
            .context("attaching the generator on its parking port")?;
        let ifindex = if_index("eth0")?;
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let start = Instant::now();
        let cpu_start = thread_cpu_time();
        let (on_cpu_start, waiting_start) = thread_schedstat();
        let mut sent = 0u64;
        let mut calls = 0;
        // The call blocks until the receivers took every frame: start small so
        // a slow path (100k nftables rules) cannot stretch the window, grow
        // while calls are short. Each call still takes the XDP dispatcher's
        // mutex, which another process's test_run may hold through a grace
        // period (then "asleep" is not 0). Calls of 1M frames would make
        // that rarer, but lost frames at xdp_redirect_min's rate (ksoftirqd
        // cannot run until the call ends, and the veth rings overflow).
        let mut n = 512u32;
        while start.elapsed() < window {
            let call = Instant::now();
            prog.test_run(TestRunOptions {
                data_in: Some(&frame),
                ctx_in: Some(&ctx),
                repeat: n,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..TestRunOptions::default()
            })
            .context("live-frames test_run (generator)")?;
            sent += u64::from(n);
            calls += 1;
            if call.elapsed() < window / 20 {
                n = (n * 2).min(50_000);
            }
        }
        let wall = start.elapsed();
        let cpu = thread_cpu_time() - cpu_start;
        let (on_cpu, waiting) = thread_schedstat();
        let (on_cpu, waiting) = (on_cpu - on_cpu_start, waiting - waiting_start);
        Ok(Generated {
            sent,
            wall,
            cpu,
            waiting,
            sleeping: wall.saturating_sub(on_cpu + waiting),
            calls,
        })
    })
    .join()
    .map_err(|_| anyhow!("generator thread panicked"))?
}

/// The lab's ceiling: `xdp_redirect_min` attached on the edge's customer port,
/// rewriting MACs and redirecting every IP frame to the upstream.
struct MinRouter {
    _ebpf: Ebpf,
}

impl MinRouter {
    fn attach(lab: &Lab) -> Result<MinRouter> {
        let ns = lab.netns_path("edge");
        let dmac = mac_of(lab, "up", "eth0")?;
        let smac = mac_of(lab, "edge", "eth0")?;
        thread::spawn(move || -> Result<MinRouter> {
            setns(&ns)?;
            let egress = if_index("eth0")?;
            let mut ebpf = Ebpf::load(pop_ebpf::bench_object())?;
            let mut route: aya::maps::Array<_, [u8; 16]> = aya::maps::Array::try_from(
                ebpf.map_mut("min_route")
                    .ok_or_else(|| anyhow!("no min_route"))?,
            )?;
            let mut value = [0u8; 16];
            value[..6].copy_from_slice(&dmac);
            value[6..12].copy_from_slice(&smac);
            value[12..].copy_from_slice(&egress.to_ne_bytes());
            route.set(0, value, 0)?;
            let mut ports: aya::maps::DevMap<_> = aya::maps::DevMap::try_from(
                ebpf.map_mut("min_ports")
                    .ok_or_else(|| anyhow!("no min_ports"))?,
            )?;
            ports.set(0, egress, None, 0)?;
            let prog: &mut Xdp = ebpf
                .program_mut("xdp_redirect_min")
                .ok_or_else(|| anyhow!("no xdp_redirect_min"))?
                .try_into()?;
            prog.load()?;
            prog.attach("eth1", XdpMode::Driver)
                .context("attaching xdp_redirect_min on edge/eth1")?;
            Ok(MinRouter { _ebpf: ebpf })
        })
        .join()
        .map_err(|_| anyhow!("xdp_redirect_min thread panicked"))?
    }
}

fn mac_of(lab: &Lab, node: &str, dev: &str) -> Result<[u8; 6]> {
    let out = lab.exec_ok(node, &["ip", "-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let s = v[0]["address"]
        .as_str()
        .ok_or_else(|| anyhow!("no MAC for {node}/{dev}"))?;
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(s.split(':')) {
        *b = u8::from_str_radix(p, 16)?;
    }
    Ok(mac)
}

fn frame(src: [u8; 6], dst: [u8; 6]) -> Vec<u8> {
    pop_tests::testrun::udp_frame(
        src,
        dst,
        [198, 51, 100, 10].into(),
        [100, 64, 0, 1].into(),
        64,
        18,
    )
}

/// Random-looking but fixed rules that never match the benchmark traffic
/// (UDP from 198.51.100.10): drop TCP to a port from a 10/8 /24.
fn rules(count: usize) -> Vec<(String, u16)> {
    (0..count)
        .map(|i| {
            (
                format!("10.{}.{}.0/24", (i / 250) % 250, i % 250),
                1000 + (i as u16 % 60000),
            )
        })
        .collect()
}

fn nft_ruleset(count: usize) -> String {
    let mut s = String::from("table inet popbench {\n chain pop_forward {\n  type filter hook forward priority 0; policy accept;\n");
    for (src, port) in rules(count) {
        s += &format!("  ip saddr {src} tcp dport {port} drop\n");
    }
    s + " }\n}\n"
}

fn pop_config(count: usize) -> String {
    let mut s = pop_lab::topology::full_config();
    for (i, (src, port)) in rules(count).into_iter().enumerate() {
        s += &format!("\n[[acls]]\npriority = {}\naction = \"drop\"\nsrc = \"{src}\"\nproto = \"tcp\"\ndst_port = \"{port}\"\n", 10 + i);
    }
    s
}

/// Whether this build's data plane enforces ACLs (pop_common knows ACL maps).
fn pop_enforces_acls() -> bool {
    pop_common::maps::ALL.iter().any(|m| m.starts_with("acl"))
}

fn kernel_mode(lab: &Lab, nft_rules: usize) -> Result<()> {
    lab.set_edge_forwarding(true)?;
    lab.exec_ok("edge", &["ethtool", "-K", "eth1", "gro", "on"])?;
    let _ = lab.exec(
        "edge",
        &[
            "ip",
            "route",
            "replace",
            "100.64.0.0/24",
            "via",
            "192.0.2.1",
        ],
    );
    let _ = lab.exec("edge", &["nft", "delete", "table", "inet", "popbench"]);
    if nft_rules > 0 {
        let path = std::env::temp_dir().join(format!("popbench-{}.nft", std::process::id()));
        std::fs::write(&path, nft_ruleset(nft_rules))?;
        lab.exec_ok("edge", &["nft", "-f", &path.to_string_lossy()])?;
        let _ = std::fs::remove_file(path);
    }
    // Resolve the upstream's MAC before measuring.
    let _ = lab.exec("edge", &["ping", "-c", "1", "-W", "1", "192.0.2.1"]);
    Ok(())
}

fn kernel_off(lab: &Lab) -> Result<()> {
    let _ = lab.exec("edge", &["nft", "delete", "table", "inet", "popbench"]);
    lab.set_edge_forwarding(false)
}

/// Runs the interleaved rounds.
pub fn run(o: &Opts) -> Result<Vec<LabRow>> {
    let lab = Lab::new("pbench-");
    lab.up().context("lab up")?;
    let result = run_in_lab(&lab, o);
    if std::env::var_os("POP_BENCH_KEEP_LAB").is_none() {
        let _ = lab.down();
    }
    result
}

/// A veth in c1 that stays down, where the generator's program is attached
/// while it runs (see [`generate`]).
const GEN_PARKING: &str = "gen0";

fn run_in_lab(lab: &Lab, o: &Opts) -> Result<Vec<LabRow>> {
    let sink = Sink::attach(lab)?;
    let _ = lab.exec("c1", &["ip", "link", "del", GEN_PARKING]);
    lab.exec_ok(
        "c1",
        &[
            "ip",
            "link",
            "add",
            GEN_PARKING,
            "type",
            "veth",
            "peer",
            "name",
            "gen1",
        ],
    )?;
    let f = frame(mac_of(lab, "c1", "eth0")?, mac_of(lab, "edge", "eth1")?);
    let (mut rounds, mut window) = if o.quick {
        (1, Duration::from_millis(300))
    } else {
        (5, Duration::from_secs(2))
    };
    if let Some(n) = std::env::var("POP_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
    {
        rounds = n;
    }
    // POP_BENCH_LAB_WINDOW_MS: a longer window, e.g. to profile one case.
    if let Some(ms) = std::env::var("POP_BENCH_LAB_WINDOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&ms: &u64| ms > 0)
    {
        window = Duration::from_millis(ms);
    }
    let state = tempfile::tempdir()?;
    // pop_capture: pop while `popctl capture` of every packet runs.
    let mut cases = vec![
        ("kernel_forward", 0),
        ("kernel_forward_nft", RULES),
        ("xdp_redirect_min", 0),
        ("pop", RULES),
        ("pop_capture", RULES),
    ];
    // POP_BENCH_OBJECT_B: other builds of the data plane, run by popd like
    // pop's own, right after it in every round: `pop [B]` for one file,
    // `pop [B:NAME]` (NAME: the file name up to its first dot) for several.
    let objects_b: Vec<std::path::PathBuf> = std::env::var_os("POP_BENCH_OBJECT_B")
        .map(|list| std::env::split_paths(&list).collect())
        .unwrap_or_default();
    let labels_b: Vec<&'static str> = objects_b
        .iter()
        .map(|path| -> &'static str {
            if objects_b.len() == 1 {
                return "pop [B]";
            }
            let name = path.file_name().map(|s| s.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            let stem = name.split('.').next().unwrap_or_default();
            Box::leak(format!("pop [B:{stem}]").into_boxed_str())
        })
        .collect();
    for (k, label) in labels_b.iter().enumerate() {
        cases.insert(4 + k, (label, RULES));
    }
    if !o.quick {
        for n in [10, 100_000] {
            cases.push(("kernel_forward_nft", n));
            cases.push(("pop", n));
        }
    }
    // POP_BENCH_LAB_CASES: case-name prefixes to run (`=NAME`: that case
    // alone, with 1000 rules); the two references (kernel_forward,
    // xdp_redirect_min) always run.
    if let Ok(list) = std::env::var("POP_BENCH_LAB_CASES") {
        cases.retain(|&(case, rules)| {
            (case == "kernel_forward" && rules == 0)
                || case == "xdp_redirect_min"
                || list.split(',').any(|p| match p.trim().strip_prefix('=') {
                    Some(exact) => case == exact && rules == RULES,
                    None => case.starts_with(p.trim()),
                })
        });
    }
    let mut pps: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        for (i, &(case, rules)) in cases.iter().enumerate() {
            let mut popd = None;
            let mut min_router = None;
            let mut capture = None;
            match case {
                "xdp_redirect_min" => {
                    kernel_off(lab)?;
                    min_router = Some(MinRouter::attach(lab)?);
                }
                _ if case.starts_with("pop") => {
                    kernel_off(lab)?;
                    let name: String = case
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                        .collect();
                    let dir = state.path().join(format!("r{round}-{rules}-{name}"));
                    let mut p = Popd::new(lab, &o.bin_dir, &dir, &pop_config(rules))?;
                    // The data-plane object popd loads: a B case's own,
                    // else POP_BENCH_OBJECT's when set, else its own.
                    let object = if let Some(k) = labels_b.iter().position(|l| *l == case) {
                        Some(objects_b[k].clone())
                    } else {
                        std::env::var_os("POP_BENCH_OBJECT").map(std::path::PathBuf::from)
                    };
                    if let Some(path) = object {
                        p.set_env("POP_DATAPLANE_OBJECT", Some(&path.to_string_lossy()));
                    }
                    p.start()?;
                    p.wait_resolved(Duration::from_secs(10))?;
                    if case == "pop_capture" {
                        let file = dir.join("capture.pcapng");
                        capture = Some(
                            std::process::Command::new(o.bin_dir.join("popctl"))
                                .arg("--socket")
                                .arg(p.socket())
                                .args(["capture", "-w"])
                                .arg(&file)
                                .spawn()?,
                        );
                        let armed = std::time::Instant::now();
                        while std::fs::metadata(&file).map_or(0, |m| m.len()) == 0
                            && armed.elapsed() < Duration::from_secs(5)
                        {
                            thread::sleep(Duration::from_millis(20));
                        }
                    }
                    popd = Some(p);
                }
                _ => kernel_mode(lab, rules)?,
            }
            // Warm up (neighbour resolution, caches), then measure.
            generate(lab, f.clone(), Duration::from_millis(50))?;
            thread::sleep(Duration::from_millis(100));
            let before = sink.count()?;
            let g = generate(lab, f.clone(), window)?;
            thread::sleep(Duration::from_millis(100));
            let got = sink.count()? - before;
            let rate = got as f64 / g.wall.as_secs_f64();
            let cpu_ns = g.cpu.as_nanos() as f64 / got.max(1) as f64;
            eprintln!(
                "  round {round} {case} ({rules} rules): {got}/{} received in {:.2}s = {rate:.0} pps; {cpu_ns:.0} ns of CPU per packet ({:.2}s CPU, {:.2}s waiting for a CPU, {:.2}s asleep, {} calls)",
                g.sent,
                g.wall.as_secs_f64(),
                g.cpu.as_secs_f64(),
                g.waiting.as_secs_f64(),
                g.sleeping.as_secs_f64(),
                g.calls
            );
            pps[i].push(rate);
            cpu[i].push(cpu_ns);
            drop(min_router);
            if let Some(mut c) = capture {
                let _ = c.kill();
                let _ = c.wait();
            }
            if let Some(mut p) = popd {
                if std::env::var_os("POP_BENCH_DEBUG").is_some() {
                    let m = p.metrics().unwrap_or_default();
                    eprintln!(
                        "{}",
                        m.lines()
                            .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                }
                p.shutdown_detach()?;
            }
        }
    }
    kernel_off(lab)?;
    Ok(cases
        .iter()
        .zip(pps.into_iter().zip(cpu))
        .map(|(&(case, rules), (v, c))| LabRow {
            case: case.to_string(),
            acl_rules: if case.starts_with("pop") && !pop_enforces_acls() {
                0
            } else {
                rules as u64
            },
            pps_median: median(&v),
            pps_rounds: v,
            cpu_ns_median: median(&c),
            cpu_ns_rounds: c,
        })
        .collect())
}
