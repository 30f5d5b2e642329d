//! The ACL, anti-spoofing and policer maps, and the plain values written
//! into them ([`CompiledAcl`], [`SpoofTables`]; `crate::acl` computes them
//! from the config).
//!
//! ACL changes are atomic: every ACL map holds two copies, and
//! `PopConfig::acl_copy` says which one packets use. A change is
//! [`AclMaps::write_copy`] of the inactive copy, then [`AclMaps::activate`]
//! (or the controller writing `acl_copy` in its `PopConfig`). Each packet reads
//! `acl_copy` once, so it is judged entirely by the old or the new rules.
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Array, HashMap, Map, MapData,
};
use ipnet::IpNet;
use pop_common::{
    maps as names, policer_index, Direction, PopAclFilter, PopAclLeafBlock, PopAclMeta, PopAclNode,
    PopAclRule, PopConfig, PopPolicer, ACL_FILTER_BYTES, MAX_ACL_LEAF_BLOCKS, MAX_ACL_NODES,
    MAX_ACL_RULES, MAX_CUSTOMERS,
};

use super::acl_hits as hits;
use super::maps::ignore_missing;
use super::police::{self, policer};
use super::{wait_for_readers, DataplaneError};

/// Size and shape of a compiled rule set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AclStats {
    /// Rules in the data plane (rules whose `in_iface` does not exist are left out).
    pub rules: usize,
    /// Tree nodes, both families.
    pub nodes: usize,
    /// Rule references in leaves.
    pub leaf_refs: usize,
    /// Blocks the leaves take ([`pop_common::ACL_LEAF_BLOCK`] rules each).
    pub leaf_blocks: usize,
    /// Deepest leaf of the IPv4 trees.
    pub depth_v4: u32,
    /// Deepest leaf of the IPv6 trees.
    pub depth_v6: u32,
    /// IPv4 trees (rule groups).
    pub trees_v4: usize,
    /// IPv6 trees (rule groups).
    pub trees_v6: usize,
    /// Most rules in one leaf.
    pub max_leaf: usize,
    /// Bytes the copy occupies in the maps.
    pub map_bytes: usize,
    /// Time the compiler (`crate::acl::compile`) took.
    pub build_time: Duration,
}

/// A rule set compiled for one copy of the ACL maps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompiledAcl {
    /// Rules by index (= evaluation order).
    pub rules: Vec<PopAclRule>,
    /// Tree nodes of both families.
    pub nodes: Vec<PopAclNode>,
    /// Leaves' rules, each leaf in whole blocks.
    pub leaf_rules: Vec<PopAclLeafBlock>,
    /// Roots and counts (`acl_meta[copy]`).
    pub meta: PopAclMeta,
    /// The first stage (`acl_filter[copy]`, [`pop_common::PopAclFilter::skip`]):
    /// which trees each cell of the source, destination, protocol and
    /// destination port rules out. Empty: none (every tree is walked).
    pub filter: Vec<u8>,
    /// Shape and cost.
    pub stats: AclStats,
    /// What an incremental change needs to know of the trees
    /// (`crate::acl::incremental`).
    pub layout: AclLayout,
}

/// The rule groups behind a compiled rule set, by slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AclLayout {
    /// Per slot: bit 0 the rule is in the IPv4 trees, bit 1 in the IPv6 trees.
    pub families: Vec<u8>,
    /// Per slot: the rule's shape (`crate::acl::tree::shape`).
    pub shapes: Vec<u8>,
    /// The slots of each IPv4 tree of the full compile, ascending priority.
    pub groups_v4: Vec<Vec<u32>>,
    /// The slots of each IPv6 tree of the full compile.
    pub groups_v6: Vec<Vec<u32>>,
    /// Slots of rules that hide later rules in some region of a tree.
    pub truncators: Vec<u32>,
    /// Nodes and leaf blocks of the full compile's trees: the last tree of
    /// each family (the rules changed since) goes after them.
    pub base_nodes: usize,
    /// See `base_nodes`.
    pub base_blocks: usize,
    /// Slots in the IPv4 tree of changes, ascending priority.
    pub delta_v4: Vec<u32>,
    /// Slots in the IPv6 tree of changes.
    pub delta_v6: Vec<u32>,
}

