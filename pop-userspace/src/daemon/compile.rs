//! Desired state → the exact contents of the data plane's maps, and the diff
//! that turns what is in the maps into that. The per-packet path does no work
//! that can be done here (STYLE.md rule 4).
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use pop_common::{
    PopConfig, PopIface, PopNexthop, PopUpperMacKey, PopVlanKey, CFG_NO_ROUTE_DROP, MAX_CUSTOMERS,
    MAX_IFACES, MAX_LOCAL_ADDRS, MAX_UPPER_MACS, NH_RESOLVED, NH_VALID,
};

use super::error::ControlError;
use super::learned::Pinned;
use crate::acl::SpoofTables;
use crate::config::model::{Config, InterfaceRole, NoRouteAction};
use crate::config::routes::ConfiguredRoutes;
use crate::config::validate;
use crate::dataplane::maps::{ignore_missing, key_v6, map_err};
use crate::dataplane::{DataplaneError, Maps};
use crate::netlink::{KernelView, Link};
use crate::state::Ids;

/// The contents of every map popd writes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tables {
    /// `config[0]`.
    pub config: Option<PopConfig>,
    /// ifindex → interface.
    pub ifaces: HashMap<u32, PopIface>,
    /// Egress ifindexes.
    pub tx_ports: HashSet<u32>,
    /// VLAN devices served: (XDP port, VLAN id) → the device's ifindex (which
    /// has its entry in `ifaces`).
    pub vlans: HashMap<PopVlanKey, u32>,
    /// Next hops by id.
    pub nexthops: HashMap<u32, PopNexthop>,
    /// IPv4 customer prefixes → customer id (fib4's customer plane, listed
    /// in `cust_v4`).
    pub cust_v4: HashMap<Ipv4Net, u32>,
    /// IPv6 customer prefixes → customer id.
    pub cust_v6: HashMap<Ipv6Net, u32>,
    /// Host addresses, and the directed broadcasts of the host's subnets
    /// (the kernel receives both itself), network order → kind
    /// ([`crate::dataplane::addr4::LOCAL_HOST`] or `LOCAL_BROADCAST`):
    /// fib4's local plane, listed in `local_v4`.
    pub local_v4: HashMap<u32, u32>,
    /// Host addresses.
    pub local_v6: HashSet<[u8; 16]>,
    /// Anti-spoofing ports and (customer, port) pairs.
    pub spoof: SpoofTables,
    /// customer id → (rate_bps, burst_bytes) of customers with a policer.
    pub policers: BTreeMap<u32, (u64, u64)>,
    /// Host addresses (IPv4, IPv6) that need an entry but do not fit
    /// `local_v4`/`local_v6` (see [`local_addresses`]); not a map.
    pub local_not_loaded: (usize, usize),
    /// (interface in `ifaces`, MAC of a macvlan/macvtap device on it) → that
    /// device's ifindex: unicast MACs the host accepts besides its own.
    pub upper_macs: HashMap<PopUpperMacKey, u32>,
}

/// Key of a next hop in [`Ids::nexthops`].
pub fn nexthop_key(dev: &str, via: &IpAddr) -> String {
    format!("{dev} {via}")
}

fn allocate(
    map: &mut BTreeMap<String, u32>,
    wanted: &[String],
    first: u32,
    end: u32,
    what: &'static str,
) -> Result<(), ControlError> {
    let wanted_set: HashSet<&String> = wanted.iter().collect();
    map.retain(|k, _| wanted_set.contains(k));
    let mut used: HashSet<u32> = map.values().copied().collect();
    let mut next = first;
    for name in wanted {
        if map.contains_key(name) {
            continue;
        }
        while used.contains(&next) {
            next += 1;
        }
        if next >= end {
            return Err(ControlError::IdsFull {
                what,
                entries: end - first,
            });
        }
        used.insert(next);
        map.insert(name.clone(), next);
    }
    Ok(())
}

/// Ids for `cfg`: existing ones are kept, new names get the lowest free id,
/// ids of removed names are freed. Returns the ids and the customer ids that
/// are new (their counters must be zeroed before use).
pub fn assign_ids(
    cfg: &Config,
    routes: &ConfiguredRoutes,
    old: &Ids,
) -> Result<(Ids, Vec<u32>), ControlError> {
    let mut ids = old.clone();
    let customers: Vec<String> = cfg.customers.iter().map(|c| c.name.clone()).collect();
    allocate(
        &mut ids.customers,
        &customers,
        1,
        MAX_CUSTOMERS,
        "customers",
    )?;
    let ifaces: Vec<String> = cfg.interfaces.iter().map(|i| i.name.clone()).collect();
    allocate(&mut ids.iface_slots, &ifaces, 0, MAX_IFACES, "interfaces")?;
    let mut nhs = Vec::new();
    let mut seen = HashSet::new();
    for hops in routes.hop_sets() {
        for via in &hops.via {
            let k = nexthop_key(&hops.dev, via);
            if seen.insert(k.clone()) {
                nhs.push(k);
            }
        }
    }
    // In a stable order: ids must not depend on the hop sets' interning.
    nhs.sort_unstable();
    // The upper half of `nexthops` belongs to learned routes.
    allocate(
        &mut ids.nexthops,
        &nhs,
        1,
        super::learned::LEARNED_NH_FIRST,
        "next hops",
    )?;
    let fresh = ids
        .customers
        .iter()
        .filter(|(n, id)| old.customers.get(*n) != Some(id))
        .map(|(_, id)| *id)
        .collect();
    Ok((ids, fresh))
}

