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
use pop_common::{Direction, DropReason, PassReason};
use serde_json::{json, Value};

use super::acl_book::AclIfindexes;
use super::check::{self, Current, Devices, Plan, Routes};
use super::compile::{self, Tables};
use super::desired::{self, Change, RouteDone};
use super::error::ControlError;
use super::learned::{Env, LearnedRoutes, Pinned, Staged};
use super::route_sync;
use crate::api::protocol::{
    AclInfo, ApplyInfo, CustomerStats, InterfaceStatus, MapFill, NexthopInfo, Request, RouteInfo,
    StatusInfo, TraceInfo, TraceRequest, MAX_CHANGE_LINES,
};
use crate::config::model::{Config, XdpMode};
use crate::config::routes::ConfiguredRoutes;
use crate::config::{diff, validate};
use crate::dataplane::{AttachMode, Dataplane, RequestedMode};
use crate::netlink::routes::RouteMsg;
use crate::netlink::KernelView;
use crate::state::{Persisted, Store};

pub use crate::api::server::After;

/// popd's state.
pub struct Controller {
    store: Store,
    state: Persisted,
    /// The data plane (None only after a detach).
    pub dp: Option<Dataplane>,
    kernel: KernelView,
    applied: Tables,
    attached: BTreeMap<String, AttachMode>,
    /// The ACL copy packets use.
    acl_copy: u32,
    /// ifindex of every `in_iface` the live ACL copy was compiled with.
    acl_ifindexes: AclIfindexes,
    /// The rule set a full compile wrote into the inactive copy, not live yet.
    acl_staged: Option<crate::acl::CompiledAcl>,
    /// What both ACL copies hold, for single changes in O(change); `None`
    /// until both copies hold the same full compile.
    acl_rules: Option<crate::acl::incremental::Incremental>,
    /// Host addresses (IPv4, IPv6) that do not fit the local-address maps.
    local_not_loaded: (usize, usize),
    /// Routes learned from the kernel table of `[kernel_routes]`.
    learned: LearnedRoutes,
    /// Where metrics find the facts they need without this lock.
    published: crate::metrics::Published,
    /// The names of the last snapshot published.
    metric_names: std::sync::Arc<crate::metrics::Names>,
    /// Counter maps for the metrics, read with handles of their own.
    counters: Option<std::sync::Arc<crate::dataplane::counter_reader::CounterReader>>,
    /// Sampling rate and capture filter in the data plane.
    pub observe: Option<crate::dataplane::observe::ObserveMaps>,
    /// The sFlow exporter (`[sflow]`).
    pub sflow: Option<crate::sflow::Exporter>,
    /// The customers indexed for single changes; built on the first one,
    /// dropped when a whole config replaces them.
    customer_index: Option<super::customers::CustomerIndex>,
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
pub type Reply = Result<Value, ControlError>;

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
        let acl_copy = match dp.maps.acl.active_copy() {
            Ok(copy) => copy,
            Err(e) => {
                if let Err(e2) = dp.discard() {
                    tracing::error!("removing the data plane of a failed start: {e2}");
                }
                return Err(e.into());
            }
        };
        let before = applied.clone();
        let learned = LearnedRoutes::new(pinned);
        let counters = match crate::dataplane::counter_reader::CounterReader::open(&dp.maps_dir()) {
            Ok(r) => Some(std::sync::Arc::new(r)),
            Err(e) => {
                tracing::error!("metrics: the counters cannot be read: {e}");
                None
            }
        };
        let mut c = Self {
            store,
            state,
            dp: Some(dp),
            kernel,
            applied,
            attached: BTreeMap::new(),
            acl_copy,
            acl_ifindexes: Default::default(),
            acl_staged: None,
            acl_rules: None,
            local_not_loaded: (0, 0),
            learned,
            published: Default::default(),
            metric_names: Default::default(),
            counters,
            observe: None,
            sflow: None,
            customer_index: None,
        };
        match c.bring_up(first) {
            Ok(()) => {
                c.publish();
                Ok(c)
            }
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
    pub fn finish_start(&mut self) -> Result<(), ControlError> {
        let Some(dp) = self.dp.as_mut() else {
            return Ok(());
        };
        if let Some(old) = dp.finish_upgrade()? {
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
        self.publish_facts();
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
        self.publish_facts();
        self.learned.take_new_nexthops()
    }

    /// Drops a table being rebuilt (a dump failed half-way).
    pub fn learned_discard(&mut self, st: Staged) {
        let Some(dp) = self.dp.as_mut() else { return };
        self.learned.discard(st, &mut dp.maps);
        self.publish_facts();
    }

    /// Tries again to install learned routes that found no room.
    pub fn learned_retry(&mut self) {
        if self.learned.overflowed() == (0, 0) {
            return;
        }
        let Some(dp) = self.dp.as_mut() else { return };
        let env = learned_env!(self);
        self.learned.retry_overflow(&env, &mut dp.maps);
        self.publish_facts();
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
    fn acl_ifindexes(&self, cfg: &Config) -> AclIfindexes {
        check::acl_ifindexes(cfg, &self.kernel)
    }

    /// Compiles `cfg`'s ACL rules into the inactive copy (not live yet).
    /// Returns the copy to make live and the ifindexes it was compiled with.
    fn stage_acls(&mut self, cfg: &Config) -> Result<(u32, AclIfindexes), ControlError> {
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
        let dp = self.dp.as_mut().ok_or(ControlError::Removed)?;
        self.acl_rules = None;
        self.acl_staged = None;
        let written = dp.maps.acl.write_copy(copy, compiled)?;
        self.acl_staged = Some(written);
        tracing::info!(
            rules = compiled.rules.len(),
            copy,
            nodes = compiled.nodes.len(),
            "ACL compiled into the inactive copy"
        );
        Ok(())
    }

    /// Writes `want` into the maps ([`compile::apply`], the one writer of
    /// every map but the route tables' entries, which `routes` writes through
    /// the route writer inside it).
    fn write_tables(&mut self, want: &Tables, routes: RouteWork) -> Result<(), ControlError> {
        let dp = self.dp.as_mut().ok_or(ControlError::Removed)?;
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
        Ok(())
    }

    /// Like [`Controller::sync`], making a staged ACL copy live.
    fn sync_with(
        &mut self,
        staged: (u32, AclIfindexes),
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
            crate::dataplane::wait_for_readers();
            self.acl_copy = copy;
            self.acl_catch_up();
        }
        self.acl_ifindexes = ifindexes;
        Ok(())
    }

    /// After a full compile went live (and readers of the old copy are
    /// gone): the same rules into the other copy, so both hold the same and
    /// the next single change is O(change) in either.
    fn acl_catch_up(&mut self) {
        let Some(staged) = self.acl_staged.take() else {
            return;
        };
        let other = 1 - self.acl_copy;
        let Some(acl) = self.dp.as_mut().map(|d| &mut d.maps.acl) else {
            return;
        };
        match acl.write_copy(other, &staged) {
            Ok(written) => {
                self.acl_rules = Some(crate::acl::incremental::Incremental::new(written));
            }
            Err(e) => tracing::warn!(
                "ACL: the inactive copy does not hold the rules yet ({e}); the next change \
                 compiles in full"
            ),
        }
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
        self.publish();
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
                Some(other) => Err(ControlError::RouteSource(other.to_string())),
            },
            Request::RouteGet { address } => self.route_get(&address),
            Request::CustomerAdd(customer) => {
                Self::reply(self.customer_change(Change::CustomerAdd { customer }))
            }
            Request::CustomerDel { name } => {
                Self::reply(self.customer_change(Change::CustomerDel { name }))
            }
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
            Request::AclAdd(acl) => Self::reply(self.acl_change(Change::AclAdd { acl })),
            Request::AclDel { priority } => {
                Self::reply(self.acl_change(Change::AclDel { priority }))
            }
            Request::AclShow => {
                Ok(serde_json::to_value(self.acl_rules_with_hits()).expect("serialises"))
            }
            Request::Stats { customer } => self.stats(customer.as_deref()),
            Request::Apply { config, dry_run } => self.apply_config(config, dry_run),
            Request::Export => {
                Ok(json!({ "config": validate::to_toml(&self.state.whole_config()) }))
            }
            Request::Trace(t) => self.trace(&t),
            // Served by the API server itself (a stream, not one answer).
            Request::Capture(_) => Err(ControlError::WrongRequest(
                "capture: not a one-answer request",
            )),
        };
        (reply, After::Continue)
    }

    /// Removes the data plane (`shutdown --detach`, `--detach-on-exit`).
    pub fn remove_dataplane(&mut self) -> Result<(), ControlError> {
        self.sflow = None;
        self.observe = None;
        self.counters = None;
        let removed = self.dp.take().map(|dp| dp.remove());
        self.attached.clear();
        self.publish();
        removed.transpose()?;
        Ok(())
    }
}

mod acl_change;
mod change;
mod customer;
mod publish;
mod service;
mod views;
pub use views::format_mac;
