//! The one validator every change goes through: the config at start, SIGHUP,
//! `popctl apply` (also when nothing would change), single changes (`route
//! add`, `customer add`, `acl add`, ...) and `--dry-run`, which runs exactly
//! this and writes nothing.
//!
//! [`plan`] checks a candidate desired state against everything the maps and
//! the kernel impose, and computes all that a commit writes:
//! 1. the config's own rules and limits ([`validate::validate`]: syntax,
//!    references, policer ranges, route, next-hop, customer-prefix and
//!    anti-spoofing capacities);
//! 2. every interface and route `dev` exists in the kernel;
//! 3. ids (customers, interface slots, next hops) fit their tables;
//! 4. the ACL rules compile into a tree that fits its maps;
//! 5. the map contents ([`compile::compile`]) fit every map, VLAN devices and
//!    anti-spoofing ports included.
//!
//! Validation yields typed values that the rest of the path uses: the routes
//! become the controller's [`ConfiguredRoutes`] table here, once. A single
//! route change is checked on its own ([`super::desired::route_add`]).
//!
//! Host addresses are not part of the desired state: whatever their number,
//! they never refuse a change (see [`compile::local_addresses`]).
use std::collections::BTreeMap;

use pop_common::maps as names;

use super::acl_book::AclIfindexes;
use super::compile::{self, Tables};
use super::error::ControlError;
use crate::acl::CompiledAcl;
use crate::config::model::Config;
use crate::config::routes::ConfiguredRoutes;
use crate::config::validate;
use crate::dataplane::AttachMode;
use crate::netlink::KernelView;
use crate::state::Ids;

/// Whether interfaces missing from the kernel refuse the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Devices {
    /// A new desired state (first config, SIGHUP, popctl): every interface
    /// and route `dev` must exist now.
    Required,
    /// The persisted state at restart: it was accepted before, and an
    /// interface that disappeared meanwhile is attached when it comes back.
    Tolerated,
}

/// What the data plane holds now, as far as a change needs to know.
pub struct Current<'a> {
    /// The desired state in effect.
    pub config: &'a Config,
    /// Its ids.
    pub ids: &'a Ids,
    /// Its generation.
    pub generation: u64,
    /// The ACL copy packets use.
    pub acl_copy: u32,
    /// The ifindexes the live ACL copy was compiled with; `None` forces a
    /// compile (first start).
    pub acl_ifindexes: Option<&'a AclIfindexes>,
}

/// ACL rules compiled for the copy packets do not use.
pub struct StagedAcl {
    /// The tree and rules to write.
    pub compiled: CompiledAcl,
    /// The ifindex of every `in_iface` it was compiled with.
    pub ifindexes: AclIfindexes,
}

/// A candidate that passed every check, with everything a commit writes.
pub struct Plan {
    /// Ids for the candidate.
    pub ids: Ids,
    /// Customer ids that are new (their counters are zeroed before use).
    pub fresh: Vec<u32>,
    /// The generation the change gets.
    pub generation: u64,
    /// The ACL copy packets use once the change is live.
    pub acl_copy: u32,
    /// The ACL rules to write into `acl_copy`, when they change.
    pub acl: Option<StagedAcl>,
    /// The map contents once every candidate interface is attached
    /// (configured routes apart).
    pub tables: Tables,
    /// The candidate's routes when they are new ([`Routes::InConfig`],
    /// [`Routes::Parsed`]).
    pub routes: Option<ConfiguredRoutes>,
}

/// Where a candidate's routes are.
pub enum Routes<'a> {
    /// In the candidate's `routes` (a whole config: start, SIGHUP, apply):
    /// validated with it, they become the new table.
    InConfig,
    /// Read apart from the candidate ([`validate::parse_config_routes`]; its
    /// `routes` are empty): validated with it, they become the new table.
    Parsed(Box<validate::RouteList>),
    /// Unchanged: this table (a change to customers or ACL rules).
    Current(&'a ConfiguredRoutes),
}

/// The ifindex of every interface the ACL rules of `cfg` name.
pub fn acl_ifindexes(cfg: &Config, kernel: &KernelView) -> AclIfindexes {
    AclIfindexes::of(cfg, kernel)
}

/// Compiles the ACL rules of `cfg` and checks that the result fits the maps.
pub fn compile_acls(cfg: &Config, kernel: &KernelView) -> Result<StagedAcl, ControlError> {
    let rules = cfg
        .acls
        .iter()
        .map(validate::check_acl)
        .collect::<Result<Vec<_>, _>>()?;
    let compiled = crate::acl::compile(&rules, &|n| kernel.links.get(n).map(|l| l.ifindex))
        .map_err(ControlError::Acl)?;
    fits(
        "ACL rules",
        names::ACL_RULES,
        compiled.rules.len(),
        pop_common::MAX_ACL_RULES,
    )?;
    fits(
        "ACL tree nodes",
        names::ACL_NODES,
        compiled.nodes.len(),
        pop_common::MAX_ACL_NODES,
    )?;
    fits(
        "ACL leaf blocks",
        names::ACL_LEAF_RULES,
        compiled.leaf_rules.len(),
        pop_common::MAX_ACL_LEAF_BLOCKS,
    )?;
    Ok(StagedAcl {
        compiled,
        ifindexes: acl_ifindexes(cfg, kernel),
    })
}

fn fits(what: &'static str, map: &'static str, count: usize, max: u32) -> Result<(), ControlError> {
    if count > max as usize {
        return Err(ControlError::Capacity {
            what,
            map,
            count,
            max: max as usize,
        });
    }
    Ok(())
}

