//! The controller's change path: single changes (`route add/del`,
//! `customer`/`acl add/del`), whole configs (`apply`, SIGHUP), and making them
//! durable (journal record or snapshot). See docs/architecture.md, "A
//! change's path".
use super::*;

impl Controller {
    /// Runs every check on `candidate` as the next desired state and computes
    /// what committing it writes. Writes nothing: this alone is `--dry-run`.
    pub fn check(&self, candidate: &Config, routes: Routes) -> Result<Plan, ControlError> {
        if self.dp.is_none() {
            return Err(ControlError::Removed);
        }
        check::plan(
            candidate,
            routes,
            &self.kernel,
            &self.current(),
            Devices::Required,
        )
    }

    /// Makes `candidate`, checked into `plan`, the desired state. Its routes
    /// are `plan.routes` when they change (`candidate.routes` is ignored),
    /// else the current ones.
    pub(super) fn commit(
        &mut self,
        mut candidate: Config,
        plan: Plan,
        persist: Persist,
    ) -> Result<u64, ControlError> {
        candidate.routes = Vec::new();
        // A VLAN customer without its VLAN device is accepted (like a next hop
        // not resolved yet): its tagged traffic goes to the kernel until the
        // device appears, which popd notices (it follows netlink).
        for c in &candidate.customers {
            let Some(vid) = c.vlan else { continue };
            for port in &c.interfaces {
                if compile::vlan_device(&self.kernel, port, vid).is_none() {
                    tracing::warn!(
                        customer = %c.name,
                        "vlan {vid} on {port}: no VLAN device for it yet; create one \
                         (ip link add link {port} name {port}.{vid} type vlan id {vid}; \
                         the kernel needs 802.1Q support, modprobe 8021q)"
                    );
                }
            }
        }
        let Plan {
            ids,
            fresh,
            generation,
            acl_copy: copy,
            acl,
            tables: want,
            routes,
        } = plan;
        // Attach new interfaces; undo on failure.
        let mut newly = Vec::new();
        for i in &candidate.interfaces {
            if !self.attached.contains_key(&i.name) {
                match self.attach(&i.name, candidate.dataplane.xdp_mode) {
                    Ok(_) => newly.push(i.name.clone()),
                    Err(e) => {
                        self.undo_attach(&newly);
                        return Err(e);
                    }
                }
            }
        }
        for id in &fresh {
            if let Err(e) = self.dp_mut().maps.reset_customer(*id) {
                self.undo_attach(&newly);
                return Err(e.into());
            }
        }
        let before = self.applied.clone();
        let ifindexes = match acl {
            Some(staged) => {
                if let Err(e) = self.write_acl_copy(copy, &staged.compiled) {
                    self.undo_attach(&newly);
                    return Err(e);
                }
                staged.ifindexes
            }
            None => self.acl_ifindexes.clone(),
        };
        let work = match &routes {
            Some(r) => {
                let new = self.new_prefixes(r);
                let have = (self.state.routes.len_v4(), self.state.routes.len_v6());
                self.make_room(new, have);
                RouteWork::Replace(r, &ids)
            }
            None => RouteWork::Keep,
        };
        if let Err(e) = self.write_tables(&want, work) {
            // Put back exactly what was there (the staged ACL copy never went
            // live; the routes were put back by the failed write).
            if let Err(e2) = self.write_tables(&before, RouteWork::Keep) {
                tracing::error!("rolling back a failed change: {e2}");
            }
            self.undo_attach(&newly);
            return Err(e);
        }
        if copy != self.acl_copy {
            crate::dataplane::wait_for_readers();
            self.acl_copy = copy;
            self.acl_catch_up();
        }
        self.acl_ifindexes = ifindexes;
        // The old state is kept only until the new one is durable.
        let old_routes = routes.map(|r| std::mem::replace(&mut self.state.routes, r));
        let old_ids = std::mem::replace(&mut self.state.ids, ids);
        let old_config = std::mem::replace(&mut self.state.config, candidate);
        let old_generation = std::mem::replace(&mut self.state.generation, generation);
        if self.state.config.customers != old_config.customers {
            // Customers changed by the whole path: indexed again on the next
            // single change.
            self.customer_index = None;
        }
        let saved = match &persist {
            Persist::Snapshot => self.store.save(&self.state).map_err(ControlError::from),
            Persist::Record(change) => self.persist(generation, change),
        };
        if let Err(e) = saved {
            // Not durable, so not done: back to the old state, ACLs included.
            self.state.generation = old_generation;
            self.state.config = old_config;
            let new_ids = std::mem::replace(&mut self.state.ids, old_ids);
            let new_routes = old_routes.map(|r| std::mem::replace(&mut self.state.routes, r));
            let cfg = self.state.config.clone();
            let work = match &new_routes {
                Some(r) => RouteWork::Revert(r, &new_ids),
                None => RouteWork::Keep,
            };
            match self.stage_acls(&cfg) {
                Ok(staged) => {
                    if let Err(e2) = self.sync_with(staged, work) {
                        tracing::error!("rolling back after a failed save: {e2}");
                    }
                }
                Err(e2) => tracing::error!("rolling back ACLs after a failed save: {e2}"),
            }
            self.undo_attach(&newly);
            return Err(e);
        }
        drop((old_routes, old_config));
        if matches!(persist, Persist::Record(_)) {
            self.maybe_compact();
        }
        self.apply_sflow();
        // Interfaces removed from the desired state.
        let gone: Vec<String> = self
            .attached
            .keys()
            .filter(|n| !self.state.config.interfaces.iter().any(|i| &i.name == *n))
            .cloned()
            .collect();
        for n in gone {
            if let Err(e) = self.dp_mut().detach(&n) {
                tracing::error!("{e}");
            }
            self.attached.remove(&n);
        }
        self.publish();
        Ok(generation)
    }