/// An `acl_rules` value no key matches (every range empty): what a deleted
/// rule's slot holds until the next full compile stops pointing at it.
pub const DEAD_RULE: PopAclRule = PopAclRule {
    lo: [u32::MAX; pop_common::ACL_FIELDS],
    hi: [0; pop_common::ACL_FIELDS],
    action: 0,
    priority: pop_common::ACL_NO_RULE,
};

/// The element writes of one ACL change, the same for both copies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AclDelta {
    /// (slot, rule).
    pub rules: Vec<(u32, PopAclRule)>,
    /// (index, block).
    pub leaf_rules: Vec<(u32, PopAclLeafBlock)>,
    /// (index, node).
    pub nodes: Vec<(u32, PopAclNode)>,
    /// The whole first stage, when it changes.
    pub filter: Option<Vec<u8>>,
    /// The roots, when they change.
    pub meta: Option<PopAclMeta>,
    /// Slots that get a rule they did not hold: their hit counters start at
    /// zero (written before the rule can be reached).
    pub fresh_slots: Vec<u32>,
}

impl AclDelta {
    /// Whether it writes nothing.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
            && self.leaf_rules.is_empty()
            && self.nodes.is_empty()
            && self.filter.is_none()
            && self.meta.is_none()
    }
}

/// What the maps `spoof_ports`, `spoof_src_v4` and `spoof_src_v6` should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpoofTables {
    /// ifindex of every anti-spoofing port → the customer id its spoofed
    /// packets are counted against (the first anti-spoofing customer there).
    pub ports: BTreeMap<u32, u32>,
    /// (ifindex of an anti-spoofing port, prefix of a customer attached
    /// there): sources in the prefix may send from that port. Prefixes are
    /// truncated to their network.
    pub prefixes: BTreeSet<(u32, IpNet)>,
}

impl SpoofTables {
    /// Whether `ifindex` needs `IFACE_ANTI_SPOOFING` in its `PopIface::flags`.
    pub fn is_anti_spoofing_port(&self, ifindex: u32) -> bool {
        self.ports.contains_key(&ifindex)
    }

    /// Entries of `spoof_src_v4` (IPv4 prefixes).
    pub fn count_v4(&self) -> usize {
        self.prefixes
            .iter()
            .filter(|(_, p)| p.addr().is_ipv4())
            .count()
    }

    /// Entries of `spoof_src_v6` (IPv6 prefixes).
    pub fn count_v6(&self) -> usize {
        self.prefixes.len() - self.count_v4()
    }
}

/// Handles on the ACL, anti-spoofing and policer maps, opened from their
/// pins; [`super::Maps::acl`] is the controller's.
pub struct AclMaps {
    config: Array<MapData, PopConfig>,
    meta: Array<MapData, PopAclMeta>,
    nodes: Array<MapData, PopAclNode>,
    leaf_rules: Array<MapData, PopAclLeafBlock>,
    rules: Array<MapData, PopAclRule>,
    /// The first stage; `None` with an object built before it existed, which
    /// walks every tree and needs none.
    filter: Option<Array<MapData, PopAclFilter>>,
    spoof_ports: HashMap<MapData, u32, u32>,
    spoof_src_v4: LpmTrie<MapData, [u8; 8], u32>,
    spoof_src_v6: LpmTrie<MapData, [u8; 20], u32>,
    policers: Array<MapData, PopPolicer>,
    hits: hits::HitsMap,
    /// The rules this handle wrote into each copy, by priority, so a swap and
    /// `acl show` need not read them back from the maps.
    written: [Option<hits::RulesByPriority>; 2],
}

/// The map value of one copy's filter (`skip` bytes as
/// `crate::acl::filter::build` makes them); `None` unless `skip` has exactly
/// [`ACL_FILTER_BYTES`].
pub fn filter_value(skip: &[u8]) -> Option<&PopAclFilter> {
    if skip.len() != ACL_FILTER_BYTES {
        return None;
    }
    // SAFETY: PopAclFilter is repr(C) around one [u8; ACL_FILTER_BYTES]:
    // same size, alignment 1, every byte pattern valid; the borrow is kept.
    Some(unsafe { &*skip.as_ptr().cast::<PopAclFilter>() })
}

fn open<T>(dir: &Path, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    T::try_from(super::maps::open(dir, name)?).map_err(super::maps::map_err(name))
}

fn map_err(name: &'static str, what: String) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |e| DataplaneError::Map {
        map: name,
        reason: format!("{what}: {e}"),
    }
}

