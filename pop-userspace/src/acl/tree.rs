//! ACL rules → a HyperSplit-style decision tree the data plane walks
//! (`pop-ebpf/src/acl.h`; the design and why are in docs/acl.md).
//!
//! Every rule is a hyper-rectangle over [`ACL_FIELDS`] u32 fields
//! ([`AclField`]). An inner node splits one field at a threshold (`<=` goes
//! left); a leaf lists the few rules that can still match in its region, in
//! priority order. Rules are grouped by shape (which fields are wildcards), one
//! tree per group and at most [`ACL_MAX_TREES`] per family, because mixing
//! shapes in one tree copies rules into every branch. A packet walks one
//! root-to-leaf path per tree and checks only the leaves' rules, so its cost
//! depends on the depth (logarithmic in the rules), not on the number of rules.
//! The binary tree is then packed for the data plane: [`ACL_NODE_LEVELS`]
//! levels per [`PopAclNode`], leaves as refs in their parent
//! ([`ACL_REF_LEAF`]), leaf rules in [`PopAclLeafBlock`]s.
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use ipnet::IpNet;
use pop_common::{
    AclField, AclVerdict, PopAclLeafBlock, PopAclLeafRule, PopAclMeta, PopAclNode, PopAclRule,
    ACL_FIELDS, ACL_LEAF_BLOCK, ACL_LEAF_MAX, ACL_MAX_DEPTH, ACL_MAX_NODE_DEPTH, ACL_MAX_TREES,
    ACL_NODE_CHILDREN, ACL_NODE_LEVELS, ACL_NODE_SLOTS, ACL_NO_PORT, ACL_NO_RULE, ACL_REF_COUNT,
    ACL_REF_COUNT_SHIFT, ACL_REF_LEAF, ACL_REF_START, MAX_ACL_LEAF_BLOCKS, MAX_ACL_NODES,
    MAX_ACL_RULES,
};

pub use crate::dataplane::acl::{AclLayout, AclStats, CompiledAcl};

use crate::config::model::AclAction;
use crate::config::validate::ValidAcl;

/// Leaves aim at this many rules at most; more only where the depth cap stops
/// splitting (then up to [`ACL_LEAF_MAX`]).
pub const LEAF_TARGET: usize = 8;

/// A rule group smaller than this (or than 1/64 of the rules) joins another
/// group instead of getting its own tree.
pub const MIN_TREE_RULES: usize = 64;

/// Trees a full compile makes per family at most: the last of the data
/// plane's [`ACL_MAX_TREES`] is kept for the rules changed since
/// (`super::incremental`).
pub const BASE_TREES: usize = ACL_MAX_TREES - 1;

/// A packet as the classifier sees it: one u32 per [`AclField`].
pub type AclKey = [u32; ACL_FIELDS];

/// An inclusive range per field: a region of the key space.
type Region = [(u32, u32); ACL_FIELDS];

/// The key of an IPv4 packet; `ports` is `None` for packets without ports
/// (non-TCP/UDP, non-first fragments).
pub fn key_v4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ports: Option<(u16, u16)>,
    in_ifindex: u32,
) -> AclKey {
    let mut key = [0u32; ACL_FIELDS];
    key[AclField::Src0 as usize] = u32::from(src);
    key[AclField::Dst0 as usize] = u32::from(dst);
    fill_l4(&mut key, proto, ports, in_ifindex);
    key
}

/// The key of an IPv6 packet; `ports` as for [`key_v4`].
pub fn key_v6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    proto: u8,
    ports: Option<(u16, u16)>,
    in_ifindex: u32,
) -> AclKey {
    let mut key = [0u32; ACL_FIELDS];
    let (s, d) = (u128::from(src), u128::from(dst));
    for word in 0..4 {
        let shift = 96 - 32 * word as u32;
        key[AclField::Src0 as usize + word] = (s >> shift) as u32;
        key[AclField::Dst0 as usize + word] = (d >> shift) as u32;
    }
    fill_l4(&mut key, proto, ports, in_ifindex);
    key
}

