//! `acl add` / `acl del` in O(change): the rule checked on its own, the
//! change trees rebuilt ([`crate::acl::incremental`]), the element writes
//! made in the inactive copy, the copies flipped, and the same writes made in
//! the other copy, so both hold the same rules again. Falls back to the whole
//! path ([`Controller::edit`]) when the change trees are full or the copies
//! are not known to be equal.
use super::super::acl_book;
use super::*;
use crate::acl::incremental::NotIncremental;
use crate::config::validate::{ConfigError, Problem};

impl Controller {
    pub(super) fn acl_change(&mut self, change: Change) -> Result<u64, ControlError> {
        if self.dp.is_none() {
            return Err(ControlError::Removed);
        }
        if self.acl_rules.is_none() || self.acl_staged.is_some() {
            return self.edit(change);
        }
        let delta = match &change {
            Change::AclAdd { acl } => {
                let acls = &self.state.config.acls;
                if acls.iter().any(|x| x.priority == acl.priority) {
                    return Err(ControlError::AclPriorityTaken {
                        priority: acl.priority,
                    });
                }
                if acls.len() >= pop_common::MAX_ACL_RULES as usize {
                    return Err(ControlError::Capacity {
                        what: "ACL rules",
                        map: pop_common::maps::ACL_RULES,
                        count: acls.len() + 1,
                        max: pop_common::MAX_ACL_RULES as usize,
                    });
                }
                let valid = validate::check_acl(acl)?;
                if let Some(iface) = &valid.in_iface {
                    if !self
                        .state
                        .config
                        .interfaces
                        .iter()
                        .any(|i| &i.name == iface)
                    {
                        return Err(ConfigError::Acl {
                            priority: acl.priority,
                            problem: Problem::UnknownInterface {
                                field: "in_iface",
                                value: iface.clone(),
                            },
                        }
                        .into());
                    }
                }
                let ifindex = valid.in_iface.as_deref().and_then(|n| self.ifindex(n));
                self.acl_rules
                    .as_mut()
                    .expect("checked")
                    .add(&valid, ifindex)
            }
            Change::AclDel { priority } => {
                if !self
                    .state
                    .config
                    .acls
                    .iter()
                    .any(|x| x.priority == *priority)
                {
                    return Err(ControlError::NoSuchAcl {
                        priority: *priority,
                    });
                }
                self.acl_rules.as_mut().expect("checked").remove(*priority)
            }
            _ => return Err(ControlError::WrongRequest("not an ACL change")),
        };
        let delta = match delta {
            Ok(d) => d,
            Err(NotIncremental::CompileInFull) => return self.edit(change),
            Err(NotIncremental::Refused(e)) => return Err(ControlError::Acl(e)),
        };
        if let Err(e) = self.acl_write_and_flip(&delta) {
            // The model went ahead of the maps: back to a full compile.
            self.acl_rules = None;
            self.acl_restore();
            return Err(e);
        }
        // The desired rules, changed in place (undone if the journal fails).
        let acls = &mut self.state.config.acls;
        let undo = match &change {
            Change::AclAdd { acl } => {
                let at = acls.partition_point(|a| a.priority < acl.priority);
                acls.insert(at, acl.clone());
                Undo::Remove(at)
            }
            Change::AclDel { priority } => {
                match acls.iter().position(|a| a.priority == *priority) {
                    Some(at) => Undo::Insert(at, acls.remove(at)),
                    None => Undo::Nothing,
                }
            }
            _ => Undo::Nothing,
        };
        let generation = self.state.generation + 1;
        if let Err(e) = self.persist(generation, &change) {
            let acls = &mut self.state.config.acls;
            match undo {
                Undo::Remove(at) => {
                    acls.remove(at);
                }
                Undo::Insert(at, acl) => acls.insert(at, acl),
                Undo::Nothing => {}
            }
            self.acl_rules = None;
            self.acl_restore();
            return Err(e);
        }
        self.state.generation = generation;
        // What names the rules outside the maps, changed by this rule alone
        // (a full rebuild gives the same: `acl_book`'s tests).
        let changed = match (&change, &undo) {
            (Change::AclAdd { acl }, _) => {
                if let Some(name) = &acl.in_iface {
                    let ifindex = self.ifindex(name);
                    self.acl_ifindexes.named(name, ifindex);
                }
                let slot = self.acl_rules.as_ref().and_then(|r| r.slot(acl.priority));
                Some((acl.priority, Some(acl_book::rule_slot(acl, slot))))
            }
            (_, Undo::Insert(_, acl)) => {
                if let Some(name) = &acl.in_iface {
                    self.acl_ifindexes.unnamed(name);
                }
                Some((acl.priority, None))
            }
            _ => None,
        };
        self.maybe_compact();
        match changed {
            Some((priority, now)) => self.publish_acl_rule(priority, now),
            None => self.publish(),
        }
        Ok(generation)
    }

    /// Writes `delta` into the inactive copy, makes it live (with the new
    /// generation), waits until no packet walks the old one, and writes
    /// `delta` there too.
    fn acl_write_and_flip(&mut self, delta: &crate::acl::AclDelta) -> Result<(), ControlError> {
        let generation = self.state.generation + 1;
        let copy = if delta.is_empty() {
            self.acl_copy
        } else {
            1 - self.acl_copy
        };
        let dp = self.dp.as_mut().ok_or(ControlError::Removed)?;
        if !delta.is_empty() {
            dp.maps.acl.write_delta(copy, delta)?;
        }
        if let Some(mut c) = self.applied.config {
            c.acl_copy = copy;
            c.generation = generation as u32;
            dp.maps
                .config
                .set(0, c, 0)
                .map_err(|e| crate::dataplane::DataplaneError::Map {
                    map: pop_common::maps::CONFIG,
                    reason: format!("set 0: {e}"),
                })?;
            self.applied.config = Some(c);
        }
        if copy != self.acl_copy {
            crate::dataplane::wait_for_readers();
            self.acl_copy = copy;
            // The same writes into the copy packets no longer use; its
            // fresh slots were zeroed already and may count hits by now.
            let mut again = delta.clone();
            again.fresh_slots.clear();
            dp.maps.acl.write_delta(1 - copy, &again)?;
        }
        Ok(())
    }

    /// After a failed single change: the desired state's rules compiled in
    /// full and swapped in.
    fn acl_restore(&mut self) {
        let cfg = self.state.config.clone();
        match self.stage_acls(&cfg) {
            Ok(staged) => {
                if let Err(e) = self.sync_with(staged, RouteWork::Keep) {
                    tracing::error!("ACL: restoring the rules after a failed change: {e}");
                }
            }
            Err(e) => tracing::error!("ACL: restoring the rules after a failed change: {e}"),
        }
    }
}

/// How to take a single change back out of the desired rules.
enum Undo {
    /// Remove the rule added at this index.
    Remove(usize),
    /// Put the deleted rule back at this index.
    Insert(usize, crate::config::model::Acl),
    Nothing,
}
