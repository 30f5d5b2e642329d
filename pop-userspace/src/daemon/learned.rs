//! Routes learned from a kernel routing table (`[kernel_routes] table = N`),
//! kept compact for a full Internet table: a prefix is an integer key, its
//! value the id of an interned next-hop group (a [`PopRoute`]: blackhole, or up
//! to [`pop_common::MAX_ECMP`] next-hop ids), and next hops are interned by
//! (ifindex, gateway) with reference counts. Learned next hops live in the
//! upper half of the `nexthops` array ([`LEARNED_NH_FIRST`]..), configured ones
//! in the lower half, so neither can take the other's room.
//!
//! Every change writes only the entries it affects, through
//! [`RouteWriter`], in an order that never leaves a route pointing at a
//! missing next hop: a new next hop is written before the first route that
//! uses it, and a next hop is freed only after the last route using it was
//! rewritten or removed. A configured route for the same prefix wins: the
//! learned one is kept here and written back when the configured one goes.
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use pop_common::{
    PopNexthop, PopRoute, MAX_ECMP, MAX_NEXTHOPS, NH_RESOLVED, NH_VALID, ROUTE_BLACKHOLE,
};

use crate::config::routes::ConfiguredRoutes;
use crate::dataplane::route_writer::RouteWriter;
use crate::dataplane::DataplaneError;
use crate::netlink::routes::{Hop, RouteKind, RouteMsg, MAX_HOPS};
use crate::netlink::{KernelView, Link};

/// First next-hop id for learned routes; configured next hops use 1..this.
pub const LEARNED_NH_FIRST: u32 = MAX_NEXTHOPS / 2;

/// An IPv4 prefix as one integer: address << 8 | length.
type K4 = u64;

/// An IPv6 prefix: 16 address bytes and the length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct K6([u8; 17]);

fn k4(p: &Ipv4Net) -> K4 {
    (u64::from(u32::from(p.network())) << 8) | u64::from(p.prefix_len())
}

fn net4(k: K4) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::from((k >> 8) as u32), (k & 0xff) as u8)
        .expect("stored lengths are valid")
}

fn k6(p: &Ipv6Net) -> K6 {
    let mut k = [0u8; 17];
    k[..16].copy_from_slice(&p.network().octets());
    k[16] = p.prefix_len();
    K6(k)
}

fn net6(k: &K6) -> Ipv6Net {
    let a: [u8; 16] = k.0[..16].try_into().expect("16 bytes");
    Ipv6Net::new(Ipv6Addr::from(a), k.0[16]).expect("stored lengths are valid")
}

/// The entries of `v6` in prefix order (address, then length), the order
/// every bulk write of IPv6 routes uses (a dump's commit, the first sync
/// after a start, the retry of overflowed routes): fib6 then allocates the
/// new trie nodes depth-first, so a lookup's nodes lie next to each other
/// (25% faster walks at 200k routes than in hash order, docs/fib.md). The
/// derived order of [`K6`] is that order: the address bytes big-endian,
/// then the length.
fn in_write_order(v6: &HashMap<K6, u32>) -> Vec<(K6, u32)> {
    let mut all: Vec<(K6, u32)> = v6.iter().map(|(k, g)| (*k, *g)).collect();
    all.sort_unstable();
    all
}

/// What the learned routes need to know about the rest of popd.
pub struct Env<'a> {
    kernel: &'a KernelView,
    links: HashMap<u32, &'a Link>,
    ports: &'a HashSet<u32>,
    configured: &'a ConfiguredRoutes,
}

impl<'a> Env<'a> {
    /// `ports`: the XDP ports pop forwards out of; `configured`: the
    /// configured routes (they win over learned ones).
    pub fn new(
        kernel: &'a KernelView,
        ports: &'a HashSet<u32>,
        configured: &'a ConfiguredRoutes,
    ) -> Self {
        Self {
            kernel,
            links: kernel.links.values().map(|l| (l.ifindex, l)).collect(),
            ports,
            configured,
        }
    }

    /// The next hop `via` on `ifindex` as the data plane needs it; None when
    /// the device is not one pop forwards out of (nor a VLAN device on one).
    fn nexthop(&self, ifindex: u32, via: IpAddr) -> Option<PopNexthop> {
        let link = self.links.get(&ifindex)?;
        let (port, vid) = link.vlan.unwrap_or((ifindex, 0));
        if !self.ports.contains(&port) {
            return None;
        }
        let mut nh = PopNexthop {
            ifindex: port,
            flags: NH_VALID,
            smac: link.mac,
            mtu: link.mtu,
            vlan: vid,
            ..Default::default()
        };
        if let Some(mac) = self
            .kernel
            .neighbours
            .get(&(ifindex, via))
            .and_then(|n| n.mac)
        {
            nh.dmac = mac;
            nh.flags |= NH_RESOLVED;
        }
        Some(nh)
    }
}

