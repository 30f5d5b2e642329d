//! `cargo xtask fuzz`: a long differential fuzzing run of the XDP program
//! against the reference model (the test `program_and_model_agree` in
//! `tests/tests/fuzz.rs`, with more frames and a chosen seed).
use anyhow::{bail, Context, Result};

use crate::{
    prereqs::{self, Needs},
    workspace::{self, step},
};

/// Runs the fuzz test with `frames` frames from `seed` (release build when
/// `release`, for long runs).
pub fn run(frames: u64, seed: Option<u64>, release: bool) -> Result<()> {
    prereqs::ensure_prereqs("fuzz", Needs::Build)?;
    let mut args = vec!["test", "-p", "pop-tests", "--test", "fuzz"];
    if release {
        args.push("--release");
    }
    args.extend(["--", "--exact", "program_and_model_agree", "--nocapture"]);
    step(&format!(
        "cargo {} (POP_FUZZ_FRAMES={frames}{})",
        args.join(" "),
        seed.map(|s| format!(" POP_FUZZ_SEED={s}"))
            .unwrap_or_default()
    ));
    let mut cmd = workspace::cargo();
    cmd.args(&args).env("POP_FUZZ_FRAMES", frames.to_string());
    if let Some(seed) = seed {
        cmd.env("POP_FUZZ_SEED", seed.to_string());
    }
    let status = cmd.status().context("cannot run cargo test")?;
    if !status.success() {
        bail!(
            "the fuzz run failed ({status}): its output says why, a difference \
             with its reproduction (save it as tests/fuzz-corpus/NAME.case once \
             fixed) or a verdict under 1% of the frames"
        );
    }
    Ok(())
}
