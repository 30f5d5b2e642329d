//! The learned-route table against an in-memory writer that counts writes
//! and holds a route map of a chosen capacity.
use super::*;
use crate::config::routes::ConfiguredRoutes;
use crate::netlink::Neighbour;

#[derive(Default)]
struct FakeMaps {
    cap: usize,
    v4: HashMap<Ipv4Net, PopRoute>,
    v6: HashMap<Ipv6Net, PopRoute>,
    nhs: HashMap<u32, PopNexthop>,
    route_writes: usize,
    nh_writes: usize,
    /// Every IPv6 route written, in the order written.
    v6_writes: Vec<Ipv6Net>,
}

impl RouteWriter for FakeMaps {
    fn set_route_v4(&mut self, p: &Ipv4Net, r: &PopRoute) -> Result<(), DataplaneError> {
        if !self.v4.contains_key(p) && self.v4.len() >= self.cap {
            return Err(DataplaneError::MapFull {
                map: "routes_v4",
                max_entries: self.cap as u32,
            });
        }
        // A route never points at a free next hop.
        for id in &r.nh_ids[..r.nh_count as usize] {
            assert!(
                self.nhs.contains_key(id),
                "{p} uses next hop {id} before it is written"
            );
        }
        self.route_writes += 1;
        self.v4.insert(*p, *r);
        Ok(())
    }
    fn del_route_v4(&mut self, p: &Ipv4Net) -> Result<(), DataplaneError> {
        self.route_writes += 1;
        self.v4.remove(p);
        Ok(())
    }
    fn set_route_v6(&mut self, p: &Ipv6Net, r: &PopRoute) -> Result<(), DataplaneError> {
        if !self.v6.contains_key(p) && self.v6.len() >= self.cap {
            return Err(DataplaneError::MapFull {
                map: "fib6_nodes",
                max_entries: self.cap as u32,
            });
        }
        self.route_writes += 1;
        self.v6_writes.push(*p);
        self.v6.insert(*p, *r);
        Ok(())
    }
    fn del_route_v6(&mut self, p: &Ipv6Net) -> Result<(), DataplaneError> {
        self.route_writes += 1;
        self.v6.remove(p);
        Ok(())
    }
    fn set_nexthop(&mut self, id: u32, nh: &PopNexthop) -> Result<(), DataplaneError> {
        self.nh_writes += 1;
        if nh.flags == 0 {
            // Freed: no route may still use it.
            for (p, r) in &self.v4 {
                assert!(
                    !r.nh_ids[..r.nh_count as usize].contains(&id),
                    "{p} still uses freed {id}"
                );
            }
            self.nhs.remove(&id);
        } else {
            self.nhs.insert(id, *nh);
        }
        Ok(())
    }
}

fn fake(cap: usize) -> FakeMaps {
    FakeMaps {
        cap,
        ..Default::default()
    }
}

/// Port eth0 (ifindex 2, attached), foreign (3, not attached); neighbours
/// 192.0.2.1 and .2 known on eth0.
fn kernel() -> KernelView {
    let mut k = KernelView::default();
    for (name, ifindex) in [("eth0", 2), ("other", 3)] {
        k.links.insert(
            name.into(),
            Link {
                ifindex,
                mac: [2, 0, 0, 0, 0, ifindex as u8],
                mtu: 1500,
                xdp: None,
                vlan: None,
                ..Link::default()
            },
        );
    }
    for last in [1u8, 2] {
        k.neighbours.insert(
            (2, IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))),
            Neighbour {
                mac: Some([2, 0, 0, 0, 1, last]),
            },
        );
    }
    k
}

fn unicast(hops: &[(u32, &str)]) -> RouteKind {
    let mut h = [Hop::default(); MAX_HOPS];
    for (i, (ifindex, via)) in hops.iter().enumerate() {
        h[i] = Hop {
            ifindex: *ifindex,
            via: Some(via.parse().unwrap()),
        };
    }
    RouteKind::Unicast {
        count: hops.len() as u8,
        hops: h,
        truncated: false,
    }
}

fn new(prefix: &str, kind: RouteKind) -> RouteMsg {
    RouteMsg::New {
        table: 100,
        prefix: prefix.parse().unwrap(),
        kind,
    }
}

