//! [`Fib6`]: the routes, customer prefixes and local addresses, the prefix
//! lengths behind every entry, and the incremental changes of the trie.
use std::collections::{HashMap, HashSet};
use std::net::Ipv6Addr;

use pop_common::fib6::{
    FIB6_CUSTOMER_MASK, FIB6_CUSTOMER_SHIFT, FIB6_EXT, FIB6_LOCAL, FIB6_NODE_ENTRIES,
    FIB6_ROOT_BITS, FIB6_ROUTE_MASK, FIB6_STRIDE,
};

use super::backend::{Fib6Backend, MemoryBackend, ROOT_ENTRIES};
use super::{Fib6Error, Prefix6};

const NODE: usize = FIB6_NODE_ENTRIES as usize;
const ROOT_BITS: u8 = FIB6_ROOT_BITS as u8;
const STRIDE: u8 = FIB6_STRIDE as u8;

/// A table of the trie: the root, or a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    Root,
    Node(u32),
}

impl Loc {
    /// The prefix length its entries start at, and the bits they decide.
    fn bits(off: u8) -> u8 {
        if off == 0 {
            ROOT_BITS
        } else {
            STRIDE
        }
    }
}

/// The two kinds of prefixes whose answers share an entry: the longest
/// route's record id and the longest customer prefix's customer id are each
/// a field of it, decided independently. (Local addresses are /128s: a bit
/// of the one entry of the address, [`FIB6_LOCAL`].)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plane {
    Route = 0,
    Customer = 1,
}

const PLANES: [Plane; 2] = [Plane::Route, Plane::Customer];

impl Plane {
    /// This plane's field of an answer entry.
    fn field(self, e: u32) -> u32 {
        match self {
            Plane::Route => e & FIB6_ROUTE_MASK,
            Plane::Customer => (e >> FIB6_CUSTOMER_SHIFT) & FIB6_CUSTOMER_MASK,
        }
    }

    /// `e` with this plane's field set to `v`.
    fn with(self, e: u32, v: u32) -> u32 {
        match self {
            Plane::Route => (e & !FIB6_ROUTE_MASK) | v,
            Plane::Customer => {
                (e & !(FIB6_CUSTOMER_MASK << FIB6_CUSTOMER_SHIFT)) | (v << FIB6_CUSTOMER_SHIFT)
            }
        }
    }

    /// What its prefixes are called in errors.
    fn what(self) -> &'static str {
        match self {
            Plane::Route => "route",
            Plane::Customer => "customer prefix",
        }
    }
}

/// The route record id of an answer entry (0: no route).
pub fn entry_route(e: u32) -> u32 {
    Plane::Route.field(e)
}

/// The customer id of an answer entry (0: none).
pub fn entry_customer(e: u32) -> u32 {
    Plane::Customer.field(e)
}

/// Whether an answer entry is an address of this host.
pub fn entry_local(e: u32) -> bool {
    e & FIB6_EXT == 0 && e & FIB6_LOCAL != 0
}

/// The entry of `addr` in the table that starts at bit `off`.
fn index(addr: u128, off: u8) -> u32 {
    let width = Loc::bits(off);
    ((addr >> (128 - u32::from(off) - u32::from(width))) & ((1u128 << width) - 1)) as u32
}

/// Sizes and limits, for status and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fib6Stats {
    /// Routes held.
    pub routes: usize,
    /// Customer prefixes held.
    pub customer_prefixes: usize,
    /// Local addresses held.
    pub locals: usize,
    /// Nodes linked into the trie.
    pub nodes_used: u32,
    /// Nodes `fib6_nodes` holds.
    pub node_limit: u32,
}

/// A node between the root and a change's level, with where it is linked.
struct Step {
    parent: Loc,
    parent_index: u32,
    node: u32,
    off: u8,
}

