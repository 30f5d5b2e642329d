//! Random tables for the fuzzer, and writing them into the program's maps
//! (what popd's compiler does, for the parts the fuzzer uses).
use std::net::IpAddr;

use aya::maps::HashMap as BpfHashMap;
use ipnet::IpNet;
use pop::{
    acl::{self, AclMaps, SpoofTables},
    config::{
        model::AclAction,
        validate::{ValidAcl, ValidCustomer},
    },
};
use pop_common::{
    maps, PopIface, PopNexthop, PopVlanKey, Role, CFG_NO_ROUTE_DROP, IFACE_ANTI_SPOOFING,
    NH_RESOLVED, NH_VALID, ROUTE_BLACKHOLE,
};

use super::{Rng, UPPER_MAC, VLAN_DEV, VLAN_ID};
use crate::{
    model::{AclRuleSpec, CustomerSpec, Desired, IfaceSpec, NextHopSpec, Prefix, RouteSpec},
    testrun::{Harness, Port},
};

fn v4(a: [u8; 4], len: u8) -> Prefix {
    Prefix {
        addr: IpAddr::from(a),
        len,
    }
}

fn v6(a: &str, len: u8) -> Prefix {
    Prefix {
        addr: a.parse().unwrap(),
        len,
    }
}

/// Random desired state over ports `a` and `b`, from `seed`: two ports (A
/// with a served VLAN device), routes with one or several next hops
/// (resolved or not, MTUs from 68 to none, tagged or not, on either port,
/// B sometimes missing from the device map), blackholes, customers, local
/// addresses with their subnets, and either `no_route` setting.
pub fn tables(seed: u64, a: &Port, b: &Port) -> Desired {
    let mut r = Rng::new(seed ^ 0x7ab1e5);
    let src4 = |r: &mut Rng| {
        r.chance(7, 8)
            .then(|| IpAddr::from([192, 0, 2, 1 + r.below(3) as u8]))
    };
    let src6 = |r: &mut Rng| r.chance(7, 8).then(|| "2001:db8:ffff::1".parse().unwrap());
    let icmp4 = |r: &mut Rng| match src4(r) {
        Some(IpAddr::V4(x)) => Some(x),
        _ => None,
    };
    let icmp6 = |r: &mut Rng| match src6(r) {
        Some(IpAddr::V6(x)) => Some(x),
        _ => None,
    };
    let mut upper = vec![];
    if r.chance(1, 2) {
        upper.push(UPPER_MAC);
    }
    let ifaces = vec![
        IfaceSpec {
            ifindex: a.ifindex,
            slot: 1,
            mac: a.mac,
            vlan_of: None,
            icmp_src_v4: icmp4(&mut r),
            icmp_src_v6: icmp6(&mut r),
            upper_macs: upper,
        },
        IfaceSpec {
            ifindex: b.ifindex,
            slot: 2,
            mac: b.mac,
            vlan_of: None,
            icmp_src_v4: icmp4(&mut r),
            icmp_src_v6: icmp6(&mut r),
            upper_macs: vec![],
        },
        IfaceSpec {
            ifindex: VLAN_DEV,
            slot: 1,
            mac: a.mac,
            vlan_of: Some((a.ifindex, VLAN_ID)),
            icmp_src_v4: icmp4(&mut r),
            icmp_src_v6: icmp6(&mut r),
            upper_macs: vec![],
        },
    ];
    let mut tx_ports = vec![a.ifindex];
    if r.chance(7, 8) {
        tx_ports.push(b.ifindex);
    }
    let mtus = [0u32, 1500, 1280, 576, 576, 100, 100, 68, 9000];
    let nexthop = |r: &mut Rng, i: u8| NextHopSpec {
        ifindex: if r.chance(2, 3) { b.ifindex } else { a.ifindex },
        resolved: r.chance(7, 8),
        dmac: [0x02, 0, 0, 0, 0x0e, i],
        smac: [0x02, 0, 0, 0, 0x5e, i],
        mtu: *r.pick(&mtus),
        vlan: *r.pick(&[0, 0, 0, 200, VLAN_ID]),
    };
    let prefixes = [
        v4([10, 0, 0, 0], 8),
        v4([10, 1, 0, 0], 16),
        v4([10, 1, 2, 0], 24),
        v4([198, 51, 100, 0], 24),
        v4([203, 0, 113, 0], 24),
        v4([0, 0, 0, 0], 0),
        v6("2001:db8::", 32),
        v6("2001:db8:1::", 48),
        v6("2001:db8:1:2::", 64),
        v6("2001:db8:a::", 48),
        v6("::", 0),
    ];
    let mut routes = vec![];
    let mut nh_no = 0u8;
    for p in prefixes {
        // Default routes are rarer, so that no_route is reached.
        let keep = if p.len == 0 { 1 } else { 3 };
        if !r.chance(keep, 4) {
            continue;
        }
        let count = if r.chance(1, 4) { 1 + r.below(3) } else { 1 };
        let nexthops = (0..count)
            .map(|_| {
                nh_no += 1;
                nexthop(&mut r, nh_no)
            })
            .collect();
        routes.push(RouteSpec {
            prefix: p,
            nexthops,
            blackhole: r.chance(1, 16),
        });
    }
    let ports = [a.ifindex, b.ifindex, VLAN_DEV];
    let attach = |r: &mut Rng| {
        let mut at: Vec<u32> = ports.iter().copied().filter(|_| r.chance(1, 3)).collect();
        at.dedup();
        at
    };
    let mut customers = vec![
        CustomerSpec {
            id: 1,
            prefixes: vec![v4([198, 51, 100, 0], 24), v6("2001:db8:a::", 48)],
            interfaces: attach(&mut r),
            anti_spoofing: r.chance(1, 4),
        },
        CustomerSpec {
            id: 2,
            prefixes: vec![v4([10, 1, 2, 0], 24), v4([100, 64, 0, 0], 10)],
            interfaces: attach(&mut r),
            anti_spoofing: r.chance(1, 4),
        },
        CustomerSpec {
            id: 3,
            prefixes: vec![v4([203, 0, 113, 0], 24), v6("2001:db8:1::", 48)],
            interfaces: attach(&mut r),
            anti_spoofing: r.chance(1, 4),
        },
    ];
    // 10/8 holds customer 2's 10.1.2.0/24 (a sub-allocation): counted by the
    // most specific prefix, and on an anti-spoofing port of customer 3 its
    // sources pass as customer 3's own.
    if r.chance(1, 2) {
        customers[2].prefixes.push(v4([10, 0, 0, 0], 8));
    }
    let mut acls = vec![];
    if r.chance(2, 3) {
        let n = 2 + r.below(4);
        for i in 0..n {
            acls.push(acl_rule(&mut r, 10 * (n - i) as u32, &ports, &prefixes));
        }
    }
    let local = vec![
        v4([192, 0, 2, 1], 24),
        v4([10, 1, 2, 1], 24),
        v4([198, 51, 100, 1], 31),
        v6("2001:db8:ffff::1", 64),
    ];
    Desired {
        ifaces,
        tx_ports,
        routes,
        customers,
        local,
        no_route_drop: r.chance(1, 2),
        acls,
    }
}

