//! [`Fib4`]: the planes, the interned answers and the write path.
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::iter::Peekable;
use std::net::Ipv4Addr;

use pop_common::fib4::FIB4_EXT;

use super::plane::{Plane, Sweep};
use super::{Fib4Answer, Fib4Backend, Fib4Error, LocalKind, Prefix4, RouteTarget};

const GROUP: usize = 256;
const LAST_SLOT: u32 = (1 << 24) - 1;

/// The desired state: what was set, per kind of answer.
#[derive(Default)]
struct Planes {
    routes: Plane<RouteTarget>,
    customers: Plane<u32>,
    locals: Plane<LocalKind>,
}

#[derive(Clone, Copy)]
enum Which {
    Route,
    Customer,
    Local,
}

impl Planes {
    fn exposed(&self, which: Which, p: Prefix4, out: &mut Vec<(u64, u64)>) {
        match which {
            Which::Route => self.routes.exposed(p, out),
            Which::Customer => self.customers.exposed(p, out),
            Which::Local => self.locals.exposed(p, out),
        }
    }

    fn answer(&self, addr: u32) -> Fib4Answer {
        Fib4Answer {
            route: self.routes.lookup(addr),
            customer_id: self.customers.lookup(addr).unwrap_or(0),
            local: self.locals.lookup(addr),
        }
    }

    fn runs(&self, lo: u64, hi: u64) -> Runs<'_> {
        Runs {
            routes: self.routes.sweep(lo, hi).peekable(),
            customers: self.customers.sweep(lo, hi).peekable(),
            locals: self.locals.sweep(lo, hi).peekable(),
            current: Fib4Answer::default(),
            pos: lo,
            hi,
        }
    }
}

/// The combined answer over a range, as maximal runs `(first, last, answer)`.
struct Runs<'a> {
    routes: Peekable<Sweep<'a, RouteTarget>>,
    customers: Peekable<Sweep<'a, u32>>,
    locals: Peekable<Sweep<'a, LocalKind>>,
    current: Fib4Answer,
    pos: u64,
    hi: u64,
}

fn take_at<V: Copy>(sweep: &mut Peekable<Sweep<'_, V>>, addr: u64) -> Option<Option<V>> {
    let mut last = None;
    while let Some(&(a, v)) = sweep.peek() {
        if a != addr {
            break;
        }
        sweep.next();
        last = Some(v);
    }
    last
}

impl Runs<'_> {
    fn apply_at(&mut self, addr: u64) {
        if let Some(v) = take_at(&mut self.routes, addr) {
            self.current.route = v;
        }
        if let Some(v) = take_at(&mut self.customers, addr) {
            self.current.customer_id = v.unwrap_or(0);
        }
        if let Some(v) = take_at(&mut self.locals, addr) {
            self.current.local = v;
        }
    }

    fn next_break(&mut self) -> u64 {
        [
            self.routes.peek().map(|b| b.0),
            self.customers.peek().map(|b| b.0),
            self.locals.peek().map(|b| b.0),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(u64::MAX)
    }
}

impl Iterator for Runs<'_> {
    type Item = (u64, u64, Fib4Answer);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos > self.hi {
            return None;
        }
        let start = self.pos;
        self.apply_at(start);
        let answer = self.current;
        loop {
            let next = self.next_break();
            if next > self.hi {
                self.pos = self.hi + 1;
                return Some((start, self.hi, answer));
            }
            self.pos = next;
            self.apply_at(next);
            if self.current != answer {
                return Some((start, next - 1, answer));
            }
        }
    }
}

/// What a /24 should hold.
enum Desired<'a> {
    /// One answer for all of it: a tbl24 entry.
    Direct(Fib4Answer),
    /// An answer per address: a tbl8 group.
    Split(&'a [Fib4Answer; GROUP]),
}

