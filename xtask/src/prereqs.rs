//! Checking for (and installing) what pop's build, lab and tests need.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// Every package the build, lab, demo and tests use (Debian bookworm names).
pub const APT_PACKAGES: &[&str] = &[
    "clang-16",
    "llvm-16",
    "libbpf-dev",
    "bpftool",
    "iproute2",
    "ethtool",
    "iputils-ping",
    "iperf3",
    "nftables",
    "curl",
    "util-linux",
    "prometheus",
    "traceroute",
    "bird2",
    // The Debian package: built (dist) and checked (tests/tests/deb.rs).
    "dpkg-dev",
    "binutils",
    "lintian",
    "systemd",
    "man-db",
    "pmacct",
    "tshark",
    "tcpdump",
];

/// Answers tshark's install question (may non-root users capture?) with no,
/// so a non-interactive install does not stop on it.
const DEBCONF_PRESEED: &str = "wireshark-common wireshark-common/install-setuid boolean false\n";

/// Where `bpf_helpers.h` must be for pop-ebpf's build script.
const BPF_HELPERS: &str = "/usr/include/bpf/bpf_helpers.h";

/// What a task needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Only the BPF compiler and headers (build, dist).
    Build,
    /// Root and every tool of the lab and the tests (lab, demo, test).
    Lab,
}

/// Makes sure the task `task` can run: root if it touches the network, the tools
/// installed (with apt-get when missing and possible), bpffs mounted.
pub fn ensure_prereqs(task: &str, needs: Needs) -> Result<()> {
    let root = pop_lab::is_root();
    if needs == Needs::Lab {
        require_root(task);
    }
    let missing = missing_tools(needs);
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|(what, _)| *what).collect();
        let apt = find_in_path("apt-get");
        match apt {
            Some(apt) if root => install(&apt, &names)?,
            _ => {
                let mut pkgs: Vec<&str> = missing.iter().map(|(_, pkg)| *pkg).collect();
                pkgs.dedup();
                bail!(
                    "cargo xtask {task}: missing {}; install them (as root: `apt-get install -y {}`) \
                     or run this as root on Debian to have them installed",
                    names.join(", "),
                    pkgs.join(" ")
                );
            }
        }
        let still = missing_tools(needs);
        if !still.is_empty() {
            let names: Vec<&str> = still.iter().map(|(what, _)| *what).collect();
            bail!("still missing after installing: {}", names.join(", "));
        }
    }
    if needs == Needs::Lab {
        pop_lab::ensure_bpffs()?;
    }
    Ok(())
}

/// Exits with a clear message unless running as root.
pub fn require_root(task: &str) {
    if !pop_lab::is_root() {
        eprintln!("cargo xtask {task} needs root (network namespaces, BPF): run it as root");
        std::process::exit(1);
    }
}

/// The missing tools as `(what, Debian package)`.
fn missing_tools(needs: Needs) -> Vec<(&'static str, &'static str)> {
    let mut missing = Vec::new();
    if !clang_present() {
        missing.push(("clang-16", "clang-16"));
    }
    if !Path::new(BPF_HELPERS).exists() {
        missing.push(("libbpf headers", "libbpf-dev"));
    }
    if needs == Needs::Lab {
        for (tool, pkg) in [
            ("bpftool", "bpftool"),
            ("ip", "iproute2"),
            ("ethtool", "ethtool"),
            ("ping", "iputils-ping"),
            ("iperf3", "iperf3"),
            ("nft", "nftables"),
            ("curl", "curl"),
            ("nsenter", "util-linux"),
            ("promtool", "prometheus"),
            ("traceroute", "traceroute"),
            ("bird", "bird2"),
            ("birdc", "bird2"),
            ("dpkg-shlibdeps", "dpkg-dev"),
            ("strip", "binutils"),
            ("lintian", "lintian"),
            ("systemd-analyze", "systemd"),
            ("setpriv", "util-linux"),
            ("man", "man-db"),
            ("sfacctd", "pmacct"),
            ("tshark", "tshark"),
            ("tcpdump", "tcpdump"),
        ] {
            if find_in_path(tool).is_none() {
                missing.push((tool, pkg));
            }
        }
    }
    missing
}

/// `$POP_CLANG` if set, else any clang-16..19 (what pop-ebpf's build script accepts).
fn clang_present() -> bool {
    if let Some(clang) = env::var_os("POP_CLANG") {
        let clang = PathBuf::from(clang);
        return clang.is_absolute() && clang.exists()
            || find_in_path(&clang.to_string_lossy()).is_some();
    }
    ["clang-16", "clang-17", "clang-18", "clang-19"]
        .iter()
        .any(|c| find_in_path(c).is_some())
}

/// Looks `name` up in PATH and the sbin directories (which a non-root PATH may lack).
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn install(apt: &Path, missing: &[&str]) -> Result<()> {
    println!("missing: {}", missing.join(", "));
    println!("installing: {}", APT_PACKAGES.join(" "));
    // A fresh machine has no package lists: without an update, installs 404.
    let update = Command::new(apt)
        .arg("update")
        .status()
        .context("cannot run apt-get update")?;
    if !update.success() {
        bail!("`apt-get update` failed ({update})");
    }
    preseed_debconf()?;
    let status = Command::new(apt)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y"])
        .args(APT_PACKAGES)
        .status()
        .context("cannot run apt-get install")?;
    if !status.success() {
        bail!(
            "`apt-get install -y {}` failed ({status})",
            APT_PACKAGES.join(" ")
        );
    }
    Ok(())
}

fn preseed_debconf() -> Result<()> {
    use std::io::Write;
    let Some(tool) = find_in_path("debconf-set-selections") else {
        return Ok(());
    };
    let mut child = Command::new(tool)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("cannot run debconf-set-selections")?;
    child
        .stdin
        .take()
        .context("debconf-set-selections stdin")?
        .write_all(DEBCONF_PRESEED.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("`debconf-set-selections` failed ({status})");
    }
    Ok(())
}
