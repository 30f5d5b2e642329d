//! The IPv4 customer prefixes and local addresses of [`super::compile::apply`]:
//! written into fib4 one change at a time ([`crate::dataplane::addr4`]), only
//! where `applied` and `want` differ. Each change leaves every lookup
//! consistent: an address answers its old or its new customer, never none
//! and never another's. A change of several prefixes is not one atomic flip
//! (as the IPv6 customer copies are): each address switches on its own.
//!
//! Order: new and changed entries with the other additions (step 3 of
//! `apply`), removals with the other removals (step 6). A prefix that moves
//! to a shorter or longer one is added before the old one goes, so its
//! addresses never fall to "no customer" in between.
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::Ipv4Net;

use super::compile::Tables;
use super::plane_diff::{changed, gone};
use crate::dataplane::addr4::{LOCAL_BROADCAST, LOCAL_HOST};
use crate::dataplane::{DataplaneError, Maps};

/// `local_v4` as [`Tables`] holds it: the chosen addresses (network order)
/// with their kind, [`LOCAL_HOST`] for the host's own addresses and
/// [`LOCAL_BROADCAST`] for directed broadcasts that are not also one of them.
pub fn local_kinds(
    chosen: &HashSet<u32>,
    host: &[IpAddr],
    broadcasts: &[std::net::Ipv4Addr],
) -> HashMap<u32, u32> {
    let key = |a: &std::net::Ipv4Addr| u32::from_ne_bytes(a.octets());
    let hosts: HashSet<u32> = host
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(a) => Some(key(a)),
            IpAddr::V6(_) => None,
        })
        .collect();
    let broadcasts: HashSet<u32> = broadcasts.iter().map(key).collect();
    chosen
        .iter()
        .map(|a| {
            let kind = if broadcasts.contains(a) && !hosts.contains(a) {
                LOCAL_BROADCAST
            } else {
                LOCAL_HOST
            };
            (*a, kind)
        })
        .collect()
}

/// Step 3: customer prefixes and local addresses that are new or changed.
/// `applied` follows every write, so on error it says what the maps hold.
pub fn write_new(
    maps: &mut Maps,
    applied: &mut Tables,
    want: &Tables,
) -> Result<(), DataplaneError> {
    // Shorter prefixes first, so a block's parent is in before its
    // sub-allocations (fewer entries rewritten twice), and runs repeat.
    for (p, id) in changed(&applied.cust_v4, &want.cust_v4, shorter_first) {
        maps.set_customer_v4(p, *id)?;
        applied.cust_v4.insert(*p, *id);
    }
    for (a, kind) in changed(&applied.local_v4, &want.local_v4, |a| *a) {
        // Not loaded (fib4 full, logged): left out of `applied`, so the next
        // change tries again; the host's addresses never fail a change.
        if maps.set_local_v4(*a, *kind)? {
            applied.local_v4.insert(*a, *kind);
        }
    }
    Ok(())
}

/// Step 6: customer prefixes and local addresses that are gone.
pub fn remove_gone(
    maps: &mut Maps,
    applied: &mut Tables,
    want: &Tables,
) -> Result<(), DataplaneError> {
    // Longest first: sub-allocations go before the block around them.
    for p in gone(&applied.cust_v4, &want.cust_v4, |p| {
        (std::cmp::Reverse(p.prefix_len()), p.network())
    }) {
        maps.del_customer_v4(&p)?;
        applied.cust_v4.remove(&p);
    }
    for a in gone(&applied.local_v4, &want.local_v4, |a| *a) {
        maps.del_local_v4(a)?;
        applied.local_v4.remove(&a);
    }
    Ok(())
}

fn shorter_first(p: &Ipv4Net) -> (u8, std::net::Ipv4Addr) {
    (p.prefix_len(), p.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directed_broadcast_is_marked_unless_it_is_also_a_host_address() {
        let key = |s: &str| u32::from_ne_bytes(s.parse::<std::net::Ipv4Addr>().unwrap().octets());
        let chosen: HashSet<u32> = [key("192.0.2.1"), key("192.0.2.255"), key("10.0.0.1")]
            .into_iter()
            .collect();
        let host = ["192.0.2.1".parse().unwrap(), "10.0.0.1".parse().unwrap()];
        let bcast = ["192.0.2.255".parse().unwrap(), "10.0.0.1".parse().unwrap()];
        let kinds = local_kinds(&chosen, &host, &bcast);
        assert_eq!(kinds[&key("192.0.2.1")], LOCAL_HOST);
        assert_eq!(kinds[&key("192.0.2.255")], LOCAL_BROADCAST);
        assert_eq!(kinds[&key("10.0.0.1")], LOCAL_HOST);
        assert_eq!(kinds.len(), 3);
    }
}
