//! BGP in the lab (`cargo xtask lab up --bgp N`, the BGP end-to-end tests): the
//! upstream runs a bird2 that announces a generated table over eBGP (one IPv4
//! and one IPv6 session), and the edge runs a bird2 that imports it and exports
//! it into kernel routing table [`KERNEL_TABLE`], which popd follows
//! (`[kernel_routes] table = 100`).
//!
//! The upstream's announcements come from static protocols that can be turned
//! off and on with birdc (a withdraw and a re-announce):
//! - `internet4` / `internet6`: the prefixes of the upstream's "internet"
//!   addresses ([`INTERNET4_PREFIX`], [`INTERNET6_PREFIX`]), which pings reach;
//! - `table4` / `table6`: the generated table, /24s from 10.0.0.0 upwards and
//!   /48s from 2a00::/16 ([`generated_v4`], [`generated_v6`]);
//! - `churn4`: a further block of /24s from 64.0.0.0, for withdraw/announce cycles.
//!
//! bird2 runs as `bird -f -c CONF -s SOCK -P PIDFILE` inside the namespace; its
//! files are in `<tmp>/<prefix>bgp/`.
use std::{
    fmt::Write as _,
    fs,
    path::PathBuf,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    topology::{self, EDGE, UP},
    Lab,
};

/// The kernel routing table the edge's bird2 exports into.
pub const KERNEL_TABLE: u32 = 100;
/// Announced by `internet4`: holds the upstream's "internet" IPv4 address.
pub const INTERNET4_PREFIX: &str = "100.64.0.0/24";
/// Announced by `internet6`: holds the upstream's "internet" IPv6 address.
pub const INTERNET6_PREFIX: &str = "2001:db8:ffff:1::/64";

/// The `i`-th generated IPv4 prefix (a /24 from 10.0.0.0).
pub fn generated_v4(i: u32) -> String {
    let a = (10u32 << 24) + (i << 8);
    format!("{}.{}.{}.0/24", a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff)
}

/// The `i`-th generated IPv6 prefix (a /48 in 2a00::/16).
pub fn generated_v6(i: u32) -> String {
    format!("2a00:{:x}:{:x}::/48", i >> 16, i & 0xffff)
}

/// The `i`-th churn prefix (a /24 from 64.0.0.0).
pub fn churn_v4(i: u32) -> String {
    let a = (64u32 << 24) + (i << 8);
    format!("{}.{}.{}.0/24", a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff)
}

/// How many prefixes the upstream announces.
#[derive(Clone, Copy, Debug, Default)]
pub struct Table {
    /// Generated IPv4 /24s (`table4`).
    pub v4: u32,
    /// Generated IPv6 /48s (`table6`).
    pub v6: u32,
    /// Churn IPv4 /24s (`churn4`).
    pub churn_v4: u32,
}

/// The two bird2 daemons of a lab.
pub struct Bgp {
    lab: Lab,
    dir: PathBuf,
    table: Table,
    children: Vec<Child>,
}

fn static_block(
    out: &mut String,
    name: &str,
    family: &str,
    prefixes: impl Iterator<Item = String>,
) {
    let _ = writeln!(out, "protocol static {name} {{\n  {family};");
    for p in prefixes {
        let _ = writeln!(out, "  route {p} blackhole;");
    }
    out.push_str("}\n");
}

/// The upstream's bird2 config: static routes exported over eBGP with itself
/// as the next hop.
pub fn upstream_config(t: &Table) -> String {
    let mut c = String::from("router id 192.0.2.1;\nprotocol device {}\n");
    static_block(
        &mut c,
        "internet4",
        "ipv4",
        std::iter::once(INTERNET4_PREFIX.into()),
    );
    static_block(
        &mut c,
        "internet6",
        "ipv6",
        std::iter::once(INTERNET6_PREFIX.into()),
    );
    static_block(&mut c, "table4", "ipv4", (0..t.v4).map(generated_v4));
    static_block(&mut c, "table6", "ipv6", (0..t.v6).map(generated_v6));
    static_block(&mut c, "churn4", "ipv4", (0..t.churn_v4).map(churn_v4));
    c.push_str(
        "protocol bgp edge4 {\n  local 192.0.2.1 as 65000;\n  neighbor 192.0.2.2 as 65001;\n  \
         ipv4 { import none; export all; next hop self; };\n}\n\
         protocol bgp edge6 {\n  local 2001:db8:ffff::1 as 65000;\n  neighbor 2001:db8:ffff::2 as 65001;\n  \
         ipv6 { import none; export all; next hop self; };\n}\n",
    );
    c
}

/// The edge's bird2 config: every route learned over eBGP goes into kernel
/// table [`KERNEL_TABLE`].
pub fn edge_config() -> String {
    format!(
        "router id 192.0.2.2;\nprotocol device {{}}\n\
         protocol kernel k4 {{\n  ipv4 {{ import none; export all; }};\n  kernel table {KERNEL_TABLE};\n}}\n\
         protocol kernel k6 {{\n  ipv6 {{ import none; export all; }};\n  kernel table {KERNEL_TABLE};\n}}\n\
         protocol bgp up4 {{\n  local 192.0.2.2 as 65001;\n  neighbor 192.0.2.1 as 65000;\n  \
         ipv4 {{ import all; export none; }};\n}}\n\
         protocol bgp up6 {{\n  local 2001:db8:ffff::2 as 65001;\n  neighbor 2001:db8:ffff::1 as 65000;\n  \
         ipv6 {{ import all; export none; next hop prefer global; }};\n}}\n"
    )
}

