//! `pop-bench --only single`: the single changes that are not routes,
//! alone (no million-route load, no BGP lab): `metrics_10k_customers_ms` and
//! `customer_add_10k_ms` on 10k customers (1k with `--quick`).
//!
//! With `POP_BENCH_BIN_B=DIR` (a directory holding another build's popd and
//! popctl) the same measurements run for both builds, alternating A, B, A,
//! B in one lab, and each key is the median over its build's passes: an A/B
//! comparison on a machine whose load changes.
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use pop_lab::popd::Popd;
use pop_lab::Lab;

use crate::control_plane::{config, customer_changes};
use crate::report::{median, ControlPlane};
use crate::Opts;

/// Passes per build when comparing two builds.
const PASSES: usize = 2;

/// Runs the customer single changes for this build (and build B if given);
/// returns this build's figures.
pub fn run(o: &Opts) -> Result<ControlPlane> {
    let lab = Lab::new("pbsc-");
    lab.up().context("lab up")?;
    let r = run_in_lab(o, &lab);
    let _ = lab.down();
    r
}

fn run_in_lab(o: &Opts, lab: &Lab) -> Result<ControlPlane> {
    let b = std::env::var_os("POP_BENCH_BIN_B").map(PathBuf::from);
    let mut builds = vec![("A", o.bin_dir.clone())];
    builds.extend(b.map(|d| ("B", d)));
    let passes = if builds.len() > 1 { PASSES } else { 1 };
    // (scrape ms, add ms) per build and pass.
    let mut got: Vec<Vec<(f64, f64)>> = vec![Vec::new(); builds.len()];
    for pass in 0..passes {
        for (i, (label, dir)) in builds.iter().enumerate() {
            let cp = one(o, lab, dir)?;
            let (scrape, add) = (
                cp.metrics_10k_customers_ms.unwrap_or_default(),
                cp.customer_add_10k_ms.unwrap_or_default(),
            );
            eprintln!(
                "  pass {pass} build {label} ({}): metrics {scrape:.1} ms, customer add {add:.2} ms",
                dir.display()
            );
            got[i].push((scrape, add));
        }
    }
    for (i, (label, _)) in builds.iter().enumerate() {
        let scrape = median(&got[i].iter().map(|g| g.0).collect::<Vec<_>>());
        let add = median(&got[i].iter().map(|g| g.1).collect::<Vec<_>>());
        eprintln!(
            "  build {label}: metrics_10k_customers_ms {scrape:.1}, customer_add_10k_ms {add:.2}"
        );
    }
    if builds.len() > 1 {
        let m =
            |i: usize, f: fn(&(f64, f64)) -> f64| median(&got[i].iter().map(f).collect::<Vec<_>>());
        eprintln!(
            "  A/B: metrics {:.2}x, customer add {:.2}x",
            m(0, |g| g.0) / m(1, |g| g.0),
            m(0, |g| g.1) / m(1, |g| g.1)
        );
    }
    let a = &got[0];
    let customers = if o.quick { 1_000 } else { 10_000 };
    Ok(ControlPlane {
        metrics_10k_customers_ms: Some(median(&a.iter().map(|g| g.0).collect::<Vec<_>>())),
        customer_add_10k_ms: Some(median(&a.iter().map(|g| g.1).collect::<Vec<_>>())),
        customers_loaded: customers as u64,
        ..Default::default()
    })
}

/// One popd from `bin_dir` with the customers loaded: its figures.
fn one(o: &Opts, lab: &Lab, bin_dir: &std::path::Path) -> Result<ControlPlane> {
    let state = tempfile::tempdir()?;
    let mut popd = Popd::new(lab, bin_dir, state.path(), &config(&[], 0, 0, 1))?;
    popd.start()?;
    thread::sleep(Duration::from_millis(500));
    let mut cp = ControlPlane::default();
    let o = Opts {
        bin_dir: bin_dir.to_path_buf(),
        quick: o.quick,
        json: None,
        plots: None,
        parts: Vec::new(),
    };
    let r = customer_changes(&o, lab, &popd, &mut cp);
    let _ = popd.shutdown_detach();
    r.map(|_| cp)
}
