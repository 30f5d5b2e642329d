//! The FIB against a reference longest-prefix match, on hand-made and random
//! tables and changes, with the write order checked after every store.
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use pop_common::fib4::{PopFib4Result, FIB4_EXT};

use super::*;
pub(crate) use crate::test_rng::Rng;

/// xorshift64*: deterministic, seedable, no dependency.
/// The obvious longest-prefix match: one hash map per length, longest first.
#[derive(Default, Clone)]
struct Reference {
    routes: Vec<HashMap<u32, RouteTarget>>,
    customers: Vec<HashMap<u32, u32>>,
    locals: HashMap<u32, LocalKind>,
}

impl Reference {
    fn new() -> Self {
        Self {
            routes: vec![HashMap::new(); 33],
            customers: vec![HashMap::new(); 33],
            locals: HashMap::new(),
        }
    }

    fn answer(&self, addr: u32) -> Fib4Answer {
        fn lpm<V: Copy>(per_len: &[HashMap<u32, V>], addr: u32) -> Option<V> {
            (0..=32u8).rev().find_map(|len| {
                per_len[len as usize]
                    .get(&(addr & Prefix4::mask(len)))
                    .copied()
            })
        }
        Fib4Answer {
            route: lpm(&self.routes, addr),
            customer_id: lpm(&self.customers, addr).unwrap_or(0),
            local: self.locals.get(&addr).copied(),
        }
    }
}

fn p(text: &str) -> Prefix4 {
    let (a, l) = text.split_once('/').unwrap();
    Prefix4::new(a.parse().unwrap(), l.parse().unwrap()).unwrap()
}

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn small() -> Fib4<MemoryBackend> {
    Fib4::new(MemoryBackend::new(64, 1024))
}

const G1: RouteTarget = RouteTarget::Group(1);
const G2: RouteTarget = RouteTarget::Group(2);
const G3: RouteTarget = RouteTarget::Group(3);

fn route(t: RouteTarget) -> Fib4Answer {
    Fib4Answer {
        route: Some(t),
        ..Default::default()
    }
}

#[test]
fn prefixes_are_checked() {
    assert_eq!(
        Prefix4::new(ip("10.0.0.0"), 33).unwrap_err().to_string(),
        "prefix 10.0.0.0/33: prefix length 33 exceeds 32"
    );
    assert_eq!(
        Prefix4::new(ip("10.0.0.1"), 24).unwrap_err().to_string(),
        "prefix 10.0.0.1/24: host bits set (the network is 10.0.0.0/24)"
    );
    assert_eq!(p("0.0.0.0/0").last(), u64::from(u32::MAX));
    let mut fib = small();
    assert!(matches!(
        fib.set_customer(p("10.0.0.0/8"), 0),
        Err(Fib4Error::CustomerIdZero { .. })
    ));
}

#[test]
fn routes_nest_and_deletion_falls_back() {
    let mut fib = small();
    fib.set_route(p("10.0.0.0/8"), G1).unwrap();
    fib.set_route(p("10.1.0.0/16"), G2).unwrap();
    fib.set_route(p("10.1.2.128/25"), G3).unwrap();
    fib.set_route(p("10.1.2.7/32"), RouteTarget::Blackhole)
        .unwrap();
    assert_eq!(fib.lookup(ip("10.200.0.1")), route(G1));
    assert_eq!(fib.lookup(ip("10.1.0.1")), route(G2));
    assert_eq!(fib.lookup(ip("10.1.2.127")), route(G2));
    assert_eq!(fib.lookup(ip("10.1.2.128")), route(G3));
    assert_eq!(fib.lookup(ip("10.1.2.255")), route(G3));
    assert_eq!(fib.lookup(ip("10.1.2.7")), route(RouteTarget::Blackhole));
    assert_eq!(fib.lookup(ip("11.0.0.0")), Fib4Answer::default());
    assert_eq!(fib.stats().groups_used, 1, "one split /24: 10.1.2.0");

    // The /16 goes: its addresses, also those in the split /24, fall back to the /8.
    assert!(fib.del_route(p("10.1.0.0/16")).unwrap());
    assert_eq!(fib.lookup(ip("10.1.0.1")), route(G1));
    assert_eq!(fib.lookup(ip("10.1.2.127")), route(G1));
    assert_eq!(fib.lookup(ip("10.1.2.128")), route(G3));
    assert!(!fib.del_route(p("10.1.0.0/16")).unwrap());

    // Without the longer prefixes the /24 collapses back to one entry.
    fib.del_route(p("10.1.2.128/25")).unwrap();
    fib.del_route(p("10.1.2.7/32")).unwrap();
    assert_eq!(fib.lookup(ip("10.1.2.200")), route(G1));
    assert_eq!(fib.stats().groups_used, 0);

    // 0/0 and a replacement.
    fib.set_route(p("0.0.0.0/0"), G3).unwrap();
    fib.set_route(p("10.0.0.0/8"), G2).unwrap();
    assert_eq!(fib.lookup(ip("255.255.255.255")), route(G3));
    assert_eq!(fib.lookup(ip("0.0.0.0")), route(G3));
    assert_eq!(fib.lookup(ip("10.9.9.9")), route(G2));
    fib.del_route(p("0.0.0.0/0")).unwrap();
    fib.del_route(p("10.0.0.0/8")).unwrap();
    assert_eq!(fib.stats().results_used, 1, "only the empty answer is left");
    fib.audit().unwrap();
}

