//! Single changes to the desired state ([`Persisted`]), as pure functions.
//!
//! A change that an API request makes (`route add`, `customer del`, ...) is a
//! [`Change`]: it is applied here to the desired state, written into the maps
//! by the controller, and appended to the state journal. After a restart the
//! journal's changes are applied here again, in order, on top of the last
//! snapshot: the same functions, so the same result, ids included.
//!
//! Route changes cost O(change): they validate one route against the
//! current state, touch one entry of the typed route table
//! ([`crate::config::routes::ConfiguredRoutes`]) and hand out or free only the
//! next-hop ids of that route. The other changes are small edits of the
//! config (customers, ACL rules); live, a customer change is checked and
//! compiled alone ([`super::customers`]), an ACL change whole. Replayed,
//! both are config edits here.
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::compile::{self, nexthop_key};
use super::error::ControlError;
use crate::config::model::{Acl, Config, Customer, Route};
use crate::config::routes::Hops;
use crate::config::validate::{self, ConfigError, Problem};
use crate::netlink::KernelView;
use crate::state::Persisted;

/// One change to the desired state, as the journal records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// `route add` (replaces the route for the same prefix).
    RouteAdd {
        /// The route.
        route: Route,
    },
    /// `route del`.
    RouteDel {
        /// Its prefix.
        prefix: String,
    },
    /// `customer add`.
    CustomerAdd {
        /// The customer.
        customer: Customer,
    },
    /// `customer del`.
    CustomerDel {
        /// Its name.
        name: String,
    },
    /// `acl add`.
    AclAdd {
        /// The rule.
        acl: Acl,
    },
    /// `acl del`.
    AclDel {
        /// Its priority.
        priority: u32,
    },
}

/// What a route change did to the desired state: enough to write it into
/// the maps and to undo it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteDone {
    /// The prefix (host bits clear).
    pub prefix: IpNet,
    /// Its route before.
    pub old: Option<Hops>,
    /// Its route after.
    pub new: Option<Hops>,
    /// Next-hop ids handed out for it: ("dev via", id).
    pub added_nexthops: Vec<(String, u32)>,
    /// Next-hop ids no route uses any more: ("dev via", id).
    pub freed_nexthops: Vec<(String, u32)>,
}

fn route_err(prefix: &str, problem: Problem) -> ControlError {
    ControlError::Config(ConfigError::Route {
        prefix: prefix.to_string(),
        problem,
    })
}

/// Adds or replaces a configured route. `kernel`: when given (a change
/// asked for now, not one replayed from the journal), `dev` must exist.
pub fn route_add(
    state: &mut Persisted,
    route: &Route,
    kernel: Option<&KernelView>,
) -> Result<RouteDone, ControlError> {
    let valid = validate::check_route(route)?;
    if !state.config.interfaces.iter().any(|i| i.name == valid.dev) {
        return Err(route_err(
            &route.prefix,
            Problem::UnknownInterface {
                field: "dev",
                value: valid.dev,
            },
        ));
    }
    if let Some(k) = kernel {
        if !k.links.contains_key(&valid.dev) {
            return Err(ControlError::NoSuchRouteDev {
                prefix: route.prefix.clone(),
                dev: valid.dev,
            });
        }
    }
    let prefix = valid.prefix;
    if state.routes.get(&prefix).is_none() {
        let (what, count, max) = match prefix {
            IpNet::V4(_) => (
                "IPv4 routes",
                state.routes.len_v4(),
                pop_common::MAX_ROUTES_V4,
            ),
            IpNet::V6(_) => (
                "IPv6 routes",
                state.routes.len_v6(),
                pop_common::MAX_ROUTES_V6,
            ),
        };
        if count + 1 > max as usize {
            return Err(ControlError::Config(ConfigError::Limit {
                what,
                count: count + 1,
                max: max as usize,
            }));
        }
    }
    let hops = Hops {
        dev: valid.dev,
        via: valid.via,
    };
    let added = add_nexthops(state, &route.prefix, &hops, &route.via)?;
    let old = state.routes.insert(prefix, hops.clone());
    let freed = old
        .as_ref()
        .map(|o| free_nexthops(state, o))
        .unwrap_or_default();
    Ok(RouteDone {
        prefix,
        old,
        new: Some(hops),
        added_nexthops: added,
        freed_nexthops: freed,
    })
}

/// Removes a configured route.
pub fn route_del(state: &mut Persisted, prefix: &str) -> Result<RouteDone, ControlError> {
    let p = validate::parse_prefix(prefix)
        .map_err(|e| route_err(prefix, Problem::Prefix(e)))?
        .trunc();
    let Some(old) = state.routes.remove(&p) else {
        return Err(ControlError::NoSuchRoute {
            prefix: prefix.to_string(),
        });
    };
    let freed = free_nexthops(state, &old);
    Ok(RouteDone {
        prefix: p,
        old: Some(old),
        new: None,
        added_nexthops: Vec::new(),
        freed_nexthops: freed,
    })
}

