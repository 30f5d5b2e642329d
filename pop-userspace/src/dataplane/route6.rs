//! IPv6 routes as the data plane reads them: the fib6 trie (`fib6_root`,
//! `fib6_nodes`, [`super::fib6`]) answers a route record id, which indexes
//! the route records in `fib6_routes` (`struct pop_route`: flags and the
//! ECMP next hops). Id 0 is "no route".
//!
//! Records are interned as for IPv4 ([`super::route_records`]): a new record
//! is written before the trie points at it, and a record no route uses is
//! reused only after a grace period. [`Routes6::open`] adopts pinned maps
//! (a restarted popd): the pinned entries keep forwarding while it loads the
//! routes popd read back, reusing the records already there.
use std::net::Ipv6Addr;
use std::path::Path;

use ipnet::Ipv6Net;
use pop_common::{maps as names, PopRoute};

use super::fib6::{entry_route, Fib6, Fib6Backend, Fib6Error, Fib6Stats, MmapBackend, Prefix6};
use super::route_records::{RecordArray, RecordIds, RecordStore};
use super::DataplaneError;

/// Route records in use and the limit, for status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Routes6Stats {
    /// The trie's sizes.
    pub fib: Fib6Stats,
    /// Route records in use (distinct route values).
    pub records: u32,
    /// Route records `fib6_routes` holds (id 0 is not used).
    pub record_limit: u32,
}

/// The IPv6 routes of the data plane: the fib6 trie and its route records.
pub struct Routes6<B = MmapBackend, S = RecordArray> {
    fib: Fib6<B>,
    store: S,
    ids: RecordIds,
    wait: fn(),
}

/// A refused fib6 change as the error callers know: a full table is
/// [`DataplaneError::MapFull`] naming the map and its size.
pub fn fib_err(e: Fib6Error) -> DataplaneError {
    tracing::debug!("fib6: {e}");
    match e {
        Fib6Error::NodesFull { limit, .. } | Fib6Error::AdoptionFull { limit, .. } => {
            DataplaneError::MapFull {
                map: names::FIB6_NODES,
                max_entries: limit,
            }
        }
        Fib6Error::Map { map, reason } => DataplaneError::Map { map, reason },
        other => DataplaneError::Map {
            map: names::FIB6_ROOT,
            reason: other.to_string(),
        },
    }
}

fn prefix6(p: &Ipv6Net) -> Result<Prefix6, DataplaneError> {
    Prefix6::new(p.network(), p.prefix_len()).map_err(fib_err)
}

fn open_maps(dir: &Path) -> Result<(MmapBackend, RecordArray), DataplaneError> {
    let backend = MmapBackend::open_pinned(dir).map_err(fib_err)?;
    Ok((backend, RecordArray::open_pinned(dir, names::FIB6_ROUTES)?))
}

impl Routes6 {
    /// Opens the maps pinned in `dir`, which must be fresh (all zero, as a
    /// program load creates them): no adoption scan.
    pub fn open_new(dir: &Path) -> Result<Self, DataplaneError> {
        let (backend, store) = open_maps(dir)?;
        let ids = RecordIds::new(store.capacity(), 1, names::FIB6_ROUTES);
        Ok(Self {
            fib: Fib6::new(backend),
            store,
            ids,
            wait: crate::dataplane::wait_for_readers,
        })
    }

    /// Opens the maps pinned in `dir` and adopts what they hold, then makes
    /// them hold exactly `routes` and `others` (the IPv6 routes, customer
    /// prefixes and local addresses read back from the same pins), writing
    /// only the differences: pinned entries keep forwarding.
    pub fn open(
        dir: &Path,
        routes: impl IntoIterator<Item = (Ipv6Net, PopRoute)>,
        others: super::addr6::Pinned6,
    ) -> Result<Self, DataplaneError> {
        let (backend, store) = open_maps(dir)?;
        Self::adopt_all(
            backend,
            store,
            routes,
            others,
            crate::dataplane::wait_for_readers,
        )
    }
}

