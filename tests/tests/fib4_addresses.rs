//! IPv4 customers and local addresses in fib4, through pop's real program:
//! popd's `compile::apply` writes random customer tables (nested blocks and
//! sub-allocations down to /32) and host addresses (some directed
//! broadcasts), then changes them; random packets run through the data plane
//! after each change. Every packet must be answered as a reference
//! longest-prefix match over the customer prefixes, and membership in the
//! local set, say: a local destination goes to the kernel (pass `local`),
//! counted to no customer; any other packet is forwarded and counted to
//! exactly the reference's source and destination customers.
//!
//! The same tables, read through popd's mapping of fib4, must agree with the
//! reference on many more addresses. The lists popd keeps for a restart
//! (`cust_v4`, `local_v4`) are emptied before the packets run: the data plane
//! answers from fib4 alone.
use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use pop::daemon::compile::{self, Tables};
use pop::dataplane::addr4::{LOCAL_BROADCAST, LOCAL_HOST};
use pop::dataplane::Maps;
use pop_common::{Direction, PassReason, PopConfig};
use pop_tests::rng::Rng;
use pop_tests::testrun::{customer_and_upstream, in_netns, require_root, udp_frame, Harness};

const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
/// Customer ids used: 1..=CUSTOMERS.
const CUSTOMERS: u32 = 6;
/// All prefixes and addresses lie in 10.0.0.0/12, so that they nest often.
const REGION: u32 = 0x0a00_0000;
const REGION_BITS: u32 = 20;