/// Counters about learned routes (exported as metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Routes via a device pop does not forward out of.
    pub skipped_foreign_device: u64,
    /// Device routes without a gateway.
    pub skipped_no_gateway: u64,
    /// Route types that do not forward (local, broadcast, throw, ...).
    pub skipped_type: u64,
    /// Routes that found the next-hop table full.
    pub skipped_nexthops_full: u64,
    /// Times a learned route found its route map full.
    pub overflow: u64,
    /// Map writes that failed for another reason.
    pub errors: u64,
}

struct NhSlot {
    key: (u32, IpAddr),
    /// Groups using it.
    refs: u32,
    value: PopNexthop,
}

type GroupKey = (u32, u32, [u32; MAX_ECMP]);

fn group_key(r: &PopRoute) -> GroupKey {
    (r.flags, r.nh_count, r.nh_ids)
}

/// Route map entries that a previous popd (or data plane) left and that no
/// configured route owns: the learned routes replace them at start, writing
/// only what differs. Kept as compactly as the learned table (a full table
/// is read back here), values interned.
#[derive(Default)]
pub struct Pinned {
    v4: HashMap<K4, u32>,
    v6: HashMap<K6, u32>,
    values: Vec<PopRoute>,
    ids: HashMap<GroupKey, u32>,
    /// Learned next hops (ids >= [`LEARNED_NH_FIRST`]) with their values.
    pub nexthops: HashMap<u32, PopNexthop>,
}

impl Pinned {
    /// Every route entry pinned in `maps_dir`.
    pub fn read_routes(maps_dir: &std::path::Path) -> Result<Self, DataplaneError> {
        let mut p = Pinned::default();
        crate::dataplane::route_writer::read_routes(maps_dir, |prefix, route| match prefix {
            IpNet::V4(n) => p.insert_v4(n, route),
            IpNet::V6(n) => p.insert_v6(n, route),
        })?;
        Ok(p)
    }

    fn intern(&mut self, r: PopRoute) -> u32 {
        *self.ids.entry(group_key(&r)).or_insert_with(|| {
            self.values.push(r);
            (self.values.len() - 1) as u32
        })
    }

    /// Adds a pinned IPv4 entry.
    pub fn insert_v4(&mut self, prefix: Ipv4Net, route: PopRoute) {
        let id = self.intern(route);
        self.v4.insert(k4(&prefix), id);
    }

    /// Adds a pinned IPv6 entry.
    pub fn insert_v6(&mut self, prefix: Ipv6Net, route: PopRoute) {
        let id = self.intern(route);
        self.v6.insert(k6(&prefix), id);
    }

    fn get_v4(&self, p: &Ipv4Net) -> Option<&PopRoute> {
        self.v4.get(&k4(p)).map(|id| &self.values[*id as usize])
    }

    fn get_v6(&self, p: &Ipv6Net) -> Option<&PopRoute> {
        self.v6.get(&k6(p)).map(|id| &self.values[*id as usize])
    }

    fn take_v4(&mut self, p: &Ipv4Net) -> Option<PopRoute> {
        self.v4.remove(&k4(p)).map(|id| self.values[id as usize])
    }

    fn take_v6(&mut self, p: &Ipv6Net) -> Option<PopRoute> {
        self.v6.remove(&k6(p)).map(|id| self.values[id as usize])
    }

