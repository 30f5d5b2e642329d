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
use super::plane_diff::{changed, gone};
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
    for (p, id) in changed(&applied.cust_v6, &want.cust_v6, shorter_first) {
        maps.set_customer_v6(p, *id)?;
        applied.cust_v6.insert(*p, *id);
    }
    let mut new: Vec<[u8; 16]> = want
        .local_v6
        .difference(&applied.local_v6)
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
    // Longest first: sub-allocations go before the block around them.
    for p in gone(&applied.cust_v6, &want.cust_v6, |p| {
        (std::cmp::Reverse(p.prefix_len()), p.network())
    }) {
        maps.del_customer_v6(&p)?;
        applied.cust_v6.remove(&p);
    }
    let mut gone: Vec<[u8; 16]> = applied
        .local_v6
        .difference(&want.local_v6)
        .copied()
        .collect();
    gone.sort_unstable();
    for a in gone {
        maps.del_local_v6(a)?;
        applied.local_v6.remove(&a);
    }
    Ok(())
}

fn shorter_first(p: &Ipv6Net) -> (u8, std::net::Ipv6Addr) {
    (p.prefix_len(), p.network())
}
