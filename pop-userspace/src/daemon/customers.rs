//! `customer add` / `customer del` in O(size of the change).
//!
//! [`CustomerIndex`] keeps, beside the desired state's customers, what a
//! single change must be checked against: the names, every prefix with its
//! owner (ordered, so an overlap is a range lookup), the customers attached
//! at each (interface, VLAN) with their anti-spoofing flags, the counts the
//! validator limits (customers, prefixes and anti-spoofing entries by
//! family) and the free customer ids. [`CustomerIndex::check_add`] accepts a
//! customer only when the whole-config validator would; anything it does not
//! accept (a bad customer, a limit reached, a VLAN customer, whose VLAN
//! device and next hops this path does not compile) is left to the whole
//! path, which refuses it with its own error text or applies it.
//!
//! [`patch`] then compiles only the changed customer against what the maps
//! hold ([`Tables`]): its prefixes in fib4/fib6, its policer, the
//! anti-spoofing entries and `ifaces` flag of the ports it attaches at, the
//! new generation in `config`, and the counters record of a new id. A
//! [`Patch`] lists exactly the entries that differ; [`apply_to`] makes
//! `applied` say what writing it leaves in the maps, and the result equals a
//! whole compile of the new state (tested over random sequences of changes).
use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use pop_common::{PopConfig, PopIface, IFACE_ANTI_SPOOFING, MAX_CUSTOMERS};

use super::compile::Tables;
use crate::config::model::{Config, Customer, InterfaceRole};
use crate::config::validate::{self, ValidCustomer};
use crate::dataplane::acl::SpoofTables;
use crate::netlink::KernelView;
use crate::state::Ids;

/// An attachment point as the validator counts it: (interface, VLAN id).
type PortKey = (String, Option<u16>);

/// The customers of the desired state, indexed for single changes.
#[derive(Clone, Debug, Default)]
pub struct CustomerIndex {
    /// Config order of the next customer added.
    next_seq: u64,
    customers: HashMap<String, Indexed>,
    /// Every customer prefix (host bits are refused, so it is its network)
    /// → its customer.
    owners: BTreeMap<IpNet, String>,
    ports: HashMap<PortKey, Port>,
    /// Customer prefixes (IPv4, IPv6).
    prefixes: [usize; 2],
    /// Anti-spoofing entries (IPv4, IPv6) as the validator counts them.
    spoof_entries: [usize; 2],
    /// Customer ids no customer has.
    free_ids: BTreeSet<u32>,
}

#[derive(Clone, Debug)]
struct Indexed {
    /// Position in config order (increasing, not dense).
    seq: u64,
    valid: ValidCustomer,
}

#[derive(Clone, Debug, Default)]
struct Port {
    /// Customers attached here, in config order.
    customers: BTreeMap<u64, String>,
    /// Those with anti-spoofing, in config order.
    anti_spoofing: BTreeMap<u64, String>,
    /// Their prefixes (IPv4, IPv6).
    prefixes: [usize; 2],
}

impl Port {
    fn protected(&self) -> bool {
        !self.anti_spoofing.is_empty()
    }

    /// Anti-spoofing entries this port contributes to the validator's count.
    fn entries(&self) -> [usize; 2] {
        if self.protected() {
            self.prefixes
        } else {
            [0, 0]
        }
    }
}

fn family(p: &IpNet) -> usize {
    usize::from(!p.addr().is_ipv4())
}

fn add(to: &mut [usize; 2], n: [usize; 2]) {
    to[0] += n[0];
    to[1] += n[1];
}

fn sub(from: &mut [usize; 2], n: [usize; 2]) {
    from[0] -= n[0];
    from[1] -= n[1];
}

fn counts(prefixes: &[IpNet]) -> [usize; 2] {
    let mut n = [0, 0];
    for p in prefixes {
        n[family(p)] += 1;
    }
    n
}

impl CustomerIndex {
    /// Indexes the customers of `cfg` (a validated desired state) with `ids`.
    /// Customers that do not pass [`validate::check_customer`] (a state
    /// written by an older popd) are left out; [`Self::complete`] says so.
    pub fn build(cfg: &Config, ids: &Ids) -> Self {
        let mut ix = Self {
            free_ids: (1..MAX_CUSTOMERS).collect(),
            ..Default::default()
        };
        for c in &cfg.customers {
            if let Ok(v) = validate::check_customer(c) {
                ix.insert(v, ids.customers.get(&c.name).copied());
            }
        }
        ix
    }

