//! The IPv6 FIB against a reference longest-prefix match, on hand-made and
//! random tables and changes, with the write order checked after every store.
use std::collections::{HashMap, HashSet};
use std::net::Ipv6Addr;

use pop_common::fib6::FIB6_EXT;

use super::*;
use crate::dataplane::fib4::tests::Rng;

/// The obvious longest-prefix match: one hash map per length, longest first.
#[derive(Default, Clone)]
struct Reference(Vec<HashMap<u128, u32>>);

impl Reference {
    fn new() -> Self {
        Self(vec![HashMap::new(); 129])
    }
    fn answer(&self, addr: u128) -> u32 {
        (0..=128u8)
            .rev()
            .find_map(|l| self.0[l as usize].get(&(addr & Prefix6::mask(l))).copied())
            .unwrap_or(0)
    }
}

fn p(text: &str) -> Prefix6 {
    let (a, l) = text.split_once('/').unwrap();
    Prefix6::new(a.parse().unwrap(), l.parse().unwrap()).unwrap()
}

fn ip(text: &str) -> Ipv6Addr {
    text.parse().unwrap()
}

#[test]
fn prefixes_and_ids_are_checked() {
    assert_eq!(
        Prefix6::new(ip("2001:db8::"), 129).unwrap_err().to_string(),
        "prefix 2001:db8::/129: prefix length 129 exceeds 128"
    );
    assert_eq!(
        Prefix6::new(ip("2001:db8::1"), 64).unwrap_err().to_string(),
        "prefix 2001:db8::1/64: host bits set (the network is 2001:db8::/64)"
    );
    let mut fib = Fib6::new(MemoryBackend::new(8));
    assert!(matches!(
        fib.set_route(p("2001:db8::/32"), 0),
        Err(Fib6Error::RecordId { id: 0, .. })
    ));
    assert!(matches!(
        fib.set_route(p("2001:db8::/32"), FIB6_EXT | 1),
        Err(Fib6Error::RecordId { .. })
    ));
    // An entry holds 16 bits of the record id and 14 of the customer id.
    assert!(matches!(
        fib.set_route(p("2001:db8::/32"), 65536),
        Err(Fib6Error::RecordId { .. })
    ));
    assert_eq!(
        fib.set_customer(p("2001:db8::/32"), 16384)
            .unwrap_err()
            .to_string(),
        "customer prefix 2001:db8::/32: customer id 16384 is not in 1..16383"
    );
    assert_eq!(fib.stats().nodes_used, 0);
}

#[test]
fn routes_nest_and_deletion_falls_back_and_folds_nodes() {
    let mut fib = Fib6::new(MemoryBackend::new(64));
    fib.set_route(p("2000::/3"), 1).unwrap();
    fib.set_route(p("2001:db8::/32"), 2).unwrap();
    fib.set_route(p("2001:db8:1::/48"), 3).unwrap();
    fib.set_route(p("2001:db8:1:2::7/128"), 4).unwrap();
    assert_eq!(fib.lookup(ip("2400::1")), 1);
    assert_eq!(fib.lookup(ip("2001:db8:2::1")), 2);
    assert_eq!(fib.lookup(ip("2001:db8:1:2::6")), 3);
    assert_eq!(fib.lookup(ip("2001:db8:1:2::7")), 4);
    assert_eq!(fib.lookup(ip("4000::1")), 0);
    // /32: 3 nodes below /20; /48: 4 more; the /128: 20 more.
    assert_eq!(fib.stats().nodes_used, 3 + 4 + 20);
    fib.audit().unwrap();

    assert!(fib.del_route(p("2001:db8::/32")).unwrap());
    assert_eq!(fib.lookup(ip("2001:db8:2::1")), 1);
    assert_eq!(fib.lookup(ip("2001:db8:1::1")), 3);
    assert!(!fib.del_route(p("2001:db8::/32")).unwrap());
    fib.del_route(p("2001:db8:1:2::7/128")).unwrap();
    assert_eq!(fib.lookup(ip("2001:db8:1:2::7")), 3);
    assert_eq!(fib.stats().nodes_used, 7, "the /128's nodes folded back");
    fib.del_route(p("2001:db8:1::/48")).unwrap();
    assert_eq!(fib.stats().nodes_used, 0);
    assert_eq!(fib.lookup(ip("2001:db8:1::1")), 1);

    // ::/0 and a replacement.
    fib.set_route(p("::/0"), 5).unwrap();
    fib.set_route(p("2000::/3"), 6).unwrap();
    assert_eq!(fib.lookup(ip("ffff::1")), 5);
    assert_eq!(fib.lookup(ip("2001::1")), 6);
    fib.del_route(p("::/0")).unwrap();
    fib.del_route(p("2000::/3")).unwrap();
    assert_eq!(fib.lookup(ip("2001::1")), 0);
    assert_eq!(fib.stats().routes, 0);
    fib.audit().unwrap();
}

