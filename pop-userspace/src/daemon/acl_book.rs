//! What popd keeps about the ACL rules besides the maps: the rules the
//! metrics name (priority, action, hit slot: [`AclRuleTable`]) and the
//! interfaces the rules name with the ifindex they were compiled with
//! ([`AclIfindexes`]). Each is built whole from the desired state after a
//! full compile, and changed by one rule on `acl add` / `acl del`, so a
//! single change costs O(change), not O(rules); the tests check that both
//! ways give the same.
use std::collections::BTreeMap;

use crate::config::model::{Acl, AclAction, Config};
use crate::metrics::{AclRuleSlot, AclRuleTable};
use crate::netlink::KernelView;

/// The metrics' entry of `acl` (`slot`: its hit slot, `None` when the data
/// plane does not hold it).
pub fn rule_slot(acl: &Acl, slot: Option<u32>) -> AclRuleSlot {
    AclRuleSlot {
        priority: acl.priority,
        action: match acl.action {
            AclAction::Allow => "allow",
            AclAction::Drop => "drop",
        },
        slot,
    }
}

/// The metrics' table of every rule of `acls`, with the slots `slots`
/// (priority → slot) gives. O(rules).
pub fn rule_table(acls: &[Acl], slots: &BTreeMap<u32, u32>) -> AclRuleTable {
    acls.iter()
        .map(|a| rule_slot(a, slots.get(&a.priority).copied()))
        .collect()
}

/// The interfaces the ACL rules name (`in_iface`): the ifindex each had when
/// the rules were compiled, and how many rules name it, so that deleting a
/// rule knows in O(log) whether its interface is still named.
#[derive(Clone, Debug, Default)]
pub struct AclIfindexes {
    by_name: BTreeMap<String, (Option<u32>, usize)>,
}

impl PartialEq for AclIfindexes {
    /// Equal when the same interfaces have the same ifindexes (the counts
    /// follow from the rules).
    fn eq(&self, other: &Self) -> bool {
        self.by_name.len() == other.by_name.len()
            && self
                .by_name
                .iter()
                .zip(&other.by_name)
                .all(|((a, (i, _)), (b, (j, _)))| a == b && i == j)
    }
}

impl AclIfindexes {
    /// Of every rule of `cfg`, with the ifindexes `kernel` has now. O(rules).
    pub fn of(cfg: &Config, kernel: &KernelView) -> Self {
        let mut out = AclIfindexes::default();
        for name in cfg.acls.iter().filter_map(|a| a.in_iface.as_deref()) {
            out.named(name, kernel.links.get(name).map(|l| l.ifindex));
        }
        out
    }

    /// One more rule names `name`, compiled with `ifindex`. An interface
    /// already named keeps the ifindex the other rules were compiled with
    /// (they are the same unless the kernel changed it, and then the next
    /// sync sees the difference and recompiles them all).
    pub fn named(&mut self, name: &str, ifindex: Option<u32>) {
        match self.by_name.get_mut(name) {
            Some((_, n)) => *n += 1,
            None => {
                self.by_name.insert(name.to_string(), (ifindex, 1));
            }
        }
    }

    /// One rule naming `name` less; forgets it with the last such rule.
    pub fn unnamed(&mut self, name: &str) {
        if let Some((_, n)) = self.by_name.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                self.by_name.remove(name);
            }
        }
    }

    /// (interface, ifindex) by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<u32>)> + '_ {
        self.by_name.iter().map(|(n, (i, _))| (n.as_str(), *i))
    }

    /// (interface, rules naming it) by name.
    pub fn uses(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.by_name.iter().map(|(n, (_, c))| (n.as_str(), *c))
    }
}

#[cfg(test)]
#[path = "acl_book_tests.rs"]
mod tests;
