//! The IPv6 FIB writer: routes, customer prefixes and local addresses
//! compiled into a multibit trie in BPF array maps (`pop-ebpf/src/fib6.h`):
//! a root of one entry per /20 and nodes of 16 entries, each deciding 4 more
//! bits, whose entries hold the answer (route record id, customer id, local
//! flag) for their addresses.
//! A lookup costs one load per 4 bits of the longest prefix on the
//! address's path, whatever the table's size.
//!
//! [`Fib6`] keeps the routes (integers in one hash map per length) and the
//! prefix length behind every entry, and applies single changes
//! incrementally: a route writes only the entries its prefix spans at its
//! own level and the entries of nodes below them that no longer prefix
//! covers. A node no longer needed (all its entries one route's) is folded
//! back into its parent entry. A change that needs more nodes than are free
//! is refused whole with [`Fib6Error::NodesFull`], the table unchanged.
//!
//! Write order (a lookup may run at every instant): a new node is filled
//! before an entry points at it; a node no entry points at any more is reused
//! only after [`Fib6Backend::wait_for_readers`]. docs/fib.md has the details.
mod backend;
#[cfg(test)]
mod tests;
mod writer;

use std::fmt;
use std::net::Ipv6Addr;

use thiserror::Error;

pub use backend::{Fib6Backend, MemoryBackend, MmapBackend, ROOT_ENTRIES};
pub use writer::{entry_customer, entry_local, entry_route, Fib6, Fib6Stats};

/// An IPv6 prefix as integers: network address (host order) and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix6 {
    bits: u128,
    len: u8,
}

impl Prefix6 {
    /// `addr/len`; refused when `len` exceeds 128 or bits below it are set.
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Self, Fib6Error> {
        let bits = u128::from(addr);
        if len > 128 {
            return Err(Fib6Error::PrefixLength { addr, len });
        }
        if bits & !Self::mask(len) != 0 {
            return Err(Fib6Error::HostBits {
                addr,
                len,
                network: Ipv6Addr::from(bits & Self::mask(len)),
            });
        }
        Ok(Self { bits, len })
    }

    /// The netmask of a `len`-bit prefix, host order.
    pub fn mask(len: u8) -> u128 {
        if len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(len))
        }
    }

    /// The network address.
    pub fn addr(&self) -> Ipv6Addr {
        self.bits.into()
    }

    /// The network address, host order.
    pub fn bits(&self) -> u128 {
        self.bits
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }
}

impl fmt::Display for Prefix6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}

/// Why a FIB change was refused. Nothing of a refused change is applied.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Fib6Error {
    /// A prefix longer than 128 bits.
    #[error("prefix {addr}/{len}: prefix length {len} exceeds 128")]
    PrefixLength {
        /// The address given.
        addr: Ipv6Addr,
        /// The length given.
        len: u8,
    },
    /// Bits set below the prefix length.
    #[error("prefix {addr}/{len}: host bits set (the network is {network}/{len})")]
    HostBits {
        /// The address given.
        addr: Ipv6Addr,
        /// The length given.
        len: u8,
        /// The address with the host bits cleared.
        network: Ipv6Addr,
    },
    /// Record id 0 means "no route" in the table, and an entry holds 16 bits
    /// of it.
    #[error("route {prefix}: record id {id} is not in 1..65535")]
    RecordId {
        /// The prefix.
        prefix: Prefix6,
        /// The id given.
        id: u32,
    },
    /// Customer id 0 means "no customer", and an entry holds 14 bits of it.
    #[error("customer prefix {prefix}: customer id {id} is not in 1..16383")]
    CustomerId {
        /// The prefix.
        prefix: Prefix6,
        /// The id given.
        id: u32,
    },
    /// The change needs more trie nodes than are free.
    #[error(
        "{what} {prefix}: needs {needed} more trie nodes, but only {free} of {limit} are free \
         (map fib6_nodes)"
    )]
    NodesFull {
        /// What the prefix is: `route`, `customer prefix`, `local address`.
        what: &'static str,
        /// The change's prefix.
        prefix: Prefix6,
        /// Nodes it needs.
        needed: u32,
        /// Nodes free.
        free: u32,
        /// Nodes the map holds.
        limit: u32,
    },
    /// Adopting pinned tables: the nodes of the wanted trie that differ do
    /// not fit beside the pinned ones (both are needed until the switch).
    #[error(
        "adopting the pinned trie: the routes need {needed} new trie nodes beside the ones in \
         use, but only {free} of {limit} are free (map fib6_nodes)"
    )]
    AdoptionFull {
        /// New nodes the merge needs.
        needed: u32,
        /// Nodes the pinned trie does not use.
        free: u32,
        /// Nodes the map holds.
        limit: u32,
    },
    /// A map is not what the FIB expects, or cannot be mapped.
    #[error("map {map}: {reason}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What is wrong.
        reason: String,
    },
}
