//! [`Fib6`]: the routes, the prefix length behind every entry, and the
//! incremental changes of the trie.
use std::collections::HashMap;
use std::net::Ipv6Addr;

use pop_common::fib6::{FIB6_EXT, FIB6_NODE_ENTRIES, FIB6_ROOT_BITS, FIB6_STRIDE};

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
    /// Route record id by network address, one map per prefix length.
    routes: Vec<HashMap<u128, u32>>,
    route_count: usize,
    /// The length of the prefix that answers a non-node entry (0 also for
    /// "no route"; meaningless for a node entry).
    root_depth: Vec<u8>,
    node_depth: Vec<u8>,
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
            routes: vec![HashMap::new(); 129],
            route_count: 0,
            root_depth: vec![0; ROOT_ENTRIES],
            node_depth: vec![0; cap * NODE],
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

    fn depth(&self, loc: Loc, i: u32) -> u8 {
        match loc {
            Loc::Root => self.root_depth[i as usize],
            Loc::Node(n) => self.node_depth[n as usize * NODE + i as usize],
        }
    }

    fn set_depth(&mut self, loc: Loc, i: u32, depth: u8) {
        match loc {
            Loc::Root => self.root_depth[i as usize] = depth,
            Loc::Node(n) => self.node_depth[n as usize * NODE + i as usize] = depth,
        }
    }

    /// Nodes that can be taken now or after a grace period.
    fn nodes_available(&self) -> u32 {
        self.free.len() as u32
            + self.pending.len() as u32
            + (self.backend.node_capacity() - self.fresh)
    }

    /// A node no lookup can be reading, filled with `entry` (prefix length
    /// `depth`) before anything points at it.
    fn alloc(&mut self, entry: u32, depth: u8) -> u32 {
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
            self.set_depth(Loc::Node(n), j, depth);
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
                let n = self.alloc(e, self.depth(loc, i));
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

    /// Points every address under `loc[i]` that no prefix longer than `len`
    /// answers at `id`.
    fn cover(&mut self, loc: Loc, i: u32, id: u32, len: u8) {
        let e = self.get(loc, i);
        if e & FIB6_EXT != 0 {
            for j in 0..NODE as u32 {
                self.cover(Loc::Node(e & !FIB6_EXT), j, id, len);
            }
        } else if self.depth(loc, i) <= len {
            if e != id {
                self.store(loc, i, id);
            }
            self.set_depth(loc, i, len);
        }
    }

    /// Hands every address under `loc[i]` that the `len`-long prefix answered
    /// to `id` (prefix length `id_len`).
    fn uncover(&mut self, loc: Loc, i: u32, len: u8, id: u32, id_len: u8) {
        let e = self.get(loc, i);
        if e & FIB6_EXT != 0 {
            for j in 0..NODE as u32 {
                self.uncover(Loc::Node(e & !FIB6_EXT), j, len, id, id_len);
            }
        } else if self.depth(loc, i) == len {
            if e != id {
                self.store(loc, i, id);
            }
            self.set_depth(loc, i, id_len);
        }
    }

    fn check_id(p: Prefix6, id: u32) -> Result<(), Fib6Error> {
        if id == 0 || id & FIB6_EXT != 0 {
            return Err(Fib6Error::RecordId { prefix: p, id });
        }
        Ok(())
    }

    /// Adds or replaces the route of `p` (its answer: route record `id`,
    /// 1..2^31). Refused whole if the nodes it needs are not free.
    pub fn set_route(&mut self, p: Prefix6, id: u32) -> Result<(), Fib6Error> {
        Self::check_id(p, id)?;
        let needed = self.nodes_needed(p);
        let free = self.nodes_available();
        if needed > free {
            return Err(Fib6Error::NodesFull {
                prefix: p,
                needed,
                free,
                limit: self.backend.node_capacity(),
            });
        }
        if self.routes[p.len as usize].insert(p.bits, id).is_none() {
            self.route_count += 1;
        }
        let (loc, off, _) = self.descend(p, true).expect("nodes are created");
        for i in Self::span(p, off) {
            self.cover(loc, i, id, p.len);
        }
        Ok(())
    }

    /// Removes the route of `p`; false if there was none.
    pub fn del_route(&mut self, p: Prefix6) -> Result<bool, Fib6Error> {
        if self.routes[p.len as usize].remove(&p.bits).is_none() {
            return Ok(false);
        }
        self.route_count -= 1;
        let (id, id_len) = (0..p.len)
            .rev()
            .find_map(|l| {
                let r = self.routes[l as usize].get(&(p.bits & Prefix6::mask(l)));
                r.map(|id| (*id, l))
            })
            .unwrap_or((0, 0));
        let Some((loc, off, steps)) = self.descend(p, false) else {
            debug_assert!(false, "fib6: route {p} had no path");
            return Ok(true);
        };
        for i in Self::span(p, off) {
            self.uncover(loc, i, p.len, id, id_len);
        }
        // Nodes on the path that one prefix now answers whole fold back into
        // their parent entry: the parent first, the node after a grace period.
        for step in steps.iter().rev() {
            let n = Loc::Node(step.node);
            let (e, d) = (self.get(n, 0), self.depth(n, 0));
            let uniform = e & FIB6_EXT == 0
                && d <= step.off
                && (1..NODE as u32).all(|j| self.get(n, j) == e && self.depth(n, j) == d);
            if !uniform {
                break;
            }
            self.store(step.parent, step.parent_index, e);
            self.set_depth(step.parent, step.parent_index, d);
            self.retire(step.node);
        }
        Ok(true)
    }

    /// The route record id of exactly `p`.
    pub fn route(&self, p: Prefix6) -> Option<u32> {
        self.routes[p.len as usize].get(&p.bits).copied()
    }

    /// Every route held, in no order.
    pub fn routes(&self) -> impl Iterator<Item = (Prefix6, u32)> + '_ {
        self.routes.iter().enumerate().flat_map(|(len, m)| {
            m.iter().map(move |(bits, id)| {
                (
                    Prefix6 {
                        bits: *bits,
                        len: len as u8,
                    },
                    *id,
                )
            })
        })
    }

    /// The route record id the data plane finds for `addr` (0: none): the
    /// tables walked as `fib6_lookup` walks them.
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
            routes: self.route_count,
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
            } else if e < capacity {
                used[e as usize] = true;
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
    /// pinned, and makes them hold exactly `routes`, writing only the entries
    /// that differ: the pinned entries keep forwarding meanwhile. Nodes the
    /// old tables used and the new ones do not are reused after a grace period.
    pub fn adopt(
        backend: B,
        routes: impl IntoIterator<Item = (Prefix6, u32)>,
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
        fib.routes = target.routes;
        fib.route_count = target.route_count;
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
            self.set_depth(loc, i, target.depth(tloc, i));
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
        let n = self.alloc(0, 0);
        for j in 0..NODE as u32 {
            let te = target.get(tn, j);
            let e = if te & FIB6_EXT != 0 {
                FIB6_EXT | self.copy(target, Loc::Node(te & !FIB6_EXT))
            } else {
                te
            };
            self.backend.set_node(n, j, e);
            self.set_depth(Loc::Node(n), j, target.depth(tn, j));
        }
        n
    }

    /// Checks that every entry answers what the routes say (the longest
    /// prefix covering all its addresses), that nodes hold a longer prefix,
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
                let want = (0..=end)
                    .rev()
                    .find_map(|l| {
                        self.routes[l as usize]
                            .get(&(bits & Prefix6::mask(l)))
                            .map(|id| (*id, l))
                    })
                    .unwrap_or((0, 0));
                if (e, self.depth(loc, i)) != want {
                    return Err(format!(
                        "{loc:?}[{i}] ({}/{end}): entry {e} depth {}, want {want:?}",
                        Ipv6Addr::from(bits),
                        self.depth(loc, i)
                    ));
                }
                deeper |= want.1 > off;
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
