//! Customer prefixes and local addresses are incremental changes: each writes
//! only the tbl24 entries of the /24s its prefix spans, and only those whose
//! answer changes (the daemon's customer and local-address writer relies on
//! this, see `daemon::addr4`).
use std::collections::BTreeSet;

use pop_common::fib4::PopFib4Result;

use super::*;

/// A [`MemoryBackend`] that records the tbl24 slots and tbl8 groups written.
struct Recording {
    inner: MemoryBackend,
    tbl24: BTreeSet<u32>,
    tbl24_stores: u32,
    groups: BTreeSet<u32>,
    /// Off while the table is set up.
    on: bool,
}

impl Recording {
    fn clear(&mut self) {
        self.tbl24.clear();
        self.tbl24_stores = 0;
        self.groups.clear();
    }
}

impl Fib4Backend for Recording {
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
        if self.on {
            self.tbl24.insert(slot);
            self.tbl24_stores += 1;
        }
        self.inner.set_tbl24(slot, entry);
    }
    fn tbl8(&self, group: u32, index: u32) -> u32 {
        self.inner.tbl8(group, index)
    }
    fn set_tbl8(&mut self, group: u32, index: u32, entry: u32) {
        if self.on {
            self.groups.insert(group);
        }
        self.inner.set_tbl8(group, index, entry);
    }
    fn result(&self, index: u32) -> PopFib4Result {
        self.inner.result(index)
    }
    fn set_result(&mut self, index: u32, record: PopFib4Result) {
        self.inner.set_result(index, record);
    }
    fn wait_for_readers(&mut self) {}
}

fn p(text: &str) -> Prefix4 {
    let (a, l) = text.split_once('/').unwrap();
    Prefix4::new(a.parse().unwrap(), l.parse().unwrap()).unwrap()
}

/// The /24 numbers (tbl24 slots) of `prefix`.
fn slots(prefix: &str) -> std::ops::RangeInclusive<u32> {
    let p = p(prefix);
    let first = p.bits() >> 8;
    let last = (p.last() >> 8) as u32;
    first..=last
}

fn fib() -> Fib4<Recording> {
    let mut f = Fib4::new(Recording {
        inner: MemoryBackend::new(64, 1024),
        tbl24: BTreeSet::new(),
        tbl24_stores: 0,
        groups: BTreeSet::new(),
        on: false,
    });
    f.set_route(p("10.0.0.0/8"), RouteTarget::Group(1)).unwrap();
    f.set_route(p("10.0.0.0/12"), RouteTarget::Group(2))
        .unwrap();
    f.set_customer(p("10.0.0.0/16"), 7).unwrap();
    f.backend_mut().on = true;
    f
}

#[test]
fn a_customer_change_writes_only_its_span() {
    let mut f = fib();
    // A /24 inside the customer's /16: its one entry.
    f.set_customer(p("10.0.5.0/24"), 8).unwrap();
    assert_eq!(f.backend().tbl24, slots("10.0.5.0/24").collect());
    assert_eq!(f.backend().tbl24_stores, 1);
    assert!(f.backend().groups.is_empty());
    f.backend_mut().clear();

    // A /16 elsewhere: its 256 entries, nothing outside.
    f.set_customer(p("10.1.0.0/16"), 9).unwrap();
    assert_eq!(f.backend().tbl24, slots("10.1.0.0/16").collect());
    assert_eq!(f.backend().tbl24_stores, 256);
    f.backend_mut().clear();

    // A /29 (sub-allocated): one group, linked by its /24's entry.
    f.set_customer(p("10.0.7.8/29"), 10).unwrap();
    assert_eq!(f.backend().tbl24, slots("10.0.7.0/24").collect());
    assert_eq!(f.backend().groups.len(), 1);
    f.backend_mut().clear();

    // The /16's customer changes: its entries except the /24 another
    // customer holds whole (10.0.5.0/24); 10.0.7.0/24's answers are in its
    // group, which is rewritten (or replaced and linked anew).
    f.set_customer(p("10.0.0.0/16"), 11).unwrap();
    let held = *slots("10.0.5.0/24").start();
    let split = *slots("10.0.7.0/24").start();
    let at_most: BTreeSet<u32> = slots("10.0.0.0/16").filter(|s| *s != held).collect();
    let at_least: BTreeSet<u32> = at_most.iter().copied().filter(|s| *s != split).collect();
    let written = &f.backend().tbl24;
    assert!(written.is_subset(&at_most), "wrote outside the span");
    assert!(written.is_superset(&at_least), "missed entries of the span");
    assert_eq!(f.backend().groups.len(), 1);
    f.backend_mut().clear();

    // Removing the /29: only its /24 (the group goes, one entry again).
    f.del_customer(p("10.0.7.8/29")).unwrap();
    assert_eq!(f.backend().tbl24, slots("10.0.7.0/24").collect());
    assert_eq!(f.backend().tbl24_stores, 1);
    assert!(f.backend().groups.is_empty());
    f.backend_mut().clear();

    // The same customer again: nothing.
    f.set_customer(p("10.1.0.0/16"), 9).unwrap();
    assert_eq!(f.backend().tbl24_stores, 0);
    f.audit().unwrap();
}

#[test]
fn a_local_address_writes_only_its_slash_24() {
    let mut f = fib();
    let addr = "10.0.9.1".parse().unwrap();
    f.set_local(addr, LocalKind::Host).unwrap();
    assert_eq!(f.backend().tbl24, slots("10.0.9.0/24").collect());
    assert_eq!(f.backend().groups.len(), 1);
    f.backend_mut().clear();
    f.set_local(addr, LocalKind::Broadcast).unwrap();
    assert!(
        f.backend().tbl24.is_empty(),
        "only the group's entry changes"
    );
    assert_eq!(f.backend().groups.len(), 1);
    f.backend_mut().clear();
    f.del_local(addr).unwrap();
    assert_eq!(f.backend().tbl24, slots("10.0.9.0/24").collect());
    assert_eq!(f.backend().tbl24_stores, 1);
    f.audit().unwrap();
}