fn fill_l4(key: &mut AclKey, proto: u8, ports: Option<(u16, u16)>, in_ifindex: u32) {
    key[AclField::Proto as usize] = u32::from(proto);
    let (sport, dport) = ports.map_or((ACL_NO_PORT, ACL_NO_PORT), |(s, d)| {
        (u32::from(s), u32::from(d))
    });
    key[AclField::SrcPort as usize] = sport;
    key[AclField::DstPort as usize] = dport;
    key[AclField::InIface as usize] = in_ifindex;
}

impl CompiledAcl {
    /// Replays the data plane's walk: the slot of the first matching rule
    /// (by priority). `None` when no rule matches (the packet is allowed).
    pub fn classify(&self, key: &AclKey, is_v6: bool) -> Option<usize> {
        if self.meta.rule_count == 0 {
            return None;
        }
        let m = &self.meta;
        let (trees, roots, firsts) = if is_v6 {
            (m.trees_v6, &m.root_v6, &m.first_rule_v6)
        } else {
            (m.trees_v4, &m.root_v4, &m.first_rule_v4)
        };
        let (mut best, mut best_slot) = (ACL_NO_RULE, 0);
        let skip = super::filter::trees_to_skip(&self.filter, key, is_v6);
        for t in 0..(trees as usize).min(ACL_MAX_TREES) {
            if skip & (1 << t) != 0 {
                continue;
            }
            if firsts[t] >= best {
                break;
            }
            if let Some((priority, slot)) = self.tree_match(key, roots[t], best) {
                if priority < best {
                    (best, best_slot) = (priority, slot);
                }
            }
        }
        (best != ACL_NO_RULE).then_some(best_slot as usize)
    }

    /// `pop_acl_tree_match`: (priority, slot) of the first rule of the leaf
    /// `key` reaches from `tree_ref` that matches, if its priority is below
    /// `limit`.
    fn tree_match(&self, key: &AclKey, tree_ref: u32, limit: u32) -> Option<(u32, u32)> {
        let mut r = tree_ref;
        for _ in 0..ACL_MAX_NODE_DEPTH {
            if r & ACL_REF_LEAF != 0 {
                break;
            }
            let node = self.nodes.get(r as usize)?;
            let mut s = 0;
            for _ in 0..ACL_NODE_LEVELS {
                // Like the C key's spare slots, fields past the end read 0.
                let value = key.get(usize::from(node.field[s])).copied().unwrap_or(0);
                s = 2 * s + 1 + usize::from(value > node.threshold[s]);
            }
            r = node.child[s - ACL_NODE_SLOTS];
        }
        if r & ACL_REF_LEAF == 0 {
            return None;
        }
        let start = (r & ACL_REF_START) as usize;
        let count = ((r >> ACL_REF_COUNT_SHIFT) & ACL_REF_COUNT).min(ACL_LEAF_MAX) as usize;
        let blocks = count.div_ceil(ACL_LEAF_BLOCK);
        let end = (start + blocks).min(MAX_ACL_LEAF_BLOCKS as usize);
        self.leaf_rules
            .get(start..end.max(start))?
            .iter()
            .flat_map(|block| &block.rule)
            .take(count)
            .filter(|e| {
                (0..2).all(|j| {
                    let value = key.get(usize::from(e.field[j])).copied().unwrap_or(0);
                    e.lo[j] <= value && value <= e.hi[j]
                })
            })
            .find_map(|e| {
                let rule = self.rules.get(e.rule as usize)?;
                (e.rule < MAX_ACL_RULES && rule_matches(rule, key))
                    .then_some((rule.priority, e.rule))
            })
            .filter(|&(priority, _)| priority < limit)
    }

    /// Replays the data plane's verdict for a packet.
    pub fn verdict(&self, key: &AclKey, is_v6: bool) -> AclVerdict {
        match self.classify(key, is_v6) {
            Some(r) if self.rules[r].action == AclVerdict::Drop as u32 => AclVerdict::Drop,
            _ => AclVerdict::Allow,
        }
    }
}

fn rule_matches(rule: &PopAclRule, key: &AclKey) -> bool {
    (0..ACL_FIELDS).all(|f| rule.lo[f] <= key[f] && key[f] <= rule.hi[f])
}

