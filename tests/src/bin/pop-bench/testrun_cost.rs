//! Per-packet cost through BPF_PROG_TEST_RUN, against the XDP_PASS reference
//! and a minimal router measured in the same rounds. Forwarding cases cycle
//! through up to 64k frames whose addresses are drawn from the tables
//! (cycle.rs), so lookups pay the cache misses real traffic pays.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{anyhow, Result};
use aya::maps::{Map, MapData};
use pop_common::{PopNexthop, PopRoute, Role, NH_RESOLVED, NH_VALID};
use pop_tests::rng::Rng;
use pop_tests::testrun::{self, in_netns, veth_pair, Harness};

use crate::cycle::{Cycler, Target, HEADER_LEN, MAX_FRAMES};
use crate::report::{median, TestRunRow};

/// Realistic IPv4 prefix lengths: mostly /24, some shorter, few longer.
fn v4_len(r: &mut Rng) -> u32 {
    match r.next() % 100 {
        0..=59 => 24,
        60..=89 => 16 + (r.next() % 8) as u32,
        _ => 25 + (r.next() % 8) as u32,
    }
}

/// The route of every random prefix: next hop 1 alone.
const VIA_NH_1: PopRoute = PopRoute {
    flags: 0,
    nh_count: 1,
    nh_ids: [1, 0, 0, 0, 0, 0, 0, 0],
};

/// Adds `n` random IPv4 routes that never cover 100.0.0.0/8 (the bench
/// destination), all using next hop 1, through popd's writer (fib4 and its
/// route records); returns them as (address, length). A prefix longer than
/// /24 that needs a tbl8 group when all are in use (past about 160k routes
/// of this mix) is skipped and another drawn.
fn fill_routes_v4(h: &mut Harness, rng: &mut Rng, n: u64) -> Result<Vec<(u128, u32)>> {
    let routes4 = h.routes4()?;
    let mut added = 0;
    let mut out = Vec::with_capacity(n as usize);
    while added < n {
        let len = v4_len(rng);
        let addr = (rng.next() as u32) & (u32::MAX << (32 - len));
        let first = (addr >> 24) as u8;
        if first == 100 || first == 0 || first == 127 || first >= 224 {
            continue;
        }
        let net = ipnet::Ipv4Net::new(addr.into(), len as u8)?;
        match routes4.set(&net, &VIA_NH_1) {
            Ok(()) => {}
            Err(pop::dataplane::DataplaneError::MapFull { map, .. })
                if map == pop_common::maps::FIB4_TBL8 =>
            {
                continue
            }
            Err(e) => return Err(anyhow!(e)),
        }
        out.push((u128::from(addr), len));
        added += 1;
    }
    Ok(out)
}

/// Adds `n` random IPv6 routes in 2000::/3 (never 2001:db8::/32), all using
/// next hop 1, clustered in allocations as in the Internet's table, through
/// popd's writer (fib6 and its route records) in the order of popd's bulk
/// writes; returns them as (address, length) in the order drawn.
fn fill_routes_v6(h: &mut Harness, rng: &mut Rng, n: u64) -> Result<Vec<(u128, u32)>> {
    let routes6 = h.routes6()?;
    let mut added = 0;
    let mut out = Vec::with_capacity(n as usize);
    while added < n {
        let len = match rng.next() % 100 {
            0..=69 => 48,
            70..=89 => 32 + (rng.next() % 16) as u32,
            _ => 49 + (rng.next() % 16) as u32,
        };
        // Global unicast 2000::/3, never 2001:db8::/32, clustered as in the
        // Internet's table: one of 16384 allocated /32s, and in it one of 8
        // /40s (a uniform spread over 2000::/3 is a shape no table has).
        let allocation = (rng.next() % 16_384).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 35;
        let top = 0x2000_0000u128 | u128::from(allocation as u32 & 0x1fff_ffff);
        let low = (u128::from(rng.next() % 8) << 88) | (u128::from(rng.next() as u32) << 56);
        let hi = (top << 96) | low;
        let addr = hi & (u128::MAX << (128 - len));
        if (addr >> 96) as u32 == 0x2001_0db8 {
            continue;
        }
        out.push((addr, len));
        added += 1;
    }
    // One bulk write, as popd's first sync or full apply of these routes:
    // in prefix order (address, then length), which lays fib6's nodes out
    // depth-first. `out` keeps the drawing order for the destinations.
    // `POP_BENCH_V6_WRITES` changes how the routes are written (not which).
    let mut pending = V6_PENDING.lock().expect("not poisoned");
    pending.extend_from_slice(&out);
    let batch = match v6_writes() {
        V6Writes::Cumulative => pending.len(),
        V6Writes::One if V6_FINAL.load(Ordering::Relaxed) => pending.len(),
        V6Writes::One => return Ok(out),
        V6Writes::Batches(n) => n,
    };
    for chunk in pending.chunks(batch.max(1)) {
        let mut order = chunk.to_vec();
        order.sort_unstable();
        for &(addr, len) in &order {
            let net = ipnet::Ipv6Net::new(addr.into(), len as u8)?;
            routes6.set(&net, &VIA_NH_1)?;
        }
    }
    pending.clear();
    Ok(out)
}