/// The IPv6 FIB writer over a [`Fib6Backend`].
pub struct Fib6<B> {
    backend: B,
    /// Per plane: its value (route record id, customer id) by network
    /// address, one map per prefix length.
    prefixes: [Vec<HashMap<u128, u32>>; 2],
    counts: [usize; 2],
    /// Local addresses.
    locals: HashSet<u128>,
    /// Per plane: the length of the prefix that answers a non-node entry's
    /// field (0 also for "none"; meaningless for a node entry).
    root_depth: [Vec<u8>; 2],
    node_depth: [Vec<u8>; 2],
    /// Nodes past a grace period: reusable now.
    free: Vec<u32>,
    /// Nodes unlinked since the last grace period.
    pub(super) pending: Vec<u32>,
    /// Nodes below this were used.
    fresh: u32,
    used: u32,
}

impl<B: Fib6Backend> Fib6<B> {
    /// A writer over empty (zeroed) tables.
    pub fn new(backend: B) -> Self {
        let cap = backend.node_capacity() as usize;
        Self {
            backend,
            prefixes: [vec![HashMap::new(); 129], vec![HashMap::new(); 129]],
            counts: [0; 2],
            locals: HashSet::new(),
            root_depth: [vec![0; ROOT_ENTRIES], vec![0; ROOT_ENTRIES]],
            node_depth: [vec![0; cap * NODE], vec![0; cap * NODE]],
            free: vec![],
            pending: vec![],
            fresh: 0,
            used: 0,
        }
    }

    /// The tables.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The tables, for tests that inspect or instrument them.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Gives the tables back.
    pub fn into_backend(self) -> B {
        self.backend
    }

    fn get(&self, loc: Loc, i: u32) -> u32 {
        match loc {
            Loc::Root => self.backend.root(i),
            Loc::Node(n) => self.backend.node(n, i),
        }
    }

    fn store(&mut self, loc: Loc, i: u32, entry: u32) {
        match loc {
            Loc::Root => self.backend.set_root(i, entry),
            Loc::Node(n) => self.backend.set_node(n, i, entry),
        }
    }

    fn depth(&self, plane: Plane, loc: Loc, i: u32) -> u8 {
        let p = plane as usize;
        match loc {
            Loc::Root => self.root_depth[p][i as usize],
            Loc::Node(n) => self.node_depth[p][n as usize * NODE + i as usize],
        }
    }

    fn set_depth(&mut self, plane: Plane, loc: Loc, i: u32, depth: u8) {
        let p = plane as usize;
        match loc {
            Loc::Root => self.root_depth[p][i as usize] = depth,
            Loc::Node(n) => self.node_depth[p][n as usize * NODE + i as usize] = depth,
        }
    }

    /// Both planes' depths of an entry.
    fn depths(&self, loc: Loc, i: u32) -> [u8; 2] {
        PLANES.map(|p| self.depth(p, loc, i))
    }

    fn set_depths(&mut self, loc: Loc, i: u32, depths: [u8; 2]) {
        for p in PLANES {
            self.set_depth(p, loc, i, depths[p as usize]);
        }
    }

    /// Nodes that can be taken now or after a grace period.
    fn nodes_available(&self) -> u32 {
        self.free.len() as u32
            + self.pending.len() as u32
            + (self.backend.node_capacity() - self.fresh)
    }

    /// A node no lookup can be reading, filled with `entry` (prefix lengths
    /// `depths`) before anything points at it.
    fn alloc(&mut self, entry: u32, depths: [u8; 2]) -> u32 {
        let n = if let Some(n) = self.free.pop() {
            n
        } else if self.fresh < self.backend.node_capacity() {
            self.fresh += 1;
            self.fresh - 1
        } else {
            assert!(
                !self.pending.is_empty(),
                "fib6: nodes counted but none free"
            );
            self.backend.wait_for_readers();
            self.free.append(&mut self.pending);
            self.free.pop().expect("pending was not empty")
        };
        self.used += 1;
        for j in 0..NODE as u32 {
            self.backend.set_node(n, j, entry);
            self.set_depths(Loc::Node(n), j, depths);
        }
        n
    }

    /// An unlinked node: reusable after the next grace period.
    fn retire(&mut self, n: u32) {
        self.used -= 1;
        self.pending.push(n);
    }