/// The elements `want[i]` that `map` does not hold at `base + i`, with what
/// it holds there.
fn differing<T: aya::Pod + PartialEq>(
    map: &Array<MapData, T>,
    name: &'static str,
    base: u32,
    want: &[T],
) -> Result<Vec<(usize, T)>, DataplaneError> {
    let mut out = Vec::new();
    for (i, w) in want.iter().enumerate() {
        let index = base + i as u32;
        let have = map
            .get(&index, 0)
            .map_err(map_err(name, format!("get {index}")))?;
        if have != *w {
            out.push((i, have));
        }
    }
    Ok(out)
}

/// Writes each `(i, value)` of `elements` at `base + i` of `map`, in the
/// order given: the write side of [`differing`].
fn write_elements<T: aya::Pod>(
    map: &mut Array<MapData, T>,
    name: &'static str,
    base: u32,
    elements: impl IntoIterator<Item = (u32, impl Borrow<T>)>,
) -> Result<(), DataplaneError> {
    for (i, value) in elements {
        let index = base + i;
        map.set(index, value, 0)
            .map_err(map_err(name, format!("set {index}")))?;
    }
    Ok(())
}

impl AclMaps {
    /// Opens the maps pinned in `maps_dir` (popd's `<bpffs>/maps`).
    pub fn open(maps_dir: &Path) -> Result<Self, DataplaneError> {
        Ok(Self {
            config: open(maps_dir, names::CONFIG)?,
            meta: open(maps_dir, names::ACL_META)?,
            nodes: open(maps_dir, names::ACL_NODES)?,
            leaf_rules: open(maps_dir, names::ACL_LEAF_RULES)?,
            rules: open(maps_dir, names::ACL_RULES)?,
            filter: if maps_dir.join(names::ACL_FILTER).exists() {
                Some(open(maps_dir, names::ACL_FILTER)?)
            } else {
                None
            },
            spoof_ports: open(maps_dir, names::SPOOF_PORTS)?,
            spoof_src_v4: open(maps_dir, names::SPOOF_SRC_V4)?,
            spoof_src_v6: open(maps_dir, names::SPOOF_SRC_V6)?,
            policers: open(maps_dir, names::POLICERS)?,
            hits: open(maps_dir, names::ACL_HITS)?,
            written: [None, None],
        })
    }

    /// The ACL copy packets use now (`PopConfig::acl_copy`).
    pub fn active_copy(&self) -> Result<u32, DataplaneError> {
        let config = self
            .config
            .get(&0, 0)
            .map_err(map_err(names::CONFIG, "get 0".into()))?;
        Ok(config.acl_copy & 1)
    }

    /// The copy to write next: the one packets do not use.
    pub fn inactive_copy(&self) -> Result<u32, DataplaneError> {
        Ok(1 - self.active_copy()?)
    }

    /// The live copy's rules by priority (as written, else read back).
    fn live_rules(&self, live: u32) -> Result<hits::RulesByPriority, DataplaneError> {
        match &self.written[live as usize] {
            Some(rules) => Ok(rules.clone()),
            None => hits::rules_by_priority(&self.meta, &self.rules, live),
        }
    }

    /// Refuses `copy` unless it is 0 or 1 and not the live copy (an empty
    /// live copy may be written: nothing reads it). Returns the live copy.
    fn check_writable(&self, copy: u32) -> Result<u32, DataplaneError> {
        if copy > 1 {
            return Err(DataplaneError::AclCopy {
                copy,
                reason: "must be 0 or 1".into(),
            });
        }
        let live = self.active_copy()?;
        let live_meta = self
            .meta
            .get(&live, 0)
            .map_err(map_err(names::ACL_META, format!("get {live}")))?;
        if copy == live && live_meta.rule_count != 0 {
            return Err(DataplaneError::AclCopy {
                copy,
                reason: format!(
                    "it is the active copy; write copy {} and activate it",
                    1 - copy
                ),
            });
        }
        Ok(live)
    }

    /// `compiled` with every rule that the live copy holds unchanged (same
    /// priority, every field equal) in its live slot, and the other rules in
    /// slots no live rule uses: a rule's slot, and so its hit counter, never
    /// changes while it exists. Returns it and the slots that get a new rule.
    pub fn stabilize(
        &self,
        compiled: &CompiledAcl,
    ) -> Result<(CompiledAcl, Slots), DataplaneError> {
        let live = self.active_copy()?;
        let live_rules = self.live_rules(live)?;
        Ok(stabilize(compiled, &live_rules))
    }