    /// Pinned route entries.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A table being rebuilt from a dump (after ENOBUFS, a table change, or at
/// start), to be swapped in with [`LearnedRoutes::commit`].
#[derive(Default)]
pub struct Staged {
    v4: HashMap<K4, u32>,
    v6: HashMap<K6, u32>,
}

impl Staged {
    /// Routes staged so far.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The learned routes.
#[derive(Default)]
pub struct LearnedRoutes {
    v4: HashMap<K4, u32>,
    v6: HashMap<K6, u32>,
    /// Learned, not shadowed, but not in the map for lack of room.
    overflow_v4: HashSet<K4>,
    overflow_v6: HashSet<K6>,
    /// Group id → (value, routes using it).
    groups: Vec<(PopRoute, u32)>,
    group_ids: HashMap<GroupKey, u32>,
    free_groups: Vec<u32>,
    nh_ids: HashMap<(u32, IpAddr), u32>,
    nhs: HashMap<u32, NhSlot>,
    free_nh: Vec<u32>,
    /// Learned next-hop ids handed out so far, counted from [`LEARNED_NH_FIRST`].
    next_nh: u32,
    /// Ids a previous popd used, not handed out until the first sync settles them.
    reserved_nh: HashSet<u32>,
    /// Next hops that may have lost their last user: freed after the routes.
    to_free: Vec<u32>,
    /// What a previous run pinned, until the first [`Self::commit`] replaces it.
    pending: Option<Pinned>,
    /// Prefixes the configured path rewrote or removed before the pinned
    /// route entries were read ([`Self::attach_pinned_routes`]).
    touched: Option<(HashSet<K4>, HashSet<K6>)>,
    /// A next hop was created since the last call to [`Self::take_new_nexthops`].
    new_nexthops: bool,
    /// Counters for metrics.
    pub counters: Counters,
}

impl LearnedRoutes {
    /// An empty table. `pinned` stays in the maps (and its next-hop ids
    /// reserved) until the first [`Self::commit`] replaces it.
    pub fn new(pinned: Pinned) -> Self {
        Self {
            reserved_nh: pinned.nexthops.keys().copied().collect(),
            pending: Some(pinned),
            touched: Some(Default::default()),
            ..Default::default()
        }
    }

    /// Adds the pinned route entries (read without the controller's lock,
    /// while configured changes may have happened): entries of prefixes the
    /// configured path touched meanwhile are not trusted.
    pub fn attach_pinned_routes(&mut self, routes: Pinned) {
        let (t4, t6) = self.touched.take().unwrap_or_default();
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        let Pinned {
            mut v4,
            mut v6,
            values,
            ids,
            ..
        } = routes;
        v4.retain(|k, _| !t4.contains(k));
        v6.retain(|k, _| !t6.contains(k));
        p.v4 = v4;
        p.v6 = v6;
        p.values = values;
        p.ids = ids;
    }

    /// Whether the first sync after a start is still to come.
    pub fn first_sync_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// IPv4 routes learned.
    pub fn len_v4(&self) -> usize {
        self.v4.len()
    }

    /// IPv6 routes learned.
    pub fn len_v6(&self) -> usize {
        self.v6.len()
    }

    /// Learned routes not in the maps for lack of room (IPv4, IPv6).
    pub fn overflowed(&self) -> (usize, usize) {
        (self.overflow_v4.len(), self.overflow_v6.len())
    }

    /// Learned next hops in use.
    pub fn nexthop_count(&self) -> usize {
        self.nhs.len()
    }

    /// Whether a next hop was created since the last call (the kernel should
    /// be asked to resolve it).
    pub fn take_new_nexthops(&mut self) -> bool {
        std::mem::take(&mut self.new_nexthops)
    }

    fn alloc_nh(&mut self) -> Option<u32> {
        if let Some(id) = self.free_nh.pop() {
            return Some(id);
        }
        // `next_nh` counts from LEARNED_NH_FIRST, so Default is a valid start.
        while self
            .reserved_nh
            .contains(&(LEARNED_NH_FIRST + self.next_nh))
        {
            self.next_nh += 1;
        }
        let id = LEARNED_NH_FIRST + self.next_nh;
        if id >= MAX_NEXTHOPS {
            return None;
        }
        self.next_nh += 1;
        Some(id)
    }

    /// The id of next hop `key`, creating (and writing) it if new. `hint`: the
    /// id a pinned entry used at this position, reused when it holds the same
    /// value (a restart then rewrites nothing).
    fn nexthop_id(
        &mut self,
        key: (u32, IpAddr),
        value: PopNexthop,
        hint: Option<(u32, &PopNexthop)>,
        w: &mut dyn RouteWriter,
    ) -> Option<u32> {
        if let Some(id) = self.nh_ids.get(&key) {
            return Some(*id);
        }
        let id = match hint {
            Some((id, pinned)) if *pinned == value && self.reserved_nh.remove(&id) => id,
            _ => {
                let id = self.alloc_nh()?;
                if let Err(e) = w.set_nexthop(id, &value) {
                    self.counters.errors += 1;
                    tracing::warn!("learned next hop {}: {e}", key.1);
                    self.free_nh.push(id);
                    return None;
                }
                id
            }
        };
        self.nh_ids.insert(key, id);
        self.nhs.insert(
            id,
            NhSlot {
                key,
                refs: 0,
                value,
            },
        );
        // Freed again at the end of the batch if no group takes it.
        self.to_free.push(id);
        self.new_nexthops = true;
        Some(id)
    }

