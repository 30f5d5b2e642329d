//! Per-packet cost through BPF_PROG_TEST_RUN, against the XDP_PASS reference
//! measured in the same rounds.
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{anyhow, Result};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Map, MapData};
use pop_common::{PopCustomerRef, PopNexthop, PopRoute, Role, NH_RESOLVED, NH_VALID};
use pop_tests::testrun::{in_netns, veth_pair, Harness, Program};

use crate::report::{median, TestRunRow};

/// A small deterministic PRNG (xorshift64*), so runs fill the same tables.
pub struct Rng(u64);
impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    /// Next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn lpm<K: aya::Pod, V: aya::Pod>(h: &Harness, name: &str) -> Result<LpmTrie<MapData, K, V>> {
    let data = MapData::from_pin(h.pin_dir().join(name))?;
    Ok(LpmTrie::try_from(Map::from_map_data(data)?)?)
}

/// Realistic IPv4 prefix lengths: mostly /24, some shorter, few longer.
fn v4_len(r: &mut Rng) -> u32 {
    match r.next() % 100 {
        0..=59 => 24,
        60..=89 => 16 + (r.next() % 8) as u32,
        _ => 25 + (r.next() % 8) as u32,
    }
}

/// Adds `n` random IPv4 routes that never cover 100.0.0.0/8 (the bench
/// destination), all using next hop 1.
fn fill_routes_v4(h: &Harness, rng: &mut Rng, n: u64) -> Result<()> {
    let mut map: LpmTrie<MapData, [u8; 4], PopRoute> = lpm(h, pop_common::maps::ROUTES_V4)?;
    let route = PopRoute {
        flags: 0,
        nh_count: 1,
        nh_ids: [1, 0, 0, 0, 0, 0, 0, 0],
    };
    let mut added = 0;
    while added < n {
        let len = v4_len(rng);
        let addr = (rng.next() as u32) & (u32::MAX << (32 - len));
        let first = (addr >> 24) as u8;
        if first == 100 || first == 0 || first == 127 || first >= 224 {
            continue;
        }
        map.insert(&Key::new(len, addr.to_be_bytes()), route, 0)?;
        added += 1;
    }
    Ok(())
}

fn fill_routes_v6(h: &Harness, rng: &mut Rng, n: u64) -> Result<()> {
    let mut map: LpmTrie<MapData, [u8; 16], PopRoute> = lpm(h, pop_common::maps::ROUTES_V6)?;
    let route = PopRoute {
        flags: 0,
        nh_count: 1,
        nh_ids: [1, 0, 0, 0, 0, 0, 0, 0],
    };
    let mut added = 0;
    while added < n {
        let len = match rng.next() % 100 {
            0..=69 => 48,
            70..=89 => 32 + (rng.next() % 16) as u32,
            _ => 49 + (rng.next() % 16) as u32,
        };
        // Global unicast 2000::/3, never 2001:db8::/32.
        let hi = (0x2000u128 << 112) | ((rng.next() as u128) << 48 & !(0xe000u128 << 112));
        let addr = hi & (u128::MAX << (128 - len));
        if (addr >> 96) as u32 == 0x2001_0db8 {
            continue;
        }
        map.insert(&Key::new(len, addr.to_be_bytes()), route, 0)?;
        added += 1;
    }
    Ok(())
}

fn fill_customers_v4(h: &Harness, rng: &mut Rng, n: u64) -> Result<()> {
    let mut map: LpmTrie<MapData, [u8; 4], PopCustomerRef> = lpm(h, pop_common::maps::CUST_V4)?;
    let mut added = 0;
    while added < n {
        let addr = (rng.next() as u32) & 0xffff_ff00;
        let first = (addr >> 24) as u8;
        if first == 198 || first == 100 || first == 0 || first >= 224 {
            continue;
        }
        let id = 2 + (added as u32 % (pop_common::MAX_CUSTOMERS - 2));
        map.insert(
            &Key::new(24, addr.to_be_bytes()),
            PopCustomerRef { customer_id: id },
            0,
        )?;
        added += 1;
    }
    Ok(())
}

