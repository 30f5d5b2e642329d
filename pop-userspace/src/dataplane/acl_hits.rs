//! Per-rule ACL hit counters (map `acl_hits`): what each rule decided, and
//! how the counts of unchanged rules survive changes and an upgrade.
//!
//! The data plane counts a hit for the rule that decides a packet, in the
//! slot of that rule (its index in `acl_rules`, the same in both copies). A
//! rule keeps its slot for as long as it exists (`AclMaps::stabilize`, and
//! the incremental path never moves one), so its count simply goes on across
//! every swap; a slot that gets a new rule is zeroed before the rule can be
//! reached, and a deleted rule's slot is not reused while a copy holds it.
use std::collections::HashMap;
use std::path::Path;

use super::DataplaneError;
use aya::maps::{Array, MapData, PerCpuArray, PerCpuValues};
use pop_common::{maps as names, PopAclMeta, PopAclRule, PopConfig, PopCounter, MAX_ACL_RULES};

/// The hit counters, per CPU.
pub type HitsMap = PerCpuArray<MapData, PopCounter>;

/// Per-CPU values of one slot; zeros when it cannot be read.
fn read(hits: &HitsMap, slot: u32) -> Vec<PopCounter> {
    hits.get(&slot, 0)
        .map(|v| v.iter().copied().collect())
        .unwrap_or_default()
}

fn write(hits: &mut HitsMap, slot: u32, values: Vec<PopCounter>) -> Result<(), DataplaneError> {
    let values = PerCpuValues::try_from(values).map_err(|e| DataplaneError::Map {
        map: names::ACL_HITS,
        reason: format!("slot {slot}: {e}"),
    })?;
    hits.set(slot, values, 0).map_err(|e| DataplaneError::Map {
        map: names::ACL_HITS,
        reason: format!("set {slot}: {e}"),
    })
}

fn cpus() -> Result<usize, DataplaneError> {
    aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Map {
        map: names::ACL_HITS,
        reason: format!("cpus: {e}"),
    })
}

/// `a + (b - c)` per CPU, saturating (a counter never goes below its snapshot).
fn add_delta(a: &[PopCounter], b: &[PopCounter], c: &[PopCounter]) -> Vec<PopCounter> {
    let at = |v: &[PopCounter], i: usize| v.get(i).copied().unwrap_or_default();
    (0..a.len().max(b.len()))
        .map(|i| {
            let (a, b, c) = (at(a, i), at(b, i), at(c, i));
            PopCounter {
                packets: a.packets + b.packets.saturating_sub(c.packets),
                bytes: a.bytes + b.bytes.saturating_sub(c.bytes),
            }
        })
        .collect()
}

/// Rules of one copy by priority, (slot, rule), and by slot.
#[derive(Clone, Debug, Default)]
pub struct RulesByPriority {
    by_priority: HashMap<u32, (u32, PopAclRule)>,
    by_slot: HashMap<u32, u32>,
}

impl RulesByPriority {
    /// (slot, rule) of the rule with `priority`.
    pub fn get(&self, priority: &u32) -> Option<&(u32, PopAclRule)> {
        self.by_priority.get(priority)
    }

    /// Adds (or replaces) the rule with `priority` in `slot`.
    pub fn insert(&mut self, priority: u32, (slot, rule): (u32, PopAclRule)) {
        self.retain_slot(slot);
        if let Some((old, _)) = self.by_priority.insert(priority, (slot, rule)) {
            self.by_slot.remove(&old);
        }
        self.by_slot.insert(slot, priority);
    }

    /// Forgets the rule in `slot`, if any.
    pub fn retain_slot(&mut self, slot: u32) {
        if let Some(p) = self.by_slot.remove(&slot) {
            self.by_priority.remove(&p);
        }
    }

    /// (priority, (slot, rule)) of every rule.
    pub fn iter(&self) -> impl Iterator<Item = (&u32, &(u32, PopAclRule))> {
        self.by_priority.iter()
    }

    /// The slots holding a rule.
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_slot.keys().copied()
    }

    /// Rules.
    pub fn len(&self) -> usize {
        self.by_priority.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_priority.is_empty()
    }
}

/// The rules of ACL copy `copy`, by priority: (slot, rule). Slots up to
/// `rule_count`; those holding [`super::acl::DEAD_RULE`] are left out.
pub fn rules_by_priority(
    meta: &Array<MapData, PopAclMeta>,
    rules: &Array<MapData, PopAclRule>,
    copy: u32,
) -> Result<RulesByPriority, DataplaneError> {
    let count = meta
        .get(&copy, 0)
        .map_err(|e| DataplaneError::Map {
            map: names::ACL_META,
            reason: format!("get {copy}: {e}"),
        })?
        .rule_count
        .min(MAX_ACL_RULES);
    let mut out = RulesByPriority::default();
    for i in 0..count {
        let slot = copy * MAX_ACL_RULES + i;
        let rule = rules.get(&slot, 0).map_err(|e| DataplaneError::Map {
            map: names::ACL_RULES,
            reason: format!("get {slot}: {e}"),
        })?;
        if rule.priority != pop_common::ACL_NO_RULE {
            out.insert(rule.priority, (i, rule));
        }
    }
    Ok(out)
}