#[test]
fn a_full_node_table_refuses_and_changes_nothing() {
    let mut fib = Fib6::new(MemoryBackend::new(6));
    fib.set_route(p("2001:db8::/32"), 1).unwrap(); // nodes at bits 20, 24, 28
    fib.set_route(p("2001:db8:f000::/40"), 2).unwrap(); // 32, 36
    let err = fib.set_route(p("2001:db8:1::/48"), 3).unwrap_err();
    assert_eq!(
        err,
        Fib6Error::NodesFull {
            what: "route",
            prefix: p("2001:db8:1::/48"),
            needed: 3,
            free: 1,
            limit: 6
        }
    );
    assert_eq!(
        err.to_string(),
        "route 2001:db8:1::/48: needs 3 more trie nodes, but only 1 of 6 are free (map fib6_nodes)"
    );
    assert_eq!(fib.lookup(ip("2001:db8:1::1")), 1);
    assert_eq!(fib.route(p("2001:db8:1::/48")), None);
    assert_eq!(fib.stats().nodes_used, 5);
    fib.audit().unwrap();
    // Freed nodes are reused (after a grace period).
    fib.del_route(p("2001:db8:f000::/40")).unwrap();
    fib.set_route(p("2001:db8:10::/44"), 3).unwrap();
    assert_eq!(fib.lookup(ip("2001:db8:1f::1")), 3);
    assert_eq!(fib.stats().nodes_used, 6);
    fib.audit().unwrap();
}

/// A prefix of the shapes the trie meets, around a few hot spots so that
/// changes nest and share nodes.
fn random_prefix(rng: &mut Rng) -> Prefix6 {
    let base = [
        0x2001_0db8u128 << 96,
        0x2a00_1450u128 << 96,
        0x2600u128 << 112,
    ][rng.below(3) as usize];
    let len = [
        0u8, 3, 16, 19, 20, 21, 24, 29, 32, 33, 36, 40, 44, 47, 48, 56, 64, 127, 128,
    ][rng.below(19) as usize];
    // Few distinct bits below the base, so prefixes collide and nest.
    let noise = (u128::from(rng.below(4)) << 90)
        | (u128::from(rng.below(4)) << 78)
        | (u128::from(rng.below(2)) << 64)
        | u128::from(rng.below(3));
    let bits = (base | noise) & Prefix6::mask(len);
    Prefix6::new(bits.into(), len).unwrap()
}

fn random_probe(rng: &mut Rng, near: Prefix6) -> u128 {
    let host = !Prefix6::mask(near.prefix_len());
    let low = match rng.below(3) {
        0 => 0,
        1 => u128::MAX,
        _ => (u128::from(rng.next()) << 64) | u128::from(rng.next()),
    };
    near.bits() | (low & host)
}

