//! Per-rule ACL hit counters (map `acl_hits`): what each rule decided, and
//! how the counts of unchanged rules follow a rule swap and an upgrade.
//!
//! The data plane counts a hit for the rule that decides a packet, in the
//! slot `copy * MAX_ACL_RULES + rule index` of the copy the packet used. A
//! swap writes the new rules into the other copy, so a rule that is in both
//! sets (every field equal, the priority included) must take its count with
//! it: [`Carry`] copies the count into the new slot before the swap, while
//! that slot is not live yet, and adds what the old slot counted between the
//! copy and the swap once no packet uses the old copy any more.
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

/// The rules of ACL copy `copy`, by priority: (rule index, rule).
pub fn rules_by_priority(
    meta: &Array<MapData, PopAclMeta>,
    rules: &Array<MapData, PopAclRule>,
    copy: u32,
) -> Result<HashMap<u32, (u32, PopAclRule)>, DataplaneError> {
    let count = meta
        .get(&copy, 0)
        .map_err(|e| DataplaneError::Map {
            map: names::ACL_META,
            reason: format!("get {copy}: {e}"),
        })?
        .rule_count
        .min(MAX_ACL_RULES);
    let mut out = HashMap::with_capacity(count as usize);
    for i in 0..count {
        let slot = copy * MAX_ACL_RULES + i;
        let rule = rules.get(&slot, 0).map_err(|e| DataplaneError::Map {
            map: names::ACL_RULES,
            reason: format!("get {slot}: {e}"),
        })?;
        out.insert(rule.priority, (i, rule));
    }
    Ok(out)
}

/// Counts carried from one copy into the other by a swap in progress.
#[derive(Debug, Default)]
pub struct Carry {
    /// The copy written (not live until the swap).
    pub to_copy: u32,
    /// (old slot, new slot, old slot's per-CPU values when copied).
    moved: Vec<(u32, u32, Vec<PopCounter>)>,
}

impl Carry {
    /// Sets the hit slots of the `new_rules` written into copy `to_copy`: the
    /// count of the equal rule in `live` (rules of the live copy `from_copy`
    /// by priority), else zero. The new copy must not be live.
    pub fn prepare(
        hits: &mut HitsMap,
        live: &HashMap<u32, (u32, PopAclRule)>,
        from_copy: u32,
        to_copy: u32,
        new_rules: &[PopAclRule],
    ) -> Result<Carry, DataplaneError> {
        let zeros = vec![PopCounter::default(); cpus()?];
        let mut carry = Carry {
            to_copy,
            moved: Vec::new(),
        };
        for (i, rule) in new_rules.iter().enumerate() {
            let new_slot = to_copy * MAX_ACL_RULES + i as u32;
            let same = live
                .get(&rule.priority)
                .filter(|(_, old)| old == rule && from_copy != to_copy);
            match same {
                Some(&(old_index, _)) => {
                    let old_slot = from_copy * MAX_ACL_RULES + old_index;
                    let snapshot = read(hits, old_slot);
                    write(hits, new_slot, snapshot.clone())?;
                    carry.moved.push((old_slot, new_slot, snapshot));
                }
                None => write(hits, new_slot, zeros.clone())?,
            }
        }
        Ok(carry)
    }

    /// Once no packet uses the old copy: adds what the old slots counted
    /// since [`Carry::prepare`] to the new ones.
    pub fn settle(self, hits: &mut HitsMap) -> Result<(), DataplaneError> {
        for (old_slot, new_slot, snapshot) in self.moved {
            let now = read(hits, old_slot);
            if now == snapshot {
                continue;
            }
            let current = read(hits, new_slot);
            write(hits, new_slot, add_delta(&current, &now, &snapshot))?;
        }
        Ok(())
    }
}

/// Rules by priority, as [`rules_by_priority`] reads them from the maps.
pub type RulesByPriority = HashMap<u32, (u32, PopAclRule)>;

/// `rules` (one copy, in index order) by priority.
pub fn index_rules(rules: &[PopAclRule]) -> RulesByPriority {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.priority, (i as u32, *r)))
        .collect()
}

/// The hits (summed over CPUs) of the rules `rules` of copy `copy`, by
/// priority. Rules the data plane does not hold (an `in_iface` that does not
/// exist) are absent: they can match nothing.
pub fn read_copy(
    hits: &HitsMap,
    rules: &RulesByPriority,
    copy: u32,
) -> std::collections::BTreeMap<u32, PopCounter> {
    rules
        .iter()
        .map(|(&priority, &(index, _))| {
            let values = read(hits, copy * MAX_ACL_RULES + index);
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
    for (priority, (new_index, rule)) in &new_rules {
        let Some((old_index, old_rule)) = old_rules.get(priority) else {
            continue;
        };
        if old_rule != rule {
            continue;
        }
        let before = read(&old_hits, old_copy * MAX_ACL_RULES + old_index);
        if before.iter().all(|c| c.packets == 0 && c.bytes == 0) {
            continue;
        }
        let slot = new_copy * MAX_ACL_RULES + new_index;
        let current = read(&new_hits, slot);
        write(&mut new_hits, slot, add_delta(&current, &before, &[]))?;
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