fn udp4(src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(
            Ipv4Addr::new(198, 51, 100, 10).octets(),
            Ipv4Addr::new(100, 64, 0, 1).octets(),
            255,
        )
        .udp(1234, 9);
    let payload = [0u8; 18];
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).expect("writing to a Vec");
    out
}

fn udp6(src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    let src: Ipv6Addr = "2001:db8:a::10".parse().expect("static");
    let dst: Ipv6Addr = "2001:db8:ffff:1::1".parse().expect("static");
    let b = etherparse::PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv6(src.octets(), dst.octets(), 255)
        .udp(1234, 9);
    let payload = [0u8; 18];
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).expect("writing to a Vec");
    out
}

fn arp(src_mac: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 192, 0, 2, 2]);
    f.resize(60, 0);
    f
}

struct Bench {
    h: Harness,
    ingress: u32,
    rounds: usize,
    runs: u32,
}

impl Bench {
    /// Median ns of `frame` and median ratio to XDP_PASS, interleaving the two.
    fn measure(&self, frame: &[u8], expect_action: u32) -> Result<(f64, f64)> {
        let (action, _) = self.h.run(frame, self.ingress)?;
        if action != expect_action {
            return Err(anyhow!(
                "bench frame got XDP action {action}, expected {expect_action}: tables are wrong"
            ));
        }
        let mut ns = Vec::new();
        let mut ratios = Vec::new();
        for _ in 0..self.rounds {
            let pass = self
                .h
                .ns_per_packet(Program::Pass, frame, self.ingress, self.runs)?;
            let pop = self
                .h
                .ns_per_packet(Program::Pop, frame, self.ingress, self.runs)?;
            ns.push(pop);
            ratios.push(pop / pass);
        }
        Ok((median(&ns), median(&ratios)))
    }