#[test]
fn random_changes_agree_with_the_reference() {
    let mut rng = Rng::new(3);
    let mut fib = Fib6::new(MemoryBackend::new(4096));
    let mut reference = Reference::new();
    let ops = if cfg!(debug_assertions) { 400 } else { 4000 };
    for op in 0..ops {
        let prefix = random_prefix(&mut rng);
        let (bits, len) = (prefix.bits(), prefix.prefix_len() as usize);
        if rng.below(3) == 0 {
            let had = reference.0[len].remove(&bits).is_some();
            assert_eq!(fib.del_route(prefix).unwrap(), had);
        } else {
            let id = 1 + rng.below(5) as u32;
            fib.set_route(prefix, id).unwrap();
            reference.0[len].insert(bits, id);
        }
        for _ in 0..20 {
            let near = random_prefix(&mut rng);
            let a = random_probe(&mut rng, near);
            assert_eq!(
                fib.lookup(a.into()),
                reference.answer(a),
                "op {op}: {}",
                Ipv6Addr::from(a)
            );
        }
        if op % 100 == 0 {
            fib.audit().unwrap();
        }
    }
    fib.audit().unwrap();
    // Everything out again: no node left.
    for (l, m) in reference.0.iter().enumerate() {
        for b in m.keys() {
            fib.del_route(Prefix6::new((*b).into(), l as u8).unwrap())
                .unwrap();
        }
    }
    assert_eq!(fib.stats().nodes_used, 0);
    fib.audit().unwrap();
}

/// Routes, customer prefixes and local addresses share the entries: each
/// field of every answer is its own plane's longest match, whatever the
/// others do, and removing everything leaves no node.
#[test]
fn routes_customers_and_locals_answer_independently() {
    let mut rng = Rng::new(7);
    let mut fib = Fib6::new(MemoryBackend::new(8192));
    let (mut routes, mut customers) = (Reference::new(), Reference::new());
    let mut locals: HashSet<u128> = HashSet::new();
    let ops = if cfg!(debug_assertions) { 300 } else { 3000 };
    for op in 0..ops {
        let prefix = random_prefix(&mut rng);
        let (bits, len) = (prefix.bits(), prefix.prefix_len() as usize);
        match rng.below(6) {
            0 => {
                let had = routes.0[len].remove(&bits).is_some();
                assert_eq!(fib.del_route(prefix).unwrap(), had);
            }
            1 => {
                let id = 1 + rng.below(5) as u32;
                fib.set_route(prefix, id).unwrap();
                routes.0[len].insert(bits, id);
            }
            2 => {
                let had = customers.0[len].remove(&bits).is_some();
                assert_eq!(fib.del_customer(prefix).unwrap(), had);
            }
            3 => {
                let id = [1, 2, 16383][rng.below(3) as usize];
                fib.set_customer(prefix, id).unwrap();
                customers.0[len].insert(bits, id);
            }
            4 => {
                let a = random_probe(&mut rng, prefix);
                fib.set_local(a.into()).unwrap();
                locals.insert(a);
            }
            _ => {
                if let Some(a) = locals.iter().next().copied() {
                    assert!(fib.del_local(a.into()).unwrap());
                    locals.remove(&a);
                }
            }
        }
        for i in 0..20 {
            let a = if i == 0 && !locals.is_empty() {
                *locals.iter().next().unwrap()
            } else {
                let near = random_prefix(&mut rng);
                random_probe(&mut rng, near)
            };
            let e = fib.lookup(a.into());
            let what = format!("op {op}: {}", Ipv6Addr::from(a));
            assert_eq!(entry_route(e), routes.answer(a), "route, {what}");
            assert_eq!(entry_customer(e), customers.answer(a), "customer, {what}");
            assert_eq!(entry_local(e), locals.contains(&a), "local, {what}");
        }
        if op % 1000 == 150 {
            fib.audit().unwrap();
        }
    }
    fib.audit().unwrap();
    let stats = fib.stats();
    assert_eq!(stats.locals, locals.len());
    // A restarted writer adopts these tables with the same contents and
    // writes nothing.
    let (r, c, l): (Vec<_>, Vec<_>, Vec<_>) = (
        fib.routes().collect(),
        fib.customers().collect(),
        fib.locals().collect(),
    );
    let (before, used) = (fib.backend().clone(), stats.nodes_used);
    let adopted = Fib6::adopt_all(fib.into_backend(), r.clone(), c.clone(), l.clone()).unwrap();
    adopted.audit().unwrap();
    assert!(adopted.backend() == &before, "adoption rewrote entries");
    assert_eq!(adopted.stats().nodes_used, used);
    assert!(adopted.pending.is_empty(), "no node replaced");
    let mut fib = adopted;
    for (p, _) in r {
        fib.del_route(p).unwrap();
    }
    for (p, _) in c {
        fib.del_customer(p).unwrap();
    }
    for a in l {
        fib.del_local(a).unwrap();
    }
    assert_eq!(fib.stats().nodes_used, 0);
    fib.audit().unwrap();
}

