//! The differential fuzzer: random tables and random, mutated frames through
//! the real XDP program (BPF_PROG_TEST_RUN, [`crate::testrun::Harness`]) and
//! through the reference model ([`crate::model`]); any difference in action,
//! output bytes or counters is a [`Difference`] with a printable reproduction.
//!
//! Tables are drawn from a seed ([`tables`]); a reproduction is the tables
//! (JSON of the model's desired state), the ingress port and the frame's hex,
//! which is also the corpus format (`tests/fuzz-corpus/*.case`, see [`Case`]).
use std::{collections::BTreeMap, rc::Rc};

use pop_common::{
    Action, Direction, DropReason, IcmpType, PassReason, PopCounter, PopCustomerCounters,
    PopIfaceCounters, NO_IFACE_SLOT,
};

use crate::{
    model::{Counter, Desired, Model, Outcome, Verdict},
    testrun::{Harness, Port},
};

mod case;
mod frames;
mod tables;
pub use case::{hex, Case, Difference};
pub use frames::random_frame;
pub use tables::{clear, fill, tables};

/// A small, seedable PRNG (splitmix64): the fuzzer needs no crate for it.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next_u64() % den < num
    }
    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The made-up ifindex of the VLAN device (id [`VLAN_ID`]) on port A.
pub const VLAN_DEV: u32 = 900;
/// The VLAN id served on port A.
pub const VLAN_ID: u16 = 100;
/// MAC of a macvlan (VRRP) device on port A.
pub const UPPER_MAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x01];

/// Every counter the model can move, for tables over these slots and customers
/// (and the record of unknown interfaces).
fn all_counters(d: &Desired) -> Vec<Counter> {
    let mut all = vec![];
    let mut slots: Vec<u32> = d.ifaces.iter().map(|i| i.slot).collect();
    slots.push(NO_IFACE_SLOT);
    slots.sort();
    slots.dedup();
    for s in slots {
        all.extend(Action::ALL.iter().map(|a| Counter::Iface(s, *a)));
        all.extend(DropReason::ALL.iter().map(|r| Counter::IfaceDrop(s, *r)));
        all.extend(PassReason::ALL.iter().map(|r| Counter::IfacePass(s, *r)));
    }
    all.extend(DropReason::ALL.iter().map(|r| Counter::Drop(*r)));
    all.extend(PassReason::ALL.iter().map(|r| Counter::Pass(*r)));
    all.extend(IcmpType::ALL.iter().map(|k| Counter::Icmp(*k)));
    for c in &d.customers {
        all.extend(Direction::ALL.iter().map(|x| Counter::Cust(c.id, *x)));
        all.extend(DropReason::ALL.iter().map(|r| Counter::CustDrop(c.id, *r)));
    }
    all
}

/// Packets and bytes.
type Moved = (u64, u64);

type Snapshot = BTreeMap<Counter, Moved>;

/// Every counter of `all`, each record read once. The drop and pass totals
/// are summed over the records of the slots in `all` (the model's) as the
/// metrics sum over all slots: a packet counted in another slot, or twice,
/// moves them differently from the model's totals.
fn snapshot(h: &Harness, all: &[Counter]) -> Snapshot {
    fn read<T>(what: &str, r: crate::testrun::Result<T>) -> T {
        r.unwrap_or_else(|e| panic!("reading {what}: {e}"))
    }
    let mut ifaces: BTreeMap<u32, PopIfaceCounters> = BTreeMap::new();
    let mut customers: BTreeMap<u32, PopCustomerCounters> = BTreeMap::new();
    for c in all {
        match *c {
            Counter::Iface(s, _) | Counter::IfaceDrop(s, _) | Counter::IfacePass(s, _) => {
                ifaces
                    .entry(s)
                    .or_insert_with(|| read("interface record", h.iface_record(s)));
            }
            Counter::Cust(id, _) | Counter::CustDrop(id, _) => {
                customers
                    .entry(id)
                    .or_insert_with(|| read("customer record", h.customer_record(id)));
            }
            _ => {}
        }
    }
    let totals = PopIfaceCounters::sum(ifaces.values());
    let pair = |c: PopCounter| (c.packets, c.bytes);
    all.iter()
        .map(|c| {
            let v = match *c {
                Counter::Iface(s, a) => pair(ifaces[&s].action[a as usize]),
                Counter::IfaceDrop(s, r) => pair(ifaces[&s].drop[r as usize]),
                Counter::IfacePass(s, r) => pair(ifaces[&s].pass[r as usize]),
                Counter::Drop(r) => pair(totals.drop[r as usize]),
                Counter::Pass(r) => pair(totals.pass[r as usize]),
                Counter::Cust(id, d) => pair(customers[&id].dir[d as usize]),
                Counter::CustDrop(id, r) => pair(customers[&id].drop[r as usize]),
                Counter::Icmp(k) => pair(read("ICMP counter", h.icmp_stats(k))),
            };
            (*c, v)
        })
        .collect()
}

