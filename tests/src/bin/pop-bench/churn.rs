//! `route_churn_per_s`: the highest rate of learned route updates that popd
//! absorbs with an update-to-map lag p99 ≤ 1 s and no loss on a stable flow.
//!
//! - Writer: a netlink socket in the edge namespace sends RTM_NEWROUTE
//!   (create|replace) and RTM_DELROUTE for /24s from 64.0.0.0 into the
//!   followed table at a controlled offered rate, in ticks of 5 ms and
//!   batches of up to [`BATCH`] messages per `send`, each acknowledged.
//!   The update stream first adds a window of `2 s × rate` fresh prefixes,
//!   then alternates an add of a fresh prefix with a delete of the oldest, so
//!   an update is never superseded within 2 s.
//! - Lag: 1 in `rate / 1000` updates is sampled; its lag runs from the moment
//!   the writer's ack for it returned until popd's pinned `routes_v4` holds
//!   (add) or lacks (delete) the entry. A poller thread reads the map by the
//!   exact key. A sample not seen after [`SAMPLE_TIMEOUT`] is recorded with
//!   that age (it fails the 1 s goal either way).
//! - Flow: ping from c1 to the upstream's "internet" address (a learned
//!   route) every 5 ms across the step, through the edge with its kernel
//!   forwarding off; loss = requests sent − replies received.
//! - Ramp: steps of doubling rate until one fails (p99 > 1 s or a lost
//!   packet), then one step halfway between the last pass and the failure.
//!   When the writer cannot write 95 % of the offered rate (the kernel takes
//!   route updates no faster on this machine), the ramp stops there: the
//!   value is then a lower bound of popd's, and the output says so, with the
//!   CPU time per update of popd and of the writer (the kernel) beside it.
//!   Between steps the window is deleted and popd must return to exactly the
//!   table it held.
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Map, MapData};
use pop_common::PopRoute;
use pop_lab::popd::Popd;
use pop_lab::topology::{C1, EDGE, INTERNET_V4};
use pop_lab::Lab;
use pop_tests::kernel_routes::{finish_ping, start_ping, Writer};

/// Messages per `send` at most.
const BATCH: usize = 256;
/// Writer tick.
const TICK: Duration = Duration::from_millis(5);
/// How long a sample is waited for before it is recorded as late.
const SAMPLE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Seconds of updates the window holds before deletes start.
const WINDOW_S: f64 = 2.0;
/// Ping interval of the stable flow, seconds.
const FLOW_INTERVAL_S: f64 = 0.005;
/// The lag goal.
const LAG_GOAL: Duration = Duration::from_secs(1);

/// One step's result.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    /// Updates per second offered.
    pub offered_per_s: f64,
    /// Updates per second the writer achieved.
    pub achieved_per_s: f64,
    /// p99 of the sampled lags.
    pub lag_p99: Duration,
    /// Samples taken.
    pub samples: usize,
    /// Ping requests without a reply.
    pub lost: u64,
    /// Ping requests sent.
    pub sent: u64,
    /// popd's CPU time (user + system) per update, µs.
    pub popd_cpu_us: f64,
    /// The writer thread's CPU time per update, µs: the kernel's work of
    /// taking a route update, nearly all of it.
    pub writer_cpu_us: f64,
}

impl Step {
    /// popd absorbed what was written within the goals.
    fn passed(&self) -> bool {
        self.lag_p99 <= LAG_GOAL && self.lost == 0 && self.sent > 0
    }

    /// The writer (the kernel taking the updates) fell short of the offered
    /// rate: higher rates cannot be offered on this machine.
    fn writer_bound(&self) -> bool {
        self.achieved_per_s < 0.95 * self.offered_per_s
    }
}

/// CPU time (user + system) of process `pid` so far.
fn process_cpu(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which ends with the last ')'.
    let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5): 12 and 13 here.
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// CPU time of the calling thread so far.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The measure: the best passing step, if any.
#[derive(Clone, Copy, Debug, Default)]
pub struct Churn {
    /// Updates per second absorbed within the goals.
    pub per_s: Option<f64>,
    /// The lag p99 at that rate, ms.
    pub lag_p99_ms: Option<f64>,
}