/// Checks that every interface and route `dev` (`route_devs`: each with its
/// first route, in config order) exists in the kernel.
pub fn check_devices(
    cfg: &Config,
    route_devs: &[validate::RouteDev],
    kernel: &KernelView,
) -> Result<(), ControlError> {
    for i in &cfg.interfaces {
        if !kernel.links.contains_key(&i.name) {
            return Err(ControlError::NoSuchInterface {
                name: i.name.clone(),
            });
        }
    }
    for r in route_devs {
        if !kernel.links.contains_key(&r.dev) {
            return Err(ControlError::NoSuchRouteDev {
                prefix: r.prefix.clone(),
                dev: r.dev.clone(),
            });
        }
    }
    Ok(())
}

/// Checks `candidate` as the next desired state after `current` and computes
/// what a commit writes. Writes nothing.
pub fn plan(
    candidate: &Config,
    routes: Routes,
    kernel: &KernelView,
    current: &Current,
    devices: Devices,
) -> Result<Plan, ControlError> {
    let (valid, current_routes) = match routes {
        Routes::InConfig => (validate::validate(candidate)?, None),
        Routes::Parsed(list) => (validate::validate_with(candidate, *list)?, None),
        Routes::Current(t) => (validate::validate(candidate)?, Some(t)),
    };
    if devices == Devices::Required {
        check_devices(candidate, &valid.route_devs, kernel)?;
    }
    let new_routes = match current_routes {
        None => Some(valid.routes),
        Some(_) => None,
    };
    let table = match (current_routes, &new_routes) {
        (Some(t), _) => t,
        (None, Some(t)) => t,
        (None, None) => unreachable!("set above"),
    };
    let (ids, fresh) = compile::assign_ids(candidate, table, current.ids)?;
    let ifindexes = acl_ifindexes(candidate, kernel);
    let acls_change = match current.acl_ifindexes {
        None => true,
        Some(live) => candidate.acls != current.config.acls || &ifindexes != live,
    };
    let (acl, acl_copy) = if acls_change {
        (Some(compile_acls(candidate, kernel)?), 1 - current.acl_copy)
    } else {
        (None, current.acl_copy)
    };
    // The commit attaches every candidate interface the kernel has before it
    // writes: compile for that.
    let attached: BTreeMap<String, AttachMode> = candidate
        .interfaces
        .iter()
        .filter(|i| kernel.links.contains_key(&i.name))
        .map(|i| (i.name.clone(), AttachMode::Native))
        .collect();
    let generation = current.generation + 1;
    let tables = compile::compile(candidate, &ids, generation, kernel, &attached, acl_copy);
    check_tables(&tables)?;
    Ok(Plan {
        ids,
        fresh,
        generation,
        acl_copy,
        acl,
        tables,
        routes: new_routes,
    })
}

/// Checks that compiled map contents fit every map popd writes.
pub fn check_tables(t: &Tables) -> Result<(), ControlError> {
    use pop_common::{
        MAX_CONFIGURED_NEXTHOPS, MAX_CUSTOMER_PREFIXES, MAX_IFACES, MAX_SPOOF_PREFIXES,
    };
    fits(
        "interfaces and VLAN devices",
        names::IFACES,
        t.ifaces.len(),
        MAX_IFACES,
    )?;
    fits(
        "VLAN devices",
        names::VLAN_IFACES,
        t.vlans.len(),
        MAX_IFACES,
    )?;
    fits(
        "egress ports",
        names::TX_PORTS,
        t.tx_ports.len(),
        MAX_IFACES,
    )?;
    fits(
        "next hops",
        names::NEXTHOPS,
        t.nexthops.len(),
        MAX_CONFIGURED_NEXTHOPS,
    )?;
    fits(
        "IPv4 customer prefixes",
        names::CUST_V4,
        t.cust_v4.len(),
        MAX_CUSTOMER_PREFIXES,
    )?;
    fits(
        "IPv6 customer prefixes",
        names::CUST_V6,
        t.cust_v6.len(),
        MAX_CUSTOMER_PREFIXES,
    )?;
    fits(
        "anti-spoofing ports",
        names::SPOOF_PORTS,
        t.spoof.ports.len(),
        MAX_IFACES,
    )?;
    fits(
        "IPv4 anti-spoofing (interface, prefix) entries",
        names::SPOOF_SRC_V4,
        t.spoof.count_v4(),
        MAX_SPOOF_PREFIXES,
    )?;
    fits(
        "IPv6 anti-spoofing (interface, prefix) entries",
        names::SPOOF_SRC_V6,
        t.spoof.count_v6(),
        MAX_SPOOF_PREFIXES,
    )?;
    fits(
        "policers",
        names::POLICERS,
        t.policers.len(),
        pop_common::MAX_CUSTOMERS - 1,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_map_is_named_with_its_limit() {
        let mut t = Tables::default();
        assert!(check_tables(&t).is_ok());
        let max = pop_common::MAX_SPOOF_PREFIXES;
        t.spoof.prefixes = (0..=max)
            .map(|i| {
                (
                    1 + i % 7,
                    ipnet::IpNet::V4(std::net::Ipv4Addr::from(i).into()),
                )
            })
            .collect();
        assert_eq!(
            check_tables(&t).unwrap_err().to_string(),
            format!(
                "too many IPv4 anti-spoofing (interface, prefix) entries: {} exceeds the maximum of {max} (map spoof_src_v4)",
                max + 1
            )
        );
        t.spoof.prefixes.clear();
        t.ifaces = (0..=pop_common::MAX_IFACES)
            .map(|i| (i, Default::default()))
            .collect();
        assert_eq!(
            check_tables(&t).unwrap_err().to_string(),
            "too many interfaces and VLAN devices: 1025 exceeds the maximum of 1024 (map ifaces)"
        );
    }
}
