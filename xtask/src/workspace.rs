//! The workspace on disk and cargo invocations.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// The workspace root (the parent of xtask/).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// The cargo that runs us (`$CARGO`), else `cargo` from PATH.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// The target directory (`$CARGO_TARGET_DIR` or `<root>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// Where the debug binaries popd and popctl are.
pub fn debug_bin_dir() -> PathBuf {
    target_dir().join("debug")
}

/// Runs `cargo ARGS` with inherited output; fails unless it exits 0.
pub fn run_cargo(args: &[&str]) -> Result<()> {
    let status = cargo()
        .args(args)
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// `cargo build --workspace [--release]`.
pub fn build(release: bool) -> Result<()> {
    let mut args = vec!["build", "--workspace"];
    if release {
        args.push("--release");
    }
    step(&format!("cargo {}", args.join(" ")));
    run_cargo(&args)
}

/// Prints a step header.
pub fn step(title: &str) {
    println!("\n==> {title}");
}