    /// Writes `compiled` completely into ACL copy `copy` (0 or 1), which must
    /// not be the active one, with its rules in stable slots
    /// ([`AclMaps::stabilize`]); returns what was written. Packets do not
    /// see it until [`AclMaps::activate`].
    pub fn write_copy(
        &mut self,
        copy: u32,
        compiled: &CompiledAcl,
    ) -> Result<CompiledAcl, DataplaneError> {
        let live = self.check_writable(copy)?;
        let fits = |what: &'static str, count: usize, max: u32| {
            if count > max as usize {
                Err(DataplaneError::AclFull { what, count, max })
            } else {
                Ok(())
            }
        };
        let live_rules = self.live_rules(live)?;
        let (compiled, fresh) = stabilize(compiled, &live_rules);
        fits("rules", compiled.rules.len(), MAX_ACL_RULES)?;
        fits("tree nodes", compiled.nodes.len(), MAX_ACL_NODES)?;
        fits(
            "leaf blocks",
            compiled.leaf_rules.len(),
            MAX_ACL_LEAF_BLOCKS,
        )?;
        self.written[copy as usize] = None;
        // A packet that read the previous index may still walk this copy.
        wait_for_readers();
        if live != copy {
            self.written[live as usize] = Some(live_rules);
        }
        // New rules start from zero; the others keep counting in their slot.
        hits::zero(&mut self.hits, &fresh.fresh)?;
        // Everything a node can point at first, the nodes, then the roots.
        self.write_elements(
            copy,
            (0..).zip(&compiled.rules),
            (0..).zip(&compiled.leaf_rules),
            (0..).zip(&compiled.nodes),
        )?;
        self.write_filter(copy, &compiled.filter)?;
        self.meta
            .set(copy, compiled.meta, 0)
            .map_err(map_err(names::ACL_META, format!("set {copy}")))?;
        hits::zero(&mut self.hits, &fresh.reused)?;
        self.written[copy as usize] = Some(hits::index_rules(&compiled.rules));
        Ok(compiled)
    }

    /// Writes rules, leaf blocks, then nodes (everything a node can point
    /// at before the nodes) into copy `copy`: each `(i, value)` at element
    /// `i` of the copy.
    fn write_elements(
        &mut self,
        copy: u32,
        rules: impl IntoIterator<Item = (u32, impl Borrow<PopAclRule>)>,
        leaf_blocks: impl IntoIterator<Item = (u32, impl Borrow<PopAclLeafBlock>)>,
        nodes: impl IntoIterator<Item = (u32, impl Borrow<PopAclNode>)>,
    ) -> Result<(), DataplaneError> {
        write_elements(
            &mut self.rules,
            names::ACL_RULES,
            copy * MAX_ACL_RULES,
            rules,
        )?;
        write_elements(
            &mut self.leaf_rules,
            names::ACL_LEAF_RULES,
            copy * MAX_ACL_LEAF_BLOCKS,
            leaf_blocks,
        )?;
        write_elements(
            &mut self.nodes,
            names::ACL_NODES,
            copy * MAX_ACL_NODES,
            nodes,
        )
    }

    fn write_filter(&mut self, copy: u32, skip: &[u8]) -> Result<(), DataplaneError> {
        if let Some(filter) = &mut self.filter {
            // Always written: a filter left from an older rule set would skip
            // the wrong trees (all zero, for a compile without one, skips none).
            let zeros;
            let value = match filter_value(skip) {
                Some(value) => value,
                None => {
                    zeros = vec![0u8; ACL_FILTER_BYTES];
                    filter_value(&zeros).expect("ACL_FILTER_BYTES long")
                }
            };
            filter
                .set(copy, value, 0)
                .map_err(map_err(names::ACL_FILTER, format!("set {copy}")))?;
        }
        Ok(())
    }

    /// Writes one change's elements into copy `copy`, which must not be the
    /// live one (no packet reads it, so the order within does not matter;
    /// it is still pointees first, roots last). The caller waited for
    /// readers since the copy was last live.
    pub fn write_delta(&mut self, copy: u32, delta: &AclDelta) -> Result<(), DataplaneError> {
        self.check_writable(copy)?;
        hits::zero(&mut self.hits, &delta.fresh_slots)?;
        // Forget what this copy held until it is all written.
        let mut written = self.written[copy as usize].take();
        self.write_elements(
            copy,
            delta.rules.iter().copied(),
            delta.leaf_rules.iter().copied(),
            delta.nodes.iter().copied(),
        )?;
        if let Some(filter) = &delta.filter {
            self.write_filter(copy, filter)?;
        }
        if let Some(meta) = &delta.meta {
            self.meta
                .set(copy, meta, 0)
                .map_err(map_err(names::ACL_META, format!("set {copy}")))?;
        }
        if let Some(rules) = written.as_mut() {
            for (slot, rule) in &delta.rules {
                rules.retain_slot(*slot);
                if rule.priority != pop_common::ACL_NO_RULE {
                    rules.insert(rule.priority, (*slot, *rule));
                }
            }
        }
        self.written[copy as usize] = written;
        Ok(())
    }

    /// Makes `copy` the live one (read-modify-write of `PopConfig::acl_copy`,
    /// keeping the other fields), then waits until no packet uses the old copy,
    /// so it may be rewritten. A controller that writes `PopConfig` itself must
    /// carry `acl_copy` over and call [`wait_for_readers`] after the write.
    pub fn activate(&mut self, copy: u32) -> Result<(), DataplaneError> {
        if copy > 1 {
            return Err(DataplaneError::AclCopy {
                copy,
                reason: "must be 0 or 1".into(),
            });
        }
        let mut config = self
            .config
            .get(&0, 0)
            .map_err(map_err(names::CONFIG, "get 0".into()))?;
        config.acl_copy = copy;
        self.config
            .set(0, config, 0)
            .map_err(map_err(names::CONFIG, format!("set acl_copy {copy}")))?;
        wait_for_readers();
        Ok(())
    }

    /// Hit counters (summed over CPUs) of the rules of copy `copy`, by
    /// priority. A rule left out of the copy (its `in_iface` does not exist)
    /// is absent.
    pub fn hits(
        &self,
        copy: u32,
    ) -> Result<std::collections::BTreeMap<u32, pop_common::PopCounter>, DataplaneError> {
        let copy = copy & 1;
        match &self.written[copy as usize] {
            Some(rules) => Ok(hits::read_copy(&self.hits, rules)),
            None => {
                let rules = hits::rules_by_priority(&self.meta, &self.rules, copy)?;
                Ok(hits::read_copy(&self.hits, &rules))
            }
        }
    }

    /// The hit-counter slot (the rule's slot, the same in both copies) of every
    /// rule of copy `copy`, by priority: what a reader of `acl_hits` without
    /// these handles needs to find a rule's count.
    pub fn rule_slots(
        &self,
        copy: u32,
    ) -> Result<std::collections::BTreeMap<u32, u32>, DataplaneError> {
        let copy = copy & 1;
        let slots = |rules: &hits::RulesByPriority| {
            rules
                .iter()
                .map(|(&priority, &(slot, _))| (priority, slot))
                .collect()
        };
        match &self.written[copy as usize] {
            Some(rules) => Ok(slots(rules)),
            None => Ok(slots(&hits::rules_by_priority(
                &self.meta,
                &self.rules,
                copy,
            )?)),
        }
    }

    /// Writes `compiled` to the inactive copy and activates it. Returns the
    /// copy now live.
    pub fn swap_in(&mut self, compiled: &CompiledAcl) -> Result<u32, DataplaneError> {
        let copy = self.inactive_copy()?;
        self.write_copy(copy, compiled)?;
        self.activate(copy)?;
        Ok(copy)
    }

    /// Where copy `copy` of the maps differs from `want` (in the elements
    /// `want` uses): one line per difference, empty when it holds exactly
    /// `want`. For tests that check both copies stay equal.
    pub fn differences(
        &self,
        copy: u32,
        want: &CompiledAcl,
    ) -> Result<Vec<String>, DataplaneError> {
        let mut out = Vec::new();
        let meta = self
            .meta
            .get(&copy, 0)
            .map_err(map_err(names::ACL_META, format!("get {copy}")))?;
        if meta != want.meta {
            out.push(format!("meta: {meta:?} != {:?}", want.meta));
        }
        let rules = differing(
            &self.rules,
            names::ACL_RULES,
            copy * MAX_ACL_RULES,
            &want.rules,
        )?;
        out.extend(
            rules
                .into_iter()
                .map(|(i, have)| format!("rule slot {i}: {have:?} != {:?}", want.rules[i])),
        );
        let nodes = differing(
            &self.nodes,
            names::ACL_NODES,
            copy * MAX_ACL_NODES,
            &want.nodes,
        )?;
        out.extend(nodes.into_iter().map(|(i, _)| format!("node {i}")));
        let blocks = differing(
            &self.leaf_rules,
            names::ACL_LEAF_RULES,
            copy * MAX_ACL_LEAF_BLOCKS,
            &want.leaf_rules,
        )?;
        out.extend(blocks.into_iter().map(|(i, _)| format!("leaf block {i}")));
        if let (Some(filter), Some(skip)) = (&self.filter, filter_value(&want.filter)) {
            // The value is 512 KiB, read by value: on a thread with room for it.
            let same = std::thread::scope(|s| {
                std::thread::Builder::new()
                    .stack_size(64 << 20)
                    .spawn_scoped(s, || {
                        filter
                            .get(&copy, 0)
                            .map(|have| have.skip[..] == skip.skip[..])
                    })
                    .expect("spawning a reader thread")
                    .join()
                    .expect("the reader thread")
            })
            .map_err(map_err(names::ACL_FILTER, format!("get {copy}")))?;
            if !same {
                out.push("first stage".into());
            }
        }
        Ok(out)
    }

    /// The rules of copy `copy` by priority: (slot, rule).
    pub fn rules_of(&self, copy: u32) -> Result<hits::RulesByPriority, DataplaneError> {
        self.live_rules(copy & 1)
    }

    /// Adds what `want` has and the maps lack. Call before the interfaces'
    /// `IFACE_ANTI_SPOOFING` flags are set, so a newly protected port never
    /// drops its own customers' traffic.
    pub fn add_spoof(&mut self, want: &SpoofTables) -> Result<(), DataplaneError> {
        for &(ifindex, prefix) in &want.prefixes {
            let what = || format!("insert ifindex {ifindex} prefix {prefix}");
            let len = 32 + u32::from(prefix.prefix_len());
            match prefix {
                IpNet::V4(p) => {
                    let key = Key::new(len, spoof_data_v4(ifindex, p.network().octets()));
                    self.spoof_src_v4
                        .insert(&key, 0, 0)
                        .map_err(map_err(names::SPOOF_SRC_V4, what()))?;
                }
                IpNet::V6(p) => {
                    let key = Key::new(len, spoof_data_v6(ifindex, p.network().octets()));
                    self.spoof_src_v6
                        .insert(&key, 0, 0)
                        .map_err(map_err(names::SPOOF_SRC_V6, what()))?;
                }
            }
        }
        for (&ifindex, &customer_id) in &want.ports {
            self.spoof_ports
                .insert(ifindex, customer_id, 0)
                .map_err(map_err(
                    names::SPOOF_PORTS,
                    format!("insert ifindex {ifindex} customer {customer_id}"),
                ))?;
        }
        Ok(())
    }

    /// Removes what the maps hold beyond `want`. Call after the flags of ports
    /// that lost anti-spoofing are cleared.
    pub fn prune_spoof(&mut self, want: &SpoofTables) -> Result<(), DataplaneError> {
        let prefixes = &want.prefixes;
        prune_prefixes(
            &mut self.spoof_src_v4,
            names::SPOOF_SRC_V4,
            spoof_entry_v4,
            prefixes,
        )?;
        prune_prefixes(
            &mut self.spoof_src_v6,
            names::SPOOF_SRC_V6,
            spoof_entry_v6,
            prefixes,
        )?;
        let stale: Vec<u32> = self
            .spoof_ports
            .keys()
            .flatten()
            .filter(|k| !want.ports.contains_key(k))
            .collect();
        for ifindex in stale {
            self.remove_spoof_port(ifindex)?;
        }
        Ok(())
    }

    /// Removes `ifindex` from `spoof_ports` (absent is fine).
    fn remove_spoof_port(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        ignore_missing(self.spoof_ports.remove(&ifindex)).map_err(map_err(
            names::SPOOF_PORTS,
            format!("remove ifindex {ifindex}"),
        ))
    }

    /// Removes exactly the entries and ports `gone` lists (a single customer
    /// change; [`Self::prune_spoof`] reads the whole maps instead). Call after
    /// the flags of ports that lost anti-spoofing are cleared.
    pub fn remove_spoof(&mut self, gone: &SpoofTables) -> Result<(), DataplaneError> {
        for &(ifindex, prefix) in &gone.prefixes {
            let len = 32 + u32::from(prefix.prefix_len());
            let (r, map) = match prefix {
                IpNet::V4(p) => (
                    self.spoof_src_v4
                        .remove(&Key::new(len, spoof_data_v4(ifindex, p.network().octets()))),
                    names::SPOOF_SRC_V4,
                ),
                IpNet::V6(p) => (
                    self.spoof_src_v6
                        .remove(&Key::new(len, spoof_data_v6(ifindex, p.network().octets()))),
                    names::SPOOF_SRC_V6,
                ),
            };
            ignore_missing(r).map_err(map_err(
                map,
                format!("remove ifindex {ifindex} prefix {prefix}"),
            ))?;
        }
        for &ifindex in gone.ports.keys() {
            self.remove_spoof_port(ifindex)?;
        }
        Ok(())
    }

    /// Sets customer `customer_id`'s policer (both directions) to
    /// `(rate_bps, burst_bytes)`, or removes it with `None`. An unchanged
    /// policer is left alone, keeping its bucket state.
    pub fn set_policer(
        &mut self,
        customer_id: u32,
        rate_and_burst: Option<(u64, u64)>,
    ) -> Result<(), DataplaneError> {
        if customer_id == 0 || customer_id >= MAX_CUSTOMERS {
            return Err(DataplaneError::CustomerId {
                id: customer_id,
                max: MAX_CUSTOMERS - 1,
            });
        }
        let want = match rate_and_burst {
            Some((rate_bps, burst_bytes)) => policer(rate_bps, burst_bytes)?,
            None => PopPolicer::default(),
        };
        for direction in [Direction::In, Direction::Out] {
            let index = policer_index(customer_id, direction);
            let have = self
                .policers
                .get(&index, 0)
                .map_err(map_err(names::POLICERS, format!("get {index}")))?;
            if !police::same_config(&have, &want) {
                self.policers
                    .set(index, want, 0)
                    .map_err(map_err(names::POLICERS, format!("set {index}")))?;
            }
        }
        Ok(())
    }
}