/// Calls `f` with the desired state of every /24 in `first..=last`.
fn plan_region(
    planes: &Planes,
    first: u32,
    last: u32,
    buf: &mut [Fib4Answer; GROUP],
    mut f: impl FnMut(u32, Desired<'_>) -> Result<(), Fib4Error>,
) -> Result<(), Fib4Error> {
    let lo = u64::from(first) << 8;
    let hi = (u64::from(last) << 8) | 255;
    let mut runs = planes.runs(lo, hi);
    let mut run = runs.next().expect("a non-empty range has a run");
    for slot in first..=last {
        let s0 = u64::from(slot) << 8;
        let s1 = s0 + 255;
        while run.1 < s0 {
            run = runs.next().expect("runs cover the range");
        }
        if run.0 <= s0 && run.1 >= s1 {
            f(slot, Desired::Direct(run.2))?;
            continue;
        }
        let mut a = s0;
        while a <= s1 {
            while run.1 < a {
                run = runs.next().expect("runs cover the range");
            }
            let end = run.1.min(s1);
            buf[(a - s0) as usize..=(end - s0) as usize].fill(run.2);
            a = end + 1;
        }
        f(slot, Desired::Split(buf))?;
    }
    Ok(())
}

/// An interned answer.
#[derive(Clone, Copy, Default)]
struct ResultSlot {
    answer: Fib4Answer,
    /// Entries (tbl24 and tbl8) that point at it.
    refs: u32,
    live: bool,
}

/// What a change needs beyond what is allocated now.
#[derive(Default)]
struct Needs {
    groups: u32,
    answers: HashSet<Fib4Answer>,
}

/// The tables and their bookkeeping: interned results with reference counts,
/// tbl8 groups in use, and what is free or waiting for readers to finish.
struct Tables<B> {
    backend: B,
    slots: Vec<ResultSlot>,
    interned: HashMap<Fib4Answer, u32>,
    free_results: Vec<u32>,
    /// Unreferenced, but a lookup may still hold the index.
    pending_results: Vec<u32>,
    fresh_groups: u32,
    free_groups: Vec<u32>,
    /// Unreferenced, but a lookup may still be reading them.
    pending_groups: Vec<u32>,
    groups_used: u32,
    maybe_dead: Vec<u32>,
    /// The last answer looked up and its index: runs of /24s share an
    /// answer, so most lookups hit it. Valid until `finish` retires records.
    hint: Cell<Option<(Fib4Answer, u32)>>,
}

impl<B: Fib4Backend> Tables<B> {
    fn new(backend: B) -> Self {
        let empty = ResultSlot {
            live: true,
            ..Default::default()
        };
        Self {
            backend,
            slots: vec![empty],
            interned: HashMap::new(),
            free_results: vec![],
            pending_results: vec![],
            fresh_groups: 0,
            free_groups: vec![],
            pending_groups: vec![],
            groups_used: 0,
            maybe_dead: vec![],
            hint: Cell::new(None),
        }
    }

    fn index_of(&self, answer: &Fib4Answer) -> Option<u32> {
        if *answer == Fib4Answer::default() {
            return Some(0);
        }
        if let Some((a, i)) = self.hint.get() {
            if a == *answer {
                return Some(i);
            }
        }
        let index = self.interned.get(answer).copied();
        if let Some(i) = index {
            self.hint.set(Some((*answer, i)));
        }
        index
    }

    fn free_result_count(&self) -> u32 {
        let fresh = self.backend.result_capacity() - self.slots.len() as u32;
        fresh + (self.free_results.len() + self.pending_results.len()) as u32
    }

    fn free_group_count(&self) -> u32 {
        let fresh = self.backend.group_capacity() - self.fresh_groups;
        fresh + (self.free_groups.len() + self.pending_groups.len()) as u32
    }

    /// The index of `answer`, writing a new record if it has none.
    fn intern(&mut self, answer: Fib4Answer) -> Result<u32, Fib4Error> {
        if let Some(i) = self.index_of(&answer) {
            return Ok(i);
        }
        let index = if let Some(i) = self.free_results.pop() {
            i
        } else if (self.slots.len() as u32) < self.backend.result_capacity() {
            self.slots.push(ResultSlot::default());
            self.slots.len() as u32 - 1
        } else if !self.pending_results.is_empty() {
            self.backend.wait_for_readers();
            self.free_results.append(&mut self.pending_results);
            self.free_results.pop().expect("just filled")
        } else {
            let limit = self.backend.result_capacity();
            return Err(Fib4Error::ResultsFull {
                change: "writing the table".into(),
                needed: 1,
                free: 0,
                limit,
            });
        };
        // The record is complete before any entry points at it.
        self.backend.set_result(index, answer.to_record());
        self.slots[index as usize] = ResultSlot {
            answer,
            refs: 0,
            live: true,
        };
        self.interned.insert(answer, index);
        Ok(index)
    }

    fn add_ref(&mut self, index: u32) {
        if index != 0 {
            self.slots[index as usize].refs += 1;
        }
    }

    fn drop_ref(&mut self, index: u32) {
        if index != 0 {
            let slot = &mut self.slots[index as usize];
            slot.refs -= 1;
            if slot.refs == 0 {
                self.maybe_dead.push(index);
            }
        }
    }

    fn alloc_group(&mut self) -> Result<u32, Fib4Error> {
        let group = if let Some(g) = self.free_groups.pop() {
            g
        } else if self.fresh_groups < self.backend.group_capacity() {
            self.fresh_groups += 1;
            self.fresh_groups - 1
        } else if !self.pending_groups.is_empty() {
            self.backend.wait_for_readers();
            self.free_groups.append(&mut self.pending_groups);
            self.free_groups.pop().expect("just filled")
        } else {
            let limit = self.backend.group_capacity();
            return Err(Fib4Error::GroupsFull {
                change: "writing the table".into(),
                needed: 1,
                free: 0,
                limit,
            });
        };
        self.groups_used += 1;
        Ok(group)
    }

    /// Adds what `desired` for `slot` needs that is not allocated yet. Stops
    /// collecting answers one beyond `answer_limit` (enough to refuse).
    fn count(&self, slot: u32, desired: Desired<'_>, needs: &mut Needs, answer_limit: u32) {
        let mut new_answer = |a: &Fib4Answer| {
            if needs.answers.len() as u32 <= answer_limit && self.index_of(a).is_none() {
                needs.answers.insert(*a);
            }
        };
        match desired {
            Desired::Direct(a) => new_answer(&a),
            Desired::Split(all) => {
                if self.backend.tbl24(slot) & FIB4_EXT == 0 {
                    needs.groups += 1;
                }
                let mut last = None;
                for a in all.iter() {
                    if last != Some(a) {
                        new_answer(a);
                        last = Some(a);
                    }
                }
            }
        }
    }

    /// Makes `slot` hold `desired`, writing only entries that change.
    fn apply(&mut self, slot: u32, desired: Desired<'_>) -> Result<(), Fib4Error> {
        let current = self.backend.tbl24(slot);
        match desired {
            Desired::Direct(answer) => {
                if current & FIB4_EXT == 0 && self.index_of(&answer) == Some(current) {
                    return Ok(());
                }
                let index = self.intern(answer)?;
                self.backend.set_tbl24(slot, index);
                self.add_ref(index);
                if current & FIB4_EXT == 0 {
                    self.drop_ref(current);
                } else {
                    // No new lookup reaches the group; it is reused only
                    // after the lookups running now have finished.
                    let group = current & !FIB4_EXT;
                    for i in 0..GROUP as u32 {
                        let e = self.backend.tbl8(group, i);
                        self.drop_ref(e);
                    }
                    self.pending_groups.push(group);
                    self.groups_used -= 1;
                }
            }
            Desired::Split(all) => {
                let mut cache: Option<(Fib4Answer, u32)> = None;
                if current & FIB4_EXT == 0 {
                    // Fill the group, then point tbl24 at it.
                    let group = self.alloc_group()?;
                    for (i, answer) in all.iter().enumerate() {
                        let index = match cache {
                            Some((a, idx)) if a == *answer => idx,
                            _ => self.intern(*answer)?,
                        };
                        cache = Some((*answer, index));
                        self.backend.set_tbl8(group, i as u32, index);
                        self.add_ref(index);
                    }
                    self.backend.set_tbl24(slot, FIB4_EXT | group);
                    self.drop_ref(current);
                } else {
                    let group = current & !FIB4_EXT;
                    for (i, answer) in all.iter().enumerate() {
                        let index = match cache {
                            Some((a, idx)) if a == *answer => Some(idx),
                            _ => self.index_of(answer),
                        };
                        let old = self.backend.tbl8(group, i as u32);
                        if index == Some(old) {
                            cache = Some((*answer, old));
                            continue;
                        }
                        let index = self.intern(*answer)?;
                        cache = Some((*answer, index));
                        self.backend.set_tbl8(group, i as u32, index);
                        self.add_ref(index);
                        self.drop_ref(old);
                    }
                }
            }
        }
        Ok(())
    }

    /// Retires the records no entry points at any more.
    fn finish(&mut self) {
        self.hint.set(None);
        for index in std::mem::take(&mut self.maybe_dead) {
            let slot = &mut self.slots[index as usize];
            if slot.live && slot.refs == 0 {
                slot.live = false;
                // An adopted table may hold an answer twice; keep the other.
                if self.interned.get(&slot.answer) == Some(&index) {
                    self.interned.remove(&slot.answer);
                }
                self.pending_results.push(index);
            }
        }
    }

    fn lookup(&self, addr: u32) -> u32 {
        let entry = self.backend.tbl24(addr >> 8);
        if entry & FIB4_EXT == 0 {
            entry
        } else {
            self.backend.tbl8(entry & !FIB4_EXT, addr & 0xff)
        }
    }
}

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