fn del(prefix: &str) -> RouteMsg {
    RouteMsg::Del {
        table: 100,
        prefix: prefix.parse().unwrap(),
    }
}

struct World {
    kernel: KernelView,
    ports: HashSet<u32>,
    configured: ConfiguredRoutes,
}

impl World {
    fn new() -> Self {
        Self {
            kernel: kernel(),
            ports: HashSet::from([2]),
            configured: ConfiguredRoutes::default(),
        }
    }
    fn env(&self) -> Env<'_> {
        Env::new(&self.kernel, &self.ports, &self.configured)
    }
}

fn net(p: &str) -> Ipv4Net {
    p.parse().unwrap()
}

#[test]
fn routes_share_interned_next_hops_and_free_them_after_the_last_user() {
    let w = World::new();
    let mut m = fake(100);
    let mut l = LearnedRoutes::default();
    let ecmp = unicast(&[(2, "192.0.2.1"), (2, "192.0.2.2")]);
    l.apply(
        &[
            new("10.0.0.0/24", ecmp),
            new("10.0.1.0/24", ecmp),
            new("10.0.2.0/24", unicast(&[(2, "192.0.2.1")])),
            new("2001:db8::/32", RouteKind::Blackhole),
        ],
        &w.env(),
        &mut m,
    );
    assert_eq!(m.nhs.len(), 2, "two next hops, written once each");
    assert_eq!(m.nh_writes, 2);
    let r = m.v4[&net("10.0.0.0/24")];
    assert_eq!(r.nh_count, 2);
    assert_eq!(r, m.v4[&net("10.0.1.0/24")], "one group for both");
    assert!(r.nh_ids.iter().take(2).all(|id| *id >= LEARNED_NH_FIRST));
    let nh = m.nhs[&r.nh_ids[0]];
    assert_eq!((nh.ifindex, nh.flags), (2, NH_VALID | NH_RESOLVED));
    assert_eq!(nh.dmac, [2, 0, 0, 0, 1, 1]);
    assert_eq!(
        m.v6[&"2001:db8::/32".parse().unwrap()].flags,
        ROUTE_BLACKHOLE
    );
    // Replacing the same value writes nothing.
    let writes = m.route_writes;
    l.apply(&[new("10.0.0.0/24", ecmp)], &w.env(), &mut m);
    assert_eq!(m.route_writes, writes);
    // .2 is freed only when its last route goes.
    l.apply(&[del("10.0.0.0/24")], &w.env(), &mut m);
    assert_eq!(m.nhs.len(), 2);
    l.apply(&[del("10.0.1.0/24")], &w.env(), &mut m);
    assert_eq!(m.nhs.len(), 1);
    assert_eq!(l.len_v4(), 1);
    assert_eq!(l.nexthop_count(), 1);
}

#[test]
fn routes_via_foreign_devices_or_without_gateway_are_skipped_and_counted() {
    let w = World::new();
    let mut m = fake(100);
    let mut l = LearnedRoutes::default();
    let mut dev_only = [Hop::default(); MAX_HOPS];
    dev_only[0].ifindex = 2;
    l.apply(
        &[
            new("10.0.0.0/24", unicast(&[(3, "192.0.2.9")])),
            new(
                "10.0.1.0/24",
                RouteKind::Unicast {
                    count: 1,
                    hops: dev_only,
                    truncated: false,
                },
            ),
            new("10.0.2.0/24", RouteKind::Other(2)),
            // Half foreign: forwards by the usable half.
            new(
                "10.0.3.0/24",
                unicast(&[(3, "192.0.2.9"), (2, "192.0.2.1")]),
            ),
        ],
        &w.env(),
        &mut m,
    );
    assert_eq!(l.counters.skipped_foreign_device, 1);
    assert_eq!(l.counters.skipped_no_gateway, 1);
    assert_eq!(l.counters.skipped_type, 1);
    assert_eq!(m.v4.len(), 1);
    assert_eq!(m.v4[&net("10.0.3.0/24")].nh_count, 1);
    assert_eq!(m.nhs.len(), 1, "no next hop left behind by skipped routes");
}

