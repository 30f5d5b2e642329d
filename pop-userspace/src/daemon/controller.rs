//! The controller: desired state (durable) → data plane, and every API request.
//!
//! A change is made in this order, so that a rejected change changes nothing:
//! build the candidate config → check it and compute what to write
//! ([`super::check::plan`], the same checks for every kind of change and for
//! `--dry-run`) → attach new interfaces → write the map differences →
//! persist. A failure at any step undoes the steps before it. A start
//! persists its first state only once it is applied.
use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use pop_common::{Action, Direction, DropReason, PassReason};
use serde_json::{json, Value};

use super::check::{self, Current, Devices, Plan, Routes};
use super::compile::{self, Tables};
use super::desired::{self, Change, RouteDone};
use super::error::ControlError;
use super::learned::{Env, LearnedRoutes, Pinned, Staged};
use super::route_sync;
use super::routes::ConfiguredRoutes;
use crate::acl::AclMaps;
use crate::api::protocol::{
    AclInfo, ApplyInfo, CustomerStats, InterfaceStatus, MapFill, NexthopInfo, Request, RouteInfo,
    StatusInfo, TraceInfo, TraceRequest, MAX_CHANGE_LINES,
};
use crate::config::model::{Config, XdpMode};
use crate::config::{diff, validate};
use crate::dataplane::{AttachMode, Dataplane, RequestedMode};
use crate::netlink::routes::RouteMsg;
use crate::netlink::KernelView;
use crate::state::{Persisted, Store};

/// What a request asks popd to do after answering.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// Keep running.
    Continue,
    /// Exit, removing the data plane if `detach`.
    Shutdown {
        /// Remove XDP and pins.
        detach: bool,
    },
}

/// popd's state.
pub struct Controller {
    store: Store,
    state: Persisted,
    /// The data plane (None only after a detach).
    pub dp: Option<Dataplane>,
    kernel: KernelView,
    applied: Tables,
    attached: BTreeMap<String, AttachMode>,
    /// ACL, anti-spoofing and policer maps.
    acl: Option<AclMaps>,
    /// The ACL copy packets use.
    acl_copy: u32,
    /// ifindex of every `in_iface` the live ACL copy was compiled with.
    acl_ifindexes: BTreeMap<String, Option<u32>>,
    /// Host addresses (IPv4, IPv6) that do not fit the local-address maps.
    local_not_loaded: (usize, usize),
    /// Routes learned from the kernel table of `[kernel_routes]`.
    learned: LearnedRoutes,
    /// Export a hit counter per ACL rule (label `priority`), not only totals
    /// (popd --metrics-acl-rules).
    pub acl_rule_metrics: bool,
    /// Sampling rate and capture filter in the data plane.
    pub observe: Option<crate::dataplane::observe::ObserveMaps>,
    /// The sFlow exporter (`[sflow]`).
    pub sflow: Option<crate::sflow::Exporter>,
}

/// The learned routes' view of the controller (split borrows of its fields).
macro_rules! learned_env {
    ($c:expr) => {
        Env::new(&$c.kernel, &$c.applied.tx_ports, &$c.state.routes)
    };
}

/// What a write of the tables does with the configured routes.
#[derive(Clone, Copy)]
enum RouteWork<'a> {
    /// They are in the maps already.
    Keep,
    /// After a start: compare each with the maps, write those that differ.
    Reconcile,
    /// The maps hold the desired state's routes: make them hold these.
    Replace(&'a ConfiguredRoutes, &'a crate::state::Ids),
    /// The maps hold these: make them hold the desired state's routes.
    Revert(&'a ConfiguredRoutes, &'a crate::state::Ids),
}

/// How a change becomes durable.
enum Persist {
    /// A new snapshot of the whole state (a whole config: start, apply).
    Snapshot,
    /// One journal record.
    Record(Change),
}

/// Result of a request: JSON data or a one-line error.
pub type Reply = Result<Value, String>;

fn requested_mode(m: XdpMode) -> RequestedMode {
    match m {
        XdpMode::Auto => RequestedMode::Auto,
        XdpMode::Native => RequestedMode::Native,
        XdpMode::Generic => RequestedMode::Generic,
    }
}

impl Controller {
    /// Adopts or loads the data plane and brings it to `state`: the persisted
    /// state, or with `first` the config of a first start (already checked,
    /// see [`check::plan`]), which is persisted only once it is applied. When
    /// the start fails, what it did is undone: the interfaces it attached are
    /// detached, a data plane it loaded is removed with its pins, and an
    /// adopted one keeps forwarding as it was.
    /// With `[kernel_routes]`, route entries pinned by an earlier popd that no
    /// configured route owns keep forwarding until the first dump of the table
    /// replaces them (the kernel-routes thread does it, then calls
    /// [`Controller::finish_start`]).
    pub fn start(
        store: Store,
        state: Persisted,
        first: bool,
        dp: Dataplane,
        kernel: KernelView,
    ) -> Result<Self, ControlError> {
        if !first {
            tracing::info!(
                generation = state.generation,
                "desired state from {}",
                store.path().display()
            );
        }
        // Pinned entries that configured routes do not own are the learned
        // routes of the previous run: kept apart until the first dump.
        let mut pinned = Pinned::default();
        let applied = compile::read_back(&dp.maps, &mut pinned);
        let acl = match AclMaps::open(&dp.maps_dir()).and_then(|a| {
            let copy = a.active_copy()?;
            Ok((a, copy))
        }) {
            Ok(a) => a,
            Err(e) => {
                if let Err(e2) = dp.discard() {
                    tracing::error!("removing the data plane of a failed start: {e2}");
                }
                return Err(ControlError::Rejected(e));
            }
        };
        let (acl, acl_copy) = acl;
        let before = applied.clone();
        let learned = LearnedRoutes::new(pinned);
        let mut c = Self {
            store,
            state,
            dp: Some(dp),
            kernel,
            applied,
            attached: BTreeMap::new(),
            acl: Some(acl),
            acl_copy,
            acl_ifindexes: BTreeMap::new(),
            local_not_loaded: (0, 0),
            learned,
            acl_rule_metrics: false,
            observe: None,
            sflow: None,
        };
        match c.bring_up(first) {
            Ok(()) => Ok(c),
            Err(e) => {
                c.abandon_start(&before);
                Err(e)
            }
        }
    }