/// Sets the address words `first..first+4` of `rule` to the ranges of `net`
/// (a prefix is the product of one range per 32-bit word).
fn set_prefix(rule: &mut PopAclRule, first: usize, net: &IpNet) {
    match net {
        IpNet::V4(n) => {
            let addr = u32::from(n.network());
            let host = u32::MAX.checked_shr(u32::from(n.prefix_len())).unwrap_or(0);
            rule.lo[first] = addr;
            rule.hi[first] = addr | host;
        }
        IpNet::V6(n) => {
            let addr = u128::from(n.network());
            let len = u32::from(n.prefix_len());
            for word in 0..4u32 {
                let value = (addr >> (96 - 32 * word)) as u32;
                let bits = len.saturating_sub(32 * word).min(32);
                let host = u32::MAX.checked_shr(bits).unwrap_or(0);
                rule.lo[first + word as usize] = value;
                rule.hi[first + word as usize] = value | host;
            }
        }
    }
}

/// Which trees a rule goes into: (IPv4, IPv6).
pub(super) fn families(rule: &ValidAcl) -> (bool, bool) {
    match rule.src.or(rule.dst) {
        Some(IpNet::V4(_)) => (true, false),
        Some(IpNet::V6(_)) => (false, true),
        None => (true, true),
    }
}

/// The fields in which a rule is "large" (a wildcard or nearly): rules of one
/// shape go into one tree. Mixing rules large in different fields is what
/// makes a decision tree blow up (a source-only rule is copied into every
/// branch of a destination split and the reverse); see docs/acl.md.
pub(super) fn shape(rule: &ValidAcl) -> u8 {
    let large_prefix = |net: &Option<IpNet>| match net {
        None => true,
        Some(IpNet::V4(n)) => n.prefix_len() < 16,
        Some(IpNet::V6(n)) => n.prefix_len() < 32,
    };
    let large_ports = |ports: &Option<(u16, u16)>| ports.is_none_or(|(lo, hi)| hi - lo >= 1024);
    u8::from(large_prefix(&rule.src))
        | u8::from(large_prefix(&rule.dst)) << 1
        | u8::from(rule.proto.is_none()) << 2
        | u8::from(large_ports(&rule.src_port)) << 3
        | u8::from(large_ports(&rule.dst_port)) << 4
}

/// Groups rule ids (ascending) by shape, at most [`BASE_TREES`] groups:
/// while there are too many, the smallest group joins the one of the closest
/// shape. Groups come out by ascending first rule.
fn group_by_shape(ids: &[u32], shapes: &[u8]) -> Vec<Vec<u32>> {
    let mut groups: Vec<(u8, Vec<u32>)> = Vec::new();
    for &id in ids {
        let s = shapes[id as usize];
        match groups.iter_mut().find(|(shape, _)| *shape == s) {
            Some((_, members)) => members.push(id),
            None => groups.push((s, vec![id])),
        }
    }
    // Every tree costs a walk per packet: small groups are not worth one.
    let worth_a_tree = (ids.len() / 64).max(MIN_TREE_RULES);
    loop {
        let smallest = (0..groups.len()).min_by_key(|&g| groups[g].1.len());
        let Some(smallest) = smallest.filter(|&g| {
            groups.len() > BASE_TREES || (groups.len() > 1 && groups[g].1.len() < worth_a_tree)
        }) else {
            break;
        };
        let (shape, members) = groups.swap_remove(smallest);
        let target = (0..groups.len())
            .min_by_key(|&g| {
                (
                    (groups[g].0 ^ shape).count_ones(),
                    usize::MAX - groups[g].1.len(),
                )
            })
            .expect("groups left");
        groups[target].1.extend(members);
        groups[target].1.sort_unstable();
    }
    let mut out: Vec<Vec<u32>> = groups.into_iter().map(|(_, members)| members).collect();
    out.sort_by_key(|members| members[0]);
    out
}

