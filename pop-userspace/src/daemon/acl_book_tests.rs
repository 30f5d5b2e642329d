//! The bookkeeping of single ACL changes, done one rule at a time as the
//! controller does it (`acl_change.rs`), must equal the whole rebuild a full
//! compile does (`Controller::names`, `check::acl_ifindexes`) after every
//! change of a random series of adds and deletes.
use std::collections::BTreeMap;

use super::*;
use crate::acl::hits::RulesByPriority;
use crate::acl::incremental::{Incremental, NotIncremental};
use crate::acl::CompiledAcl;
use crate::config::validate::check_acl;
use crate::dataplane::acl::stabilize;
use crate::netlink::Link;
use crate::test_rng::Lcg;

/// A rule over a small space, on one of two existing interfaces, one the
/// kernel does not have, or none.
fn random_acl(rng: &mut Lcg, priority: u32) -> Acl {
    let iface = ["eth1", "eth2", "gone0"];
    Acl {
        priority,
        action: if rng.next(2) == 0 {
            AclAction::Allow
        } else {
            AclAction::Drop
        },
        src: (rng.next(2) == 0).then(|| format!("10.{}.0.0/16", rng.next(8))),
        dst: (rng.next(3) == 0).then(|| format!("192.0.{}.0/24", rng.next(4))),
        proto: (rng.next(3) == 0).then(|| "tcp".to_string()),
        src_port: None,
        dst_port: None,
        in_iface: (rng.next(3) == 0).then(|| iface[rng.next(3) as usize].to_string()),
    }
}

fn kernel() -> KernelView {
    let mut k = KernelView::default();
    for (name, ifindex) in [("eth1", 5), ("eth2", 7)] {
        k.links.insert(
            name.to_string(),
            Link {
                ifindex,
                ..Default::default()
            },
        );
    }
    k
}

/// What the maps hold: priority → slot, as `AclMaps::rule_slots` reads it.
fn slots_of(image: &CompiledAcl) -> BTreeMap<u32, u32> {
    image
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.priority != pop_common::ACL_NO_RULE)
        .map(|(s, r)| (r.priority, s as u32))
        .collect()
}

/// A full compile of `cfg` with the slots of `live` kept, as popd does.
fn full(cfg: &Config, kernel: &KernelView, live: Option<&CompiledAcl>) -> Incremental {
    let valid: Vec<_> = cfg.acls.iter().map(|a| check_acl(a).unwrap()).collect();
    let compiled =
        crate::acl::compile(&valid, &|n| kernel.links.get(n).map(|l| l.ifindex)).unwrap();
    let mut rules = RulesByPriority::default();
    if let Some(live) = live {
        for (s, r) in live.rules.iter().enumerate() {
            if r.priority != pop_common::ACL_NO_RULE {
                rules.insert(r.priority, (s as u32, *r));
            }
        }
    }
    Incremental::new(stabilize(&compiled, &rules).0)
}

fn assert_like_a_rebuild(
    step: usize,
    cfg: &Config,
    kernel: &KernelView,
    inc: &Incremental,
    table: &AclRuleTable,
    ifaces: &AclIfindexes,
) {
    let whole = rule_table(&cfg.acls, &slots_of(inc.image()));
    assert_eq!(
        table.iter().copied().collect::<Vec<_>>(),
        whole.iter().copied().collect::<Vec<_>>(),
        "step {step}: the metrics' rules"
    );
    assert_eq!(table.len(), cfg.acls.len());
    let again = AclIfindexes::of(cfg, kernel);
    assert_eq!(
        ifaces.iter().collect::<Vec<_>>(),
        again.iter().collect::<Vec<_>>(),
        "step {step}: the rules' interfaces"
    );
    assert_eq!(
        ifaces.uses().collect::<Vec<_>>(),
        again.uses().collect::<Vec<_>>(),
        "step {step}: rules per interface"
    );
    assert!(ifaces == &again);
}

