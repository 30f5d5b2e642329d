//! One ACL rule added or deleted in O(change), on top of a full compile
//! ([`super::compile`]); the design and why are in docs/acl.md,
//! "Single changes".
//!
//! A full compile builds at most [`BASE_TREES`] trees per family (the *base*
//! trees). Each family keeps one more tree, the *change tree*, for the rules
//! added since; it is small and rebuilt whole on every change, after the base
//! trees' nodes and leaf blocks. A deleted rule's slot gets [`DEAD_RULE`],
//! which no key matches: the base trees may keep pointing at it. Where the
//! deleted rule covered a whole region of a base tree, the tree dropped the
//! later rules there (they could never be the first match); those come back
//! through the change tree. Every rule keeps its slot, so the data plane
//! orders matches by priority and counts hits by slot, and no other rule
//! moves. Once the change trees hold [`CHANGE_LIMIT`] rules, or the slots run
//! out, the caller compiles in full again (`apply` and a restart always do).
//!
//! [`Incremental`] holds what both copies of the maps hold; a change returns
//! the element writes ([`AclDelta`]) that bring a copy from the old rule set
//! to the new one, which the controller writes into the inactive copy, flips,
//! and then writes into the other copy too, so both stay equal.
use std::collections::{BTreeSet, HashMap, HashSet};

use pop_common::{PopAclMeta, PopAclRule, ACL_FIELDS, MAX_ACL_NODES, MAX_ACL_RULES};

use super::tree::{families, shape, to_rectangle, Builder, BASE_TREES};
use crate::config::validate::ValidAcl;
use crate::dataplane::acl::{AclDelta, CompiledAcl, DEAD_RULE};

/// Rules the change trees may hold (both families) before the caller must
/// compile in full: each change rebuilds them, so this bounds its cost.
pub const CHANGE_LIMIT: usize = 1024;

/// Why a change cannot be made incrementally.
#[derive(Debug, PartialEq, Eq)]
pub enum NotIncremental {
    /// The change trees are full or the slots ran out: compile in full.
    CompileInFull,
    /// The change cannot be compiled at all (the text names the limit).
    Refused(String),
}

/// The rule set both ACL copies hold, and how to change it one rule at a time.
#[derive(Clone, Debug)]
pub struct Incremental {
    /// What the maps hold (rules by slot, nodes, leaf blocks, meta, filter).
    image: CompiledAcl,
    /// The full compile's meta and first stage (base trees only).
    base_meta: PopAclMeta,
    base_filter: Vec<u8>,
    /// Live rules: priority → slot.
    slot_of: HashMap<u32, u32>,
    /// Slots the base trees point at (never reused before a full compile).
    in_base: HashSet<u32>,
    truncators: HashSet<u32>,
    /// Slots no copy points at.
    free: BTreeSet<u32>,
}

fn intersects(a: &PopAclRule, b: &PopAclRule) -> bool {
    (0..ACL_FIELDS).all(|f| a.lo[f] <= b.hi[f] && b.lo[f] <= a.hi[f])
}