/// Puts the desired state back as it was before `done`.
pub fn undo_route(state: &mut Persisted, done: &RouteDone) {
    match &done.old {
        Some(h) => state.routes.insert(done.prefix, h.clone()),
        None => state.routes.remove(&done.prefix),
    };
    for (k, id) in &done.freed_nexthops {
        state.ids.nexthops.insert(k.clone(), *id);
    }
    for (k, _) in &done.added_nexthops {
        state.ids.nexthops.remove(k);
    }
}

/// Hands out an id to every gateway of `hops` that has none: the lowest
/// free one below the learned routes' half of the table.
fn add_nexthops(
    state: &mut Persisted,
    prefix: &str,
    hops: &Hops,
    texts: &[String],
) -> Result<Vec<(String, u32)>, ControlError> {
    let mut added: Vec<(String, u32)> = Vec::new();
    let mut used: Option<std::collections::BTreeSet<u32>> = None;
    let max = pop_common::MAX_CONFIGURED_NEXTHOPS as usize;
    for (i, via) in hops.via.iter().enumerate() {
        let key = nexthop_key(&hops.dev, via);
        if state.ids.nexthops.contains_key(&key) {
            continue;
        }
        let used = used.get_or_insert_with(|| state.ids.nexthops.values().copied().collect());
        let id = (1..super::learned::LEARNED_NH_FIRST).find(|id| !used.contains(id));
        let Some(id) = id.filter(|_| state.ids.nexthops.len() < max) else {
            for (k, _) in &added {
                state.ids.nexthops.remove(k);
            }
            return Err(route_err(
                prefix,
                Problem::NexthopsFull {
                    via: texts.get(i).cloned().unwrap_or_else(|| via.to_string()),
                    count: state.ids.nexthops.len() + 1,
                    max,
                },
            ));
        };
        used.insert(id);
        state.ids.nexthops.insert(key.clone(), id);
        added.push((key, id));
    }
    Ok(added)
}

/// Frees the ids of the gateways of `old` (a route's hops just replaced or
/// removed) that no configured route uses any more.
fn free_nexthops(state: &mut Persisted, old: &Hops) -> Vec<(String, u32)> {
    let mut freed = Vec::new();
    for via in &old.via {
        if in_use(state, &old.dev, via) {
            continue;
        }
        let key = nexthop_key(&old.dev, via);
        if let Some(id) = state.ids.nexthops.remove(&key) {
            freed.push((key, id));
        }
    }
    freed
}

fn in_use(state: &Persisted, dev: &str, via: &IpAddr) -> bool {
    state
        .routes
        .hop_sets()
        .any(|h| h.dev == dev && h.via.contains(via))
}

/// Applies a change that is not a route's to `cfg` (the closures of the API
/// requests).
pub fn edit_config(cfg: &mut Config, change: &Change) -> Result<(), ControlError> {
    match change {
        Change::CustomerAdd { customer } => {
            if cfg.customers.iter().any(|x| x.name == customer.name) {
                return Err(ControlError::CustomerExists {
                    name: customer.name.clone(),
                });
            }
            cfg.customers.push(customer.clone());
        }
        Change::CustomerDel { name } => {
            let n = cfg.customers.len();
            cfg.customers.retain(|x| &x.name != name);
            if cfg.customers.len() == n {
                return Err(ControlError::NoSuchCustomer { name: name.clone() });
            }
        }
        Change::AclAdd { acl } => {
            if cfg.acls.iter().any(|x| x.priority == acl.priority) {
                return Err(ControlError::AclPriorityTaken {
                    priority: acl.priority,
                });
            }
            cfg.acls.push(acl.clone());
            cfg.acls.sort_by_key(|a| a.priority);
        }
        Change::AclDel { priority } => {
            let n = cfg.acls.len();
            cfg.acls.retain(|x| x.priority != *priority);
            if cfg.acls.len() == n {
                return Err(ControlError::NoSuchAcl {
                    priority: *priority,
                });
            }
        }
        Change::RouteAdd { .. } | Change::RouteDel { .. } => {
            return Err(ControlError::WrongRequest(
                "a route change is not a config edit",
            ))
        }
    }
    Ok(())
}

