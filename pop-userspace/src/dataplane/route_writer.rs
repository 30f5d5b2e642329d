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

    /// Adds or replaces many IPv4 routes (distinct prefixes): what
    /// [`RouteWriter::set_route_v4`] does for each, in order, in fewer
    /// calls. On a refusal the routes before it stay written and it and the
    /// rest are left as they were: the error comes with how many were written.
    fn set_routes_v4(
        &mut self,
        routes: &[(Ipv4Net, PopRoute)],
    ) -> Result<(), (usize, DataplaneError)> {
        for (i, (p, r)) in routes.iter().enumerate() {
            self.set_route_v4(p, r).map_err(|e| (i, e))?;
        }
        Ok(())
    }
}

/// How many entries one BPF_MAP_UPDATE_BATCH of the prefix list carries.
const LIST_BATCH: usize = 4096;

/// The bytes of `v` (plain-data map keys and values, without padding).
fn bytes<T: aya::Pod>(v: &[T]) -> &[u8] {
    // SAFETY: T is plain data (aya::Pod); the slice covers exactly v's memory.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
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

    /// fib4 route by route, then the prefix list `routes_v4` a chunk per
    /// BPF_MAP_UPDATE_BATCH instead of a bpf() call per route (the list's
    /// inserts were about 40% of a 1M-route load). Each route is in fib4
    /// before the list names it, as with [`RouteWriter::set_route_v4`].
    fn set_routes_v4(
        &mut self,
        routes: &[(Ipv4Net, PopRoute)],
    ) -> Result<(), (usize, DataplaneError)> {
        for (c, chunk) in routes.chunks(LIST_BATCH).enumerate() {
            self.set_chunk_v4(chunk)
                .map_err(|(i, e)| (c * LIST_BATCH + i, e))?;
        }
        Ok(())
    }
}

impl Maps {
    /// [`RouteWriter::set_routes_v4`] for one chunk.
    fn set_chunk_v4(
        &mut self,
        chunk: &[(Ipv4Net, PopRoute)],
    ) -> Result<(), (usize, DataplaneError)> {
        let mut old = Vec::with_capacity(chunk.len());
        let mut refused = None;
        for (p, r) in chunk {
            let was = self.routes4.get(p);
            if let Err(e) = self.routes4.set(p, r) {
                refused = Some(e);
                break;
            }
            old.push(was);
        }
        let in_fib = old.len();
        let (listed, list_err) = self.list_v4(&chunk[..in_fib]);
        // The routes in fib4 the list refused go back to what they were.
        for i in (listed..in_fib).rev() {
            let p = &chunk[i].0;
            let undo = match old[i] {
                Some(r) => self.routes4.set(p, &r),
                None => self.routes4.del(p),
            };
            if let Err(e) = undo {
                tracing::error!("route {p}: undoing the fib4 change failed: {e}");
            }
        }
        match (list_err, refused) {
            (Some(e), _) => Err((listed, e)),
            (None, Some(e)) => Err((in_fib, e)),
            (None, None) => Ok(()),
        }
    }

    /// Lists `items` in `routes_v4`, in order: one batch call, then one call
    /// per route for what the batch did not write (a kernel without batch
    /// updates for the map type, or a full map, whose error the single
    /// insert names). Returns how many were listed, and the refusal.
    fn list_v4(&mut self, items: &[(Ipv4Net, PopRoute)]) -> (usize, Option<DataplaneError>) {
        use aya::maps::IterableMap;
        use std::os::fd::AsFd;
        if items.is_empty() {
            return (0, None);
        }
        let keys: Vec<_> = items.iter().map(|(p, _)| key_v4(p)).collect();
        let values: Vec<PopRoute> = items.iter().map(|(_, r)| *r).collect();
        let fd = self.routes_v4.map().fd().as_fd();
        let (written, batch) =
            super::link::map_update_batch(fd, bytes(&keys), bytes(&values), items.len() as u32);
        let mut listed = written as usize;
        if let Err(e) = batch {
            tracing::debug!("routes_v4: batch update stopped after {listed}: {e}");
        }
        for (p, r) in &items[listed..] {
            if let Err(e) = self
                .routes_v4
                .insert(&key_v4(p), *r, 0)
                .map_err(insert_err(names::ROUTES_V4, MAX_ROUTES_V4))
            {
                return (listed, Some(e));
            }
            listed += 1;
        }
        (listed, None)
    }
}