#[test]
fn configured_routes_shadow_learned_ones() {
    let mut w = World::new();
    let configured = PopRoute {
        nh_count: 1,
        nh_ids: [1, 0, 0, 0, 0, 0, 0, 0],
        ..Default::default()
    };
    w.configured.insert(
        ipnet::IpNet::V4(net("10.0.0.0/24")),
        crate::config::routes::Hops {
            dev: "eth0".into(),
            via: vec!["192.0.2.1".parse().unwrap()],
        },
    );
    let mut m = fake(100);
    m.v4.insert(net("10.0.0.0/24"), configured);
    let mut l = LearnedRoutes::default();
    l.apply(
        &[new("10.0.0.0/24", unicast(&[(2, "192.0.2.1")]))],
        &w.env(),
        &mut m,
    );
    assert_eq!(
        m.v4[&net("10.0.0.0/24")],
        configured,
        "the configured route stays"
    );
    // Its removal (compile::apply) falls back to the learned one.
    let fallback = l.fallback_v4(&net("10.0.0.0/24")).expect("learned");
    assert_eq!(fallback.nh_count, 1);
    assert!(fallback.nh_ids[0] >= LEARNED_NH_FIRST);
    // A withdraw under the configured route leaves the map alone.
    l.apply(&[del("10.0.0.0/24")], &w.env(), &mut m);
    assert_eq!(m.v4[&net("10.0.0.0/24")], configured);
    assert!(l.fallback_v4(&net("10.0.0.0/24")).is_none());
}

#[test]
fn a_full_map_counts_overflow_and_installs_when_room_frees() {
    let w = World::new();
    let mut m = fake(2);
    let mut l = LearnedRoutes::default();
    let via = unicast(&[(2, "192.0.2.1")]);
    l.apply(
        &[
            new("10.0.0.0/24", via),
            new("10.0.1.0/24", via),
            new("10.0.2.0/24", via),
        ],
        &w.env(),
        &mut m,
    );
    assert_eq!(m.v4.len(), 2);
    assert_eq!(l.overflowed(), (1, 0));
    assert_eq!(l.counters.overflow, 1);
    l.apply(&[del("10.0.0.0/24")], &w.env(), &mut m);
    l.retry_overflow(&w.env(), &mut m);
    assert_eq!(l.overflowed(), (0, 0));
    assert!(m.v4.contains_key(&net("10.0.2.0/24")));
    // Evicting for configured routes.
    assert_eq!(l.evict(false, 1, &w.env(), &mut m), 1);
    assert_eq!(m.v4.len(), 1);
    assert_eq!(l.overflowed(), (1, 0));
}

#[test]
fn a_resync_writes_only_the_differences() {
    let w = World::new();
    let mut m = fake(100);
    let mut l = LearnedRoutes::default();
    let a = unicast(&[(2, "192.0.2.1")]);
    let b = unicast(&[(2, "192.0.2.2")]);
    l.apply(
        &[
            new("10.0.0.0/24", a),
            new("10.0.1.0/24", a),
            new("10.0.2.0/24", a),
        ],
        &w.env(),
        &mut m,
    );
    let writes = m.route_writes;
    let mut st = Staged::default();
    for msg in [
        new("10.0.0.0/24", a),
        new("10.0.1.0/24", b),
        new("10.0.3.0/24", a),
    ] {
        l.stage(&mut st, &msg, &w.env(), &mut m);
    }
    l.commit(st, &w.env(), &mut m);
    // 10.0.1 changed, 10.0.3 new, 10.0.2 gone; 10.0.0 untouched.
    assert_eq!(m.route_writes - writes, 3);
    let mut got: Vec<_> = m.v4.keys().map(|p| p.to_string()).collect();
    got.sort();
    assert_eq!(got, ["10.0.0.0/24", "10.0.1.0/24", "10.0.3.0/24"]);
    assert_eq!(l.len_v4(), 3);
}

