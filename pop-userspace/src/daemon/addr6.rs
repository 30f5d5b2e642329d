//! The IPv6 customer prefixes and local addresses of [`super::compile::apply`]:
//! written into fib6 one change at a time ([`crate::dataplane::addr6`]), only
//! where `applied` and `want` differ, as [`super::addr4`] does for IPv4. Each
//! change leaves every lookup consistent: an address answers its old or its
//! new customer, never none and never another's.
//!
//! Order: new and changed entries with the other additions (step 3 of
//! `apply`), removals with the other removals (step 7). A prefix that moves
//! to a shorter or longer one is added before the old one goes, so its
//! addresses never fall to "no customer" in between.
use ipnet::Ipv6Net;

use super::compile::Tables;
use crate::dataplane::{DataplaneError, Maps};

/// Step 3: customer prefixes and local addresses that are new or changed.
/// `applied` follows every write, so on error it says what the maps hold.
pub fn write_new(
    maps: &mut Maps,
    applied: &mut Tables,
    want: &Tables,
) -> Result<(), DataplaneError> {
    // Shorter prefixes first: a block's parent is in before its
    // sub-allocations (fewer entries rewritten twice).
    let mut changed: Vec<(&Ipv6Net, &u32)> = want
        .cust_v6
        .iter()
        .filter(|(p, id)| applied.cust_v6.get(p) != Some(id))
        .collect();
    changed.sort_unstable_by_key(|(p, _)| (p.prefix_len(), p.network()));
    for (p, id) in changed {
        maps.set_customer_v6(p, *id)?;
        applied.cust_v6.insert(*p, *id);
    }
    let mut new: Vec<[u8; 16]> = want
        .local_v6
        .iter()
        .filter(|a| !applied.local_v6.contains(*a))
        .copied()
        .collect();
    new.sort_unstable();
    for a in new {
        // Not loaded (fib6 full, logged): left out of `applied`, so the next
        // change tries again; the host's addresses never fail a change.
        if maps.set_local_v6(a)? {
            applied.local_v6.insert(a);
        }
    }
    Ok(())
}

/// Step 7: customer prefixes and local addresses that are gone.
pub fn remove_gone(
    maps: &mut Maps,
    applied: &mut Tables,
    want: &Tables,
) -> Result<(), DataplaneError> {
    let mut gone: Vec<Ipv6Net> = applied
        .cust_v6
        .keys()
        .filter(|p| !want.cust_v6.contains_key(p))
        .copied()
        .collect();
    // Longest first: sub-allocations go before the block around them.
    gone.sort_unstable_by_key(|p| (std::cmp::Reverse(p.prefix_len()), p.network()));
    for p in gone {
        maps.del_customer_v6(&p)?;
        applied.cust_v6.remove(&p);
    }
    let mut gone: Vec<[u8; 16]> = applied
        .local_v6
        .iter()
        .filter(|a| !want.local_v6.contains(*a))
        .copied()
        .collect();
    gone.sort_unstable();
    for a in gone {
        maps.del_local_v6(a)?;
        applied.local_v6.remove(&a);
    }
    Ok(())
}