/// Computes the map contents for a (validated) config; `acl_copy` is the ACL
/// copy packets must use once these tables are live.
pub fn compile(
    cfg: &Config,
    ids: &Ids,
    generation: u64,
    kernel: &KernelView,
    attached: &BTreeMap<String, crate::dataplane::AttachMode>,
    acl_copy: u32,
) -> Tables {
    let mut t = Tables::default();
    let flags = match cfg.dataplane.no_route {
        NoRouteAction::Drop => CFG_NO_ROUTE_DROP,
        NoRouteAction::Pass => 0,
    };
    t.config = Some(PopConfig {
        flags,
        generation: generation as u32,
        acl_copy,
        // The double-buffered customer copies are gone (IPv6 customers are
        // in fib6): always 0, where `cust_v6` is the list.
        cust_copy: 0,
        // Validated: 1..=MAX_ICMP_RATE_PER_S and 1..=MAX_ICMP_BURST.
        icmp_rate_per_s: cfg.icmp.rate_per_s.min(u64::from(u32::MAX)) as u32,
        icmp_burst: cfg.icmp.burst.min(u64::from(u32::MAX)) as u32,
    });
    // A customer with a VLAN attaches at the VLAN devices for that id on its
    // ports: there it is counted, protected against spoofing and matched by
    // ACL `in_iface`.
    let customers: Vec<validate::ValidCustomer> = cfg
        .customers
        .iter()
        .filter_map(|c| validate::check_customer(c).ok())
        .map(|mut c| {
            if let Some(vid) = c.vlan {
                c.interfaces = c
                    .interfaces
                    .iter()
                    .filter_map(|port| vlan_device(kernel, port, vid))
                    .collect();
            }
            c
        })
        .collect();
    t.spoof = crate::acl::spoof_tables(
        &customers,
        &|name| ids.customers.get(name).copied(),
        &|dev| kernel.links.get(dev).map(|l| l.ifindex),
    );
    for c in &customers {
        if let (Some(id), Some(rate), Some(burst)) =
            (ids.customers.get(&c.name), c.rate_bps, c.burst_bytes)
        {
            t.policers.insert(*id, (rate, burst));
        }
    }
    for i in &cfg.interfaces {
        let (Some(link), Some(slot)) = (kernel.links.get(&i.name), ids.iface_slots.get(&i.name))
        else {
            continue;
        };
        if !attached.contains_key(&i.name) {
            continue;
        }
        let role = match i.role {
            InterfaceRole::Upstream => pop_common::Role::Upstream,
            InterfaceRole::Customer => pop_common::Role::Customer,
        } as u32;
        let flags = if t.spoof.is_anti_spoofing_port(link.ifindex) {
            pop_common::IFACE_ANTI_SPOOFING
        } else {
            0
        };
        let (icmp_src_v4, icmp_src_v6) = super::icmp::sources(link.ifindex, None, cfg, kernel);
        t.ifaces.insert(
            link.ifindex,
            PopIface {
                slot: *slot,
                role,
                flags,
                mtu: link.mtu,
                icmp_src_v4,
                icmp_src_v6,
                mac: link.mac,
                pad: 0,
            },
        );
        t.tx_ports.insert(link.ifindex);
    }
    // VLAN devices on attached ports where customers attach.
    let vlan_devs: BTreeSet<&str> = customers
        .iter()
        .filter(|c| c.vlan.is_some())
        .flat_map(|c| c.interfaces.iter().map(String::as_str))
        .collect();
    let vlan_hops = VlanNexthops::new(cfg, kernel);
    for dev in vlan_devs {
        let Some(link) = kernel.links.get(dev) else {
            continue;
        };
        let Some((port, vid)) = link.vlan else {
            continue;
        };
        let Some(&port_iface) = t.ifaces.get(&port) else {
            continue;
        };
        let flags = if t.spoof.is_anti_spoofing_port(link.ifindex) {
            pop_common::IFACE_ANTI_SPOOFING
        } else {
            0
        };
        let (icmp_src_v4, icmp_src_v6) =
            super::icmp::sources(link.ifindex, Some(port), cfg, kernel);
        t.ifaces.insert(
            link.ifindex,
            PopIface {
                flags,
                mtu: link.mtu,
                icmp_src_v4,
                icmp_src_v6,
                // A VLAN device accepts its own MAC (usually its port's).
                mac: link.mac,
                ..port_iface
            },
        );
        t.vlans.insert(
            PopVlanKey {
                ifindex: port,
                vid: u32::from(vid),
            },
            link.ifindex,
        );
    }
    // Next hops: one per configured (dev, via), whatever the number of
    // routes using it (routes only name their ids: see
    // [`super::route_sync::record`]).
    for (key, &id) in &ids.nexthops {
        if let Some(nh) = nexthop_with(&vlan_hops, kernel, &t.tx_ports, key) {
            t.nexthops.insert(id, nh);
        }
    }
    for c in &cfg.customers {
        let Some(&id) = ids.customers.get(&c.name) else {
            continue;
        };
        for p in &c.prefixes {
            match p.parse::<IpNet>() {
                Ok(IpNet::V4(p)) => t.cust_v4.insert(p.trunc(), id),
                Ok(IpNet::V6(p)) => t.cust_v6.insert(p.trunc(), id),
                Err(_) => None,
            };
        }
    }
    // Directed broadcasts to the host's own subnets are the kernel's to
    // receive, never to forward (RFC 2644): they go in local_v4 too.
    let mut addrs = kernel.addrs.clone();
    addrs.extend(kernel.directed_broadcasts.iter().map(|b| IpAddr::V4(*b)));
    let local = local_addresses(&addrs, MAX_LOCAL_ADDRS as usize);
    t.local_v4 = super::addr4::local_kinds(&local.v4, &kernel.addrs, &kernel.directed_broadcasts);
    t.local_v6 = local.v6;
    t.local_not_loaded = local.not_loaded;
    t.upper_macs = upper_macs(kernel, &t.ifaces, &t.vlans);
    t
}