impl Bgp {
    /// Starts bird2 on the upstream (announcing `table`) and on the edge.
    pub fn start(lab: &Lab, table: Table) -> Result<Bgp> {
        let dir = bgp_dir(lab);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut bgp = Bgp {
            lab: lab.clone(),
            dir,
            table,
            children: Vec::new(),
        };
        for (node, config) in [(EDGE, edge_config()), (UP, upstream_config(&table))] {
            let conf = bgp.dir.join(format!("{node}.conf"));
            fs::write(&conf, config)?;
            let sock = bgp.socket(node);
            let pid = bgp.dir.join(format!("{node}.pid"));
            let argv = [
                "bird",
                "-f",
                "-c",
                &conf.to_string_lossy(),
                "-s",
                &sock.to_string_lossy(),
                "-P",
                &pid.to_string_lossy(),
            ]
            .map(|s| s.to_string());
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let mut cmd = lab.command(node, &argv);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let child = cmd
                .spawn()
                .context("cannot start bird (apt-get install bird2)")?;
            bgp.children.push(child);
        }
        Ok(bgp)
    }

    /// The announced table.
    pub fn table(&self) -> Table {
        self.table
    }

    /// The control socket of a node's bird.
    pub fn socket(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.ctl"))
    }

    /// `birdc -s SOCK ARGS` on a node; fails unless it exits 0.
    pub fn birdc(&self, node: &str, args: &[&str]) -> Result<String> {
        let sock = self.socket(node).to_string_lossy().into_owned();
        let mut argv = vec!["birdc", "-s", sock.as_str()];
        argv.extend_from_slice(args);
        self.lab.exec_ok(node, &argv)
    }

    /// Withdraws (false) or announces again (true) a static protocol's routes
    /// on the upstream: `internet4`, `table4`, `churn4`, ...
    pub fn announce(&self, protocol: &str, on: bool) -> Result<()> {
        let verb = if on { "enable" } else { "disable" };
        self.birdc(UP, &[verb, protocol]).map(|_| ())
    }

    /// Routes in the edge's kernel table: (IPv4, IPv6).
    pub fn kernel_routes(&self) -> Result<(usize, usize)> {
        kernel_route_counts(&self.lab)
    }

    /// Waits until the edge's kernel table holds `v4` and `v6` routes.
    pub fn wait_kernel_routes(&self, v4: usize, v6: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.kernel_routes()?;
            if got == (v4, v6) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "kernel table {KERNEL_TABLE} holds {got:?} routes (IPv4, IPv6), expected ({v4}, {v6}); \
                     bird: {}",
                    self.birdc(EDGE, &["show", "protocols"]).unwrap_or_default()
                );
            }
            // Each look lists the whole table: not too often for a big one.
            let pause = if v4 + v6 > 100_000 { 1000 } else { 200 };
            thread::sleep(Duration::from_millis(pause));
        }
    }

    /// Leaves both bird daemons running after this handle is gone (`lab up
    /// --bgp`); `lab down` stops them with the namespaces.
    pub fn release(mut self) {
        self.children.clear();
        std::mem::forget(self);
    }

    /// Everything the upstream announces when every protocol is on: (IPv4, IPv6).
    pub fn announced(&self) -> (usize, usize) {
        (
            1 + self.table.v4 as usize + self.table.churn_v4 as usize,
            1 + self.table.v6 as usize,
        )
    }
}

impl Drop for Bgp {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The directory of a lab's bird files.
pub fn bgp_dir(lab: &Lab) -> PathBuf {
    std::env::temp_dir().join(format!("{}bgp", lab.prefix()))
}

/// popd's config for the BGP lab: interfaces, customers and their routes, no
/// default routes (the upstream's prefixes are learned), and `[kernel_routes]`
/// following [`KERNEL_TABLE`].
pub fn popd_config() -> String {
    let mut c = topology::base_config();
    for cu in topology::POP_CUSTOMERS {
        let _ = write!(
            c,
            "\n[[customers]]\nname = \"{}\"\nprefixes = [\"{}\", \"{}\"]\ninterfaces = [\"{}\"]\n",
            cu.name, cu.prefixes[0], cu.prefixes[1], cu.iface
        );
    }
    for r in configured_routes() {
        let _ = write!(
            c,
            "\n[[routes]]\nprefix = \"{}\"\nvia = [\"{}\"]\ndev = \"{}\"\n",
            r.prefix, r.via, r.dev
        );
    }
    let _ = write!(c, "\n[kernel_routes]\ntable = {KERNEL_TABLE}\n");
    c
}

/// The configured routes of [`popd_config`]: the lab's routes to the customers.
pub fn configured_routes() -> impl Iterator<Item = &'static topology::PopRoute> {
    topology::POP_ROUTES
        .iter()
        .filter(|r| r.prefix != "0.0.0.0/0" && r.prefix != "::/0")
}

/// Routes in the edge's kernel table [`KERNEL_TABLE`]: (IPv4, IPv6).
pub fn kernel_route_counts(lab: &Lab) -> Result<(usize, usize)> {
    let table = KERNEL_TABLE.to_string();
    let count = |family: &str| -> Result<usize> {
        let out = lab.exec(EDGE, &["ip", family, "route", "show", "table", &table])?;
        // An empty IPv6 table does not exist yet: that is 0 routes.
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with(char::is_whitespace))
            .count())
    };
    Ok((count("-4")?, count("-6")?))
}