/// A random ACL rule: one or two fields set (and the protocol of a port
/// range), so that some traffic matches and most passes.
fn acl_rule(r: &mut Rng, priority: u32, ports: &[u32], prefixes: &[Prefix]) -> AclRuleSpec {
    let mut rule = AclRuleSpec {
        priority,
        drop: r.chance(3, 4),
        src: None,
        dst: None,
        proto: None,
        src_port: None,
        dst_port: None,
        in_iface: None,
    };
    let v6 = r.chance(1, 2);
    let family: Vec<Prefix> = prefixes
        .iter()
        .copied()
        .filter(|p| p.addr.is_ipv6() == v6 && p.len > 0)
        .collect();
    for _ in 0..1 + r.below(2) {
        match r.below(6) {
            0 => rule.src = Some(*r.pick(&family)),
            1 => rule.dst = Some(*r.pick(&family)),
            2 => rule.proto = Some(*r.pick(&[1, 58, 47])),
            3 | 4 => {
                rule.proto = Some(*r.pick(&[6, 17]));
                let range = *r.pick(&[(0, 1023), (53, 53), (1024, 65535), (30000, 40000)]);
                if r.chance(1, 2) {
                    rule.dst_port = Some(range);
                } else {
                    rule.src_port = Some(range);
                }
            }
            _ => rule.in_iface = Some(*r.pick(ports)),
        }
    }
    rule
}