/// The next hop of key `dev via` ([`nexthop_key`]) as the data plane holds
/// it, for the ports `tx_ports`; None for a key that does not parse.
pub fn nexthop_value(
    cfg: &Config,
    kernel: &KernelView,
    tx_ports: &HashSet<u32>,
    key: &str,
) -> Option<PopNexthop> {
    nexthop_with(&VlanNexthops::new(cfg, kernel), kernel, tx_ports, key)
}

fn nexthop_with(
    vlan_hops: &VlanNexthops,
    kernel: &KernelView,
    tx_ports: &HashSet<u32>,
    key: &str,
) -> Option<PopNexthop> {
    let (dev, via) = key.split_once(' ')?;
    let ip: IpAddr = via.parse().ok()?;
    let link = vlan_hops.link(kernel, dev, &ip);
    let mut nh = PopNexthop {
        flags: NH_VALID,
        ..Default::default()
    };
    // A VLAN device's packets leave by its port with its tag.
    let port = link
        .map(|l| l.vlan.unwrap_or((l.ifindex, 0)))
        .filter(|(port, _)| tx_ports.contains(port));
    if let (Some(link), Some((port, vid))) = (link, port) {
        nh.ifindex = port;
        nh.vlan = vid;
        nh.smac = link.mac;
        nh.mtu = link.mtu;
        if let Some(mac) = kernel
            .neighbours
            .get(&(link.ifindex, ip))
            .and_then(|n| n.mac)
        {
            nh.dmac = mac;
            nh.flags |= NH_RESOLVED;
        }
    }
    Some(nh)
}

/// The host addresses the data plane must know, as `local_v4`/`local_v6`
/// hold them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LocalAddresses {
    /// IPv4, as `local_v4` keys.
    pub v4: HashSet<u32>,
    /// IPv6.
    pub v6: HashSet<[u8; 16]>,
    /// Addresses (IPv4, IPv6) left out because the map is full.
    pub not_loaded: (usize, usize),
}

/// Chooses the host addresses that go into `local_v4`/`local_v6`: those that
/// matter, at most `max` per family. Loopback, link-local, unspecified and
/// multicast addresses never need an entry (the data plane hands link-local
/// and multicast to the kernel and drops the others as martians). The rest
/// are taken in address order; what does not fit is counted, never an error:
/// the host's address count must not block a change of the desired state.
pub fn local_addresses(addrs: &[IpAddr], max: usize) -> LocalAddresses {
    let mut v4: Vec<std::net::Ipv4Addr> = Vec::new();
    let mut v6: Vec<std::net::Ipv6Addr> = Vec::new();
    for a in addrs {
        match a {
            IpAddr::V4(a) => {
                if !(a.is_loopback() || a.is_link_local() || a.is_unspecified() || a.is_multicast())
                {
                    v4.push(*a);
                }
            }
            IpAddr::V6(a) => {
                let link_local = a.segments()[0] & 0xffc0 == 0xfe80;
                if !(a.is_loopback() || link_local || a.is_unspecified() || a.is_multicast()) {
                    v6.push(*a);
                }
            }
        }
    }
    v4.sort_unstable();
    v4.dedup();
    v6.sort_unstable();
    v6.dedup();
    let not_loaded = (v4.len().saturating_sub(max), v6.len().saturating_sub(max));
    LocalAddresses {
        v4: v4
            .iter()
            .take(max)
            .map(|a| u32::from_ne_bytes(a.octets()))
            .collect(),
        v6: v6.iter().take(max).map(|a| a.octets()).collect(),
        not_loaded,
    }
}