    fn pass(&self, frame: &[u8]) -> Result<f64> {
        let v: Result<Vec<f64>> = (0..self.rounds)
            .map(|_| {
                Ok(self
                    .h
                    .ns_per_packet(Program::Pass, frame, self.ingress, self.runs)?)
            })
            .collect();
        Ok(median(&v?))
    }
}

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// `n - 1` random TCP rules (source /16–/32 inside 10/8, a destination port)
/// that never match the benchmark's UDP frame, and a last rule dropping it.
fn acl_rules(rng: &mut Rng, n: u64) -> Vec<pop::config::validate::ValidAcl> {
    // A drop rule on (src, dst, proto, dst port).
    let drop = |priority: u64, src, dst, proto, port: u16| pop::config::validate::ValidAcl {
        priority: priority as u32,
        action: pop::config::model::AclAction::Drop,
        src,
        dst,
        proto: Some(proto),
        src_port: None,
        dst_port: Some((port, port)),
        in_iface: None,
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
    use pop::config::validate::ValidAcl;
    let mut prefix = |base: u32, span_bits: u32, min_len: u8, max_len: u8| {
        let len = min_len + (rng.next() % u64::from(max_len - min_len + 1)) as u8;
        let host = rng.next() as u32 & ((1u32 << span_bits) - 1);
        let net = ipnet::Ipv4Net::new(Ipv4Addr::from(base | host), len).expect("len <= 32");
        Some(net.trunc().into())
    };
    let mut rules = Vec::with_capacity(n as usize);
    let mut shapes = Rng::new(0x5a9e5 ^ n);
    for priority in 1..n {
        let mut r = ValidAcl {
            priority: priority as u32,
            action: AclAction::Drop,
            src: None,
            dst: None,
            proto: None,
            src_port: None,
            dst_port: None,
            in_iface: None,
        };
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
    h.set_nexthop(
        1,
        PopNexthop {
            ifindex: b.ifindex,
            flags: NH_VALID | NH_RESOLVED,
            dmac: [2, 0, 0, 0, 0, 1],
            smac: b.mac,
            mtu: 1500,
            ..PopNexthop::default()
        },
    )?;
    h.add_route_v4("100.64.0.0/24", &[1], 0)?;
    h.add_route_v6("2001:db8:ffff:1::/64", &[1], 0)?;
    h.add_customer_v4("198.51.100.0/24", 1)?;
    h.add_customer_v6("2001:db8:a::/48", 1)?;
    let bench = Bench {
        h,
        ingress: a.ifindex,
        rounds: if quick { 3 } else { 7 },
        runs: if quick { 5_000 } else { 20_000 },
    };
    let src_mac = [2, 0, 0, 0, 0, 2];
    let v4 = udp4(src_mac, a.mac);
    let v6 = udp6(src_mac, a.mac);
    let mut rows = Vec::new();
    let row =
        |case: &str, routes: u64, acl: u64, customers: u64, (ns, ratio): (f64, f64)| TestRunRow {
            case: case.into(),
            routes,
            acl_rules: acl,
            customers,
            ns_per_packet: ns,
            ratio_to_xdp_pass: ratio,
        };
    let pass_ns = bench.pass(&v4)?;
    rows.push(row("xdp_pass", 0, 0, 0, (pass_ns, 1.0)));
    rows.push(row(
        "non_ip_pass",
        1,
        0,
        1,
        bench.measure(&arp(src_mac), XDP_PASS)?,
    ));
    let mut rng = Rng::new(0x5eed);
    // IPv4 routes: 1 (+ what the others need), 10k, 1M.
    let v4_sizes: &[u64] = if quick {
        &[1, 10_000]
    } else {
        &[1, 10_000, 1_000_000]
    };
    let v6_sizes: &[u64] = if quick { &[1, 10_000] } else { &[1, 100_000] };
    type Fill = fn(&Harness, &mut Rng, u64) -> Result<()>;
    let families: [(&str, &[u64], Fill, &[u8]); 2] = [
        ("ipv4_forward", v4_sizes, fill_routes_v4, &v4),
        ("ipv6_forward", v6_sizes, fill_routes_v6, &v6),
    ];
    for (case, sizes, fill, frame) in families {
        let mut loaded = 1;
        for &n in sizes {
            if n > loaded {
                fill(&bench.h, &mut rng, n - loaded)?;
                loaded = n;
            }
            rows.push(row(case, n, 0, 1, bench.measure(frame, XDP_REDIRECT)?));
            eprintln!("  {case} with {n} routes done");
        }
    }
    // sFlow sampling 1 in 1000 (the ring is not read: once full, samples
    // count as lost, which costs about what sending them does).
    set_sampling_rate(&bench.h, SFLOW_BENCH_RATE)?;
    let routes_now = *v4_sizes.last().expect("non-empty");
    rows.push(row(
        "ipv4_forward_sflow",
        routes_now,
        0,
        1,
        bench.measure(&v4, XDP_REDIRECT)?,
    ));
    set_sampling_rate(&bench.h, 0)?;
    eprintln!("  ipv4_forward_sflow done");
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
        for &n in rule_counts {
            let rules = make(&mut rng, n);
            let compiled = pop::acl::compile(&rules, &|_| None).map_err(|e| anyhow!(e))?;
            acl.swap_in(&compiled).map_err(|e| anyhow!(e))?;
            rows.push(row(case, 1, n, 1, bench.measure(&v4, XDP_DROP)?));
            eprintln!("  {case} with {n} rules done");
        }
    }
    acl.swap_in(&pop::acl::compile(&[], &|_| None).map_err(|e| anyhow!(e))?)
        .map_err(|e| anyhow!(e))?;
    let cust = if quick { 1_000 } else { 10_000 };
    fill_customers_v4(&bench.h, &mut rng, cust - 1)?;
    rows.push(row(
        "ipv4_forward_customers",
        routes_now,
        0,
        cust,
        bench.measure(&v4, XDP_REDIRECT)?,
    ));
    Ok(rows)
}
