//! The network-namespace PoP used by `cargo xtask lab`, the demo and the end-to-end
//! tests (topology and addresses: docs/operations.md).
//!
//! Four namespaces, `<prefix>up` (upstream transit), `<prefix>edge` (runs popd),
//! `<prefix>c1` and `<prefix>c2` (customers), joined by veth pairs. Commands run in a
//! namespace through `nsenter --net=/run/netns/NAME`, never `ip netns exec`, which
//! remounts /sys and would hide /sys/fs/bpf pins in a private bpffs.
//!
//! This crate deliberately does not depend on pop-ebpf: xtask uses it before clang
//! is installed.
#![deny(missing_docs)]

pub mod bgp;
pub mod cmd;
pub mod popd;
pub mod topology;
pub mod traffic;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};

pub use popd::Popd;
pub use traffic::PingStats;

use topology::{EDGE, KERNEL_ROUTES, LINKS, NODES, UP, UP_LOOPBACK};

/// Where `ip netns add` puts named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// Where bpffs is mounted.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// Longest prefix that still leaves room for temporary veth names (IFNAMSIZ is 16).
const MAX_PREFIX_LEN: usize = 12;

/// One lab instance, identified by the prefix of its namespace names
/// (`pop-` for the lab and demo, `pte2e-` for the end-to-end tests).
#[derive(Clone, Debug)]
pub struct Lab {
    prefix: String,
}

impl Lab {
    /// A lab whose namespaces are named `<prefix>up`, `<prefix>edge`, …
    ///
    /// # Panics
    /// If the prefix is empty, longer than 12 bytes, or not made of ASCII letters,
    /// digits, `-` and `_` (it becomes part of interface and file names).
    ///
    /// `$POP_LAB_TAG`, when set, is put in front of the prefix, so that several
    /// checkouts can run their end-to-end tests on one machine at once.
    pub fn new(prefix: &str) -> Lab {
        let tagged = match std::env::var("POP_LAB_TAG") {
            Ok(tag) if !tag.is_empty() && !prefix.starts_with(&tag) => format!("{tag}{prefix}"),
            _ => prefix.to_string(),
        };
        let prefix = tagged.as_str();
        assert!(
            !prefix.is_empty()
                && prefix.len() <= MAX_PREFIX_LEN
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "lab prefix {prefix:?} must be 1-{MAX_PREFIX_LEN} characters of [A-Za-z0-9_-]"
        );
        Lab {
            prefix: prefix.to_string(),
        }
    }

    /// The prefix given to [`Lab::new`].
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Full namespace name of a node: `edge` → `<prefix>edge`. A name that already
    /// carries the prefix is returned unchanged.
    pub fn ns(&self, node: &str) -> String {
        match node.strip_prefix(&self.prefix) {
            Some(short) if NODES.contains(&short) => node.to_string(),
            _ => format!("{}{node}", self.prefix),
        }
    }

    /// `/run/netns/<prefix><node>`.
    pub fn netns_path(&self, node: &str) -> PathBuf {
        Path::new(NETNS_DIR).join(self.ns(node))
    }

    /// The bpffs directory popd pins under in this lab: `/sys/fs/bpf/<prefix>lab`.
    pub fn bpffs_dir(&self) -> PathBuf {
        Path::new(BPFFS_ROOT).join(format!("{}lab", self.prefix))
    }

    /// Whether all four namespaces exist.
    pub fn is_up(&self) -> bool {
        NODES.iter().all(|n| self.netns_path(n).exists())
    }

