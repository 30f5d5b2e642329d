//! A full table through the user's path: popd started with 1M IPv4 and 200k
//! IPv6 configured routes, each via one of eight gateways with its own MAC.
//! For random addresses drawn from the table, three answers must agree:
//! - a reference longest-prefix match computed here,
//! - `popctl route get` (popd's view: prefix and gateway),
//! - `popctl trace` (the data plane's: the loaded program run on a frame to
//!   that address, which must be redirected out of eth0 to the gateway's MAC).
//!
//! Addresses outside every drawn route fall to the lab's default routes, and
//! are checked the same way.
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use pop_lab::topology::{self, EDGE};
use pop_tests::lab_env::LabEnv;
use pop_tests::lpm::{internet_v4_len, Bits, Lpm};
use pop_tests::rng::Rng;
use pop_tests::wait;

const PREFIX: &str = "pra";
const ROUTES_V4: usize = 1_000_000;
const ROUTES_V6: usize = 200_000;
/// Addresses checked per family: inside a drawn route, anywhere in the span
/// the routes are drawn from (either answer), and outside it (the default).
const FROM_TABLE: usize = 300;
const ANYWHERE: usize = 40;
const OUTSIDE: usize = 20;
const GATEWAYS: u8 = 8;

fn gateway_v4(g: u8) -> String {
    format!("192.0.2.{}", 11 + g)
}

fn gateway_v6(g: u8) -> String {
    format!("2001:db8:ffff::{:x}", 0x11 + g)
}

fn gateway_mac(g: u8) -> String {
    format!("02:00:00:00:01:{:02x}", 0x11 + g)
}

/// A route table of one family: prefixes as (bits, length) with their
/// gateway, in the order drawn, and the reference to look them up in.
struct Table<K> {
    routes: Vec<(K, u8, u8)>,
    reference: Lpm<K, u8>,
}

impl<K: Bits> Table<K> {
    fn new() -> Self {
        Table {
            routes: Vec::new(),
            reference: Lpm::default(),
        }
    }

    /// Adds a route unless its prefix is already there.
    fn add(&mut self, bits: K, len: u8, gateway: u8) {
        if !self.reference.contains(bits, len) {
            self.reference.insert(bits, len, gateway);
            self.routes.push((bits.mask(len), len, gateway));
        }
    }
}

/// Shaped like the Internet's table (mostly /24 and /19-/23, few shorter,
/// 0.5% longer than /24: more-specifics and /32 blackholes), all inside
/// 1.0.0.0-99.255.255.255, which holds no lab address.
fn table_v4(rng: &mut Rng) -> Table<u32> {
    let mut t = Table::new();
    while t.routes.len() < ROUTES_V4 {
        let len = internet_v4_len(rng);
        let first = 1 + rng.below(99) as u32;
        let bits = (first << 24) | (rng.next() as u32 & 0x00ff_ffff);
        t.add(bits, len, rng.below(u64::from(GATEWAYS)) as u8);
    }
    t
}

/// Mostly /48s, clustered as the Internet's table is (in one of 4,096 /32s
/// of 2a00::/12, and there in one of 8 /40s), with /29-/47 and /49-/64 mixed
/// in so that prefixes nest.
fn table_v6(rng: &mut Rng) -> Table<u128> {
    let mut t = Table::new();
    while t.routes.len() < ROUTES_V6 {
        let slash32 = (0x2a00u128 << 112) | (rng.below(4096) as u128) << 96;
        let slash40 = slash32 | (rng.below(8) as u128 * 37 % 256) << 88;
        let len = match rng.below(20) {
            0..=16 => 48,
            17 => 29 + rng.below(19) as u8,
            _ => 49 + rng.below(16) as u8,
        };
        let bits = slash40 | (rng.bits() & (u128::MAX >> 40));
        t.add(bits, len, rng.below(u64::from(GATEWAYS)) as u8);
    }
    t
}

