//! IPv6 customer prefixes and this host's IPv6 addresses, as the data plane
//! reads them: in fib6's entries beside the routes ([`super::fib6`]), so one
//! walk per address answers route, customer and local together.
//!
//! Each change is one incremental fib6 change (it writes only the entries
//! whose answer changes, and every lookup sees each entry before or after
//! it). Beside fib6, popd keeps the lists it reads back after a restart:
//! `cust_v6` (prefix → customer) and `local_v6` (the addresses). The data
//! plane does not read them. As for routes, fib6 is written first and the
//! list after; a refused list insert undoes the fib6 change. `cust_v6_1`, the
//! second copy of the old double-buffered customer tables, is neither written
//! nor read (it stays in the object so that the pinned layout does not
//! change), except that a popd restarting on maps whose live copy was 1
//! reads the list there once.
use std::net::Ipv6Addr;

use aya::maps::lpm_trie::LpmTrie;
use aya::maps::{HashMap, MapData};
use ipnet::Ipv6Net;
use pop_common::{maps as names, PopCustomerRef, PopLocalV6};

use super::fib6::{Fib6Error, Prefix6};
use super::maps::{ignore_missing, key_v6, map_err};
use super::{DataplaneError, Maps};

/// What the lists `cust_v6` and `local_v6` hold: loaded into fib6 when popd
/// adopts pinned maps ([`super::route6::Routes6::open`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pinned6 {
    /// Customer prefixes and their customer ids.
    pub customers: Vec<(Ipv6Net, u32)>,
    /// Local addresses.
    pub locals: Vec<Ipv6Addr>,
}

impl Pinned6 {
    /// Reads the lists (`cust_v6`: the live copy, see the module docs).
    pub fn read(
        cust_v6: &LpmTrie<MapData, [u8; 16], PopCustomerRef>,
        local_v6: &HashMap<MapData, PopLocalV6, u32>,
    ) -> Self {
        let customers = cust_v6
            .iter()
            .flatten()
            .filter(|(_, v)| v.customer_id != 0)
            .filter_map(|(k, v)| {
                let p = Ipv6Net::new(k.data().into(), k.prefix_len() as u8).ok()?;
                Some((p.trunc(), v.customer_id))
            })
            .collect();
        let locals = local_v6
            .keys()
            .flatten()
            .map(|k| Ipv6Addr::from(k.addr))
            .collect();
        Self { customers, locals }
    }
}

/// A refused customer or local change: the fib6 error names the change, the
/// map and its limit (`customer prefix 2001:db8::/48: needs 3 more trie
/// nodes, but only 1 of 786432 are free (map fib6_nodes)`).
fn refused(e: Fib6Error) -> DataplaneError {
    match e {
        Fib6Error::NodesFull { .. } => DataplaneError::Map {
            map: names::FIB6_NODES,
            reason: e.to_string(),
        },
        other => super::route6::fib_err(other),
    }
}

fn prefix6(p: &Ipv6Net) -> Result<Prefix6, DataplaneError> {
    Prefix6::new(p.network(), p.prefix_len()).map_err(refused)
}

fn undo(what: &str, r: Result<impl Sized, Fib6Error>) {
    super::maps::undo_fib("fib6", what, r);
}

impl Maps {
    /// Assigns the IPv6 prefix `prefix` to customer `customer_id` (1 or
    /// more). Refused whole when fib6 or `cust_v6` is full.
    pub fn set_customer_v6(
        &mut self,
        prefix: &Ipv6Net,
        customer_id: u32,
    ) -> Result<(), DataplaneError> {
        let p = prefix6(prefix)?;
        let fib = self.routes6.fib_mut();
        let old = fib.customer(p);
        fib.set_customer(p, customer_id).map_err(refused)?;
        let listed = self
            .cust_v6
            .insert(&key_v6(prefix), PopCustomerRef { customer_id }, 0)
            .map_err(map_err(names::CUST_V6));
        if listed.is_err() {
            let fib = self.routes6.fib_mut();
            match old {
                Some(id) => undo(&format!("customer prefix {p}"), fib.set_customer(p, id)),
                None => undo(&format!("customer prefix {p}"), fib.del_customer(p)),
            }
        }
        listed
    }

    /// Removes the IPv6 customer prefix `prefix` (absent is fine).
    pub fn del_customer_v6(&mut self, prefix: &Ipv6Net) -> Result<(), DataplaneError> {
        let p = prefix6(prefix)?;
        self.routes6.fib_mut().del_customer(p).map_err(refused)?;
        ignore_missing(self.cust_v6.remove(&key_v6(prefix))).map_err(map_err(names::CUST_V6))
    }

    /// Declares `addr` (network order, as in a packet) an address of this
    /// host. Returns false, with a warning, when fib6 has no room for it (the
    /// trie nodes down to its /128): the host's addresses never make a
    /// change fail; packets to an address left out are routed like transit,
    /// and the next change tries again.
    pub fn set_local_v6(&mut self, addr: [u8; 16]) -> Result<bool, DataplaneError> {
        let a = Ipv6Addr::from(addr);
        match self.routes6.fib_mut().set_local(a) {
            Ok(()) => {}
            Err(e @ Fib6Error::NodesFull { .. }) => {
                tracing::warn!("host address not loaded: {e}");
                return Ok(false);
            }
            Err(e) => return Err(refused(e)),
        }
        let listed = self
            .local_v6
            .insert(PopLocalV6 { addr }, 0, 0)
            .map_err(map_err(names::LOCAL_V6));
        if listed.is_err() {
            undo(
                &format!("local address {a}"),
                self.routes6.fib_mut().del_local(a),
            );
        }
        listed.map(|()| true)
    }

    /// Removes the local IPv6 address `addr` (absent is fine).
    pub fn del_local_v6(&mut self, addr: [u8; 16]) -> Result<(), DataplaneError> {
        self.routes6
            .fib_mut()
            .del_local(Ipv6Addr::from(addr))
            .map_err(refused)?;
        ignore_missing(self.local_v6.remove(&PopLocalV6 { addr })).map_err(map_err(names::LOCAL_V6))
    }
}