pub(super) fn to_rectangle(rule: &ValidAcl, in_ifindex: Option<u32>) -> PopAclRule {
    let mut r = PopAclRule {
        lo: [0; ACL_FIELDS],
        hi: [u32::MAX; ACL_FIELDS],
        action: match rule.action {
            AclAction::Allow => AclVerdict::Allow as u32,
            AclAction::Drop => AclVerdict::Drop as u32,
        },
        priority: rule.priority,
    };
    if let Some(src) = &rule.src {
        set_prefix(&mut r, AclField::Src0 as usize, src);
    }
    if let Some(dst) = &rule.dst {
        set_prefix(&mut r, AclField::Dst0 as usize, dst);
    }
    let mut set = |field: AclField, lo: u32, hi: u32| {
        r.lo[field as usize] = lo;
        r.hi[field as usize] = hi;
    };
    if let Some(proto) = rule.proto {
        set(AclField::Proto, u32::from(proto), u32::from(proto));
    }
    if let Some((lo, hi)) = rule.src_port {
        set(AclField::SrcPort, u32::from(lo), u32::from(hi));
    }
    if let Some((lo, hi)) = rule.dst_port {
        set(AclField::DstPort, u32::from(lo), u32::from(hi));
    }
    if let Some(ifindex) = in_ifindex {
        set(AclField::InIface, ifindex, ifindex);
    }
    r
}

/// The key space of one family: fields a packet of it cannot vary are pinned,
/// so rules cover regions sooner and the tree prunes more.
pub(super) fn universe(is_v6: bool) -> Region {
    let mut region = [(0, u32::MAX); ACL_FIELDS];
    if !is_v6 {
        for word in 1..4 {
            region[AclField::Src0 as usize + word] = (0, 0);
            region[AclField::Dst0 as usize + word] = (0, 0);
        }
    }
    region[AclField::Proto as usize] = (0, 255);
    region[AclField::SrcPort as usize] = (0, ACL_NO_PORT);
    region[AclField::DstPort as usize] = (0, ACL_NO_PORT);
    region[AclField::InIface as usize] = (1, u32::MAX);
    region
}

/// An inner node of the binary tree, before packing into [`PopAclNode`]s.
struct BinNode {
    field: u8,
    threshold: u32,
    /// Refs: a leaf ([`ACL_REF_LEAF`]) or an index into `Builder::bin`.
    left: u32,
    right: u32,
}

pub(super) struct Builder<'a> {
    /// Rules by rank (ascending priority): what `ids` index.
    rules: &'a [PopAclRule],
    /// The slot (index in `acl_rules`) of each rank.
    slots: &'a [u32],
    /// Where this builder's nodes and leaf blocks start in the maps.
    node_base: usize,
    block_base: usize,
    /// Ranks of rules whose cover of a region hid later rules there: a
    /// deletion of one of them must bring those back (`super::incremental`).
    truncators: std::collections::BTreeSet<u32>,
    /// Leaves already emitted, by rule list: equal leaves are shared.
    leaves: std::collections::HashMap<Vec<u32>, u32>,
    /// The binary tree being built.
    bin: Vec<BinNode>,
    nodes: Vec<PopAclNode>,
    leaf_rules: Vec<PopAclLeafBlock>,
    /// Rules in all leaves.
    leaf_refs: usize,
    max_depth: u32,
    max_leaf: usize,
}

/// A candidate split: values `<= threshold` of `field` go left.
#[derive(Clone, Copy)]
struct Split {
    field: usize,
    threshold: u32,
    /// (larger side, both sides together): smaller is better.
    score: (usize, usize),
}

impl<'a> Builder<'a> {
    fn covers(&self, rule: u32, region: &Region) -> bool {
        let r = &self.rules[rule as usize];
        (0..ACL_FIELDS).all(|f| r.lo[f] <= region[f].0 && r.hi[f] >= region[f].1)
    }

    /// The best split of `ids` in `region`: the one whose larger side has the
    /// fewest rules, then the one that copies the fewest rules to both sides.
    fn best_split(&self, ids: &[u32], region: &Region) -> Option<Split> {
        let mut best: Option<Split> = None;
        let mut los = Vec::with_capacity(ids.len());
        let mut his = Vec::with_capacity(ids.len());
        let mut candidates = Vec::with_capacity(2 * ids.len());
        for (field, &(region_lo, region_hi)) in region.iter().enumerate() {
            if region_lo == region_hi {
                continue;
            }
            los.clear();
            his.clear();
            candidates.clear();
            for &id in ids {
                let r = &self.rules[id as usize];
                let lo = r.lo[field].max(region_lo);
                let hi = r.hi[field].min(region_hi);
                los.push(lo);
                his.push(hi);
                if lo > region_lo {
                    candidates.push(lo - 1);
                }
                if hi < region_hi {
                    candidates.push(hi);
                }
            }
            if candidates.is_empty() {
                continue;
            }
            los.sort_unstable();
            his.sort_unstable();
            candidates.sort_unstable();
            candidates.dedup();
            for &t in &candidates {
                let left = los.partition_point(|&lo| lo <= t);
                let right = ids.len() - his.partition_point(|&hi| hi <= t);
                let score = (left.max(right), left + right);
                if best.is_none_or(|b| score < b.score) {
                    best = Some(Split {
                        field,
                        threshold: t,
                        score,
                    });
                }
            }
        }
        best
    }

