//! Unit tests of the ACL first stage (`filter.rs`).
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use pop_common::{AclVerdict, ACL_NO_PORT};

use super::*;
use crate::acl::tree::{compile, key_v4, key_v6, CompiledAcl};
use crate::config::model::AclAction;
use crate::config::validate::{parse_prefix, ValidAcl};

fn rule(priority: u32) -> ValidAcl {
    ValidAcl::match_all(priority, AclAction::Drop)
}

fn no_ifaces(_: &str) -> Option<u32> {
    None
}

/// The cells a lone range reaches, as (first, last) runs.
fn runs(f: usize, is_v6: bool, lo: u32, hi: u32) -> Vec<(usize, usize)> {
    let mut cells = Cells::new();
    cells.add(f, is_v6, lo, hi);
    let mut out: Vec<(usize, usize)> = Vec::new();
    for c in (0..ACL_FILTER_CELLS).filter(|&c| cells.has(c)) {
        match out.last_mut() {
            Some(run) if run.1 + 1 == c => run.1 = c,
            _ => out.push((c, c)),
        }
    }
    out
}

#[test]
fn cells_of_prefixes_ports_and_wrapping_ranges() {
    // IPv4: /16 cells; 10.0.0.0/8 is 256 of them, a /24 one.
    assert_eq!(runs(0, false, 0x0a00_0000, 0x0aff_ffff), [(0x0a00, 0x0aff)]);
    assert_eq!(runs(1, false, 0x6440_0100, 0x6440_01ff), [(0x6440, 0x6440)]);
    // IPv6: bits 16-31 of the first word: 2001:db8::/32 is one cell, a /12 all.
    assert_eq!(runs(0, true, 0x2001_0db8, 0x2001_0db8), [(0x0db8, 0x0db8)]);
    assert_eq!(runs(0, true, 0x2a00_0000, 0x2a0f_ffff), [(0, 0xffff)]);
    // A range across a 64k boundary keeps low bits and wraps.
    assert_eq!(
        runs(0, true, 0x2001_fff0, 0x2002_0010),
        [(0, 0x10), (0xfff0, 0xffff)]
    );
    // Ports: one cell per port; the port-less value 65536 is cell 0.
    assert_eq!(runs(3, false, 80, 90), [(80, 90)]);
    assert_eq!(cell(3, false, ACL_NO_PORT), 0);
    assert_eq!(runs(3, false, 0, ACL_NO_PORT), [(0, 0xffff)]);
}

/// Five shapes, as a PoP mixes them (the bench's `acl_drop_mixed`), and a
/// last rule dropping UDP to 100.64.0.1 port 9.
fn mixed(n: u32) -> Vec<ValidAcl> {
    let mut seed = 0x0dd_ba11u64;
    let mut next = move |m: u32| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) as u32) % m
    };
    let v4 = |base: u32, span: u32, len: u32| {
        Some(IpNet::V4(
            ipnet::Ipv4Net::new(Ipv4Addr::from(base | span), len as u8)
                .unwrap()
                .trunc(),
        ))
    };
    let mut rules = Vec::new();
    for priority in 1..n {
        let mut r = rule(priority);
        let port = 1 + next(65000) as u16;
        match next(5) {
            0 => r.src = v4(0x0a00_0000, next(1 << 24), 8 + next(17)),
            1 => {
                r.dst = v4(0x6440_0000, next(1 << 22), 24 + next(9));
                r.proto = Some(6);
                r.dst_port = Some((port, port));
            }
            2 => {
                r.proto = Some(6);
                r.dst_port = Some((port, port.saturating_add(next(100) as u16)));
            }
            3 => {
                r.src = v4(0x0a00_0000, next(1 << 24), 16 + next(17));
                r.dst = v4(0x6440_0000, next(1 << 22), 16 + next(17));
            }
            _ => {
                r.dst = v4(0x6440_0000, next(1 << 22), 20 + next(13));
                r.proto = Some(6);
                r.src_port = Some((port, port.saturating_add(1000)));
            }
        }
        rules.push(r);
    }
    let mut last = rule(n);
    last.dst = Some(parse_prefix("100.64.0.1/32").unwrap());
    last.proto = Some(17);
    last.dst_port = Some((9, 9));
    rules.push(last);
    rules
}