    /// The body of [`Controller::start`].
    fn bring_up(&mut self, first: bool) -> Result<(), ControlError> {
        let cfg = self.state.config.clone();
        for i in &cfg.interfaces {
            if let Err(e) = self.attach(&i.name, cfg.dataplane.xdp_mode) {
                // A first config that cannot be applied is refused whole; the
                // persisted state keeps the interfaces that attach.
                if first {
                    return Err(e);
                }
                tracing::error!("{e}");
            }
        }
        let fresh: Vec<u32> = self.state.ids.customers.values().copied().collect();
        if !self.dp().adopted() {
            for id in fresh {
                let _ = self.dp_mut().maps.reset_customer(id);
            }
        }
        // The rules are compiled afresh (ifindexes may have changed while popd
        // was down) into the inactive copy and swapped in by sync().
        let staged = self.stage_acls(&cfg)?;
        self.sync_with(staged, RouteWork::Reconcile)?;
        if first {
            // Applied: now it is the desired state.
            self.store.save(&self.state)?;
        }
        if self.kernel_table().is_none() {
            // Nothing to learn: pinned leftovers go now, and a new build's
            // data plane, which holds the whole desired state, is swapped in.
            let pinned = Pinned::read_routes(&self.dp().maps_dir())?;
            self.learned.attach_pinned_routes(pinned);
            self.learned_commit(Staged::default());
            self.finish_start()?;
        }
        // Interfaces pinned by an earlier popd but no longer configured.
        let stale: Vec<String> = self
            .dp()
            .pinned_interfaces()
            .into_iter()
            .filter(|n| !cfg.interfaces.iter().any(|i| &i.name == n))
            .collect();
        for n in stale {
            tracing::info!(iface = %n, "detaching interface no longer in the desired state");
            let _ = self.dp_mut().detach(&n);
        }
        let maps_dir = self.dp().maps_dir();
        match crate::dataplane::observe::ObserveMaps::open(&maps_dir) {
            Ok(mut o) => {
                // A capture armed by a popd that died has no reader any more.
                if let Err(e) = o.set_capture(None) {
                    tracing::error!("capture: disarming: {e}");
                }
                self.observe = Some(o);
            }
            Err(e) => tracing::error!("sampling and capture unavailable: {e}"),
        }
        match crate::sflow::Exporter::start(&maps_dir) {
            Ok(x) => self.sflow = Some(x),
            Err(e) => tracing::error!("{e}"),
        }
        self.apply_sflow();
        Ok(())
    }

    /// Undoes a failed start: an adopted data plane gets back the entries it
    /// held (`before`) and keeps forwarding; what this start attached or
    /// loaded is removed.
    fn abandon_start(&mut self, before: &Tables) {
        self.acl = None;
        let Some(mut dp) = self.dp.take() else {
            return;
        };
        if dp.adopted() && !dp.upgrading() {
            if let Err(e) = compile::apply(&mut dp.maps, &mut self.applied, before, |_| Ok(())) {
                tracing::error!("restoring the data plane after a failed start: {e}");
            }
        }
        if let Err(e) = dp.discard() {
            tracing::error!("removing what a failed start created under bpffs: {e}");
        }
        self.attached.clear();
    }

    /// Where the route maps are pinned, while the first sync of learned
    /// routes is still to come (the follower reads them without the lock).
    pub fn learned_pinned_dir(&self) -> Option<std::path::PathBuf> {
        let dp = self.dp.as_ref()?;
        self.learned.first_sync_pending().then(|| dp.maps_dir())
    }

    /// Hands over the route entries read from [`Self::learned_pinned_dir`].
    pub fn learned_attach_pinned(&mut self, pinned: Pinned) {
        self.learned.attach_pinned_routes(pinned);
    }

    /// Once the first sync of learned routes is done: a new build's data plane
    /// now holds the whole desired state, so it is swapped in.
    pub fn finish_start(&mut self) -> Result<(), String> {
        let Some(dp) = self.dp.as_mut() else {
            return Ok(());
        };
        if let Some(old) = dp.finish_upgrade().map_err(|e| e.to_string())? {
            tracing::info!(
                old_program_id = old,
                program_id = dp.program_id(),
                "data plane upgraded without detaching: every link runs the new program"
            );
        }
        Ok(())
    }

    /// The kernel routing table routes are learned from.
    pub fn kernel_table(&self) -> Option<u32> {
        self.state.config.kernel_routes.map(|k| k.table)
    }

    /// What learned routes depend on besides notifications: the table, and
    /// the ports pop forwards out of (routes via other devices are skipped,
    /// so a change of ports needs a fresh dump).
    pub fn learned_inputs(&self) -> (Option<u32>, Vec<u32>) {
        let mut ports: Vec<u32> = self.applied.tx_ports.iter().copied().collect();
        ports.sort_unstable();
        (self.kernel_table(), ports)
    }

    /// Applies route notifications of the followed table. Returns whether a
    /// new next hop appeared (the kernel should be asked to resolve it).
    pub fn learned_apply(&mut self, msgs: &[RouteMsg]) -> bool {
        let Some(dp) = self.dp.as_mut() else {
            return false;
        };
        let env = learned_env!(self);
        self.learned.apply(msgs, &env, &mut dp.maps);
        self.learned.take_new_nexthops()
    }