/// Replays one journal record, the change that made `generation`, on the
/// state loaded from the snapshot.
pub fn replay(state: &mut Persisted, generation: u64, change: &Change) -> Result<(), ControlError> {
    match change {
        Change::RouteAdd { route } => {
            route_add(state, route, None)?;
        }
        Change::RouteDel { prefix } => {
            route_del(state, prefix)?;
        }
        other => {
            edit_config(&mut state.config, other)?;
            let (ids, _) = compile::assign_ids(&state.config, &state.routes, &state.ids)?;
            state.ids = ids;
        }
    }
    state.generation = generation;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{Interface, InterfaceRole};

    fn state() -> Persisted {
        let mut s = Persisted::default();
        for (name, role) in [
            ("eth0", InterfaceRole::Upstream),
            ("eth1", InterfaceRole::Customer),
        ] {
            s.config.interfaces.push(Interface {
                name: name.into(),
                role,
            });
        }
        s
    }

    fn route(prefix: &str, via: &[&str], dev: &str) -> Route {
        Route {
            prefix: prefix.into(),
            via: via.iter().map(|v| v.to_string()).collect(),
            dev: dev.into(),
        }
    }

    #[test]
    fn a_route_add_hands_out_next_hop_ids_and_its_undo_takes_them_back() {
        let mut s = state();
        let before = s.clone();
        let done = route_add(
            &mut s,
            &route("10.0.0.0/8", &["192.0.2.1", "192.0.2.2"], "eth0"),
            None,
        )
        .unwrap();
        assert_eq!(
            done.added_nexthops,
            [
                ("eth0 192.0.2.1".to_string(), 1),
                ("eth0 192.0.2.2".to_string(), 2)
            ]
        );
        // The same gateway again: no new id.
        let d2 = route_add(&mut s, &route("10.1.0.0/16", &["192.0.2.2"], "eth0"), None).unwrap();
        assert!(d2.added_nexthops.is_empty());
        undo_route(&mut s, &d2);
        undo_route(&mut s, &done);
        assert_eq!(s, before);
    }

    #[test]
    fn replacing_or_deleting_a_route_frees_only_unused_next_hops() {
        let mut s = state();
        route_add(
            &mut s,
            &route("10.0.0.0/8", &["192.0.2.1", "192.0.2.2"], "eth0"),
            None,
        )
        .unwrap();
        route_add(&mut s, &route("10.1.0.0/16", &["192.0.2.2"], "eth0"), None).unwrap();
        let done = route_add(&mut s, &route("10.0.0.0/8", &["192.0.2.3"], "eth0"), None).unwrap();
        assert_eq!(done.added_nexthops, [("eth0 192.0.2.3".to_string(), 1 + 2)]);
        assert_eq!(done.freed_nexthops, [("eth0 192.0.2.1".to_string(), 1)]);
        let done = route_del(&mut s, "10.1.0.0/16").unwrap();
        assert_eq!(done.freed_nexthops, [("eth0 192.0.2.2".to_string(), 2)]);
        // The lowest free id is handed out next.
        let done = route_add(&mut s, &route("10.2.0.0/16", &["192.0.2.9"], "eth0"), None).unwrap();
        assert_eq!(done.added_nexthops, [("eth0 192.0.2.9".to_string(), 1)]);
    }

    #[test]
    fn refused_route_changes_name_the_route_and_change_nothing() {
        let mut s = state();
        let before = s.clone();
        let e = route_add(&mut s, &route("10.0.0.0/8", &["192.0.2.1"], "eth9"), None).unwrap_err();
        assert!(e.to_string().starts_with("route 10.0.0.0/8: "), "{e}");
        assert!(e.to_string().contains("eth9"), "{e}");
        let e = route_add(&mut s, &route("10.0.0.0/33", &["192.0.2.1"], "eth0"), None).unwrap_err();
        assert!(e.to_string().starts_with("route 10.0.0.0/33: "), "{e}");
        let e = route_del(&mut s, "10.0.0.0/8").unwrap_err();
        assert_eq!(e.to_string(), "route 10.0.0.0/8: no such route");
        let k = KernelView::default();
        let e = route_add(
            &mut s,
            &route("10.0.0.0/8", &["192.0.2.1"], "eth0"),
            Some(&k),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "route 10.0.0.0/8: dev \"eth0\": no such device"
        );
        assert_eq!(s, before);
    }

    #[test]
    fn replaying_the_records_gives_the_same_state() {
        let mut live = state();
        let changes = [
            Change::RouteAdd {
                route: route("10.0.0.0/8", &["192.0.2.1"], "eth0"),
            },
            Change::CustomerAdd {
                customer: Customer {
                    name: "acme".into(),
                    prefixes: vec!["198.51.100.0/24".into()],
                    interfaces: vec!["eth1".into()],
                    vlan: None,
                    anti_spoofing: false,
                    rate_bps: None,
                    burst_bytes: None,
                },
            },
            Change::RouteAdd {
                route: route("2001:db8::/32", &["fe80::1"], "eth0"),
            },
            Change::RouteDel {
                prefix: "10.0.0.0/8".into(),
            },
        ];
        let start = live.clone();
        let mut records = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            replay(&mut live, i as u64 + 1, c).unwrap();
            let json = serde_json::to_string(c).unwrap();
            records.push(serde_json::from_str::<Change>(&json).unwrap());
        }
        let mut again = start;
        for (i, c) in records.iter().enumerate() {
            replay(&mut again, i as u64 + 1, c).unwrap();
        }
        assert_eq!(again, live);
        assert_eq!(again.generation, 4);
        assert_eq!(again.ids.customers.get("acme"), Some(&1));
        assert_eq!(again.routes.len(), 1);
    }
}
