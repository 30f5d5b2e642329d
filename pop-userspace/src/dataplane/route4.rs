//! IPv4 routes as the data plane reads them: the fib4 tables
//! (`fib4_tbl24`, `fib4_tbl8`, `fib4_results`, one lookup per address,
//! [`super::fib4`]) answer a route id, which indexes the route records in
//! `fib4_routes` (`struct pop_route`: flags and the ECMP next hops).
//!
//! Route records are interned: every route with the same [`PopRoute`] value
//! shares one id, reference-counted by the routes that use it. Write order,
//! so that a lookup running at any instant sees a complete route:
//! - a new record is written before the fib4 entries point at it;
//! - a record no route uses any more is released after the fib4 change that
//!   stopped pointing at it, and its id is reused only after a grace period
//!   ([`crate::dataplane::wait_for_readers`]): no lookup still holds it.
//!
//! [`Routes4::open`] adopts pinned maps (a restarted popd): the pinned
//! entries keep forwarding while it loads the routes popd read back, reusing
//! the records already there, and writes only the differences.
use std::path::Path;

use ipnet::Ipv4Net;
use pop_common::fib4::{FIB4_BLACKHOLE, FIB4_ROUTE};
use pop_common::{maps as names, PopRoute};

use super::fib4::{
    Fib4, Fib4Backend, Fib4Error, Fib4Stats, LocalKind, MmapBackend, Prefix4, RouteTarget,
};
use super::route_records::{RecordArray, RecordIds, RecordStore};
use super::DataplaneError;

/// Route records in use and the limit, for status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Routes4Stats {
    /// The fib4 writer's sizes.
    pub fib: Fib4Stats,
    /// Route records in use (distinct route values).
    pub records: u32,
    /// Route records `fib4_routes` holds.
    pub record_limit: u32,
}

/// The IPv4 routes of the data plane: fib4 and its route records.
pub struct Routes4<B = MmapBackend, S = RecordArray> {
    fib: Fib4<B>,
    store: S,
    ids: RecordIds,
    wait: fn(),
}

/// A refused fib4 change as the error callers know: a full table is
/// [`DataplaneError::MapFull`] naming the map and its size.
pub fn fib_err(e: Fib4Error) -> DataplaneError {
    tracing::debug!("fib4: {e}");
    match e {
        Fib4Error::GroupsFull { limit, .. } => DataplaneError::MapFull {
            map: names::FIB4_TBL8,
            max_entries: limit,
        },
        Fib4Error::ResultsFull { limit, .. } => DataplaneError::MapFull {
            map: names::FIB4_RESULTS,
            max_entries: limit,
        },
        Fib4Error::Map { map, reason } => DataplaneError::Map { map, reason },
        other => DataplaneError::Map {
            map: names::FIB4_TBL24,
            reason: other.to_string(),
        },
    }
}

fn prefix4(p: &Ipv4Net) -> Result<Prefix4, DataplaneError> {
    Prefix4::new(p.network(), p.prefix_len()).map_err(fib_err)
}

fn open_maps(dir: &Path) -> Result<(MmapBackend, RecordArray), DataplaneError> {
    let backend = MmapBackend::open_pinned(dir).map_err(fib_err)?;
    Ok((backend, RecordArray::open_pinned(dir, names::FIB4_ROUTES)?))
}

impl Routes4 {
    /// Opens the maps pinned in `dir`, which must be fresh (all zero, as a
    /// program load creates them): no adoption scan.
    pub fn open_new(dir: &Path) -> Result<Self, DataplaneError> {
        let (backend, store) = open_maps(dir)?;
        let ids = RecordIds::new(store.capacity(), 0, names::FIB4_ROUTES);
        Ok(Self {
            fib: Fib4::new(backend),
            store,
            ids,
            wait: crate::dataplane::wait_for_readers,
        })
    }