/// How `fill_routes_v6` writes its routes, from `POP_BENCH_V6_WRITES`:
/// unset or `cumulative`, each table size's new routes in one bulk write
/// in prefix order (the 200k table is two writes of 100k); `one`, the whole
/// table in one bulk write at the largest size (the smaller sizes are not
/// measured); `batches:N`, each size's new routes in writes of N routes in
/// drawing order, each write in prefix order (as routes learned in many
/// small batches; `batches:1` is one route at a time, in random order).
#[derive(Clone, Copy, PartialEq)]
enum V6Writes {
    Cumulative,
    One,
    Batches(usize),
}

fn v6_writes() -> V6Writes {
    match std::env::var("POP_BENCH_V6_WRITES").as_deref() {
        Ok("one") => V6Writes::One,
        Ok(s) if s.starts_with("batches:") => {
            V6Writes::Batches(s["batches:".len()..].parse().unwrap_or(1000))
        }
        _ => V6Writes::Cumulative,
    }
}

/// Routes drawn but not yet written (`POP_BENCH_V6_WRITES=one`), and
/// whether the next fill is the last one, which writes them all.
static V6_PENDING: std::sync::Mutex<Vec<(u128, u32)>> = std::sync::Mutex::new(Vec::new());
static V6_FINAL: AtomicBool = AtomicBool::new(false);

/// Adds `n` random customer /24s (customer ids 2..), as popd writes them
/// (fib4 and the list `cust_v4`); returns their addresses.
fn fill_customers_v4(h: &mut Harness, rng: &mut Rng, n: u64) -> Result<Vec<u32>> {
    let mut added = 0;
    let mut out = Vec::with_capacity(n as usize);
    while added < n {
        let addr = (rng.next() as u32) & 0xffff_ff00;
        let first = (addr >> 24) as u8;
        if first == 198 || first == 100 || first == 0 || first >= 224 {
            continue;
        }
        let id = 2 + (added as u32 % (pop_common::MAX_CUSTOMERS - 2));
        h.add_customer_v4(&format!("{}/24", Ipv4Addr::from(addr)), id)?;
        out.push(addr);
        added += 1;
    }
    Ok(out)
}

/// The benchmark's UDP frame from `src` to `dst`, 64 bytes (IPv4) or 72
/// (IPv6), and its first 64 bytes as the cycle driver restores them.
fn udp_frame(src: IpAddr, dst: IpAddr, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    let payload = if src.is_ipv4() { 22 } else { 10 };
    testrun::udp_frame(src_mac, dst_mac, src, dst, 255, payload)
}

fn header(frame: &[u8]) -> [u8; HEADER_LEN] {
    frame[..HEADER_LEN]
        .try_into()
        .expect("frames are at least 64 bytes")
}

fn arp(src_mac: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 192, 0, 2, 2]);
    f.resize(HEADER_LEN, 0);
    f
}

