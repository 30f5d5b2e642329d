//! [`AclRuleTable`]: the desired ACL rules by priority with their hit slots,
//! as the metrics read them. A snapshot shares it with the controller, and a
//! single `acl add` / `acl del` changes one rule of it: it is kept in chunks
//! of a few hundred rules behind `Arc`s, so a changed copy clones one chunk
//! and the chunk pointers (rules ÷ [`CHUNK`] of them), not every rule.
use std::sync::Arc;

use super::AclRuleSlot;

/// Rules per chunk when built whole; a chunk splits past twice that and
/// merges with a neighbour below half of it.
pub const CHUNK: usize = 256;

/// ACL rules by ascending priority (unique), in shared chunks.
#[derive(Clone, Debug, Default)]
pub struct AclRuleTable {
    /// Never empty chunks, in priority order.
    chunks: Vec<Arc<Vec<AclRuleSlot>>>,
    len: usize,
}

impl AclRuleTable {
    /// Rules in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no rule.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The rules by ascending priority.
    pub fn iter(&self) -> impl Iterator<Item = &AclRuleSlot> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// The chunk where `priority` is or belongs (the first whose last rule
    /// is not below it, else the last one).
    fn chunk_of(&self, priority: u32) -> usize {
        self.chunks
            .partition_point(|c| c.last().is_some_and(|r| r.priority < priority))
            .min(self.chunks.len().saturating_sub(1))
    }

    /// Puts `rule` in at its priority (replacing the rule with that
    /// priority, if any). O(log rules + CHUNK + rules ÷ CHUNK pointers
    /// when the table is shared).
    pub fn upsert(&mut self, rule: AclRuleSlot) {
        if self.chunks.is_empty() {
            self.chunks.push(Arc::new(vec![rule]));
            self.len = 1;
            return;
        }
        let i = self.chunk_of(rule.priority);
        let chunk = Arc::make_mut(&mut self.chunks[i]);
        match chunk.binary_search_by_key(&rule.priority, |r| r.priority) {
            Ok(j) => chunk[j] = rule,
            Err(j) => {
                chunk.insert(j, rule);
                self.len += 1;
                if chunk.len() > 2 * CHUNK {
                    let upper = chunk.split_off(CHUNK);
                    self.chunks.insert(i + 1, Arc::new(upper));
                }
            }
        }
    }

    /// Takes out the rule with `priority`; returns it if it was there.
    pub fn remove(&mut self, priority: u32) -> Option<AclRuleSlot> {
        if self.chunks.is_empty() {
            return None;
        }
        let i = self.chunk_of(priority);
        let j = self.chunks[i]
            .binary_search_by_key(&priority, |r| r.priority)
            .ok()?;
        let chunk = Arc::make_mut(&mut self.chunks[i]);
        let gone = chunk.remove(j);
        self.len -= 1;
        if chunk.is_empty() {
            self.chunks.remove(i);
        } else if chunk.len() < CHUNK / 2 && self.chunks.len() > 1 {
            // Merge with a neighbour (then split again if too big), so the
            // chunk count stays about rules ÷ CHUNK after many deletes.
            let at = if i + 1 < self.chunks.len() { i } else { i - 1 };
            let next = self.chunks.remove(at + 1);
            let merged = Arc::make_mut(&mut self.chunks[at]);
            merged.extend_from_slice(&next);
            if merged.len() > 2 * CHUNK {
                let upper = merged.split_off(merged.len() / 2);
                self.chunks.insert(at + 1, Arc::new(upper));
            }
        }
        Some(gone)
    }

    /// Chunks it is kept in (for tests of the bound).
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
}

impl FromIterator<AclRuleSlot> for AclRuleTable {
    /// From rules by ascending priority (sorted here if they are not).
    fn from_iter<I: IntoIterator<Item = AclRuleSlot>>(iter: I) -> Self {
        let mut all: Vec<AclRuleSlot> = iter.into_iter().collect();
        if !all.is_sorted_by_key(|r| r.priority) {
            all.sort_by_key(|r| r.priority);
        }
        let len = all.len();
        let chunks = all.chunks(CHUNK).map(|c| Arc::new(c.to_vec())).collect();
        AclRuleTable { chunks, len }
    }
}

impl From<Vec<AclRuleSlot>> for AclRuleTable {
    fn from(v: Vec<AclRuleSlot>) -> Self {
        v.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Lcg;

    fn slot(priority: u32, n: u32) -> AclRuleSlot {
        AclRuleSlot {
            priority,
            action: if n.is_multiple_of(2) { "allow" } else { "drop" },
            slot: (!n.is_multiple_of(5)).then_some(n),
        }
    }

    /// Random upserts and removes, with copies kept (as published
    /// snapshots are), give what a table built whole from the same rules
    /// gives, and leave the copies as they were.
    #[test]
    fn random_changes_match_a_table_built_whole() {
        let mut rng = Lcg(7);
        let mut model = std::collections::BTreeMap::new();
        for p in 0..3000 {
            let r = slot(p * 3, rng.next(1000));
            model.insert(r.priority, r);
        }
        let mut table: AclRuleTable = model.values().copied().collect();
        let mut kept = Vec::new();
        for step in 0..20_000u32 {
            let p = rng.next(12_000);
            if rng.next(2) == 0 {
                let r = slot(p, rng.next(1000));
                model.insert(p, r);
                table.upsert(r);
            } else {
                assert_eq!(
                    table.remove(p).map(|r| r.priority),
                    model.remove(&p).map(|r| r.priority)
                );
            }
            assert_eq!(table.len(), model.len());
            if step % 997 == 0 {
                let whole: AclRuleTable = model.values().copied().collect();
                assert!(table.iter().eq(whole.iter()), "step {step}");
                assert!(table.iter().eq(model.values()), "step {step}");
                assert!(
                    table.chunk_count() <= model.len() / (CHUNK / 2) + 1,
                    "{} chunks for {} rules",
                    table.chunk_count(),
                    model.len()
                );
                kept.push((table.clone(), model.clone()));
            }
        }
        for (t, m) in &kept {
            assert!(t.iter().eq(m.values()));
        }
        // Empty again.
        for p in model.keys().copied().collect::<Vec<_>>() {
            table.remove(p);
        }
        assert!(table.is_empty() && table.iter().next().is_none());
        table.upsert(slot(5, 1));
        assert_eq!(table.iter().count(), 1);
    }
}
