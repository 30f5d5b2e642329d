//! The controller: desired state (durable) → data plane, and every API request.
//!
//! A change is made in this order, so that a rejected change changes nothing:
//! build the candidate config → validate it → assign ids → attach new
//! interfaces → write the map differences → persist. A failure at any step
//! undoes the steps before it.
use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use pop_common::{Action, Direction, DropReason, PassReason};
use serde_json::{json, Value};

use super::compile::{self, Tables};
use crate::acl::AclMaps;
use crate::api::protocol::{
    ApplyInfo, CustomerStats, InterfaceStatus, MapFill, NexthopInfo, Request, RouteInfo,
    StatusInfo, TraceInfo, TraceRequest,
};
use crate::config::model::{Config, XdpMode};
use crate::config::{diff, validate};
use crate::dataplane::{AttachMode, Dataplane, RequestedMode};
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
    /// Sampling rate and capture filter in the data plane.
    pub observe: Option<crate::dataplane::observe::ObserveMaps>,
    /// The sFlow exporter (`[sflow]`).
    pub sflow: Option<crate::sflow::Exporter>,
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
    /// Starts from the persisted state if any, else from `initial` (the config
    /// file); adopts or loads the data plane and brings it to the desired state.
    pub fn start(
        store: Store,
        initial: Config,
        dp: Dataplane,
        kernel: KernelView,
    ) -> Result<Self, String> {
        let state = match store.load().map_err(|e| e.to_string())? {
            Some(s) => {
                tracing::info!(
                    generation = s.generation,
                    "desired state from {}",
                    store.path().display()
                );
                s
            }
            None => {
                validate::validate(&initial).map_err(|e| e.to_string())?;
                let (ids, _) = compile::assign_ids(&initial, &Default::default())?;
                let s = Persisted {
                    generation: 1,
                    config: initial,
                    ids,
                };
                store.save(&s).map_err(|e| e.to_string())?;
                s
            }
        };
        let applied = compile::read_back(&dp.maps);
        let acl = AclMaps::open(&dp.maps_dir())?;
        let acl_copy = acl.active_copy()?;
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
            observe: None,
            sflow: None,
        };
        let cfg = c.state.config.clone();
        for i in &cfg.interfaces {
            if let Err(e) = c.attach(&i.name, cfg.dataplane.xdp_mode) {
                tracing::error!("{e}");
            }
        }
        // Interfaces pinned by an earlier popd but no longer configured.
        let stale: Vec<String> = c
            .dp()
            .pinned_interfaces()
            .into_iter()
            .filter(|n| !cfg.interfaces.iter().any(|i| &i.name == n))
            .collect();
        for n in stale {
            tracing::info!(iface = %n, "detaching interface no longer in the desired state");
            let _ = c.dp_mut().detach(&n);
        }
        let fresh: Vec<u32> = c.state.ids.customers.values().copied().collect();
        if !c.dp().adopted() {
            for id in fresh {
                let _ = c.dp_mut().maps.reset_customer(id);
            }
        }
        // The rules are compiled afresh (ifindexes may have changed while popd
        // was down) into the inactive copy and swapped in by sync().
        let cfg = c.state.config.clone();
        let staged = c.stage_acls(&cfg)?;
        c.sync_with(staged)
            .map_err(|e| format!("writing maps: {e}"))?;
        // A new build's data plane now holds the whole desired state: swap it in.
        if let Some(old) = c.dp_mut().finish_upgrade().map_err(|e| e.to_string())? {
            tracing::info!(
                old_program_id = old,
                program_id = c.dp().program_id(),
                "data plane upgraded without detaching: every link runs the new program"
            );
        }
        let maps_dir = c.dp().maps_dir();
        match crate::dataplane::observe::ObserveMaps::open(&maps_dir) {
            Ok(mut o) => {
                // A capture armed by a popd that died has no reader any more.
                if let Err(e) = o.set_capture(None) {
                    tracing::error!("capture: disarming: {e}");
                }
                c.observe = Some(o);
            }
            Err(e) => tracing::error!("sampling and capture unavailable: {e}"),
        }
        match crate::sflow::Exporter::start(&maps_dir) {
            Ok(x) => c.sflow = Some(x),
            Err(e) => tracing::error!("{e}"),
        }
        c.apply_sflow();
        Ok(c)
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
        cfg.acls
            .iter()
            .filter_map(|a| a.in_iface.clone())
            .map(|n| {
                let i = self.kernel.links.get(&n).map(|l| l.ifindex);
                (n, i)
            })
            .collect()
    }

    /// Compiles `cfg`'s ACL rules into the inactive copy (not live yet).
    /// Returns the copy to make live and the ifindexes it was compiled with.
    fn stage_acls(&mut self, cfg: &Config) -> Result<(u32, BTreeMap<String, Option<u32>>), String> {
        let rules = cfg
            .acls
            .iter()
            .map(validate::check_acl)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let kernel = &self.kernel;
        let compiled = crate::acl::compile(&rules, &|n| kernel.links.get(n).map(|l| l.ifindex))?;
        let ifindexes = self.acl_ifindexes(cfg);
        let copy = 1 - self.acl_copy;
        let acl = self.acl.as_mut().ok_or("data plane removed")?;
        acl.write_copy(copy, &compiled)?;
        tracing::info!(
            rules = rules.len(),
            copy,
            nodes = compiled.nodes.len(),
            "ACL compiled into the inactive copy"
        );
        Ok((copy, ifindexes))
    }

    /// Writes `want` into the maps: anti-spoofing pairs before the interface
    /// flags that use them, [`compile::apply`], stale pairs after, policers.
    fn write_tables(&mut self, want: &Tables) -> Result<(), String> {
        let dp = self.dp.as_mut().ok_or("data plane removed")?;
        let acl = self.acl.as_mut().ok_or("data plane removed")?;
        acl.add_spoof(&want.spoof)?;
        compile::apply(&mut dp.maps, &mut self.applied, want).map_err(|e| e.to_string())?;
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
    fn sync_with(&mut self, staged: (u32, BTreeMap<String, Option<u32>>)) -> Result<(), String> {
        let (copy, ifindexes) = staged;
        let want = compile::compile(
            &self.state.config,
            &self.state.ids,
            self.state.generation,
            &self.kernel,
            &self.attached,
            copy,
        );
        self.write_tables(&want)?;
        if copy != self.acl_copy {
            // No packet still walks the old copy once this returns.
            crate::acl::wait_for_readers();
            self.acl_copy = copy;
        }
        self.acl_ifindexes = ifindexes;
        Ok(())
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

    fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<bool, String> {
        if !self.kernel.links.contains_key(iface) {
            return Err(format!("interface {iface}: no such device"));
        }
        let (m, new) = self
            .dp_mut()
            .attach(iface, requested_mode(mode))
            .map_err(|e| e.to_string())?;
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
    fn sync(&mut self) -> Result<(), String> {
        let cfg = std::mem::take(&mut self.state.config);
        let ifindexes = self.acl_ifindexes(&cfg);
        let staged = if ifindexes != self.acl_ifindexes {
            self.stage_acls(&cfg)
        } else {
            Ok((self.acl_copy, ifindexes))
        };
        self.state.config = cfg;
        self.sync_with(staged?)
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
        self.apply_sflow();
        true
    }

    /// Next hops the kernel should resolve for us.
    pub fn unresolved(&self) -> Vec<(u32, IpAddr)> {
        compile::unresolved(&self.state.config, &self.kernel)
    }

    /// Makes `candidate` the desired state, transactionally.
    fn commit(&mut self, candidate: Config) -> Result<u64, String> {
        validate::validate(&candidate).map_err(|e| e.to_string())?;
        for r in &candidate.routes {
            if !self.kernel.links.contains_key(&r.dev) {
                return Err(format!(
                    "route {}: dev \"{}\": no such device",
                    r.prefix, r.dev
                ));
            }
        }
        for i in &candidate.interfaces {
            if !self.kernel.links.contains_key(&i.name) {
                return Err(format!("interface {}: no such device", i.name));
            }
        }
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
        let (ids, fresh) = compile::assign_ids(&candidate, &self.state.ids)?;
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
                return Err(e.to_string());
            }
        }
        let generation = self.state.generation + 1;
        let before = self.applied.clone();
        let acls_changed = candidate.acls != self.state.config.acls
            || self.acl_ifindexes(&candidate) != self.acl_ifindexes;
        let (copy, ifindexes) = if acls_changed {
            match self.stage_acls(&candidate) {
                Ok(s) => s,
                Err(e) => {
                    self.undo_attach(&newly);
                    return Err(e);
                }
            }
        } else {
            (self.acl_copy, self.acl_ifindexes.clone())
        };
        let want = compile::compile(
            &candidate,
            &ids,
            generation,
            &self.kernel,
            &self.attached,
            copy,
        );
        if let Err(e) = self.write_tables(&want) {
            // Put back exactly what was there (the staged ACL copy never went live).
            if let Err(e2) = self.write_tables(&before) {
                tracing::error!("rolling back a failed change: {e2}");
            }
            self.undo_attach(&newly);
            return Err(e);
        }
        if copy != self.acl_copy {
            crate::acl::wait_for_readers();
            self.acl_copy = copy;
        }
        self.acl_ifindexes = ifindexes;
        // The old state is kept (not cloned earlier: with a million routes a
        // copy is hundreds of MB) only until the new one is durable.
        let old_state = std::mem::replace(
            &mut self.state,
            Persisted {
                generation,
                config: candidate,
                ids,
            },
        );
        if let Err(e) = self.store.save(&self.state) {
            // Not durable, so not done: back to the old state, ACLs included.
            self.state = old_state;
            let cfg = self.state.config.clone();
            match self.stage_acls(&cfg) {
                Ok(staged) => {
                    if let Err(e2) = self.sync_with(staged) {
                        tracing::error!("rolling back after a failed save: {e2}");
                    }
                }
                Err(e2) => tracing::error!("rolling back ACLs after a failed save: {e2}"),
            }
            self.undo_attach(&newly);
            return Err(e.to_string());
        }
        drop(old_state);
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

    fn undo_attach(&mut self, names: &[String]) {
        for n in names {
            let _ = self.dp_mut().detach(n);
            self.attached.remove(n);
        }
    }

    fn mutate(&mut self, f: impl FnOnce(&mut Config) -> Result<(), String>) -> Reply {
        let mut candidate = self.state.config.clone();
        f(&mut candidate)?;
        let generation = self.commit(candidate)?;
        Ok(json!({ "generation": generation }))
    }

    /// Re-reads nothing; applies a whole new config (SIGHUP, `popctl apply`).
    pub fn apply_config(&mut self, text: &str, dry_run: bool) -> Reply {
        let candidate = validate::parse_config(text).map_err(|e| e.to_string())?;
        let changes = diff::diff(&self.state.config, &candidate);
        if dry_run {
            validate::validate(&candidate).map_err(|e| e.to_string())?;
            let info = ApplyInfo {
                dry_run: true,
                changes,
                generation: self.state.generation,
            };
            return Ok(serde_json::to_value(info).expect("serialises"));
        }
        let generation = if changes.is_empty() {
            self.state.generation
        } else {
            self.commit(candidate)?
        };
        let info = ApplyInfo {
            dry_run: false,
            changes,
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
            Request::RouteAdd(route) => self.mutate(|c| {
                c.routes.retain(|r| !same_prefix(&r.prefix, &route.prefix));
                c.routes.push(route);
                Ok(())
            }),
            Request::RouteDel { prefix } => self.mutate(|c| {
                let n = c.routes.len();
                c.routes.retain(|r| !same_prefix(&r.prefix, &prefix));
                if c.routes.len() == n {
                    return Err(format!("route {prefix}: no such route"));
                }
                Ok(())
            }),
            Request::RouteShow => Ok(serde_json::to_value(self.routes(None)).expect("serialises")),
            Request::RouteGet { address } => self.route_get(&address),
            Request::CustomerAdd(cust) => self.mutate(|c| {
                if c.customers.iter().any(|x| x.name == cust.name) {
                    return Err(format!("customer {}: already exists", cust.name));
                }
                c.customers.push(cust);
                Ok(())
            }),
            Request::CustomerDel { name } => self.mutate(|c| {
                let n = c.customers.len();
                c.customers.retain(|x| x.name != name);
                if c.customers.len() == n {
                    return Err(format!("customer {name}: no such customer"));
                }
                Ok(())
            }),
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
            Request::AclAdd(acl) => self.mutate(|c| {
                if c.acls.iter().any(|x| x.priority == acl.priority) {
                    return Err(format!(
                        "acl {}: priority {} is taken",
                        acl.priority, acl.priority
                    ));
                }
                c.acls.push(acl);
                c.acls.sort_by_key(|a| a.priority);
                Ok(())
            }),
            Request::AclDel { priority } => self.mutate(|c| {
                let n = c.acls.len();
                c.acls.retain(|x| x.priority != priority);
                if c.acls.len() == n {
                    return Err(format!("acl {priority}: no such rule"));
                }
                Ok(())
            }),
            Request::AclShow => {
                let mut acls = self.state.config.acls.clone();
                acls.sort_by_key(|a| a.priority);
                Ok(serde_json::to_value(acls).expect("serialises"))
            }
            Request::Stats { customer } => self.stats(customer.as_deref()),
            Request::Apply { config, dry_run } => self.apply_config(&config, dry_run),
            Request::Export => Ok(json!({ "config": validate::to_toml(&self.state.config) })),
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
        let maps = vec![
            fill(n::ROUTES_V4, a.routes_v4.len(), pop_common::MAX_ROUTES_V4),
            fill(n::ROUTES_V6, a.routes_v6.len(), pop_common::MAX_ROUTES_V6),
            fill(n::NEXTHOPS, a.nexthops.len(), pop_common::MAX_NEXTHOPS),
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
        ];
        StatusInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            program_id: self.dp.as_ref().map(|d| d.program_id()),
            generation: self.state.generation,
            interfaces,
            maps,
        }
    }

    fn routes(&self, only: Option<&str>) -> Vec<RouteInfo> {
        let mut out: Vec<RouteInfo> = self
            .state
            .config
            .routes
            .iter()
            .filter(|r| only.is_none_or(|p| p == r.prefix))
            .map(|r| {
                let ifindex = self.kernel.links.get(&r.dev).map(|l| l.ifindex);
                RouteInfo {
                    prefix: r.prefix.clone(),
                    dev: r.dev.clone(),
                    nexthops: r
                        .via
                        .iter()
                        .map(|v| {
                            let mac = v.parse::<IpAddr>().ok().and_then(|ip| {
                                ifindex
                                    .and_then(|i| self.kernel.neighbours.get(&(i, ip)))
                                    .and_then(|n| n.mac)
                            });
                            NexthopInfo {
                                via: v.clone(),
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
            })
            .collect();
        out.sort_by_key(|r| sort_key(&r.prefix));
        out
    }

    /// `popctl trace`: runs the described packet through the trace program.
    fn trace(&mut self, req: &TraceRequest) -> Reply {
        let link = self
            .kernel
            .links
            .get(&req.in_iface)
            .ok_or_else(|| format!("trace: --in {}: no such device", req.in_iface))?;
        let ifindex = link.ifindex;
        let (frame, packet) = super::trace::frame(req, link.mac)?;
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
            egress: egress.filter(|_| forwarded),
            nexthop_mac: forwarded.then(|| format_mac(&rec.dmac)),
        };
        Ok(serde_json::to_value(info).expect("serialises"))
    }

    fn route_get(&self, address: &str) -> Reply {
        let ip: IpAddr = address
            .parse()
            .map_err(|_| format!("address \"{address}\": not an IP address"))?;
        let best = self
            .state
            .config
            .routes
            .iter()
            .filter_map(|r| r.prefix.parse::<IpNet>().ok().map(|p| (p, r)))
            .filter(|(p, _)| p.contains(&ip))
            .max_by_key(|(p, _)| p.prefix_len());
        match best {
            Some((_, r)) => {
                Ok(serde_json::to_value(&self.routes(Some(&r.prefix))[0]).expect("serialises"))
            }
            None => Err(format!("no route to {ip}")),
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
                let i = dp.maps.customer_counter(id, Direction::In);
                let o = dp.maps.customer_counter(id, Direction::Out);
                let drops = DropReason::ALL
                    .iter()
                    .map(|r| (r.label().to_string(), dp.maps.customer_drop(id, *r).packets))
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
            for a in Action::ALL {
                let c = dp.maps.iface_counter(*slot, *a);
                out.push((i.name.clone(), *a, c.packets, c.bytes));
            }
        }
        out
    }

    /// Global drop counters.
    pub fn drop_counters(&self) -> Vec<(DropReason, u64)> {
        let Some(dp) = self.dp.as_ref() else {
            return Vec::new();
        };
        DropReason::ALL
            .iter()
            .map(|r| (*r, dp.maps.drop_counter(*r).packets))
            .collect()
    }

    /// Global pass counters.
    pub fn pass_counters(&self) -> Vec<(PassReason, u64)> {
        let Some(dp) = self.dp.as_ref() else {
            return Vec::new();
        };
        PassReason::ALL
            .iter()
            .map(|r| (*r, dp.maps.pass_counter(*r).packets))
            .collect()
    }

    /// Routes in the maps by family.
    pub fn route_counts(&self) -> (usize, usize) {
        (self.applied.routes_v4.len(), self.applied.routes_v6.len())
    }

    /// Removes the data plane (`shutdown --detach`, `--detach-on-exit`).
    pub fn remove_dataplane(&mut self) -> Result<(), String> {
        self.sflow = None;
        self.observe = None;
        self.acl = None;
        if let Some(dp) = self.dp.take() {
            dp.remove().map_err(|e| e.to_string())?;
        }
        self.attached.clear();
        Ok(())
    }
}

fn same_prefix(a: &str, b: &str) -> bool {
    match (a.parse::<IpNet>(), b.parse::<IpNet>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn sort_key(p: &str) -> (u8, Option<IpNet>, String) {
    let net = p.parse::<IpNet>().ok();
    (matches!(net, Some(IpNet::V6(_))) as u8, net, p.to_string())
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