/// An address inside a random one of `prefixes`, drawn until it is a plain
/// unicast address pop forwards (not 0/8, 127/8, 169.254/16, class D/E).
fn draw_v4(rng: &mut Rng, prefixes: &[(u128, u32)]) -> Ipv4Addr {
    loop {
        let (net, len) = prefixes[(rng.next() % prefixes.len() as u64) as usize];
        let host = if len >= 32 {
            0
        } else {
            (rng.next() as u32) >> len
        };
        let a = net as u32 | host;
        let first = a >> 24;
        if first == 0 || first == 127 || first >= 224 || a >> 16 == 0xa9fe {
            continue;
        }
        return Ipv4Addr::from(a);
    }
}

/// An address inside a random one of `prefixes` (all global unicast).
fn draw_v6(rng: &mut Rng, prefixes: &[(u128, u32)]) -> Ipv6Addr {
    let (net, len) = prefixes[(rng.next() % prefixes.len() as u64) as usize];
    let random = (u128::from(rng.next()) << 64) | u128::from(rng.next());
    let host = if len >= 128 { 0 } else { random >> len };
    Ipv6Addr::from(net | host)
}

/// One measured case: its median ns and ratios.
struct Measured {
    ns: f64,
    to_pass: f64,
    to_redirect_min: f64,
}

struct Bench {
    h: Harness,
    cycler: Cycler,
    ingress: u32,
    rounds: usize,
    runs: u32,
    /// `POP_BENCH_OBJECT_B`: further data-plane objects loaded on the same
    /// pinned maps, measured in the same rounds as pop (rows `CASE [B]`, or
    /// `CASE [B:NAME]` for several). Kept so that their programs stay loaded.
    b: Vec<aya::Ebpf>,
    /// Their row labels, in the same order.
    b_labels: Vec<String>,
    /// Their median ns of the last `measure`, in the same order.
    last_b: Vec<Measured>,
}

impl Bench {
    /// Cycles pop, XDP_PASS and the minimal router through `frames`
    /// (interleaved, `rounds` times): pop's median ns and median ratios.
    fn measure(&mut self, frames: &[Vec<u8>], expect_action: u32) -> Result<Measured> {
        let headers: Vec<[u8; HEADER_LEN]> = frames.iter().map(|f| header(f)).collect();
        self.cycler.set_frames(&headers, frames[0].len())?;
        let action =
            self.cycler
                .check_actions(&self.h, Target::Pop, self.ingress, headers.len())?;
        if action != expect_action {
            return Err(anyhow!(
                "bench frames got XDP action {action}, expected {expect_action}: tables are wrong"
            ));
        }
        for i in 0..self.b.len() {
            let action = self.cycler.check_actions(
                &self.h,
                Target::Other(i),
                self.ingress,
                headers.len(),
            )?;
            if action != expect_action {
                return Err(anyhow!(
                    "bench frames got XDP action {action} from {}, expected {expect_action}",
                    self.b_labels[i]
                ));
            }
        }
        // pop, then the other objects. Each pass leaves its headers' table
        // lines in the caches for the pass right after it: a build run right
        // after another on the same frames finds the lines that build
        // touched (the customer records, say) where a build run alone would
        // miss them. So both references run again before every object's
        // pass, which leaves each build the caches a run of pop alone gives
        // it; and each round rotates the order by one, over a multiple of
        // the number of objects.
        let objects = 1 + self.b.len();
        let rounds = self.rounds.next_multiple_of(objects);
        let (mut pass_ratio, mut min_ratio) =
            (vec![Vec::new(); objects], vec![Vec::new(); objects]);
        let mut ns = vec![Vec::new(); objects];
        for round in 0..rounds {
            for k in 0..objects {
                let pass = self.ns(Target::Pass)?;
                let min = self.ns(Target::RedirectMin)?;
                let which = (round + k) % objects;
                let target = if which == 0 {
                    Target::Pop
                } else {
                    Target::Other(which - 1)
                };
                let v = self.ns(target)?;
                ns[which].push(v);
                pass_ratio[which].push(v / pass);
                min_ratio[which].push(v / min);
            }
        }
        let mut measured: Vec<Measured> = (0..objects)
            .map(|k| Measured {
                ns: median(&ns[k]),
                to_pass: median(&pass_ratio[k]),
                to_redirect_min: median(&min_ratio[k]),
            })
            .collect();
        self.last_b = measured.split_off(1);
        Ok(measured.pop().expect("pop's own measurement"))
    }

