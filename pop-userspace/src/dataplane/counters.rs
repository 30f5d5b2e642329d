//! Counters over a data-plane upgrade: the old build's counters are added to
//! the new build's, per CPU, once no packet runs the old program, so that
//! Prometheus sees them go on from where they were.
//!
//! Two layouts can be met in the old maps directory:
//! - the current one (`iface_counters`, `customer_counters`): added record by
//!   record;
//! - the one before it, five arrays of [`PopCounter`]: `iface_stats` (slot ×
//!   action), `drop_stats` and `pass_stats` (by reason), `cust_stats`
//!   (customer × direction), `cust_drops` (customer × drop reason). Each
//!   counter goes to the same counter of the new records. The old global
//!   drop and pass counters say nothing of the interface, so they go to the
//!   record of unknown interfaces ([`pop_common::NO_IFACE_SLOT`]): the totals
//!   by reason go on, the per-interface reasons start at zero.
//!
//! A map that is missing or has another value size is skipped with a warning.
use std::path::Path;

use aya::maps::{MapData, PerCpuArray, PerCpuValues};
use aya::Pod;
use pop_common::{
    maps as names, Action, Direction, DropReason, PopCounter, PopCustomerCounters,
    PopIfaceCounters, NO_IFACE_SLOT,
};

use super::maps::{open, Maps};

/// The maps of the layout before the per-interface and per-customer records.
pub mod legacy {
    /// slot * 4 + action → [`pop_common::PopCounter`] per CPU.
    pub const IFACE_STATS: &str = "iface_stats";
    /// drop reason → [`pop_common::PopCounter`] per CPU.
    pub const DROP_STATS: &str = "drop_stats";
    /// pass reason → [`pop_common::PopCounter`] per CPU.
    pub const PASS_STATS: &str = "pass_stats";
    /// customer_id * 2 + direction → [`pop_common::PopCounter`] per CPU.
    pub const CUST_STATS: &str = "cust_stats";
    /// customer_id * 16 + drop reason → [`pop_common::PopCounter`] per CPU.
    pub const CUST_DROPS: &str = "cust_drops";
}

fn open_old<V: Pod>(dir: &Path, name: &'static str) -> Option<PerCpuArray<MapData, V>> {
    if !dir.join(name).exists() {
        return None;
    }
    let map = open(dir, name)
        .map_err(|e| e.to_string())
        .and_then(|m| PerCpuArray::try_from(m).map_err(|e| e.to_string()));
    match map {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(map = name, "old counters not carried over: {e}");
            None
        }
    }
}

/// `f(cpu, value)` on every CPU's value at `index` of `map`.
fn update<V: Pod>(map: &mut PerCpuArray<MapData, V>, index: u32, f: impl Fn(usize, &mut V)) {
    let Ok(now) = map.get(&index, 0) else { return };
    let mut values: Vec<V> = now.iter().copied().collect();
    for (cpu, v) in values.iter_mut().enumerate() {
        f(cpu, v);
    }
    if let Ok(values) = PerCpuValues::try_from(values) {
        let _ = map.set(index, values, 0);
    }
}

fn add(to: &mut PopCounter, from: &PopCounter) {
    to.packets += from.packets;
    to.bytes += from.bytes;
}

/// Adds every nonzero per-CPU value of the old array `name` to the record
/// and field `place(index)` of `new`.
fn carry_legacy<V: Pod>(
    old_dir: &Path,
    name: &'static str,
    new: &mut PerCpuArray<MapData, V>,
    place: impl Fn(u32) -> Option<(u32, fn(&mut V) -> &mut [PopCounter], usize)>,
) {
    let Some(old) = open_old::<PopCounter>(old_dir, name) else {
        return;
    };
    for i in 0..old.len() {
        let Ok(before) = old.get(&i, 0) else { continue };
        if before.iter().all(|c| c.packets == 0 && c.bytes == 0) {
            continue;
        }
        let Some((record, field, slot)) = place(i) else {
            continue;
        };
        update(new, record, |cpu, v| {
            if let (Some(to), Some(from)) = (field(v).get_mut(slot), before.get(cpu)) {
                add(to, from);
            }
        });
    }
}