#[test]
fn one_answer_has_route_customer_and_local() {
    let mut fib = small();
    fib.set_route(p("198.51.0.0/16"), G1).unwrap();
    fib.set_customer(p("198.51.100.0/24"), 7).unwrap();
    fib.set_customer(p("198.51.100.64/29"), 9).unwrap();
    fib.set_route(p("198.51.100.64/28"), G2).unwrap();
    fib.set_local(ip("198.51.100.65"), LocalKind::Host).unwrap();
    fib.set_local(ip("198.51.100.71"), LocalKind::Broadcast)
        .unwrap();
    let answer = |r, c, l| Fib4Answer {
        route: Some(r),
        customer_id: c,
        local: l,
    };
    assert_eq!(fib.lookup(ip("198.51.100.1")), answer(G1, 7, None));
    assert_eq!(fib.lookup(ip("198.51.100.64")), answer(G2, 9, None));
    assert_eq!(
        fib.lookup(ip("198.51.100.65")),
        answer(G2, 9, Some(LocalKind::Host))
    );
    assert_eq!(
        fib.lookup(ip("198.51.100.71")),
        answer(G2, 9, Some(LocalKind::Broadcast))
    );
    assert_eq!(fib.lookup(ip("198.51.100.72")), answer(G2, 7, None));
    assert_eq!(fib.lookup(ip("198.51.100.80")), answer(G1, 7, None));
    assert_eq!(fib.lookup(ip("198.51.7.1")), answer(G1, 0, None));

    // The record the data plane reads says the same.
    let record = fib.lookup(ip("198.51.100.71")).to_record();
    assert_eq!(
        record,
        PopFib4Result {
            route_id: 2,
            customer_id: 9,
            flags: pop_common::fib4::FIB4_ROUTE | pop_common::fib4::FIB4_BROADCAST,
            pad: 0
        }
    );
    fib.del_customer(p("198.51.100.64/29")).unwrap();
    fib.del_local(ip("198.51.100.65")).unwrap();
    assert_eq!(fib.lookup(ip("198.51.100.65")), answer(G2, 7, None));
    fib.audit().unwrap();
}