    /// The other objects' rows of the last `measure` (`CASE [LABEL]`).
    fn push_b_rows(
        &mut self,
        rows: &mut Vec<TestRunRow>,
        case: &str,
        routes: u64,
        acl_rules: u64,
        customers: u64,
    ) {
        for (m, label) in self.last_b.drain(..).zip(&self.b_labels) {
            rows.push(TestRunRow {
                case: format!("{case} [{label}]"),
                routes,
                acl_rules,
                customers,
                ns_per_packet: m.ns,
                ratio_to_xdp_pass: m.to_pass,
                ratio_to_redirect_min: m.to_redirect_min,
            });
        }
    }

    /// The floor of the IPv4 lookups on the frames `measure` last cycled:
    /// `xdp_fib4_loads` (only the two fib4 lookups) in the same rounds as
    /// both references.
    fn fib4_floor(&mut self) -> Result<Measured> {
        let (mut ns, mut to_pass, mut to_min) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.rounds {
            let pass = self.ns(Target::Pass)?;
            let min = self.ns(Target::RedirectMin)?;
            let loads = self.ns(Target::Fib4Loads)?;
            ns.push(loads);
            to_pass.push(loads / pass);
            to_min.push(loads / min);
        }
        Ok(Measured {
            ns: median(&ns),
            to_pass: median(&to_pass),
            to_redirect_min: median(&to_min),
        })
    }

    fn ns(&mut self, target: Target) -> Result<f64> {
        self.cycler
            .ns_per_packet(&self.h, target, self.ingress, self.runs)
    }