    /// Interns the group for `kind` and takes one reference on it. None: the
    /// route is skipped (counted).
    fn intern(
        &mut self,
        kind: &RouteKind,
        env: &Env,
        pinned: Option<(&PopRoute, &HashMap<u32, PopNexthop>)>,
        w: &mut dyn RouteWriter,
    ) -> Option<u32> {
        let route = match kind {
            RouteKind::Blackhole => PopRoute {
                flags: ROUTE_BLACKHOLE,
                ..Default::default()
            },
            RouteKind::Other(_) => {
                self.counters.skipped_type += 1;
                return None;
            }
            RouteKind::Unicast { count, hops, .. } => {
                let mut route = PopRoute::default();
                let (mut foreign, mut no_gateway, mut full) = (false, false, false);
                for (i, hop) in hops[..*count as usize].iter().enumerate() {
                    let Some(via) = hop.via else {
                        no_gateway = true;
                        continue;
                    };
                    let Some(value) = env.nexthop(hop.ifindex, via) else {
                        foreign = true;
                        continue;
                    };
                    let hint = pinned.and_then(|(r, nhs)| {
                        let id = *r.nh_ids.get(i).filter(|_| (i as u32) < r.nh_count)?;
                        nhs.get(&id).map(|v| (id, v))
                    });
                    let Some(id) = self.nexthop_id((hop.ifindex, via), value, hint, w) else {
                        full = true;
                        continue;
                    };
                    let n = route.nh_count as usize;
                    if !route.nh_ids[..n].contains(&id) {
                        route.nh_ids[n] = id;
                        route.nh_count += 1;
                    }
                }
                if route.nh_count == 0 {
                    if foreign {
                        self.counters.skipped_foreign_device += 1;
                    } else if full {
                        self.counters.skipped_nexthops_full += 1;
                    } else if no_gateway {
                        self.counters.skipped_no_gateway += 1;
                    }
                    return None;
                }
                route
            }
        };
        let key = group_key(&route);
        if let Some(&g) = self.group_ids.get(&key) {
            self.groups[g as usize].1 += 1;
            return Some(g);
        }
        for id in &route.nh_ids[..route.nh_count as usize] {
            if let Some(s) = self.nhs.get_mut(id) {
                s.refs += 1;
            }
        }
        let g = match self.free_groups.pop() {
            Some(g) => {
                self.groups[g as usize] = (route, 1);
                g
            }
            None => {
                self.groups.push((route, 1));
                (self.groups.len() - 1) as u32
            }
        };
        self.group_ids.insert(key, g);
        Some(g)
    }

    /// Drops one reference on group `g`.
    fn release(&mut self, g: u32) {
        let slot = &mut self.groups[g as usize];
        slot.1 -= 1;
        if slot.1 > 0 {
            return;
        }
        let route = slot.0;
        self.group_ids.remove(&group_key(&route));
        self.free_groups.push(g);
        for id in &route.nh_ids[..route.nh_count as usize] {
            if let Some(s) = self.nhs.get_mut(id) {
                s.refs -= 1;
                if s.refs == 0 {
                    self.to_free.push(*id);
                }
            }
        }
    }

    /// Frees next hops no group uses any more (after the route writes that
    /// stopped using them).
    fn flush(&mut self, w: &mut dyn RouteWriter) {
        for id in std::mem::take(&mut self.to_free) {
            if self.nhs.get(&id).is_none_or(|s| s.refs > 0) {
                continue;
            }
            let s = self.nhs.remove(&id).expect("checked");
            self.nh_ids.remove(&s.key);
            if let Err(e) = w.set_nexthop(id, &PopNexthop::default()) {
                self.counters.errors += 1;
                tracing::warn!("freeing learned next hop {}: {e}", s.key.1);
            }
            self.free_nh.push(id);
        }
    }

    fn count_error(&mut self, prefix: IpNet, e: &DataplaneError) {
        self.counters.errors += 1;
        tracing::warn!("learned route {prefix}: {e}");
    }

    fn write_v4(&mut self, k: K4, g: u32, w: &mut dyn RouteWriter) {
        let p = net4(k);
        match w.set_route_v4(&p, &self.groups[g as usize].0) {
            Ok(()) => {
                self.overflow_v4.remove(&k);
            }
            Err(DataplaneError::MapFull { map, max_entries }) => {
                if self.overflow_v4.insert(k) {
                    self.counters.overflow += 1;
                    if self.overflow_v4.len() == 1 || self.overflow_v4.len().is_multiple_of(10_000)
                    {
                        tracing::warn!(
                            overflowed = self.overflow_v4.len(),
                            "learned route {p}: map {map} is full ({max_entries} entries); \
                             not installed until there is room"
                        );
                    }
                }
            }
            Err(e) => self.count_error(IpNet::V4(p), &e),
        }
    }

