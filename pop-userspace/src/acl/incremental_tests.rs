//! Unit tests of single ACL changes (`incremental.rs`): random sequences of
//! adds and deletes, applied one at a time, must classify every packet like
//! a linear first-match scan and like a compile from scratch, and the element
//! writes they return must turn the old maps into the new ones exactly.
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use pop_common::{AclField, AclVerdict, PopAclLeafBlock, PopAclNode};

use super::*;
use crate::acl::tree::{compile, key_v4, key_v6, AclKey};
use crate::config::model::AclAction;
use crate::dataplane::acl::{stabilize, AclDelta};
use crate::test_rng::Lcg;

fn rule(priority: u32) -> ValidAcl {
    ValidAcl::match_all(priority, AclAction::Drop)
}

/// A random rule over a small address space (so rules overlap and cover
/// each other): IPv4 or IPv6 or neither, wide prefixes now and then.
fn random_rule(rng: &mut Lcg, priority: u32) -> ValidAcl {
    let mut r = rule(priority);
    if rng.next(2) == 0 {
        r.action = AclAction::Allow;
    }
    let v4 = |rng: &mut Lcg| {
        let len = [4, 8, 16, 20, 24, 28, 32][rng.next(7) as usize];
        let addr = 0x0a00_0000 | rng.next(1 << 12) << 8;
        IpNet::V4(
            ipnet::Ipv4Net::new(Ipv4Addr::from(addr), len)
                .unwrap()
                .trunc(),
        )
    };
    let v6 = |rng: &mut Lcg| {
        let len = [16, 32, 40, 48, 64][rng.next(5) as usize];
        let addr = 0x2001_0db8u128 << 96 | u128::from(rng.next(1 << 8)) << 80;
        IpNet::V6(
            ipnet::Ipv6Net::new(Ipv6Addr::from(addr), len)
                .unwrap()
                .trunc(),
        )
    };
    match rng.next(10) {
        0..=5 => {
            if rng.next(3) > 0 {
                r.src = Some(v4(rng));
            }
            if rng.next(2) > 0 {
                r.dst = Some(v4(rng));
            }
        }
        6..=8 => {
            if rng.next(3) > 0 {
                r.src = Some(v6(rng));
            }
            if rng.next(2) > 0 {
                r.dst = Some(v6(rng));
            }
        }
        _ => {}
    }
    if rng.next(2) == 0 {
        r.proto = Some([6, 17][rng.next(2) as usize]);
        if rng.next(2) == 0 {
            let lo = rng.next(100) as u16;
            r.dst_port = Some((lo, lo + rng.next(20) as u16));
        }
    }
    r
}

/// A random packet near the rules' space, and whether it is IPv6.
fn random_key(rng: &mut Lcg) -> (AclKey, bool) {
    let ports = (rng.next(4) > 0).then(|| (rng.next(200) as u16, rng.next(130) as u16));
    let proto = [6, 17, 1][rng.next(3) as usize];
    let ports = ports.filter(|_| proto != 1);
    if rng.next(3) == 0 {
        let a = |rng: &mut Lcg| {
            Ipv6Addr::from(
                0x2001_0db8u128 << 96
                    | u128::from(rng.next(1 << 8)) << 80
                    | u128::from(rng.next(u32::MAX)),
            )
        };
        (key_v6(a(rng), a(rng), proto, ports, 1), true)
    } else {
        let a = |rng: &mut Lcg| Ipv4Addr::from(0x0a00_0000 | rng.next(1 << 20));
        (key_v4(a(rng), a(rng), proto, ports, 1), false)
    }
}

/// The priority of the first rule (by priority) of `rules` that matches.
fn linear(rules: &[ValidAcl], key: &AclKey, is_v6: bool) -> Option<u32> {
    rules
        .iter()
        .filter(|r| {
            let (v4, v6) = families(r);
            if is_v6 {
                v6
            } else {
                v4
            }
        })
        .map(|r| (r.priority, to_rectangle(r, None)))
        .filter(|(_, rect)| (0..ACL_FIELDS).all(|f| rect.lo[f] <= key[f] && key[f] <= rect.hi[f]))
        .map(|(p, _)| p)
        .min()
}