    /// The references themselves on `frames`: (XDP_PASS ns, minimal router
    /// ns, median ratio of the router to XDP_PASS).
    fn references(&mut self, frames: &[Vec<u8>]) -> Result<(f64, f64, f64)> {
        let headers: Vec<[u8; HEADER_LEN]> = frames.iter().map(|f| header(f)).collect();
        self.cycler.set_frames(&headers, frames[0].len())?;
        let (mut pass, mut min, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.rounds {
            let p = self.ns(Target::Pass)?;
            let m = self.ns(Target::RedirectMin)?;
            pass.push(p);
            min.push(m);
            ratio.push(m / p);
        }
        Ok((median(&pass), median(&min), median(&ratio)))
    }
}

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// `n - 1` random TCP rules (source /16–/32 inside 10/8, a destination port)
/// that never match the benchmark's UDP frame, and a last rule dropping it.
fn acl_rules(rng: &mut Rng, n: u64) -> Vec<pop::config::validate::ValidAcl> {
    // A drop rule on (src, dst, proto, dst port).
    let drop = |priority: u64, src, dst, proto, port: u16| pop::config::validate::ValidAcl {
        src,
        dst,
        proto: Some(proto),
        dst_port: Some((port, port)),
        ..pop::config::validate::ValidAcl::match_all(
            priority as u32,
            pop::config::model::AclAction::Drop,
        )
    };
    let mut rules: Vec<_> = (1..n)
        .map(|priority| {
            let len = 16 + (rng.next() % 17) as u8;
            let addr = Ipv4Addr::from(0x0a00_0000 | (rng.next() as u32 & 0x00ff_ffff));
            let src = ipnet::Ipv4Net::new(addr, len).expect("len <= 32").trunc();
            let port = 1 + (rng.next() % 65000) as u16;
            drop(priority, Some(src.into()), None, 6, port)
        })
        .collect();
    rules.push(drop(
        n.max(1),
        None,
        Some("100.64.0.1/32".parse().expect("static")),
        17,
        9,
    ));
    rules
}

/// `n - 1` rules of the five shapes a PoP's ACL mixes, none matching the
/// benchmark's UDP frame, and a last rule dropping it. Shapes: source only
/// (bogons, /8–/24 in 10/8 and 172.16/12); destination + TCP + port (a
/// customer's service, /24–/32 in 100.64/10); TCP + port range (a blocked
/// service); source + destination (a peer pair, source in 10/8); destination,
/// TCP and a source port range. Each shape makes its own tree, so a packet
/// walks several; this is the harder case for the classifier.
fn acl_rules_mixed(rng: &mut Rng, n: u64) -> Vec<pop::config::validate::ValidAcl> {
    use pop::config::model::AclAction;
    let mut prefix = |base: u32, span_bits: u32, min_len: u8, max_len: u8| {
        let len = min_len + (rng.next() % u64::from(max_len - min_len + 1)) as u8;
        let host = rng.next() as u32 & ((1u32 << span_bits) - 1);
        let net = ipnet::Ipv4Net::new(Ipv4Addr::from(base | host), len).expect("len <= 32");
        Some(net.trunc().into())
    };
    let mut rules = Vec::with_capacity(n as usize);
    let mut shapes = Rng((0x5a9e5 ^ n) | 1);
    for priority in 1..n {
        let mut r = pop::config::validate::ValidAcl::match_all(priority as u32, AclAction::Drop);
        let port = 1 + (shapes.next() % 65000) as u16;
        match shapes.next() % 5 {
            0 => {
                r.src = if shapes.next().is_multiple_of(2) {
                    prefix(0x0a00_0000, 24, 8, 24)
                } else {
                    prefix(0xac10_0000, 20, 12, 24)
                }
            }
            1 => {
                r.dst = prefix(0x6440_0000, 22, 24, 32);
                r.proto = Some(6);
                r.dst_port = Some((port, port));
            }
            2 => {
                r.proto = Some(6);
                r.dst_port = Some((port, port.saturating_add((shapes.next() % 100) as u16)));
            }
            3 => {
                r.src = prefix(0x0a00_0000, 24, 16, 32);
                r.dst = prefix(0x6440_0000, 22, 16, 32);
            }
            _ => {
                r.dst = prefix(0x6440_0000, 22, 20, 32);
                r.proto = Some(6);
                r.src_port = Some((port, port.saturating_add(1000)));
            }
        }
        rules.push(r);
    }
    let mut last = acl_rules(rng, 1);
    last[0].priority = n.max(1) as u32;
    rules.append(&mut last);
    rules
}

const XDP_REDIRECT: u32 = 4;

/// Sampling rate of the `ipv4_forward_sflow` case.
const SFLOW_BENCH_RATE: u32 = 1000;

/// Sets the data plane's sFlow sampling rate (map `observe_config`); 0: off.
fn set_sampling_rate(h: &Harness, rate: u32) -> Result<()> {
    let data = MapData::from_pin(h.pin_dir().join(pop_common::maps::OBSERVE_CONFIG))?;
    let mut map: aya::maps::Array<MapData, pop_common::PopObserveConfig> =
        aya::maps::Array::try_from(Map::from_map_data(data)?)?;
    let mut c = map.get(&0, 0)?;
    c.sampling_rate = rate;
    map.set(0, c, 0)?;
    Ok(())
}

/// pop's object, or the ELF file named by `POP_BENCH_OBJECT` (to compare
/// builds, e.g. one compiled with `-DPOP_NO_OBSERVE`).
fn load_harness() -> Result<Harness> {
    match std::env::var_os("POP_BENCH_OBJECT") {
        None => Ok(Harness::load()?),
        Some(path) => {
            let bytes = std::fs::read(&path)?;
            // ELF parsing wants the bytes 8-aligned: keep them in u64s.
            let mut words = vec![0u64; bytes.len().div_ceil(8)];
            // SAFETY: u64s are plain bytes; the view covers exactly the Vec.
            let view = unsafe {
                std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8)
            };
            view[..bytes.len()].copy_from_slice(&bytes);
            eprintln!("  loading {}", std::path::Path::new(&path).display());
            Ok(Harness::load_object(&view[..bytes.len()])?)
        }
    }
}