#[test]
fn a_full_group_table_refuses_and_changes_nothing() {
    let mut fib = Fib4::new(MemoryBackend::new(2, 64));
    fib.set_route(p("10.0.0.0/8"), G1).unwrap();
    fib.set_route(p("10.0.0.1/32"), G2).unwrap();
    fib.set_route(p("10.0.1.1/32"), G2).unwrap();
    let err = fib.set_route(p("10.0.2.1/32"), G2).unwrap_err();
    assert_eq!(
        err,
        Fib4Error::GroupsFull {
            change: "route 10.0.2.1/32".into(),
            needed: 1,
            free: 0,
            limit: 2
        }
    );
    assert_eq!(
        err.to_string(),
        "route 10.0.2.1/32: needs 1 more /24s split for longer prefixes, but only 0 of 2 \
         tbl8 groups are free (map fib4_tbl8)"
    );
    assert_eq!(
        fib.route(p("10.0.2.1/32")),
        None,
        "the refused route is not kept"
    );
    assert_eq!(fib.lookup(ip("10.0.2.1")), route(G1));
    assert_eq!(fib.lookup(ip("10.0.1.1")), route(G2));
    // A change inside an already split /24 needs no group.
    fib.set_route(p("10.0.1.2/32"), G3).unwrap();
    // Freeing a group makes room (after the readers' grace period).
    fib.del_route(p("10.0.0.1/32")).unwrap();
    fib.set_route(p("10.0.2.1/32"), G2).unwrap();
    assert_eq!(fib.lookup(ip("10.0.2.1")), route(G2));
    assert_eq!(fib.lookup(ip("10.0.0.1")), route(G1));
    fib.audit().unwrap();
}