    fn leaf(&mut self, ids: &[u32], region: &Region, depth: u32) -> Result<u32, String> {
        if ids.len() > ACL_LEAF_MAX as usize {
            return Err(format!(
                "acl: {} rules overlap in one region even at depth {depth}; the data plane \
                 checks at most {ACL_LEAF_MAX} (simplify overlapping rules)",
                ids.len()
            ));
        }
        self.max_depth = self.max_depth.max(depth);
        if let Some(&leaf_ref) = self.leaves.get(ids) {
            return Ok(leaf_ref);
        }
        let start = self.block_base + self.leaf_rules.len();
        let blocks = ids.len().div_ceil(ACL_LEAF_BLOCK);
        if start + blocks > MAX_ACL_LEAF_BLOCKS as usize {
            return Err(format!(
                "acl: the rules compile to more than the maximum of {MAX_ACL_LEAF_BLOCKS} leaf \
                 blocks ({ACL_LEAF_BLOCK} rules each)"
            ));
        }
        let leaf_ref = ACL_REF_LEAF | (ids.len() as u32) << ACL_REF_COUNT_SHIFT | start as u32;
        self.leaves.insert(ids.to_vec(), leaf_ref);
        for chunk in ids.chunks(ACL_LEAF_BLOCK) {
            let mut block = PopAclLeafBlock::default();
            for (entry, &id) in block.rule.iter_mut().zip(chunk) {
                *entry = self.leaf_entry(id, region);
            }
            self.leaf_rules.push(block);
        }
        self.leaf_refs += ids.len();
        self.max_leaf = self.max_leaf.max(ids.len());
        Ok(leaf_ref)
    }

    /// The leaf entry of rule `id` in `region`: the two fields in which the
    /// rule covers the smallest share of the region (most likely to reject a
    /// packet there) go into the entry.
    fn leaf_entry(&self, id: u32, region: &Region) -> PopAclLeafRule {
        let r = &self.rules[id as usize];
        let share = |f: usize| {
            let (lo, hi) = region[f];
            let covered = r.hi[f].min(hi).saturating_sub(r.lo[f].max(lo));
            (f64::from(covered) + 1.0) / (f64::from(hi - lo) + 1.0)
        };
        let mut fields: Vec<usize> = (0..ACL_FIELDS).collect();
        fields.sort_by(|&a, &b| share(a).total_cmp(&share(b)));
        let (f0, f1) = (fields[0], fields[1]);
        PopAclLeafRule {
            rule: self.slots[id as usize],
            field: [f0 as u8, f1 as u8],
            pad: 0,
            lo: [r.lo[f0], r.lo[f1]],
            hi: [r.hi[f0], r.hi[f1]],
        }
    }

    /// Packs the binary subtree at `r` into [`PopAclNode`]s of
    /// [`ACL_NODE_LEVELS`] levels each; the ref of its top.
    fn pack(&mut self, r: u32) -> u32 {
        if r & ACL_REF_LEAF != 0 {
            return r;
        }
        let local = self.nodes.len();
        self.nodes.push(PopAclNode::default());
        let mut node = PopAclNode::default();
        let mut below = [0u32; ACL_NODE_CHILDREN];
        self.fill(&mut node, &mut below, 0, r);
        // Only leaves repeat (padding): every inner subtree is packed once.
        for (child, &b) in node.child.iter_mut().zip(&below) {
            *child = self.pack(b);
        }
        self.nodes[local] = node;
        (self.node_base + local) as u32
    }