    /// Whether every customer of `cfg` is indexed: otherwise single changes
    /// take the whole path.
    pub fn complete(&self, cfg: &Config) -> bool {
        self.customers.len() == cfg.customers.len()
    }

    /// Whether a customer named `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.customers.contains_key(name)
    }

    /// The customer named `name`, checked.
    pub fn get(&self, name: &str) -> Option<&ValidCustomer> {
        self.customers.get(name).map(|c| &c.valid)
    }

    /// The id a customer added now gets: the lowest free one, as
    /// [`super::compile::assign_ids`] hands out.
    pub fn next_id(&self) -> Option<u32> {
        self.free_ids.first().copied()
    }

    /// Checks `c`, a customer to add, against the rest of the desired state
    /// `cfg` as the whole-config validator would. `None`: it would not pass,
    /// or this path does not compile it (a VLAN customer): the whole path
    /// must decide. Takes O(its prefixes × prefix length × log customers).
    pub fn check_add(&self, cfg: &Config, c: &Customer) -> Option<ValidCustomer> {
        if c.vlan.is_some() || self.contains(&c.name) {
            return None;
        }
        let v = validate::check_customer(c).ok()?;
        if self.customers.len() + 1 > (MAX_CUSTOMERS - 1) as usize {
            return None;
        }
        for i in &v.interfaces {
            let role = cfg.interfaces.iter().find(|x| &x.name == i).map(|x| x.role);
            if role != Some(InterfaceRole::Customer) {
                return None;
            }
        }
        let n = counts(&v.prefixes);
        let max_prefixes = pop_common::MAX_CUSTOMER_PREFIXES as usize;
        if (0..2).any(|f| self.prefixes[f] + n[f] > max_prefixes) {
            return None;
        }
        let mut entries = self.spoof_entries;
        for i in &v.interfaces {
            let port = self.ports.get(&(i.clone(), None));
            let (protected, port_n) = match port {
                Some(p) => (p.protected(), p.prefixes),
                None => (false, [0, 0]),
            };
            for f in 0..2 {
                if protected {
                    entries[f] += n[f];
                } else if v.anti_spoofing {
                    entries[f] += port_n[f] + n[f];
                }
            }
        }
        let max_entries = pop_common::MAX_SPOOF_PREFIXES as usize;
        if entries.iter().any(|&e| e > max_entries) {
            return None;
        }
        if v.prefixes.iter().any(|p| self.overlaps(p)) {
            return None;
        }
        Some(v)
    }

    /// Whether `p` overlaps a prefix of a customer in the index: one inside
    /// it (a range of the ordered prefixes), or one around it (one lookup
    /// per shorter length).
    fn overlaps(&self, p: &IpNet) -> bool {
        let (lo, hi) = match p {
            IpNet::V4(n) => (
                IpNet::V4(Ipv4Net::new(n.network(), 0).expect("length 0")),
                IpNet::V4(Ipv4Net::new(n.broadcast(), 32).expect("length 32")),
            ),
            IpNet::V6(n) => (
                IpNet::V6(Ipv6Net::new(n.network(), 0).expect("length 0")),
                IpNet::V6(Ipv6Net::new(n.broadcast(), 128).expect("length 128")),
            ),
        };
        if self.owners.range(lo..=hi).next().is_some() {
            return true;
        }
        (0..p.prefix_len()).any(|len| {
            IpNet::new(p.addr(), len)
                .map(|q| self.owners.contains_key(&q.trunc()))
                .unwrap_or(false)
        })
    }

    /// Adds a checked customer (last in config order) with its id.
    pub fn insert(&mut self, v: ValidCustomer, id: Option<u32>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(id) = id {
            self.free_ids.remove(&id);
        }
        let n = counts(&v.prefixes);
        for p in &v.prefixes {
            self.owners.insert(p.trunc(), v.name.clone());
        }
        add(&mut self.prefixes, n);
        for i in &v.interfaces {
            let port = self.ports.entry((i.clone(), v.vlan)).or_default();
            let before = port.entries();
            port.customers.insert(seq, v.name.clone());
            if v.anti_spoofing {
                port.anti_spoofing.insert(seq, v.name.clone());
            }
            add(&mut port.prefixes, n);
            let after = port.entries();
            add(&mut self.spoof_entries, after);
            sub(&mut self.spoof_entries, before);
        }
        self.customers
            .insert(v.name.clone(), Indexed { seq, valid: v });
    }

    /// Removes customer `name`, freeing `id`. Returns it and its place in
    /// config order (to put it back with [`Self::restore`]).
    pub fn remove(&mut self, name: &str, id: Option<u32>) -> Option<(ValidCustomer, u64)> {
        let Indexed { seq, valid: v } = self.customers.remove(name)?;
        if let Some(id) = id {
            self.free_ids.insert(id);
        }
        let n = counts(&v.prefixes);
        for p in &v.prefixes {
            if self.owners.get(&p.trunc()).is_some_and(|o| o == name) {
                self.owners.remove(&p.trunc());
            }
        }
        sub(&mut self.prefixes, n);
        for i in &v.interfaces {
            let key = (i.clone(), v.vlan);
            let Some(port) = self.ports.get_mut(&key) else {
                continue;
            };
            let before = port.entries();
            port.customers.remove(&seq);
            port.anti_spoofing.remove(&seq);
            sub(&mut port.prefixes, n);
            let after = port.entries();
            add(&mut self.spoof_entries, after);
            sub(&mut self.spoof_entries, before);
            if port.customers.is_empty() {
                self.ports.remove(&key);
            }
        }
        Some((v, seq))
    }

    /// Puts back a customer [`Self::remove`] took out, at its old place.
    pub fn restore(&mut self, v: ValidCustomer, seq: u64, id: Option<u32>) {
        let next = self.next_seq;
        self.next_seq = seq;
        self.insert(v, id);
        self.next_seq = next;
    }

    /// The customers attached at `port` (no VLAN), in config order, and the
    /// first of them with anti-spoofing.
    fn at_port(&self, port: &str) -> Option<&Port> {
        self.ports.get(&(port.to_string(), None))
    }
}