    /// A command that runs `argv` inside the node's namespace (via nsenter).
    pub fn command(&self, node: &str, argv: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns_path(node).display()))
            .arg("--")
            .args(argv);
        cmd
    }

    /// Runs `argv` in the node's namespace to completion and returns its output,
    /// whatever its exit status.
    pub fn exec(&self, node: &str, argv: &[&str]) -> Result<Output> {
        cmd::output(&mut self.command(node, argv))
    }

    /// Runs `argv` in the node's namespace; fails unless it exits 0. Returns stdout.
    pub fn exec_ok(&self, node: &str, argv: &[&str]) -> Result<String> {
        cmd::run_ok(&mut self.command(node, argv))
    }

    /// Starts `argv` in the node's namespace (stdin closed, stdout/stderr piped).
    pub fn spawn(&self, node: &str, argv: &[&str]) -> Result<Child> {
        let mut cmd = self.command(node, argv);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn()
            .with_context(|| format!("cannot start `{}`", cmd::describe(&cmd)))
    }

    /// Creates the whole topology, after removing any leftovers of an earlier run.
    /// On failure, whatever was created is removed again.
    pub fn up(&self) -> Result<()> {
        self.down()?;
        self.build().inspect_err(|_| {
            let _ = self.down();
        })
    }

    fn build(&self) -> Result<()> {
        for node in NODES {
            run(Command::new("ip").args(["netns", "add", &self.ns(node)]))?;
            // Addresses are static: skip duplicate address detection so IPv6 works at once.
            for key in ["all", "default"] {
                self.exec_ok(
                    node,
                    &[
                        "sysctl",
                        "-qw",
                        &format!("net.ipv6.conf.{key}.accept_dad=0"),
                    ],
                )?;
            }
            self.exec_ok(node, &["ip", "link", "set", "lo", "up"])?;
        }
        // Only XDP forwards on the edge: the kernel must not.
        self.set_edge_forwarding(false)?;

        for (i, link) in LINKS.iter().enumerate() {
            let (tmp_a, tmp_b) = self.temp_veth_names(i);
            run(Command::new("ip").args([
                "link", "add", &tmp_a, "type", "veth", "peer", "name", &tmp_b,
            ]))?;
            for ((node, ifname), tmp, addrs) in [
                (link.a, &tmp_a, link.a_addrs),
                (link.b, &tmp_b, link.b_addrs),
            ] {
                run(Command::new("ip").args(["link", "set", tmp, "netns", &self.ns(node)]))?;
                self.exec_ok(node, &["ip", "link", "set", tmp, "name", ifname])?;
                for addr in addrs {
                    self.add_address(node, ifname, addr)?;
                }
                self.exec_ok(node, &["ip", "link", "set", ifname, "up"])?;
            }
        }
        for addr in UP_LOOPBACK {
            self.add_address(UP, "lo", addr)?;
        }
        for (node, prefix, via) in KERNEL_ROUTES {
            let family = if via.contains(':') { "-6" } else { "-4" };
            self.retry(node, &["ip", family, "route", "add", prefix, "via", via])?;
        }
        for node in NODES.iter().filter(|n| **n != EDGE) {
            // A veth delivers XDP_REDIRECTed frames only if the receiving peer has
            // NAPI, which GRO turns on (docs/operations.md, troubleshooting).
            self.exec_ok(node, &["ethtool", "-K", "eth0", "gro", "on"])?;
            // With TX checksum offload a veth hands over TCP/UDP with the checksum
            // left to "hardware"; XDP redirects the bare frame, so it would arrive
            // with a bad checksum and be dropped. Hosts compute checksums themselves.
            self.exec_ok(node, &["ethtool", "-K", "eth0", "tx", "off"])?;
        }
        Ok(())
    }

    fn add_address(&self, node: &str, ifname: &str, addr: &str) -> Result<()> {
        if addr.contains(':') {
            self.exec_ok(
                node,
                &["ip", "-6", "addr", "add", addr, "dev", ifname, "nodad"],
            )?;
        } else {
            self.exec_ok(node, &["ip", "-4", "addr", "add", addr, "dev", ifname])?;
        }
        Ok(())
    }

    /// Runs a command that may race with the link coming up (a route via an address
    /// whose connected route is being installed) a few times before failing.
    fn retry(&self, node: &str, argv: &[&str]) -> Result<()> {
        let mut last = None;
        for _ in 0..20 {
            match self.exec_ok(node, argv) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
            thread::sleep(Duration::from_millis(100));
        }
        Err(last.expect("at least one attempt"))
    }

    /// Temporary root-namespace names of link `i`'s veth ends.
    fn temp_veth_names(&self, i: usize) -> (String, String) {
        (
            format!("{}l{i}a", self.prefix),
            format!("{}l{i}b", self.prefix),
        )
    }

    /// Removes everything [`Lab::up`] created: processes still running in the
    /// namespaces, the namespaces (and so their veths), leftover temporary veths in
    /// the root namespace and the lab's bpffs directory. Idempotent: missing pieces
    /// are skipped, so it can always be called.
    pub fn down(&self) -> Result<()> {
        let mut errors = Vec::new();
        for node in NODES {
            let name = self.ns(node);
            if !self.netns_path(node).exists() {
                continue;
            }
            // A process left in the namespace (popd, iperf3) would keep it and its
            // veths alive after the name is gone.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &name]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: kill(2) has no memory-safety preconditions.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            if let Err(e) = run(Command::new("ip").args(["netns", "del", &name])) {
                errors.push(e.to_string());
            }
        }
        for i in 0..LINKS.len() {
            let (a, b) = self.temp_veth_names(i);
            for name in [a, b] {
                if Path::new("/sys/class/net").join(&name).exists() {
                    let _ = run(Command::new("ip").args(["link", "del", &name]));
                }
            }
        }
        // bird's config and sockets (the daemons died with the namespaces).
        let _ = std::fs::remove_dir_all(bgp::bgp_dir(self));
        let bpffs = self.bpffs_dir();
        if bpffs.exists() {
            if let Err(e) = std::fs::remove_dir_all(&bpffs) {
                errors.push(format!("cannot remove {}: {e}", bpffs.display()));
            }
        }
        if !errors.is_empty() {
            bail!("lab down: {}", errors.join("; "));
        }
        Ok(())
    }

    /// Attaches the XDP program in the ELF `object` (section `xdp`; e.g. pop-ebpf's
    /// `pass_object()`, which passes everything) to `eth0` of every node but the
    /// edge. A veth hands the frames an XDP program sends back out of its port
    /// (XDP_TX, e.g. pop's ICMP errors) to its peer's queue, but wakes the peer
    /// only when the peer has an XDP program of its own: without one they wait
    /// there until other traffic arrives. Real NICs have no such quirk.
    pub fn attach_host_xdp(&self, object: &[u8]) -> Result<()> {
        let path = std::env::temp_dir().join(format!("{}host-xdp.bpf.o", self.prefix));
        std::fs::write(&path, object).with_context(|| format!("writing {}", path.display()))?;
        let file = path.to_string_lossy().into_owned();
        let result = NODES.iter().filter(|n| **n != EDGE).try_for_each(|node| {
            self.exec_ok(
                node,
                &[
                    "ip", "link", "set", "dev", "eth0", "xdpdrv", "obj", &file, "sec", "xdp",
                ],
            )
            .map(|_| ())
        });
        let _ = std::fs::remove_file(&path);
        result
    }

    /// Turns kernel IPv4 and IPv6 forwarding on the edge on or off. The lab keeps it
    /// off (only XDP forwards); turning it on proves the topology without popd.
    pub fn set_edge_forwarding(&self, on: bool) -> Result<()> {
        let value = if on { "1" } else { "0" };
        self.exec_ok(
            EDGE,
            &["sysctl", "-qw", &format!("net.ipv4.ip_forward={value}")],
        )?;
        self.exec_ok(
            EDGE,
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.all.forwarding={value}"),
            ],
        )?;
        Ok(())
    }

    /// The edge's kernel forwarding sysctls: `(net.ipv4.ip_forward, net.ipv6.conf.all.forwarding)`.
    pub fn edge_forwarding(&self) -> Result<(String, String)> {
        let v4 = self.exec_ok(EDGE, &["sysctl", "-n", "net.ipv4.ip_forward"])?;
        let v6 = self.exec_ok(EDGE, &["sysctl", "-n", "net.ipv6.conf.all.forwarding"])?;
        Ok((v4.trim().to_string(), v6.trim().to_string()))
    }

    /// Interfaces of a node with an XDP program attached: `(interface, details)`,
    /// details being `ip -j link`'s `xdp` object.
    pub fn xdp_attached(&self, node: &str) -> Result<Vec<(String, serde_json::Value)>> {
        let text = self.exec_ok(node, &["ip", "-j", "link", "show"])?;
        let links: serde_json::Value =
            serde_json::from_str(&text).context("cannot parse `ip -j link show`")?;
        let mut out = Vec::new();
        for link in links.as_array().into_iter().flatten() {
            if let (Some(name), Some(xdp)) = (link["ifname"].as_str(), link.get("xdp")) {
                out.push((name.to_string(), xdp.clone()));
            }
        }
        Ok(out)
    }

    /// A human-readable report: which namespaces exist, their interfaces and
    /// addresses, XDP programs on the edge, and the lab's bpffs directory.
    pub fn status(&self) -> Result<String> {
        let mut out = String::new();
        let present = NODES.iter().filter(|n| self.netns_path(n).exists()).count();
        let state = match present {
            0 => "down",
            4 => "up",
            _ => "partly up (run `down` to clean it)",
        };
        writeln!(
            out,
            "lab {}*: {state} ({present}/4 namespaces)",
            self.prefix
        )?;
        for node in NODES {
            let name = self.ns(node);
            if !self.netns_path(node).exists() {
                writeln!(out, "\n{name}: missing")?;
                continue;
            }
            writeln!(out, "\n{name}:")?;
            let addrs = self.exec(node, &["ip", "-br", "addr", "show"])?;
            for line in String::from_utf8_lossy(&addrs.stdout).lines() {
                writeln!(out, "  {line}")?;
            }
            for (ifname, xdp) in self.xdp_attached(node)? {
                writeln!(out, "  xdp on {ifname}: {}", describe_xdp(&xdp))?;
            }
            if node == EDGE {
                let (v4, v6) = self.edge_forwarding()?;
                writeln!(out, "  kernel forwarding: ipv4 {v4}, ipv6 {v6}")?;
            }
        }
        let bpffs = self.bpffs_dir();
        match std::fs::read_dir(&bpffs) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                writeln!(out, "\nbpffs {}: {}", bpffs.display(), names.join(" "))?;
            }
            Err(_) => writeln!(out, "\nbpffs {}: absent", bpffs.display())?,
        }
        Ok(out)
    }

    /// Pings `dst` from `node` (`count` packets, `interval_s` apart) and returns the
    /// counts ping reports. A ping with losses is not an error; one that cannot run is.
    pub fn ping(&self, node: &str, dst: &str, count: u32, interval_s: f64) -> Result<PingStats> {
        let out = self.exec(
            node,
            &[
                "ping",
                "-n",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                &interval_s.to_string(),
                "-W",
                "1",
                dst,
            ],
        )?;
        PingStats::parse(&String::from_utf8_lossy(&out.stdout)).with_context(|| {
            format!(
                "ping {dst} from {}: {}",
                self.ns(node),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
    }
}

/// `native, prog pop_xdp id 42` from `ip -j link`'s `xdp` object.
fn describe_xdp(xdp: &serde_json::Value) -> String {
    let mode = match xdp["mode"].as_u64() {
        Some(1) => "native",
        Some(2) => "generic",
        Some(3) => "offload",
        _ => "?",
    };
    let prog = &xdp["prog"];
    format!(
        "{mode}, prog {} id {}",
        prog["name"].as_str().unwrap_or("?"),
        prog["id"]
    )
}

fn run(cmd: &mut Command) -> Result<()> {
    cmd::run_ok(cmd).map(|_| ())
}

/// Whether the process runs as root (the lab needs it).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Mounts bpffs at /sys/fs/bpf unless it already is (a fresh machine has none).
pub fn ensure_bpffs() -> Result<()> {
    if is_bpffs(BPFFS_ROOT) {
        return Ok(());
    }
    println!("mounting bpffs at {BPFFS_ROOT}");
    std::fs::create_dir_all(BPFFS_ROOT)?;
    run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS_ROOT]))?;
    if !is_bpffs(BPFFS_ROOT) {
        bail!("mounted bpffs at {BPFFS_ROOT} but it does not show in /proc/self/mounts");
    }
    Ok(())
}

fn is_bpffs(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 2 && fields[1] == path && fields[2] == "bpf"
        })
}