#[test]
fn a_restart_reuses_pinned_entries_and_removes_only_stale_ones() {
    let w = World::new();
    // A previous run's maps.
    let mut m = fake(100);
    let mut before = LearnedRoutes::default();
    let a = unicast(&[(2, "192.0.2.1")]);
    let b = unicast(&[(2, "192.0.2.2")]);
    before.apply(
        &[
            new("10.0.0.0/24", a),
            new("10.0.1.0/24", b),
            new("10.0.2.0/24", a),
        ],
        &w.env(),
        &mut m,
    );
    let mut pinned = Pinned {
        nexthops: m.nhs.clone(),
        ..Default::default()
    };
    for (p, r) in &m.v4 {
        pinned.insert_v4(*p, *r);
    }
    let (route_writes, nh_writes) = (m.route_writes, m.nh_writes);
    // While down: 10.0.2 withdrawn, 10.0.9 announced.
    let mut l = LearnedRoutes::new(pinned);
    let mut st = Staged::default();
    for msg in [
        new("10.0.0.0/24", a),
        new("10.0.1.0/24", b),
        new("10.0.9.0/24", b),
    ] {
        l.stage(&mut st, &msg, &w.env(), &mut m);
    }
    assert!(l.first_sync_pending());
    l.commit(st, &w.env(), &mut m);
    assert!(!l.first_sync_pending());
    assert_eq!(m.route_writes - route_writes, 2, "one add, one removal");
    assert_eq!(m.nh_writes, nh_writes, "both next hops reused as they were");
    let mut got: Vec<_> = m.v4.keys().map(|p| p.to_string()).collect();
    got.sort();
    assert_eq!(got, ["10.0.0.0/24", "10.0.1.0/24", "10.0.9.0/24"]);
}

#[test]
fn a_prefix_configured_before_the_first_sync_is_left_to_the_configured_path() {
    let mut w = World::new();
    let mut m = fake(100);
    let old = PopRoute {
        nh_count: 1,
        nh_ids: [LEARNED_NH_FIRST, 0, 0, 0, 0, 0, 0, 0],
        ..Default::default()
    };
    m.nhs.insert(
        LEARNED_NH_FIRST,
        PopNexthop {
            flags: NH_VALID,
            ..Default::default()
        },
    );
    for p in ["10.0.0.0/24", "10.0.1.0/24"] {
        m.v4.insert(net(p), old);
    }
    // Next hops are read at start, route entries later (by the follower).
    let mut l = LearnedRoutes::new(Pinned {
        nexthops: m.nhs.clone(),
        ..Default::default()
    });
    let mut routes = Pinned::default();
    for (p, r) in &m.v4 {
        routes.insert_v4(*p, *r);
    }
    // Configured after the start, before the dump: the configured path wrote it.
    let configured = PopRoute {
        nh_count: 1,
        nh_ids: [1, 0, 0, 0, 0, 0, 0, 0],
        ..Default::default()
    };
    w.configured.insert(
        ipnet::IpNet::V4(net("10.0.0.0/24")),
        crate::config::routes::Hops {
            dev: "eth0".into(),
            via: vec!["192.0.2.1".parse().unwrap()],
        },
    );
    m.nhs.insert(
        1,
        PopNexthop {
            flags: NH_VALID,
            ..Default::default()
        },
    );
    m.v4.insert(net("10.0.0.0/24"), configured);
    // 10.0.1 was configured and deleted again: it is gone from the map, and
    // the pinned value must not be trusted for it.
    assert!(l.fallback_v4(&net("10.0.1.0/24")).is_none());
    m.v4.remove(&net("10.0.1.0/24"));
    // Read before that removal: the entry is stale.
    l.attach_pinned_routes(routes);
    let mut st = Staged::default();
    let via = unicast(&[(2, "192.0.2.1")]);
    for msg in [new("10.0.0.0/24", via), new("10.0.1.0/24", via)] {
        l.stage(&mut st, &msg, &w.env(), &mut m);
    }
    l.commit(st, &w.env(), &mut m);
    assert_eq!(
        m.v4[&net("10.0.0.0/24")],
        configured,
        "the configured route stays"
    );
    assert!(
        m.v4.contains_key(&net("10.0.1.0/24")),
        "the learned route is written"
    );
}

