//! The customer tables have two copies and `pop_config.cust_copy` picks the one
//! a packet uses (issue #3: customer changes are atomic like ACL swaps). The
//! same prefix maps to customer 1 in copy 0 and customer 2 in copy 1: a packet
//! is counted to the customer of the live copy only, in both directions.
use std::net::Ipv4Addr;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::Array;
use pop_common::{
    maps, Direction, PopConfig, PopCustomerRef, PopNexthop, Role, NH_RESOLVED, NH_VALID,
};
use pop_tests::testrun::{in_netns, require_root, veth_pair, Harness};

const XDP_REDIRECT: u32 = 4;

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
        let (a, b) = veth_pair("ccin", "ccout").unwrap();
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
        };
        h.set_nexthop(1, nh).unwrap();
        h.add_route_v4("100.64.0.0/24", &[1], 0).unwrap();
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
