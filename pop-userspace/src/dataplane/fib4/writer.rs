//! [`Fib4`]: the public writer over the desired state and the tables.
use std::net::Ipv4Addr;

use pop_common::fib4::FIB4_EXT;

use super::desired::{plan_region, Planes, Which, GROUP, LAST_SLOT};
use super::tables::{Needs, ResultSlot, Tables};
use super::{Fib4Answer, Fib4Backend, Fib4Error, LocalKind, Prefix4, RouteTarget};

/// Sizes of the FIB now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fib4Stats {
    /// Routes set.
    pub routes: usize,
    /// Customer prefixes set.
    pub customer_prefixes: usize,
    /// Local addresses set.
    pub local_addrs: usize,
    /// tbl8 groups in use (split /24s).
    pub groups_used: u32,
    /// tbl8 groups the map holds.
    pub group_limit: u32,
    /// Result records in use (the empty answer included).
    pub results_used: u32,
    /// Result records the map holds.
    pub result_limit: u32,
}

/// The IPv4 FIB: desired routes, customer prefixes and local addresses, and
/// the DIR-24-8 table they compile into, kept equal change by change.
pub struct Fib4<B> {
    planes: Planes,
    tables: Tables<B>,
    buf: Box<[Fib4Answer; GROUP]>,
}

impl<B: Fib4Backend> Fib4<B> {
    /// A FIB over `backend`, whose tables must be all zero (fresh maps): every
    /// address answers "nothing".
    pub fn new(backend: B) -> Self {
        Self {
            planes: Planes::default(),
            tables: Tables::new(backend),
            buf: Box::new([Fib4Answer::default(); GROUP]),
        }
    }

    /// A FIB over tables that are already filled (a restarted popd adopting
    /// the pinned maps): rebuilds the bookkeeping from the entries and records
    /// in them, with empty planes. Load the desired state with
    /// [`Fib4::replace_all`], which then writes only the differences, so the
    /// data plane keeps forwarding by the old entries meanwhile. Entries that
    /// point beyond the maps (never written by this code) are cleared.
    pub fn adopt(mut backend: B) -> Self {
        // The writer before us may have released groups and records just now.
        backend.wait_for_readers();
        let groups = backend.group_capacity();
        let results = backend.result_capacity();
        let mut refs = vec![0u32; results as usize];
        let mut in_use = vec![false; groups as usize];
        for slot in 0..=LAST_SLOT {
            let e = backend.tbl24(slot);
            if e & FIB4_EXT == 0 {
                match refs.get_mut(e as usize) {
                    Some(n) => *n += 1,
                    None => backend.set_tbl24(slot, 0),
                }
                continue;
            }
            let g = e & !FIB4_EXT;
            if g >= groups || in_use[g as usize] {
                backend.set_tbl24(slot, 0);
                continue;
            }
            in_use[g as usize] = true;
            for i in 0..GROUP as u32 {
                let e = backend.tbl8(g, i);
                match refs.get_mut(e as usize) {
                    Some(n) => *n += 1,
                    None => backend.set_tbl8(g, i, 0),
                }
            }
        }
        let mut tables = Tables::new(backend);
        let last = refs.iter().rposition(|n| *n > 0).unwrap_or(0);
        tables.slots.resize(last + 1, ResultSlot::default());
        for (index, n) in refs.iter().enumerate().take(last + 1).skip(1) {
            if *n == 0 {
                tables.free_results.push(index as u32);
                continue;
            }
            let answer = Fib4Answer::from_record(&tables.backend.result(index as u32));
            tables.slots[index] = ResultSlot {
                answer,
                refs: *n,
                live: true,
            };
            tables.interned.entry(answer).or_insert(index as u32);
        }
        tables.fresh_groups = groups;
        tables.free_groups = (0..groups).rev().filter(|g| !in_use[*g as usize]).collect();
        tables.groups_used = groups - tables.free_groups.len() as u32;
        Self {
            planes: Planes::default(),
            tables,
            buf: Box::new([Fib4Answer::default(); GROUP]),
        }
    }

    /// Gives the tables back (to adopt them again, or to drop the mapping).
    pub fn into_backend(self) -> B {
        self.tables.backend
    }

    /// The backend (to read the tables directly).
    pub fn backend(&self) -> &B {
        &self.tables.backend
    }

    /// Gives back the pages mapped to reach the tables
    /// ([`Fib4Backend::unmap`]).
    pub fn unmap(&mut self) {
        self.tables.backend.unmap();
    }

    #[cfg(test)]
    pub(crate) fn backend_mut(&mut self) -> &mut B {
        &mut self.tables.backend
    }

    /// Routes `prefix` to `target` (replacing its route if it has one).
    pub fn set_route(&mut self, prefix: Prefix4, target: RouteTarget) -> Result<(), Fib4Error> {
        let old = self.planes.routes.insert(prefix, target);
        if old == Some(target) {
            return Ok(());
        }
        self.commit(Which::Route, prefix, "route", move |p| match old {
            Some(v) => {
                p.routes.insert(prefix, v);
            }
            None => {
                p.routes.remove(prefix);
            }
        })
    }