#[test]
fn a_full_result_table_refuses_and_changes_nothing() {
    // Records: the empty answer and two more.
    let mut fib = Fib4::new(MemoryBackend::new(4, 3));
    fib.set_route(p("10.0.0.0/8"), G1).unwrap();
    fib.set_route(p("11.0.0.0/8"), G2).unwrap();
    let err = fib.set_route(p("12.0.0.0/8"), G3).unwrap_err();
    assert!(
        matches!(
            err,
            Fib4Error::ResultsFull {
                needed: 1,
                free: 0,
                limit: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("map fib4_results"), "{err}");
    assert_eq!(fib.lookup(ip("12.0.0.1")), Fib4Answer::default());
    // Reusing an answer needs no record.
    fib.set_route(p("12.0.0.0/8"), G2).unwrap();
    // A customer inside the /8s would make new answers: refused too.
    assert!(fib.set_customer(p("10.1.0.0/16"), 5).is_err());
    assert_eq!(fib.lookup(ip("10.1.0.1")), route(G1));
    // Replacing the only user of an answer frees its record for the next change.
    fib.set_route(p("10.0.0.0/8"), G2).unwrap();
    fib.set_route(p("13.0.0.0/8"), G3).unwrap();
    fib.audit().unwrap();
}

/// A prefix of random length 0..=32, mostly inside a few busy /16s so that
/// changes overlap at every length.
fn random_prefix(rng: &mut Rng) -> Prefix4 {
    const BUSY: [u32; 3] = [0x0A01_0000, 0xC633_6400, 0x0A01_8000];
    // Prefixes shorter than /8 span 2^16 and more /24s: rarer, or the
    // test spends its time rewriting most of the table.
    let len = if rng.below(50) == 0 {
        rng.below(8) as u8
    } else {
        8 + rng.below(25) as u8
    };
    let addr = if len >= 8 && rng.below(4) != 0 {
        BUSY[rng.below(3) as usize] | (rng.next() as u32 & 0x0000_03FF)
    } else {
        rng.next() as u32
    };
    let bits = addr & Prefix4::mask(len);
    Prefix4::new(bits.into(), len).unwrap()
}

fn random_probe(rng: &mut Rng, around: Prefix4) -> u32 {
    match rng.below(6) {
        0 => around.first() as u32,
        1 => around.last() as u32,
        2 => (around.first() as u32).wrapping_sub(1),
        3 => (around.last() as u32).wrapping_add(1),
        4 => around.first() as u32 | (rng.next() as u32 & !Prefix4::mask(around.prefix_len())),
        _ => random_prefix(rng).bits() | (rng.next() as u32 & 0xFF),
    }
}

/// One random change, applied to both; returns the prefix it touched.
fn random_change(
    rng: &mut Rng,
    fib: &mut Fib4<impl Fib4Backend>,
    reference: &mut Reference,
) -> Prefix4 {
    let prefix = random_prefix(rng);
    let set = rng.below(5) < 3;
    let (bits, len) = (prefix.bits(), usize::from(prefix.prefix_len()));
    match rng.below(5) {
        0..=2 if set => {
            let t = if rng.below(10) == 0 {
                RouteTarget::Blackhole
            } else {
                RouteTarget::Group(rng.below(6) as u32)
            };
            fib.set_route(prefix, t).unwrap();
            reference.routes[len].insert(bits, t);
        }
        0..=2 => {
            let had = reference.routes[len].remove(&bits).is_some();
            assert_eq!(fib.del_route(prefix).unwrap(), had);
        }
        3 if set => {
            let id = 1 + rng.below(4) as u32;
            fib.set_customer(prefix, id).unwrap();
            reference.customers[len].insert(bits, id);
        }
        3 => {
            let had = reference.customers[len].remove(&bits).is_some();
            assert_eq!(fib.del_customer(prefix).unwrap(), had);
        }
        _ => {
            let addr = random_probe(rng, prefix);
            if set {
                let kind = if rng.below(2) == 0 {
                    LocalKind::Host
                } else {
                    LocalKind::Broadcast
                };
                fib.set_local(addr.into(), kind).unwrap();
                reference.locals.insert(addr, kind);
            } else {
                let had = reference.locals.remove(&addr).is_some();
                assert_eq!(fib.del_local(addr.into()).unwrap(), had);
            }
            return Prefix4::host(addr.into());
        }
    }
    prefix
}

#[test]
fn random_changes_agree_with_the_reference() {
    let ops = if cfg!(debug_assertions) { 300 } else { 20_000 };
    for seed in 1..=3 {
        let mut rng = Rng::new(seed);
        let mut fib = Fib4::new(MemoryBackend::new(4096, 4096));
        let mut reference = Reference::new();
        let mut touched = vec![];
        for op in 0..ops {
            let prefix = random_change(&mut rng, &mut fib, &mut reference);
            touched.push(prefix);
            for _ in 0..24 {
                let around = touched[rng.below(touched.len() as u64) as usize];
                let near = if rng.below(2) == 0 { prefix } else { around };
                let addr = random_probe(&mut rng, near);
                assert_eq!(
                    fib.lookup(addr.into()),
                    reference.answer(addr),
                    "seed {seed}, after change {op} ({prefix}): address {}",
                    Ipv4Addr::from(addr)
                );
            }
        }
        fib.audit().unwrap();
        // Everything removed: nothing left allocated.
        let mut all: Vec<_> = (0..=32)
            .flat_map(|l| reference.routes[l].keys().map(move |b| (*b, l as u8)))
            .collect();
        all.sort();
        for (b, l) in all {
            fib.del_route(Prefix4::new(b.into(), l).unwrap()).unwrap();
        }
        for l in 0..=32u8 {
            for b in reference.customers[l as usize].keys() {
                fib.del_customer(Prefix4::new((*b).into(), l).unwrap())
                    .unwrap();
            }
        }
        for a in reference.locals.keys() {
            fib.del_local((*a).into()).unwrap();
        }
        let stats = fib.stats();
        assert_eq!(
            (stats.groups_used, stats.results_used),
            (0, 1),
            "seed {seed}"
        );
        fib.audit().unwrap();
    }
}

#[test]
fn bulk_replace_equals_single_changes() {
    let mut rng = Rng::new(42);
    let mut single = Fib4::new(MemoryBackend::new(4096, 4096));
    let mut reference = Reference::new();
    for _ in 0..300 {
        random_change(&mut rng, &mut single, &mut reference);
    }
    let mut bulk = Fib4::new(MemoryBackend::new(4096, 4096));
    let routes: Vec<_> = (0..=32u8)
        .flat_map(|l| {
            reference.routes[l as usize]
                .iter()
                .map(move |(b, t)| (Prefix4::new((*b).into(), l).unwrap(), *t))
        })
        .collect();
    let customers: Vec<_> = (0..=32u8)
        .flat_map(|l| {
            reference.customers[l as usize]
                .iter()
                .map(move |(b, c)| (Prefix4::new((*b).into(), l).unwrap(), *c))
        })
        .collect();
    let locals: Vec<_> = reference
        .locals
        .iter()
        .map(|(a, k)| (Ipv4Addr::from(*a), *k))
        .collect();
    bulk.replace_all(routes.clone(), customers.clone(), locals.clone())
        .unwrap();
    for _ in 0..20_000 {
        let near = random_prefix(&mut rng);
        let addr = random_probe(&mut rng, near);
        assert_eq!(bulk.lookup(addr.into()), reference.answer(addr));
        assert_eq!(single.lookup(addr.into()), reference.answer(addr));
    }
    bulk.audit().unwrap();
    // A resync over a filled table writes only what differs: the same state
    // again is a no-op; an empty state clears everything.
    bulk.replace_all(routes, customers, locals).unwrap();
    bulk.audit().unwrap();
    bulk.replace_all([], [], []).unwrap();
    assert_eq!(bulk.stats().groups_used, 0);
    assert_eq!(bulk.lookup(ip("10.1.0.1")), Fib4Answer::default());
    bulk.audit().unwrap();
}

/// A backend that checks, after every store, what concurrent lookups could
/// see: each probe address answers its answer before or after the change,
/// and no group or record a lookup may still hold is rewritten for another
/// use before [`Fib4Backend::wait_for_readers`].
struct Checked {
    inner: MemoryBackend,
    probes: Vec<(u32, Fib4Answer, Fib4Answer)>,
    held_groups: HashSet<u32>,
    held_results: HashSet<u32>,
    /// Groups tbl24 points at.
    linked: HashSet<u32>,
    grace_periods: u32,
    stores: u64,
}

impl Checked {
    fn new(groups: u32, results: u32) -> Self {
        Self {
            inner: MemoryBackend::new(groups, results),
            probes: vec![],
            held_groups: HashSet::new(),
            held_results: HashSet::new(),
            linked: HashSet::new(),
            grace_periods: 0,
            stores: 0,
        }
    }

    /// What lookups of the probes see now; remembers what they may hold.
    fn observe(&mut self) {
        self.stores += 1;
        for &(addr, before, after) in &self.probes {
            let mut e = self.inner.tbl24(addr >> 8);
            if e & FIB4_EXT != 0 {
                self.held_groups.insert(e & !FIB4_EXT);
                e = self.inner.tbl8(e & !FIB4_EXT, addr & 0xff);
            }
            self.held_results.insert(e);
            let seen = Fib4Answer::from_record(&self.inner.result(e));
            assert!(
                seen == before || seen == after,
                "store {}: {} answers {seen:?}, neither {before:?} nor {after:?}",
                self.stores,
                Ipv4Addr::from(addr)
            );
        }
    }
}

impl Fib4Backend for Checked {
    fn group_capacity(&self) -> u32 {
        self.inner.group_capacity()
    }
    fn result_capacity(&self) -> u32 {
        self.inner.result_capacity()
    }
    fn tbl24(&self, slot: u32) -> u32 {
        self.inner.tbl24(slot)
    }
    fn set_tbl24(&mut self, slot: u32, entry: u32) {
        let old = self.inner.tbl24(slot);
        if old & FIB4_EXT != 0 {
            self.linked.remove(&(old & !FIB4_EXT));
        }
        if entry & FIB4_EXT != 0 {
            self.linked.insert(entry & !FIB4_EXT);
        }
        self.inner.set_tbl24(slot, entry);
        self.observe();
    }
    fn tbl8(&self, group: u32, index: u32) -> u32 {
        self.inner.tbl8(group, index)
    }
    fn set_tbl8(&mut self, group: u32, index: u32, entry: u32) {
        if self.held_groups.contains(&group) && !self.linked.contains(&group) {
            panic!("group {group} rewritten while a lookup may still read it");
        }
        self.inner.set_tbl8(group, index, entry);
        self.observe();
    }
    fn result(&self, index: u32) -> PopFib4Result {
        self.inner.result(index)
    }
    fn set_result(&mut self, index: u32, record: PopFib4Result) {
        if self.held_results.contains(&index) {
            panic!("record {index} rewritten while a lookup may still hold it");
        }
        self.inner.set_result(index, record);
        self.observe();
    }
    fn wait_for_readers(&mut self) {
        self.grace_periods += 1;
        self.held_groups.clear();
        self.held_results.clear();
    }
}

#[test]
fn every_store_leaves_lookups_consistent() {
    let mut rng = Rng::new(7);
    // Few groups and records, so they are freed and reused often.
    let mut fib = Fib4::new(Checked::new(6, 12));
    let mut reference = Reference::new();
    let ops = if cfg!(debug_assertions) { 120 } else { 1500 };
    let mut done = 0;
    while done < ops {
        let prefix = random_prefix(&mut rng);
        if prefix.prefix_len() < 12 {
            continue; // keep the per-store probing cheap
        }
        let probes: Vec<u32> = (0..16).map(|_| random_probe(&mut rng, prefix)).collect();
        let mut after = reference.clone();
        // Decide the change on a scratch reference, then apply it while probing.
        let mut scratch_rng = Rng::new(rng.next());
        let t = RouteTarget::Group(scratch_rng.below(4) as u32);
        let (bits, len) = (prefix.bits(), usize::from(prefix.prefix_len()));
        let set = scratch_rng.below(3) != 0;
        let customer = scratch_rng.below(3) == 0;
        match (customer, set) {
            (false, true) => drop(after.routes[len].insert(bits, t)),
            (false, false) => drop(after.routes[len].remove(&bits)),
            (true, true) => drop(after.customers[len].insert(bits, 1 + bits % 3)),
            (true, false) => drop(after.customers[len].remove(&bits)),
        }
        fib.backend_mut().probes = probes
            .iter()
            .map(|a| (*a, reference.answer(*a), after.answer(*a)))
            .collect();
        let result = match (customer, set) {
            (false, true) => fib.set_route(prefix, t),
            (false, false) => fib.del_route(prefix).map(drop),
            (true, true) => fib.set_customer(prefix, 1 + bits % 3),
            (true, false) => fib.del_customer(prefix).map(drop),
        };
        match result {
            Ok(()) => reference = after,
            Err(Fib4Error::GroupsFull { .. } | Fib4Error::ResultsFull { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        fib.backend_mut().probes.clear();
        for a in probes {
            assert_eq!(fib.lookup(a.into()), reference.answer(a));
        }
        done += 1;
    }
    assert!(
        fib.backend().grace_periods > 0,
        "the test never reused a group or record"
    );
    fib.audit().unwrap();
}

/// The checker itself catches a group reused without a grace period.
#[test]
fn the_store_checker_catches_early_reuse() {
    let caught = std::panic::catch_unwind(|| {
        let mut b = Checked::new(2, 4);
        b.set_result(1, route(G1).to_record());
        b.set_tbl8(0, 0, 1);
        b.probes = vec![(0x0A00_0000, Fib4Answer::default(), route(G1))];
        b.set_tbl24(0x0A_0000, FIB4_EXT);
        // Unlink the group and rewrite it at once, as if for another /24.
        b.set_tbl24(0x0A_0000, 0);
        b.set_tbl8(0, 0, 0);
    });
    assert!(
        caught.is_err(),
        "reuse without a grace period went unnoticed"
    );
}

/// A restarted writer adopts filled tables: the same desired state again
/// writes nothing, and changes go on from there.
#[test]
fn adopted_tables_resync_without_writes() {
    let mut rng = Rng::new(5);
    let mut fib = Fib4::new(Checked::new(64, 256));
    let mut reference = Reference::new();
    let mut routes = HashMap::new();
    for _ in 0..200 {
        let p = random_prefix(&mut rng);
        if p.prefix_len() < 8 {
            continue;
        }
        let t = RouteTarget::Group(rng.below(5) as u32);
        if fib.set_route(p, t).is_ok() {
            routes.insert(p, t);
            reference.routes[usize::from(p.prefix_len())].insert(p.bits(), t);
        }
    }
    fib.set_customer(p("10.1.0.0/24"), 3).unwrap();
    reference.customers[24].insert(0x0A01_0000, 3);
    let mut backend = fib.into_backend();
    backend.stores = 0;
    let mut adopted = Fib4::adopt(backend);
    adopted.audit().unwrap();
    adopted
        .replace_all(routes.clone(), [(p("10.1.0.0/24"), 3)], [])
        .unwrap();
    assert_eq!(
        adopted.backend().stores,
        0,
        "resync of an equal state wrote"
    );
    adopted.audit().unwrap();
    adopted.del_customer(p("10.1.0.0/24")).unwrap();
    reference.customers[24].clear();
    for _ in 0..2000 {
        let near = random_prefix(&mut rng);
        let a = random_probe(&mut rng, near);
        assert_eq!(adopted.lookup(a.into()), reference.answer(a));
    }
    adopted.audit().unwrap();
}