/// The MACs the host accepts on interfaces in `ifaces` besides each one's
/// own, by (interface, MAC) → the device that has it: those of the
/// macvlan/macvtap devices that are up on them, and on a VLAN device with a
/// MAC of its own, its port's (the kernel marks a frame to the port's MAC as
/// the host's before it reaches the VLAN device). Beyond [`MAX_UPPER_MACS`]
/// the rest are left out with a warning (frames to them are then dropped as
/// `other_host`).
fn upper_macs(
    kernel: &KernelView,
    ifaces: &HashMap<u32, PopIface>,
    vlans: &HashMap<PopVlanKey, u32>,
) -> HashMap<PopUpperMacKey, u32> {
    let key = |ifindex, mac| PopUpperMacKey {
        ifindex,
        mac,
        pad: 0,
    };
    let mut all: Vec<(PopUpperMacKey, u32)> = kernel
        .links
        .values()
        .filter_map(|l| {
            let lower = l.macvlan_of.filter(|i| ifaces.contains_key(i))?;
            Some((key(lower, l.mac), l.ifindex))
        })
        .collect();
    for (v, dev) in vlans {
        if let (Some(port), Some(vlan)) = (ifaces.get(&v.ifindex), ifaces.get(dev)) {
            if port.mac != vlan.mac {
                all.push((key(*dev, port.mac), v.ifindex));
            }
        }
    }
    all.sort();
    if all.len() > MAX_UPPER_MACS as usize {
        tracing::warn!(
            "{} macvlan/macvtap MACs on pop's interfaces exceed the limit of {}: \
             unicast frames to the rest are dropped as other_host",
            all.len(),
            MAX_UPPER_MACS
        );
        all.truncate(MAX_UPPER_MACS as usize);
    }
    all.into_iter().collect()
}

/// Next hops inside a VLAN customer's prefixes on its port are reached through
/// the VLAN device for that customer's id (`ip link add link eth1 name eth1.100
/// type vlan id 100`): the kernel resolves their MACs there, and the data plane
/// tags their packets.
struct VlanNexthops {
    /// port name → (customer prefix, VLAN device name).
    by_port: HashMap<String, Vec<(IpNet, String)>>,
}

impl VlanNexthops {
    fn new(cfg: &Config, kernel: &KernelView) -> Self {
        let mut by_port: HashMap<String, Vec<(IpNet, String)>> = HashMap::new();
        for c in &cfg.customers {
            let Some(vid) = c.vlan else { continue };
            for port in &c.interfaces {
                let Some(dev) = vlan_device(kernel, port, vid) else {
                    continue;
                };
                for p in c.prefixes.iter().filter_map(|p| p.parse::<IpNet>().ok()) {
                    by_port
                        .entry(port.clone())
                        .or_default()
                        .push((p, dev.clone()));
                }
            }
        }
        Self { by_port }
    }

    /// The link next hop `via` on `dev` is reached through.
    fn link<'k>(&self, kernel: &'k KernelView, dev: &str, via: &IpAddr) -> Option<&'k Link> {
        let vlan_dev = self
            .by_port
            .get(dev)
            .and_then(|v| v.iter().find(|(p, _)| p.contains(via)))
            .map(|(_, d)| d.as_str());
        kernel.links.get(vlan_dev.unwrap_or(dev))
    }
}

/// The name of the VLAN device with id `vid` on `port`, if the kernel has one.
pub fn vlan_device(kernel: &KernelView, port: &str, vid: u16) -> Option<String> {
    let port = kernel.links.get(port)?.ifindex;
    kernel
        .links
        .iter()
        .find(|(_, l)| l.vlan == Some((port, vid)))
        .map(|(name, _)| name.clone())
}

/// Next hops that are wanted but unresolved: (ifindex, address) to ask the kernel for.
pub fn unresolved(
    cfg: &Config,
    routes: &ConfiguredRoutes,
    kernel: &KernelView,
) -> Vec<(u32, IpAddr)> {
    let mut out = Vec::new();
    let vlan_hops = VlanNexthops::new(cfg, kernel);
    for hops in routes.hop_sets() {
        for ip in &hops.via {
            let Some(link) = vlan_hops.link(kernel, &hops.dev, ip) else {
                continue;
            };
            let known = kernel
                .neighbours
                .get(&(link.ifindex, *ip))
                .and_then(|n| n.mac)
                .is_some();
            if !known && !out.contains(&(link.ifindex, *ip)) {
                out.push((link.ifindex, *ip));
            }
        }
    }
    out.sort_unstable();
    out
}

fn devmap_value(ifindex: u32) -> u32 {
    ifindex
}