impl Incremental {
    /// Starts from a full compile as written (stable slots, see
    /// `AclMaps::write_copy`), which both copies hold.
    pub fn new(image: CompiledAcl) -> Self {
        let mut base_meta = image.meta;
        let mut base_filter = image.filter.clone();
        let l = &image.layout;
        // The change trees of `image` (none after a full compile) are not
        // base: each is the tree whose root is in the change area.
        for (is_v6, d) in [(false, &l.delta_v4), (true, &l.delta_v6)] {
            if d.is_empty() {
                continue;
            }
            let m = &mut base_meta;
            let (trees, roots, firsts) = if is_v6 {
                (&mut m.trees_v6, &mut m.root_v6, &mut m.first_rule_v6)
            } else {
                (&mut m.trees_v4, &mut m.root_v4, &mut m.first_rule_v4)
            };
            let n = *trees as usize;
            let in_changes = |r: u32| {
                if r & pop_common::ACL_REF_LEAF != 0 {
                    (r & pop_common::ACL_REF_START) as usize >= l.base_blocks
                } else {
                    r as usize >= l.base_nodes
                }
            };
            if let Some(t) = (0..n).find(|&t| in_changes(roots[t])) {
                roots.copy_within(t + 1..n, t);
                firsts.copy_within(t + 1..n, t);
                roots[n - 1] = 0;
                firsts[n - 1] = 0;
                *trees -= 1;
                if !base_filter.is_empty() {
                    remove_bit(&mut base_filter, is_v6, t);
                }
            }
        }
        let in_base: HashSet<u32> = l
            .groups_v4
            .iter()
            .chain(&l.groups_v6)
            .flatten()
            .copied()
            .collect();
        let mut slot_of = HashMap::new();
        let mut free = BTreeSet::new();
        for (slot, r) in image.rules.iter().enumerate() {
            if r.priority == DEAD_RULE.priority {
                if !in_base.contains(&(slot as u32)) {
                    free.insert(slot as u32);
                }
            } else {
                slot_of.insert(r.priority, slot as u32);
            }
        }
        Incremental {
            truncators: l.truncators.iter().copied().collect(),
            image,
            base_meta,
            base_filter,
            slot_of,
            in_base,
            free,
        }
    }

    /// What the maps hold.
    pub fn image(&self) -> &CompiledAcl {
        &self.image
    }

    /// The slot of the rule with `priority`, if the maps hold it.
    pub fn slot(&self, priority: u32) -> Option<u32> {
        self.slot_of.get(&priority).copied()
    }

    /// Rules in the change trees.
    pub fn changed_rules(&self) -> usize {
        self.image.layout.delta_v4.len() + self.image.layout.delta_v6.len()
    }

    /// Adds `rule` (its priority not in use; `in_ifindex` its interface's
    /// ifindex). A rule on an interface that does not exist is left out of
    /// the data plane, like a full compile does: an empty delta.
    pub fn add(
        &mut self,
        rule: &ValidAcl,
        in_ifindex: Option<u32>,
    ) -> Result<AclDelta, NotIncremental> {
        if rule.in_iface.is_some() && in_ifindex.is_none() {
            return Ok(AclDelta::default());
        }
        if rule.priority == DEAD_RULE.priority {
            return Err(NotIncremental::Refused(format!(
                "acl {}: priority exceeds the maximum of {}",
                rule.priority,
                DEAD_RULE.priority - 1
            )));
        }
        let rect = to_rectangle(rule, in_ifindex);
        let slot = match self.free.first() {
            Some(&s) => s,
            None if self.image.rules.len() < MAX_ACL_RULES as usize => {
                self.image.rules.len() as u32
            }
            None => return Err(NotIncremental::CompileInFull),
        };
        let (is_v4, is_v6) = families(rule);
        let mut d4 = self.image.layout.delta_v4.clone();
        let mut d6 = self.image.layout.delta_v6.clone();
        if is_v4 {
            d4.push(slot);
        }
        if is_v6 {
            d6.push(slot);
        }
        // Put the rule in place to build; undone on failure.
        let grew = slot as usize == self.image.rules.len();
        if grew {
            self.image.rules.push(rect);
            self.image.layout.families.push(0);
            self.image.layout.shapes.push(0);
        }
        let old = std::mem::replace(&mut self.image.rules[slot as usize], rect);
        let fam = u8::from(is_v4) | u8::from(is_v6) << 1;
        let old_fam = std::mem::replace(&mut self.image.layout.families[slot as usize], fam);
        self.image.layout.shapes[slot as usize] = shape(rule);
        match self.rebuild(d4, d6, &[(slot, rect)], vec![slot]) {
            Ok(delta) => {
                self.free.remove(&slot);
                self.slot_of.insert(rule.priority, slot);
                Ok(delta)
            }
            Err(e) => {
                self.image.rules[slot as usize] = old;
                self.image.layout.families[slot as usize] = old_fam;
                if grew {
                    self.image.rules.pop();
                    self.image.layout.families.pop();
                    self.image.layout.shapes.pop();
                }
                Err(e)
            }
        }
    }