/// The data of a `spoof_src_v4` key (`struct pop_spoof_v4_key` after its
/// prefixlen): the ifindex big-endian, then the address.
fn spoof_data_v4(ifindex: u32, addr: [u8; 4]) -> [u8; 8] {
    let mut data = [0; 8];
    data[..4].copy_from_slice(&ifindex.to_be_bytes());
    data[4..].copy_from_slice(&addr);
    data
}

/// The data of a `spoof_src_v6` key, like [`spoof_data_v4`].
fn spoof_data_v6(ifindex: u32, addr: [u8; 16]) -> [u8; 20] {
    let mut data = [0; 20];
    data[..4].copy_from_slice(&ifindex.to_be_bytes());
    data[4..].copy_from_slice(&addr);
    data
}

/// Removes the entries of `trie` (`spoof_src_v4` or `spoof_src_v6`, named
/// `name`) whose (ifindex, prefix), as `entry` reads a key, `want` lacks.
fn prune_prefixes<const N: usize>(
    trie: &mut LpmTrie<MapData, [u8; N], u32>,
    name: &'static str,
    entry: fn(&Key<[u8; N]>) -> (u32, IpNet),
    want: &BTreeSet<(u32, IpNet)>,
) -> Result<(), DataplaneError> {
    let stale: Vec<Key<[u8; N]>> = trie
        .keys()
        .flatten()
        .filter(|k| !want.contains(&entry(k)))
        .collect();
    for key in stale {
        if let Err(e) = ignore_missing(trie.remove(&key)) {
            let (ifindex, prefix) = entry(&key);
            let what = format!("remove ifindex {ifindex} prefix {prefix}");
            return Err(map_err(name, what)(e));
        }
    }
    Ok(())
}