fn priority_of(c: &CompiledAcl, key: &AclKey, is_v6: bool) -> Option<u32> {
    c.classify(key, is_v6).map(|slot| c.rules[slot].priority)
}

/// What one copy of the maps holds, written only through deltas.
#[derive(Default)]
struct Copy {
    rules: Vec<PopAclRule>,
    nodes: Vec<PopAclNode>,
    blocks: Vec<PopAclLeafBlock>,
    meta: PopAclMeta,
    filter: Vec<u8>,
}

impl Copy {
    fn of(c: &CompiledAcl) -> Self {
        Copy {
            rules: c.rules.clone(),
            nodes: c.nodes.clone(),
            blocks: c.leaf_rules.clone(),
            meta: c.meta,
            filter: c.filter.clone(),
        }
    }

    fn apply(&mut self, d: &AclDelta) {
        fn put<T: Default + Clone>(v: &mut Vec<T>, i: u32, x: T) {
            if v.len() <= i as usize {
                v.resize(i as usize + 1, T::default());
            }
            v[i as usize] = x;
        }
        for &(i, r) in &d.rules {
            put(&mut self.rules, i, r);
        }
        for &(i, n) in &d.nodes {
            put(&mut self.nodes, i, n);
        }
        for &(i, b) in &d.leaf_rules {
            put(&mut self.blocks, i, b);
        }
        if let Some(m) = d.meta {
            self.meta = m;
        }
        if let Some(f) = &d.filter {
            self.filter = f.clone();
        }
    }

    /// Holds what `c` says, in every element `c` uses.
    fn assert_holds(&self, c: &CompiledAcl) {
        assert_eq!(self.meta, c.meta);
        assert!(self.filter == c.filter, "first stages differ");
        assert_eq!(&self.rules[..c.rules.len()], &c.rules[..]);
        assert_eq!(&self.nodes[..c.nodes.len()], &c.nodes[..]);
        assert_eq!(&self.blocks[..c.leaf_rules.len()], &c.leaf_rules[..]);
    }
}

fn full(rules: &[ValidAcl]) -> CompiledAcl {
    let c = compile(rules, &|_| None).unwrap();
    stabilize(&c, &Default::default()).0
}

/// Random adds and deletes, one at a time, starting from a full compile of
/// 400 rules: after each, every packet of a random sample is classified
/// like a linear scan and like a compile from scratch; the writes each
/// change returns turn a copy of the maps into exactly the new rule set;
/// unchanged rules never change slot; and the change trees stay small.
#[test]
fn random_single_changes_classify_like_a_full_compile() {
    let mut rng = Lcg(0x5eed_0ac1);
    let mut live: Vec<ValidAcl> = (0..400).map(|i| random_rule(&mut rng, 10 * i)).collect();
    let image = full(&live);
    let mut copy = Copy::of(&image);
    let mut inc = Incremental::new(image);
    let mut slots: HashMap<u32, u32> = live
        .iter()
        .map(|r| (r.priority, inc.slot_of[&r.priority]))
        .collect();
    let mut revived = 0;
    for step in 0..400 {
        let before = inc.changed_rules();
        if rng.next(2) == 0 && !live.is_empty() {
            let mut i = rng.next(live.len() as u32) as usize;
            // Often a rule that hides others, the hard case.
            let hiding: Vec<usize> = (0..live.len())
                .filter(|&k| inc.truncators.contains(&slots[&live[k].priority]))
                .collect();
            if !hiding.is_empty() && rng.next(3) == 0 {
                i = hiding[rng.next(hiding.len() as u32) as usize];
            }
            let gone = live.remove(i);
            let slot = slots[&gone.priority];
            let was_truncator = inc.truncators.contains(&slot);
            let in_changes = inc.image().layout.delta_v4.contains(&slot)
                || inc.image().layout.delta_v6.contains(&slot);
            let d = inc.remove(gone.priority).unwrap();
            copy.apply(&d);
            slots.remove(&gone.priority);
            if was_truncator && !in_changes && inc.changed_rules() > before {
                revived += 1;
            }
        } else {
            let mut p = rng.next(5000);
            while live.iter().any(|r| r.priority == p) {
                p = rng.next(5000);
            }
            let r = random_rule(&mut rng, p);
            let d = inc.add(&r, None).unwrap();
            copy.apply(&d);
            slots.insert(p, inc.slot_of[&p]);
            live.push(r);
        }
        copy.assert_holds(inc.image());
        for (p, s) in &slots {
            assert_eq!(inc.slot_of[p], *s, "rule {p} moved");
            assert_eq!(inc.image().rules[*s as usize].priority, *p);
        }
        if step % 20 == 0 || step == 399 {
            let scratch = compile(&live, &|_| None).unwrap();
            for _ in 0..2000 {
                let (key, is_v6) = random_key(&mut rng);
                let want = linear(&live, &key, is_v6);
                assert_eq!(
                    priority_of(inc.image(), &key, is_v6),
                    want,
                    "step {step}: {key:?}"
                );
                assert_eq!(priority_of(&scratch, &key, is_v6), want, "scratch: {key:?}");
            }
        }
    }
    assert!(
        revived > 0,
        "no deletion brought hidden rules back ({} rules hid others): the test is too weak",
        inc.truncators.len()
    );
    assert!(inc.changed_rules() < CHANGE_LIMIT);
}