/// A customer prefix or local address that needs more nodes than are free
/// is refused whole, naming what it is.
#[test]
fn customers_and_locals_are_refused_when_nodes_are_full() {
    let mut fib = Fib6::new(MemoryBackend::new(3));
    fib.set_route(p("2001:db8::/32"), 1).unwrap(); // 3 nodes
    assert_eq!(
        fib.set_customer(p("2001:db8:a::/48"), 5)
            .unwrap_err()
            .to_string(),
        "customer prefix 2001:db8:a::/48: needs 4 more trie nodes, but only 0 of 3 are free \
         (map fib6_nodes)"
    );
    assert_eq!(
        fib.set_local(ip("2001:db8::1")).unwrap_err().to_string(),
        "local address 2001:db8::1/128: needs 24 more trie nodes, but only 0 of 3 are free \
         (map fib6_nodes)"
    );
    assert_eq!(fib.lookup(ip("2001:db8:a::1")), 1);
    assert_eq!(fib.customer(p("2001:db8:a::/48")), None);
    assert!(!fib.is_local(ip("2001:db8::1")));
    // A customer prefix at the route's level needs no node.
    fib.set_customer(p("2001:db8::/32"), 5).unwrap();
    assert_eq!(entry_customer(fib.lookup(ip("2001:db8:a::1"))), 5);
    fib.audit().unwrap();
}

/// A backend that checks, after every store, what concurrent lookups could
/// see: each probe answers its answer before or after the change, and no
/// node a lookup may still hold is rewritten for another use before
/// [`Fib6Backend::wait_for_readers`].
struct Checked {
    inner: MemoryBackend,
    probes: Vec<(u128, u32, u32)>,
    held: HashSet<u32>,
    /// Where each node was last linked: (parent node or None for the root, entry).
    parents: HashMap<u32, (Option<u32>, u32)>,
    grace_periods: u32,
    stores: u64,
}

impl Checked {
    fn new(nodes: u32) -> Self {
        Self {
            inner: MemoryBackend::new(nodes),
            probes: vec![],
            held: HashSet::new(),
            parents: HashMap::new(),
            grace_periods: 0,
            stores: 0,
        }
    }

    /// Whether `n` is reachable from the root now.
    fn linked(&self, mut n: u32) -> bool {
        loop {
            let Some(&(parent, i)) = self.parents.get(&n) else {
                return false;
            };
            let e = match parent {
                None => self.inner.root(i),
                Some(p) => self.inner.node(p, i),
            };
            if e != FIB6_EXT | n {
                return false;
            }
            match parent {
                None => return true,
                Some(p) => n = p,
            }
        }
    }

    fn link(&mut self, parent: Option<u32>, i: u32, entry: u32) {
        if entry & FIB6_EXT != 0 {
            self.parents.insert(entry & !FIB6_EXT, (parent, i));
        }
    }

    fn observe(&mut self) {
        self.stores += 1;
        for &(addr, before, after) in &self.probes {
            let mut e = self.inner.root((addr >> 108) as u32);
            let mut off = 20;
            while e & FIB6_EXT != 0 {
                self.held.insert(e & !FIB6_EXT);
                e = self
                    .inner
                    .node(e & !FIB6_EXT, ((addr >> (124 - off)) & 0xf) as u32);
                off += 4;
            }
            assert!(
                e == before || e == after,
                "store {}: {} answers {e}, neither {before} nor {after}",
                self.stores,
                Ipv6Addr::from(addr)
            );
        }
    }
}

