//! Configured routes into the maps: one entry per changed route, through
//! [`RouteWriter`] (the data plane's route tables, whatever their layout).
//!
//! A configured route that goes is replaced by the learned route for the same
//! prefix when there is one. A batch of changes that fails half-way is undone
//! entry by entry before the error is returned, so the maps hold the old
//! routes exactly.
//!
//! A whole table ([`reconcile`], [`replace`]) is written in prefix order,
//! address then length (the order of [`ConfiguredRoutes`]' sorted maps):
//! fib6 then lays out the new trie nodes depth-first, as for learned routes
//! (`super::learned`).
use ipnet::{IpNet, Ipv4Net};
use pop_common::PopRoute;

use super::learned::LearnedRoutes;
use crate::config::routes::{ConfiguredRoutes, Hops};
use crate::dataplane::route_writer::RouteWriter;
use crate::dataplane::{DataplaneError, Maps};
use crate::state::Ids;

/// The route record the data plane holds for a route via `hops`: the
/// next-hop ids of `ids` in gateway order (a gateway without an id is left
/// out; [`super::compile::assign_ids`] and [`super::desired::route_add`]
/// give every configured gateway one).
pub fn record(hops: &Hops, ids: &Ids) -> PopRoute {
    let mut route = PopRoute::default();
    for via in &hops.via {
        let Some(&id) = ids
            .nexthops
            .get(&super::compile::nexthop_key(&hops.dev, via))
        else {
            continue;
        };
        if (route.nh_count as usize) < route.nh_ids.len() {
            route.nh_ids[route.nh_count as usize] = id;
            route.nh_count += 1;
        }
    }
    route
}

/// Writes the route for `prefix`.
pub fn set(
    w: &mut dyn RouteWriter,
    prefix: &IpNet,
    route: &PopRoute,
) -> Result<(), DataplaneError> {
    match prefix {
        IpNet::V4(p) => w.set_route_v4(p, route),
        IpNet::V6(p) => w.set_route_v6(p, route),
    }
}

/// Removes the configured route for `prefix`: the learned route for it takes
/// its place, if there is one.
pub fn remove(
    w: &mut dyn RouteWriter,
    prefix: &IpNet,
    learned: &mut LearnedRoutes,
) -> Result<(), DataplaneError> {
    match prefix {
        IpNet::V4(p) => match learned.fallback_v4(p) {
            Some(r) => w.set_route_v4(p, &r),
            None => w.del_route_v4(p),
        },
        IpNet::V6(p) => match learned.fallback_v6(p) {
            Some(r) => w.set_route_v6(p, &r),
            None => w.del_route_v6(p),
        },
    }
}

/// Makes `prefix` hold `hops` (under `ids`), or what it holds without a
/// configured route.
pub fn put(
    w: &mut dyn RouteWriter,
    prefix: &IpNet,
    hops: Option<&Hops>,
    ids: &Ids,
    learned: &mut LearnedRoutes,
) -> Result<(), DataplaneError> {
    match hops {
        Some(h) => set(w, prefix, &record(h, ids)),
        None => remove(w, prefix, learned),
    }
}

/// The route record of each next-hop set, computed once per set (a table
/// has few sets and many routes).
struct Records<'a> {
    ids: &'a Ids,
    seen: std::collections::HashMap<*const Hops, PopRoute>,
}

impl<'a> Records<'a> {
    fn new(ids: &'a Ids) -> Self {
        Self {
            ids,
            seen: std::collections::HashMap::new(),
        }
    }

    fn of(&mut self, hops: &Hops) -> PopRoute {
        *self
            .seen
            .entry(hops as *const Hops)
            .or_insert_with(|| record(hops, self.ids))
    }
}

/// What the maps hold for `prefix`.
fn read(maps: &Maps, prefix: &IpNet) -> Option<PopRoute> {
    match prefix {
        IpNet::V4(p) => maps.routes4.get(p),
        IpNet::V6(p) => maps.routes6.get(p),
    }
}

/// After a restart: writes every configured route the pinned maps do not
/// hold as `routes` says (a read per route, a write only where it differs).
pub fn reconcile(
    maps: &mut Maps,
    routes: &ConfiguredRoutes,
    ids: &Ids,
) -> Result<(), DataplaneError> {
    let mut records = Records::new(ids);
    for (p, hops) in routes.iter() {
        let want = records.of(hops);
        if read(maps, &p) != Some(want) {
            set(maps, &p, &want)?;
        }
    }
    Ok(())
}

/// A change that writes at least this many routes writes its IPv4 routes
/// [`BULK`] at a time ([`RouteWriter::set_routes_v4`]); smaller ones, a
/// route at a time.
const BULK_MIN: usize = 64;
/// IPv4 routes per [`RouteWriter::set_routes_v4`] call.
const BULK: usize = 4096;

/// Writes `buf` and empties it; what was written goes to `done`.
fn flush_v4(
    w: &mut dyn RouteWriter,
    buf: &mut Vec<(Ipv4Net, PopRoute)>,
    done: &mut Vec<IpNet>,
) -> Result<(), DataplaneError> {
    let r = w.set_routes_v4(buf);
    let written = match &r {
        Ok(()) => buf.len(),
        Err((n, _)) => *n,
    };
    done.extend(buf[..written].iter().map(|(p, _)| IpNet::V4(*p)));
    buf.clear();
    r.map_err(|(_, e)| e)
}

