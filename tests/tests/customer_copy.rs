//! Customer changes under traffic.
//!
//! Customers are in fib4 (IPv4) and fib6 (IPv6), changed one prefix at a
//! time: a packet is counted to its source's and destination's customer, old
//! or new, never to none. The LPM copies of the customer lists
//! (`cust_v4_1`, `cust_v6_1`) and `pop_config.cust_copy`, which once picked
//! the copy a packet used, play no part.
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::Array;
use ipnet::{Ipv4Net, Ipv6Net};
use pop::daemon::compile::{self, Tables};
use pop::dataplane::Maps;
use pop_common::{maps, Direction, PopConfig, PopCustomerRef};
use pop_tests::testrun::{self, customer_and_upstream, in_netns, require_root, Harness, Port};

const XDP_REDIRECT: u32 = 4;

/// A loaded harness with a customer port `a` (returned) and an upstream port
/// that `route` leads to.
fn harness(a: &str, b: &str, route: &str) -> (Harness, Port) {
    let (mut h, a, _) = customer_and_upstream(a, b);
    if route.contains(':') {
        h.add_route_v6(route, &[1], 0).unwrap();
    } else {
        h.add_route_v4(route, &[1], 0).unwrap();
    }
    (h, a)
}

fn set_cust_copy(h: &mut Harness, copy: u32) {
    let mut config: Array<_, PopConfig> =
        Array::try_from(h.map_mut(maps::CONFIG).unwrap()).unwrap();
    let mut c = config.get(&0, 0).unwrap();
    c.cust_copy = copy;
    config.set(0, c, 0).unwrap();
}

/// A UDP frame from `src` to `dst` arriving on `a`.
fn udp_frame(a: &Port, src: std::net::IpAddr, dst: std::net::IpAddr) -> Vec<u8> {
    testrun::udp_frame([2, 0, 0, 0, 0, 2], a.mac, src, dst, 64, 18)
}

/// Runs `frame` 5 times with each `cust_copy` (0, 1, 0): every run is
/// redirected and counted for customer 1 (from `fib`), none for customer 2
/// (in the LPM copy `copy_map`).
fn only_the_fib_counts(h: &mut Harness, a: &Port, frame: &[u8], fib: &str, copy_map: &str) {
    let out = |h: &Harness, id| h.cust_stats(id, Direction::Out).unwrap().packets;
    for copy in [0, 1, 0] {
        set_cust_copy(h, copy);
        let (one, two) = (out(h, 1), out(h, 2));
        for _ in 0..5 {
            let (action, _) = h.run(frame, a.ifindex).unwrap();
            assert_eq!(action, XDP_REDIRECT);
        }
        assert_eq!(out(h, 1) - one, 5, "cust_copy {copy}: customer 1 ({fib})");
        assert_eq!(out(h, 2), two, "cust_copy {copy}: customer 2 ({copy_map})");
    }
}

/// IPv6 customers come from fib6 whatever `cust_copy` says: the LPM copies
/// (here `cust_v6_1`, holding customer 2) are not read.
#[test]
fn ipv6_customers_come_from_fib6_in_either_copy() {
    require_root();
    in_netns(|| {
        let (mut h, a) = harness("ccin", "ccout", "2001:db8:ffff:1::/64");
        h.add_customer_v6("2001:db8:a::/48", 1).unwrap();
        {
            let mut copy1: LpmTrie<_, [u8; 16], PopCustomerRef> =
                LpmTrie::try_from(h.map_mut(maps::CUST_V6_1).unwrap()).unwrap();
            let net: Ipv6Addr = "2001:db8:a::".parse().unwrap();
            copy1
                .insert(
                    &Key::new(48, net.octets()),
                    PopCustomerRef { customer_id: 2 },
                    0,
                )
                .unwrap();
        }
        let frame = udp_frame(
            &a,
            "2001:db8:a::10".parse::<Ipv6Addr>().unwrap().into(),
            "2001:db8:ffff:1::1".parse::<Ipv6Addr>().unwrap().into(),
        );
        only_the_fib_counts(&mut h, &a, &frame, "fib6", "cust_v6_1");
    });
}

/// IPv4 customers come from fib4 whatever `cust_copy` says: the LPM copies
/// (here the unused `cust_v4_1`, holding customer 2) are not read.
#[test]
fn ipv4_customers_come_from_fib4_in_either_copy() {
    require_root();
    in_netns(|| {
        let (mut h, a) = harness("cfin", "cfout", "100.64.0.0/24");
        h.add_customer_v4("198.51.100.0/24", 1).unwrap();
        {
            let mut copy1: LpmTrie<_, [u8; 4], PopCustomerRef> =
                LpmTrie::try_from(h.map_mut(maps::CUST_V4_1).unwrap()).unwrap();
            copy1
                .insert(
                    &Key::new(24, [198, 51, 100, 0]),
                    PopCustomerRef { customer_id: 2 },
                    0,
                )
                .unwrap();
        }
        let frame = udp_frame(
            &a,
            Ipv4Addr::new(198, 51, 100, 10).into(),
            Ipv4Addr::new(100, 64, 0, 1).into(),
        );
        only_the_fib_counts(&mut h, &a, &frame, "fib4", "cust_v4_1");
    });
}