    /// Puts the binary subtree at `r` into slot `s` of `node` and below;
    /// what hangs below the last level goes into `below`.
    fn fill(&self, node: &mut PopAclNode, below: &mut [u32; ACL_NODE_CHILDREN], s: usize, r: u32) {
        if s >= ACL_NODE_SLOTS {
            below[s - ACL_NODE_SLOTS] = r;
            return;
        }
        let (left, right) = if r & ACL_REF_LEAF != 0 {
            // Padding: every key goes left, to the leaf.
            node.field[s] = 0;
            node.threshold[s] = u32::MAX;
            (r, r)
        } else {
            let b = &self.bin[r as usize];
            node.field[s] = b.field;
            node.threshold[s] = b.threshold;
            (b.left, b.right)
        };
        self.fill(node, below, 2 * s + 1, left);
        self.fill(node, below, 2 * s + 2, right);
    }

    /// Builds the subtree for `ids` (in priority order) in `region`.
    fn build(&mut self, mut ids: Vec<u32>, region: Region, depth: u32) -> Result<u32, String> {
        // Rules after one that covers the whole region can never be the first match.
        if let Some(first_cover) = ids.iter().position(|&id| self.covers(id, &region)) {
            if first_cover + 1 < ids.len() {
                self.truncators.insert(ids[first_cover]);
            }
            ids.truncate(first_cover + 1);
        }
        if ids.len() <= LEAF_TARGET || depth >= ACL_MAX_DEPTH {
            return self.leaf(&ids, &region, depth);
        }
        let Some(split) = self.best_split(&ids, &region) else {
            return self.leaf(&ids, &region, depth);
        };
        let (f, t) = (split.field, split.threshold);
        let (mut left_region, mut right_region) = (region, region);
        left_region[f].1 = t;
        right_region[f].0 = t + 1;
        let left: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| self.rules[id as usize].lo[f] <= t)
            .collect();
        let right: Vec<u32> = ids
            .into_iter()
            .filter(|&id| self.rules[id as usize].hi[f] > t)
            .collect();
        let left = self.build(left, left_region, depth + 1)?;
        let right = self.build(right, right_region, depth + 1)?;
        let index = self.bin.len() as u32;
        self.bin.push(BinNode {
            field: f as u8,
            threshold: t,
            left,
            right,
        });
        Ok(index)
    }

    /// A builder whose nodes and leaf blocks go at `node_base` and
    /// `block_base` of the maps; `rules` by rank, `slots` their slots.
    pub(super) fn new(
        rules: &'a [PopAclRule],
        slots: &'a [u32],
        node_base: usize,
        block_base: usize,
    ) -> Self {
        Builder {
            rules,
            slots,
            node_base,
            block_base,
            truncators: Default::default(),
            leaves: std::collections::HashMap::new(),
            bin: Vec::new(),
            nodes: Vec::new(),
            leaf_rules: Vec::new(),
            leaf_refs: 0,
            max_depth: 0,
            max_leaf: 0,
        }
    }

    /// One tree over `ids` (ranks, ascending) of one family: its root ref.
    pub(super) fn tree(&mut self, ids: Vec<u32>, is_v6: bool) -> Result<u32, String> {
        self.bin.clear();
        let top = self.build(ids, universe(is_v6), 0)?;
        Ok(self.pack(top))
    }

    /// What was built: nodes and leaf blocks (to go at the bases), and the
    /// ranks of the rules that hid others.
    pub(super) fn finish(
        self,
    ) -> (
        Vec<PopAclNode>,
        Vec<PopAclLeafBlock>,
        std::collections::BTreeSet<u32>,
    ) {
        (self.nodes, self.leaf_rules, self.truncators)
    }

    /// The trees of one family: (root, first rule) per group, the groups'
    /// rules, and the depth.
    #[allow(clippy::type_complexity)]
    fn trees(
        &mut self,
        ids: &[u32],
        shapes: &[u8],
        is_v6: bool,
    ) -> Result<(Vec<(u32, u32)>, Vec<Vec<u32>>, u32), String> {
        self.max_depth = 0;
        let mut trees = Vec::new();
        let groups = group_by_shape(ids, shapes);
        for group in &groups {
            let first = self.rules[group[0] as usize].priority;
            let root = self.tree(group.clone(), is_v6)?;
            trees.push((root, first));
        }
        Ok((trees, groups, self.max_depth))
    }
}