/// Adds record by record from the same map of the old build.
fn carry_records<V: Pod + Default + PartialEq>(
    old_dir: &Path,
    name: &'static str,
    new: &mut PerCpuArray<MapData, V>,
    add_record: fn(&mut V, &V),
) -> bool {
    let Some(old) = open_old::<V>(old_dir, name) else {
        return false;
    };
    for i in 0..old.len().min(new.len()) {
        let Ok(before) = old.get(&i, 0) else { continue };
        if before.iter().all(|v| *v == V::default()) {
            continue;
        }
        update(new, i, |cpu, v| {
            if let Some(b) = before.get(cpu) {
                add_record(v, b);
            }
        });
    }
    true
}

/// The maps an upgrade carries counters into.
pub struct CounterMaps<'a> {
    /// `iface_counters`.
    pub iface: &'a mut PerCpuArray<MapData, PopIfaceCounters>,
    /// `customer_counters`.
    pub customer: &'a mut PerCpuArray<MapData, PopCustomerCounters>,
    /// `icmp_stats`.
    pub icmp: &'a mut PerCpuArray<MapData, PopCounter>,
}

/// Adds the counters pinned in `old_dir` to `maps`.
pub fn carry_over(maps: &mut Maps, old_dir: &Path) {
    carry_over_into(
        CounterMaps {
            iface: &mut maps.iface_counters,
            customer: &mut maps.customer_counters,
            icmp: &mut maps.icmp_stats,
        },
        old_dir,
    );
}

/// Adds the counters pinned in `old_dir`, in either layout, to `to`.
pub fn carry_over_into(to: CounterMaps<'_>, old_dir: &Path) {
    if !carry_records(
        old_dir,
        names::IFACE_COUNTERS,
        to.iface,
        PopIfaceCounters::add,
    ) {
        let actions = Action::SLOTS;
        carry_legacy(old_dir, legacy::IFACE_STATS, to.iface, |i| {
            let slot = i / actions;
            (slot < NO_IFACE_SLOT).then_some((
                slot,
                (|v: &mut PopIfaceCounters| &mut v.action[..]) as fn(&mut _) -> &mut [_],
                (i % actions) as usize,
            ))
        });
        carry_legacy(old_dir, legacy::DROP_STATS, to.iface, |i| {
            Some((
                NO_IFACE_SLOT,
                (|v: &mut PopIfaceCounters| &mut v.drop[..]) as fn(&mut _) -> &mut [_],
                i as usize,
            ))
        });
        carry_legacy(old_dir, legacy::PASS_STATS, to.iface, |i| {
            Some((
                NO_IFACE_SLOT,
                (|v: &mut PopIfaceCounters| &mut v.pass[..]) as fn(&mut _) -> &mut [_],
                i as usize,
            ))
        });
    }
    if !carry_records(
        old_dir,
        names::CUSTOMER_COUNTERS,
        to.customer,
        PopCustomerCounters::add,
    ) {
        let dirs = Direction::SLOTS;
        carry_legacy(old_dir, legacy::CUST_STATS, to.customer, |i| {
            Some((
                i / dirs,
                (|v: &mut PopCustomerCounters| &mut v.dir[..]) as fn(&mut _) -> &mut [_],
                (i % dirs) as usize,
            ))
        });
        let reasons = DropReason::SLOTS;
        carry_legacy(old_dir, legacy::CUST_DROPS, to.customer, |i| {
            Some((
                i / reasons,
                (|v: &mut PopCustomerCounters| &mut v.drop[..]) as fn(&mut _) -> &mut [_],
                (i % reasons) as usize,
            ))
        });
    }
    carry_records(
        old_dir,
        names::ICMP_STATS,
        to.icmp,
        |a: &mut PopCounter, b| add(a, b),
    );
}

/// One record of `iface_counters`, summed over CPUs.
pub fn iface_record(map: &PerCpuArray<MapData, PopIfaceCounters>, slot: u32) -> PopIfaceCounters {
    map.get(&slot, 0)
        .map(|v| PopIfaceCounters::sum(v.iter()))
        .unwrap_or_default()
}

/// Every record of `iface_counters` summed (slots in use or not, and the one
/// for unknown interfaces): its `drop` and `pass` are the global counters by
/// reason that the metrics report.
pub fn reason_totals(map: &PerCpuArray<MapData, PopIfaceCounters>) -> PopIfaceCounters {
    let mut total = PopIfaceCounters::default();
    for slot in 0..=NO_IFACE_SLOT {
        total.add(&iface_record(map, slot));
    }
    total
}
