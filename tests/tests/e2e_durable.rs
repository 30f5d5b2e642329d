//! End-to-end: every acknowledged change survives a kill -9 of popd at any
//! instant, and nothing half-made does. The real popd and popctl
//! (target/debug) in the lab (namespaces `ptdur-*`). Needs root.
//!
//! A writer thread issues `popctl route add` (and now and then `route del`
//! and `customer add`) back to back and records what popd acknowledged; the
//! test SIGKILLs popd at a random instant, restarts it on the same state dir
//! and compares its configured routes and customers with the acknowledged
//! changes: all of them are there, plus at most the one change in flight when
//! popd died, and nothing else.
use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use pop_lab::Popd;
use pop_tests::fuzz::Rng;
use pop_tests::lab_env::LabEnv;

/// Namespace (and veth, bpffs) prefix of these tests.
const PREFIX: &str = "ptdur-";
/// Kills of popd under changes.
const ROUNDS: usize = 6;

type Env = LabEnv;

/// One change the writer made.
#[derive(Clone, Debug)]
enum Op {
    Add(String),
    Del(String),
    Customer(String),
}

#[derive(Default)]
struct Log {
    /// Acknowledged (popctl exited 0), in order.
    acked: Vec<Op>,
    /// Issued and not answered (popd died meanwhile).
    in_flight: Option<Op>,
}

fn configured_routes(popd: &Popd) -> Result<BTreeSet<String>> {
    let v = popd.popctl_json(&["route", "show", "--source", "config"])?;
    Ok(v.as_array()
        .context("route show: not a list")?
        .iter()
        .filter_map(|r| r["prefix"].as_str().map(str::to_string))
        .collect())
}

fn customers(popd: &Popd) -> Result<BTreeSet<String>> {
    let v = popd.popctl_json(&["customer", "show"])?;
    Ok(v.as_array()
        .context("customer show: not a list")?
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect())
}

/// Issues changes until `stop` or until popd stops answering.
fn writer(popd: &Popd, seed: u64, first: u32, stop: &AtomicBool, log: &Mutex<Log>) {
    let mut rng = Rng::new(seed);
    let mut live: Vec<String> = Vec::new();
    let mut n = first;
    while !stop.load(Ordering::Relaxed) {
        let op = if !live.is_empty() && rng.chance(1, 5) {
            Op::Del(live.swap_remove(rng.below(live.len())))
        } else if rng.chance(1, 20) {
            n += 1;
            Op::Customer(format!("dur{n}"))
        } else {
            n += 1;
            Op::Add(format!("10.{}.{}.0/24", 128 + n / 256 % 64, n % 256))
        };
        let args: Vec<String> = match &op {
            Op::Add(p) => ["route", "add", p, "via", "192.0.2.1", "dev", "eth0"]
                .map(String::from)
                .to_vec(),
            Op::Del(p) => ["route", "del", p].map(String::from).to_vec(),
            Op::Customer(name) => {
                let k = name.trim_start_matches("dur").parse::<u32>().unwrap_or(0);
                let prefix = format!("100.{}.{}.0/24", 100 + k / 256 % 28, k % 256);
                [
                    "customer", "add", name, "--prefix", &prefix, "--iface", "eth1",
                ]
                .map(String::from)
                .to_vec()
            }
        };
        log.lock().unwrap().in_flight = Some(op.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match popd.popctl(&args) {
            Ok(out) if out.status.success() => {
                let mut l = log.lock().unwrap();
                l.in_flight = None;
                if let Op::Add(p) = &op {
                    live.push(p.clone());
                }
                l.acked.push(op);
            }
            // Refused while popd is up would be a bug the comparison finds;
            // an error because popd died ends the round.
            _ => return,
        }
    }
}

/// What the acknowledged changes leave, on top of `routes`/`customers`.
fn expected(
    routes: &BTreeSet<String>,
    customers: &BTreeSet<String>,
    acked: &[Op],
) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut r, mut c) = (routes.clone(), customers.clone());
    for op in acked {
        apply(&mut r, &mut c, op);
    }
    (r, c)
}