/// Compiles rules (any order; evaluated by ascending priority) for one copy of
/// the ACL maps. `ifindex_of` resolves `in_iface`; a rule whose interface does
/// not exist (yet) can match nothing and is left out.
pub fn compile(
    rules: &[ValidAcl],
    ifindex_of: &dyn Fn(&str) -> Option<u32>,
) -> Result<CompiledAcl, String> {
    let started = Instant::now();
    let mut sorted: Vec<&ValidAcl> = rules.iter().collect();
    sorted.sort_by_key(|r| r.priority);
    if let Some(pair) = sorted.windows(2).find(|w| w[0].priority == w[1].priority) {
        return Err(format!("acl {}: priority listed twice", pair[0].priority));
    }
    if sorted.len() > MAX_ACL_RULES as usize {
        return Err(format!(
            "too many acl rules: {} exceeds the maximum of {MAX_ACL_RULES}",
            sorted.len()
        ));
    }
    let mut rectangles = Vec::with_capacity(sorted.len());
    let mut shapes = Vec::with_capacity(sorted.len());
    let mut family_bits = Vec::with_capacity(sorted.len());
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for rule in sorted {
        if rule.priority == ACL_NO_RULE {
            return Err(format!(
                "acl {}: priority exceeds the maximum of {}",
                rule.priority,
                ACL_NO_RULE - 1
            ));
        }
        let in_ifindex = match &rule.in_iface {
            Some(name) => match ifindex_of(name) {
                Some(ifindex) => Some(ifindex),
                None => continue,
            },
            None => None,
        };
        let id = rectangles.len() as u32;
        rectangles.push(to_rectangle(rule, in_ifindex));
        shapes.push(shape(rule));
        let (is_v4, is_v6) = families(rule);
        family_bits.push(u8::from(is_v4) | u8::from(is_v6) << 1);
        if is_v4 {
            v4.push(id);
        }
        if is_v6 {
            v6.push(id);
        }
    }
    // A full compile puts rank r in slot r; `AclMaps::write_copy` then
    // gives rules that are live already their live slots.
    let slots: Vec<u32> = (0..rectangles.len() as u32).collect();
    let mut builder = Builder::new(&rectangles, &slots, 0, 0);
    let (trees_v4, groups_v4, depth_v4) = builder.trees(&v4, &shapes, false)?;
    let (trees_v6, groups_v6, depth_v6) = builder.trees(&v6, &shapes, true)?;
    let filter = super::filter::build(&rectangles, &groups_v4, &groups_v6);
    let Builder {
        nodes,
        leaf_rules,
        leaf_refs,
        max_leaf,
        truncators,
        ..
    } = builder;
    if nodes.len() > MAX_ACL_NODES as usize {
        return Err(format!(
            "acl: the rules compile to {} tree nodes, more than the maximum of {MAX_ACL_NODES}",
            nodes.len()
        ));
    }
    let stats = AclStats {
        rules: rectangles.len(),
        nodes: nodes.len(),
        leaf_refs,
        leaf_blocks: leaf_rules.len(),
        depth_v4,
        depth_v6,
        trees_v4: trees_v4.len(),
        trees_v6: trees_v6.len(),
        max_leaf,
        map_bytes: rectangles.len() * size_of::<PopAclRule>()
            + nodes.len() * size_of::<PopAclNode>()
            + leaf_rules.len() * size_of::<PopAclLeafBlock>()
            + filter.len(),
        build_time: started.elapsed(),
    };
    let mut meta = PopAclMeta {
        rule_count: rectangles.len() as u32,
        node_count: nodes.len() as u32,
        trees_v4: trees_v4.len() as u32,
        trees_v6: trees_v6.len() as u32,
        ..Default::default()
    };
    for (t, &(root, first)) in trees_v4.iter().enumerate() {
        meta.root_v4[t] = root;
        meta.first_rule_v4[t] = first;
    }
    for (t, &(root, first)) in trees_v6.iter().enumerate() {
        meta.root_v6[t] = root;
        meta.first_rule_v6[t] = first;
    }
    let layout = AclLayout {
        families: family_bits,
        shapes,
        groups_v4,
        groups_v6,
        truncators: truncators.into_iter().collect(),
        base_nodes: nodes.len(),
        base_blocks: leaf_rules.len(),
        delta_v4: Vec::new(),
        delta_v6: Vec::new(),
    };
    Ok(CompiledAcl {
        meta,
        filter,
        rules: rectangles,
        nodes,
        leaf_rules,
        stats,
        layout,
    })
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