/// Random adds and deletes (rules on existing, missing and no interfaces,
/// allow and drop, rules that hide others), each booked one rule at a time
/// like `acl add` / `acl del` do; after each, the metrics' rule table (every
/// rule's priority, action and hit slot) and the rules' interfaces equal a
/// rebuild from the desired rules and the maps. A change the change trees
/// cannot take goes the full way and rebuilds both, as popd does.
/// (Booking a deleted rule's interface as still named, an added rule's slot
/// as another's, or forgetting an interface named twice fails it.)
#[test]
fn single_changes_book_like_a_full_rebuild() {
    let mut rng = Lcg(0x0ac1_b00c);
    let kernel = kernel();
    let mut cfg = Config {
        acls: (0..300).map(|i| random_acl(&mut rng, 10 * i)).collect(),
        ..Default::default()
    };
    let mut inc = full(&cfg, &kernel, None);
    let mut table = rule_table(&cfg.acls, &slots_of(inc.image()));
    let mut ifaces = AclIfindexes::of(&cfg, &kernel);
    let (mut adds, mut dels, mut fulls) = (0, 0, 0);
    for step in 0..700 {
        if rng.next(2) == 0 && !cfg.acls.is_empty() {
            // Delete, as acl_change does.
            let at = rng.next(cfg.acls.len() as u32) as usize;
            let priority = cfg.acls[at].priority;
            match inc.remove(priority) {
                Ok(_) => {
                    let gone = cfg.acls.remove(at);
                    if let Some(n) = &gone.in_iface {
                        ifaces.unnamed(n);
                    }
                    assert!(table.remove(priority).is_some());
                    dels += 1;
                }
                Err(NotIncremental::CompileInFull) => {
                    cfg.acls.remove(at);
                    inc = full(&cfg, &kernel, Some(inc.image()));
                    table = rule_table(&cfg.acls, &slots_of(inc.image()));
                    ifaces = AclIfindexes::of(&cfg, &kernel);
                    fulls += 1;
                }
                Err(e) => panic!("{e:?}"),
            }
        } else {
            let mut priority = rng.next(4000);
            while cfg.acls.iter().any(|a| a.priority == priority) {
                priority = rng.next(4000);
            }
            let acl = random_acl(&mut rng, priority);
            let ifindex = acl
                .in_iface
                .as_deref()
                .and_then(|n| kernel.links.get(n).map(|l| l.ifindex));
            let at = cfg.acls.partition_point(|a| a.priority < priority);
            match inc.add(&check_acl(&acl).unwrap(), ifindex) {
                Ok(_) => {
                    cfg.acls.insert(at, acl.clone());
                    if let Some(n) = &acl.in_iface {
                        ifaces.named(n, ifindex);
                    }
                    table.upsert(rule_slot(&acl, inc.slot(priority)));
                    adds += 1;
                }
                Err(NotIncremental::CompileInFull) => {
                    cfg.acls.insert(at, acl);
                    inc = full(&cfg, &kernel, Some(inc.image()));
                    table = rule_table(&cfg.acls, &slots_of(inc.image()));
                    ifaces = AclIfindexes::of(&cfg, &kernel);
                    fulls += 1;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_like_a_rebuild(step, &cfg, &kernel, &inc, &table, &ifaces);
    }
    // Both kinds, many of each (a full compile in between only past
    // CHANGE_LIMIT rules in the change trees: the test's rebuild then).
    assert!(adds > 250 && dels > 250, "{adds} {dels} {fulls}");
}

/// Two tables of interfaces are equal when their ifindexes are, whatever the
/// counts (a sync compares what it computes with what was compiled).
#[test]
fn interfaces_compare_by_ifindex() {
    let mut a = AclIfindexes::default();
    let mut b = AclIfindexes::default();
    a.named("eth1", Some(5));
    b.named("eth1", Some(5));
    b.named("eth1", Some(5));
    assert!(a == b);
    b.unnamed("eth1");
    b.unnamed("eth1");
    assert!(a != b);
    b.named("eth1", Some(6));
    assert!(a != b);
    assert!(AclIfindexes::default() == AclIfindexes::default());
}
