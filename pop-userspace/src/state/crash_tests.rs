//! The kill -9 test: a child process (this test binary, re-executed) appends
//! changes in a loop, compacting now and then, and prints each generation
//! once `append` has returned; the parent SIGKILLs it at random instants and
//! loads what is left. Every acknowledged change must be there, nothing past
//! the one in flight, and the state must be exactly that of one generation.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::tests::{apply, expected, record, replayed, AddCustomer};
use super::Store;
use crate::test_rng::Rng;

/// The state dir the child works in; the child does nothing without it.
const DIR_ENV: &str = "POP_JOURNAL_CRASH_DIR";
/// Makes the child acknowledge a change before appending it (a broken
/// store), to prove the test notices.
const ACK_EARLY_ENV: &str = "POP_JOURNAL_CRASH_ACK_EARLY";
/// The child compacts every this many changes, so kills land in
/// compactions too.
const COMPACT_EVERY: u64 = 16;

#[test]
#[ignore = "the child of the kill -9 test, which starts it"]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let ack_early = std::env::var_os(ACK_EARLY_ENV).is_some();
    let store = Store::open(Path::new(&dir)).unwrap();
    let mut st = match store.load_with_journal::<AddCustomer>().unwrap() {
        Some((mut st, records)) => {
            for r in &records {
                apply(&mut st, u64::from(r.id), r);
            }
            st
        }
        None => {
            let st = expected(0);
            store.save(&st).unwrap();
            st
        }
    };
    loop {
        let g = st.generation + 1;
        if ack_early {
            println!("acked {g}");
            std::thread::sleep(Duration::from_millis(2));
        }
        store.append(g, &record(g)).unwrap();
        apply(&mut st, g, &record(g));
        if !ack_early {
            println!("acked {g}");
        }
        if g % COMPACT_EVERY == 0 || store.should_compact() {
            store.save(&st).unwrap();
        }
    }
}

/// xorshift64*, seeded from the clock (printed, to replay a failure).
/// Kills a child `kills` times in `dir`, loading after each; returns what
/// went wrong (nothing, for a sound store).
fn kill_repeatedly(dir: &Path, kills: usize, ack_early: bool, rng: &mut Rng) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let mut problems = Vec::new();
    let mut last_generation = 0;
    for kill in 0..kills {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "state::crash_tests::crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if ack_early {
            cmd.env(ACK_EARLY_ENV, "1");
        }
        let mut child = cmd.spawn().unwrap();
        let acked = Arc::new(AtomicU64::new(0));
        let reader = {
            let acked = acked.clone();
            let stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(g) = line.strip_prefix("acked ") {
                        acked.store(g.parse().unwrap(), Ordering::SeqCst);
                    }
                }
            })
        };
        // Half the kills at any instant from the start (startup and
        // recovery included), half once the child is appending.
        let started = Instant::now();
        if kill % 2 == 1 {
            while acked.load(Ordering::SeqCst) <= last_generation
                && started.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(40_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        let acked = acked.load(Ordering::SeqCst);
        let loaded = Store::open(dir).and_then(|s| s.load_with_journal::<AddCustomer>());
        let st = match loaded {
            Ok(Some((mut st, records))) => {
                for r in &records {
                    apply(&mut st, u64::from(r.id), r);
                }
                st
            }
            Ok(None) => {
                // Killed before the first snapshot was in place: fine only
                // if nothing was acknowledged yet.
                if acked > 0 || last_generation > 0 {
                    problems.push(format!("kill {kill}: the state is gone"));
                }
                continue;
            }
            Err(e) => {
                problems.push(format!("kill {kill}: load failed: {e}"));
                continue;
            }
        };
        let g = st.generation;
        if g < acked.max(last_generation) {
            problems.push(format!(
                "kill {kill}: generation {} was acknowledged, only {g} is there",
                acked.max(last_generation)
            ));
        }
        if acked > 0 && g > acked + 1 {
            problems.push(format!(
                "kill {kill}: generation {g} is there, past the one in flight ({})",
                acked + 1
            ));
        }
        if st != expected(g) {
            problems.push(format!(
                "kill {kill}: the state is not that of generation {g}"
            ));
        }
        last_generation = g;
    }
    problems
}

fn seeded() -> Rng {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill -9 test seed: {seed:#x}");
    Rng(seed)
}

#[test]
fn a_kill_9_at_any_instant_keeps_every_acknowledged_change_and_nothing_half_done() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = seeded();
    let problems = kill_repeatedly(dir.path(), 40, false, &mut rng);
    assert!(problems.is_empty(), "{problems:#?}");
    let st = replayed(dir.path()).unwrap();
    assert!(
        st.generation > COMPACT_EVERY,
        "the children got through only {} changes: the kills did not reach compactions",
        st.generation
    );
}

/// The net catches a store that acknowledges before the write is done.
#[test]
fn the_kill_9_test_catches_an_acknowledgement_before_the_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = seeded();
    let problems = kill_repeatedly(dir.path(), 12, true, &mut rng);
    assert!(
        problems.iter().any(|p| p.contains("was acknowledged")),
        "{problems:#?}"
    );
}
