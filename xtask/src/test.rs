//! `cargo xtask test`: what CI runs, in order, stopping at the first failure.
use anyhow::{Context, Result};

use crate::{
    prereqs::{self, Needs},
    workspace::{self, step},
};

/// The steps, each a cargo invocation.
const STEPS: &[&[&str]] = &[
    &["fmt", "--all", "--check"],
    &[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ],
    // The end-to-end tests run target/debug/popd and popctl: build them first.
    &["build", "--workspace"],
    &["test", "--workspace"],
];

/// Runs every step.
pub fn run() -> Result<()> {
    prereqs::ensure_prereqs("test", Needs::Lab)?;
    for (i, args) in STEPS.iter().enumerate() {
        step(&format!(
            "[{}/{}] cargo {}",
            i + 1,
            STEPS.len(),
            args.join(" ")
        ));
        workspace::run_cargo(args)
            .with_context(|| format!("step {} of {} failed", i + 1, STEPS.len()))?;
    }
    step("bench --quick (smoke run, no timing assertions)");
    crate::bench::run(true, None).context("the benchmark smoke run failed")?;
    println!(
        "\nall {} steps and the benchmark smoke run passed",
        STEPS.len()
    );
    Ok(())
}
