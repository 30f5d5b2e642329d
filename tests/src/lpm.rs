//! The obvious longest-prefix match, the reference the FIB tests compare the
//! data plane with: one hash map per prefix length, searched longest first.
//! Also the length mix of an Internet-shaped IPv4 table.
use std::collections::HashMap;
use std::hash::Hash;

use crate::rng::Rng;

/// An address of `WIDTH` bits, as an integer (first bit the highest).
pub trait Bits: Copy + Eq + Hash + std::ops::BitOr<Output = Self> {
    /// Bits in an address.
    const WIDTH: u8;
    /// The first `len` bits (the rest zero).
    fn mask(self, len: u8) -> Self;
    /// The bits after the first `len`.
    fn host(self, len: u8) -> Self;
}

impl Bits for u32 {
    const WIDTH: u8 = 32;
    fn mask(self, len: u8) -> u32 {
        self & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
    }
    fn host(self, len: u8) -> u32 {
        self & !u32::MAX.mask(len)
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;
    fn mask(self, len: u8) -> u128 {
        self & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
    }
    fn host(self, len: u8) -> u128 {
        self & !u128::MAX.mask(len)
    }
}

/// Prefixes of `K` bits with a value each.
#[derive(Clone, Debug)]
pub struct Lpm<K, V> {
    per_len: Vec<HashMap<K, V>>,
}

impl<K: Bits, V: Copy> Default for Lpm<K, V> {
    fn default() -> Self {
        Lpm {
            per_len: (0..=K::WIDTH).map(|_| HashMap::new()).collect(),
        }
    }
}

impl<K: Bits, V: Copy> Lpm<K, V> {
    /// Sets the prefix `bits/len` (host bits ignored); the old value if any.
    pub fn insert(&mut self, bits: K, len: u8, value: V) -> Option<V> {
        self.per_len[usize::from(len)].insert(bits.mask(len), value)
    }

    /// Removes the prefix `bits/len`; its value if it was there.
    pub fn remove(&mut self, bits: K, len: u8) -> Option<V> {
        self.per_len[usize::from(len)].remove(&bits.mask(len))
    }

    /// Whether the prefix `bits/len` is there.
    pub fn contains(&self, bits: K, len: u8) -> bool {
        self.per_len[usize::from(len)].contains_key(&bits.mask(len))
    }

    /// The longest prefix holding `addr`: its bits, length and value.
    pub fn longest(&self, addr: K) -> Option<(K, u8, V)> {
        (0..=K::WIDTH).rev().find_map(|len| {
            let bits = addr.mask(len);
            self.per_len[usize::from(len)]
                .get(&bits)
                .map(|v| (bits, len, *v))
        })
    }

    /// The value of the longest prefix holding `addr`.
    pub fn get(&self, addr: K) -> Option<V> {
        self.longest(addr).map(|(_, _, v)| v)
    }
}

/// A prefix length drawn as the IPv4 Internet table's are: mostly /24 and
/// /19-/23, few shorter, 0.5% longer than /24 (more-specifics and /32
/// blackholes).
pub fn internet_v4_len(rng: &mut Rng) -> u8 {
    match rng.below(1000) {
        0..=579 => 24,
        580..=679 => 23,
        680..=799 => 22,
        800..=849 => 21,
        850..=889 => 20,
        890..=919 => 19,
        920..=969 => 16 + rng.below(3) as u8,
        970..=994 => 8 + rng.below(8) as u8,
        _ => 25 + rng.below(8) as u8,
    }
}