    /// Makes one change durable: one journal record (one write, one
    /// fdatasync), the change that makes `generation`.
    pub(super) fn persist(&mut self, generation: u64, change: &Change) -> Result<(), ControlError> {
        self.store.append(generation, change)?;
        Ok(())
    }

    /// Once the journal has grown past its bound (about half the snapshot):
    /// a new snapshot of the state, which empties it. A failure leaves the
    /// journal as it was (the state is durable either way).
    pub(super) fn maybe_compact(&mut self) {
        if !self.store.should_compact() {
            return;
        }
        let t = std::time::Instant::now();
        match self.store.save(&self.state) {
            Ok(()) => tracing::info!(
                generation = self.state.generation,
                ms = t.elapsed().as_millis() as u64,
                "state journal compacted into a new snapshot"
            ),
            Err(e) => tracing::warn!("compacting the state journal: {e}"),
        }
    }

    pub(super) fn undo_attach(&mut self, names: &[String]) {
        for n in names {
            let _ = self.dp_mut().detach(n);
            self.attached.remove(n);
        }
    }

    /// A change to customers or ACL rules: the config edited, checked whole
    /// and committed; the routes are not touched.
    pub(super) fn edit(&mut self, change: Change) -> Result<u64, ControlError> {
        let mut candidate = self.state.config.clone();
        desired::edit_config(&mut candidate, &change)?;
        let plan = self.check(&candidate, Routes::Current(&self.state.routes))?;
        self.commit(candidate, plan, Persist::Record(change))
    }

    /// `route add` / `route del`: one route checked, written and made
    /// durable, in O(1) of the table's size.
    pub(super) fn route_change(&mut self, change: Change) -> Result<u64, ControlError> {
        if self.dp.is_none() {
            return Err(ControlError::Removed);
        }
        let done = match &change {
            Change::RouteAdd { route } => {
                desired::route_add(&mut self.state, route, Some(&self.kernel))?
            }
            Change::RouteDel { prefix } => desired::route_del(&mut self.state, prefix)?,
            _ => return Err(ControlError::WrongRequest("not a route change")),
        };
        if done.old.is_none() && self.learned.get(&done.prefix).is_none() {
            // A new prefix (already in the desired table, not in the maps).
            let (v4, v6) = (self.state.routes.len_v4(), self.state.routes.len_v6());
            match done.prefix {
                IpNet::V4(_) => self.make_room((1, 0), (v4 - 1, v6)),
                IpNet::V6(_) => self.make_room((0, 1), (v4, v6 - 1)),
            }
        }
        if let Err(e) = self.write_route(&done) {
            desired::undo_route(&mut self.state, &done);
            return Err(e);
        }
        let generation = self.state.generation + 1;
        if let Err(e) = self.persist(generation, &change) {
            desired::undo_route(&mut self.state, &done);
            self.unwrite_route(&done);
            return Err(e);
        }
        self.state.generation = generation;
        self.publish_facts();
        self.maybe_compact();
        // Next hops no route uses any more go once nothing points at them.
        for (key, id) in &done.freed_nexthops {
            if let Err(e) = self.set_nexthop(*id, None) {
                tracing::warn!("next hop {key}: freeing id {id}: {e}");
            }
        }
        Ok(generation)
    }

