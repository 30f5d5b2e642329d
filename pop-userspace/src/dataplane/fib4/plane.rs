//! A prefix plane (prefix → value, for one kind of answer) and its sweep: the
//! value of the longest matching prefix as a piecewise-constant function over
//! an address range, produced in address order without materializing it.
use std::collections::btree_map::{BTreeMap, Range};
use std::iter::Peekable;

use super::Prefix4;

/// `(addr << 8) | len`: orders prefixes by first address, then by length, so
/// a prefix comes before the prefixes inside it (preorder of the prefix tree).
fn key(addr: u32, len: u8) -> u64 {
    (u64::from(addr) << 8) | u64::from(len)
}

fn unkey(k: u64) -> (u64, u64) {
    let start = k >> 8;
    let len = (k & 0xff) as u32;
    (start, start + (1u64 << (32 - len)) - 1)
}

/// Prefixes of one kind with their values, 12 bytes of payload each.
#[derive(Debug)]
pub(crate) struct Plane<V> {
    map: BTreeMap<u64, V>,
    /// Bit `len` set: some prefix of that length exists (cuts covering lookups
    /// to the lengths in use).
    lengths: u64,
    per_length: [u32; 33],
}

impl<V: Copy> Default for Plane<V> {
    fn default() -> Self {
        Self {
            map: BTreeMap::new(),
            lengths: 0,
            per_length: [0; 33],
        }
    }
}

impl<V: Copy + Eq> Plane<V> {
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn get(&self, p: Prefix4) -> Option<V> {
        self.map.get(&key(p.bits(), p.prefix_len())).copied()
    }

    /// Sets `p` to `value`; returns the value it had.
    pub(crate) fn insert(&mut self, p: Prefix4, value: V) -> Option<V> {
        let old = self.map.insert(key(p.bits(), p.prefix_len()), value);
        if old.is_none() {
            self.per_length[usize::from(p.prefix_len())] += 1;
            self.lengths |= 1 << p.prefix_len();
        }
        old
    }

    /// Removes `p`; returns the value it had.
    pub(crate) fn remove(&mut self, p: Prefix4) -> Option<V> {
        let old = self.map.remove(&key(p.bits(), p.prefix_len()));
        if old.is_some() {
            let n = &mut self.per_length[usize::from(p.prefix_len())];
            *n -= 1;
            if *n == 0 {
                self.lengths &= !(1 << p.prefix_len());
            }
        }
        old
    }

    /// The prefixes containing `addr`, shortest first.
    fn covering(&self, addr: u32) -> impl Iterator<Item = (u64, V)> + '_ {
        (0..=32u8)
            .filter(move |len| self.lengths & (1 << len) != 0)
            .filter_map(move |len| {
                let net = addr & Prefix4::mask(len);
                let k = key(net, len);
                self.map.get(&k).map(|v| (unkey(k).1, *v))
            })
    }

    /// The value of the longest prefix containing `addr`.
    pub(crate) fn lookup(&self, addr: u32) -> Option<V> {
        self.covering(addr).last().map(|(_, v)| v)
    }

    /// Appends to `out` the address ranges of `p` that no strictly longer
    /// prefix of this plane covers: where `p`'s own value is the answer.
    pub(crate) fn exposed(&self, p: Prefix4, out: &mut Vec<(u64, u64)>) {
        let (first, last) = (p.first(), p.last());
        let mut pos = first;
        // Children of p: keys after p's own, up to the last address's /32.
        let mut from = key(p.bits(), p.prefix_len()) + 1;
        let to = key(last as u32, 32);
        while from <= to {
            let Some((&k, _)) = self.map.range(from..=to).next() else {
                break;
            };
            let (start, end) = unkey(k);
            if start > pos {
                out.push((pos, start - 1));
            }
            pos = end + 1;
            // Skip everything inside this child: jump past its last address.
            from = (end + 1) << 8;
        }
        if pos <= last {
            out.push((pos, last));
        }
    }

    /// The longest-match value over `lo..=hi` as breakpoints in address order.
    pub(crate) fn sweep(&self, lo: u64, hi: u64) -> Sweep<'_, V> {
        let stack: Vec<(u64, V)> = self.covering(lo as u32).collect();
        let from = (lo + 1) << 8;
        let to = (hi << 8) | 32;
        Sweep {
            stack,
            prefixes: self.map.range(from..(to + 1).max(from)).peekable(),
            lo,
            hi,
            started: false,
        }
    }
}

/// Breakpoints `(addr, value)` of a plane over a range: from `addr` on, the
/// longest match is `value` (until the next breakpoint). Addresses never
/// decrease; of several at one address the last one holds.
pub(crate) struct Sweep<'a, V> {
    /// Prefixes containing the current position: (last address, value).
    stack: Vec<(u64, V)>,
    prefixes: Peekable<Range<'a, u64, V>>,
    lo: u64,
    hi: u64,
    started: bool,
}

impl<V: Copy> Iterator for Sweep<'_, V> {
    type Item = (u64, Option<V>);

    fn next(&mut self) -> Option<Self::Item> {
        let top = |stack: &Vec<(u64, V)>| stack.last().map(|(_, v)| *v);
        if !self.started {
            self.started = true;
            return Some((self.lo, top(&self.stack)));
        }
        let next_start = self.prefixes.peek().map(|(k, _)| *k >> 8);
        if let Some(&(end, _)) = self.stack.last() {
            let ends_first = match next_start {
                Some(start) => end < start,
                None => end < self.hi,
            };
            if ends_first {
                self.stack.pop();
                return Some((end + 1, top(&self.stack)));
            }
        }
        let (&k, &value) = self.prefixes.next()?;
        let (start, end) = unkey(k);
        self.stack.push((end, value));
        Some((start, Some(value)))
    }
}