/// Writes the difference between `applied` (what the maps hold) and `want`,
/// updating `applied` entry by entry so that on error it still says exactly
/// what the maps hold. Order keeps every intermediate state forwardable: next
/// hops and ports before the routes that use them, routes removed before the
/// next hops they used. Configured routes are not part of [`Tables`]: their
/// changes are written by `routes` ([`super::route_sync`]), called once the
/// next hops they may use are in place and before next hops are removed.
pub fn apply(
    maps: &mut Maps,
    applied: &mut Tables,
    want: &Tables,
    routes: impl FnOnce(&mut Maps) -> Result<(), DataplaneError>,
) -> Result<(), DataplaneError> {
    use pop_common::maps as n;
    // 0. Anti-spoofing entries, before the interface flags that use them.
    maps.acl.add_spoof(&want.spoof)?;
    // 1. Ports and interfaces that appear; VLAN devices after their `ifaces`
    // entries.
    add_new(&mut applied.tx_ports, &want.tx_ports, |i| {
        maps.tx_ports
            .insert(*i, devmap_value(*i), None, 0)
            .map_err(|e| DataplaneError::Map {
                map: n::TX_PORTS,
                reason: crate::dataplane::error_chain(&e),
            })
    })?;
    write_changed(&mut applied.ifaces, &want.ifaces, |k, v| {
        maps.set_iface(*k, *v)
    })?;
    write_changed(&mut applied.vlans, &want.vlans, |k, v| {
        maps.vlan_ifaces
            .insert(*k, *v, 0)
            .map_err(map_err(n::VLAN_IFACES))
    })?;
    write_changed(&mut applied.upper_macs, &want.upper_macs, |k, v| {
        maps.upper_macs
            .insert(*k, *v, 0)
            .map_err(map_err(n::UPPER_MACS))
    })?;
    // 2. Next hops (new and changed).
    write_changed(&mut applied.nexthops, &want.nexthops, |k, v| {
        maps.nexthops.set(*k, *v, 0).map_err(map_err(n::NEXTHOPS))
    })?;
    // 3. Customer prefixes and local addresses: fib4 and fib6, one
    // incremental change each (daemon::addr4, daemon::addr6). An older popd
    // left copy 1 of the customer lists live: cust_v6, the list from now on,
    // gets what it holds first (config's cust_copy becomes 0 below).
    if applied.config.is_some_and(|c| c.cust_copy & 1 == 1) {
        write_customer_copy(maps, 0, applied)?;
    }
    super::addr4::write_new(maps, applied, want)?;
    super::addr6::write_new(maps, applied, want)?;
    // 5. Global settings.
    let config = want.config;
    if let Some(c) = config.filter(|_| applied.config != config) {
        let icmp_changed = applied
            .config
            .is_none_or(|a| (a.icmp_rate_per_s, a.icmp_burst) != (c.icmp_rate_per_s, c.icmp_burst));
        maps.config.set(0, c, 0).map_err(map_err(n::CONFIG))?;
        applied.config = Some(c);
        if icmp_changed {
            maps.fill_icmp_buckets()?;
        }
    }
    // 6. Configured routes (their changes, written by `routes`: next hops
    // are in place, and next hops that go are removed below, after them).
    routes(maps)?;
    // 7. Removals, users before what they use.
    super::addr4::remove_gone(maps, applied, want)?;
    super::addr6::remove_gone(maps, applied, want)?;
    remove_gone(&mut applied.nexthops, &want.nexthops, |k| {
        maps.nexthops
            .set(*k, PopNexthop::default(), 0)
            .map_err(map_err(n::NEXTHOPS))
    })?;
    remove_gone(&mut applied.vlans, &want.vlans, |k| {
        ignore_missing(maps.vlan_ifaces.remove(k)).map_err(map_err(n::VLAN_IFACES))
    })?;
    remove_gone(&mut applied.upper_macs, &want.upper_macs, |k| {
        ignore_missing(maps.upper_macs.remove(k)).map_err(map_err(n::UPPER_MACS))
    })?;
    remove_gone(&mut applied.ifaces, &want.ifaces, |k| maps.remove_iface(*k))?;
    remove_gone_from_set(&mut applied.tx_ports, &want.tx_ports, |k| {
        ignore_missing(maps.tx_ports.remove(*k)).map_err(map_err(n::TX_PORTS))
    })?;
    // 8. Anti-spoofing entries of ports whose flag is cleared; policers (an
    // unchanged one is not rewritten: that would refill its bucket).
    maps.acl.prune_spoof(&want.spoof)?;
    applied.spoof = want.spoof.clone();
    for (id, rb) in &want.policers {
        if applied.policers.get(id) != Some(rb) {
            maps.acl.set_policer(*id, Some(*rb))?;
            applied.policers.insert(*id, *rb);
        }
    }
    let gone: Vec<u32> = applied
        .policers
        .keys()
        .filter(|id| !want.policers.contains_key(id))
        .copied()
        .collect();
    for id in gone {
        maps.acl.set_policer(id, None)?;
        applied.policers.remove(&id);
    }
    Ok(())
}

/// Writes (with `write`) every entry of `want` that `applied` lacks or holds
/// differently, recording each in `applied` as soon as it is written, so that
/// on error `applied` still says what the map holds.
fn write_changed<K: Copy + Eq + Hash, V: Copy + PartialEq>(
    applied: &mut HashMap<K, V>,
    want: &HashMap<K, V>,
    mut write: impl FnMut(&K, &V) -> Result<(), DataplaneError>,
) -> Result<(), DataplaneError> {
    for (k, v) in want {
        if applied.get(k) != Some(v) {
            write(k, v)?;
            applied.insert(*k, *v);
        }
    }
    Ok(())
}

/// Removes (with `remove`) every key of `applied` that `want` lacks.
fn remove_gone<K: Copy + Eq + Hash, V>(
    applied: &mut HashMap<K, V>,
    want: &HashMap<K, V>,
    mut remove: impl FnMut(&K) -> Result<(), DataplaneError>,
) -> Result<(), DataplaneError> {
    let gone: Vec<K> = applied
        .keys()
        .filter(|k| !want.contains_key(k))
        .copied()
        .collect();
    for k in gone {
        remove(&k)?;
        applied.remove(&k);
    }
    Ok(())
}