    /// Deletes the rule with `priority`; an empty delta when the data plane
    /// does not hold it (its interface does not exist).
    pub fn remove(&mut self, priority: u32) -> Result<AclDelta, NotIncremental> {
        let Some(&slot) = self.slot_of.get(&priority) else {
            return Ok(AclDelta::default());
        };
        let rect = self.image.rules[slot as usize];
        let l = &self.image.layout;
        let mut d4: Vec<u32> = l.delta_v4.iter().copied().filter(|&s| s != slot).collect();
        let mut d6: Vec<u32> = l.delta_v6.iter().copied().filter(|&s| s != slot).collect();
        if self.truncators.contains(&slot) {
            // Rules the deleted one hid in some region of its base trees.
            for (groups, d) in [(&l.groups_v4, &mut d4), (&l.groups_v6, &mut d6)] {
                let mut have: HashSet<u32> = d.iter().copied().collect();
                for group in groups.iter().filter(|g| g.contains(&slot)) {
                    for &m in group {
                        let r = &self.image.rules[m as usize];
                        if r.priority > priority
                            && r.priority != DEAD_RULE.priority
                            && intersects(r, &rect)
                            && have.insert(m)
                        {
                            d.push(m);
                        }
                    }
                }
            }
        }
        let prio = |s: &u32| self.image.rules[*s as usize].priority;
        d4.sort_by_key(prio);
        d6.sort_by_key(prio);
        self.image.rules[slot as usize] = DEAD_RULE;
        match self.rebuild(d4, d6, &[(slot, DEAD_RULE)], Vec::new()) {
            Ok(delta) => {
                self.slot_of.remove(&priority);
                if !self.in_base.contains(&slot) {
                    self.free.insert(slot);
                }
                Ok(delta)
            }
            Err(e) => {
                self.image.rules[slot as usize] = rect;
                Err(e)
            }
        }
    }