/// A customer change made to the desired state and its index by
/// [`try_change`], with what [`undo`] needs to take it back.
#[derive(Clone, Debug)]
pub enum Done {
    /// This customer was added (last in config order) with this id.
    Added(ValidCustomer, u32),
    /// This customer, which had this id, was removed from this position
    /// (`pos` in the config, `seq` in the index).
    Removed {
        /// The customer, checked.
        valid: ValidCustomer,
        /// Its id.
        id: u32,
        /// As configured.
        old: Customer,
        /// Its position in the config's list.
        pos: usize,
        /// Its position in the index's order.
        seq: u64,
    },
}

impl Done {
    /// The change, as [`patch`] takes it.
    pub fn changed(&self) -> Changed<'_> {
        match self {
            Done::Added(v, id) => Changed::Added(v, *id),
            Done::Removed { valid, id, .. } => Changed::Removed(valid, *id),
        }
    }
}

/// Makes `change` (a customer add or del) in `cfg`, `ids` and `index` when
/// this path can: every customer indexed, every configured interface in the
/// kernel (the whole path requires that of any change), the customer's own
/// interfaces plain ports (not VLAN devices), no VLAN, and the change valid
/// ([`CustomerIndex::check_add`]). `None`: nothing was changed, and the
/// whole path must take it (it refuses what is refused, with its text).
pub fn try_change(
    index: &mut CustomerIndex,
    cfg: &mut Config,
    ids: &mut Ids,
    kernel: &KernelView,
    change: &super::desired::Change,
) -> Option<Done> {
    use super::desired::Change;
    if !index.complete(cfg)
        || !cfg
            .interfaces
            .iter()
            .all(|i| kernel.links.contains_key(&i.name))
    {
        return None;
    }
    let plain = |ifaces: &[String]| {
        ifaces
            .iter()
            .all(|i| kernel.links.get(i).is_none_or(|l| l.vlan.is_none()))
    };
    match change {
        Change::CustomerAdd { customer } => {
            let valid = index.check_add(cfg, customer)?;
            let id = index.next_id()?;
            if !plain(&valid.interfaces) {
                return None;
            }
            cfg.customers.push(customer.clone());
            ids.customers.insert(customer.name.clone(), id);
            index.insert(valid.clone(), Some(id));
            Some(Done::Added(valid, id))
        }
        Change::CustomerDel { name } => {
            let v = index.get(name)?;
            if v.vlan.is_some() || !plain(&v.interfaces) {
                return None;
            }
            let id = *ids.customers.get(name)?;
            let pos = cfg.customers.iter().position(|c| &c.name == name)?;
            let (valid, seq) = index.remove(name, Some(id))?;
            let old = cfg.customers.remove(pos);
            ids.customers.remove(name);
            Some(Done::Removed {
                valid,
                id,
                old,
                pos,
                seq,
            })
        }
        _ => None,
    }
}

