//! Single customer changes against whole compiles: a random sequence of
//! adds and dels, each made incrementally where the fast path takes it and
//! by the whole path (validate, assign ids, compile) where it does not,
//! leaves after every step exactly the tables a from-scratch compile of the
//! same desired state gives.
use std::collections::BTreeMap;

use super::*;
use crate::config::model::{Customer, Interface};
use crate::config::routes::ConfiguredRoutes;
use crate::daemon::compile::{assign_ids, compile};
use crate::daemon::desired::{edit_config, Change};
use crate::dataplane::AttachMode;
use crate::netlink::Link;
use crate::test_rng::Rng;

/// xorshift64*: reproducible without a crate.
/// Ports eth0 (upstream), eth1..eth3, and eth1.100, a VLAN device on eth1
/// that is also configured as a customer interface of its own.
fn setup() -> (Config, KernelView, BTreeMap<String, AttachMode>) {
    let mut cfg = Config::default();
    let mut k = KernelView::default();
    let mut attached = BTreeMap::new();
    for (i, (name, role)) in [
        ("eth0", InterfaceRole::Upstream),
        ("eth1", InterfaceRole::Customer),
        ("eth2", InterfaceRole::Customer),
        ("eth3", InterfaceRole::Customer),
        ("eth1.100", InterfaceRole::Customer),
    ]
    .into_iter()
    .enumerate()
    {
        cfg.interfaces.push(Interface {
            name: name.into(),
            role,
        });
        let vlan = (name == "eth1.100").then_some((3, 100));
        k.links.insert(
            name.into(),
            Link {
                ifindex: 2 + i as u32,
                mac: [2, 0, 0, 0, 0, i as u8],
                mtu: 1500,
                vlan,
                ..Link::default()
            },
        );
        attached.insert(name.to_string(), AttachMode::Native);
    }
    (cfg, k, attached)
}

fn random_customer(rng: &mut Rng) -> Customer {
    let mut prefixes = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let (a, b) = (rng.below(3), rng.below(6));
        let p = match rng.below(6) {
            0 => format!("10.{a}.0.0/16"),
            1 => format!("2001:db8:{a}::/48"),
            2 | 3 => format!("2001:db8:{a}:{b}::/64"),
            _ => format!("10.{a}.{b}.0/24"),
        };
        prefixes.push(p);
    }
    let ports = ["eth1", "eth2", "eth3", "eth1.100", "eth0"];
    let mut interfaces: Vec<String> = Vec::new();
    for _ in 0..rng.below(3) {
        // eth0 (upstream) now and then: refused.
        let n = if rng.chance(3) { 5 } else { 4 };
        let p = ports[rng.below(n) as usize];
        if rng.chance(95) && interfaces.iter().any(|i| i == p) {
            continue;
        }
        interfaces.push(p.to_string());
    }
    let rate_bps = rng.chance(30).then(|| 1_000_000 * (1 + rng.below(4)));
    Customer {
        name: format!("c{}", rng.below(12)),
        prefixes,
        interfaces,
        vlan: rng.chance(10).then_some(100),
        anti_spoofing: rng.chance(50),
        rate_bps,
        burst_bytes: rate_bps.filter(|_| rng.chance(50)).map(|_| 100_000),
    }
}

fn tables(
    cfg: &Config,
    ids: &Ids,
    generation: u64,
    k: &KernelView,
    attached: &BTreeMap<String, AttachMode>,
) -> Tables {
    compile(cfg, ids, generation, k, attached, 0)
}