fn first_match(c: &CompiledAcl, key: &AclKey) -> Option<usize> {
    c.rules
        .iter()
        .position(|r| (0..pop_common::ACL_FIELDS).all(|f| r.lo[f] <= key[f] && key[f] <= r.hi[f]))
}

#[test]
fn a_packet_walks_only_the_trees_that_can_match_it() {
    let c = compile(&mixed(5000), &no_ifaces).unwrap();
    assert!(c.stats.trees_v4 >= 4, "{:?}", c.stats);
    let key = key_v4(
        Ipv4Addr::new(198, 51, 100, 10),
        Ipv4Addr::new(100, 64, 0, 1),
        17,
        Some((1234, 9)),
        1,
    );
    let skip = trees_to_skip(&c.filter, &key, false);
    // Only the tree holding the last rule is left to walk.
    assert_eq!(skip.count_ones(), c.stats.trees_v4 as u32 - 1, "{skip:#b}");
    assert_eq!(c.classify(&key, false), Some(4999));
    assert_eq!(c.verdict(&key, false), AclVerdict::Drop);
}

/// The filter may only spare walks: a packet inside a rule never skips that
/// rule's tree, so the replay agrees with a linear scan; and a filter that
/// wrongly rules a tree out is caught by the same comparison.
#[test]
fn the_filter_never_hides_a_match_and_a_wrong_one_is_caught() {
    let mut c = compile(&mixed(3000), &no_ifaces).unwrap();
    let mut seed = 7u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut keys = Vec::new();
    // Points inside random rules, and random points near the rules' space.
    for i in 0..20_000 {
        let mut key = [0u32; pop_common::ACL_FIELDS];
        let r = c.rules[next() as usize % c.rules.len()];
        for (f, value) in key.iter_mut().enumerate() {
            let span = u64::from(r.hi[f] - r.lo[f]) + 1;
            *value = r.lo[f] + (next() % span) as u32;
        }
        key[AclField::Src0 as usize + 1..AclField::Src0 as usize + 4].fill(0);
        key[AclField::Dst0 as usize + 1..AclField::Dst0 as usize + 4].fill(0);
        key[AclField::Proto as usize] &= 0xff;
        key[AclField::InIface as usize] = 1;
        if i % 2 == 1 {
            key[AclField::Src0 as usize] = 0x0a00_0000 | (next() as u32 & 0x00ff_ffff);
            key[AclField::Dst0 as usize] = 0x6440_0000 | (next() as u32 & 0x003f_ffff);
            key[AclField::DstPort as usize] = next() as u32 % 65_537;
        }
        keys.push(key);
    }
    let mut matched = 0;
    for key in &keys {
        let linear = first_match(&c, key);
        matched += usize::from(linear.is_some());
        assert_eq!(c.classify(key, false), linear, "{key:?}");
    }
    assert!(matched > keys.len() / 2, "{matched} of {}", keys.len());
    // Break it on purpose: rule out, in the destination cell of a matching
    // packet, the tree that holds its rule.
    let key = keys
        .iter()
        .find(|k| first_match(&c, k).is_some())
        .copied()
        .unwrap();
    let cell_of = cell(1, false, key[AclField::Dst0 as usize]);
    c.filter[index(false, 1, cell_of)] = 0xff;
    assert_ne!(c.classify(&key, false), first_match(&c, &key));
}