/// Takes back what [`try_change`] did.
pub fn undo(index: &mut CustomerIndex, cfg: &mut Config, ids: &mut Ids, done: Done) {
    match done {
        Done::Added(v, id) => {
            index.remove(&v.name, Some(id));
            ids.customers.remove(&v.name);
            cfg.customers.pop();
        }
        Done::Removed {
            valid,
            id,
            old,
            pos,
            seq,
        } => {
            ids.customers.insert(valid.name.clone(), id);
            cfg.customers.insert(pos, old);
            index.restore(valid, seq, Some(id));
        }
    }
}

/// The map entries one customer change writes: each the value the map must
/// hold (`None`: no entry).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Patch {
    /// A new customer id, whose counters record is zeroed first.
    pub fresh: Option<u32>,
    /// fib4's customer plane (and its `cust_v4` list).
    pub cust_v4: Vec<(Ipv4Net, Option<u32>)>,
    /// fib6's customer plane (and its `cust_v6` list).
    pub cust_v6: Vec<(Ipv6Net, Option<u32>)>,
    /// Anti-spoofing entries and ports to insert (before the flags).
    pub spoof_add: SpoofTables,
    /// Anti-spoofing entries and ports to remove (after the flags).
    pub spoof_del: SpoofTables,
    /// `ifaces` entries whose anti-spoofing flag changes.
    pub ifaces: Vec<(u32, PopIface)>,
    /// A policer: (customer id, (rate_bps, burst_bytes) or none).
    pub policer: Option<(u32, Option<(u64, u64)>)>,
    /// `config[0]` with the new generation.
    pub config: Option<PopConfig>,
}