/// The fuzzer's environment: the loaded program, its three ports, the model.
pub struct Fuzzer {
    /// The real program.
    pub harness: Harness,
    /// Port A (with the VLAN device) and port B.
    pub ports: [Port; 2],
    /// An ifindex pop does not serve.
    pub unknown: u32,
    /// The model of the current tables.
    pub model: Model,
    table_seed: u64,
    tables: Rc<Desired>,
    counters: Vec<Counter>,
    /// Frames per verdict so far.
    pub histogram: BTreeMap<Verdict, u64>,
    /// Frames run so far.
    pub frames: u64,
}

/// How many frames run between counter comparisons.
pub const BATCH: usize = 2000;

impl Fuzzer {
    /// A fuzzer over `harness` and ports `a`, `b` (veths in this thread's
    /// namespace) and `unknown` (an interface pop does not serve).
    pub fn new(harness: Harness, a: Port, b: Port, unknown: u32) -> Fuzzer {
        Fuzzer {
            harness,
            ports: [a, b],
            unknown,
            model: Model::new(Desired::default()),
            table_seed: u64::MAX,
            tables: Rc::new(Desired::default()),
            counters: vec![],
            histogram: BTreeMap::new(),
            frames: 0,
        }
    }

    /// Loads the tables of `seed` into the program and the model.
    pub fn use_tables(&mut self, seed: u64) {
        let d = tables(seed, &self.ports[0], &self.ports[1]);
        self.use_desired(seed, &Rc::new(d));
    }

    /// Loads `d` (drawn from `seed`) into the program and the model.
    pub fn use_desired(&mut self, seed: u64, d: &Rc<Desired>) {
        if seed == self.table_seed && (Rc::ptr_eq(d, &self.tables) || **d == *self.tables) {
            return;
        }
        self.tables = d.clone();
        let d = (**d).clone();
        clear(&mut self.harness).expect("clearing the tables");
        fill(&mut self.harness, &d).expect("filling the tables");
        self.counters = all_counters(&d);
        let breakage = self.model.breakage;
        self.model = Model::new(d);
        self.model.breakage = breakage;
        self.table_seed = seed;
    }

    fn ifindex(&self, ingress: u8) -> u32 {
        match ingress {
            0 => self.ports[0].ifindex,
            1 => self.ports[1].ifindex,
            _ => self.unknown,
        }
    }

    fn difference(&self, case: &Case, what: String, prog: (u32, Vec<u8>)) -> Difference {
        Difference {
            case: case.clone(),
            what,
            program: prog,
            model: self.model.predict(&case.frame, self.ifindex(case.ingress)),
        }
    }