#[test]
fn ipv6_packets_use_the_ipv6_cells() {
    let mut a = rule(1);
    a.src = Some(parse_prefix("2001:db8::/32").unwrap());
    let mut b = rule(2);
    b.dst = Some(parse_prefix("2a02:c7f::/48").unwrap());
    b.proto = Some(6);
    b.dst_port = Some((443, 443));
    // Enough rules of each shape for a tree each.
    let mut rules = vec![a, b];
    for i in 0..200u32 {
        let mut s = rule(10 + 2 * i);
        s.src = Some(IpNet::V6(
            ipnet::Ipv6Net::new(
                Ipv6Addr::from((0x2001_0db8_0000_u128 + u128::from(i)) << 80),
                48,
            )
            .unwrap(),
        ));
        let mut d = rule(11 + 2 * i);
        d.dst = Some(IpNet::V6(
            ipnet::Ipv6Net::new(
                Ipv6Addr::from((0x2a02_0c7f_0000_u128 + u128::from(i)) << 80),
                48,
            )
            .unwrap(),
        ));
        d.proto = Some(6);
        d.dst_port = Some((443, 443));
        rules.extend([s, d]);
    }
    let c = compile(&rules, &no_ifaces).unwrap();
    assert_eq!(c.stats.trees_v6, 2, "{:?}", c.stats);
    let key = |src: &str, dst: &str, proto: u8, port: u16| {
        key_v6(
            src.parse().unwrap(),
            dst.parse().unwrap(),
            proto,
            Some((1, port)),
            1,
        )
    };
    // Neither source nor destination cell: both trees skipped.
    let k = key("2001:db9::1", "2a02:c80::1", 6, 443);
    assert_eq!(trees_to_skip(&c.filter, &k, true), 0b11);
    assert_eq!(c.classify(&k, true), None);
    // The source's cell: one tree walked, rule 1 found.
    let k = key("2001:db8:1::1", "2a02:c80::1", 17, 53);
    assert_eq!(trees_to_skip(&c.filter, &k, true).count_ones(), 1);
    assert_eq!(c.classify(&k, true), Some(0));
    // The destination's, TCP 443: rule 2.
    let k = key("2001:db9::1", "2a02:c7f:0:1::1", 6, 443);
    assert_eq!(c.classify(&k, true), Some(1));
}

/// Trees walked per packet of `keys` (the replay's loop: not skipped, and
/// not after a match below the tree's first rule), with and without the
/// first stage.
fn trees_walked(c: &CompiledAcl, keys: &[AclKey]) -> (f64, f64) {
    let walked = |c: &CompiledAcl, key: &AclKey| {
        let skip = trees_to_skip(&c.filter, key, false);
        let best = c.classify(key, false).map_or(u32::MAX, |r| r as u32);
        (0..c.meta.trees_v4 as usize)
            .filter(|&t| skip & (1 << t) == 0 && c.meta.first_rule_v4[t] <= best)
            .count()
    };
    let mut without = c.clone();
    without.filter.clear();
    let n = keys.len() as f64;
    let sum = |c: &CompiledAcl| keys.iter().map(|k| walked(c, k)).sum::<usize>() as f64 / n;
    (sum(&without), sum(c))
}

#[test]
#[ignore = "prints trees walked per packet for traffic mixes; asserts nothing"]
fn trees_walked_by_traffic_mix() {
    let c = compile(&mixed(100_000), &no_ifaces).unwrap();
    let mut seed = 11u64;
    let mut n = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as u32
    };
    let mut mixes: Vec<(&str, Vec<AclKey>)> = Vec::new();
    let mut mix = |name, f: &mut dyn FnMut() -> AclKey| {
        mixes.push((name, (0..20_000).map(|_| f()).collect()))
    };
    let tcp = |s: u32, d: u32, sp: u32, dp: u32| {
        key_v4(s.into(), d.into(), 6, Some((sp as u16, dp as u16)), 1)
    };
    let udp = |s: u32, d: u32, sp: u32, dp: u32| {
        key_v4(s.into(), d.into(), 17, Some((sp as u16, dp as u16)), 1)
    };
    mix(
        "bench frame (UDP 198.51.100.10 -> 100.64.0.1:9)",
        &mut || udp(0xc633_640a, 0x6440_0001, 1234, 9),
    );
    mix("UDP, any source -> customers 100.64/10", &mut || {
        udp(n(), 0x6440_0000 | n() & 0x3f_ffff, n(), n())
    });
    mix("TCP, any source -> customers 100.64/10", &mut || {
        tcp(n(), 0x6440_0000 | n() & 0x3f_ffff, n(), n())
    });
    mix("TCP, 10/8 -> customers 100.64/10", &mut || {
        tcp(
            0x0a00_0000 | n() & 0xff_ffff,
            0x6440_0000 | n() & 0x3f_ffff,
            n(),
            n(),
        )
    });
    mix("TCP/UDP transit, any -> any", &mut || {
        if n() % 2 == 0 {
            tcp(n(), n(), n(), n())
        } else {
            udp(n(), n(), n(), n())
        }
    });
    println!(
        "{} IPv4 trees; trees walked per packet, without -> with the first stage:",
        c.meta.trees_v4
    );
    for (name, keys) in &mixes {
        let (before, after) = trees_walked(&c, keys);
        println!("  {name}: {before:.2} -> {after:.2}");
    }
}