    fn write_v6(&mut self, k: K6, g: u32, w: &mut dyn RouteWriter) {
        let p = net6(&k);
        match w.set_route_v6(&p, &self.groups[g as usize].0) {
            Ok(()) => {
                self.overflow_v6.remove(&k);
            }
            Err(DataplaneError::MapFull { map, max_entries }) => {
                if self.overflow_v6.insert(k) {
                    self.counters.overflow += 1;
                    if self.overflow_v6.len() == 1 || self.overflow_v6.len().is_multiple_of(10_000)
                    {
                        tracing::warn!(
                            overflowed = self.overflow_v6.len(),
                            "learned route {p}: map {map} is full ({max_entries} entries); \
                             not installed until there is room"
                        );
                    }
                }
            }
            Err(e) => self.count_error(IpNet::V6(p), &e),
        }
    }

    fn remove_v4(&mut self, k: K4, env: &Env, w: &mut dyn RouteWriter) {
        let Some(g) = self.v4.remove(&k) else { return };
        let p = net4(k);
        if !self.overflow_v4.remove(&k) && !env.configured.contains_v4(&p) {
            if let Err(e) = w.del_route_v4(&p) {
                self.count_error(IpNet::V4(p), &e);
            }
        }
        self.release(g);
    }

    fn remove_v6(&mut self, k: K6, env: &Env, w: &mut dyn RouteWriter) {
        let Some(g) = self.v6.remove(&k) else { return };
        let p = net6(&k);
        if !self.overflow_v6.remove(&k) && !env.configured.contains_v6(&p) {
            if let Err(e) = w.del_route_v6(&p) {
                self.count_error(IpNet::V6(p), &e);
            }
        }
        self.release(g);
    }

    /// Applies route notifications for the followed table, in order.
    pub fn apply(&mut self, msgs: &[RouteMsg], env: &Env, w: &mut dyn RouteWriter) {
        for m in msgs {
            match *m {
                RouteMsg::New { prefix, kind, .. } => {
                    let g = self.intern(&kind, env, None, w);
                    match (prefix, g) {
                        (IpNet::V4(p), Some(g)) => {
                            let k = k4(&p.trunc());
                            let old = self.v4.insert(k, g);
                            let changed = old != Some(g) || self.overflow_v4.contains(&k);
                            if changed && !env.configured.contains_v4(&net4(k)) {
                                self.write_v4(k, g, w);
                            }
                            if let Some(o) = old {
                                self.release(o);
                            }
                        }
                        (IpNet::V6(p), Some(g)) => {
                            let k = k6(&p.trunc());
                            let old = self.v6.insert(k, g);
                            let changed = old != Some(g) || self.overflow_v6.contains(&k);
                            if changed && !env.configured.contains_v6(&net6(&k)) {
                                self.write_v6(k, g, w);
                            }
                            if let Some(o) = old {
                                self.release(o);
                            }
                        }
                        // Now unusable (e.g. moved to a foreign device): gone.
                        (IpNet::V4(p), None) => self.remove_v4(k4(&p.trunc()), env, w),
                        (IpNet::V6(p), None) => self.remove_v6(k6(&p.trunc()), env, w),
                    }
                }
                RouteMsg::Del { prefix, .. } => match prefix {
                    IpNet::V4(p) => self.remove_v4(k4(&p.trunc()), env, w),
                    IpNet::V6(p) => self.remove_v6(k6(&p.trunc()), env, w),
                },
                RouteMsg::DelHops {
                    prefix: IpNet::V6(p),
                    count,
                    hops,
                    table,
                } => {
                    let k = k6(&p.trunc());
                    let Some(&g) = self.v6.get(&k) else { continue };
                    let gone = &hops[..count as usize];
                    let route = self.groups[g as usize].0;
                    let mut left = [Hop::default(); MAX_HOPS];
                    let mut n = 0u8;
                    for id in &route.nh_ids[..route.nh_count as usize] {
                        let Some(s) = self.nhs.get(id) else { continue };
                        let (ifindex, via) = s.key;
                        if !gone
                            .iter()
                            .any(|h| h.via == Some(via) && (h.ifindex == ifindex || h.ifindex == 0))
                        {
                            left[n as usize] = Hop {
                                ifindex,
                                via: Some(via),
                            };
                            n += 1;
                        }
                    }
                    if n == 0 || route.flags & ROUTE_BLACKHOLE != 0 {
                        self.remove_v6(k, env, w);
                    } else if n < route.nh_count as u8 {
                        let rest = RouteMsg::New {
                            table,
                            prefix: IpNet::V6(p),
                            kind: RouteKind::Unicast {
                                count: n,
                                hops: left,
                                truncated: false,
                            },
                        };
                        self.apply(std::slice::from_ref(&rest), env, w);
                    }
                }
                // Produced for IPv6 only.
                RouteMsg::DelHops { prefix, .. } => match prefix {
                    IpNet::V4(p) => self.remove_v4(k4(&p.trunc()), env, w),
                    IpNet::V6(p) => self.remove_v6(k6(&p.trunc()), env, w),
                },
            }
        }
        self.flush(w);
    }