    /// Removes the route of `prefix`; its addresses fall back to the next
    /// shorter route. Returns whether there was one.
    pub fn del_route(&mut self, prefix: Prefix4) -> Result<bool, Fib4Error> {
        let Some(old) = self.planes.routes.remove(prefix) else {
            return Ok(false);
        };
        self.commit(Which::Route, prefix, "route", move |p| {
            p.routes.insert(prefix, old);
        })?;
        Ok(true)
    }

    /// Assigns `prefix` to customer `customer_id` (1 or more).
    pub fn set_customer(&mut self, prefix: Prefix4, customer_id: u32) -> Result<(), Fib4Error> {
        if customer_id == 0 {
            return Err(Fib4Error::CustomerIdZero { prefix });
        }
        let old = self.planes.customers.insert(prefix, customer_id);
        if old == Some(customer_id) {
            return Ok(());
        }
        self.commit(
            Which::Customer,
            prefix,
            "customer prefix",
            move |p| match old {
                Some(v) => {
                    p.customers.insert(prefix, v);
                }
                None => {
                    p.customers.remove(prefix);
                }
            },
        )
    }

    /// Removes a customer prefix. Returns whether it was set.
    pub fn del_customer(&mut self, prefix: Prefix4) -> Result<bool, Fib4Error> {
        let Some(old) = self.planes.customers.remove(prefix) else {
            return Ok(false);
        };
        self.commit(Which::Customer, prefix, "customer prefix", move |p| {
            p.customers.insert(prefix, old);
        })?;
        Ok(true)
    }

    /// Declares `addr` local (an address of this host, or a directed broadcast).
    pub fn set_local(&mut self, addr: Ipv4Addr, kind: LocalKind) -> Result<(), Fib4Error> {
        let prefix = Prefix4::host(addr);
        let old = self.planes.locals.insert(prefix, kind);
        if old == Some(kind) {
            return Ok(());
        }
        self.commit(Which::Local, prefix, "local address", move |p| match old {
            Some(v) => {
                p.locals.insert(prefix, v);
            }
            None => {
                p.locals.remove(prefix);
            }
        })
    }

    /// Removes a local address. Returns whether it was set.
    pub fn del_local(&mut self, addr: Ipv4Addr) -> Result<bool, Fib4Error> {
        let prefix = Prefix4::host(addr);
        let Some(old) = self.planes.locals.remove(prefix) else {
            return Ok(false);
        };
        self.commit(Which::Local, prefix, "local address", move |p| {
            p.locals.insert(prefix, old);
        })?;
        Ok(true)
    }

    /// Replaces the whole desired state and writes the differences, in one
    /// pass over the table (a bulk load, or a resync). Refused whole, like a
    /// single change, when the table would not hold it.
    pub fn replace_all(
        &mut self,
        routes: impl IntoIterator<Item = (Prefix4, RouteTarget)>,
        customers: impl IntoIterator<Item = (Prefix4, u32)>,
        locals: impl IntoIterator<Item = (Ipv4Addr, LocalKind)>,
    ) -> Result<(), Fib4Error> {
        let mut planes = Planes::default();
        for (p, t) in routes {
            planes.routes.insert(p, t);
        }
        for (p, id) in customers {
            if id == 0 {
                return Err(Fib4Error::CustomerIdZero { prefix: p });
            }
            planes.customers.insert(p, id);
        }
        for (a, k) in locals {
            planes.locals.insert(Prefix4::host(a), k);
        }
        let old = std::mem::replace(&mut self.planes, planes);
        let regions = [(0, LAST_SLOT)];
        if let Err(e) = self.check(&regions, || "the whole table".into()) {
            self.planes = old;
            return Err(e);
        }
        drop(old);
        self.write(&regions)
    }

    /// The answer for `addr`, read from the tables as the data plane reads it.
    pub fn lookup(&self, addr: Ipv4Addr) -> Fib4Answer {
        let index = self.tables.lookup(addr.into());
        Fib4Answer::from_record(&self.tables.backend.result(index))
    }

    /// The answer for `addr` computed from the desired state (longest match
    /// per kind), for comparisons and `route get`-style queries.
    pub fn desired(&self, addr: Ipv4Addr) -> Fib4Answer {
        self.planes.answer(addr.into())
    }

    /// The route set for exactly `prefix`.
    pub fn route(&self, prefix: Prefix4) -> Option<RouteTarget> {
        self.planes.routes.get(prefix)
    }

    /// The customer set for exactly `prefix`.
    pub fn customer(&self, prefix: Prefix4) -> Option<u32> {
        self.planes.customers.get(prefix)
    }

    /// What `addr` is declared as, if local.
    pub fn local(&self, addr: Ipv4Addr) -> Option<LocalKind> {
        self.planes.locals.get(Prefix4::host(addr))
    }