    /// Writes a route change: its new next hops, then the route.
    pub(super) fn write_route(&mut self, done: &RouteDone) -> Result<(), ControlError> {
        let mut nexthops = Vec::new();
        for (key, id) in &done.added_nexthops {
            let nh = compile::nexthop_value(
                &self.state.config,
                &self.kernel,
                &self.applied.tx_ports,
                key,
            );
            if let Some(nh) = nh {
                nexthops.push((*id, nh));
            }
        }
        for (id, nh) in &nexthops {
            if let Err(e) = self.set_nexthop(*id, Some(*nh)) {
                for (id, _) in &nexthops {
                    let _ = self.set_nexthop(*id, None);
                }
                return Err(e);
            }
        }
        let dp = self.dp.as_mut().ok_or(ControlError::Removed)?;
        let r = route_sync::put(
            &mut dp.maps,
            &done.prefix,
            done.new.as_ref(),
            &self.state.ids,
            &mut self.learned,
        );
        if let Err(e) = r {
            for (id, _) in &nexthops {
                let _ = self.set_nexthop(*id, None);
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Puts back what [`Self::write_route`] wrote, once `done` was undone in
    /// the desired state.
    pub(super) fn unwrite_route(&mut self, done: &RouteDone) {
        if let Some(dp) = self.dp.as_mut() {
            let r = route_sync::put(
                &mut dp.maps,
                &done.prefix,
                done.old.as_ref(),
                &self.state.ids,
                &mut self.learned,
            );
            if let Err(e) = r {
                tracing::error!("route {}: putting the old route back: {e}", done.prefix);
            }
        }
        for (_, id) in &done.added_nexthops {
            let _ = self.set_nexthop(*id, None);
        }
    }

    /// Writes (Some) or frees (None) configured next hop `id`.
    pub(super) fn set_nexthop(
        &mut self,
        id: u32,
        nh: Option<pop_common::PopNexthop>,
    ) -> Result<(), ControlError> {
        use crate::dataplane::route_writer::RouteWriter;
        let dp = self.dp.as_mut().ok_or(ControlError::Removed)?;
        dp.maps.set_nexthop(id, &nh.unwrap_or_default())?;
        match nh {
            Some(v) => self.applied.nexthops.insert(id, v),
            None => self.applied.nexthops.remove(&id),
        };
        Ok(())
    }

    pub(super) fn reply(r: Result<u64, ControlError>) -> Reply {
        let generation = r?;
        Ok(json!({ "generation": generation }))
    }

    /// Applies a whole new config (SIGHUP, `popctl apply`). The config is
    /// checked whole even when nothing would change; `dry_run` stops after
    /// the checks.
    pub fn apply_config(&mut self, text: String, dry_run: bool) -> Result<Value, ControlError> {
        let t = std::time::Instant::now();
        // The routes go straight into their typed table as they are read
        // (no text of them is kept); the text goes once read.
        let (candidate, routes) = validate::parse_config_routes(&text)?;
        drop(text);
        let parsed = t.elapsed();
        let plan = self.check(&candidate, Routes::Parsed(Box::new(routes)))?;
        let checked = t.elapsed();
        let new_routes = plan.routes.as_ref().expect("a whole config has its routes");
        let mut more = 0u64;
        let mut changes = diff::diff_with(&self.state.config, &candidate, |lines| {
            more = route_lines(lines, &self.state.routes, new_routes)
        });
        if changes.len() > MAX_CHANGE_LINES {
            more += (changes.len() - MAX_CHANGE_LINES) as u64;
            changes.truncate(MAX_CHANGE_LINES);
        }
        let ms = |d: std::time::Duration| d.as_millis() as u64;
        if dry_run {
            let info = ApplyInfo {
                dry_run: true,
                changes,
                more,
                generation: self.state.generation,
            };
            return Ok(serde_json::to_value(info).expect("serialises"));
        }
        let diffed = t.elapsed();
        let generation = if changes.is_empty() && more == 0 {
            self.state.generation
        } else {
            self.commit(candidate, plan, Persist::Snapshot)?
        };
        tracing::info!(
            changes = changes.len() as u64 + more,
            generation,
            parse_ms = ms(parsed),
            check_ms = ms(checked - parsed),
            diff_ms = ms(diffed - checked),
            commit_ms = ms(t.elapsed() - diffed),
            "config applied"
        );
        let info = ApplyInfo {
            dry_run: false,
            changes,
            more,
            generation,
        };
        Ok(serde_json::to_value(info).expect("serialises"))
    }
}

/// The route lines of `popctl apply`'s changes: `+`, `-` and `~` lines,
/// by family, address and length, at most [`MAX_CHANGE_LINES`] of them;
/// returns how many more there are.
pub(super) fn route_lines(
    lines: &mut Vec<String>,
    old: &ConfiguredRoutes,
    new: &ConfiguredRoutes,
) -> u64 {
    let delta = old.delta(new);
    let mut out: Vec<(IpNet, Option<&crate::config::routes::Hops>)> = delta
        .write
        .iter()
        .map(|(p, h)| (*p, Some(*h)))
        .chain(delta.remove.iter().map(|p| (*p, None)))
        .collect();
    out.sort_by_key(|(p, _)| (matches!(p, IpNet::V6(_)), p.addr(), p.prefix_len()));
    let more = out.len().saturating_sub(MAX_CHANGE_LINES) as u64;
    for (p, new) in out.into_iter().take(MAX_CHANGE_LINES) {
        let line = match (old.get(&p), new) {
            (old, Some(h)) => {
                let sign = if old.is_some() { '~' } else { '+' };
                format!(
                    "{sign} {}",
                    diff::route_text(&crate::config::routes::route_text(&p, h))
                )
            }
            (Some(h), None) => format!(
                "- {}",
                diff::route_text(&crate::config::routes::route_text(&p, h))
            ),
            (None, None) => continue,
        };
        lines.push(line);
    }
    more
}