/// An address in [`REGION`].
fn addr_in_region(rng: &mut Rng) -> u32 {
    REGION | (rng.next() as u32 & ((1 << REGION_BITS) - 1))
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// Random customer prefixes (/12-/32 in the region, and sometimes 10.0.0.0/8
/// around them all) and local addresses.
fn random_tables(rng: &mut Rng) -> Tables {
    let mut t = Tables {
        config: Some(PopConfig::default()),
        ..Tables::default()
    };
    if rng.below(2) == 0 {
        t.cust_v4.insert("10.0.0.0/8".parse().unwrap(), 1);
    }
    for _ in 0..60 {
        let len = 12 + rng.below(21) as u8;
        let bits = addr_in_region(rng) & mask(len);
        let net = Ipv4Net::new(Ipv4Addr::from(bits), len).unwrap();
        t.cust_v4
            .insert(net, 1 + rng.below(u64::from(CUSTOMERS)) as u32);
    }
    for _ in 0..24 {
        let a = Ipv4Addr::from(addr_in_region(rng));
        let kind = if rng.below(4) == 0 {
            LOCAL_BROADCAST
        } else {
            LOCAL_HOST
        };
        t.local_v4.insert(u32::from_ne_bytes(a.octets()), kind);
    }
    t
}

/// The reference: the customer of the longest prefix that holds `addr`.
fn customer_of(t: &Tables, addr: u32) -> u32 {
    t.cust_v4
        .iter()
        .filter(|(p, _)| addr & mask(p.prefix_len()) == u32::from(p.network()))
        .max_by_key(|(p, _)| p.prefix_len())
        .map_or(0, |(_, id)| *id)
}

fn is_local(t: &Tables, addr: u32) -> bool {
    t.local_v4
        .contains_key(&u32::from_ne_bytes(Ipv4Addr::from(addr).octets()))
}

/// An address the tables say something about, most of the time.
fn probe(rng: &mut Rng, t: &Tables) -> u32 {
    match rng.below(4) {
        0 => addr_in_region(rng),
        1 => {
            let locals: Vec<&u32> = t.local_v4.keys().collect();
            let key = *locals[rng.below(locals.len() as u64) as usize];
            u32::from(Ipv4Addr::from(key.to_ne_bytes()))
        }
        _ => {
            let prefixes: Vec<&Ipv4Net> = t.cust_v4.keys().collect();
            let p = prefixes[rng.below(prefixes.len() as u64) as usize];
            u32::from(p.network()) | (rng.next() as u32 & !mask(p.prefix_len()))
        }
    }
}

fn frame(src: u32, dst: u32, dst_mac: [u8; 6]) -> Vec<u8> {
    udp_frame(
        [2, 0, 0, 0, 0, 2],
        dst_mac,
        Ipv4Addr::from(src).into(),
        Ipv4Addr::from(dst).into(),
        64,
        18,
    )
}

#[test]
fn customers_and_local_addresses_agree_with_a_reference_lpm() {
    require_root();
    in_netns(|| {
        let (mut h, a, _) = customer_and_upstream("f4in", "f4out");
        h.add_route_v4("0.0.0.0/0", &[1], 0).unwrap();
        // popd's writer on the harness's maps (adopted: the route is there).
        let mut writer = Maps::open(h.pin_dir(), false).unwrap();
        let mut applied = Tables::default();
        let mut rng = Rng(0x00f1_b4ad_d2e5);

        let counters = |h: &Harness| -> Vec<u64> {
            let mut v = Vec::new();
            for id in 1..=CUSTOMERS {
                v.push(h.cust_stats(id, Direction::Out).unwrap().packets);
                v.push(h.cust_stats(id, Direction::In).unwrap().packets);
            }
            v.push(h.pass_stats(PassReason::Local).unwrap().packets);
            v
        };
        let mut checked = (0, 0);
        for round in 0..4 {
            let want = random_tables(&mut rng);
            compile::apply(&mut writer, &mut applied, &want, |_| Ok(())).unwrap();
            assert_eq!(applied.cust_v4, want.cust_v4);
            assert_eq!(applied.local_v4, want.local_v4);
            writer.routes4.fib().audit().unwrap();
            // The lists beside fib4 are popd's, for a restart: the data
            // plane must not read them. Emptied, nothing below changes.
            let listed: Vec<_> = writer.cust_v4.keys().flatten().collect();
            for k in listed {
                writer.cust_v4.remove(&k).unwrap();
            }
            let listed: Vec<u32> = writer.local_v4.keys().flatten().collect();
            for k in listed {
                writer.local_v4.remove(&k).unwrap();
            }

            // The tables as the data plane reads them (popd's mapping).
            for _ in 0..50_000 {
                let addr = probe(&mut rng, &want);
                let answer = writer.routes4.fib().lookup(Ipv4Addr::from(addr));
                assert_eq!(
                    answer.customer_id,
                    customer_of(&want, addr),
                    "round {round}: customer of {}",
                    Ipv4Addr::from(addr)
                );
                assert_eq!(
                    answer.local.is_some(),
                    is_local(&want, addr),
                    "round {round}: local {}",
                    Ipv4Addr::from(addr)
                );
            }

            // Packets through the program.
            for _ in 0..400 {
                let (src, dst) = (probe(&mut rng, &want), probe(&mut rng, &want));
                let before = counters(&h);
                let (action, _) = h.run(&frame(src, dst, a.mac), a.ifindex).unwrap();
                let after = counters(&h);
                let mut expected = before.clone();
                let what = format!(
                    "round {round}: {} -> {}",
                    Ipv4Addr::from(src),
                    Ipv4Addr::from(dst)
                );
                if is_local(&want, dst) {
                    assert_eq!(action, XDP_PASS, "{what}: to a local address");
                    expected[2 * CUSTOMERS as usize] += 1;
                    checked.0 += 1;
                } else {
                    assert_eq!(action, XDP_REDIRECT, "{what}: forwarded");
                    let (out, inn) = (customer_of(&want, src), customer_of(&want, dst));
                    if out != 0 {
                        expected[2 * (out as usize - 1)] += 1;
                    }
                    if inn != 0 {
                        expected[2 * (inn as usize - 1) + 1] += 1;
                    }
                    checked.1 += 1;
                }
                assert_eq!(
                    after, expected,
                    "{what}: counters (out/in per customer 1.., local passes)"
                );
            }
        }
        println!(
            "{} packets to local addresses, {} forwarded, all as the reference says",
            checked.0, checked.1
        );
        assert!(checked.0 > 100 && checked.1 > 100, "{checked:?}");
    });
}

/// The lists popd reads back after a restart hold what fib4 holds: a second
/// popd (a restart) adopts the maps and finds the same customers and local
/// addresses, with their kinds, and the same answers.
#[test]
fn a_restart_reads_back_customers_and_local_addresses() {
    require_root();
    in_netns(|| {
        let h = Harness::load().unwrap();
        let mut writer = Maps::open(h.pin_dir(), true).unwrap();
        let mut applied = Tables::default();
        let mut rng = Rng(77);
        let want = random_tables(&mut rng);
        compile::apply(&mut writer, &mut applied, &want, |_| Ok(())).unwrap();
        let before: HashMap<u32, _> = (0..20_000)
            .map(|_| {
                let a = probe(&mut rng, &want);
                (a, writer.routes4.fib().lookup(Ipv4Addr::from(a)))
            })
            .collect();
        drop(writer);

        let restarted = Maps::open(h.pin_dir(), false).unwrap();
        let back = compile::read_back(&restarted, &mut Default::default());
        assert_eq!(back.cust_v4, want.cust_v4);
        assert_eq!(back.local_v4, want.local_v4);
        for (a, answer) in &before {
            assert_eq!(
                restarted.routes4.fib().lookup(Ipv4Addr::from(*a)),
                *answer,
                "{} after the restart",
                Ipv4Addr::from(*a)
            );
            assert_eq!(
                restarted.routes4.fib().desired(Ipv4Addr::from(*a)),
                *answer,
                "{}: the restarted writer's planes",
                Ipv4Addr::from(*a)
            );
        }
    });
}

/// More host addresses than fib4 has tbl8 groups (one per /24 that holds
/// one): the change still succeeds, the addresses that fit are loaded, the
/// rest are left out (logged) and tried again by the next change.
#[test]
fn host_addresses_beyond_the_fib_do_not_fail_a_change() {
    require_root();
    in_netns(|| {
        let h = Harness::load().unwrap();
        let mut writer = Maps::open(h.pin_dir(), true).unwrap();
        let groups = pop_common::fib4::FIB4_MAX_GROUPS;
        let mut want = Tables {
            config: Some(PopConfig::default()),
            ..Tables::default()
        };
        // One address in each of groups + 1 different /24s.
        for i in 0..=groups {
            let a = Ipv4Addr::from(0x0a00_0001 | (i << 8));
            want.local_v4
                .insert(u32::from_ne_bytes(a.octets()), LOCAL_HOST);
        }
        let mut applied = Tables::default();
        compile::apply(&mut writer, &mut applied, &want, |_| Ok(())).unwrap();
        assert_eq!(applied.local_v4.len(), groups as usize);
        // The next change tries the one left out again, and still succeeds.
        compile::apply(&mut writer, &mut applied, &want, |_| Ok(())).unwrap();
        assert_eq!(applied.local_v4.len(), groups as usize);
        writer.routes4.fib().audit().unwrap();
    });
}