    /// Adds dumped routes to a table being rebuilt.
    pub fn learned_stage(&mut self, st: &mut Staged, msgs: &[RouteMsg]) {
        let Some(dp) = self.dp.as_mut() else { return };
        let env = learned_env!(self);
        for m in msgs {
            self.learned.stage(st, m, &env, &mut dp.maps);
        }
    }

    /// Swaps in a rebuilt table, writing only the differences.
    pub fn learned_commit(&mut self, st: Staged) -> bool {
        let Some(dp) = self.dp.as_mut() else {
            return false;
        };
        let env = learned_env!(self);
        self.learned.commit(st, &env, &mut dp.maps);
        self.learned.take_new_nexthops()
    }

    /// Drops a table being rebuilt (a dump failed half-way).
    pub fn learned_discard(&mut self, st: Staged) {
        let Some(dp) = self.dp.as_mut() else { return };
        self.learned.discard(st, &mut dp.maps);
    }

    /// Tries again to install learned routes that found no room.
    pub fn learned_retry(&mut self) {
        if self.learned.overflowed() == (0, 0) {
            return;
        }
        let Some(dp) = self.dp.as_mut() else { return };
        let env = learned_env!(self);
        self.learned.retry_overflow(&env, &mut dp.maps);
    }

    /// The learned routes.
    pub fn learned(&self) -> &LearnedRoutes {
        &self.learned
    }

    /// Makes room for `new` configured routes (IPv4, IPv6) that the maps do
    /// not hold yet, in full route maps, by removing learned routes
    /// (configured routes always fit).
    /// `configured`: the configured routes (IPv4, IPv6) in the maps now.
    fn make_room(&mut self, new: (usize, usize), configured: (usize, usize)) {
        let Some(dp) = self.dp.as_mut() else { return };
        let env = learned_env!(self);
        let l = &mut self.learned;
        for v6 in [false, true] {
            let (cap, new, have, learned_n) = if v6 {
                (pop_common::MAX_ROUTES_V6, new.1, configured.1, l.len_v6())
            } else {
                (pop_common::MAX_ROUTES_V4, new.0, configured.0, l.len_v4())
            };
            if new == 0 || have + new + learned_n <= cap as usize {
                continue;
            }
            let (in4, in6) = l.installed(&env);
            let fill = have + if v6 { in6 } else { in4 };
            if fill + new > cap as usize {
                l.evict(v6, fill + new - cap as usize, &env, &mut dp.maps);
            }
        }
    }

    /// The configured prefixes of `routes` that the maps hold neither as a
    /// configured nor as a learned route (IPv4, IPv6).
    fn new_prefixes(&self, routes: &ConfiguredRoutes) -> (usize, usize) {
        let mut n = (0, 0);
        for (p, _) in self.state.routes.delta(routes).write {
            if self.state.routes.get(&p).is_some() || self.learned.get(&p).is_some() {
                continue;
            }
            match p {
                IpNet::V4(_) => n.0 += 1,
                IpNet::V6(_) => n.1 += 1,
            }
        }
        n
    }

    /// Makes the data plane sample and the exporter send as `[sflow]` says
    /// (nothing without it). A capture armed meanwhile is kept.
    fn apply_sflow(&mut self) {
        let valid = self
            .state
            .config
            .sflow
            .as_ref()
            .and_then(|s| validate::check_sflow(s).ok());
        let rate = valid.as_ref().map_or(0, |v| v.sampling_rate);
        if let Some(o) = self.observe.as_mut() {
            if let Err(e) = o.set_sampling_rate(rate) {
                tracing::error!("sflow: {e}");
            }
        }
        if let Some(x) = &self.sflow {
            let kernel = &self.kernel;
            x.set(valid.map(|v| {
                crate::sflow::Settings::new(
                    &v,
                    &self.state.config,
                    |n| kernel.links.get(n).map(|l| l.ifindex),
                    &self.state.ids.iface_slots,
                )
            }));
        }
    }

    /// ifindex of every interface the ACL rules of `cfg` name.
    fn acl_ifindexes(&self, cfg: &Config) -> BTreeMap<String, Option<u32>> {
        check::acl_ifindexes(cfg, &self.kernel)
    }

    /// Compiles `cfg`'s ACL rules into the inactive copy (not live yet).
    /// Returns the copy to make live and the ifindexes it was compiled with.
    fn stage_acls(
        &mut self,
        cfg: &Config,
    ) -> Result<(u32, BTreeMap<String, Option<u32>>), ControlError> {
        let staged = check::compile_acls(cfg, &self.kernel)?;
        let copy = 1 - self.acl_copy;
        self.write_acl_copy(copy, &staged.compiled)?;
        Ok((copy, staged.ifindexes))
    }

    fn write_acl_copy(
        &mut self,
        copy: u32,
        compiled: &crate::acl::CompiledAcl,
    ) -> Result<(), ControlError> {
        let acl = self.acl.as_mut().ok_or(ControlError::Removed)?;
        acl.write_copy(copy, compiled)?;
        tracing::info!(
            rules = compiled.rules.len(),
            copy,
            nodes = compiled.nodes.len(),
            "ACL compiled into the inactive copy"
        );
        Ok(())
    }