impl<B: Fib6Backend, S: RecordStore> Routes6<B, S> {
    /// Adopts filled (or zeroed) tables and records, with routes only (no
    /// customer prefixes or local addresses); see [`Routes6::open`].
    pub fn adopt(
        backend: B,
        store: S,
        routes: impl IntoIterator<Item = (Ipv6Net, PopRoute)>,
        wait: fn(),
    ) -> Result<Self, DataplaneError> {
        Self::adopt_all(backend, store, routes, Default::default(), wait)
    }

    /// Adopts filled (or zeroed) tables and records; see [`Routes6::open`].
    pub fn adopt_all(
        backend: B,
        mut store: S,
        routes: impl IntoIterator<Item = (Ipv6Net, PopRoute)>,
        others: super::addr6::Pinned6,
        wait: fn(),
    ) -> Result<Self, DataplaneError> {
        let capacity = store.capacity();
        let held = Fib6::ids_in_use(&backend, capacity);
        let mut ids = RecordIds::new(capacity, 1, names::FIB6_ROUTES);
        let mut want = Vec::new();
        for (p, id) in ids.adopt(&held, &mut store, routes)? {
            want.push((prefix6(&p.trunc())?, id));
        }
        let mut customers = Vec::new();
        for (p, id) in others.customers {
            customers.push((prefix6(&p.trunc())?, id));
        }
        let mut fib = Fib6::adopt_all(backend, want, customers, others.locals).map_err(fib_err)?;
        // The scan mapped every page of the tables: only what later changes
        // touch needs to stay in this process's RSS.
        fib.backend_mut().unmap();
        ids.adopted(&held);
        Ok(Self {
            fib,
            store,
            ids,
            wait,
        })
    }

    /// The route of exactly `prefix`, as the data plane holds it.
    pub fn get(&self, prefix: &Ipv6Net) -> Option<PopRoute> {
        let id = self.fib.route(prefix6(prefix).ok()?)?;
        Some(self.ids.values[id as usize])
    }

    /// Adds or replaces the route of `prefix`. Refused whole (nothing
    /// changes) when a table is full: [`DataplaneError::MapFull`].
    pub fn set(&mut self, prefix: &Ipv6Net, route: &PopRoute) -> Result<(), DataplaneError> {
        let p = prefix6(prefix)?;
        let old = self.fib.route(p);
        let fib = &mut self.fib;
        self.ids
            .replace(old, route, &mut self.store, self.wait, |id| {
                fib.set_route(p, id).map_err(fib_err)
            })
    }

    /// Removes the route of `prefix` (absent is fine).
    pub fn del(&mut self, prefix: &Ipv6Net) -> Result<(), DataplaneError> {
        let p = prefix6(prefix)?;
        if let Some(id) = self.fib.route(p) {
            self.fib.del_route(p).map_err(fib_err)?;
            self.ids.release(id);
        }
        Ok(())
    }

    /// Sizes and limits now.
    pub fn stats(&self) -> Routes6Stats {
        Routes6Stats {
            fib: self.fib.stats(),
            records: self.ids.in_use(),
            record_limit: self.ids.capacity - 1,
        }
    }

    /// The route the data plane finds for `addr` (the tables, as it reads them).
    pub fn lookup(&self, addr: Ipv6Addr) -> Option<PopRoute> {
        match entry_route(self.fib.lookup(addr)) {
            0 => None,
            id => Some(self.store.get(id)),
        }
    }

    /// The writer (for audits and tests).
    pub fn fib(&self) -> &Fib6<B> {
        &self.fib
    }