/// [`write_changed`] for sets.
fn add_new<K: Copy + Eq + Hash>(
    applied: &mut HashSet<K>,
    want: &HashSet<K>,
    mut add: impl FnMut(&K) -> Result<(), DataplaneError>,
) -> Result<(), DataplaneError> {
    for k in want {
        if !applied.contains(k) {
            add(k)?;
            applied.insert(*k);
        }
    }
    Ok(())
}

/// [`remove_gone`] for sets.
fn remove_gone_from_set<K: Copy + Eq + Hash>(
    applied: &mut HashSet<K>,
    want: &HashSet<K>,
    mut remove: impl FnMut(&K) -> Result<(), DataplaneError>,
) -> Result<(), DataplaneError> {
    let gone: Vec<K> = applied.difference(want).copied().collect();
    for k in gone {
        remove(&k)?;
        applied.remove(&k);
    }
    Ok(())
}

/// Makes IPv6 customer list copy `copy` hold exactly `want`'s IPv6
/// customer prefixes: only to move an older popd's live copy 1 into
/// `cust_v6` (the data plane reads neither; customers are in fib6).
fn write_customer_copy(maps: &mut Maps, copy: u32, want: &Tables) -> Result<(), DataplaneError> {
    use pop_common::maps as n;
    let (v6, n6) = if copy == 0 {
        (&mut maps.cust_v6, n::CUST_V6)
    } else {
        (&mut maps.cust_v6_1, n::CUST_V6_1)
    };
    let stale: Vec<_> = v6
        .keys()
        .flatten()
        .filter(|k| {
            Ipv6Net::new(k.data().into(), k.prefix_len() as u8)
                .map_or(true, |p| !want.cust_v6.contains_key(&p))
        })
        .collect();
    for k in stale {
        ignore_missing(v6.remove(&k)).map_err(map_err(n6))?;
    }
    for (k, v) in &want.cust_v6 {
        v6.insert(
            &key_v6(k),
            pop_common::PopCustomerRef { customer_id: *v },
            0,
        )
        .map_err(map_err(n6))?;
    }
    Ok(())
}