    /// Writes `want` into the maps: anti-spoofing entries before the interface
    /// flags that use them, [`compile::apply`], stale entries after, policers.
    fn write_tables(&mut self, want: &Tables, routes: RouteWork) -> Result<(), ControlError> {
        let dp = self.dp.as_mut().ok_or(ControlError::Removed)?;
        let acl = self.acl.as_mut().ok_or(ControlError::Removed)?;
        acl.add_spoof(&want.spoof)?;
        let (state, learned) = (&self.state, &mut self.learned);
        compile::apply(&mut dp.maps, &mut self.applied, want, |maps| match routes {
            RouteWork::Keep => Ok(()),
            RouteWork::Reconcile => route_sync::reconcile(maps, &state.routes, &state.ids),
            RouteWork::Replace(new, ids) => {
                route_sync::replace(maps, (&state.routes, &state.ids), (new, ids), learned)
            }
            RouteWork::Revert(from, ids) => {
                route_sync::replace(maps, (from, ids), (&state.routes, &state.ids), learned)
            }
        })?;
        if want.local_not_loaded != self.local_not_loaded {
            let (v4, v6) = want.local_not_loaded;
            if v4 + v6 > 0 {
                tracing::warn!(
                    ipv4 = v4,
                    ipv6 = v6,
                    max = pop_common::MAX_LOCAL_ADDRS,
                    "host addresses beyond the capacity of local_v4/local_v6 are not \
                     loaded: packets to them are routed, not handed to the kernel"
                );
            }
            self.local_not_loaded = want.local_not_loaded;
        }
        self.applied.local_not_loaded = want.local_not_loaded;
        acl.prune_spoof(&want.spoof)?;
        self.applied.spoof = want.spoof.clone();
        for (id, rb) in &want.policers {
            if self.applied.policers.get(id) != Some(rb) {
                acl.set_policer(*id, Some(*rb))?;
                self.applied.policers.insert(*id, *rb);
            }
        }
        let gone: Vec<u32> = self
            .applied
            .policers
            .keys()
            .filter(|id| !want.policers.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            acl.set_policer(id, None)?;
            self.applied.policers.remove(&id);
        }
        Ok(())
    }

    /// Like [`Controller::sync`], making a staged ACL copy live.
    fn sync_with(
        &mut self,
        staged: (u32, BTreeMap<String, Option<u32>>),
        routes: RouteWork,
    ) -> Result<(), ControlError> {
        let (copy, ifindexes) = staged;
        let want = compile::compile(
            &self.state.config,
            &self.state.ids,
            self.state.generation,
            &self.kernel,
            &self.attached,
            copy,
        );
        self.write_tables(&want, routes)?;
        if copy != self.acl_copy {
            // No packet still walks the old copy once this returns.
            crate::acl::wait_for_readers();
            self.acl_copy = copy;
            self.settle_acl_hits();
        }
        self.acl_ifindexes = ifindexes;
        Ok(())
    }

    /// After a swap of ACL copies: the hits that carried-over rules took in
    /// the old copy during the swap join their new slots.
    fn settle_acl_hits(&mut self) {
        let copy = self.acl_copy;
        if let Some(acl) = self.acl.as_mut() {
            if let Err(e) = acl.settle_hits(copy) {
                tracing::warn!("ACL hit counts not carried over: {e}");
            }
        }
    }

    /// The desired ACL rules by priority, each with its hit counter from the
    /// live copy (0 for a rule the data plane does not hold: its `in_iface`
    /// does not exist, so it matches nothing).
    pub fn acl_rules_with_hits(&self) -> Vec<AclInfo> {
        let mut acls = self.state.config.acls.clone();
        acls.sort_by_key(|a| a.priority);
        let hits = match self.acl.as_ref().map(|m| m.hits(self.acl_copy)) {
            Some(Ok(h)) => h,
            Some(Err(e)) => {
                tracing::warn!("reading ACL hit counts: {e}");
                Default::default()
            }
            None => Default::default(),
        };
        acls.into_iter()
            .map(|acl| {
                let h = hits.get(&acl.priority).copied().unwrap_or_default();
                AclInfo {
                    acl,
                    hits: h.packets,
                    hit_bytes: h.bytes,
                }
            })
            .collect()
    }

    fn dp(&self) -> &Dataplane {
        self.dp.as_ref().expect("data plane present")
    }

    fn dp_mut(&mut self) -> &mut Dataplane {
        self.dp.as_mut().expect("data plane present")
    }

    /// The persisted state.
    pub fn state(&self) -> &Persisted {
        &self.state
    }

    /// The kernel's ifindex of interface `name`, if it exists.
    pub fn ifindex(&self, name: &str) -> Option<u32> {
        self.kernel.links.get(name).map(|l| l.ifindex)
    }

    /// Attach modes by interface.
    pub fn attached(&self) -> &BTreeMap<String, AttachMode> {
        &self.attached
    }

    fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<bool, ControlError> {
        if !self.kernel.links.contains_key(iface) {
            return Err(ControlError::NoSuchInterface {
                name: iface.to_string(),
            });
        }
        let (m, new) = self.dp_mut().attach(iface, requested_mode(mode))?;
        if new {
            tracing::info!(iface, mode = m.label(), "attached XDP");
        } else {
            tracing::info!(iface, mode = m.label(), "adopted XDP link");
        }
        self.attached.insert(iface.to_string(), m);
        Ok(new)
    }

    /// Re-writes the maps for the current state and kernel view.
    /// The ACL rules are recompiled (and swapped) only when an interface they
    /// name changed its ifindex.
    fn sync(&mut self) -> Result<(), ControlError> {
        let cfg = std::mem::take(&mut self.state.config);
        let ifindexes = self.acl_ifindexes(&cfg);
        let staged = if ifindexes != self.acl_ifindexes {
            self.stage_acls(&cfg)
        } else {
            Ok((self.acl_copy, ifindexes))
        };
        self.state.config = cfg;
        self.sync_with(staged?, RouteWork::Keep)
    }

