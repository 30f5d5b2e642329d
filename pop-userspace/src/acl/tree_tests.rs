//! Unit tests of the ACL tree compiler (`tree.rs`).
use super::*;
use crate::config::validate::parse_prefix;

fn rule(priority: u32, action: AclAction) -> ValidAcl {
    ValidAcl::match_all(priority, action)
}

fn no_ifaces(_: &str) -> Option<u32> {
    None
}

#[test]
fn ipv6_prefix_is_a_range_per_word() {
    let mut r = PopAclRule::default();
    set_prefix(&mut r, 0, &parse_prefix("2001:db8:f000::/37").unwrap());
    assert_eq!((r.lo[0], r.hi[0]), (0x2001_0db8, 0x2001_0db8));
    assert_eq!((r.lo[1], r.hi[1]), (0xf000_0000, 0xf7ff_ffff));
    assert_eq!((r.lo[2], r.hi[2]), (0, u32::MAX));
    assert_eq!((r.lo[3], r.hi[3]), (0, u32::MAX));
    set_prefix(&mut r, 4, &parse_prefix("0.0.0.0/0").unwrap());
    assert_eq!((r.lo[4], r.hi[4]), (0, u32::MAX));
}

#[test]
fn packets_without_ports_get_the_no_port_value() {
    let k = key_v4(
        "192.0.2.1".parse().unwrap(),
        "198.51.100.1".parse().unwrap(),
        1,
        None,
        3,
    );
    assert_eq!(k[AclField::SrcPort as usize], ACL_NO_PORT);
    assert_eq!(k[AclField::DstPort as usize], ACL_NO_PORT);
    assert_eq!(k[AclField::Src0 as usize], 0xc000_0201);
    assert_eq!(k[AclField::InIface as usize], 3);
}

#[test]
fn first_match_by_priority_and_default_allow() {
    let mut deny_net = rule(20, AclAction::Drop);
    deny_net.src = Some(parse_prefix("192.0.2.0/24").unwrap());
    let mut allow_host = rule(10, AclAction::Allow);
    allow_host.src = Some(parse_prefix("192.0.2.7/32").unwrap());
    let c = compile(&[deny_net, allow_host], &no_ifaces).unwrap();
    let key = |src: &str| {
        key_v4(
            src.parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
            6,
            Some((1, 2)),
            1,
        )
    };
    assert_eq!(c.verdict(&key("192.0.2.7"), false), AclVerdict::Allow);
    assert_eq!(c.classify(&key("192.0.2.7"), false), Some(0));
    assert_eq!(c.verdict(&key("192.0.2.8"), false), AclVerdict::Drop);
    assert_eq!(c.classify(&key("203.0.113.1"), false), None);
}

#[test]
fn rules_on_missing_interfaces_are_left_out() {
    let mut r = rule(1, AclAction::Drop);
    r.in_iface = Some("nope0".into());
    let c = compile(&[r], &no_ifaces).unwrap();
    assert_eq!(c.meta.rule_count, 0);
}

#[test]
fn duplicate_priorities_are_refused() {
    let e = compile(
        &[rule(5, AclAction::Drop), rule(5, AclAction::Allow)],
        &no_ifaces,
    );
    assert_eq!(e.unwrap_err(), "acl 5: priority listed twice");
}

#[test]
fn source_and_destination_rules_get_separate_trees() {
    let mut rules = Vec::new();
    for i in 0..200u32 {
        let mut s = rule(2 * i, AclAction::Drop);
        s.src = Some(IpNet::V4(
            ipnet::Ipv4Net::new((0x0a00_0000 + (i << 8)).into(), 24).unwrap(),
        ));
        let mut d = rule(2 * i + 1, AclAction::Drop);
        d.dst = Some(IpNet::V4(
            ipnet::Ipv4Net::new((0x0b00_0000 + (i << 8)).into(), 24).unwrap(),
        ));
        rules.extend([s, d]);
    }
    let c = compile(&rules, &no_ifaces).unwrap();
    assert_eq!(c.stats.trees_v4, 2);
    assert_eq!(c.stats.trees_v6, 0);
    // Linear in the rules, not a cross product.
    assert!(c.stats.nodes < 400, "{:?}", c.stats);
    let k = key_v4(
        Ipv4Addr::new(10, 0, 5, 1),
        Ipv4Addr::new(11, 0, 3, 1),
        17,
        Some((1, 1)),
        1,
    );
    // dst 11.0.3.0/24 (priority 7) comes before src 10.0.5.0/24 (priority 10).
    assert_eq!(c.classify(&k, false), Some(7));
}

/// Wide nodes pad binary leaves above their last level and leaves span
/// blocks: the replay of the packed trees still finds the first match of a
/// linear scan, for uneven trees of mixed shapes.
#[test]
fn packed_trees_classify_like_a_linear_scan() {
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = move |n: u32| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) as u32) % n
    };
    let mut rules = Vec::new();
    for priority in 0..600 {
        let mut r = rule(priority, AclAction::Drop);
        if next(3) > 0 {
            let len = 8 + next(25) as u8;
            r.src = Some(IpNet::V4(
                ipnet::Ipv4Net::new((0x0a00_0000 | next(1 << 20) << 4).into(), len)
                    .unwrap()
                    .trunc(),
            ));
        }
        if next(3) > 0 {
            let len = 8 + next(25) as u8;
            r.dst = Some(IpNet::V4(
                ipnet::Ipv4Net::new((0x0a00_0000 | next(1 << 20) << 4).into(), len)
                    .unwrap()
                    .trunc(),
            ));
        }
        if next(2) > 0 {
            r.proto = Some(6);
            let lo = next(2000) as u16;
            r.dst_port = Some((lo, lo + next(200) as u16));
        }
        rules.push(r);
    }
    let c = compile(&rules, &no_ifaces).unwrap();
    assert!(c.stats.nodes > 10 && c.stats.depth_v4 > 3, "{:?}", c.stats);
    for _ in 0..20_000 {
        let key = key_v4(
            Ipv4Addr::from(0x0a00_0000 | next(1 << 24)),
            Ipv4Addr::from(0x0a00_0000 | next(1 << 24)),
            6,
            Some((1, next(2300) as u16)),
            1,
        );
        let linear = c.rules.iter().position(|r| rule_matches(r, &key));
        assert_eq!(c.classify(&key, false), linear, "{key:?}");
    }
}