fn run(seed: u64, steps: usize) -> (usize, usize) {
    let mut rng = Rng(seed);
    let (mut cfg, k, attached) = setup();
    let routes = ConfiguredRoutes::default();
    let (mut ids, _) = assign_ids(&cfg, &routes, &Ids::default()).unwrap();
    let mut generation = 1;
    let mut applied = tables(&cfg, &ids, generation, &k, &attached);
    let mut index = CustomerIndex::build(&cfg, &ids);
    let (mut fast, mut whole) = (0, 0);
    for step in 0..steps {
        let change = if rng.chance(55) || cfg.customers.is_empty() {
            Change::CustomerAdd {
                customer: random_customer(&mut rng),
            }
        } else {
            let name = match rng.chance(90) {
                true => cfg.customers[rng.below(cfg.customers.len() as u64) as usize]
                    .name
                    .clone(),
                false => "nobody".into(),
            };
            Change::CustomerDel { name }
        };
        let before = (cfg.clone(), ids.clone());
        // What the whole path decides.
        let mut candidate = cfg.clone();
        let whole_ok =
            edit_config(&mut candidate, &change).is_ok() && validate::validate(&candidate).is_ok();
        if rng.chance(20) {
            // Taken back at once: nothing is left of it.
            if let Some(done) = try_change(&mut index, &mut cfg, &mut ids, &k, &change) {
                undo(&mut index, &mut cfg, &mut ids, done);
            }
            assert_eq!((&cfg, &ids), (&before.0, &before.1), "step {step}: undo");
        }
        match try_change(&mut index, &mut cfg, &mut ids, &k, &change) {
            Some(done) => {
                fast += 1;
                assert!(
                    whole_ok,
                    "step {step}: {change:?} taken, the whole path refuses it"
                );
                // The whole path would give the same ids.
                let (want_ids, _) = assign_ids(&cfg, &routes, &before.1).unwrap();
                assert_eq!(ids, want_ids, "step {step}: ids");
                generation += 1;
                let p = patch(&index, &ids, &applied, &k, generation, done.changed());
                let old = applied.clone();
                apply_to(&mut applied, &p);
                // Its inverse puts back every entry it wrote.
                let mut back = applied.clone();
                apply_to(&mut back, &inverse(&old, &p));
                assert_eq!(back, old, "step {step}: inverse of {change:?}");
            }
            None => {
                assert_eq!((&cfg, &ids), (&before.0, &before.1), "step {step}: refused");
                let plain_add = matches!(&change, Change::CustomerAdd { customer }
                    if customer.vlan.is_none()
                        && !customer.interfaces.iter().any(|i| i == "eth1.100"));
                let plain_del = matches!(&change, Change::CustomerDel { name }
                    if index.get(name).is_some_and(|v| v.vlan.is_none()
                        && !v.interfaces.iter().any(|i| i == "eth1.100")));
                assert!(
                    !(whole_ok && (plain_add || plain_del)),
                    "step {step}: {change:?} left to the whole path, which takes it"
                );
                if !whole_ok {
                    continue;
                }
                whole += 1;
                cfg = candidate;
                ids = assign_ids(&cfg, &routes, &ids).unwrap().0;
                generation += 1;
                applied = tables(&cfg, &ids, generation, &k, &attached);
                index = CustomerIndex::build(&cfg, &ids);
            }
        }
        let want = tables(&cfg, &ids, generation, &k, &attached);
        assert_eq!(applied, want, "step {step}: after {change:?}");
    }
    (fast, whole)
}

#[test]
fn single_changes_leave_the_tables_of_a_whole_compile() {
    let mut totals = (0, 0);
    for seed in 1..=4 {
        let (fast, whole) = run(0x9e37_79b9_7f4a_7c15 ^ seed, 800);
        totals.0 += fast;
        totals.1 += whole;
    }
    // Both paths were exercised, the fast one most.
    eprintln!("{totals:?}");
    assert!(totals.0 > 600 && totals.1 > 40, "{totals:?}");
}

#[test]
fn the_net_catches_a_wrong_patch() {
    // A patch that forgets the anti-spoofing entries of a newly protected
    // port must not pass for a whole compile.
    let (mut cfg, k, attached) = setup();
    let routes = ConfiguredRoutes::default();
    let (mut ids, _) = assign_ids(&cfg, &routes, &Ids::default()).unwrap();
    let mut applied = tables(&cfg, &ids, 1, &k, &attached);
    let mut index = CustomerIndex::build(&cfg, &ids);
    let customer = |name: &str, prefix: &str, anti_spoofing| Customer {
        name: name.into(),
        prefixes: vec![prefix.into()],
        interfaces: vec!["eth2".into()],
        vlan: None,
        anti_spoofing,
        rate_bps: None,
        burst_bytes: None,
    };
    for (generation, c) in [
        (2, customer("a", "192.0.2.0/24", false)),
        (3, customer("b", "198.51.100.0/24", true)),
    ] {
        let change = Change::CustomerAdd { customer: c };
        let done = try_change(&mut index, &mut cfg, &mut ids, &k, &change).unwrap();
        let mut p = patch(&index, &ids, &applied, &k, generation, done.changed());
        if generation == 3 {
            // b protects eth2: a's prefix there too, and the port's flag.
            assert_eq!(p.spoof_add.prefixes.len(), 2, "{p:?}");
            assert_eq!(p.ifaces.len(), 1);
            p.spoof_add.prefixes.pop_first();
        }
        apply_to(&mut applied, &p);
    }
    assert_ne!(applied, tables(&cfg, &ids, 3, &k, &attached));
}

#[test]
fn overlaps_are_found_inside_and_around() {
    let (mut cfg, _, _) = setup();
    let ids = Ids::default();
    let c = |name: &str, prefixes: &[&str]| Customer {
        name: name.into(),
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        interfaces: vec![],
        vlan: None,
        anti_spoofing: false,
        rate_bps: None,
        burst_bytes: None,
    };
    cfg.customers
        .push(c("a", &["10.1.0.0/16", "2001:db8:1::/48"]));
    let index = CustomerIndex::build(&cfg, &ids);
    for (prefixes, ok) in [
        (&["10.1.2.0/24"][..], false),
        (&["10.0.0.0/8"], false),
        (&["10.1.0.0/16"], false),
        (&["0.0.0.0/0"], false),
        (&["10.2.0.0/16"], true),
        (&["2001:db8:1:5::/64"], false),
        (&["2001:db8::/32"], false),
        (&["2001:db8:2::/48", "10.3.0.0/16"], true),
    ] {
        let got = index.check_add(&cfg, &c("b", prefixes)).is_some();
        assert_eq!(got, ok, "{prefixes:?}");
    }
}