    /// New kernel state (links, addresses, neighbours): re-resolve next hops.
    /// Takes a new kernel view; reconciles the maps with it when it differs
    /// from the last one (a full compile costs ~1 s with a million routes, so
    /// the periodic re-read does nothing when nothing changed). Returns whether
    /// it differed.
    pub fn kernel_changed(&mut self, view: KernelView) -> bool {
        if view == self.kernel {
            return false;
        }
        self.kernel = view;
        if self.dp.is_none() {
            // Detached (shutdown in progress): nothing to keep in step.
            return true;
        }
        // Interfaces that appeared after start.
        let mode = self.state.config.dataplane.xdp_mode;
        let appeared: Vec<String> = self
            .state
            .config
            .interfaces
            .iter()
            .filter(|i| {
                !self.attached.contains_key(&i.name) && self.kernel.links.contains_key(&i.name)
            })
            .map(|i| i.name.clone())
            .collect();
        for name in appeared {
            if let Err(e) = self.attach(&name, mode) {
                tracing::error!("{e}");
            }
        }
        if let Err(e) = self.sync() {
            tracing::error!("reconciling after a kernel change: {e}");
        }
        if let Some(dp) = self.dp.as_mut() {
            let env = learned_env!(self);
            self.learned.refresh_nexthops(&env, &mut dp.maps);
        }
        self.apply_sflow();
        true
    }

    /// Next hops the kernel should resolve for us.
    pub fn unresolved(&self) -> Vec<(u32, IpAddr)> {
        let mut out = compile::unresolved(&self.state.config, &self.state.routes, &self.kernel);
        for nh in self.learned.unresolved() {
            if !out.contains(&nh) {
                out.push(nh);
            }
        }
        out
    }

