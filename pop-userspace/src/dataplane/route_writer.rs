//! The one way routes and next hops get into the data plane. Both configured
//! routes (`daemon::compile::apply`) and routes learned from the kernel
//! (`daemon::learned`) write through [`RouteWriter`], so the route tables'
//! layout can change behind it without touching either. IPv4 routes go to
//! fib4 and its route records (`super::route4`), listed by prefix in the
//! `routes_v4` LPM trie; IPv6 routes to fib6 and its route records
//! (`super::route6`), listed by prefix in the `routes_v6` LPM trie.
use aya::maps::MapError;
use ipnet::{Ipv4Net, Ipv6Net};
use pop_common::{maps as names, PopNexthop, PopRoute, MAX_ROUTES_V4, MAX_ROUTES_V6};

use super::maps::{ignore_missing, key_v4, key_v6, map_err};
use super::{DataplaneError, Maps};

/// Writes single route and next-hop entries.
pub trait RouteWriter {
    /// Adds or replaces the IPv4 route for `prefix`.
    fn set_route_v4(&mut self, prefix: &Ipv4Net, route: &PopRoute) -> Result<(), DataplaneError>;
    /// Removes the IPv4 route for `prefix` (absent is fine).
    fn del_route_v4(&mut self, prefix: &Ipv4Net) -> Result<(), DataplaneError>;
    /// Adds or replaces the IPv6 route for `prefix`.
    fn set_route_v6(&mut self, prefix: &Ipv6Net, route: &PopRoute) -> Result<(), DataplaneError>;
    /// Removes the IPv6 route for `prefix` (absent is fine).
    fn del_route_v6(&mut self, prefix: &Ipv6Net) -> Result<(), DataplaneError>;
    /// Writes next hop `id` (a zeroed value frees the slot).
    fn set_nexthop(&mut self, id: u32, nexthop: &PopNexthop) -> Result<(), DataplaneError>;
}

fn errno(e: &MapError) -> Option<i32> {
    match e {
        MapError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    }
}

/// A failed insert into a table at capacity is [`DataplaneError::MapFull`].
fn insert_err(map: &'static str, max_entries: u32) -> impl Fn(MapError) -> DataplaneError {
    move |e| match errno(&e) {
        Some(libc::ENOSPC) | Some(libc::E2BIG) => DataplaneError::MapFull { map, max_entries },
        _ => map_err(map)(e),
    }
}

/// Calls `each` for every route entry pinned in `maps_dir` (its own handles:
/// no lock on the controller's maps is needed while a full table is read).
pub fn read_routes(
    maps_dir: &std::path::Path,
    mut each: impl FnMut(ipnet::IpNet, PopRoute),
) -> Result<(), DataplaneError> {
    use aya::maps::lpm_trie::LpmTrie;
    use aya::maps::{Map, MapData};
    let open = |name: &'static str| -> Result<Map, DataplaneError> {
        let data = MapData::from_pin(maps_dir.join(name)).map_err(|e| DataplaneError::Map {
            map: name,
            reason: e.to_string(),
        })?;
        Map::from_map_data(data).map_err(map_err(name))
    };
    let v4: LpmTrie<MapData, [u8; 4], PopRoute> = open(names::ROUTES_V4)?
        .try_into()
        .map_err(map_err(names::ROUTES_V4))?;
    for (k, v) in v4.iter().flatten() {
        if let Ok(p) = Ipv4Net::new(k.data().into(), k.prefix_len() as u8) {
            each(ipnet::IpNet::V4(p), v);
        }
    }
    let v6: LpmTrie<MapData, [u8; 16], PopRoute> = open(names::ROUTES_V6)?
        .try_into()
        .map_err(map_err(names::ROUTES_V6))?;
    for (k, v) in v6.iter().flatten() {
        if let Ok(p) = Ipv6Net::new(k.data().into(), k.prefix_len() as u8) {
            each(ipnet::IpNet::V6(p), v);
        }
    }
    Ok(())
}

impl RouteWriter for Maps {
    /// The data plane's IPv4 table (fib4 and its route record) first, then
    /// the prefix list `routes_v4`; a refusal of either leaves both as they were.
    fn set_route_v4(&mut self, prefix: &Ipv4Net, route: &PopRoute) -> Result<(), DataplaneError> {
        let old = self.routes4.get(prefix);
        self.routes4.set(prefix, route)?;
        let listed = self
            .routes_v4
            .insert(&key_v4(prefix), *route, 0)
            .map_err(insert_err(names::ROUTES_V4, MAX_ROUTES_V4));
        if listed.is_err() {
            let undo = match old {
                Some(r) => self.routes4.set(prefix, &r),
                None => self.routes4.del(prefix),
            };
            if let Err(e) = undo {
                tracing::error!("route {prefix}: undoing the fib4 change failed: {e}");
            }
        }
        listed
    }

    fn del_route_v4(&mut self, prefix: &Ipv4Net) -> Result<(), DataplaneError> {
        self.routes4.del(prefix)?;
        ignore_missing(self.routes_v4.remove(&key_v4(prefix))).map_err(map_err(names::ROUTES_V4))
    }

    /// The data plane's IPv6 table (fib6 and its route record) first, then
    /// the prefix list `routes_v6`; a refusal of either leaves both as they were.
    fn set_route_v6(&mut self, prefix: &Ipv6Net, route: &PopRoute) -> Result<(), DataplaneError> {
        let old = self.routes6.get(prefix);
        self.routes6.set(prefix, route)?;
        let listed = self
            .routes_v6
            .insert(&key_v6(prefix), *route, 0)
            .map_err(insert_err(names::ROUTES_V6, MAX_ROUTES_V6));
        if listed.is_err() {
            let undo = match old {
                Some(r) => self.routes6.set(prefix, &r),
                None => self.routes6.del(prefix),
            };
            if let Err(e) = undo {
                tracing::error!("route {prefix}: undoing the fib6 change failed: {e}");
            }
        }
        listed
    }

    fn del_route_v6(&mut self, prefix: &Ipv6Net) -> Result<(), DataplaneError> {
        self.routes6.del(prefix)?;
        ignore_missing(self.routes_v6.remove(&key_v6(prefix))).map_err(map_err(names::ROUTES_V6))
    }

    fn set_nexthop(&mut self, id: u32, nexthop: &PopNexthop) -> Result<(), DataplaneError> {
        self.nexthops
            .set(id, *nexthop, 0)
            .map_err(map_err(names::NEXTHOPS))
    }
}
