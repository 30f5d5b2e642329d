//! The customer tables have two copies and `pop_config.cust_copy` picks the one
//! a packet uses (issue #3: customer changes are atomic like ACL swaps). The
//! same prefix maps to customer 1 in copy 0 and customer 2 in copy 1: a packet
//! is counted to the customer of the live copy only, in both directions.
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::Array;
use ipnet::Ipv4Net;
use pop::daemon::compile::{self, Tables};
use pop::dataplane::Maps;
use pop_common::{
    maps, Direction, PopConfig, PopCustomerRef, PopNexthop, Role, NH_RESOLVED, NH_VALID,
};
use pop_tests::testrun::{in_netns, require_root, veth_pair, Harness, Port};

const XDP_REDIRECT: u32 = 4;

/// A loaded harness with a customer port `a` (returned) and an upstream port
/// that `route` leads to.
fn harness(a: &str, b: &str, route: &str) -> (Harness, Port) {
    let (a, b) = veth_pair(a, b).unwrap();
    let mut h = Harness::load().unwrap();
    h.set_iface(a.ifindex, 0, Role::Customer, 1500).unwrap();
    h.set_iface(b.ifindex, 1, Role::Upstream, 1500).unwrap();
    h.add_tx_port(b.ifindex).unwrap();
    let nh = PopNexthop {
        ifindex: b.ifindex,
        flags: NH_VALID | NH_RESOLVED,
        dmac: [2, 0, 0, 0, 0, 1],
        smac: b.mac,
        mtu: 1500,
        ..PopNexthop::default()
    };
    h.set_nexthop(1, nh).unwrap();
    h.add_route_v4(route, &[1], 0).unwrap();
    (h, a)
}

fn set_cust_copy(h: &mut Harness, copy: u32) {
    let mut config: Array<_, PopConfig> =
        Array::try_from(h.map_mut(maps::CONFIG).unwrap()).unwrap();
    let mut c = config.get(&0, 0).unwrap();
    c.cust_copy = copy;
    config.set(0, c, 0).unwrap();
}

#[test]
fn packets_are_counted_by_the_live_customer_copy_only() {
    require_root();
    in_netns(|| {
        let (mut h, a) = harness("ccin", "ccout", "100.64.0.0/24");
        // Copy 0: 198.51.100.0/24 is customer 1 (through the harness).
        h.add_customer_v4("198.51.100.0/24", 1).unwrap();
        // Copy 1: the same prefix is customer 2.
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
        let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], a.mac)
            .ipv4(
                Ipv4Addr::new(198, 51, 100, 10).octets(),
                Ipv4Addr::new(100, 64, 0, 1).octets(),
                64,
            )
            .udp(1234, 9);
        let mut frame = Vec::new();
        builder.write(&mut frame, &[0u8; 18]).unwrap();
        let out = |h: &Harness, id| h.cust_stats(id, Direction::Out).unwrap().packets;

        for (copy, live, other) in [(0, 1, 2), (1, 2, 1), (0, 1, 2)] {
            set_cust_copy(&mut h, copy);
            let (live_before, other_before) = (out(&h, live), out(&h, other));
            for _ in 0..5 {
                let (action, _) = h.run(&frame, a.ifindex).unwrap();
                assert_eq!(action, XDP_REDIRECT);
            }
            assert_eq!(
                out(&h, live) - live_before,
                5,
                "cust_copy {copy}: customer {live} must count the packets"
            );
            assert_eq!(
                out(&h, other),
                other_before,
                "cust_copy {copy}: customer {other} (other copy) must not count"
            );
        }
    });
}

/// Customer table set `k` of [`customer_changes_under_traffic_never_mix_tables`]:
/// the source block 198.51.100.0/24 is customer `1 + k`, cut into `2^k`
/// prefixes, the destination block 203.0.113.0/24 is customer `4 + k`, cut the
/// same way, and 2000 filler /24s are customer `7 + k` so that every rewrite
/// takes a while.
fn customer_set(k: u32) -> Tables {
    let mut t = Tables {
        config: Some(PopConfig::default()),
        ..Tables::default()
    };
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
/// exactly one source and one destination customer, both of the same table
/// set: never to no customer (a half-written table) and never to a source of
/// one set and a destination of another (a packet reading two tables).
#[test]
fn customer_changes_under_traffic_never_mix_tables() {
    require_root();
    in_netns(|| {
        let (h, a) = harness("crin", "crout", "203.0.113.0/24");

        let sets: Vec<Tables> = (0..3).map(customer_set).collect();
        // Adopted (not fresh): the harness wrote a route.
        let mut writer = Maps::open(h.pin_dir(), false).unwrap();
        let reader = Maps::open(h.pin_dir(), false).unwrap();
        let mut applied = Tables::default();
        compile::apply(&mut writer, &mut applied, &sets[0], |_| Ok(())).unwrap();

        // Sources and destinations spread over every prefix of every layout.
        let frames: Vec<Vec<u8>> = (0..16u8)
            .map(|i| {
                let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], a.mac)
                    .ipv4([198, 51, 100, i * 16 + 5], [203, 0, 113, 255 - i * 16], 255)
                    .udp(1234, 9);
                let mut frame = Vec::new();
                builder.write(&mut frame, &[0u8; 18]).unwrap();
                frame
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
                    let one_set = moved.len() == 2
                        && moved[0] < 3
                        && moved[1] == moved[0] + 3
                        && moved.iter().all(|&i| after[i] == before[i] + 1);
                    if (action != XDP_REDIRECT || !one_set) && violations.len() < 10 {
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
    });
}