    /// Runs `case` through both and compares action, bytes and, when the
    /// model allows several answers (ECMP) that count differently, that
    /// frame's counters; returns the model's outcome that matched.
    fn check_one(&mut self, case: &Case) -> Result<Outcome, Box<Difference>> {
        self.use_desired(case.table_seed, &case.tables);
        let port = self.ifindex(case.ingress);
        let answers = self.model.predict(&case.frame, port);
        let ambiguous = answers.iter().any(|o| o.counters != answers[0].counters);
        let before = ambiguous.then(|| snapshot(&self.harness, &self.counters));
        let prog = self
            .harness
            .run(&case.frame, port)
            .expect("BPF_PROG_TEST_RUN");
        let mut matching = answers
            .into_iter()
            .filter(|o| o.action == prog.0 && o.out == prog.1);
        let Some(before) = before else {
            return matching.next().ok_or_else(|| {
                Box::new(self.difference(case, "action or output bytes".into(), prog.clone()))
            });
        };
        let after = snapshot(&self.harness, &self.counters);
        matching
            .find(|o| self.counters_moved_as(&before, &after, o).is_none())
            .ok_or_else(|| {
                Box::new(self.difference(
                    case,
                    "action, output bytes or counters (ECMP)".into(),
                    prog,
                ))
            })
    }

    /// The first counter that did not move between `before` and `after` as
    /// outcome `o` says, with how it moved.
    fn counters_moved_as(
        &self,
        before: &Snapshot,
        after: &Snapshot,
        o: &Outcome,
    ) -> Option<(Counter, Moved, Moved)> {
        self.counters.iter().find_map(|c| {
            let want = o
                .counters
                .iter()
                .find(|(x, _)| x == c)
                .map_or((0, 0), |(_, b)| (1, *b));
            let got = (after[c].0 - before[c].0, after[c].1 - before[c].1);
            (got != want).then_some((*c, got, want))
        })
    }

    /// Runs `cases` (all with one table seed), comparing each frame's
    /// action and bytes and, after the batch, every counter; a counter
    /// difference is pinned on its frame by running the batch again one by one.
    pub fn run_batch(&mut self, cases: &[Case]) -> Result<(), Box<Difference>> {
        let Some(first) = cases.first() else {
            return Ok(());
        };
        self.use_desired(first.table_seed, &first.tables);
        let before = snapshot(&self.harness, &self.counters);
        let mut expected: BTreeMap<Counter, (u64, u64)> = BTreeMap::new();
        for case in cases {
            let o = self.check_one(case)?;
            *self.histogram.entry(o.verdict).or_default() += 1;
            self.frames += 1;
            for (c, bytes) in o.counters {
                let e = expected.entry(c).or_default();
                e.0 += 1;
                e.1 += bytes;
            }
        }
        let after = snapshot(&self.harness, &self.counters);
        let differs = self.counters.iter().any(|c| {
            (after[c].0 - before[c].0, after[c].1 - before[c].1)
                != expected.get(c).copied().unwrap_or_default()
        });
        if !differs {
            return Ok(());
        }
        // Find the frame.
        for case in cases {
            let before = snapshot(&self.harness, &self.counters);
            let o = self.check_one(case)?;
            let after = snapshot(&self.harness, &self.counters);
            if let Some((c, got, want)) = self.counters_moved_as(&before, &after, &o) {
                let prog = self
                    .harness
                    .run(&case.frame, self.ifindex(case.ingress))
                    .expect("BPF_PROG_TEST_RUN");
                return Err(Box::new(self.difference(
                    case,
                    format!("counter {c:?}: program moved it by {got:?}, model by {want:?}"),
                    prog,
                )));
            }
        }
        panic!("the batch's counters differ, but no single frame's do");
    }

    /// Draws `count` frames from `seed`, `frames_per_table` per table set.
    pub fn run_random(
        &mut self,
        seed: u64,
        count: u64,
        frames_per_table: u64,
    ) -> Result<(), Box<Difference>> {
        let mut r = Rng::new(seed);
        let mut done = 0u64;
        let mut batch = Vec::with_capacity(BATCH);
        while done < count {
            let table_seed = r.next_u64();
            self.use_tables(table_seed);
            let n = frames_per_table.min(count - done);
            for _ in 0..n {
                let (ingress, frame) = random_frame(&mut r, &self.model.desired, &self.ports);
                batch.push(Case {
                    table_seed,
                    tables: self.tables.clone(),
                    ingress,
                    frame,
                });
                if batch.len() == BATCH {
                    self.run_batch(&batch)?;
                    batch.clear();
                }
            }
            self.run_batch(&batch)?;
            batch.clear();
            done += n;
        }
        Ok(())
    }
}
