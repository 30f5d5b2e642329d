//! What the controller tells the metrics after each change: a
//! [`Snapshot`] of the facts that label and complete the counters, published
//! so that a scrape reads it (and the counter maps, through its own handles)
//! without taking the controller's lock.
use std::sync::Arc;

use super::*;
use crate::metrics::{AclRuleSlot, LearnedFacts, Names, Published, Snapshot};

impl Controller {
    /// Where this controller publishes its snapshots for `/metrics`.
    pub fn published(&self) -> Published {
        self.published.clone()
    }

    /// Publishes a new snapshot, rebuilding the names and slots (after a
    /// change of the desired state, of attachments, of the ACL copy, or the
    /// removal of the data plane). O(customers + interfaces + ACL rules).
    pub(super) fn publish(&mut self) {
        self.metric_names = Arc::new(self.names());
        self.publish_facts();
    }

    /// Publishes a new snapshot after `acl add` / `acl del` made
    /// incrementally: the names of the last one with the rule at `priority`
    /// replaced by `now` (`None`: deleted). Nothing else that names a
    /// counter changed, and no other rule moved (a rule keeps its slot), so
    /// this gives what [`Controller::publish`] would. O(change + customers +
    /// interfaces): the ACL rules are shared with the last snapshot, one
    /// chunk of them copied.
    pub(super) fn publish_acl_rule(&mut self, priority: u32, now: Option<AclRuleSlot>) {
        let mut names = Names::clone(&self.metric_names);
        match now {
            Some(r) => names.acl_rules.upsert(r),
            None => {
                names.acl_rules.remove(priority);
            }
        }
        self.metric_names = Arc::new(names);
        self.publish_facts();
    }

    /// Publishes a new snapshot with the names of the last one (after a
    /// route change or learned routes: nothing that names a counter changed).
    /// O(1).
    pub(super) fn publish_facts(&self) {
        let k = self.learned.counters;
        self.published.publish(Snapshot {
            counters: self.dp.as_ref().and(self.counters.clone()),
            names: self.metric_names.clone(),
            generation: self.state.generation,
            routes: self.route_counts(),
            local_not_loaded: self.local_not_loaded,
            follows_kernel_table: self.kernel_table().is_some(),
            learned: LearnedFacts {
                skipped_foreign_device: k.skipped_foreign_device,
                skipped_no_gateway: k.skipped_no_gateway,
                skipped_type: k.skipped_type,
                skipped_nexthops_full: k.skipped_nexthops_full,
                overflow: k.overflow,
                not_installed: self.learned.overflowed(),
            },
            sflow: self.sflow.as_ref().map(|x| x.sample_counts()),
        });
    }

    fn names(&self) -> Names {
        let st = &self.state;
        let customers = st
            .config
            .customers
            .iter()
            .filter_map(|c| Some((c.name.clone(), *st.ids.customers.get(&c.name)?)))
            .collect();
        let interfaces = st
            .config
            .interfaces
            .iter()
            .filter_map(|i| Some((i.name.clone(), *st.ids.iface_slots.get(&i.name)?)))
            .collect();
        let attached = self
            .attached
            .iter()
            .map(|(n, m)| (n.clone(), m.label()))
            .collect();
        let acl = self.dp.as_ref().map(|d| &d.maps.acl);
        let slots = match acl.map(|m| m.rule_slots(self.acl_copy)) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::warn!("reading the ACL rule slots: {e}");
                Default::default()
            }
            None => Default::default(),
        };
        let acl_rules = super::super::acl_book::rule_table(&st.config.acls, &slots);
        Names {
            customers,
            customer_count: st.config.customers.len(),
            interfaces,
            attached,
            acl_rules,
        }
    }
}
