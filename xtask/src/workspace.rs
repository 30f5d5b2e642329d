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

/// pop-ebpf's `pass.bpf.o` (an XDP program that passes everything) from the
/// last build: xtask cannot depend on pop-ebpf (it runs before clang is
/// installed), so it takes the object from the build directory.
pub fn pass_object() -> Result<Vec<u8>> {
    let build = target_dir().join("debug").join("build");
    let newest = std::fs::read_dir(&build)
        .with_context(|| format!("reading {}", build.display()))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pop-ebpf-"))
        .map(|e| e.path().join("out").join("pass.bpf.o"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .max();
    match newest {
        Some((_, path)) => {
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        }
        None => bail!("no pass.bpf.o under {}: build first", build.display()),
    }
}

/// Gives the lab's hosts (not the edge) an XDP program that passes everything.
/// A veth wakes its peer for frames an XDP program sends back out of the port
/// it came in on (XDP_TX: pop's ICMP errors) only when the peer has an XDP
/// program of its own; without one, traceroute through the lab would see no
/// hop until other traffic arrives. Real NICs have no such quirk.
pub fn attach_host_xdp(lab: &pop_lab::Lab) -> Result<()> {
    lab.attach_host_xdp(&pass_object()?)
        .context("attaching a pass-through XDP program to the lab's hosts")
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