/// Reads what the pinned maps hold (after a restart), so that the first
/// reconcile only writes differences and removes leftovers. Routes are not
/// read here: configured ones are compared one by one when they are
/// reconciled ([`super::route_sync`]), the others (learned by an earlier run,
/// maybe a full table) are read later by
/// [`crate::dataplane::route_writer::read_routes`]. Learned next hops go
/// into `pinned`.
pub fn read_back(maps: &Maps, pinned: &mut Pinned) -> Tables {
    let mut t = Tables {
        config: maps.config.get(&0, 0).ok(),
        ..Default::default()
    };
    for (k, v) in maps.ifaces.iter().flatten() {
        t.ifaces.insert(k, v);
    }
    for k in maps.tx_ports.keys().flatten() {
        t.tx_ports.insert(k);
    }
    for (k, v) in maps.vlan_ifaces.iter().flatten() {
        t.vlans.insert(k, v);
    }
    for (k, v) in maps.upper_macs.iter().flatten() {
        t.upper_macs.insert(k, v);
    }
    let copy1 = t.config.is_some_and(|c| c.cust_copy & 1 == 1);
    // IPv4: the list beside fib4 (one copy); IPv6: the live copy.
    let cust_v4 = &maps.cust_v4;
    let cust_v6 = if copy1 {
        &maps.cust_v6_1
    } else {
        &maps.cust_v6
    };
    for (k, v) in cust_v4.iter().flatten() {
        if let Ok(p) = Ipv4Net::new(k.data().into(), k.prefix_len() as u8) {
            t.cust_v4.insert(p, v.customer_id);
        }
    }
    for (k, v) in cust_v6.iter().flatten() {
        if let Ok(p) = Ipv6Net::new(k.data().into(), k.prefix_len() as u8) {
            t.cust_v6.insert(p, v.customer_id);
        }
    }
    for (k, v) in maps.local_v4.iter().flatten() {
        t.local_v4.insert(k, v);
    }
    for k in maps.local_v6.keys().flatten() {
        t.local_v6.insert(k.addr);
    }
    for (id, nh) in maps.nexthops.iter().enumerate() {
        if let Ok(nh) = nh {
            if nh.flags == 0 {
                continue;
            }
            if id as u32 >= super::learned::LEARNED_NH_FIRST {
                pinned.nexthops.insert(id as u32, nh);
            } else {
                t.nexthops.insert(id as u32, nh);
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::AttachMode;
    use crate::netlink::Neighbour;

    const CONFIG: &str = r#"
[[interfaces]]
name = "eth0"
role = "upstream"

[[interfaces]]
name = "eth1"
role = "customer"

[[customers]]
name = "tagged"
prefixes = ["10.100.0.0/24"]
interfaces = ["eth1"]
vlan = 100
anti_spoofing = true

[[customers]]
name = "plain"
prefixes = ["198.51.100.0/24"]
interfaces = ["eth1"]

[[routes]]
prefix = "10.100.0.0/24"
via = ["10.100.0.10"]
dev = "eth1"

[[routes]]
prefix = "198.51.100.0/24"
via = ["198.51.100.10"]
dev = "eth1"
"#;

    fn link(ifindex: u32, last: u8, vlan: Option<(u32, u16)>) -> Link {
        Link {
            ifindex,
            mac: [2, 0, 0, 0, 0, last],
            mtu: 1500,
            vlan,
            ..Link::default()
        }
    }

    /// The kernel: ports eth0 (2) and eth1 (3), VLAN device eth1.100 (7).
    fn kernel() -> KernelView {
        let mut k = KernelView::default();
        k.links.insert("eth0".into(), link(2, 2, None));
        k.links.insert("eth1".into(), link(3, 3, None));
        k.links
            .insert("eth1.100".into(), link(7, 7, Some((3, 100))));
        k
    }

    fn tables(kernel: &KernelView) -> (Tables, Ids) {
        let cfg = validate::parse_config(CONFIG).unwrap();
        let routes = validate::validate(&cfg).unwrap().routes;
        let (ids, _) = assign_ids(&cfg, &routes, &Ids::default()).unwrap();
        let attached = BTreeMap::from([
            ("eth0".to_string(), AttachMode::Native),
            ("eth1".to_string(), AttachMode::Native),
        ]);
        (compile(&cfg, &ids, 1, kernel, &attached, 0), ids)
    }

    #[test]
    fn a_vlan_customer_is_served_through_its_vlan_device() {
        let mut k = kernel();
        let cfg = validate::parse_config(CONFIG).unwrap();
        let routes = validate::validate(&cfg).unwrap().routes;
        // Its next hop is resolved on the VLAN device, not on the port.
        assert_eq!(
            unresolved(&cfg, &routes, &k),
            vec![
                (3, "198.51.100.10".parse().unwrap()),
                (7, "10.100.0.10".parse().unwrap()),
            ]
        );
        k.neighbours.insert(
            (7, "10.100.0.10".parse().unwrap()),
            Neighbour {
                mac: Some([2, 0, 0, 0, 0, 0x10]),
            },
        );
        let (t, ids) = tables(&k);
        // Tagged frames with id 100 on eth1 are eth1.100's.
        assert_eq!(
            t.vlans,
            HashMap::from([(
                PopVlanKey {
                    ifindex: 3,
                    vid: 100
                },
                7
            )])
        );
        let (port, dev) = (t.ifaces[&3], t.ifaces[&7]);
        assert_eq!(dev.slot, port.slot, "counted on its port");
        assert_eq!(dev.flags, pop_common::IFACE_ANTI_SPOOFING);
        assert_eq!(port.flags, 0, "the untagged customer is not protected");
        assert!(ids.customers.contains_key("tagged"));
        let entries: Vec<_> = t
            .spoof
            .prefixes
            .iter()
            .map(|(i, p)| (*i, p.to_string()))
            .collect();
        assert_eq!(entries, vec![(7, "10.100.0.0/24".to_string())]);
        assert!(!t.tx_ports.contains(&7), "packets leave by the port");
        // Its next hop leaves by eth1 with tag 100; the other one untagged.
        let nh = |via: &str| t.nexthops[&ids.nexthops[&nexthop_key("eth1", &via.parse().unwrap())]];
        let v = nh("10.100.0.10");
        assert_eq!((v.ifindex, v.vlan, v.dmac[5], v.smac[5]), (3, 100, 0x10, 7));
        assert_eq!(v.flags, NH_VALID | NH_RESOLVED);
        let p = nh("198.51.100.10");
        assert_eq!((p.ifindex, p.vlan, p.flags), (3, 0, NH_VALID));
    }

    #[test]
    fn host_addresses_that_do_not_fit_are_counted_not_refused() {
        let mut addrs: Vec<IpAddr> = (0..10u32)
            .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        for skipped in ["127.0.0.1", "169.254.1.1", "::1", "fe80::1", "0.0.0.0"] {
            addrs.push(skipped.parse().unwrap());
        }
        addrs.push("2001:db8::1".parse().unwrap());
        // Listed twice (on two interfaces): one entry.
        addrs.push("10.0.0.3".parse().unwrap());
        let l = local_addresses(&addrs, 4);
        assert_eq!(l.not_loaded, (6, 0));
        let mut v4: Vec<_> =
            l.v4.iter()
                .map(|a| std::net::Ipv4Addr::from(a.to_ne_bytes()))
                .collect();
        v4.sort();
        assert_eq!(
            v4,
            ["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3"]
                .map(|a| a.parse::<std::net::Ipv4Addr>().unwrap())
        );
        assert_eq!(l.v6.len(), 1, "only the global IPv6 address");
        let all = local_addresses(&addrs, 100);
        assert_eq!((all.v4.len(), all.not_loaded), (10, (0, 0)));
    }

    #[test]
    fn icmp_limit_and_sources_reach_the_tables() {
        let mut k = kernel();
        k.link_addrs.insert(
            3,
            vec!["fe80::1".parse().unwrap(), "10.100.0.1".parse().unwrap()],
        );
        k.link_addrs
            .insert(2, vec!["2001:db8:ffff::2".parse().unwrap()]);
        let mut cfg = validate::parse_config(CONFIG).unwrap();
        cfg.icmp.rate_per_s = 200;
        cfg.icmp.burst = 7;
        let routes = validate::validate(&cfg).unwrap().routes;
        let (ids, _) = assign_ids(&cfg, &routes, &Ids::default()).unwrap();
        let attached = BTreeMap::from([
            ("eth0".to_string(), AttachMode::Native),
            ("eth1".to_string(), AttachMode::Native),
        ]);
        let t = compile(&cfg, &ids, 1, &k, &attached, 0);
        let c = t.config.unwrap();
        assert_eq!((c.icmp_rate_per_s, c.icmp_burst), (200, 7));
        let v6: std::net::Ipv6Addr = "2001:db8:ffff::2".parse().unwrap();
        // eth1: its own IPv4; no global IPv6 of its own, so eth0's.
        assert_eq!(t.ifaces[&3].icmp_src_v4, [10, 100, 0, 1]);
        assert_eq!(t.ifaces[&3].icmp_src_v6, v6.octets());
        // eth1.100 has none: its port's.
        assert_eq!(t.ifaces[&7].icmp_src_v4, [10, 100, 0, 1]);
        // eth0: no IPv4 of its own, so the next pop interface's.
        assert_eq!(t.ifaces[&2].icmp_src_v4, [10, 100, 0, 1]);
        assert_eq!(t.ifaces[&2].icmp_src_v6, v6.octets());
    }

    #[test]
    fn without_its_vlan_device_nothing_is_tagged() {
        let mut k = kernel();
        k.links.remove("eth1.100");
        let (t, ids) = tables(&k);
        assert!(t.vlans.is_empty());
        let key = nexthop_key("eth1", &"10.100.0.10".parse().unwrap());
        assert_eq!(t.nexthops[&ids.nexthops[&key]].vlan, 0);
    }

    #[test]
    fn interfaces_carry_the_mac_the_kernel_accepts() {
        let mut k = kernel();
        // A VLAN device may have a MAC of its own.
        k.links.get_mut("eth1.100").unwrap().mac = [2, 0, 0, 0, 1, 7];
        let (t, _) = tables(&k);
        assert_eq!(t.ifaces[&2].mac, [2, 0, 0, 0, 0, 2]);
        assert_eq!(t.ifaces[&3].mac, [2, 0, 0, 0, 0, 3]);
        assert_eq!(t.ifaces[&7].mac, [2, 0, 0, 0, 1, 7]);
        // ... and frames to its port's MAC are the host's there too.
        let port_mac = PopUpperMacKey {
            ifindex: 7,
            mac: [2, 0, 0, 0, 0, 3],
            pad: 0,
        };
        assert_eq!(t.upper_macs, HashMap::from([(port_mac, 3)]));
        // With its port's MAC (the usual case) nothing more is needed.
        k.links.get_mut("eth1.100").unwrap().mac = [2, 0, 0, 0, 0, 3];
        let (t, _) = tables(&k);
        assert_eq!(t.ifaces[&7].mac, [2, 0, 0, 0, 0, 3]);
        assert!(t.upper_macs.is_empty());
    }

    #[test]
    fn macvlan_macs_on_served_interfaces_are_accepted() {
        let mut k = kernel();
        k.links.get_mut("eth1.100").unwrap().mac = [2, 0, 0, 0, 0, 3];
        let vrrp = [0, 0, 0x5e, 0, 1, 1];
        let upper = |ifindex, mac, on| Link {
            ifindex,
            mac,
            mtu: 1500,
            macvlan_of: Some(on),
            ..Link::default()
        };
        k.links.insert("vrrp1".into(), upper(20, vrrp, 3));
        k.links
            .insert("vrrp2".into(), upper(21, [0, 0, 0x5e, 0, 2, 1], 7));
        // On an interface pop does not serve: not its business.
        k.links.insert("other".into(), link(9, 9, None));
        k.links
            .insert("vrrp3".into(), upper(22, [0, 0, 0x5e, 0, 1, 3], 9));
        // Down (the netlink reader leaves macvlan_of empty): takes no frames.
        k.links.insert("down".into(), link(23, 0x23, None));
        let (t, _) = tables(&k);
        let key = |ifindex, mac| PopUpperMacKey {
            ifindex,
            mac,
            pad: 0,
        };
        assert_eq!(
            t.upper_macs,
            HashMap::from([(key(3, vrrp), 20), (key(7, [0, 0, 0x5e, 0, 2, 1]), 21)])
        );
    }

    #[test]
    fn directed_broadcasts_go_to_the_kernel_like_local_addresses() {
        let mut k = kernel();
        k.addrs.push("198.51.100.1".parse().unwrap());
        k.directed_broadcasts
            .push("198.51.100.255".parse().unwrap());
        let (t, _) = tables(&k);
        let key = |a: &str| u32::from_ne_bytes(a.parse::<std::net::Ipv4Addr>().unwrap().octets());
        assert_eq!(t.local_v4.get(&key("198.51.100.1")), Some(&0));
        assert_eq!(
            t.local_v4.get(&key("198.51.100.255")),
            Some(&crate::dataplane::addr4::LOCAL_BROADCAST)
        );
        assert_eq!(t.local_v4.len(), 2);
    }
}
