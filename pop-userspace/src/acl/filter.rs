//! The ACL's first stage (map `acl_filter`, `acl_trees_to_skip` in
//! `pop-ebpf/src/acl.h`): before walking the trees of its family, a packet
//! looks up one cell per filter field (source, destination, protocol,
//! destination port) and skips every tree that some cell rules out. A tree
//! is ruled out in a cell when none of its rules reaches that cell, so the
//! filter never hides a match: it only spares walks that could not find one.
//!
//! A cell is 16 bits of the key value ([`cell`]): the top half of an IPv4
//! address (a /16), bits 16-31 of an IPv6 address's first word (where /32
//! allocations differ), the whole protocol or port. Rules of different shapes
//! sit in different trees and usually in different cells (bogon sources,
//! customer destinations, TCP-only services), so a packet walks the few trees
//! whose rules could apply to it instead of all of them.
use pop_common::{AclField, PopAclRule, ACL_FILTER_BYTES, ACL_FILTER_CELLS, ACL_FILTER_FIELDS};

use super::tree::AclKey;

/// The key field behind filter field `f`.
pub fn key_field(f: usize) -> usize {
    [
        AclField::Src0,
        AclField::Dst0,
        AclField::Proto,
        AclField::DstPort,
    ][f] as usize
}

/// How far a key value of filter field `f` is shifted before its low 16 bits
/// make the cell: IPv4 addresses keep their top half.
fn shift(f: usize, is_v6: bool) -> u32 {
    if f < 2 && !is_v6 {
        16
    } else {
        0
    }
}

/// The cell of `value` in filter field `f`.
pub fn cell(f: usize, is_v6: bool, value: u32) -> usize {
    ((value >> shift(f, is_v6)) as usize) & (ACL_FILTER_CELLS - 1)
}

/// Index in [`pop_common::PopAclFilter::skip`] of `cell` of field `f`.
pub fn index(is_v6: bool, f: usize, cell: usize) -> usize {
    (usize::from(is_v6) * ACL_FILTER_FIELDS + f) * ACL_FILTER_CELLS + cell
}

pub use crate::dataplane::acl::filter_value as as_value;

/// The cells a tree's rules reach in one field, one bit per cell.
struct Cells(Vec<u64>);

impl Cells {
    fn new() -> Self {
        Cells(vec![0; ACL_FILTER_CELLS / 64])
    }

    fn set_range(&mut self, lo: usize, hi: usize) {
        for word in lo / 64..=hi / 64 {
            let from = if word == lo / 64 { lo % 64 } else { 0 };
            let to = if word == hi / 64 { hi % 64 } else { 63 };
            self.0[word] |= (u64::MAX >> (63 - (to - from))) << from;
        }
    }

    /// Adds the cells of the range `lo..=hi` of key values; true when that
    /// is every cell.
    fn add(&mut self, f: usize, is_v6: bool, lo: u32, hi: u32) -> bool {
        let s = shift(f, is_v6);
        let (a, b) = (lo >> s, hi >> s);
        if b - a >= (ACL_FILTER_CELLS - 1) as u32 {
            self.0.fill(u64::MAX);
            return true;
        }
        let (ca, cb) = (cell(f, is_v6, lo), cell(f, is_v6, hi));
        if ca <= cb {
            self.set_range(ca, cb);
        } else {
            // The range wraps around the cell space (cells keep low bits).
            self.set_range(ca, ACL_FILTER_CELLS - 1);
            self.set_range(0, cb);
        }
        false
    }

    fn has(&self, cell: usize) -> bool {
        self.0[cell / 64] >> (cell % 64) & 1 != 0
    }
}

/// The filter of one copy ([`pop_common::PopAclFilter::skip`]): for each family's trees
/// (rule ids per tree, in the order of `acl_meta`'s roots), the cells each
/// tree cannot match.
pub fn build(rules: &[PopAclRule], trees_v4: &[Vec<u32>], trees_v6: &[Vec<u32>]) -> Vec<u8> {
    let mut out = vec![0u8; ACL_FILTER_BYTES];
    for (is_v6, trees) in [(false, trees_v4), (true, trees_v6)] {
        for (t, members) in trees.iter().enumerate() {
            mark_tree(&mut out, rules, members, is_v6, t);
        }
    }
    out
}

/// Sets bit `t` (tree `t` of the family) in every cell that none of
/// `members` (indexes into `rules`) reaches, and clears it elsewhere.
pub fn mark_tree(out: &mut [u8], rules: &[PopAclRule], members: &[u32], is_v6: bool, t: usize) {
    let bit = 1u8 << t;
    for f in 0..ACL_FILTER_FIELDS {
        let field = key_field(f);
        let mut cells = Cells::new();
        for &id in members {
            let r = &rules[id as usize];
            if cells.add(f, is_v6, r.lo[field], r.hi[field]) {
                break;
            }
        }
        for c in 0..ACL_FILTER_CELLS {
            let byte = &mut out[index(is_v6, f, c)];
            if cells.has(c) {
                *byte &= !bit;
            } else {
                *byte |= bit;
            }
        }
    }
}

/// `acl_trees_to_skip`: the trees of the family that `key` need not walk
/// (bit t = tree t). An empty filter skips nothing.
pub fn trees_to_skip(filter: &[u8], key: &AclKey, is_v6: bool) -> u32 {
    if filter.len() != ACL_FILTER_BYTES {
        return 0;
    }
    (0..ACL_FILTER_FIELDS)
        .map(|f| u32::from(filter[index(is_v6, f, cell(f, is_v6, key[key_field(f)]))]))
        .fold(0, |skip, cells| skip | cells)
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