    /// Rebuilds the change trees over `d4`/`d6` (slots; `image.rules` holds
    /// the new rules already) and returns the writes, `rules` included; on
    /// success `image` is the new rule set.
    fn rebuild(
        &mut self,
        mut d4: Vec<u32>,
        mut d6: Vec<u32>,
        rules: &[(u32, PopAclRule)],
        fresh_slots: Vec<u32>,
    ) -> Result<AclDelta, NotIncremental> {
        let prio = |s: &u32| self.image.rules[*s as usize].priority;
        d4.sort_by_key(prio);
        d6.sort_by_key(prio);
        if d4.len() + d6.len() > CHANGE_LIMIT {
            return Err(NotIncremental::CompileInFull);
        }
        // Ranks over both families' change rules, by priority.
        let mut all: Vec<u32> = d4.iter().chain(&d6).copied().collect();
        all.sort_by_key(prio);
        all.dedup();
        let rank: HashMap<u32, u32> = all
            .iter()
            .enumerate()
            .map(|(r, &s)| (s, r as u32))
            .collect();
        let ranked: Vec<PopAclRule> = all.iter().map(|&s| self.image.rules[s as usize]).collect();
        let base_nodes = self.image.layout.base_nodes;
        let base_blocks = self.image.layout.base_blocks;
        let mut builder = Builder::new(&ranked, &all, base_nodes, base_blocks);
        let mut meta = self.base_meta;
        let mut filter = self.base_filter.clone();
        for (is_v6, d) in [(false, &d4), (true, &d6)] {
            if d.is_empty() {
                continue;
            }
            let ids: Vec<u32> = d.iter().map(|s| rank[s]).collect();
            let root = builder.tree(ids, is_v6).map_err(NotIncremental::Refused)?;
            let (trees, roots, firsts) = if is_v6 {
                (
                    &mut meta.trees_v6,
                    &mut meta.root_v6,
                    &mut meta.first_rule_v6,
                )
            } else {
                (
                    &mut meta.trees_v4,
                    &mut meta.root_v4,
                    &mut meta.first_rule_v4,
                )
            };
            // Trees go by ascending first priority (the data plane stops at
            // the first tree that starts after a match): the change tree
            // goes in its place, the later trees and their first-stage bits
            // one up.
            let n = *trees as usize;
            debug_assert!(n <= BASE_TREES);
            let first = prio(&d[0]);
            let t = firsts[..n].partition_point(|&f| f <= first);
            roots.copy_within(t..n, t + 1);
            firsts.copy_within(t..n, t + 1);
            roots[t] = root;
            firsts[t] = first;
            *trees += 1;
            if !filter.is_empty() {
                insert_bit(&mut filter, is_v6, t);
                super::filter::mark_tree(&mut filter, &self.image.rules, d, is_v6, t);
            }
        }
        let (nodes, blocks, _) = builder.finish();
        if base_nodes + nodes.len() > MAX_ACL_NODES as usize {
            return Err(NotIncremental::Refused(format!(
                "acl: the rules compile to {} tree nodes, more than the maximum of {MAX_ACL_NODES}",
                base_nodes + nodes.len()
            )));
        }
        meta.rule_count = self.image.rules.len() as u32;
        meta.node_count = (base_nodes + nodes.len()) as u32;
        let mut delta = AclDelta {
            rules: rules.to_vec(),
            fresh_slots,
            ..Default::default()
        };
        for (i, node) in nodes.iter().enumerate() {
            if self.image.nodes.get(base_nodes + i) != Some(node) {
                delta.nodes.push(((base_nodes + i) as u32, *node));
            }
        }
        for (i, block) in blocks.iter().enumerate() {
            if self.image.leaf_rules.get(base_blocks + i) != Some(block) {
                delta.leaf_rules.push(((base_blocks + i) as u32, *block));
            }
        }
        if filter != self.image.filter {
            delta.filter = Some(filter.clone());
        }
        if meta != self.image.meta {
            delta.meta = Some(meta);
        }
        // Commit.
        self.image.nodes.truncate(base_nodes);
        self.image.nodes.extend(nodes);
        self.image.leaf_rules.truncate(base_blocks);
        self.image.leaf_rules.extend(blocks);
        self.image.filter = filter;
        self.image.meta = meta;
        self.image.layout.delta_v4 = d4;
        self.image.layout.delta_v6 = d6;
        Ok(delta)
    }
}

/// The family's half of the first stage.
fn family_cells(filter: &mut [u8], is_v6: bool) -> &mut [u8] {
    use pop_common::{ACL_FILTER_CELLS, ACL_FILTER_FIELDS};
    let half = ACL_FILTER_FIELDS * ACL_FILTER_CELLS;
    let start = usize::from(is_v6) * half;
    &mut filter[start..start + half]
}

/// Removes bit `t` of the family in every cell (a tree taken out): the bits
/// above it move one down.
fn remove_bit(filter: &mut [u8], is_v6: bool, t: usize) {
    let low = (1u16 << t) as u8 - 1;
    for byte in family_cells(filter, is_v6) {
        *byte = (*byte & low) | ((u16::from(*byte) >> (t + 1)) << t) as u8;
    }
}

/// Makes room for bit `t` of the family in every cell (a tree put in): the
/// bits from `t` up move one up; bit `t` is left clear.
fn insert_bit(filter: &mut [u8], is_v6: bool, t: usize) {
    let low = (1u16 << t) as u8 - 1;
    for byte in family_cells(filter, is_v6) {
        *byte = (*byte & low) | ((u16::from(*byte & !low) << 1) as u8);
    }
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