/// A rule that covers a region hides the later rules there from the tree;
/// deleting it must bring them back.
#[test]
fn deleting_a_covering_rule_brings_the_hidden_rules_back() {
    let mut rules = Vec::new();
    let mut cover = rule(1);
    cover.action = AclAction::Allow;
    cover.src = Some("10.0.0.0/8".parse().unwrap());
    rules.push(cover);
    for i in 0..100u32 {
        let mut r = rule(10 + i);
        r.src = Some(IpNet::V4(
            ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | i << 8), 24).unwrap(),
        ));
        rules.push(r);
    }
    let mut inc = Incremental::new(full(&rules));
    let key = key_v4(
        Ipv4Addr::new(10, 0, 7, 1),
        Ipv4Addr::new(192, 0, 2, 1),
        6,
        Some((1, 2)),
        1,
    );
    assert_eq!(priority_of(inc.image(), &key, false), Some(1));
    assert!(
        inc.truncators.contains(&inc.slot_of[&1]),
        "rule 1 hid nothing"
    );
    inc.remove(1).unwrap();
    assert!(inc.changed_rules() > 0);
    assert_eq!(priority_of(inc.image(), &key, false), Some(17));
    assert_eq!(inc.image().verdict(&key, false), AclVerdict::Drop);
}

/// Past the bound on the change trees the caller is told to compile in
/// full, and nothing changed; a change that cannot be compiled is refused
/// with its reason, and nothing changed either.
#[test]
fn full_change_trees_and_bad_rules_change_nothing() {
    let mut inc = Incremental::new(full(&[]));
    for p in 0..CHANGE_LIMIT as u32 {
        let mut r = rule(p);
        r.src = Some("10.0.0.0/8".parse().unwrap());
        r.proto = Some(6);
        r.dst_port = Some((p as u16, p as u16));
        inc.add(&r, None).unwrap();
    }
    let before = inc.image().clone();
    let mut r = rule(5000);
    r.src = Some("10.0.0.0/8".parse().unwrap());
    r.proto = Some(17);
    assert_eq!(inc.add(&r, None), Err(NotIncremental::CompileInFull));
    assert_eq!(inc.image(), &before);
    let bad = rule(u32::MAX);
    assert!(
        matches!(inc.add(&bad, None), Err(NotIncremental::Refused(e)) if e.contains("exceeds the maximum"))
    );
    assert_eq!(inc.image(), &before);
    // A rule on an interface that does not exist is left out: no writes.
    let mut absent = rule(6000);
    absent.in_iface = Some("nosuchif".into());
    assert!(inc.add(&absent, None).unwrap().is_empty());
    assert!(inc.remove(6000).unwrap().is_empty());
    // Ports a deleted rule matched: no longer.
    let key = key_v4(
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        6,
        Some((1, 7)),
        1,
    );
    assert_eq!(priority_of(inc.image(), &key, false), Some(7));
    inc.remove(7).unwrap();
    assert_eq!(priority_of(inc.image(), &key, false), None);
    assert_eq!(inc.image().rules[inc.slot_of[&8] as usize].priority, 8);
    let _ = AclField::Src0;
}