    /// The writer, for the customer prefixes and local addresses
    /// ([`super::addr6`]): they share fib6 with the routes.
    pub fn fib_mut(&mut self) -> &mut Fib6<B> {
        &mut self.fib
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::fib6::MemoryBackend;

    use crate::dataplane::route_records::MemoryRecords as Mem;

    fn route(nh: u32) -> PopRoute {
        let mut r = PopRoute {
            nh_count: 1,
            ..Default::default()
        };
        r.nh_ids[0] = nh;
        r
    }

    fn net(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn fresh(records: usize, nodes: u32) -> Routes6<MemoryBackend, Mem> {
        Routes6::adopt(
            MemoryBackend::new(nodes),
            Mem(vec![PopRoute::default(); records], 0),
            [],
            || {},
        )
        .unwrap()
    }

    #[test]
    fn equal_routes_share_a_record_and_lookups_follow_it() {
        let mut r = fresh(4, 64);
        r.set(&net("2001:db8::/32"), &route(1)).unwrap();
        r.set(&net("2001:db9::/32"), &route(1)).unwrap();
        r.set(&net("2001:db8:1::/48"), &route(2)).unwrap();
        assert_eq!(r.stats().records, 2);
        assert_eq!(r.store.1, 2, "one record write per distinct value");
        assert_eq!(r.store.0[0], PopRoute::default(), "record 0 means no route");
        assert_eq!(r.lookup(ip("2001:db8:2::1")), Some(route(1)));
        assert_eq!(r.lookup(ip("2001:db8:1::1")), Some(route(2)));
        assert_eq!(r.lookup(ip("2001:dba::1")), None);
        assert_eq!(r.get(&net("2001:db9::/32")), Some(route(1)));
        r.del(&net("2001:db8:1::/48")).unwrap();
        assert_eq!(r.stats().records, 1);
        assert_eq!(r.lookup(ip("2001:db8:1::1")), Some(route(1)));
        r.del(&net("2001:db8::/32")).unwrap();
        r.del(&net("2001:db8::/32")).unwrap();
        assert_eq!(r.lookup(ip("2001:db8:2::1")), None);
        r.fib().audit().unwrap();
    }

    #[test]
    fn full_tables_refuse_the_route_with_the_map_and_change_nothing() {
        // Records 1..2 (0 is "no route").
        let mut r = fresh(3, 64);
        r.set(&net("2001:db8::/32"), &route(1)).unwrap();
        r.set(&net("2001:db9::/32"), &route(2)).unwrap();
        let e = r.set(&net("2001:db8::/32"), &route(3)).unwrap_err();
        assert_eq!(e.to_string(), "map fib6_routes: full (3 entries)");
        assert_eq!(r.lookup(ip("2001:db8::1")), Some(route(1)));
        r.del(&net("2001:db9::/32")).unwrap();
        r.set(&net("2001:db8::/32"), &route(3)).unwrap();
        assert_eq!(r.lookup(ip("2001:db8::1")), Some(route(3)));

        // 3 nodes: a /32 fits, a /36 beside it does not.
        let mut r = fresh(8, 3);
        r.set(&net("2001:db8::/32"), &route(1)).unwrap();
        let e = r.set(&net("2001:db8:f000::/36"), &route(2)).unwrap_err();
        assert_eq!(e.to_string(), "map fib6_nodes: full (3 entries)");
        assert_eq!(
            r.stats().records,
            1,
            "the refused route's record is released"
        );
        assert_eq!(r.lookup(ip("2001:db8:f000::1")), Some(route(1)));
        r.fib().audit().unwrap();
    }

    #[test]
    fn adopting_filled_tables_keeps_their_records_and_writes_nothing_new() {
        let mut r = fresh(8, 64);
        r.set(&net("2001:db8::/32"), &route(1)).unwrap();
        r.set(&net("2001:db8:1::/48"), &route(2)).unwrap();
        r.set(&net("2001:db8:1::/48"), &route(3)).unwrap();
        let routes = vec![
            (net("2001:db8::/32"), route(1)),
            (net("2001:db8:1::/48"), route(3)),
        ];
        let Routes6 { fib, store, .. } = r;
        let writes = store.1;
        let mut a = Routes6::adopt(fib.into_backend(), store, routes, || {}).unwrap();
        assert_eq!(a.store.1, writes, "records already there are reused");
        assert_eq!(a.lookup(ip("2001:db8:1::1")), Some(route(3)));
        assert_eq!(a.lookup(ip("2001:db8:2::1")), Some(route(1)));
        assert_eq!(a.stats().records, 2);
        // A new value does not overwrite a record the adopted tables use.
        a.set(&net("2001:db9::/32"), &route(4)).unwrap();
        assert_eq!(a.lookup(ip("2001:db8:1::1")), Some(route(3)));
        assert_eq!(a.lookup(ip("2001:db8:2::1")), Some(route(1)));
        assert_eq!(a.lookup(ip("2001:db9::1")), Some(route(4)));
        a.fib().audit().unwrap();
    }
}