    /// What the data plane holds now, for [`check::plan`].
    fn current(&self) -> Current<'_> {
        Current {
            config: &self.state.config,
            ids: &self.state.ids,
            generation: self.state.generation,
            acl_copy: self.acl_copy,
            acl_ifindexes: Some(&self.acl_ifindexes),
        }
    }

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
    fn commit(
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
            crate::acl::wait_for_readers();
            self.acl_copy = copy;
            self.settle_acl_hits();
        }
        self.acl_ifindexes = ifindexes;
        // The old state is kept only until the new one is durable.
        let old_routes = routes.map(|r| std::mem::replace(&mut self.state.routes, r));
        let old_ids = std::mem::replace(&mut self.state.ids, ids);
        let old_config = std::mem::replace(&mut self.state.config, candidate);
        let old_generation = std::mem::replace(&mut self.state.generation, generation);
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
        Ok(generation)
    }

    /// Makes one change durable: one journal record (one write, one
    /// fdatasync), the change that makes `generation`.
    fn persist(&mut self, generation: u64, change: &Change) -> Result<(), ControlError> {
        self.store.append(generation, change)?;
        Ok(())
    }

    /// Once the journal has grown past its bound (about half the snapshot):
    /// a new snapshot of the state, which empties it. A failure leaves the
    /// journal as it was (the state is durable either way).
    fn maybe_compact(&mut self) {
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

    fn undo_attach(&mut self, names: &[String]) {
        for n in names {
            let _ = self.dp_mut().detach(n);
            self.attached.remove(n);
        }
    }

    /// A change to customers or ACL rules: the config edited, checked whole
    /// and committed; the routes are not touched.
    fn edit(&mut self, change: Change) -> Result<u64, ControlError> {
        let mut candidate = self.state.config.clone();
        desired::edit_config(&mut candidate, &change)?;
        let plan = self.check(&candidate, Routes::Current(&self.state.routes))?;
        self.commit(candidate, plan, Persist::Record(change))
    }

    /// `route add` / `route del`: one route checked, written and made
    /// durable, in O(1) of the table's size.
    fn route_change(&mut self, change: Change) -> Result<u64, ControlError> {
        if self.dp.is_none() {
            return Err(ControlError::Removed);
        }
        let done = match &change {
            Change::RouteAdd { route } => {
                desired::route_add(&mut self.state, route, Some(&self.kernel))?
            }
            Change::RouteDel { prefix } => desired::route_del(&mut self.state, prefix)?,
            _ => return Err("not a route change".into()),
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
    fn write_route(&mut self, done: &RouteDone) -> Result<(), ControlError> {
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
    fn unwrite_route(&mut self, done: &RouteDone) {
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
    fn set_nexthop(
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

    fn reply(r: Result<u64, ControlError>) -> Reply {
        let generation = r.map_err(|e| e.to_string())?;
        Ok(json!({ "generation": generation }))
    }

    /// Applies a whole new config (SIGHUP, `popctl apply`). The config is
    /// checked whole even when nothing would change; `dry_run` stops after
    /// the checks.
    pub fn apply_config(&mut self, text: String, dry_run: bool) -> Result<Value, ControlError> {
        let t = std::time::Instant::now();
        let candidate = validate::parse_config(&text)?;
        drop(text);
        let parsed = t.elapsed();
        let plan = self.check(&candidate, Routes::InConfig)?;
        let checked = t.elapsed();
        // The routes' text is not needed past the check (the plan holds them
        // typed); with a million routes it is ~200 MB.
        let mut candidate = candidate;
        candidate.routes = Vec::new();
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

    /// Handles one API request.
    pub fn handle(&mut self, req: Request) -> (Reply, After) {
        let reply = match req {
            Request::Shutdown { detach } => {
                return (
                    Ok(json!({ "generation": self.state.generation })),
                    After::Shutdown { detach },
                )
            }
            Request::Status => Ok(serde_json::to_value(self.status()).expect("serialises")),
            Request::RouteAdd(route) => Self::reply(self.route_change(Change::RouteAdd { route })),
            Request::RouteDel { prefix } => {
                Self::reply(self.route_change(Change::RouteDel { prefix }))
            }
            Request::RouteShow { source } => match source.as_deref() {
                None | Some("config") | Some("kernel") => {
                    Ok(serde_json::to_value(self.route_list(source.as_deref()))
                        .expect("serialises"))
                }
                Some(other) => Err(format!(
                    "route show: source \"{other}\": expected config or kernel"
                )),
            },
            Request::RouteGet { address } => self.route_get(&address),
            Request::CustomerAdd(customer) => {
                Self::reply(self.edit(Change::CustomerAdd { customer }))
            }
            Request::CustomerDel { name } => Self::reply(self.edit(Change::CustomerDel { name })),
            Request::CustomerShow => {
                // Show the burst in effect: the default when only the rate is set.
                let mut customers = self.state.config.customers.clone();
                for c in &mut customers {
                    if let (Some(rate), None) = (c.rate_bps, c.burst_bytes) {
                        c.burst_bytes = Some(crate::config::validate::default_burst_bytes(rate));
                    }
                }
                Ok(serde_json::to_value(&customers).expect("serialises"))
            }
            Request::AclAdd(acl) => Self::reply(self.edit(Change::AclAdd { acl })),
            Request::AclDel { priority } => Self::reply(self.edit(Change::AclDel { priority })),
            Request::AclShow => {
                Ok(serde_json::to_value(self.acl_rules_with_hits()).expect("serialises"))
            }
            Request::Stats { customer } => self.stats(customer.as_deref()),
            Request::Apply { config, dry_run } => self
                .apply_config(config, dry_run)
                .map_err(|e| e.to_string()),
            Request::Export => {
                Ok(json!({ "config": validate::to_toml(&self.state.whole_config()) }))
            }
            Request::Trace(t) => self.trace(&t),
            // Served by the API server itself (a stream, not one answer).
            Request::Capture(_) => Err("capture: not a one-answer request".into()),
        };
        (reply, After::Continue)
    }

    /// `status`.
    pub fn status(&self) -> StatusInfo {
        let interfaces = self
            .state
            .config
            .interfaces
            .iter()
            .map(|i| InterfaceStatus {
                name: i.name.clone(),
                ifindex: self
                    .kernel
                    .links
                    .get(&i.name)
                    .map(|l| l.ifindex)
                    .unwrap_or(0),
                role: match i.role {
                    crate::config::model::InterfaceRole::Upstream => "upstream",
                    crate::config::model::InterfaceRole::Customer => "customer",
                }
                .to_string(),
                xdp_mode: self
                    .attached
                    .get(&i.name)
                    .map(|m| m.label())
                    .unwrap_or("detached")
                    .to_string(),
            })
            .collect();
        let a = &self.applied;
        let fill = |name: &str, entries: usize, max: u32| MapFill {
            name: name.into(),
            entries: entries as u64,
            max_entries: max as u64,
        };
        use pop_common::maps as n;
        let (l4, l6) = self.learned.installed(&learned_env!(self));
        let mut maps = vec![
            fill(
                n::ROUTES_V4,
                self.state.routes.len_v4() + l4,
                pop_common::MAX_ROUTES_V4,
            ),
            fill(
                n::ROUTES_V6,
                self.state.routes.len_v6() + l6,
                pop_common::MAX_ROUTES_V6,
            ),
            fill(
                n::NEXTHOPS,
                a.nexthops.len() + self.learned.nexthop_count(),
                pop_common::MAX_NEXTHOPS,
            ),
            fill(
                n::CUST_V4,
                a.cust_v4.len(),
                pop_common::MAX_CUSTOMER_PREFIXES,
            ),
            fill(
                n::CUST_V6,
                a.cust_v6.len(),
                pop_common::MAX_CUSTOMER_PREFIXES,
            ),
            fill(n::IFACES, a.ifaces.len(), pop_common::MAX_IFACES),
            fill(n::LOCAL_V4, a.local_v4.len(), pop_common::MAX_LOCAL_ADDRS),
            fill(n::LOCAL_V6, a.local_v6.len(), pop_common::MAX_LOCAL_ADDRS),
            fill(
                n::UPPER_MACS,
                a.upper_macs.len(),
                pop_common::MAX_UPPER_MACS,
            ),
            fill(
                n::SPOOF_SRC_V4,
                a.spoof.count_v4(),
                pop_common::MAX_SPOOF_PREFIXES,
            ),
            fill(
                n::SPOOF_SRC_V6,
                a.spoof.count_v6(),
                pop_common::MAX_SPOOF_PREFIXES,
            ),
        ];
        // The IPv4 FIB the data plane looks routes up in: split /24s,
        // distinct answers and route records (ECMP groups) in use.
        if let Some(dp) = self.dp.as_ref() {
            let s = dp.maps.routes4.stats();
            maps.push(fill(
                n::FIB4_TBL8,
                s.fib.groups_used as usize,
                s.fib.group_limit,
            ));
            maps.push(fill(
                n::FIB4_RESULTS,
                s.fib.results_used as usize,
                s.fib.result_limit,
            ));
            maps.push(fill(n::FIB4_ROUTES, s.records as usize, s.record_limit));
            // The IPv6 FIB: trie nodes and route records in use.
            let s = dp.maps.routes6.stats();
            maps.push(fill(
                n::FIB6_NODES,
                s.fib.nodes_used as usize,
                s.fib.node_limit,
            ));
            maps.push(fill(n::FIB6_ROUTES, s.records as usize, s.record_limit));
        }
        StatusInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            program_id: self.dp.as_ref().map(|d| d.program_id()),
            generation: self.state.generation,
            interfaces,
            maps,
        }
    }

    /// A configured route as `route show` prints it.
    fn describe(&self, prefix: &IpNet, hops: &super::routes::Hops) -> RouteInfo {
        let ifindex = self.kernel.links.get(&hops.dev).map(|l| l.ifindex);
        RouteInfo {
            prefix: prefix.to_string(),
            dev: hops.dev.clone(),
            source: "config".into(),
            blackhole: false,
            nexthops: hops
                .via
                .iter()
                .map(|ip| {
                    let mac = ifindex
                        .and_then(|i| self.kernel.neighbours.get(&(i, *ip)))
                        .and_then(|n| n.mac);
                    NexthopInfo {
                        via: ip.to_string(),
                        mac: mac.map(|m| format_mac(&m)),
                        state: if mac.is_some() {
                            "resolved"
                        } else {
                            "unresolved"
                        }
                        .into(),
                    }
                })
                .collect(),
        }
    }

    /// The configured routes, in address order (IPv4 first).
    fn routes(&self) -> Vec<RouteInfo> {
        self.state
            .routes
            .iter()
            .map(|(p, h)| self.describe(&p, h))
            .collect()
    }

    /// `popctl trace`: runs the described packet through the trace program.
    fn trace(&mut self, req: &TraceRequest) -> Reply {
        let link = self
            .kernel
            .links
            .get(&req.in_iface)
            .ok_or_else(|| format!("trace: --in {}: no such device", req.in_iface))?;
        let ifindex = link.ifindex;
        // Addressed to the MAC the host accepts there: a tagged frame's is
        // its VLAN device's.
        let dst_mac = req
            .vlan
            .and_then(|vid| compile::vlan_device(&self.kernel, &req.in_iface, vid))
            .and_then(|dev| self.kernel.links.get(&dev))
            .map_or(link.mac, |dev| dev.mac);
        let (frame, packet) = super::trace::frame(req, dst_mac)?;
        let Some(dp) = self.dp.as_mut() else {
            return Err("trace: the data plane is not loaded".into());
        };
        let (action, rec) = dp.trace(&frame, ifindex).map_err(|e| e.to_string())?;
        let ids = &self.state.ids.customers;
        let customer = |id: u32| {
            ids.iter()
                .find(|(_, v)| **v == id && id != 0)
                .map(|(name, _)| name.clone())
        };
        let forwarded = action == XDP_TX || action == XDP_REDIRECT;
        // An ICMP error goes back out of the ingress port, to the source.
        let icmp = rec
            .icmp_type
            .checked_sub(1)
            .and_then(pop_common::IcmpType::from_u32);
        let egress = self
            .kernel
            .links
            .iter()
            .find(|(_, l)| l.ifindex == rec.egress_ifindex)
            .map(|(name, _)| name.clone());
        let info = TraceInfo {
            packet: format!("{packet} in {}", req.in_iface),
            action: match action {
                XDP_DROP => "drop",
                XDP_PASS => "pass",
                XDP_TX => "tx",
                XDP_REDIRECT => "redirect",
                _ => "aborted",
            }
            .into(),
            reason: match action {
                XDP_DROP => DropReason::from_u32(rec.drop_reason).map(|r| r.label().into()),
                XDP_PASS => PassReason::from_u32(rec.pass_reason).map(|r| r.label().into()),
                _ => None,
            },
            customer_out: customer(rec.customer_out),
            customer_in: customer(rec.customer_in),
            policed_by: customer(rec.policed_customer),
            acl_rule: (rec.acl_matched == 1).then_some(rec.acl_priority),
            route: (rec.route_found == 1)
                .then(|| self.route_get(&req.dst).ok())
                .flatten()
                .and_then(|v| serde_json::from_value(v).ok()),
            egress: match icmp {
                Some(_) => Some(req.in_iface.clone()),
                None => egress,
            }
            .filter(|_| forwarded),
            nexthop_mac: (forwarded && icmp.is_none()).then(|| format_mac(&rec.dmac)),
            icmp_error: icmp.map(|k| k.label().to_string()),
            icmp_mtu: icmp
                .filter(|k| *k != pop_common::IcmpType::TimeExceeded)
                .map(|_| rec.icmp_mtu),
        };
        Ok(serde_json::to_value(info).expect("serialises"))
    }

    fn route_get(&self, address: &str) -> Reply {
        let ip: IpAddr = address
            .parse()
            .map_err(|_| format!("address \"{address}\": not an IP address"))?;
        // The longest configured prefix: one lookup per length.
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let best = (0..=max).rev().find_map(|len| {
            let p = IpNet::new(ip, len).ok()?.trunc();
            self.state.routes.get(&p).map(|h| (p, h))
        });
        let learned = self.learned.lookup(ip);
        match (best, learned) {
            // A configured route wins for the same prefix; otherwise the longer one.
            (Some((p, h)), l) if l.is_none_or(|l| l.prefix_len() <= p.prefix_len()) => {
                Ok(serde_json::to_value(self.describe(&p, h)).expect("serialises"))
            }
            (_, Some(l)) => Ok(serde_json::to_value(self.learned_info(&l)).expect("serialises")),
            _ => Err(format!("no route to {ip}")),
        }
    }

    /// Counters of one or all customers.
    pub fn customer_stats(&self) -> Vec<CustomerStats> {
        let Some(dp) = self.dp.as_ref() else {
            return Vec::new();
        };
        self.state
            .config
            .customers
            .iter()
            .filter_map(|c| {
                let id = *self.state.ids.customers.get(&c.name)?;
                let record = dp.maps.customer_record(id);
                let i = record.dir[Direction::In as usize];
                let o = record.dir[Direction::Out as usize];
                let drops = DropReason::ALL
                    .iter()
                    .map(|r| (r.label().to_string(), record.drop[*r as usize].packets))
                    .filter(|(_, v)| *v > 0)
                    .collect();
                Some(CustomerStats {
                    name: c.name.clone(),
                    packets_in: i.packets,
                    bytes_in: i.bytes,
                    packets_out: o.packets,
                    bytes_out: o.bytes,
                    drops,
                })
            })
            .collect()
    }

    fn stats(&self, customer: Option<&str>) -> Reply {
        let all = self.customer_stats();
        match customer {
            None => Ok(serde_json::to_value(all).expect("serialises")),
            Some(name) => {
                let one: Vec<_> = all.into_iter().filter(|s| s.name == name).collect();
                if one.is_empty() {
                    return Err(format!("customer {name}: no such customer"));
                }
                Ok(serde_json::to_value(one).expect("serialises"))
            }
        }
    }

    /// Per-interface, per-action counters: (interface, action, packets, bytes).
    pub fn interface_counters(&self) -> Vec<(String, Action, u64, u64)> {
        let Some(dp) = self.dp.as_ref() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for i in &self.state.config.interfaces {
            let Some(slot) = self.state.ids.iface_slots.get(&i.name) else {
                continue;
            };
            let record = dp.maps.iface_record(*slot);
            for a in Action::ALL {
                let c = record.action[*a as usize];
                out.push((i.name.clone(), *a, c.packets, c.bytes));
            }
        }
        out
    }

    /// Global drop counters: the sums over the interfaces' records.
    pub fn drop_counters(&self) -> Vec<(DropReason, u64)> {
        let Some(dp) = self.dp.as_ref() else {
            return Vec::new();
        };
        let totals = dp.maps.reason_totals();
        DropReason::ALL
            .iter()
            .map(|r| (*r, totals.drop[*r as usize].packets))
            .collect()
    }

    /// Global pass counters: the sums over the interfaces' records.
    pub fn pass_counters(&self) -> Vec<(PassReason, u64)> {
        let Some(dp) = self.dp.as_ref() else {
            return Vec::new();
        };
        let totals = dp.maps.reason_totals();
        PassReason::ALL
            .iter()
            .map(|r| (*r, totals.pass[*r as usize].packets))
            .collect()
    }

    /// Host addresses (IPv4, IPv6) left out of `local_v4`/`local_v6` because
    /// they exceed its capacity.
    pub fn local_not_loaded(&self) -> (usize, usize) {
        self.local_not_loaded
    }

    /// ICMP errors the data plane sent, per kind.
    pub fn icmp_counters(&self) -> Vec<(pop_common::IcmpType, u64)> {
        let Some(dp) = self.dp.as_ref() else {
            return Vec::new();
        };
        pop_common::IcmpType::ALL
            .iter()
            .map(|k| (*k, dp.maps.icmp_counter(*k).packets))
            .collect()
    }

    /// Routes by family and source: (IPv4, IPv6) configured, (IPv4, IPv6)
    /// learned from the kernel.
    pub fn route_counts(&self) -> ((usize, usize), (usize, usize)) {
        (
            (self.state.routes.len_v4(), self.state.routes.len_v6()),
            (self.learned.len_v4(), self.learned.len_v6()),
        )
    }

    /// `route show`: configured and/or learned routes, in address order.
    fn route_list(&self, source: Option<&str>) -> Vec<RouteInfo> {
        let mut out = Vec::new();
        if source != Some("kernel") {
            out = self.routes();
        }
        if source != Some("config") {
            let mut learned: Vec<(IpNet, RouteInfo)> = self
                .learned
                .routes()
                .map(|(p, r)| (p, self.describe_learned(&p, &r)))
                .collect();
            learned.sort_by_key(|(p, _)| (matches!(p, IpNet::V6(_)), *p));
            let mut merged = Vec::with_capacity(out.len() + learned.len());
            let mut config = out.into_iter().peekable();
            for (p, info) in learned {
                while let Some(c) = config.next_if(|c| sort_key(&c.prefix) <= sort_key_net(&p)) {
                    merged.push(c);
                }
                merged.push(info);
            }
            merged.extend(config);
            out = merged;
        }
        out
    }

    fn learned_info(&self, prefix: &IpNet) -> RouteInfo {
        match self.learned.get(prefix) {
            Some(r) => self.describe_learned(prefix, &r),
            None => RouteInfo::default(),
        }
    }

    fn describe_learned(&self, prefix: &IpNet, r: &super::learned::LearnedRoute) -> RouteInfo {
        let dev_name = |ifindex: u32| {
            self.kernel
                .links
                .iter()
                .find(|(_, l)| l.ifindex == ifindex)
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| format!("if{ifindex}"))
        };
        RouteInfo {
            prefix: prefix.to_string(),
            dev: r
                .nexthops
                .first()
                .map(|((ifindex, _), _)| dev_name(*ifindex))
                .unwrap_or_default(),
            nexthops: r
                .nexthops
                .iter()
                .map(|((_, via), nh)| {
                    let resolved = nh.flags & pop_common::NH_RESOLVED != 0;
                    NexthopInfo {
                        via: via.to_string(),
                        mac: resolved.then(|| format_mac(&nh.dmac)),
                        state: if resolved { "resolved" } else { "unresolved" }.into(),
                    }
                })
                .collect(),
            source: "kernel".into(),
            blackhole: r.blackhole,
        }
    }

    /// Removes the data plane (`shutdown --detach`, `--detach-on-exit`).
    pub fn remove_dataplane(&mut self) -> Result<(), ControlError> {
        self.sflow = None;
        self.observe = None;
        self.acl = None;
        if let Some(dp) = self.dp.take() {
            dp.remove()?;
        }
        self.attached.clear();
        Ok(())
    }
}

fn sort_key(p: &str) -> (u8, Option<IpNet>, String) {
    let net = p.parse::<IpNet>().ok();
    (matches!(net, Some(IpNet::V6(_))) as u8, net, p.to_string())
}

fn sort_key_net(p: &IpNet) -> (u8, Option<IpNet>, String) {
    (matches!(p, IpNet::V6(_)) as u8, Some(*p), p.to_string())
}

/// The route lines of `popctl apply`'s changes: `+`, `-` and `~` lines,
/// by family, address and length, at most [`MAX_CHANGE_LINES`] of them;
/// returns how many more there are.
fn route_lines(lines: &mut Vec<String>, old: &ConfiguredRoutes, new: &ConfiguredRoutes) -> u64 {
    let delta = old.delta(new);
    let mut out: Vec<(IpNet, Option<&super::routes::Hops>)> = delta
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
                    diff::route_text(&super::routes::route_text(&p, h))
                )
            }
            (Some(h), None) => format!("- {}", diff::route_text(&super::routes::route_text(&p, h))),
            (None, None) => continue,
        };
        lines.push(line);
    }
    more
}

/// XDP actions as the kernel numbers them.
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

/// "aa:bb:cc:dd:ee:ff".
pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