    /// Nodes the route `p` needs created on its path.
    fn nodes_needed(&self, p: Prefix6) -> u32 {
        let (mut loc, mut off, mut needed) = (Some(Loc::Root), 0u8, 0u32);
        while p.len > off + Loc::bits(off) {
            if let Some(l) = loc {
                let e = self.get(l, index(p.bits, off));
                loc = (e & FIB6_EXT != 0).then_some(Loc::Node(e & !FIB6_EXT));
            }
            if loc.is_none() {
                needed += 1;
            }
            off += Loc::bits(off);
        }
        needed
    }

    /// The table at `p`'s level and its start bit, and the nodes on the way
    /// (creating missing ones if `create`; else None where one is missing).
    fn descend(&mut self, p: Prefix6, create: bool) -> Option<(Loc, u8, Vec<Step>)> {
        let (mut loc, mut off, mut steps) = (Loc::Root, 0u8, vec![]);
        while p.len > off + Loc::bits(off) {
            let i = index(p.bits, off);
            let e = self.get(loc, i);
            let node = if e & FIB6_EXT != 0 {
                e & !FIB6_EXT
            } else if create {
                let n = self.alloc(e, self.depths(loc, i));
                self.store(loc, i, FIB6_EXT | n);
                n
            } else {
                return None;
            };
            off += Loc::bits(off);
            steps.push(Step {
                parent: loc,
                parent_index: i,
                node,
                off,
            });
            loc = Loc::Node(node);
        }
        Some((loc, off, steps))
    }

    /// The entries of `p` in its table.
    fn span(p: Prefix6, off: u8) -> std::ops::Range<u32> {
        let first = index(p.bits, off);
        first..first + (1u32 << (off + Loc::bits(off) - p.len))
    }

    /// Points `plane`'s field of every address under `loc[i]` that no
    /// prefix of the plane longer than `len` answers at `v`.
    fn cover(&mut self, plane: Plane, loc: Loc, i: u32, v: u32, len: u8) {
        let e = self.get(loc, i);
        if e & FIB6_EXT != 0 {
            for j in 0..NODE as u32 {
                self.cover(plane, Loc::Node(e & !FIB6_EXT), j, v, len);
            }
        } else if self.depth(plane, loc, i) <= len {
            let new = plane.with(e, v);
            if e != new {
                self.store(loc, i, new);
            }
            self.set_depth(plane, loc, i, len);
        }
    }

    /// Hands `plane`'s field of every address under `loc[i]` that the
    /// `len`-long prefix answered to `v` (prefix length `v_len`).
    fn uncover(&mut self, plane: Plane, loc: Loc, i: u32, len: u8, v: u32, v_len: u8) {
        let e = self.get(loc, i);
        if e & FIB6_EXT != 0 {
            for j in 0..NODE as u32 {
                self.uncover(plane, Loc::Node(e & !FIB6_EXT), j, len, v, v_len);
            }
        } else if self.depth(plane, loc, i) == len {
            let new = plane.with(e, v);
            if e != new {
                self.store(loc, i, new);
            }
            self.set_depth(plane, loc, i, v_len);
        }
    }

    fn check_value(plane: Plane, p: Prefix6, v: u32) -> Result<(), Fib6Error> {
        match plane {
            Plane::Route if v == 0 || v > FIB6_ROUTE_MASK => {
                Err(Fib6Error::RecordId { prefix: p, id: v })
            }
            Plane::Customer if v == 0 || v > FIB6_CUSTOMER_MASK => {
                Err(Fib6Error::CustomerId { prefix: p, id: v })
            }
            _ => Ok(()),
        }
    }

    /// Refuses a change of `p` whose nodes are not free.
    fn check_room(&self, what: &'static str, p: Prefix6) -> Result<(), Fib6Error> {
        let needed = self.nodes_needed(p);
        let free = self.nodes_available();
        if needed > free {
            return Err(Fib6Error::NodesFull {
                what,
                prefix: p,
                needed,
                free,
                limit: self.backend.node_capacity(),
            });
        }
        Ok(())
    }

    fn set(&mut self, plane: Plane, p: Prefix6, v: u32) -> Result<(), Fib6Error> {
        Self::check_value(plane, p, v)?;
        self.check_room(plane.what(), p)?;
        let pl = plane as usize;
        if self.prefixes[pl][p.len as usize]
            .insert(p.bits, v)
            .is_none()
        {
            self.counts[pl] += 1;
        }
        let (loc, off, _) = self.descend(p, true).expect("nodes are created");
        for i in Self::span(p, off) {
            self.cover(plane, loc, i, v, p.len);
        }
        Ok(())
    }