/// A random address inside a random route of `t`.
fn address_in<K: Bits>(rng: &mut Rng, t: &Table<K>, random: impl Fn(&mut Rng) -> K) -> K {
    let (bits, len, _) = t.routes[rng.below(t.routes.len() as u64) as usize];
    bits | random(rng).host(len)
}

fn config(v4: &Table<u32>, v6: &Table<u128>) -> String {
    let mut out = topology::full_config();
    for &(bits, len, g) in &v4.routes {
        let _ = write!(
            out,
            "\n[[routes]]\nprefix = \"{}/{len}\"\nvia = [\"{}\"]\ndev = \"eth0\"\n",
            Ipv4Addr::from(bits),
            gateway_v4(g)
        );
    }
    for &(bits, len, g) in &v6.routes {
        let _ = write!(
            out,
            "\n[[routes]]\nprefix = \"{}/{len}\"\nvia = [\"{}\"]\ndev = \"eth0\"\n",
            Ipv6Addr::from(bits),
            gateway_v6(g)
        );
    }
    out
}

/// What the lab's own routes answer for an address outside the drawn table.
struct LabDefault {
    prefix: &'static str,
    via: &'static str,
    mac: String,
}

/// The three answers for `addr` agree: `want` is (prefix, gateway, its MAC).
fn check(env: &LabEnv, addr: &str, src: &str, want: (&str, &str, &str)) -> Result<()> {
    let (prefix, via, mac) = want;
    let get = env.popd.popctl_json(&["route", "get", addr])?;
    ensure!(
        get["prefix"] == prefix && get["nexthops"][0]["via"] == via,
        "popctl route get {addr}: {get}, the reference says {prefix} via {via}"
    );
    let trace = env.popd.popctl_json(&[
        "trace", "--in", "eth1", "--src", src, "--dst", addr, "--proto", "udp", "--dport", "53",
    ])?;
    ensure!(
        trace["action"] == "redirect" && trace["egress"] == "eth0" && trace["nexthop_mac"] == mac,
        "popctl trace to {addr}: {trace}, the reference says {prefix} via {via} ({mac})"
    );
    Ok(())
}

/// One address family's table and how to draw and show its addresses.
struct Family<'a, K> {
    table: &'a Table<K>,
    /// Random bits (the host part of an address inside a route).
    random: fn(&mut Rng) -> K,
    /// An address in the span the routes are drawn from.
    anywhere: fn(&mut Rng) -> K,
    /// An address no drawn route holds: the lab's default route answers.
    outside: fn(&mut Rng) -> K,
    show: fn(K) -> String,
    gateway: fn(u8) -> String,
    /// The source of the traced packets (customer c1's address).
    src: &'a str,
    default: &'a LabDefault,
}

/// Checks FROM_TABLE + ANYWHERE + OUTSIDE addresses of a family; how many
/// the table answered and how many fell to the default route.
fn check_family<K: Bits>(env: &LabEnv, rng: &mut Rng, f: &Family<K>) -> Result<(usize, usize)> {
    let (mut in_table, mut outside) = (0, 0);
    for i in 0..FROM_TABLE + ANYWHERE + OUTSIDE {
        let a = if i < FROM_TABLE {
            address_in(rng, f.table, f.random)
        } else if i < FROM_TABLE + ANYWHERE {
            (f.anywhere)(rng)
        } else {
            (f.outside)(rng)
        };
        let addr = (f.show)(a);
        match f.table.reference.longest(a) {
            Some((bits, len, g)) => {
                let prefix = format!("{}/{len}", (f.show)(bits));
                let want = (prefix.as_str(), (f.gateway)(g), gateway_mac(g));
                check(env, &addr, f.src, (want.0, &want.1, &want.2))
                    .with_context(|| format!("address {i}"))?;
                in_table += 1;
            }
            None => {
                let d = f.default;
                check(env, &addr, f.src, (d.prefix, d.via, &d.mac))
                    .with_context(|| format!("address {i}"))?;
                outside += 1;
            }
        }
    }
    Ok((in_table, outside))
}

