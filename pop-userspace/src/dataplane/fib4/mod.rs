//! The IPv4 FIB writer: routes, customer prefixes and this host's addresses
//! compiled into one DIR-24-8 table (`pop-ebpf/src/fib4.h`), so the data plane
//! answers all three with one lookup per address.
//!
//! [`Fib4`] keeps three prefix planes (integers in ordered maps, no strings)
//! and applies single changes incrementally: a change recomputes only the
//! addresses of its prefix that no longer prefix of the same plane covers,
//! and writes only the entries whose answer changes there. Answers are
//! interned into `fib4_results` with reference counts; a /24 that needs more
//! than one answer gets a tbl8 group, which is released when the /24 becomes
//! uniform again. A change that needs more groups or records than are free is
//! refused whole with [`Fib4Error::GroupsFull`] / [`Fib4Error::ResultsFull`],
//! and the table is left as it was.
//!
//! Write order (a lookup may run at every instant): a record is written
//! before an entry points at it; a new group is filled before tbl24 points at
//! it; groups and records no entry points at any more are reused only after
//! [`Fib4Backend::wait_for_readers`]. docs/fib.md has the details.
mod backend;
mod desired;
mod mapping;
mod plane;
#[cfg(test)]
mod span_tests;
mod tables;
#[cfg(test)]
pub(crate) mod tests;
mod writer;

use std::fmt;
use std::net::Ipv4Addr;

use pop_common::fib4::{PopFib4Result, FIB4_BLACKHOLE, FIB4_BROADCAST, FIB4_LOCAL, FIB4_ROUTE};
use thiserror::Error;

pub(crate) use backend::{checked, page_round};
pub use backend::{Fib4Backend, MemoryBackend, MmapBackend, TBL24_ENTRIES};
pub(crate) use mapping::Mapping;
pub use writer::{Fib4, Fib4Stats};

/// An IPv4 prefix as integers: network address (host order) and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix4 {
    bits: u32,
    len: u8,
}

impl Prefix4 {
    /// `addr/len`; refused when `len` exceeds 32 or bits below it are set.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, Fib4Error> {
        let bits = u32::from(addr);
        if len > 32 {
            return Err(Fib4Error::PrefixLength { addr, len });
        }
        if bits & !Self::mask(len) != 0 {
            return Err(Fib4Error::HostBits {
                addr,
                len,
                network: Ipv4Addr::from(bits & Self::mask(len)),
            });
        }
        Ok(Self { bits, len })
    }

    /// The /32 of `addr`.
    pub fn host(addr: Ipv4Addr) -> Self {
        Self {
            bits: addr.into(),
            len: 32,
        }
    }

    /// The netmask of a `len`-bit prefix, host order.
    pub fn mask(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        }
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.bits.into()
    }

    /// The network address, host order.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// First address (as u64, so the range arithmetic cannot overflow).
    pub fn first(&self) -> u64 {
        u64::from(self.bits)
    }

    /// Last address.
    pub fn last(&self) -> u64 {
        self.first() + (1u64 << (32 - u32::from(self.len))) - 1
    }
}

impl fmt::Display for Prefix4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}

/// Where a route sends packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteTarget {
    /// To the ECMP group (the route table entry) with this id.
    Group(u32),
    /// Nowhere: the packet is dropped.
    Blackhole,
}

/// What a local address is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LocalKind {
    /// An address of this host.
    Host,
    /// The directed broadcast address of a local subnet.
    Broadcast,
}

/// The answer of the FIB for one address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fib4Answer {
    /// The longest matching route.
    pub route: Option<RouteTarget>,
    /// The customer of the longest matching customer prefix; 0: none.
    pub customer_id: u32,
    /// Whether the address is local (the host's own or a directed broadcast).
    pub local: Option<LocalKind>,
}

impl Fib4Answer {
    /// The record the data plane reads.
    pub fn to_record(&self) -> PopFib4Result {
        let mut r = PopFib4Result {
            customer_id: self.customer_id,
            ..Default::default()
        };
        match self.route {
            Some(RouteTarget::Group(id)) => {
                r.route_id = id;
                r.flags |= FIB4_ROUTE;
            }
            Some(RouteTarget::Blackhole) => r.flags |= FIB4_ROUTE | FIB4_BLACKHOLE,
            None => {}
        }
        match self.local {
            Some(LocalKind::Host) => r.flags |= FIB4_LOCAL,
            Some(LocalKind::Broadcast) => r.flags |= FIB4_BROADCAST,
            None => {}
        }
        r
    }

    /// The answer a record stands for.
    pub fn from_record(r: &PopFib4Result) -> Self {
        let route = match (r.flags & FIB4_ROUTE != 0, r.flags & FIB4_BLACKHOLE != 0) {
            (false, _) => None,
            (true, true) => Some(RouteTarget::Blackhole),
            (true, false) => Some(RouteTarget::Group(r.route_id)),
        };
        let local = if r.flags & FIB4_LOCAL != 0 {
            Some(LocalKind::Host)
        } else if r.flags & FIB4_BROADCAST != 0 {
            Some(LocalKind::Broadcast)
        } else {
            None
        };
        Self {
            route,
            customer_id: r.customer_id,
            local,
        }
    }
}

/// Why a FIB change was refused. Nothing of a refused change is applied.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Fib4Error {
    /// A prefix longer than 32 bits.
    #[error("prefix {addr}/{len}: prefix length {len} exceeds 32")]
    PrefixLength {
        /// The address given.
        addr: Ipv4Addr,
        /// The length given.
        len: u8,
    },
    /// Bits set below the prefix length.
    #[error("prefix {addr}/{len}: host bits set (the network is {network}/{len})")]
    HostBits {
        /// The address given.
        addr: Ipv4Addr,
        /// The length given.
        len: u8,
        /// The address with the host bits cleared.
        network: Ipv4Addr,
    },
    /// Customer id 0 means "no customer" in the table.
    #[error("customer prefix {prefix}: customer id 0 is reserved for \"no customer\"")]
    CustomerIdZero {
        /// The prefix.
        prefix: Prefix4,
    },
    /// The change needs more tbl8 groups than are free.
    #[error(
        "{change}: needs {needed} more /24s split for longer prefixes, but only {free} of \
         {limit} tbl8 groups are free (map fib4_tbl8)"
    )]
    GroupsFull {
        /// The change, e.g. `route 10.0.0.1/32`.
        change: String,
        /// Groups it needs.
        needed: u32,
        /// Groups free.
        free: u32,
        /// Groups the map holds.
        limit: u32,
    },
    /// The change needs more distinct answers than there are free records.
    #[error(
        "{change}: needs at least {needed} more distinct (route, customer, local) answers, but only \
         {free} of {limit} result records are free (map fib4_results)"
    )]
    ResultsFull {
        /// The change.
        change: String,
        /// Records it needs (at least).
        needed: u32,
        /// Records free.
        free: u32,
        /// Records the map holds.
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