/// The (ifindex, prefix) a `spoof_src_v4` key stands for.
fn spoof_entry_v4(key: &Key<[u8; 8]>) -> (u32, IpNet) {
    let data = key.data();
    let ifindex = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let addr: [u8; 4] = [data[4], data[5], data[6], data[7]];
    let len = key.prefix_len().saturating_sub(32).min(32) as u8;
    let net = ipnet::Ipv4Net::new(addr.into(), len).expect("length <= 32");
    (ifindex, IpNet::V4(net.trunc()))
}

/// The (ifindex, prefix) a `spoof_src_v6` key stands for.
fn spoof_entry_v6(key: &Key<[u8; 20]>) -> (u32, IpNet) {
    let data = key.data();
    let ifindex = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let mut addr = [0u8; 16];
    addr.copy_from_slice(&data[4..]);
    let len = key.prefix_len().saturating_sub(32).min(128) as u8;
    let net = ipnet::Ipv6Net::new(addr.into(), len).expect("length <= 128");
    (ifindex, IpNet::V6(net.trunc()))
}

/// See [`AclMaps::stabilize`].
pub fn stabilize(compiled: &CompiledAcl, live: &hits::RulesByPriority) -> (CompiledAcl, Slots) {
    let n = compiled.rules.len();
    let mut slot_of = vec![u32::MAX; n];
    let mut taken = std::collections::HashSet::new();
    for (i, rule) in compiled.rules.iter().enumerate() {
        if rule.priority == pop_common::ACL_NO_RULE {
            continue;
        }
        if let Some(&(slot, old)) = live.get(&rule.priority) {
            if old == *rule && taken.insert(slot) {
                slot_of[i] = slot;
            }
        }
    }
    let used: std::collections::HashSet<u32> = live.slots().collect();
    // Slots of live rules that go: taken only when the free ones run out
    // (a set replaced by a large, different one).
    let mut going: Vec<u32> = used.difference(&taken).copied().collect();
    going.sort_unstable_by(|a, b| b.cmp(a));
    let mut next = 0u32;
    let (mut fresh, mut reused) = (Vec::new(), Vec::new());
    for (i, rule) in compiled.rules.iter().enumerate() {
        if slot_of[i] != u32::MAX || rule.priority == pop_common::ACL_NO_RULE {
            continue;
        }
        while used.contains(&next) || taken.contains(&next) {
            next += 1;
        }
        let slot = if next < MAX_ACL_RULES {
            next += 1;
            fresh.push(next - 1);
            next - 1
        } else if let Some(slot) = going.pop() {
            reused.push(slot);
            slot
        } else {
            // More rules than slots: the caller refuses the set.
            next += 1;
            next - 1
        };
        slot_of[i] = slot;
        taken.insert(slot);
    }
    let high = slot_of
        .iter()
        .filter(|&&s| s != u32::MAX)
        .map(|&s| s + 1)
        .max()
        .unwrap_or(0) as usize;
    let mut out = compiled.clone();
    out.rules = vec![DEAD_RULE; high];
    for (i, rule) in compiled.rules.iter().enumerate() {
        if slot_of[i] != u32::MAX {
            out.rules[slot_of[i] as usize] = *rule;
        }
    }
    let map = |s: u32| slot_of.get(s as usize).copied().unwrap_or(u32::MAX);
    for block in &mut out.leaf_rules {
        for e in &mut block.rule {
            if (e.rule as usize) < n {
                e.rule = map(e.rule);
            }
        }
    }
    let l = &compiled.layout;
    let by_slot = |v: &Vec<u8>| {
        let mut o = vec![0u8; high];
        for (i, &x) in v.iter().enumerate() {
            if map(i as u32) != u32::MAX {
                o[map(i as u32) as usize] = x;
            }
        }
        o
    };
    let lists = |v: &Vec<Vec<u32>>| -> Vec<Vec<u32>> {
        v.iter()
            .map(|g| g.iter().map(|&s| map(s)).collect())
            .collect()
    };
    out.layout = AclLayout {
        families: by_slot(&l.families),
        shapes: by_slot(&l.shapes),
        groups_v4: lists(&l.groups_v4),
        groups_v6: lists(&l.groups_v6),
        truncators: l.truncators.iter().map(|&s| map(s)).collect(),
        base_nodes: l.base_nodes,
        base_blocks: l.base_blocks,
        delta_v4: l.delta_v4.iter().map(|&s| map(s)).collect(),
        delta_v6: l.delta_v6.iter().map(|&s| map(s)).collect(),
    };
    out.meta.rule_count = high as u32;
    out.stats.rules = compiled.stats.rules;
    (out, Slots { fresh, reused })
}

/// Slots [`stabilize`] gave rules that the live copy does not hold there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slots {
    /// Slots no live rule uses: zeroed before the write.
    pub fresh: Vec<u32>,
    /// Slots of live rules that go (only when the free slots ran out):
    /// zeroed at the end of the write, just before the flip, so the old rule's
    /// last hits (until the flip) may land on the new one.
    pub reused: Vec<u32>,
}