    /// Adds one dumped route to `st`. Before the first sync after a start,
    /// next-hop ids of the pinned entry for the same prefix are reused when
    /// they hold the same next hop.
    pub fn stage(&mut self, st: &mut Staged, msg: &RouteMsg, env: &Env, w: &mut dyn RouteWriter) {
        let RouteMsg::New { prefix, kind, .. } = msg else {
            return;
        };
        let pending = self.pending.take();
        let pinned = pending.as_ref();
        match prefix {
            IpNet::V4(p) => {
                let p = p.trunc();
                let hint = pinned.and_then(|pn| pn.get_v4(&p).map(|r| (r, &pn.nexthops)));
                if let Some(g) = self.intern(kind, env, hint, w) {
                    if let Some(o) = st.v4.insert(k4(&p), g) {
                        self.release(o);
                    }
                }
            }
            IpNet::V6(p) => {
                let p = p.trunc();
                let hint = pinned.and_then(|pn| pn.get_v6(&p).map(|r| (r, &pn.nexthops)));
                if let Some(g) = self.intern(kind, env, hint, w) {
                    if let Some(o) = st.v6.insert(k6(&p), g) {
                        self.release(o);
                    }
                }
            }
        }
        self.pending = pending;
    }

    /// Replaces the table by `st` (a fresh dump), writing only the routes
    /// that differ and removing those that are gone.
    pub fn commit(&mut self, st: Staged, env: &Env, w: &mut dyn RouteWriter) {
        if let Some(pinned) = self.pending.take() {
            self.touched = None;
            return self.commit_initial(st, pinned, env, w);
        }
        let Staged { v4, v6 } = st;
        for (&k, &g) in &v4 {
            let same = self.v4.get(&k) == Some(&g) && !self.overflow_v4.contains(&k);
            if !same && !env.configured.contains_v4(&net4(k)) {
                self.write_v4(k, g, w);
            }
        }
        for (k, g) in in_write_order(&v6) {
            let same = self.v6.get(&k) == Some(&g) && !self.overflow_v6.contains(&k);
            if !same && !env.configured.contains_v6(&net6(&k)) {
                self.write_v6(k, g, w);
            }
        }
        let old_v4 = std::mem::replace(&mut self.v4, v4);
        let old_v6 = std::mem::replace(&mut self.v6, v6);
        for (k, g) in old_v4 {
            if !self.v4.contains_key(&k) {
                let p = net4(k);
                if !self.overflow_v4.remove(&k) && !env.configured.contains_v4(&p) {
                    if let Err(e) = w.del_route_v4(&p) {
                        self.count_error(IpNet::V4(p), &e);
                    }
                }
            }
            self.release(g);
        }
        for (k, g) in old_v6 {
            if !self.v6.contains_key(&k) {
                let p = net6(&k);
                if !self.overflow_v6.remove(&k) && !env.configured.contains_v6(&p) {
                    if let Err(e) = w.del_route_v6(&p) {
                        self.count_error(IpNet::V6(p), &e);
                    }
                }
            }
            self.release(g);
        }
        self.flush(w);
    }

    /// Drops a staged table without applying it.
    pub fn discard(&mut self, st: Staged, w: &mut dyn RouteWriter) {
        for g in st.v4.into_values().chain(st.v6.into_values()) {
            self.release(g);
        }
        self.flush(w);
    }