    fn del(&mut self, plane: Plane, p: Prefix6) -> bool {
        let pl = plane as usize;
        if self.prefixes[pl][p.len as usize].remove(&p.bits).is_none() {
            return false;
        }
        self.counts[pl] -= 1;
        let (v, v_len) = (0..p.len)
            .rev()
            .find_map(|l| {
                let r = self.prefixes[pl][l as usize].get(&(p.bits & Prefix6::mask(l)));
                r.map(|v| (*v, l))
            })
            .unwrap_or((0, 0));
        let Some((loc, off, steps)) = self.descend(p, false) else {
            debug_assert!(false, "fib6: {} {p} had no path", plane.what());
            return true;
        };
        for i in Self::span(p, off) {
            self.uncover(plane, loc, i, p.len, v, v_len);
        }
        self.fold(&steps);
        true
    }

    /// Nodes on the path that one answer now covers whole fold back into
    /// their parent entry: the parent first, the node after a grace period.
    fn fold(&mut self, steps: &[Step]) {
        for step in steps.iter().rev() {
            let n = Loc::Node(step.node);
            let (e, d) = (self.get(n, 0), self.depths(n, 0));
            let uniform = e & (FIB6_EXT | FIB6_LOCAL) == 0
                && d.iter().all(|d| *d <= step.off)
                && (1..NODE as u32).all(|j| self.get(n, j) == e && self.depths(n, j) == d);
            if !uniform {
                break;
            }
            self.store(step.parent, step.parent_index, e);
            self.set_depths(step.parent, step.parent_index, d);
            self.retire(step.node);
        }
    }

    /// Adds or replaces the route of `p` (its answer: route record `id`,
    /// 1..65535). Refused whole if the nodes it needs are not free.
    pub fn set_route(&mut self, p: Prefix6, id: u32) -> Result<(), Fib6Error> {
        self.set(Plane::Route, p, id)
    }

    /// Removes the route of `p`; false if there was none.
    pub fn del_route(&mut self, p: Prefix6) -> Result<bool, Fib6Error> {
        Ok(self.del(Plane::Route, p))
    }

    /// Assigns the customer prefix `p` to customer `id` (1..16383): every
    /// address whose longest customer prefix is `p` answers `id`, whatever
    /// its route. Refused whole if the nodes it needs are not free.
    pub fn set_customer(&mut self, p: Prefix6, id: u32) -> Result<(), Fib6Error> {
        self.set(Plane::Customer, p, id)
    }

    /// Removes the customer prefix `p` (its addresses fall to the next
    /// shorter customer prefix, or none); false if there was none.
    pub fn del_customer(&mut self, p: Prefix6) -> Result<bool, Fib6Error> {
        Ok(self.del(Plane::Customer, p))
    }

    /// The customer id of exactly `p`.
    pub fn customer(&self, p: Prefix6) -> Option<u32> {
        self.prefixes[Plane::Customer as usize][p.len as usize]
            .get(&p.bits)
            .copied()
    }