/// Whether to run the test_run cases named `case`: all of them, or with
/// `POP_BENCH_CASES` (comma-separated name prefixes, e.g. `acl`) only those,
/// for A/B runs of one stage. The references always run.
fn wanted(case: &str) -> bool {
    match std::env::var("POP_BENCH_CASES") {
        Ok(list) => list.split(',').any(|p| case.starts_with(p.trim())),
        Err(_) => true,
    }
}

/// Runs every test_run case.
pub fn run(quick: bool) -> Result<Vec<TestRunRow>> {
    in_netns(move || run_in_netns(quick))
}

fn run_in_netns(quick: bool) -> Result<Vec<TestRunRow>> {
    let (a, b) = veth_pair("pbin", "pbout")?;
    let mut h = load_harness()?;
    h.set_iface(a.ifindex, 0, Role::Customer, 1500)?;
    h.set_iface(b.ifindex, 1, Role::Upstream, 1500)?;
    h.add_tx_port(b.ifindex)?;
    let next_hop_mac = [2, 0, 0, 0, 0, 1];
    h.set_nexthop(
        1,
        PopNexthop {
            ifindex: b.ifindex,
            flags: NH_VALID | NH_RESOLVED,
            dmac: next_hop_mac,
            smac: b.mac,
            mtu: 1500,
            ..PopNexthop::default()
        },
    )?;
    h.add_route_v4("100.64.0.0/24", &[1], 0)?;
    h.add_route_v6("2001:db8:ffff:1::/64", &[1], 0)?;
    h.add_customer_v4("198.51.100.0/24", 1)?;
    h.add_customer_v6("2001:db8:a::/48", 1)?;
    let cycler = Cycler::load(b.ifindex, next_hop_mac, b.mac, h.pin_dir())?;
    // Full: 64k different frames per forwarding case, each round runs them all.
    let frames_per_case = if quick { 4_096 } else { MAX_FRAMES };
    let mut bench = Bench {
        h,
        cycler,
        ingress: a.ifindex,
        // POP_BENCH_ROUNDS: more rounds for an A/B run of close builds.
        rounds: match std::env::var("POP_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            Some(n) if n > 0 => n,
            _ if quick => 3,
            _ => 7,
        },
        runs: frames_per_case as u32,
        b: Vec::new(),
        b_labels: Vec::new(),
        last_b: Vec::new(),
    };
    if let Some(list) = std::env::var_os("POP_BENCH_OBJECT_B") {
        let paths: Vec<std::path::PathBuf> = std::env::split_paths(&list).collect();
        for path in &paths {
            eprintln!("  B: loading {} on the same maps", path.display());
            let bytes = std::fs::read(path)?;
            let mut words = vec![0u64; bytes.len().div_ceil(8)];
            // SAFETY: u64s are plain bytes; the view covers exactly the Vec.
            let view = unsafe {
                std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8)
            };
            view[..bytes.len()].copy_from_slice(&bytes);
            let mut ebpf = aya::EbpfLoader::new()
                .default_map_pin_directory(bench.h.pin_dir())
                .load(&view[..bytes.len()])?;
            let prog: &mut aya::programs::Xdp = ebpf
                .program_mut("pop_xdp")
                .ok_or_else(|| anyhow!("no pop_xdp in {}", path.display()))?
                .try_into()?;
            prog.load()?;
            let fd = prog.fd()?.try_clone()?;
            bench.cycler.add_other(fd);
            bench.b.push(ebpf);
            bench.b_labels.push(if paths.len() == 1 {
                "B".to_string()
            } else {
                // The file name up to its first dot: `noacl` of noacl.bpf.o.
                let name = path.file_name().map(|s| s.to_string_lossy().into_owned());
                let name = name.unwrap_or_default();
                format!("B:{}", name.split('.').next().unwrap_or_default())
            });
        }
    }
    // The interfaces by index too, as popd writes them, for whichever
    // object (A, or B on the same maps) has the array.
    bench.h.index_ifaces()?;
    let src_mac = [2, 0, 0, 0, 0, 2];
    let customer_v4: IpAddr = Ipv4Addr::new(198, 51, 100, 10).into();
    let customer_v6: IpAddr = "2001:db8:a::10".parse::<Ipv6Addr>().expect("static").into();
    let v4 = udp_frame(
        customer_v4,
        Ipv4Addr::new(100, 64, 0, 1).into(),
        src_mac,
        a.mac,
    );
    let mut rows = Vec::new();
    let row = |case: &str, routes: u64, acl: u64, customers: u64, m: &Measured| TestRunRow {
        case: case.into(),
        routes,
        acl_rules: acl,
        customers,
        ns_per_packet: m.ns,
        ratio_to_xdp_pass: m.to_pass,
        ratio_to_redirect_min: m.to_redirect_min,
    };
    let (pass_ns, min_ns, min_to_pass) = bench.references(std::slice::from_ref(&v4))?;
    let pass = Measured {
        ns: pass_ns,
        to_pass: 1.0,
        to_redirect_min: pass_ns / min_ns,
    };
    rows.push(row("xdp_pass", 0, 0, 0, &pass));
    let min = Measured {
        ns: min_ns,
        to_pass: min_to_pass,
        to_redirect_min: 1.0,
    };
    rows.push(row("xdp_redirect_min", 0, 0, 0, &min));
    if wanted("non_ip_pass") {
        let m = bench.measure(&[arp(src_mac)], XDP_PASS)?;
        rows.push(row("non_ip_pass", 1, 0, 1, &m));
        bench.push_b_rows(&mut rows, "non_ip_pass", 1, 0, 1);
    }
    let mut rng = Rng(0x5eed | 1);
    // Routes per family; each size adds to the table of the one before.
    let v4_sizes: &[u64] = if quick {
        &[1, 10_000]
    } else {
        &[1, 10_000, 1_000_000]
    };
    let v6_sizes: &[u64] = if quick {
        &[1, 10_000]
    } else {
        &[1, 100_000, 200_000]
    };
    type Fill = fn(&mut Harness, &mut Rng, u64) -> Result<Vec<(u128, u32)>>;
    /// (case, table sizes, filler, the fixed destination's route, source).
    type Family<'a> = (&'a str, &'a [u64], Fill, (u128, u32), IpAddr);
    let v4_base = (u128::from(u32::from(Ipv4Addr::new(100, 64, 0, 0))), 24);
    let v6_base = (
        u128::from("2001:db8:ffff:1::".parse::<Ipv6Addr>().expect("static")),
        64,
    );
    let families: [Family; 2] = [
        (
            "ipv4_forward",
            v4_sizes,
            fill_routes_v4,
            v4_base,
            customer_v4,
        ),
        (
            "ipv6_forward",
            v6_sizes,
            fill_routes_v6,
            v6_base,
            customer_v6,
        ),
    ];
    let mut routes_v4 = Vec::new();
    for (case, sizes, fill, base, src) in families {
        if !wanted(case) && !wanted("ipv4_forward_sflow") && !wanted("ipv4_forward_customers") {
            continue;
        }
        let mut table = vec![base];
        for &n in sizes {
            let last = Some(&n) == sizes.last();
            V6_FINAL.store(last, Ordering::Relaxed);
            if n > table.len() as u64 {
                let added = fill(&mut bench.h, &mut rng, n - table.len() as u64)?;
                table.extend(added);
            }
            let frames: Vec<Vec<u8>> = (0..frames_per_case)
                .map(|_| {
                    let dst: IpAddr = match src {
                        IpAddr::V4(_) => draw_v4(&mut rng, &table).into(),
                        IpAddr::V6(_) => draw_v6(&mut rng, &table).into(),
                    };
                    udp_frame(src, dst, src_mac, a.mac)
                })
                .collect();
            if !wanted(case) {
                continue;
            }
            // Routes drawn but not written yet: nothing to measure.
            if case == "ipv6_forward" && !last && n > 1 && v6_writes() == V6Writes::One {
                continue;
            }
            let m = bench.measure(&frames, XDP_REDIRECT)?;
            rows.push(row(case, n, 0, 1, &m));
            bench.push_b_rows(&mut rows, case, n, 0, 1);
            if case == "ipv4_forward" {
                let m = bench.fib4_floor()?;
                rows.push(row("ipv4_fib4_loads", n, 0, 1, &m));
            }
            eprintln!("  {case} with {n} routes done");
        }
        if case == "ipv4_forward" {
            routes_v4 = table;
        }
    }
    // sFlow sampling 1 in 1000 (the ring is not read: once full, samples
    // count as lost, which costs about what sending them does).
    if wanted("ipv4_forward_sflow") {
        set_sampling_rate(&bench.h, SFLOW_BENCH_RATE)?;
        let routes_now = *v4_sizes.last().expect("non-empty");
        let frames: Vec<Vec<u8>> = (0..frames_per_case)
            .map(|_| {
                let dst = draw_v4(&mut rng, &routes_v4);
                udp_frame(customer_v4, dst.into(), src_mac, a.mac)
            })
            .collect();
        let m = bench.measure(&frames, XDP_REDIRECT)?;
        rows.push(row("ipv4_forward_sflow", routes_now, 0, 1, &m));
        bench.push_b_rows(&mut rows, "ipv4_forward_sflow", routes_now, 0, 1);
        set_sampling_rate(&bench.h, 0)?;
        eprintln!("  ipv4_forward_sflow done");
    }
    // ACL: N rules that do not match, then one (the last by priority) that
    // drops the benchmark frame, so the frame meets the whole rule set.
    let rule_counts: &[u64] = if quick {
        &[10, 1_000]
    } else {
        &[10, 1_000, 10_000, 100_000]
    };
    let mut acl = pop::acl::AclMaps::open(bench.h.pin_dir()).map_err(|e| anyhow!(e))?;
    type Rules = fn(&mut Rng, u64) -> Vec<pop::config::validate::ValidAcl>;
    let sets: [(&str, Rules); 2] = [("acl_drop", acl_rules), ("acl_drop_mixed", acl_rules_mixed)];
    for (case, make) in sets {
        if !wanted(case) {
            continue;
        }
        for &n in rule_counts {
            let rules = make(&mut rng, n);
            let compiled = pop::acl::compile(&rules, &|_| None).map_err(|e| anyhow!(e))?;
            acl.swap_in(&compiled).map_err(|e| anyhow!(e))?;
            let m = bench.measure(std::slice::from_ref(&v4), XDP_DROP)?;
            rows.push(row(case, 1, n, 1, &m));
            bench.push_b_rows(&mut rows, case, 1, n, 1);
            eprintln!("  {case} with {n} rules done");
        }
    }
    acl.swap_in(&pop::acl::compile(&[], &|_| None).map_err(|e| anyhow!(e))?)
        .map_err(|e| anyhow!(e))?;
    if wanted("ipv4_forward_customers") {
        // Customers: sources drawn from 10k customer /24s, destinations from the
        // IPv4 routes, so both customer lookups and the route lookup vary.
        let cust = if quick { 1_000 } else { 10_000 };
        let customers: Vec<(u128, u32)> = fill_customers_v4(&mut bench.h, &mut rng, cust - 1)?
            .into_iter()
            .map(|a| (u128::from(a), 24))
            .collect();
        let frames: Vec<Vec<u8>> = (0..frames_per_case)
            .map(|_| {
                let src = draw_v4(&mut rng, &customers);
                let dst = draw_v4(&mut rng, &routes_v4);
                udp_frame(src.into(), dst.into(), src_mac, a.mac)
            })
            .collect();
        let routes_now = *v4_sizes.last().expect("non-empty");
        let m = bench.measure(&frames, XDP_REDIRECT)?;
        rows.push(row("ipv4_forward_customers", routes_now, 0, cust, &m));
        bench.push_b_rows(&mut rows, "ipv4_forward_customers", routes_now, 0, cust);
        let m = bench.fib4_floor()?;
        rows.push(row("ipv4_fib4_loads_customers", routes_now, 0, cust, &m));
    }
    Ok(rows)
}