#[test]
fn an_ipv6_next_hop_removed_leaves_the_others() {
    let mut w = World::new();
    for last in [1u16, 2] {
        w.kernel.neighbours.insert(
            (
                2,
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last)),
            ),
            Neighbour {
                mac: Some([2, 0, 0, 0, 2, last as u8]),
            },
        );
    }
    let mut m = fake(100);
    let mut l = LearnedRoutes::default();
    let p: Ipv6Net = "2001:db8:1::/64".parse().unwrap();
    l.apply(
        &[new(
            "2001:db8:1::/64",
            unicast(&[(2, "2001:db8::1"), (2, "2001:db8::2")]),
        )],
        &w.env(),
        &mut m,
    );
    assert_eq!(m.v6[&p].nh_count, 2);
    let mut gone = [Hop::default(); MAX_HOPS];
    gone[0] = Hop {
        ifindex: 2,
        via: Some("2001:db8::2".parse().unwrap()),
    };
    let del_one = RouteMsg::DelHops {
        table: 100,
        prefix: IpNet::V6(p),
        count: 1,
        hops: gone,
    };
    l.apply(std::slice::from_ref(&del_one), &w.env(), &mut m);
    assert_eq!(
        m.v6[&p].nh_count, 1,
        "the route stays with the other next hop"
    );
    assert_eq!(l.nexthop_count(), 1, "the removed next hop is freed");
    gone[0].via = Some("2001:db8::1".parse().unwrap());
    let del_last = RouteMsg::DelHops {
        table: 100,
        prefix: IpNet::V6(p),
        count: 1,
        hops: gone,
    };
    l.apply(std::slice::from_ref(&del_last), &w.env(), &mut m);
    assert!(!m.v6.contains_key(&p));
    assert_eq!(l.len_v6(), 0);
}

fn net6s(text: &[&str]) -> Vec<Ipv6Net> {
    text.iter().map(|t| t.parse().unwrap()).collect()
}

/// Bulk writes of IPv6 routes (the first sync after a start, a resync, the
/// retry of overflowed routes) go in prefix order, address then length,
/// whatever order the dump and the hash maps give: fib6 then lays the new
/// trie nodes out depth-first.
#[test]
fn ipv6_bulk_writes_go_in_prefix_order() {
    let w = World::new();
    let mut m = fake(100);
    let mut l = LearnedRoutes::new(Pinned::default());
    let dump = [
        "2001:db8:5::/48",
        "2001:db8::/32",
        "2001:db8:1:8000::/49",
        "2001:db8:a::/48",
        "2001:db8:1::/48",
        "2001:db8::/48",
        "2001:db8:1::/49",
        "2001:db8:ff00::/40",
    ];
    let mut st = Staged::default();
    for p in dump {
        l.stage(&mut st, &new(p, RouteKind::Blackhole), &w.env(), &mut m);
    }
    l.commit(st, &w.env(), &mut m);
    let mut want = net6s(&dump);
    want.sort_by_key(|p| (p.network(), p.prefix_len()));
    assert_eq!(m.v6_writes, want, "the first sync");
    assert_eq!(
        m.v6_writes[..3],
        net6s(&["2001:db8::/32", "2001:db8::/48", "2001:db8:1::/48"])
    );
    // A resync: only new and changed routes, in prefix order too.
    m.v6_writes.clear();
    let a = unicast(&[(2, "192.0.2.1")]);
    let mut st = Staged::default();
    for p in dump {
        l.stage(&mut st, &new(p, RouteKind::Blackhole), &w.env(), &mut m);
    }
    for p in ["2001:db8:9::/48", "2001:db8:2::/48", "2001:db8:0:1::/64"] {
        l.stage(&mut st, &new(p, RouteKind::Blackhole), &w.env(), &mut m);
    }
    l.stage(&mut st, &new("2001:db8:5::/48", a), &w.env(), &mut m);
    l.commit(st, &w.env(), &mut m);
    assert_eq!(
        m.v6_writes,
        net6s(&[
            "2001:db8:0:1::/64",
            "2001:db8:2::/48",
            "2001:db8:5::/48",
            "2001:db8:9::/48",
        ])
    );
    // Overflowed routes, retried once there is room: in prefix order.
    m.cap = m.v6.len();
    m.v6_writes.clear();
    let more = ["2001:db8:7::/48", "2001:db8:3::/48", "2001:db8:6::/48"];
    let msgs: Vec<RouteMsg> = more.iter().map(|p| new(p, RouteKind::Blackhole)).collect();
    l.apply(&msgs, &w.env(), &mut m);
    assert_eq!(l.overflowed(), (0, 3));
    assert!(m.v6_writes.is_empty());
    m.cap += 3;
    l.retry_overflow(&w.env(), &mut m);
    assert_eq!(l.overflowed(), (0, 0));
    assert_eq!(
        m.v6_writes,
        net6s(&["2001:db8:3::/48", "2001:db8:6::/48", "2001:db8:7::/48"])
    );
}