    /// The first sync after a start: `st` (the dump) replaces what `pinned`
    /// holds, writing only the entries that differ; pinned entries in neither
    /// the kernel table nor the config are removed, and pinned next hops no
    /// learned route reuses are freed last.
    fn commit_initial(
        &mut self,
        st: Staged,
        mut pinned: Pinned,
        env: &Env,
        w: &mut dyn RouteWriter,
    ) {
        let Staged { v4, v6 } = st;
        for (&k, &g) in &v4 {
            let p = net4(k);
            if env.configured.contains_v4(&p) {
                continue;
            }
            if pinned.take_v4(&p) != Some(self.groups[g as usize].0) {
                self.write_v4(k, g, w);
            }
        }
        for (k, g) in in_write_order(&v6) {
            let p = net6(&k);
            if env.configured.contains_v6(&p) {
                continue;
            }
            if pinned.take_v6(&p) != Some(self.groups[g as usize].0) {
                self.write_v6(k, g, w);
            }
        }
        self.v4 = v4;
        self.v6 = v6;
        // A prefix configured since the start belongs to the configured path.
        for p in pinned.v4.keys().map(|k| net4(*k)) {
            if env.configured.contains_v4(&p) {
                continue;
            }
            if let Err(e) = w.del_route_v4(&p) {
                self.count_error(IpNet::V4(p), &e);
            }
        }
        for p in pinned.v6.keys().map(net6) {
            if env.configured.contains_v6(&p) {
                continue;
            }
            if let Err(e) = w.del_route_v6(&p) {
                self.count_error(IpNet::V6(p), &e);
            }
        }
        for id in std::mem::take(&mut self.reserved_nh) {
            if let Err(e) = w.set_nexthop(id, &PopNexthop::default()) {
                self.counters.errors += 1;
                tracing::warn!("freeing next hop {id} of a previous run: {e}");
            }
            self.free_nh.push(id);
        }
        self.flush(w);
    }

    /// The learned route for exactly `prefix`, when a configured one for it
    /// is removed: the caller writes it in place of the configured one.
    pub fn fallback_v4(&mut self, prefix: &Ipv4Net) -> Option<PopRoute> {
        // The configured path rewrites or removes this entry: what was pinned
        // for it no longer says what the map holds.
        if let Some(p) = self.pending.as_mut() {
            p.take_v4(prefix);
        }
        if let Some((t4, _)) = self.touched.as_mut() {
            t4.insert(k4(prefix));
        }
        let k = k4(prefix);
        let g = *self.v4.get(&k)?;
        self.overflow_v4.remove(&k);
        Some(self.groups[g as usize].0)
    }

    /// [`Self::fallback_v4`] for IPv6.
    pub fn fallback_v6(&mut self, prefix: &Ipv6Net) -> Option<PopRoute> {
        if let Some(p) = self.pending.as_mut() {
            p.take_v6(prefix);
        }
        if let Some((_, t6)) = self.touched.as_mut() {
            t6.insert(k6(prefix));
        }
        let k = k6(prefix);
        let g = *self.v6.get(&k)?;
        self.overflow_v6.remove(&k);
        Some(self.groups[g as usize].0)
    }

    /// Learned routes in the maps (neither shadowed by a configured route nor
    /// overflowed), by family.
    pub fn installed(&self, env: &Env) -> (usize, usize) {
        let shadow4 = env
            .configured
            .prefixes_v4()
            .filter(|p| self.v4.contains_key(&k4(p)))
            .count();
        let shadow6 = env
            .configured
            .prefixes_v6()
            .filter(|p| self.v6.contains_key(&k6(p)))
            .count();
        (
            self.v4.len() - shadow4 - self.overflow_v4.len().min(self.v4.len() - shadow4),
            self.v6.len() - shadow6 - self.overflow_v6.len().min(self.v6.len() - shadow6),
        )
    }

    /// Removes up to `n` learned IPv4 (`v6` false) or IPv6 routes from the
    /// map to make room for configured ones; they count as overflowed and
    /// return when there is room again. Returns how many were removed.
    pub fn evict(&mut self, v6: bool, n: usize, env: &Env, w: &mut dyn RouteWriter) -> usize {
        let mut done = 0;
        if !v6 {
            let victims: Vec<K4> = self
                .v4
                .keys()
                .filter(|k| {
                    !self.overflow_v4.contains(k) && !env.configured.contains_v4(&net4(**k))
                })
                .take(n)
                .copied()
                .collect();
            for k in victims {
                if w.del_route_v4(&net4(k)).is_ok() {
                    self.overflow_v4.insert(k);
                    self.counters.overflow += 1;
                    done += 1;
                }
            }
        } else {
            let victims: Vec<K6> = self
                .v6
                .keys()
                .filter(|k| !self.overflow_v6.contains(k) && !env.configured.contains_v6(&net6(k)))
                .take(n)
                .copied()
                .collect();
            for k in victims {
                if w.del_route_v6(&net6(&k)).is_ok() {
                    self.overflow_v6.insert(k);
                    self.counters.overflow += 1;
                    done += 1;
                }
            }
        }
        if done > 0 {
            tracing::warn!(
                evicted = done,
                "learned routes removed from the {} route map to make room for configured routes",
                if v6 { "IPv6" } else { "IPv4" }
            );
        }
        done
    }