/// Turns the maps' configured routes from `old` (under `old_ids`) into `new`
/// (under `new_ids`), writing only the routes that differ. On error, what
/// was written is put back and the error returned.
pub fn replace(
    w: &mut dyn RouteWriter,
    (old, old_ids): (&ConfiguredRoutes, &Ids),
    (new, new_ids): (&ConfiguredRoutes, &Ids),
    learned: &mut LearnedRoutes,
) -> Result<(), DataplaneError> {
    let delta = old.delta(new);
    let mut done: Vec<IpNet> = Vec::with_capacity(delta.write.len() + delta.remove.len());
    let mut result = Ok(());
    let mut records = Records::new(new_ids);
    let bulk = delta.write.len() >= BULK_MIN;
    let mut v4 = Vec::with_capacity(if bulk { BULK } else { 0 });
    for (p, hops) in &delta.write {
        let route = records.of(hops);
        match p {
            IpNet::V4(p4) if bulk => {
                v4.push((*p4, route));
                if v4.len() == BULK {
                    result = flush_v4(w, &mut v4, &mut done);
                }
            }
            _ => {
                result = set(w, p, &route);
                if result.is_ok() {
                    done.push(*p);
                }
            }
        }
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() && !v4.is_empty() {
        result = flush_v4(w, &mut v4, &mut done);
    }
    if result.is_ok() {
        for p in &delta.remove {
            result = remove(w, p, learned);
            if result.is_err() {
                break;
            }
            done.push(*p);
        }
    }
    if result.is_err() {
        for p in done {
            if let Err(e) = put(w, &p, old.get(&p), old_ids, learned) {
                tracing::error!("route {p}: putting the old route back failed: {e}");
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ipnet::Ipv6Net;
    use pop_common::PopNexthop;

    use super::*;
    use crate::daemon::learned::Pinned;

    /// Route tables of a chosen IPv4 capacity; counts the bulk calls.
    #[derive(Default)]
    struct Tables {
        cap: usize,
        v4: HashMap<Ipv4Net, PopRoute>,
        bulk_calls: usize,
    }

    impl RouteWriter for Tables {
        fn set_route_v4(&mut self, p: &Ipv4Net, r: &PopRoute) -> Result<(), DataplaneError> {
            if !self.v4.contains_key(p) && self.v4.len() >= self.cap {
                return Err(DataplaneError::MapFull {
                    map: "routes_v4",
                    max_entries: self.cap as u32,
                });
            }
            self.v4.insert(*p, *r);
            Ok(())
        }
        fn del_route_v4(&mut self, p: &Ipv4Net) -> Result<(), DataplaneError> {
            self.v4.remove(p);
            Ok(())
        }
        fn set_route_v6(&mut self, _: &Ipv6Net, _: &PopRoute) -> Result<(), DataplaneError> {
            Ok(())
        }
        fn del_route_v6(&mut self, _: &Ipv6Net) -> Result<(), DataplaneError> {
            Ok(())
        }
        fn set_nexthop(&mut self, _: u32, _: &PopNexthop) -> Result<(), DataplaneError> {
            Ok(())
        }
        fn set_routes_v4(
            &mut self,
            routes: &[(Ipv4Net, PopRoute)],
        ) -> Result<(), (usize, DataplaneError)> {
            self.bulk_calls += 1;
            for (i, (p, r)) in routes.iter().enumerate() {
                self.set_route_v4(p, r).map_err(|e| (i, e))?;
            }
            Ok(())
        }
    }

    /// `n` /24s from 10.0.0.0 via `gw` on eth0, and the ids of both gateways.
    fn table(n: u32, gw: &str) -> ConfiguredRoutes {
        let mut t = ConfiguredRoutes::default();
        for i in 0..n {
            let p = Ipv4Net::new((0x0a00_0000 + (i << 8)).into(), 24).unwrap();
            let hops = Hops {
                dev: "eth0".into(),
                via: vec![gw.parse().unwrap()],
            };
            t.insert(IpNet::V4(p), hops);
        }
        t
    }

    fn ids() -> Ids {
        let mut ids = Ids::default();
        ids.nexthops.insert("eth0 192.0.2.1".into(), 1);
        ids.nexthops.insert("eth0 192.0.2.2".into(), 2);
        ids
    }

    #[test]
    fn a_large_change_writes_in_bulk_and_a_refusal_puts_every_route_back() {
        let ids = ids();
        let mut learned = LearnedRoutes::new(Pinned::default());
        let empty = ConfiguredRoutes::default();
        let old = table(6000, "192.0.2.1");
        let mut maps = Tables {
            cap: 10_000,
            ..Default::default()
        };
        replace(&mut maps, (&empty, &ids), (&old, &ids), &mut learned).unwrap();
        assert_eq!(maps.v4.len(), 6000);
        assert_eq!(maps.bulk_calls, 2, "6000 routes in chunks of {BULK}");
        let before = maps.v4.clone();

        // 9000 routes: the 6000 change gateway, 3000 are new, and the map
        // holds 8000. The 8001st is refused, in the second chunk.
        maps.cap = 8000;
        let new = table(9000, "192.0.2.2");
        let e = replace(&mut maps, (&old, &ids), (&new, &ids), &mut learned).unwrap_err();
        assert_eq!(e.to_string(), "map routes_v4: full (8000 entries)");
        assert_eq!(maps.v4, before, "every route is as before the change");

        // A change of one route still goes route by route.
        let mut one = old.clone();
        one.insert(
            "10.255.0.0/24".parse().unwrap(),
            Hops {
                dev: "eth0".into(),
                via: vec!["192.0.2.1".parse().unwrap()],
            },
        );
        let calls = maps.bulk_calls;
        replace(&mut maps, (&old, &ids), (&one, &ids), &mut learned).unwrap();
        assert_eq!(maps.bulk_calls, calls);
        assert_eq!(maps.v4.len(), 6001);
    }
}
