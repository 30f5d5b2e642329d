//! `customer add` / `customer del` in O(size of the change): the customer
//! alone is checked against the indexes of [`CustomerIndex`], compiled into
//! the entries that differ ([`customers::patch`]), written, and made durable
//! with one journal record. A change this path does not take (a refused
//! one, a VLAN customer) goes through the whole path ([`Controller::edit`]),
//! which refuses it with the same text as ever or applies it. See
//! docs/architecture.md, "A change's path".
use std::sync::Arc;

use super::*;
use crate::daemon::customers::{self, Changed, CustomerIndex, Patch};
use crate::dataplane::{DataplaneError, Maps};

impl Controller {
    /// `customer add` / `customer del`.
    pub(super) fn customer_change(&mut self, change: Change) -> Result<u64, ControlError> {
        if self.dp.is_none() {
            return Err(ControlError::Removed);
        }
        if let Change::CustomerAdd { customer } = &change {
            if self.index().contains(&customer.name) {
                return Err(ControlError::CustomerExists {
                    name: customer.name.clone(),
                });
            }
        }
        self.index();
        let index = self.customer_index.as_mut().expect("indexed");
        let (cfg, ids) = (&mut self.state.config, &mut self.state.ids);
        let Some(done) = customers::try_change(index, cfg, ids, &self.kernel, &change) else {
            return self.edit(change);
        };
        let r = self.write_customer(&change, done.changed());
        if r.is_err() {
            let index = self.customer_index.as_mut().expect("indexed");
            let (cfg, ids) = (&mut self.state.config, &mut self.state.ids);
            customers::undo(index, cfg, ids, done);
        }
        r
    }

    /// The customer index, built from the desired state if there is none.
    fn index(&mut self) -> &mut CustomerIndex {
        let (cfg, ids) = (&self.state.config, &self.state.ids);
        self.customer_index
            .get_or_insert_with(|| CustomerIndex::build(cfg, ids))
    }

    /// Writes the change the desired state (and index) already hold, makes
    /// it durable and publishes it; on failure the maps are put back (the
    /// caller puts the desired state back).
    fn write_customer(&mut self, change: &Change, changed: Changed) -> Result<u64, ControlError> {
        let generation = self.state.generation + 1;
        let index = self.customer_index.as_ref().expect("indexed");
        let patch = customers::patch(
            index,
            &self.state.ids,
            &self.applied,
            &self.kernel,
            generation,
            changed,
        );
        let undo = customers::inverse(&self.applied, &patch);
        let dp = self.dp.as_mut().ok_or(ControlError::Removed)?;
        if let Err(e) = write_patch(&mut dp.maps, &mut self.applied, &patch) {
            if let Err(e2) = write_patch(&mut dp.maps, &mut self.applied, &undo) {
                tracing::error!("rolling back a failed customer change: {e2}");
            }
            return Err(e.into());
        }
        if let Err(e) = self.persist(generation, change) {
            if let Some(dp) = self.dp.as_mut() {
                if let Err(e2) = write_patch(&mut dp.maps, &mut self.applied, &undo) {
                    tracing::error!("rolling back a customer change not persisted: {e2}");
                }
            }
            return Err(e);
        }
        self.state.generation = generation;
        self.maybe_compact();
        self.publish_customers();
        Ok(generation)
    }

    /// Publishes the customer names of the desired state for the metrics
    /// (the rest of the names as they were).
    fn publish_customers(&mut self) {
        let st = &self.state;
        let mut names = (*self.metric_names).clone();
        names.customers = st
            .config
            .customers
            .iter()
            .filter_map(|c| Some((c.name.clone(), *st.ids.customers.get(&c.name)?)))
            .collect();
        names.customer_count = st.config.customers.len();
        self.metric_names = Arc::new(names);
        self.publish_facts();
    }
}

/// Writes `patch` in the order [`compile::apply`] keeps: a new id's counters
/// zeroed, anti-spoofing entries before the flags that use them, new
/// prefixes before removals (shorter first, longer first), removed
/// anti-spoofing entries after the flags, the policer last. `applied`
/// follows every write.
fn write_patch(maps: &mut Maps, applied: &mut Tables, patch: &Patch) -> Result<(), DataplaneError> {
    use pop_common::maps as n;
    if let Some(id) = patch.fresh {
        maps.reset_customer(id)?;
    }
    maps.acl.add_spoof(&patch.spoof_add)?;
    customers::apply_to(
        applied,
        &Patch {
            spoof_add: patch.spoof_add.clone(),
            ..Default::default()
        },
    );
    for (i, v) in &patch.ifaces {
        maps.set_iface(*i, *v)?;
        applied.ifaces.insert(*i, *v);
    }
    let mut v4: Vec<_> = patch.cust_v4.iter().collect();
    v4.sort_by_key(|(p, id)| (id.is_none(), p.prefix_len(), p.network()));
    let mut v6: Vec<_> = patch.cust_v6.iter().collect();
    v6.sort_by_key(|(p, id)| (id.is_none(), p.prefix_len(), p.network()));
    for (p, id) in v4.iter().filter(|(_, id)| id.is_some()) {
        maps.set_customer_v4(p, id.expect("filtered"))?;
        applied.cust_v4.insert(*p, id.expect("filtered"));
    }
    for (p, id) in v6.iter().filter(|(_, id)| id.is_some()) {
        maps.set_customer_v6(p, id.expect("filtered"))?;
        applied.cust_v6.insert(*p, id.expect("filtered"));
    }
    if let Some(c) = patch.config {
        maps.config
            .set(0, c, 0)
            .map_err(crate::dataplane::maps::map_err(n::CONFIG))?;
        applied.config = Some(c);
    }
    for (p, _) in v4.iter().rev().filter(|(_, id)| id.is_none()) {
        maps.del_customer_v4(p)?;
        applied.cust_v4.remove(p);
    }
    for (p, _) in v6.iter().rev().filter(|(_, id)| id.is_none()) {
        maps.del_customer_v6(p)?;
        applied.cust_v6.remove(p);
    }
    maps.acl.remove_spoof(&patch.spoof_del)?;
    customers::apply_to(
        applied,
        &Patch {
            spoof_del: patch.spoof_del.clone(),
            ..Default::default()
        },
    );
    if let Some((id, rb)) = patch.policer {
        maps.acl.set_policer(id, rb)?;
        match rb {
            Some(rb) => applied.policers.insert(id, rb),
            None => applied.policers.remove(&id),
        };
    }
    Ok(())
}