fn apply(r: &mut BTreeSet<String>, c: &mut BTreeSet<String>, op: &Op) {
    match op {
        Op::Add(p) => {
            r.insert(p.clone());
        }
        Op::Del(p) => {
            r.remove(p);
        }
        Op::Customer(n) => {
            c.insert(n.clone());
        }
    }
}

fn run(env: &mut Env, bin_dir: &std::path::Path) -> Result<()> {
    env.popd.start()?;
    let mut rng = Rng::new(0x5eed);
    let mut next = 0u32;
    for round in 0..ROUNDS {
        let (routes, custs) = (configured_routes(&env.popd)?, customers(&env.popd)?);
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Log::default()));
        let delay = Duration::from_millis(200 + rng.below(1300) as u64);
        let popd_for_writer = Popd::existing(&env.lab, bin_dir, env.popd.state_dir())?;
        let (s, l) = (stop.clone(), log.clone());
        let first = next;
        let w = thread::spawn(move || writer(&popd_for_writer, round as u64, first, &s, &l));
        thread::sleep(delay);
        env.popd.kill()?;
        stop.store(true, Ordering::Relaxed);
        w.join().expect("writer");
        let log = std::mem::take(&mut *log.lock().unwrap());
        next += 100_000;
        env.popd.start()?;
        let (got_r, got_c) = (configured_routes(&env.popd)?, customers(&env.popd)?);
        let (want_r, want_c) = expected(&routes, &custs, &log.acked);
        let with_in_flight = log.in_flight.as_ref().map(|op| {
            let (mut r, mut c) = (want_r.clone(), want_c.clone());
            apply(&mut r, &mut c, op);
            (r, c)
        });
        let ok = (got_r == want_r && got_c == want_c)
            || with_in_flight
                .as_ref()
                .is_some_and(|(r, c)| &got_r == r && &got_c == c);
        ensure!(
            ok,
            "round {round}: after kill -9 ({} changes acknowledged, in flight: {:?}) the state is not the acknowledged one:\n\
             routes missing: {:?}\nroutes extra: {:?}\ncustomers missing: {:?}\ncustomers extra: {:?}",
            log.acked.len(),
            log.in_flight,
            want_r.difference(&got_r).collect::<Vec<_>>(),
            got_r.difference(&want_r).collect::<Vec<_>>(),
            want_c.difference(&got_c).collect::<Vec<_>>(),
            got_c.difference(&want_c).collect::<Vec<_>>(),
        );
        ensure!(
            !log.acked.is_empty(),
            "round {round}: no change was acknowledged within {delay:?}: {}",
            env.popd.log_tail(20)
        );
        eprintln!(
            "round {round}: killed after {} acknowledged changes ({delay:?}); the restarted popd has all of them",
            log.acked.len()
        );
    }
    // The journal's changes are in the snapshot that a whole-config apply
    // writes, and forwarding follows the restored table.
    let export = env.popd.popctl_ok(&["export"])?;
    let file = env.popd.state_dir().join("export.toml");
    std::fs::write(&file, &export)?;
    let out = env
        .popd
        .popctl_json(&["apply", file.to_str().context("path")?])?;
    ensure!(
        out["changes"].as_array().is_some_and(|c| c.is_empty()),
        "apply of the export changed something: {out}"
    );
    Ok(())
}

#[test]
fn acknowledged_changes_survive_kill_9_and_nothing_half_made_does() {
    let bin_dir = pop_lab::popd::test_bin_dir().expect("popd and popctl built");
    let mut env = LabEnv::new(PREFIX, |_| Ok(())).unwrap_or_else(|e| panic!("{e:#}"));
    if let Err(e) = run(&mut env, &bin_dir) {
        panic!("{e:#}\npopd log:\n{}", env.popd.log_tail(40));
    }
}