/// Customer table set `k` of the tests under traffic below: the source
/// block (198.51.100.0/24, 2001:db8:a::/48) is customer `1 + k`, cut into
/// `2^k` prefixes, the destination block (203.0.113.0/24, 2001:db8:b::/48)
/// is customer `4 + k`, cut the same way, and 2000 filler prefixes are
/// customer `7 + k` so that every rewrite takes a while.
fn customer_set(k: u32, v6: bool) -> Tables {
    let mut t = Tables {
        config: Some(PopConfig::default()),
        ..Tables::default()
    };
    if v6 {
        let len = 48 + k as u8;
        for (base, id) in [("2001:db8:a::", 1 + k), ("2001:db8:b::", 4 + k)] {
            let block = Ipv6Net::new(base.parse().unwrap(), 48).unwrap();
            for net in block.subnets(len).unwrap() {
                t.cust_v6.insert(net, id);
            }
        }
        for i in 0..2000u128 {
            let addr = Ipv6Addr::from((0x2001_0db9u128 << 96) | (i << 80));
            t.cust_v6.insert(Ipv6Net::new(addr, 48).unwrap(), 7 + k);
        }
        return t;
    }
    let len = 24 + k as u8;
    for (base, id) in [([198, 51, 100, 0], 1 + k), ([203, 0, 113, 0], 4 + k)] {
        let block: Ipv4Net = Ipv4Net::new(Ipv4Addr::from(base), 24).unwrap();
        for net in block.subnets(len).unwrap() {
            t.cust_v4.insert(net, id);
        }
    }
    for i in 0..2000u32 {
        let net = Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | (i << 8)), 24).unwrap();
        t.cust_v4.insert(net, 7 + k);
    }
    t
}

/// A customer change under continuous traffic: popd's `apply` rewrites the
/// customer tables (three layouts of the same blocks, so each rewrite removes
/// and adds prefixes) while packets run. Every packet must be counted to
/// exactly one source and one destination customer, never to none (a
/// half-written table). Returns after at least 5 s and 30 rewrites.
fn changes_under_traffic(names: (&str, &str), v6: bool) {
    let route = if v6 {
        "2001:db8:b::/48"
    } else {
        "203.0.113.0/24"
    };
    let (h, a) = harness(names.0, names.1, route);

    let sets: Vec<Tables> = (0..3).map(|k| customer_set(k, v6)).collect();
    // Adopted (not fresh): the harness wrote a route.
    let mut writer = Maps::open(h.pin_dir(), false).unwrap();
    let reader = Maps::open(h.pin_dir(), false).unwrap();
    let mut applied = Tables::default();
    compile::apply(&mut writer, &mut applied, &sets[0], |_| Ok(())).unwrap();

    // Sources and destinations spread over every prefix of every layout.
    let frames: Vec<Vec<u8>> = (0..16u8)
        .map(|i| {
            if v6 {
                let part = u16::from(i) << 12;
                let src = Ipv6Addr::new(0x2001, 0xdb8, 0xa, part, 0, 0, 0, 5);
                let dst = Ipv6Addr::new(0x2001, 0xdb8, 0xb, !part, 0, 0, 0, 1);
                udp_frame(&a, src.into(), dst.into())
            } else {
                let src = Ipv4Addr::new(198, 51, 100, i * 16 + 5);
                let dst = Ipv4Addr::new(203, 0, 113, 255 - i * 16);
                udp_frame(&a, src.into(), dst.into())
            }
        })
        .collect();
    let snapshot = || -> Vec<u64> {
        let out = (1..=3).map(|id| reader.customer_counter(id, Direction::Out).packets);
        let inn = (4..=6).map(|id| reader.customer_counter(id, Direction::In).packets);
        out.chain(inn).collect()
    };

    let stop = AtomicBool::new(false);
    let swaps = AtomicU64::new(0);
    let (mut runs, mut violations) = (0u64, Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                k = (k + 1) % sets.len();
                compile::apply(&mut writer, &mut applied, &sets[k], |_| Ok(())).unwrap();
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline || swaps.load(Ordering::Relaxed) < 30 {
            for frame in &frames {
                let before = snapshot();
                let (action, _) = h.run(frame, a.ifindex).unwrap();
                let after = snapshot();
                runs += 1;
                let moved: Vec<usize> = (0..6).filter(|&i| after[i] != before[i]).collect();
                let one_each = moved.len() == 2
                    && moved[0] < 3
                    && moved[1] >= 3
                    && moved.iter().all(|&i| after[i] == before[i] + 1);
                let ok = one_each;
                if (action != XDP_REDIRECT || !ok) && violations.len() < 10 {
                    violations.push(format!(
                        "action {action}, counters before {before:?} after {after:?}"
                    ));
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let swaps = swaps.load(Ordering::Relaxed);
    println!("{runs} packets during {swaps} customer table rewrites");
    assert!(swaps >= 30, "only {swaps} rewrites");
    assert!(
        violations.is_empty(),
        "packets counted to a mix of tables or to none:\n{}",
        violations.join("\n")
    );
}

/// IPv6: fib6 changes prefix by prefix, adding before removing, so each
/// address answers its old or its new customer at every instant, never none.
#[test]
fn ipv6_customer_changes_under_traffic_never_lose_a_customer() {
    require_root();
    in_netns(|| changes_under_traffic(("crin", "crout"), true));
}

/// IPv4: fib4 changes prefix by prefix, adding before removing, so each
/// address answers its old or its new customer at every instant, never none.
#[test]
fn ipv4_customer_changes_under_traffic_never_lose_a_customer() {
    require_root();
    in_netns(|| changes_under_traffic(("c4in", "c4out"), false));
}