#[test]
fn route_get_and_the_data_plane_agree_with_a_reference_on_a_full_table() {
    let mut rng = Rng(0x0005_eed0_ff1b);
    let v4 = table_v4(&mut rng);
    let v6 = table_v6(&mut rng);
    let text = config(&v4, &v6);
    let mut env = LabEnv::with_config(PREFIX, &text, |lab| {
        // The gateways: permanent neighbours, so popd knows their MACs at once.
        for g in 0..GATEWAYS {
            for gw in [gateway_v4(g), gateway_v6(g)] {
                lab.exec_ok(
                    EDGE,
                    &[
                        "ip",
                        "neigh",
                        "replace",
                        &gw,
                        "lladdr",
                        &gateway_mac(g),
                        "dev",
                        "eth0",
                        "nud",
                        "permanent",
                    ],
                )?;
            }
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("setting up the lab and popd: {e:#}"));
    let started = Instant::now();
    env.popd
        .start_within(Duration::from_secs(600))
        .unwrap_or_else(|e| panic!("popd with a full table: {e:#}"));
    // The lab's default routes' gateway (the upstream) is resolved by ARP and
    // ND, not permanent: wait for it (`route show` of the whole table is slow).
    for dst in [topology::INTERNET_V4, topology::INTERNET_V6] {
        wait::until(
            &format!("the route to {dst} resolved"),
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                let _ = env.lab.exec(EDGE, &["ping", "-c1", "-W1", dst]);
                let get = env.popd.popctl_json(&["route", "get", dst])?;
                Ok(get["nexthops"][0]["state"] == "resolved")
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    eprintln!(
        "popd up with {} + {} routes in {:?}",
        v4.routes.len(),
        v6.routes.len(),
        started.elapsed()
    );
    let link: serde_json::Value = serde_json::from_str(
        &env.lab
            .exec_ok(topology::UP, &["ip", "-j", "link", "show", "eth0"])
            .expect("the upstream's link"),
    )
    .expect("ip -j link");
    let upstream_mac = link[0]["address"]
        .as_str()
        .expect("the upstream's MAC")
        .to_string();
    let defaults = [
        LabDefault {
            prefix: "0.0.0.0/0",
            via: "192.0.2.1",
            mac: upstream_mac.clone(),
        },
        LabDefault {
            prefix: "::/0",
            via: "2001:db8:ffff::1",
            mac: upstream_mac,
        },
    ];
    let result = (|| -> Result<()> {
        let (in4, out4) = check_family(
            &env,
            &mut rng,
            &Family {
                table: &v4,
                random: |r| r.next() as u32,
                // 1.0.0.0-99.255.255.255, the span the routes are drawn from.
                anywhere: |r| (1 << 24) + (r.next() as u32 % (99 << 24)),
                // 128.0.0.0-191.255.255.255: no drawn route, no lab address.
                outside: |r| (128 << 24) + (r.next() as u32 % (64 << 24)),
                show: |a| Ipv4Addr::from(a).to_string(),
                gateway: gateway_v4,
                src: topology::C1_V4,
                default: &defaults[0],
            },
        )?;
        let (in6, out6) = check_family(
            &env,
            &mut rng,
            &Family {
                table: &v6,
                random: |r| r.bits(),
                anywhere: |r| (0x2a00u128 << 112) | (r.bits() >> 12),
                // 2c00::/8: no drawn route, no lab address.
                outside: |r| (0x2cu128 << 120) | (r.bits() >> 8),
                show: |a| Ipv6Addr::from(a).to_string(),
                gateway: gateway_v6,
                src: topology::C1_V6,
                default: &defaults[1],
            },
        )?;
        let (in_table, outside) = (in4 + in6, out4 + out6);
        ensure!(
            in_table >= 2 * FROM_TABLE && outside >= 2 * OUTSIDE,
            "{in_table} addresses in the table, {outside} outside: the draw checks too little"
        );
        Ok(())
    })();
    if let Err(e) = result {
        panic!(
            "{e:#}\n--- popd log ({}) ends with:\n{}",
            env.popd.log_path().display(),
            env.popd.log_tail(40)
        );
    }
}
