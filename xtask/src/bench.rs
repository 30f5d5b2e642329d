//! `cargo xtask bench [--quick] [--json FILE]`: builds and runs `pop-bench`
//! (tests/src/bin/pop-bench), which measures test_run cost, lab throughput
//! against kernel forwarding and nftables, and the control plane. See
//! docs/benchmarks.md.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::prereqs::{self, Needs};
use crate::workspace::{self, step};

/// Runs the benchmarks. The full run uses a release build and writes the plots
/// into docs/bench/; `--quick` reuses the debug build (a CI smoke run) and writes
/// its plots under target/bench/.
pub fn run(quick: bool, json: Option<PathBuf>) -> Result<()> {
    prereqs::ensure_prereqs("bench", Needs::Lab)?;
    workspace::build(!quick)?;
    let profile = if quick { "debug" } else { "release" };
    let bin = workspace::target_dir().join(profile).join("pop-bench");
    let plots = if quick {
        workspace::target_dir().join("bench")
    } else {
        workspace::root().join("docs/bench")
    };
    let mut cmd = Command::new(&bin);
    cmd.arg("--plots").arg(&plots);
    if quick {
        cmd.arg("--quick");
    }
    if let Some(path) = json {
        let abs = if path.is_absolute() {
            path
        } else {
            std::env::current_dir()?.join(path)
        };
        cmd.arg("--json").arg(abs);
    }
    step(&format!(
        "{} {}",
        display(&bin),
        if quick { "--quick" } else { "" }
    ));
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !status.success() {
        bail!("pop-bench failed ({status})");
    }
    Ok(())
}

fn display(p: &Path) -> String {
    p.strip_prefix(workspace::root())
        .unwrap_or(p)
        .display()
        .to_string()
}