/// What a customer change did, in the index's terms.
pub enum Changed<'a> {
    /// This customer was added with this id.
    Added(&'a ValidCustomer, u32),
    /// This customer, which had this id, was removed.
    Removed(&'a ValidCustomer, u32),
}

/// Compiles one customer change: the entries of `applied` (what the maps
/// hold) that differ from a whole compile of the new state, `index` and
/// `ids` being already the new state's. O(the entries of the customer and,
/// when a port gains or loses its anti-spoofing flag, those of that port).
pub fn patch(
    index: &CustomerIndex,
    ids: &Ids,
    applied: &Tables,
    kernel: &KernelView,
    generation: u64,
    changed: Changed,
) -> Patch {
    let (c, id, added) = match changed {
        Changed::Added(c, id) => (c, id, true),
        Changed::Removed(c, id) => (c, id, false),
    };
    let mut out = Patch {
        fresh: added.then_some(id),
        ..Default::default()
    };
    let want = added.then_some(id);
    for p in &c.prefixes {
        match p {
            IpNet::V4(p) => {
                if applied.cust_v4.get(p).copied() != want && !out.cust_v4.contains(&(*p, want)) {
                    out.cust_v4.push((*p, want));
                }
            }
            IpNet::V6(p) => {
                if applied.cust_v6.get(p).copied() != want && !out.cust_v6.contains(&(*p, want)) {
                    out.cust_v6.push((*p, want));
                }
            }
        }
    }
    let policer = match (added, c.rate_bps, c.burst_bytes) {
        (true, Some(rate), Some(burst)) => Some((rate, burst)),
        _ => None,
    };
    if applied.policers.get(&id).copied() != policer {
        out.policer = Some((id, policer));
    }
    for name in &c.interfaces {
        let Some(ifindex) = kernel.links.get(name).map(|l| l.ifindex) else {
            continue;
        };
        let port = index.at_port(name);
        let first = port
            .and_then(|p| p.anti_spoofing.values().next())
            .and_then(|n| ids.customers.get(n).copied());
        let before = applied.spoof.ports.get(&ifindex).copied();
        if before != first {
            match first {
                Some(id) => out.spoof_add.ports.insert(ifindex, id),
                None => out.spoof_del.ports.insert(ifindex, 0),
            };
        }
        match (before.is_some(), first.is_some()) {
            (true, true) => {
                for p in &c.prefixes {
                    let entry = (ifindex, p.trunc());
                    let have = applied.spoof.prefixes.contains(&entry);
                    if added && !have {
                        out.spoof_add.prefixes.insert(entry);
                    } else if !added && have {
                        out.spoof_del.prefixes.insert(entry);
                    }
                }
            }
            (false, true) => {
                let every = port
                    .into_iter()
                    .flat_map(|p| p.customers.values())
                    .filter_map(|n| index.get(n))
                    .flat_map(|v| v.prefixes.iter());
                for p in every {
                    let entry = (ifindex, p.trunc());
                    if !applied.spoof.prefixes.contains(&entry) {
                        out.spoof_add.prefixes.insert(entry);
                    }
                }
            }
            (true, false) => {
                let all = IpNet::V4(Ipv4Net::default());
                out.spoof_del.prefixes.extend(
                    applied
                        .spoof
                        .prefixes
                        .range((ifindex, all)..)
                        .take_while(|(i, _)| *i == ifindex),
                );
            }
            (false, false) => {}
        }
        if let Some(have) = applied.ifaces.get(&ifindex) {
            let flags = if first.is_some() {
                have.flags | IFACE_ANTI_SPOOFING
            } else {
                have.flags & !IFACE_ANTI_SPOOFING
            };
            if flags != have.flags && !out.ifaces.iter().any(|(i, _)| *i == ifindex) {
                out.ifaces.push((ifindex, PopIface { flags, ..*have }));
            }
        }
    }
    if let Some(c) = applied.config {
        let new = PopConfig {
            generation: generation as u32,
            ..c
        };
        if new != c {
            out.config = Some(new);
        }
    }
    out
}

/// Makes `applied` say what the maps hold once `patch` is written.
pub fn apply_to(applied: &mut Tables, patch: &Patch) {
    for (p, id) in &patch.cust_v4 {
        match id {
            Some(id) => applied.cust_v4.insert(*p, *id),
            None => applied.cust_v4.remove(p),
        };
    }
    for (p, id) in &patch.cust_v6 {
        match id {
            Some(id) => applied.cust_v6.insert(*p, *id),
            None => applied.cust_v6.remove(p),
        };
    }
    applied
        .spoof
        .prefixes
        .extend(patch.spoof_add.prefixes.iter().copied());
    applied.spoof.ports.extend(&patch.spoof_add.ports);
    for e in &patch.spoof_del.prefixes {
        applied.spoof.prefixes.remove(e);
    }
    for i in patch.spoof_del.ports.keys() {
        applied.spoof.ports.remove(i);
    }
    for (i, v) in &patch.ifaces {
        applied.ifaces.insert(*i, *v);
    }
    if let Some((id, p)) = patch.policer {
        match p {
            Some(rb) => applied.policers.insert(id, rb),
            None => applied.policers.remove(&id),
        };
    }
    if let Some(c) = patch.config {
        applied.config = Some(c);
    }
}

/// The patch that puts back what `applied` holds now, for every entry
/// `patch` writes (to undo it, written or half-written).
pub fn inverse(applied: &Tables, patch: &Patch) -> Patch {
    let mut out = Patch {
        cust_v4: patch
            .cust_v4
            .iter()
            .map(|(p, _)| (*p, applied.cust_v4.get(p).copied()))
            .collect(),
        cust_v6: patch
            .cust_v6
            .iter()
            .map(|(p, _)| (*p, applied.cust_v6.get(p).copied()))
            .collect(),
        ifaces: patch
            .ifaces
            .iter()
            .filter_map(|(i, _)| Some((*i, *applied.ifaces.get(i)?)))
            .collect(),
        policer: patch
            .policer
            .map(|(id, _)| (id, applied.policers.get(&id).copied())),
        config: patch.config.and(applied.config),
        ..Default::default()
    };
    let sp = &applied.spoof;
    for e in patch
        .spoof_add
        .prefixes
        .iter()
        .chain(&patch.spoof_del.prefixes)
    {
        if sp.prefixes.contains(e) {
            out.spoof_add.prefixes.insert(*e);
        } else {
            out.spoof_del.prefixes.insert(*e);
        }
    }
    for i in patch
        .spoof_add
        .ports
        .keys()
        .chain(patch.spoof_del.ports.keys())
    {
        match sp.ports.get(i) {
            Some(id) => out.spoof_add.ports.insert(*i, *id),
            None => out.spoof_del.ports.insert(*i, 0),
        };
    }
    out
}

#[cfg(test)]
#[path = "customers_tests.rs"]
mod tests;