/// A sampled update.
struct Sample {
    key: [u8; 4],
    present: bool,
    acked: Instant,
}

/// Reads the pinned IPv4 route map until each sample shows; returns the lags.
fn poll_samples(maps_dir: &Path, rx: mpsc::Receiver<Sample>) -> Result<Vec<Duration>> {
    let data = MapData::from_pin(maps_dir.join("routes_v4")).context("pin routes_v4")?;
    let map: LpmTrie<MapData, [u8; 4], PopRoute> = Map::from_map_data(data)?.try_into()?;
    let mut pending: Vec<Sample> = Vec::new();
    let mut lags = Vec::new();
    let mut open = true;
    while open || !pending.is_empty() {
        loop {
            match rx.try_recv() {
                Ok(s) => pending.push(s),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let now = Instant::now();
        pending.retain(|s| {
            let present = map.get(&Key::new(24, s.key), 0).is_ok();
            let age = now.saturating_duration_since(s.acked);
            if present == s.present || age >= SAMPLE_TIMEOUT {
                lags.push(age);
                false
            } else {
                true
            }
        });
        thread::sleep(Duration::from_micros(500));
    }
    Ok(lags)
}

fn prefix(i: u32) -> [u8; 4] {
    (u32::from(std::net::Ipv4Addr::new(64, 0, 0, 0)) + (i << 8)).to_be_bytes()
}

/// One step at `rate` updates per second for `seconds`. `settle`: waits
/// until popd holds the table it held before the step.
fn step(
    lab: &Lab,
    popd_pid: u32,
    w: &mut Writer,
    rate: f64,
    seconds: f64,
    settle: &dyn Fn() -> Result<()>,
) -> Result<Step> {
    let window = (rate * WINDOW_S) as u32;
    let total = (rate * seconds) as u64;
    let sample_every = ((rate / 1000.0) as u64).max(1);
    let (tx, rx) = mpsc::channel();
    let maps_dir = lab.bpffs_dir().join("maps");
    let poller = thread::spawn(move || poll_samples(&maps_dir, rx));
    let count = ((seconds + 0.5) / FLOW_INTERVAL_S).ceil() as u32;
    let flow = start_ping(lab, INTERNET_V4, FLOW_INTERVAL_S, count)?;
    // The ping's first requests go out before the first update.
    thread::sleep(Duration::from_millis(250));

    let (mut added, mut deleted) = (0u32, 0u32);
    let mut sent = 0u64;
    let popd_cpu = process_cpu(popd_pid)?;
    let writer_cpu = thread_cpu();
    let started = Instant::now();
    let result = (|| -> Result<()> {
        while sent < total {
            let due = ((started.elapsed().as_secs_f64() * rate) as u64).min(total);
            let mut batch_samples = Vec::new();
            while sent < due {
                // Fill the window, then alternate an add and a delete.
                let add = added < window || (sent - u64::from(window)).is_multiple_of(2);
                let key = if add {
                    added += 1;
                    prefix(added - 1)
                } else {
                    deleted += 1;
                    prefix(deleted - 1)
                };
                w.push(key, add);
                if sent.is_multiple_of(sample_every) {
                    batch_samples.push((key, add));
                }
                sent += 1;
                if w.queued() >= BATCH * 60 || sent == due {
                    w.flush()?;
                    let acked = Instant::now();
                    for (key, present) in batch_samples.drain(..) {
                        let _ = tx.send(Sample {
                            key,
                            present,
                            acked,
                        });
                    }
                }
            }
            thread::sleep(TICK);
        }
        Ok(())
    })();
    let elapsed = started.elapsed().as_secs_f64();
    let writer_cpu = thread_cpu() - writer_cpu;
    drop(tx);
    let lags = poller
        .join()
        .map_err(|_| anyhow!("poller panicked"))?
        .context("sampling the route map")?;
    // popd's share: its CPU time until every sample showed.
    let popd_cpu = process_cpu(popd_pid)?.saturating_sub(popd_cpu);
    let stats = finish_ping(flow, Duration::from_secs(60));
    // Remove what is left of the window, then wait until popd is back.
    let cleanup = (|| -> Result<()> {
        while deleted < added {
            w.push(prefix(deleted), false);
            deleted += 1;
            if w.queued() >= BATCH * 60 {
                w.flush()?;
            }
        }
        w.flush()?;
        settle()
    })();
    result?;
    cleanup?;
    let stats = stats?;
    let mut lags = lags;
    lags.sort();
    let p99 = lags
        .get(((lags.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(Duration::MAX);
    Ok(Step {
        offered_per_s: rate,
        achieved_per_s: sent as f64 / elapsed,
        lag_p99: p99,
        samples: lags.len(),
        lost: stats.lost(),
        sent: stats.transmitted,
        popd_cpu_us: popd_cpu.as_secs_f64() * 1e6 / sent.max(1) as f64,
        writer_cpu_us: writer_cpu.as_secs_f64() * 1e6 / sent.max(1) as f64,
    })
}

/// Runs the ramp on the edge of `lab`, where `popd` follows the table.
/// `settle` waits until popd holds the table it held before the churn.
pub fn run(lab: &Lab, popd: &Popd, quick: bool, settle: &dyn Fn() -> Result<()>) -> Result<Churn> {
    // The flow's route resolved (not `wait_resolved`: listing a full table
    // through popctl takes longer than its timeout).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = popd.popctl_json(&["route", "get", INTERNET_V4])?;
        let hops = got["nexthops"].as_array().cloned().unwrap_or_default();
        if !hops.is_empty() && hops.iter().all(|h| h["state"] == "resolved") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the flow's next hop is not resolved: {got}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let s = lab.ping(C1, INTERNET_V4, 3, 0.2)?;
    ensure!(
        s.received == 3,
        "the stable flow does not pass before the churn: ping {INTERNET_V4} from c1: {s}"
    );
    let mut w = Writer::open(&lab.netns_path(EDGE), BATCH)?;
    let pid = popd.pid().context("popd's pid")?;
    let (seconds, mut rates): (f64, Vec<f64>) = if quick {
        (2.0, vec![2_000.0, 8_000.0])
    } else {
        (
            5.0,
            vec![
                12_500.0, 25_000.0, 50_000.0, 100_000.0, 200_000.0, 400_000.0,
            ],
        )
    };
    let mut best: Option<Step> = None;
    let mut failed: Option<Step> = None;
    let mut i = 0;
    while i < rates.len() {
        let s = step(lab, pid, &mut w, rates[i], seconds, settle)?;
        eprintln!(
            "  churn at {:.0}/s offered: {:.0}/s written, lag p99 {:.0} ms over {} samples, \
             ping {} sent {} lost; CPU per update: popd {:.1} µs, writer (kernel) {:.1} µs — {}",
            s.offered_per_s,
            s.achieved_per_s,
            s.lag_p99.as_secs_f64() * 1e3,
            s.samples,
            s.sent,
            s.lost,
            s.popd_cpu_us,
            s.writer_cpu_us,
            match (s.passed(), s.writer_bound()) {
                (true, false) => "within the goal",
                (true, true) => "within the goal, writer-bound",
                (false, _) => "missed",
            }
        );
        if s.passed() && best.is_none_or(|b| s.achieved_per_s > b.achieved_per_s) {
            best = Some(s);
        }
        if s.writer_bound() {
            eprintln!(
                "  churn: the kernel took updates no faster than {:.0}/s here; \
                 popd's limit is above what could be offered",
                s.achieved_per_s
            );
            break;
        }
        if !s.passed() && failed.is_none() {
            failed = Some(s);
            // One step halfway between the last pass and this failure.
            if let (Some(b), false) = (best, quick) {
                rates.truncate(i + 1);
                rates.push((b.offered_per_s + s.offered_per_s) / 2.0);
            } else {
                break;
            }
        }
        i += 1;
    }
    Ok(Churn {
        per_s: best.map(|b| b.achieved_per_s),
        lag_p99_ms: best.map(|b| b.lag_p99.as_secs_f64() * 1e3),
    })
}
