//! The tables and their bookkeeping: interned answers with reference counts,
//! tbl8 groups, and what waits for readers before reuse.
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use pop_common::fib4::FIB4_EXT;

use super::desired::{Desired, GROUP};
use super::{Fib4Answer, Fib4Backend, Fib4Error};

/// An interned answer.
#[derive(Clone, Copy, Default)]
pub(super) struct ResultSlot {
    pub(super) answer: Fib4Answer,
    /// Entries (tbl24 and tbl8) that point at it.
    pub(super) refs: u32,
    pub(super) live: bool,
}

/// What a change needs beyond what is allocated now.
#[derive(Default)]
pub(super) struct Needs {
    pub(super) groups: u32,
    pub(super) answers: HashSet<Fib4Answer>,
    /// The answer of the last uniform /24 counted: a wide prefix (a default
    /// route spans 2^16 blocks of 256 /24s) repeats it slot after slot, and
    /// counting it again would only hash it again.
    pub(super) last_direct: Option<Fib4Answer>,
}

/// The tables and their bookkeeping: interned results with reference counts,
/// tbl8 groups in use, and what is free or waiting for readers to finish.
pub(super) struct Tables<B> {
    pub(super) backend: B,
    pub(super) slots: Vec<ResultSlot>,
    pub(super) interned: HashMap<Fib4Answer, u32>,
    pub(super) free_results: Vec<u32>,
    /// Unreferenced, but a lookup may still hold the index.
    pub(super) pending_results: Vec<u32>,
    pub(super) fresh_groups: u32,
    pub(super) free_groups: Vec<u32>,
    /// Unreferenced, but a lookup may still be reading them.
    pub(super) pending_groups: Vec<u32>,
    pub(super) groups_used: u32,
    pub(super) maybe_dead: Vec<u32>,
    /// The last answer looked up and its index: runs of /24s share an
    /// answer, so most lookups hit it. Valid until `finish` retires records.
    pub(super) hint: Cell<Option<(Fib4Answer, u32)>>,
}

impl<B: Fib4Backend> Tables<B> {
    pub(super) fn new(backend: B) -> Self {
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

    pub(super) fn index_of(&self, answer: &Fib4Answer) -> Option<u32> {
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

    pub(super) fn free_result_count(&self) -> u32 {
        let fresh = self.backend.result_capacity() - self.slots.len() as u32;
        fresh + (self.free_results.len() + self.pending_results.len()) as u32
    }

    pub(super) fn free_group_count(&self) -> u32 {
        let fresh = self.backend.group_capacity() - self.fresh_groups;
        fresh + (self.free_groups.len() + self.pending_groups.len()) as u32
    }

    /// The index of `answer`, writing a new record if it has none.
    pub(super) fn intern(&mut self, answer: Fib4Answer) -> Result<u32, Fib4Error> {
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

    pub(super) fn add_ref(&mut self, index: u32) {
        if index != 0 {
            self.slots[index as usize].refs += 1;
        }
    }

    pub(super) fn drop_ref(&mut self, index: u32) {
        if index != 0 {
            let slot = &mut self.slots[index as usize];
            slot.refs -= 1;
            if slot.refs == 0 {
                self.maybe_dead.push(index);
            }
        }
    }

    pub(super) fn alloc_group(&mut self) -> Result<u32, Fib4Error> {
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
    pub(super) fn count(
        &self,
        slot: u32,
        desired: Desired<'_>,
        needs: &mut Needs,
        answer_limit: u32,
    ) {
        let mut new_answer = |a: &Fib4Answer| {
            if needs.answers.len() as u32 <= answer_limit && self.index_of(a).is_none() {
                needs.answers.insert(*a);
            }
        };
        match desired {
            Desired::Direct(a) => {
                if needs.last_direct != Some(a) {
                    new_answer(&a);
                    needs.last_direct = Some(a);
                }
            }
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
    pub(super) fn apply(&mut self, slot: u32, desired: Desired<'_>) -> Result<(), Fib4Error> {
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
    pub(super) fn finish(&mut self) {
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

    pub(super) fn lookup(&self, addr: u32) -> u32 {
        let entry = self.backend.tbl24(addr >> 8);
        if entry & FIB4_EXT == 0 {
            entry
        } else {
            self.backend.tbl8(entry & !FIB4_EXT, addr & 0xff)
        }
    }
}