    /// Opens the maps pinned in `dir` and adopts what they hold, then makes
    /// them hold exactly `routes` and `others` (the IPv4 routes, customer
    /// prefixes and local addresses read back from the same pins), writing
    /// only the differences: pinned entries keep forwarding.
    pub fn open(
        dir: &Path,
        routes: impl IntoIterator<Item = (Ipv4Net, PopRoute)>,
        others: super::addr4::Pinned4,
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

impl<B: Fib4Backend, S: RecordStore> Routes4<B, S> {
    /// Adopts filled (or zeroed) tables and records, with routes only (no
    /// customer prefixes or local addresses); see [`Routes4::open`].
    pub fn adopt(
        backend: B,
        store: S,
        routes: impl IntoIterator<Item = (Ipv4Net, PopRoute)>,
        wait: fn(),
    ) -> Result<Self, DataplaneError> {
        Self::adopt_all(backend, store, routes, Default::default(), wait)
    }

    /// Adopts filled (or zeroed) tables and records; see [`Routes4::open`].
    pub fn adopt_all(
        backend: B,
        mut store: S,
        routes: impl IntoIterator<Item = (Ipv4Net, PopRoute)>,
        others: super::addr4::Pinned4,
        wait: fn(),
    ) -> Result<Self, DataplaneError> {
        let fib = Fib4::adopt(backend);
        let capacity = store.capacity();
        let mut ids = RecordIds::new(capacity, 0, names::FIB4_ROUTES);
        // Ids the adopted tables may point at: kept, and reused for routes of
        // the same value, so that the load below changes nothing there.
        let mut held = vec![false; capacity as usize];
        for i in 0..fib.backend().result_capacity() {
            let r = fib.backend().result(i);
            if r.flags & (FIB4_ROUTE | FIB4_BLACKHOLE) == FIB4_ROUTE && r.route_id < capacity {
                held[r.route_id as usize] = true;
            }
        }
        let mut want = Vec::new();
        for (p, id) in ids.adopt(&held, &mut store, routes)? {
            want.push((prefix4(&p.trunc())?, RouteTarget::Group(id)));
        }
        let mut fib = fib;
        let customers = others
            .customers
            .iter()
            .map(|(p, id)| Ok((prefix4(&p.trunc())?, *id)))
            .collect::<Result<Vec<_>, DataplaneError>>()?;
        let locals: Vec<(std::net::Ipv4Addr, LocalKind)> = others.locals;
        fib.replace_all(want, customers, locals).map_err(fib_err)?;
        // The scan mapped every page of the tables: only what later changes
        // touch needs to stay in this process's RSS.
        fib.unmap();
        ids.adopted(&held);
        Ok(Self {
            fib,
            store,
            ids,
            wait,
        })
    }

    /// The route of exactly `prefix`, as the data plane holds it.
    pub fn get(&self, prefix: &Ipv4Net) -> Option<PopRoute> {
        let p = prefix4(prefix).ok()?;
        match self.fib.route(p)? {
            RouteTarget::Group(id) => Some(self.ids.values[id as usize]),
            RouteTarget::Blackhole => None,
        }
    }

    /// Adds or replaces the route of `prefix`. Refused whole (nothing
    /// changes) when a table is full: [`DataplaneError::MapFull`].
    pub fn set(&mut self, prefix: &Ipv4Net, route: &PopRoute) -> Result<(), DataplaneError> {
        let p = prefix4(prefix)?;
        let old = match self.fib.route(p) {
            Some(RouteTarget::Group(id)) => Some(id),
            _ => None,
        };
        let fib = &mut self.fib;
        self.ids
            .replace(old, route, &mut self.store, self.wait, |id| {
                fib.set_route(p, RouteTarget::Group(id)).map_err(fib_err)
            })
    }

    /// Removes the route of `prefix` (absent is fine).
    pub fn del(&mut self, prefix: &Ipv4Net) -> Result<(), DataplaneError> {
        let p = prefix4(prefix)?;
        let old = self.fib.route(p);
        if old.is_none() {
            return Ok(());
        }
        self.fib.del_route(p).map_err(fib_err)?;
        if let Some(RouteTarget::Group(id)) = old {
            self.ids.release(id);
        }
        Ok(())
    }

    /// Sizes and limits now.
    pub fn stats(&self) -> Routes4Stats {
        Routes4Stats {
            fib: self.fib.stats(),
            records: self.ids.in_use(),
            record_limit: self.ids.capacity,
        }
    }

    /// The route the data plane finds for `addr` (the tables, as it reads them).
    pub fn lookup(&self, addr: std::net::Ipv4Addr) -> Option<PopRoute> {
        match self.fib.lookup(addr).route? {
            RouteTarget::Group(id) => Some(self.store.get(id)),
            RouteTarget::Blackhole => None,
        }
    }

    /// The writer (for audits and tests).
    pub fn fib(&self) -> &Fib4<B> {
        &self.fib
    }

    /// The writer, for the customer prefixes and local addresses
    /// ([`super::addr4`]); routes go through [`Routes4::set`].
    pub fn fib_mut(&mut self) -> &mut Fib4<B> {
        &mut self.fib
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::fib4::MemoryBackend;

    use crate::dataplane::route_records::MemoryRecords as Mem;

    fn route(nh: u32) -> PopRoute {
        let mut r = PopRoute {
            nh_count: 1,
            ..Default::default()
        };
        r.nh_ids[0] = nh;
        r
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn fresh(records: usize) -> Routes4<MemoryBackend, Mem> {
        Routes4::adopt(
            MemoryBackend::new(16, 64),
            Mem(vec![PopRoute::default(); records], 0),
            [],
            || {},
        )
        .unwrap()
    }

    #[test]
    fn equal_routes_share_a_record_and_lookups_follow_it() {
        let mut r = fresh(4);
        r.set(&net("10.0.0.0/8"), &route(1)).unwrap();
        r.set(&net("11.0.0.0/8"), &route(1)).unwrap();
        r.set(&net("10.1.2.0/24"), &route(2)).unwrap();
        assert_eq!(r.stats().records, 2);
        assert_eq!(r.store.1, 2, "one record write per distinct value");
        assert_eq!(r.lookup("10.9.9.9".parse().unwrap()), Some(route(1)));
        assert_eq!(r.lookup("10.1.2.3".parse().unwrap()), Some(route(2)));
        assert_eq!(r.lookup("12.0.0.1".parse().unwrap()), None);
        assert_eq!(r.get(&net("11.0.0.0/8")), Some(route(1)));
        r.del(&net("10.1.2.0/24")).unwrap();
        assert_eq!(r.stats().records, 1);
        assert_eq!(r.lookup("10.1.2.3".parse().unwrap()), Some(route(1)));
        r.del(&net("10.0.0.0/8")).unwrap();
        r.del(&net("10.0.0.0/8")).unwrap();
        assert_eq!(r.lookup("10.9.9.9".parse().unwrap()), None);
        r.fib().audit().unwrap();
    }

    #[test]
    fn a_full_record_array_refuses_the_route_and_changes_nothing() {
        let mut r = fresh(2);
        r.set(&net("10.0.0.0/8"), &route(1)).unwrap();
        r.set(&net("11.0.0.0/8"), &route(2)).unwrap();
        let e = r.set(&net("10.0.0.0/8"), &route(3)).unwrap_err();
        assert!(
            matches!(
                e,
                DataplaneError::MapFull {
                    map: "fib4_routes",
                    max_entries: 2
                }
            ),
            "{e}"
        );
        assert_eq!(e.to_string(), "map fib4_routes: full (2 entries)");
        assert_eq!(r.lookup("10.0.0.1".parse().unwrap()), Some(route(1)));
        // Freed records are reused (after the grace period).
        r.del(&net("11.0.0.0/8")).unwrap();
        r.set(&net("10.0.0.0/8"), &route(3)).unwrap();
        assert_eq!(r.lookup("10.0.0.1".parse().unwrap()), Some(route(3)));
        r.fib().audit().unwrap();
    }

    #[test]
    fn a_full_fib_is_refused_with_the_map_and_its_limit() {
        let mut r = fresh(8);
        // 16 groups: the 17th split /24 does not fit.
        for i in 0..16u32 {
            r.set(&net(&format!("10.0.{i}.0/25")), &route(1)).unwrap();
        }
        let e = r.set(&net("10.0.99.0/25"), &route(2)).unwrap_err();
        assert_eq!(e.to_string(), "map fib4_tbl8: full (16 entries)");
        assert_eq!(
            r.stats().records,
            1,
            "the refused route's record is released"
        );
        assert_eq!(r.lookup("10.0.99.1".parse().unwrap()), None);
    }

    #[test]
    fn adopting_filled_tables_keeps_their_records_and_writes_nothing_new() {
        let mut r = fresh(8);
        r.set(&net("10.0.0.0/8"), &route(1)).unwrap();
        r.set(&net("10.1.0.0/16"), &route(2)).unwrap();
        r.set(&net("10.1.0.0/16"), &route(3)).unwrap();
        let routes = vec![
            (net("10.0.0.0/8"), route(1)),
            (net("10.1.0.0/16"), route(3)),
        ];
        let Routes4 { fib, store, .. } = r;
        let writes = store.1;
        let backend = fib.into_backend();
        let mut a = Routes4::adopt(backend, store, routes, || {}).unwrap();
        assert_eq!(a.store.1, writes, "records already there are reused");
        assert_eq!(a.lookup("10.1.0.1".parse().unwrap()), Some(route(3)));
        assert_eq!(a.lookup("10.2.0.1".parse().unwrap()), Some(route(1)));
        assert_eq!(a.stats().records, 2);
        // A new value does not overwrite a record the adopted tables use.
        a.set(&net("12.0.0.0/8"), &route(4)).unwrap();
        assert_eq!(a.lookup("10.1.0.1".parse().unwrap()), Some(route(3)));
        assert_eq!(a.lookup("10.2.0.1".parse().unwrap()), Some(route(1)));
        assert_eq!(a.lookup("12.0.0.1".parse().unwrap()), Some(route(4)));
        a.fib().audit().unwrap();
    }
}