    /// Every customer prefix held, in no order.
    pub fn customers(&self) -> impl Iterator<Item = (Prefix6, u32)> + '_ {
        self.plane(Plane::Customer)
    }

    /// Declares `addr` an address of this host: its entry (a /128, nodes
    /// down to it) gets [`FIB6_LOCAL`]. Refused whole if the nodes are not
    /// free.
    pub fn set_local(&mut self, addr: Ipv6Addr) -> Result<(), Fib6Error> {
        let p = Prefix6 {
            bits: u128::from(addr),
            len: 128,
        };
        if self.locals.contains(&p.bits) {
            return Ok(());
        }
        self.check_room("local address", p)?;
        self.locals.insert(p.bits);
        let (loc, off, _) = self.descend(p, true).expect("nodes are created");
        let i = index(p.bits, off);
        let e = self.get(loc, i);
        self.store(loc, i, e | FIB6_LOCAL);
        Ok(())
    }

    /// Removes the local address `addr`; false if it was not one.
    pub fn del_local(&mut self, addr: Ipv6Addr) -> Result<bool, Fib6Error> {
        let p = Prefix6 {
            bits: u128::from(addr),
            len: 128,
        };
        if !self.locals.remove(&p.bits) {
            return Ok(false);
        }
        let Some((loc, off, steps)) = self.descend(p, false) else {
            debug_assert!(false, "fib6: local address {addr} had no path");
            return Ok(true);
        };
        let i = index(p.bits, off);
        let e = self.get(loc, i);
        self.store(loc, i, e & !FIB6_LOCAL);
        self.fold(&steps);
        Ok(true)
    }

    /// Whether `addr` is a local address.
    pub fn is_local(&self, addr: Ipv6Addr) -> bool {
        self.locals.contains(&u128::from(addr))
    }

    /// Every local address, in no order.
    pub fn locals(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.locals.iter().map(|a| Ipv6Addr::from(*a))
    }

    /// The route record id of exactly `p`.
    pub fn route(&self, p: Prefix6) -> Option<u32> {
        self.prefixes[Plane::Route as usize][p.len as usize]
            .get(&p.bits)
            .copied()
    }

    fn plane(&self, plane: Plane) -> impl Iterator<Item = (Prefix6, u32)> + '_ {
        self.prefixes[plane as usize]
            .iter()
            .enumerate()
            .flat_map(|(len, m)| {
                m.iter().map(move |(bits, v)| {
                    (
                        Prefix6 {
                            bits: *bits,
                            len: len as u8,
                        },
                        *v,
                    )
                })
            })
    }

    /// Every route held, in no order.
    pub fn routes(&self) -> impl Iterator<Item = (Prefix6, u32)> + '_ {
        self.plane(Plane::Route)
    }

    /// The answer entry the data plane finds for `addr` (route record id,
    /// customer id and local flag: [`entry_route`], [`entry_customer`],
    /// [`entry_local`]; 0: nothing): the tables walked as `fib6_lookup`
    /// walks them.
    pub fn lookup(&self, addr: Ipv6Addr) -> u32 {
        let a = u128::from(addr);
        let (mut e, mut off) = (self.backend.root(index(a, 0)), ROOT_BITS);
        while e & FIB6_EXT != 0 {
            e = self.backend.node(e & !FIB6_EXT, index(a, off));
            off += STRIDE;
        }
        e
    }

    /// Sizes and limits now.
    pub fn stats(&self) -> Fib6Stats {
        Fib6Stats {
            routes: self.counts[Plane::Route as usize],
            customer_prefixes: self.counts[Plane::Customer as usize],
            locals: self.locals.len(),
            nodes_used: self.used,
            node_limit: self.backend.node_capacity(),
        }
    }

    /// The route record ids the entries of `backend` point at (below
    /// `capacity`), as found after a restart.
    pub fn ids_in_use(backend: &B, capacity: u32) -> Vec<bool> {
        let mut used = vec![false; capacity as usize];
        let mut mark = |e: u32, stack: &mut Vec<u32>| {
            if e & FIB6_EXT != 0 {
                stack.push(e & !FIB6_EXT);
            } else if entry_route(e) < capacity {
                used[entry_route(e) as usize] = true;
            }
        };
        let mut stack = vec![];
        for i in 0..ROOT_ENTRIES as u32 {
            mark(backend.root(i), &mut stack);
        }
        let mut seen = vec![false; backend.node_capacity() as usize];
        while let Some(n) = stack.pop() {
            if n as usize >= seen.len() || std::mem::replace(&mut seen[n as usize], true) {
                continue;
            }
            for j in 0..NODE as u32 {
                mark(backend.node(n, j), &mut stack);
            }
        }
        used[0] = false;
        used
    }

    /// Takes over filled (or zeroed) tables, as a restarted popd finds them
    /// pinned, and makes them hold exactly `routes` (routes only; see
    /// [`Self::adopt_all`]).
    pub fn adopt(
        backend: B,
        routes: impl IntoIterator<Item = (Prefix6, u32)>,
    ) -> Result<Self, Fib6Error> {
        Self::adopt_all(backend, routes, [], [])
    }

    /// Takes over filled (or zeroed) tables, as a restarted popd finds them
    /// pinned, and makes them hold exactly `routes`, `customers` and
    /// `locals`, writing only the entries that differ: the pinned entries
    /// keep forwarding meanwhile. Nodes the old tables used and the new ones
    /// do not are reused after a grace period.
    pub fn adopt_all(
        backend: B,
        routes: impl IntoIterator<Item = (Prefix6, u32)>,
        customers: impl IntoIterator<Item = (Prefix6, u32)>,
        locals: impl IntoIterator<Item = Ipv6Addr>,
    ) -> Result<Self, Fib6Error> {
        let mut fib = Self::new(backend);
        let cap = fib.backend.node_capacity();
        // Nodes the tables link (a lookup may be reading them).
        let mut held = vec![false; cap as usize];
        let mut stack: Vec<u32> = (0..ROOT_ENTRIES as u32)
            .map(|i| fib.backend.root(i))
            .filter(|e| e & FIB6_EXT != 0)
            .map(|e| e & !FIB6_EXT)
            .collect();
        while let Some(n) = stack.pop() {
            if n >= cap || held[n as usize] {
                continue;
            }
            held[n as usize] = true;
            for j in 0..NODE as u32 {
                let e = fib.backend.node(n, j);
                if e & FIB6_EXT != 0 {
                    stack.push(e & !FIB6_EXT);
                }
            }
        }
        // The tables as they should be, built aside, then merged in.
        let mut target = Fib6::new(MemoryBackend::new(cap));
        for (p, id) in routes {
            target.set_route(p, id)?;
        }
        for (p, id) in customers {
            target.set_customer(p, id)?;
        }
        for a in locals {
            target.set_local(a)?;
        }
        let held_count = held.iter().filter(|h| **h).count() as u32;
        let mut claimed = vec![false; cap as usize];
        let mut new_nodes = 0;
        for i in 0..ROOT_ENTRIES as u32 {
            new_nodes += fib.new_nodes(Loc::Root, i, &target, Loc::Root, &held, &mut claimed);
        }
        if held_count + new_nodes > cap {
            // The old nodes stay in place while the new ones are filled.
            return Err(Fib6Error::AdoptionFull {
                needed: new_nodes,
                free: cap - held_count,
                limit: cap,
            });
        }
        fib.fresh = held.iter().rposition(|h| *h).map_or(0, |i| i as u32 + 1);
        fib.free = (0..fib.fresh)
            .rev()
            .filter(|n| !held[*n as usize])
            .collect();
        let mut claimed = vec![false; cap as usize];
        for i in 0..ROOT_ENTRIES as u32 {
            fib.merge(Loc::Root, i, &target, Loc::Root, &held, &mut claimed);
        }
        // Held nodes the new tables do not use are unreachable now.
        for n in 0..cap {
            if held[n as usize] && !claimed[n as usize] {
                fib.pending.push(n);
            }
        }
        fib.prefixes = target.prefixes;
        fib.counts = target.counts;
        fib.locals = target.locals;
        Ok(fib)
    }

    /// The nodes [`Self::merge`] will create under `loc[i]`.
    fn new_nodes(
        &self,
        loc: Loc,
        i: u32,
        target: &Fib6<MemoryBackend>,
        tloc: Loc,
        held: &[bool],
        claimed: &mut [bool],
    ) -> u32 {
        let (te, ke) = (target.get(tloc, i), self.get(loc, i));
        if te & FIB6_EXT == 0 {
            return 0;
        }
        let tn = Loc::Node(te & !FIB6_EXT);
        let kn = ke & !FIB6_EXT;
        if ke & FIB6_EXT != 0 && held[kn as usize] && !claimed[kn as usize] {
            claimed[kn as usize] = true;
            (0..NODE as u32)
                .map(|j| self.new_nodes(Loc::Node(kn), j, target, tn, held, claimed))
                .sum()
        } else {
            let mut count = 0;
            let mut stack = vec![tn];
            while let Some(n) = stack.pop() {
                count += 1;
                for j in 0..NODE as u32 {
                    let e = target.get(n, j);
                    if e & FIB6_EXT != 0 {
                        stack.push(Loc::Node(e & !FIB6_EXT));
                    }
                }
            }
            count
        }
    }

    /// Makes `loc[i]` answer what `target`'s `tloc[i]` answers, keeping the
    /// held node there when the target has a node too.
    fn merge(
        &mut self,
        loc: Loc,
        i: u32,
        target: &Fib6<MemoryBackend>,
        tloc: Loc,
        held: &[bool],
        claimed: &mut [bool],
    ) {
        let (te, ke) = (target.get(tloc, i), self.get(loc, i));
        if te & FIB6_EXT == 0 {
            if ke != te {
                self.store(loc, i, te);
            }
            self.set_depths(loc, i, target.depths(tloc, i));
            return;
        }
        let tn = Loc::Node(te & !FIB6_EXT);
        let kn = ke & !FIB6_EXT;
        if ke & FIB6_EXT != 0 && held[kn as usize] && !claimed[kn as usize] {
            claimed[kn as usize] = true;
            self.used += 1;
            for j in 0..NODE as u32 {
                self.merge(Loc::Node(kn), j, target, tn, held, claimed);
            }
        } else {
            let n = self.copy(target, tn);
            self.store(loc, i, FIB6_EXT | n);
        }
    }

    /// A new node holding the target's subtree at `tn`, filled below first.
    fn copy(&mut self, target: &Fib6<MemoryBackend>, tn: Loc) -> u32 {
        let n = self.alloc(0, [0; 2]);
        for j in 0..NODE as u32 {
            let te = target.get(tn, j);
            let e = if te & FIB6_EXT != 0 {
                FIB6_EXT | self.copy(target, Loc::Node(te & !FIB6_EXT))
            } else {
                te
            };
            self.backend.set_node(n, j, e);
            self.set_depths(Loc::Node(n), j, target.depths(tn, j));
        }
        n
    }

    /// Checks that every entry answers what the routes, customer prefixes
    /// and local addresses say (per plane, the longest prefix covering all
    /// its addresses), that nodes hold a longer prefix,
    /// and the node count: for tests.
    pub fn audit(&self) -> Result<(), String> {
        let mut linked = 0u32;
        let mut stack: Vec<(Loc, u8, u128)> = vec![(Loc::Root, 0, 0)];
        while let Some((loc, off, base)) = stack.pop() {
            let width = Loc::bits(off);
            let end = off + width;
            let mut deeper = false;
            for i in 0..1u32 << width {
                let bits = base | (u128::from(i) << (128 - u32::from(end)));
                let e = self.get(loc, i);
                if e & FIB6_EXT != 0 {
                    linked += 1;
                    deeper = true;
                    stack.push((Loc::Node(e & !FIB6_EXT), end, bits));
                    continue;
                }
                let want = PLANES.map(|plane| {
                    (0..=end)
                        .rev()
                        .find_map(|l| {
                            self.prefixes[plane as usize][l as usize]
                                .get(&(bits & Prefix6::mask(l)))
                                .map(|v| (*v, l))
                        })
                        .unwrap_or((0, 0))
                });
                let local = end == 128 && self.locals.contains(&bits);
                let want_e =
                    Plane::Customer.with(want[0].0, want[1].0) | if local { FIB6_LOCAL } else { 0 };
                let want_d = [want[0].1, want[1].1];
                if (e, self.depths(loc, i)) != (want_e, want_d) {
                    return Err(format!(
                        "{loc:?}[{i}] ({}/{end}): entry {e:#x} depths {:?}, want {want_e:#x} {want_d:?}",
                        Ipv6Addr::from(bits),
                        self.depths(loc, i)
                    ));
                }
                deeper |= want_d.iter().any(|d| *d > off) || local;
            }
            if loc != Loc::Root && !deeper {
                return Err(format!(
                    "{loc:?} at /{off} holds nothing longer than /{off}"
                ));
            }
        }
        if linked != self.used {
            return Err(format!("{linked} nodes linked, {} counted", self.used));
        }
        Ok(())
    }
}