    /// Sizes now.
    pub fn stats(&self) -> Fib4Stats {
        Fib4Stats {
            routes: self.planes.routes.len(),
            customer_prefixes: self.planes.customers.len(),
            local_addrs: self.planes.locals.len(),
            groups_used: self.tables.groups_used,
            group_limit: self.tables.backend.group_capacity(),
            results_used: self.tables.interned.len() as u32 + 1,
            result_limit: self.tables.backend.result_capacity(),
        }
    }

    /// Checks the whole table against the bookkeeping (reference counts,
    /// groups in use, records): a full scan, for tests and debugging.
    pub fn audit(&self) -> Result<(), String> {
        let t = &self.tables;
        let mut refs = vec![0u32; t.slots.len()];
        let mut groups = 0;
        let mut count = |e: u32| -> Result<(), String> {
            if e == 0 {
                return Ok(());
            }
            let slot = t
                .slots
                .get(e as usize)
                .filter(|s| s.live)
                .ok_or_else(|| format!("entry points at result {e}, which is not in use"))?;
            if t.backend.result(e) != slot.answer.to_record() {
                return Err(format!("record {e} differs from its answer"));
            }
            refs[e as usize] += 1;
            Ok(())
        };
        for slot in 0..=LAST_SLOT {
            let e = t.backend.tbl24(slot);
            if e & FIB4_EXT == 0 {
                count(e)?;
            } else {
                groups += 1;
                for i in 0..GROUP as u32 {
                    count(t.backend.tbl8(e & !FIB4_EXT, i))?;
                }
            }
        }
        if groups != t.groups_used {
            return Err(format!(
                "{groups} groups in tbl24, {} counted",
                t.groups_used
            ));
        }
        for (i, s) in t.slots.iter().enumerate().skip(1) {
            if s.live && s.refs != refs[i] {
                return Err(format!(
                    "result {i}: {} refs counted, {} found",
                    s.refs, refs[i]
                ));
            }
            if s.live && s.refs == 0 {
                return Err(format!("result {i} is live without references"));
            }
        }
        Ok(())
    }

    /// The /24s a change of `prefix` in plane `which` can change: the parts of
    /// the prefix that no longer prefix of that plane covers, widened to
    /// whole /24s and merged.
    fn dirty_slots(&self, which: Which, prefix: Prefix4) -> Vec<(u32, u32)> {
        let mut exposed = vec![];
        self.planes.exposed(which, prefix, &mut exposed);
        let mut slots: Vec<(u32, u32)> = vec![];
        for (lo, hi) in exposed {
            let (a, b) = ((lo >> 8) as u32, (hi >> 8) as u32);
            match slots.last_mut() {
                Some(last) if last.1 + 1 >= a => last.1 = last.1.max(b),
                _ => slots.push((a, b)),
            }
        }
        slots
    }

    /// Refuses the change when the table cannot hold what it needs.
    fn check(
        &mut self,
        regions: &[(u32, u32)],
        describe: impl Fn() -> String,
    ) -> Result<(), Fib4Error> {
        let Fib4 {
            planes,
            tables,
            buf,
        } = self;
        let mut needs = Needs::default();
        let free_results = tables.free_result_count();
        let free_groups = tables.free_group_count();
        for &(first, last) in regions {
            plan_region(planes, first, last, buf, |slot, d| {
                tables.count(slot, d, &mut needs, free_results);
                Ok(())
            })?;
        }
        if needs.groups > free_groups {
            return Err(Fib4Error::GroupsFull {
                change: describe(),
                needed: needs.groups,
                free: free_groups,
                limit: tables.backend.group_capacity(),
            });
        }
        let needed = needs.answers.len() as u32;
        if needed > free_results {
            return Err(Fib4Error::ResultsFull {
                change: describe(),
                needed,
                free: free_results,
                limit: tables.backend.result_capacity(),
            });
        }
        Ok(())
    }

    fn write(&mut self, regions: &[(u32, u32)]) -> Result<(), Fib4Error> {
        let Fib4 {
            planes,
            tables,
            buf,
        } = self;
        for &(first, last) in regions {
            plan_region(planes, first, last, buf, |slot, d| tables.apply(slot, d))?;
        }
        tables.finish();
        Ok(())
    }

    fn commit(
        &mut self,
        which: Which,
        prefix: Prefix4,
        kind: &str,
        undo: impl FnOnce(&mut Planes),
    ) -> Result<(), Fib4Error> {
        let regions = self.dirty_slots(which, prefix);
        // Counting first costs a second pass; skip it when even the worst
        // case (a new group per /24, a new answer per address) fits.
        let slots: u64 = regions.iter().map(|(a, b)| u64::from(b - a) + 1).sum();
        let fits = u64::from(self.tables.free_group_count()) >= slots
            && u64::from(self.tables.free_result_count()) >= slots * GROUP as u64;
        if fits {
            return self.write(&regions);
        }
        if let Err(e) = self.check(&regions, || format!("{kind} {prefix}")) {
            undo(&mut self.planes);
            return Err(e);
        }
        self.write(&regions)
    }
}
