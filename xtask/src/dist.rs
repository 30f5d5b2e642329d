//! `cargo xtask dist`: the Debian package (see [`xtask::deb`]) and a release
//! tarball with the binaries, man pages, completions, unit, docs and an example
//! config, both from one release build.
use std::{fs, path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::{
    prereqs::{self, Needs},
    workspace::{self, step},
};

/// An example `/etc/pop/pop.toml` (every section is in docs/reference.md),
/// shipped in the tarball as `etc/pop.toml.example`.
const EXAMPLE_CONFIG: &str = r#"# pop's config: /etc/pop/pop.toml. popd reads it at start and on SIGHUP;
# `popctl export` prints the live state in this format and `popctl apply` takes it.

[dataplane]
xdp_mode = "auto"        # auto: native, else generic with a warning and a metric | native | generic
no_route = "pass"        # pass to the kernel | drop

[icmp]                   # the ICMP errors pop sends itself (TTL expired, too big)
rate_per_s = 1000        # per CPU, token bucket, like the kernel's icmp_msgs_per_sec
burst = 50

[[interfaces]]
name = "eth0"
role = "upstream"

[[interfaces]]
name = "eth1"
role = "customer"

[[customers]]
name = "acme"
prefixes = ["198.51.100.0/24", "2001:db8:a::/48"]
interfaces = ["eth1"]
anti_spoofing = true
rate_bps = 100000000
burst_bytes = 1250000

[[routes]]
prefix = "0.0.0.0/0"
via = ["192.0.2.1"]
dev = "eth0"

[[routes]]
prefix = "198.51.100.0/24"
via = ["198.51.100.10"]
dev = "eth1"

[[acls]]
priority = 100
action = "drop"
dst = "198.51.100.10/32"
proto = "tcp"
dst_port = "22"
in_iface = "eth0"
"#;

/// Builds in release mode and packs target/dist/pop_<version>-1_amd64.deb and
/// target/dist/pop-<version>-x86_64.tar.gz.
pub fn run() -> Result<()> {
    prereqs::ensure_prereqs("dist", Needs::Build)?;
    for (tool, package) in [
        ("dpkg-deb", "dpkg"),
        ("dpkg-shlibdeps", "dpkg-dev"),
        ("strip", "binutils"),
        ("gzip", "gzip"),
    ] {
        if prereqs::find_in_path(tool).is_none() {
            bail!("cargo xtask dist needs {tool}: apt-get install -y {package}");
        }
    }
    step("cargo build --release -p pop-userspace");
    workspace::run_cargo(&["build", "--release", "-p", "pop-userspace"])?;
    let version = env!("CARGO_PKG_VERSION");
    let dist = workspace::target_dir().join("dist");
    fs::create_dir_all(&dist)?;
    let release = workspace::target_dir().join("release");
    step("building the Debian package with dpkg-deb");
    let deb = xtask::deb::build(&xtask::deb::Inputs {
        root: workspace::root(),
        bin_dir: release.clone(),
        out_dir: dist.clone(),
        version: version.to_string(),
    })?;
    println!("{}", deb.display());
    let name = format!("pop-{version}-x86_64");
    let stage = dist.join(&name);
    step(&format!(
        "packing {}",
        dist.join(format!("{name}.tar.gz")).display()
    ));
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    fs::create_dir_all(stage.join("bin"))?;
    fs::create_dir_all(stage.join("etc"))?;
    for bin in ["popd", "popctl"] {
        copy(&release.join(bin), &stage.join("bin").join(bin))?;
    }
    // Man pages and completions (man/, completions/), and the systemd unit.
    let status = Command::new(release.join("pop-docgen"))
        .arg(&stage)
        .stdout(std::process::Stdio::null())
        .status()
        .context("cannot run pop-docgen")?;
    if !status.success() {
        bail!("pop-docgen failed ({status})");
    }
    let packaging = workspace::root().join("packaging/debian");
    copy(
        &packaging.join(xtask::deb::UNIT),
        &stage.join("etc").join(xtask::deb::UNIT),
    )?;
    let root = workspace::root();
    copy(&root.join("README.md"), &stage.join("README.md"))?;
    copy_dir(&root.join("docs"), &stage.join("docs"))?;
    fs::write(stage.join("etc/pop.toml.example"), EXAMPLE_CONFIG)?;
    let tarball = dist.join(format!("{name}.tar.gz"));
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dist)
        .arg(&name)
        .status()
        .context("cannot run tar")?;
    if !status.success() {
        bail!("tar failed ({status})");
    }
    fs::remove_dir_all(&stage)?;
    println!("{}", tarball.display());
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            copy(&entry.path(), &target)?;
        }
    }
    Ok(())
}
