//! IPv4 customer prefixes and this host's IPv4 addresses, as the data plane
//! reads them: in fib4's customer and local planes ([`super::fib4`]), so one
//! lookup per address answers route, customer and local together.
//!
//! Each change is one incremental fib4 change (it writes only the entries
//! whose answer changes, and every lookup sees each entry before or after
//! it). Beside fib4, popd keeps the lists it reads back after a restart:
//! `cust_v4` (prefix → customer) and `local_v4` (address → [`LOCAL_HOST`] or
//! [`LOCAL_BROADCAST`]). The data plane does not read them. As for routes,
//! fib4 is written first and the list after; a refused list insert undoes
//! the fib4 change.
use std::net::Ipv4Addr;

use aya::maps::lpm_trie::LpmTrie;
use aya::maps::{HashMap, MapData};
use ipnet::Ipv4Net;
use pop_common::{maps as names, PopCustomerRef};

use super::fib4::{Fib4Error, LocalKind, Prefix4};
use super::maps::{ignore_missing, key_v4, map_err};
use super::{DataplaneError, Maps};

/// `local_v4` value of an address of this host.
pub const LOCAL_HOST: u32 = 0;
/// `local_v4` value of a directed broadcast address of a local subnet.
pub const LOCAL_BROADCAST: u32 = 1;

/// The kind a `local_v4` value stands for.
pub fn local_kind(value: u32) -> LocalKind {
    if value == LOCAL_BROADCAST {
        LocalKind::Broadcast
    } else {
        LocalKind::Host
    }
}

/// The address a `local_v4` key stands for (the key is in network order).
pub fn local_addr(key: u32) -> Ipv4Addr {
    Ipv4Addr::from(key.to_ne_bytes())
}

/// What the lists `cust_v4` and `local_v4` hold: loaded into fib4 when popd
/// adopts pinned maps ([`super::route4::Routes4::open`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pinned4 {
    /// Customer prefixes and their customer ids.
    pub customers: Vec<(Ipv4Net, u32)>,
    /// Local addresses.
    pub locals: Vec<(Ipv4Addr, LocalKind)>,
}

impl Pinned4 {
    /// Reads the lists.
    pub fn read(
        cust_v4: &LpmTrie<MapData, [u8; 4], PopCustomerRef>,
        local_v4: &HashMap<MapData, u32, u32>,
    ) -> Self {
        let customers = cust_v4
            .iter()
            .flatten()
            .filter(|(_, v)| v.customer_id != 0)
            .filter_map(|(k, v)| {
                let p = Ipv4Net::new(k.data().into(), k.prefix_len() as u8).ok()?;
                Some((p.trunc(), v.customer_id))
            })
            .collect();
        let locals = local_v4
            .iter()
            .flatten()
            .map(|(k, v)| (local_addr(k), local_kind(v)))
            .collect();
        Self { customers, locals }
    }
}

/// A refused customer or local change: the fib4 error names the change, the
/// map and its limit (`customer prefix 10.0.0.0/29: needs 1 more /24s split
/// for longer prefixes, but only 0 of 16384 tbl8 groups are free (map
/// fib4_tbl8)`).
fn refused(e: Fib4Error) -> DataplaneError {
    match e {
        Fib4Error::GroupsFull { .. } => DataplaneError::Map {
            map: names::FIB4_TBL8,
            reason: e.to_string(),
        },
        Fib4Error::ResultsFull { .. } => DataplaneError::Map {
            map: names::FIB4_RESULTS,
            reason: e.to_string(),
        },
        other => super::route4::fib_err(other),
    }
}

fn prefix4(p: &Ipv4Net) -> Result<Prefix4, DataplaneError> {
    Prefix4::new(p.network(), p.prefix_len()).map_err(refused)
}

fn undo(what: &str, r: Result<impl Sized, Fib4Error>) {
    super::maps::undo_fib("fib4", what, r);
}

impl Maps {
    /// Assigns the IPv4 prefix `prefix` to customer `customer_id` (1 or
    /// more). Refused whole when fib4 or `cust_v4` is full.
    pub fn set_customer_v4(
        &mut self,
        prefix: &Ipv4Net,
        customer_id: u32,
    ) -> Result<(), DataplaneError> {
        let p = prefix4(prefix)?;
        let fib = self.routes4.fib_mut();
        let old = fib.customer(p);
        fib.set_customer(p, customer_id).map_err(refused)?;
        let listed = self
            .cust_v4
            .insert(&key_v4(prefix), PopCustomerRef { customer_id }, 0)
            .map_err(map_err(names::CUST_V4));
        if listed.is_err() {
            let fib = self.routes4.fib_mut();
            match old {
                Some(id) => undo(&format!("customer prefix {p}"), fib.set_customer(p, id)),
                None => undo(&format!("customer prefix {p}"), fib.del_customer(p)),
            }
        }
        listed
    }

    /// Removes the IPv4 customer prefix `prefix` (absent is fine).
    pub fn del_customer_v4(&mut self, prefix: &Ipv4Net) -> Result<(), DataplaneError> {
        let p = prefix4(prefix)?;
        self.routes4.fib_mut().del_customer(p).map_err(refused)?;
        ignore_missing(self.cust_v4.remove(&key_v4(prefix))).map_err(map_err(names::CUST_V4))
    }

    /// Declares `key` (an IPv4 address in network order, as in a packet)
    /// local: [`LOCAL_HOST`] or [`LOCAL_BROADCAST`]. Returns false, with a
    /// warning, when fib4 has no room for it (a tbl8 group or a result):
    /// the host's addresses never make a change fail; packets to an address
    /// left out are routed like transit, and the next change tries again.
    pub fn set_local_v4(&mut self, key: u32, value: u32) -> Result<bool, DataplaneError> {
        let addr = local_addr(key);
        let fib = self.routes4.fib_mut();
        let old = fib.local(addr);
        match fib.set_local(addr, local_kind(value)) {
            Ok(()) => {}
            Err(e @ (Fib4Error::GroupsFull { .. } | Fib4Error::ResultsFull { .. })) => {
                tracing::warn!("host address not loaded: {e}");
                return Ok(false);
            }
            Err(e) => return Err(refused(e)),
        }
        let listed = self
            .local_v4
            .insert(key, value, 0)
            .map_err(map_err(names::LOCAL_V4));
        if listed.is_err() {
            let fib = self.routes4.fib_mut();
            match old {
                Some(k) => undo(&format!("local address {addr}"), fib.set_local(addr, k)),
                None => undo(&format!("local address {addr}"), fib.del_local(addr)),
            }
        }
        listed.map(|()| true)
    }

    /// Removes the local IPv4 address `key` (network order; absent is fine).
    pub fn del_local_v4(&mut self, key: u32) -> Result<(), DataplaneError> {
        self.routes4
            .fib_mut()
            .del_local(local_addr(key))
            .map_err(refused)?;
        ignore_missing(self.local_v4.remove(&key)).map_err(map_err(names::LOCAL_V4))
    }
}