/// Sets the counters of `slots` to zero (slots that get a new rule, before
/// any copy can reach it).
pub fn zero(hits: &mut HitsMap, slots: &[u32]) -> Result<(), DataplaneError> {
    if slots.is_empty() {
        return Ok(());
    }
    let zeros = vec![PopCounter::default(); cpus()?];
    for &slot in slots {
        write(hits, slot, zeros.clone())?;
    }
    Ok(())
}

/// `rules` (one copy, by slot; dead slots left out) by priority.
pub fn index_rules(rules: &[PopAclRule]) -> RulesByPriority {
    let mut out = RulesByPriority::default();
    for (i, r) in rules.iter().enumerate() {
        if r.priority != pop_common::ACL_NO_RULE {
            out.insert(r.priority, (i as u32, *r));
        }
    }
    out
}

/// The hits (summed over CPUs) of the rules `rules`, by priority. Rules the
/// data plane does not hold (an `in_iface` that does not exist) are absent:
/// they can match nothing.
pub fn read_copy(
    hits: &HitsMap,
    rules: &RulesByPriority,
) -> std::collections::BTreeMap<u32, PopCounter> {
    rules
        .iter()
        .map(|(&priority, &(slot, _))| {
            let values = read(hits, slot);
            (priority, PopCounter::sum(values.iter()))
        })
        .collect()
}

fn open<T>(dir: &Path, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    T::try_from(super::maps::open(dir, name)?).map_err(|e| DataplaneError::Map {
        map: name,
        reason: e.to_string(),
    })
}

/// After an upgrade swapped the links to the maps in `new_dir`: adds the hits
/// of every rule live in the old maps (`old_dir`, no longer used by any
/// packet) to the equal rule live in the new maps. Old maps of another layout,
/// or without hit counters, carry nothing.
pub fn carry_over_upgrade(old_dir: &Path, new_dir: &Path) -> Result<(), DataplaneError> {
    let live_copy = |dir: &Path| -> Result<u32, DataplaneError> {
        let config: Array<MapData, PopConfig> = open(dir, names::CONFIG)?;
        let c = config.get(&0, 0).map_err(|e| DataplaneError::Map {
            map: names::CONFIG,
            reason: format!("get 0: {e}"),
        })?;
        Ok(c.acl_copy & 1)
    };
    let old_copy = live_copy(old_dir)?;
    let new_copy = live_copy(new_dir)?;
    let old_rules = rules_by_priority(
        &open(old_dir, names::ACL_META)?,
        &open(old_dir, names::ACL_RULES)?,
        old_copy,
    )?;
    let new_rules = rules_by_priority(
        &open(new_dir, names::ACL_META)?,
        &open(new_dir, names::ACL_RULES)?,
        new_copy,
    )?;
    let old_hits: HitsMap = open(old_dir, names::ACL_HITS)?;
    let mut new_hits: HitsMap = open(new_dir, names::ACL_HITS)?;
    // Builds before slots counted at `copy * MAX_ACL_RULES + index` (the
    // live half holds the count); since, at the slot alone (the upper half
    // stays zero). An old build's live copy 1 is told apart by that half.
    let old_slot = |index: u32| {
        let upper = read(&old_hits, MAX_ACL_RULES + index);
        if old_copy == 1 && upper.iter().any(|c| c.packets != 0 || c.bytes != 0) {
            upper
        } else {
            read(&old_hits, index)
        }
    };
    for (priority, (new_slot, rule)) in new_rules.iter() {
        let Some((old_index, old_rule)) = old_rules.get(priority) else {
            continue;
        };
        if old_rule != rule {
            continue;
        }
        let before = old_slot(*old_index);
        if before.iter().all(|c| c.packets == 0 && c.bytes == 0) {
            continue;
        }
        let current = read(&new_hits, *new_slot);
        write(&mut new_hits, *new_slot, add_delta(&current, &before, &[]))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_adds_what_was_counted_since_the_snapshot() {
        let c = |p, b| PopCounter {
            packets: p,
            bytes: b,
        };
        let out = add_delta(
            &[c(10, 100), c(1, 1)],
            &[c(7, 70), c(5, 5)],
            &[c(4, 40), c(5, 5)],
        );
        assert_eq!(out, vec![c(13, 130), c(1, 1)]);
    }
}