    /// Tries again to write overflowed routes; stops at the first that still
    /// finds no room.
    pub fn retry_overflow(&mut self, env: &Env, w: &mut dyn RouteWriter) {
        let keys: Vec<K4> = self.overflow_v4.iter().copied().collect();
        for k in keys {
            let Some(&g) = self.v4.get(&k) else {
                self.overflow_v4.remove(&k);
                continue;
            };
            if env.configured.contains_v4(&net4(k)) {
                self.overflow_v4.remove(&k);
                continue;
            }
            self.write_v4(k, g, w);
            if self.overflow_v4.contains(&k) {
                break;
            }
        }
        let mut keys: Vec<K6> = self.overflow_v6.iter().copied().collect();
        keys.sort_unstable();
        for k in keys {
            let Some(&g) = self.v6.get(&k) else {
                self.overflow_v6.remove(&k);
                continue;
            };
            if env.configured.contains_v6(&net6(&k)) {
                self.overflow_v6.remove(&k);
                continue;
            }
            self.write_v6(k, g, w);
            if self.overflow_v6.contains(&k) {
                break;
            }
        }
    }

    /// Recomputes every learned next hop from the kernel view (a neighbour's
    /// MAC appeared or changed, a port went away) and writes those that changed.
    pub fn refresh_nexthops(&mut self, env: &Env, w: &mut dyn RouteWriter) {
        for (id, s) in self.nhs.iter_mut() {
            let value = env.nexthop(s.key.0, s.key.1).unwrap_or(PopNexthop {
                flags: NH_VALID,
                ..Default::default()
            });
            if value != s.value {
                match w.set_nexthop(*id, &value) {
                    Ok(()) => s.value = value,
                    Err(e) => {
                        self.counters.errors += 1;
                        tracing::warn!("learned next hop {}: {e}", s.key.1);
                    }
                }
            }
        }
    }

    /// Learned next hops without a MAC: (ifindex, address) to ask the kernel for.
    pub fn unresolved(&self) -> Vec<(u32, IpAddr)> {
        self.nhs
            .values()
            .filter(|s| s.value.flags & NH_RESOLVED == 0)
            .map(|s| s.key)
            .collect()
    }

    fn describe(&self, g: u32) -> LearnedRoute {
        let route = self.groups[g as usize].0;
        let nexthops = route.nh_ids[..route.nh_count as usize]
            .iter()
            .filter_map(|id| self.nhs.get(id).map(|s| (s.key, s.value)))
            .collect();
        LearnedRoute {
            blackhole: route.flags & ROUTE_BLACKHOLE != 0,
            nexthops,
        }
    }

    /// Every learned route, in no particular order.
    pub fn routes(&self) -> impl Iterator<Item = (IpNet, LearnedRoute)> + '_ {
        self.v4
            .iter()
            .map(|(k, g)| (IpNet::V4(net4(*k)), self.describe(*g)))
            .chain(
                self.v6
                    .iter()
                    .map(|(k, g)| (IpNet::V6(net6(k)), self.describe(*g))),
            )
    }

    /// The learned route for exactly `prefix`.
    pub fn get(&self, prefix: &IpNet) -> Option<LearnedRoute> {
        let g = match prefix {
            IpNet::V4(p) => self.v4.get(&k4(p)),
            IpNet::V6(p) => self.v6.get(&k6(p)),
        }?;
        Some(self.describe(*g))
    }

    /// The longest learned prefix containing `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<IpNet> {
        match ip {
            IpAddr::V4(a) => (0..=32u8).rev().find_map(|len| {
                let p = Ipv4Net::new(a, len).ok()?.trunc();
                self.v4.contains_key(&k4(&p)).then_some(IpNet::V4(p))
            }),
            IpAddr::V6(a) => (0..=128u8).rev().find_map(|len| {
                let p = Ipv6Net::new(a, len).ok()?.trunc();
                self.v6.contains_key(&k6(&p)).then_some(IpNet::V6(p))
            }),
        }
    }
}

/// A learned route as `popctl route show` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearnedRoute {
    /// Blackhole, unreachable or prohibit.
    pub blackhole: bool,
    /// ((ifindex, gateway), what the data plane holds for it).
    pub nexthops: Vec<((u32, IpAddr), PopNexthop)>,
}

#[cfg(test)]
#[path = "learned_tests.rs"]
mod tests;
