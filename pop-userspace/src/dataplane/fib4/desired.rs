//! The desired state (three prefix planes) and its sweep into what each /24
//! of the table should hold.
use std::iter::Peekable;

use super::plane::{Plane, Sweep};
use super::{Fib4Answer, Fib4Error, LocalKind, Prefix4, RouteTarget};

/// Entries of a tbl24 block and of a tbl8 group.
pub(super) const GROUP: usize = 256;
/// The last /24.
pub(super) const LAST_SLOT: u32 = (1 << 24) - 1;

/// The desired state: what was set, per kind of answer.
#[derive(Default)]
pub(super) struct Planes {
    pub(super) routes: Plane<RouteTarget>,
    pub(super) customers: Plane<u32>,
    pub(super) locals: Plane<LocalKind>,
}

#[derive(Clone, Copy)]
pub(super) enum Which {
    Route,
    Customer,
    Local,
}

impl Planes {
    pub(super) fn exposed(&self, which: Which, p: Prefix4, out: &mut Vec<(u64, u64)>) {
        match which {
            Which::Route => self.routes.exposed(p, out),
            Which::Customer => self.customers.exposed(p, out),
            Which::Local => self.locals.exposed(p, out),
        }
    }

    pub(super) fn answer(&self, addr: u32) -> Fib4Answer {
        Fib4Answer {
            route: self.routes.lookup(addr),
            customer_id: self.customers.lookup(addr).unwrap_or(0),
            local: self.locals.lookup(addr),
        }
    }

    pub(super) fn runs(&self, lo: u64, hi: u64) -> Runs<'_> {
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
pub(super) struct Runs<'a> {
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
pub(super) enum Desired<'a> {
    /// One answer for all of it: a tbl24 entry.
    Direct(Fib4Answer),
    /// An answer per address: a tbl8 group.
    Split(&'a [Fib4Answer; GROUP]),
}

/// Calls `f` with the desired state of every /24 in `first..=last`.
pub(super) fn plan_region(
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