impl Fib6Backend for Checked {
    fn node_capacity(&self) -> u32 {
        self.inner.node_capacity()
    }
    fn root(&self, slot: u32) -> u32 {
        self.inner.root(slot)
    }
    fn set_root(&mut self, slot: u32, entry: u32) {
        self.inner.set_root(slot, entry);
        self.link(None, slot, entry);
        self.observe();
    }
    fn node(&self, node: u32, index: u32) -> u32 {
        self.inner.node(node, index)
    }
    fn set_node(&mut self, node: u32, index: u32, entry: u32) {
        if self.held.contains(&node) && !self.linked(node) {
            panic!("node {node} rewritten while a lookup may still read it");
        }
        self.inner.set_node(node, index, entry);
        self.link(Some(node), index, entry);
        self.observe();
    }
    fn wait_for_readers(&mut self) {
        self.grace_periods += 1;
        self.held.clear();
    }
}

fn probed_changes<B: Fib6Backend + AsMut<Checked>>(fib: &mut Fib6<B>, seed: u64, ops: usize) {
    let mut rng = Rng::new(seed);
    let mut reference = Reference::new();
    let mut done = 0;
    while done < ops {
        let prefix = random_prefix(&mut rng);
        if !(16..=64).contains(&prefix.prefix_len()) {
            continue; // keep the per-store probing cheap, and nodes few
        }
        let probes: Vec<u128> = (0..12).map(|_| random_probe(&mut rng, prefix)).collect();
        let mut after = reference.clone();
        let (bits, len) = (prefix.bits(), prefix.prefix_len() as usize);
        let set = rng.below(3) != 0;
        let id = 1 + rng.below(4) as u32;
        if set {
            after.0[len].insert(bits, id);
        } else {
            after.0[len].remove(&bits);
        }
        fib.backend_mut().as_mut().probes = probes
            .iter()
            .map(|a| (*a, reference.answer(*a), after.answer(*a)))
            .collect();
        let result = if set {
            fib.set_route(prefix, id)
        } else {
            fib.del_route(prefix).map(drop)
        };
        match result {
            Ok(()) => reference = after,
            Err(Fib6Error::NodesFull { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        done += 1;
    }
}

#[test]
fn every_store_leaves_lookups_consistent() {
    // Few nodes, so they are freed and reused often.
    let mut fib = Fib6::new(Checked::new(24));
    let ops = if cfg!(debug_assertions) { 150 } else { 1500 };
    probed_changes(&mut fib, 7, ops);
    assert!(fib.backend().grace_periods > 0, "nodes were reused");
    assert!(fib.backend().stores > 1000);
    fib.audit().unwrap();
}

impl AsMut<Checked> for Checked {
    fn as_mut(&mut self) -> &mut Checked {
        self
    }
}

/// A writer that skips the grace period: the checker must catch it.
struct NoGrace(Checked);

impl Fib6Backend for NoGrace {
    fn node_capacity(&self) -> u32 {
        self.0.node_capacity()
    }
    fn root(&self, slot: u32) -> u32 {
        self.0.root(slot)
    }
    fn set_root(&mut self, slot: u32, entry: u32) {
        self.0.set_root(slot, entry)
    }
    fn node(&self, node: u32, index: u32) -> u32 {
        self.0.node(node, index)
    }
    fn set_node(&mut self, node: u32, index: u32, entry: u32) {
        self.0.set_node(node, index, entry)
    }
    fn wait_for_readers(&mut self) {
        // Pretends the grace period passed without clearing what probes hold.
        self.0.grace_periods += 1;
    }
}

impl AsMut<Checked> for NoGrace {
    fn as_mut(&mut self) -> &mut Checked {
        &mut self.0
    }
}

#[test]
fn the_store_checker_catches_early_reuse() {
    let caught = std::panic::catch_unwind(|| {
        let mut fib = Fib6::new(NoGrace(Checked::new(24)));
        probed_changes(&mut fib, 7, 1500);
    });
    let message = caught.expect_err("reuse without a grace period went unnoticed");
    let text = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        text.contains("rewritten while a lookup may still read it"),
        "{text}"
    );
}

#[test]
fn adopted_tables_resync_writing_only_differences() {
    let mut rng = Rng::new(11);
    let mut fib = Fib6::new(MemoryBackend::new(4096));
    for _ in 0..300 {
        let prefix = random_prefix(&mut rng);
        fib.set_route(prefix, 1 + rng.below(5) as u32).unwrap();
    }
    let routes: Vec<_> = fib.routes().collect();
    let used = fib.stats().nodes_used;
    // The same routes: adopted in place, every node kept.
    let backend = fib.into_backend();
    let adopted = Fib6::adopt(backend, routes.clone()).unwrap();
    adopted.audit().unwrap();
    assert_eq!(adopted.stats().nodes_used, used);
    assert!(adopted.pending.is_empty(), "no node replaced");
    // Other routes: the differences are written, old nodes go after a grace period.
    let fewer: Vec<_> = routes.iter().copied().step_by(2).collect();
    let mut again = Fib6::adopt(adopted.into_backend(), fewer.clone()).unwrap();
    again.audit().unwrap();
    let mut reference = Reference::new();
    for (p, id) in &fewer {
        reference.0[p.prefix_len() as usize].insert(p.bits(), *id);
    }
    for _ in 0..2000 {
        let near = random_prefix(&mut rng);
        let a = random_probe(&mut rng, near);
        assert_eq!(again.lookup(a.into()), reference.answer(a));
    }
    again.set_route(p("2001:db8:ffff::/48"), 9).unwrap();
    again.audit().unwrap();
}

/// The nodes of `fib` in depth-first order (root entries in address order,
/// each node before its children, children in address order).
fn nodes_depth_first<B: Fib6Backend>(fib: &Fib6<B>) -> Vec<u32> {
    fn visit<B: Fib6Backend>(b: &B, n: u32, out: &mut Vec<u32>) {
        out.push(n);
        for j in 0..pop_common::fib6::FIB6_NODE_ENTRIES {
            let e = b.node(n, j);
            if e & FIB6_EXT != 0 {
                visit(b, e & !FIB6_EXT, out);
            }
        }
    }
    let mut out = Vec::new();
    for i in 0..ROOT_ENTRIES as u32 {
        let e = fib.backend().root(i);
        if e & FIB6_EXT != 0 {
            visit(fib.backend(), e & !FIB6_EXT, &mut out);
        }
    }
    out
}

/// popd writes IPv6 routes in bulk (a dump, a restart, an upgrade's fill) in
/// prefix order so that the trie's nodes come out depth-first: a subtree's
/// nodes are neighbours in `fib6_nodes`, which makes the walk at 200k routes
/// about 25% faster (docs/fib.md). The same routes in shuffled order give
/// the same answers with the same number of nodes, but not that layout.
#[test]
fn routes_written_in_prefix_order_get_their_nodes_depth_first() {
    let mut rng = Rng::new(0x0de7_0de7);
    let mut routes: Vec<(Prefix6, u32)> = Vec::new();
    let mut seen = HashSet::new();
    while routes.len() < 3000 {
        // Clustered like the bench's table: /32 allocations, /40s in them,
        // mostly /48s, some shorter and longer.
        let alloc = 0x2000_0000u128 | u128::from(rng.below(64) as u32 * 0x0001_0400);
        let bits =
            (alloc << 96) | (u128::from(rng.below(8)) << 88) | (u128::from(rng.next()) << 56);
        let len = [48u8, 48, 48, 32, 36, 40, 44, 52, 56, 64][rng.below(10) as usize];
        let p = Prefix6::new((bits & Prefix6::mask(len)).into(), len).unwrap();
        if seen.insert(p) {
            routes.push((p, 1 + rng.below(100) as u32));
        }
    }
    let mut shuffled = routes.clone();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut sorted = routes.clone();
    sorted.sort_unstable();
    let mut in_order = Fib6::new(MemoryBackend::new(65536));
    let mut hashed = Fib6::new(MemoryBackend::new(65536));
    for &(p, id) in &sorted {
        in_order.set_route(p, id).unwrap();
    }
    for &(p, id) in &shuffled {
        hashed.set_route(p, id).unwrap();
    }
    let walk = nodes_depth_first(&in_order);
    assert_eq!(walk.len() as u32, in_order.stats().nodes_used);
    assert!(
        walk.iter().enumerate().all(|(i, n)| *n == i as u32),
        "written in prefix order, node i is the i-th of a depth-first walk"
    );
    let other = nodes_depth_first(&hashed);
    assert_eq!(other.len(), walk.len(), "the same number of nodes");
    assert!(
        other.iter().enumerate().any(|(i, n)| *n != i as u32),
        "shuffled, the nodes are not in depth-first order (the check can fail)"
    );
    for _ in 0..20_000 {
        let near = routes[rng.below(routes.len() as u64) as usize].0;
        let a = random_probe(&mut rng, near);
        assert_eq!(
            in_order.lookup(a.into()),
            hashed.lookup(a.into()),
            "{}",
            Ipv6Addr::from(a)
        );
    }
    in_order.audit().unwrap();
    hashed.audit().unwrap();
}

/// Where a walk's nodes lie, for tables of the bench's shape written in
/// different orders (docs/fib.md "Compaction into depth-first order:
/// measured, not built"). Prints, per lookup of a random route's address:
/// the nodes loaded, the distinct 4 KB pages they lie on, and the steps from
/// a node to a child on another page. Run with `--ignored --nocapture`.
#[test]
#[ignore = "a measurement: prints, asserts nothing about speed"]
fn layout_of_walks_by_write_order() {
    const N: usize = 200_000;
    let mut rng = Rng::new(0x5eed_0001);
    let mut routes: Vec<(Prefix6, u32)> = Vec::with_capacity(N);
    let mut seen = HashSet::new();
    while routes.len() < N {
        // pop-bench's IPv6 table: 16384 /32 allocations, 8 /40s in each,
        // 70% /48, 20% /32-/47, 10% /49-/64.
        let len = match rng.below(100) {
            0..=69 => 48,
            70..=89 => 32 + rng.below(16) as u8,
            _ => 49 + rng.below(16) as u8,
        };
        let alloc = rng.below(16_384).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 35;
        let top = 0x2000_0000u128 | u128::from(alloc as u32 & 0x1fff_ffff);
        let bits =
            (top << 96) | (u128::from(rng.below(8)) << 88) | (u128::from(rng.next() as u32) << 56);
        let p = Prefix6::new((bits & Prefix6::mask(len)).into(), len).unwrap();
        if seen.insert(p) {
            routes.push((p, 1));
        }
    }
    let probes: Vec<u128> = (0..65_536)
        .map(|_| {
            let near = routes[rng.below(N as u64) as usize].0;
            random_probe(&mut rng, near)
        })
        .collect();
    let write = |batch: usize, halves: bool| {
        let mut fib = Fib6::new(MemoryBackend::new(pop_common::fib6::FIB6_MAX_NODES));
        let parts: Vec<&[(Prefix6, u32)]> = if halves {
            vec![&routes[..N / 2], &routes[N / 2..]]
        } else {
            vec![&routes[..]]
        };
        for part in parts {
            for chunk in part.chunks(batch) {
                let mut sorted = chunk.to_vec();
                sorted.sort_unstable();
                for &(p, id) in &sorted {
                    fib.set_route(p, id).unwrap();
                }
            }
        }
        fib
    };
    let cases = [
        ("one write of 200k", write(N, false)),
        ("two writes of 100k", write(N / 2, true)),
        ("200 writes of 1000", write(1000, false)),
        ("one route at a time", write(1, false)),
    ];
    for (name, fib) in &cases {
        let (mut nodes, mut pages, mut jumps) = (0u64, 0u64, 0u64);
        for &a in &probes {
            let b = fib.backend();
            let mut e = b.root((a >> 108) as u32);
            let mut shift = 108;
            let mut seen_pages = HashSet::new();
            let mut last_page = None;
            while e & FIB6_EXT != 0 {
                let n = e & !FIB6_EXT;
                let page = n / 64;
                nodes += 1;
                seen_pages.insert(page);
                if last_page.is_some_and(|l| l != page) {
                    jumps += 1;
                }
                last_page = Some(page);
                shift -= 4;
                e = b.node(n, ((a >> shift) & 0xf) as u32);
            }
            pages += seen_pages.len() as u64;
        }
        let k = probes.len() as f64;
        println!(
            "{name}: {} nodes; per lookup {:.2} nodes, {:.2} pages, {:.2} page changes",
            fib.stats().nodes_used,
            nodes as f64 / k,
            pages as f64 / k,
            jumps as f64 / k
        );
    }
}