/// Writes `desired` into the harness's maps (after [`clear`] of the previous
/// tables): what popd's compiler does for the parts the fuzzer uses.
pub fn fill(h: &mut Harness, d: &Desired) -> crate::testrun::Result<()> {
    for i in &d.ifaces {
        h.set_iface_with_mac(i.ifindex, i.slot, Role::Upstream, 1500, i.mac)?;
        h.set_icmp_sources(i.ifindex, i.icmp_src_v4, i.icmp_src_v6)?;
        for m in &i.upper_macs {
            h.add_upper_mac(i.ifindex, *m, 800)?;
        }
        if let Some((port, vid)) = i.vlan_of {
            let map = h.map_mut(maps::VLAN_IFACES)?;
            let mut vlans: BpfHashMap<_, PopVlanKey, u32> =
                BpfHashMap::try_from(map).expect("vlan_ifaces is a hash map");
            let key = PopVlanKey {
                ifindex: port,
                vid: u32::from(vid),
            };
            vlans
                .insert(key, i.ifindex, 0)
                .expect("writing vlan_ifaces");
        }
    }
    for p in &d.tx_ports {
        h.add_tx_port(*p)?;
    }
    let mut nh_id = 1u32;
    for route in &d.routes {
        let mut ids = vec![];
        for nh in &route.nexthops {
            let flags = NH_VALID | if nh.resolved { NH_RESOLVED } else { 0 };
            h.set_nexthop(
                nh_id,
                PopNexthop {
                    ifindex: nh.ifindex,
                    flags,
                    dmac: nh.dmac,
                    smac: nh.smac,
                    mtu: nh.mtu,
                    vlan: nh.vlan,
                    pad: 0,
                },
            )?;
            ids.push(nh_id);
            nh_id += 1;
        }
        let flags = if route.blackhole { ROUTE_BLACKHOLE } else { 0 };
        let text = route.prefix.to_string();
        match route.prefix.addr {
            IpAddr::V4(_) => h.add_route_v4(&text, &ids, flags)?,
            IpAddr::V6(_) => h.add_route_v6(&text, &ids, flags)?,
        }
    }
    for c in &d.customers {
        for p in &c.prefixes {
            let text = p.to_string();
            match p.addr {
                IpAddr::V4(_) => h.add_customer_v4(&text, c.id)?,
                IpAddr::V6(_) => h.add_customer_v6(&text, c.id)?,
            }
        }
    }
    for l in &d.local {
        match l.addr {
            IpAddr::V4(a) => {
                h.add_local_v4(a)?;
                // The subnet's directed broadcast address is the host's too.
                if l.len < 31 {
                    let bcast = u32::from(a) | (u32::MAX >> l.len);
                    h.add_broadcast_v4(bcast.into())?;
                }
            }
            IpAddr::V6(a) => h.add_local_v6(a)?,
        }
    }
    h.set_config(if d.no_route_drop {
        CFG_NO_ROUTE_DROP
    } else {
        0
    })?;
    // ICMP errors without a rate limit: the bucket depends on time.
    h.set_icmp_limit(0, 0)?;
    fill_admission(h, d);
    Ok(())
}

/// The interface name the ACL compiler is given for `ifindex`.
fn iface_name(ifindex: u32) -> String {
    format!("if{ifindex}")
}

/// Anti-spoofing and ACL tables, compiled by popd's own code (`pop::acl`).
fn fill_admission(h: &mut Harness, d: &Desired) {
    // The customers as popd validated them, named by id and attached by
    // interface name (`if<ifindex>`).
    let customers: Vec<ValidCustomer> = d
        .customers
        .iter()
        .map(|c| ValidCustomer {
            name: c.id.to_string(),
            prefixes: c.prefixes.iter().map(|p| to_net(*p)).collect(),
            interfaces: c.interfaces.iter().map(|i| iface_name(*i)).collect(),
            vlan: None,
            anti_spoofing: c.anti_spoofing,
            rate_bps: None,
            burst_bytes: None,
        })
        .collect();
    let spoof: SpoofTables = acl::spoof_tables(&customers, &|name| name.parse().ok(), &|name| {
        name.strip_prefix("if")?.parse().ok()
    });
    let rules: Vec<ValidAcl> = d
        .acls
        .iter()
        .map(|a| ValidAcl {
            priority: a.priority,
            action: if a.drop {
                AclAction::Drop
            } else {
                AclAction::Allow
            },
            src: a.src.map(to_net),
            dst: a.dst.map(to_net),
            proto: a.proto,
            src_port: a.src_port,
            dst_port: a.dst_port,
            in_iface: a.in_iface.map(iface_name),
        })
        .collect();
    let compiled = acl::compile(&rules, &|name| name.strip_prefix("if")?.parse().ok())
        .expect("compiling the ACL");
    let mut maps = AclMaps::open(h.pin_dir()).expect("opening the ACL maps");
    maps.swap_in(&compiled).expect("writing the ACL");
    maps.add_spoof(&spoof)
        .expect("writing the anti-spoofing tables");
    for ifindex in spoof.ports.keys() {
        let m = h.map_mut(maps::IFACES).expect("ifaces");
        let mut ifaces: BpfHashMap<_, u32, PopIface> =
            BpfHashMap::try_from(m).expect("ifaces is a hash map");
        let mut value = ifaces.get(ifindex, 0).expect("the interface was written");
        value.flags |= IFACE_ANTI_SPOOFING;
        ifaces.insert(ifindex, value, 0).expect("writing ifaces");
    }
}

fn to_net(p: Prefix) -> IpNet {
    IpNet::new(p.addr, p.len).expect("a valid prefix length")
}

/// Removes the tables [`fill`] wrote.
pub fn clear(h: &mut Harness) -> crate::testrun::Result<()> {
    h.reset_tables()?;
    let mut maps = AclMaps::open(h.pin_dir()).expect("opening the ACL maps");
    maps.prune_spoof(&SpoofTables::default())
        .expect("clearing the anti-spoofing tables");
    maps.swap_in(&acl::compile(&[], &|_| None).expect("an empty ACL"))
        .expect("clearing the ACL");
    let map = h.map_mut(maps::VLAN_IFACES)?;
    let mut vlans: BpfHashMap<_, PopVlanKey, u32> =
        BpfHashMap::try_from(map).expect("vlan_ifaces is a hash map");
    let keys: Vec<PopVlanKey> = vlans.keys().filter_map(|k| k.ok()).collect();
    for k in keys {
        let _ = vlans.remove(&k);
    }
    Ok(())
}
