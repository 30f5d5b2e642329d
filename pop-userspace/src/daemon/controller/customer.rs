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
        if !self.fast_path_ok(&change) {
            return self.edit(change);
        }
        match &change {
            Change::CustomerAdd { customer } => {
                self.index();
                let index = self.customer_index.as_ref().expect("indexed");
                let Some(valid) = index.check_add(&self.state.config, customer) else {
                    return self.edit(change);
                };
                let Some(id) = index.next_id() else {
                    return self.edit(change);
                };
                self.state.config.customers.push(customer.clone());
                self.state.ids.customers.insert(customer.name.clone(), id);
                self.index().insert(valid.clone(), Some(id));
                let r = self.write_customer(&change, Changed::Added(&valid, id));
                if r.is_err() {
                    self.index().remove(&customer.name, Some(id));
                    self.state.ids.customers.remove(&customer.name);
                    self.state.config.customers.pop();
                }
                r
            }
            Change::CustomerDel { name } => {
                let Some(pos) = self.state.config.customers.iter().position(|c| &c.name == name)
                else {
                    return self.edit(change);
                };
                let id = self.state.ids.customers.get(name).copied();
                let (Some(id), true) = (id, self.index().contains(name)) else {
                    return self.edit(change);
                };
                let (valid, seq) = self.index().remove(name, Some(id)).expect("indexed");
                let old = self.state.config.customers.remove(pos);
                self.state.ids.customers.remove(name);
                let r = self.write_customer(&change, Changed::Removed(&valid, id));
                if r.is_err() {
                    self.state.ids.customers.insert(name.clone(), id);
                    self.state.config.customers.insert(pos, old);
                    self.index().restore(valid, seq, Some(id));
                }
                r
            }
            _ => Err(ControlError::WrongRequest("not a customer change")),
        }
    }

    /// The customer index, built from the desired state if there is none.
    fn index(&mut self) -> &mut CustomerIndex {
        let (cfg, ids) = (&self.state.config, &self.state.ids);
        self.customer_index
            .get_or_insert_with(|| CustomerIndex::build(cfg, ids))
    }

    /// Whether this path may take `change`: every customer indexed, every
    /// interface in the kernel (the whole path requires it of any change),
    /// and the customer's own interfaces plain ports, not VLAN devices.
    fn fast_path_ok(&mut self, change: &Change) -> bool {
        let cfg = &self.state.config;
        if !cfg
            .interfaces
            .iter()
            .all(|i| self.kernel.links.contains_key(&i.name))
        {
            return false;
        }
        let ifaces: Vec<String> = match change {
            Change::CustomerAdd { customer } => customer.interfaces.clone(),
            Change::CustomerDel { name } => match self.index().get(name) {
                Some(v) if v.vlan.is_none() => v.interfaces.clone(),
                _ => return false,
            },
            _ => return false,
        };
        let kernel = &self.kernel;
        let plain = ifaces
            .iter()
            .all(|i| kernel.links.get(i).is_none_or(|l| l.vlan.is_none()));
        self.index();
        let index = self.customer_index.as_ref().expect("indexed");
        plain && index.complete(&self.state.config)
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
        maps.ifaces
            .insert(*i, *v, 0)
            .map_err(crate::dataplane::maps::map_err(n::IFACES))?;
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
