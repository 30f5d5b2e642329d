//! Route records shared by the IPv4 and IPv6 route tables (`fib4_routes`,
//! `fib6_routes`): arrays of [`PopRoute`] (flags and ECMP next hops) that
//! the FIBs' entries point at by id.
//!
//! Records are interned: every route with the same value shares one id,
//! reference-counted by the routes that use it. A new record is written
//! before a FIB entry points at it; a released id is reused only after a
//! grace period (`wait`), so no lookup still holds it.
use std::collections::HashMap;

use aya::maps::{Array, Map, MapData};
use pop_common::{PopRoute, MAX_ECMP};

use super::DataplaneError;

type Key = (u32, u32, [u32; MAX_ECMP]);

pub(super) fn key(r: &PopRoute) -> Key {
    (r.flags, r.nh_count, r.nh_ids)
}

/// Where route records go (an array map, or memory in tests).
pub trait RecordStore {
    /// Records the array holds.
    fn capacity(&self) -> u32;
    /// Record `id`.
    fn get(&self, id: u32) -> PopRoute;
    /// Writes record `id` (no FIB entry points at it yet).
    fn set(&mut self, id: u32, route: &PopRoute) -> Result<(), DataplaneError>;
}

/// A route record array map, with its name for errors.
pub struct RecordArray {
    array: Array<MapData, PopRoute>,
    map: &'static str,
}

impl RecordArray {
    /// Opens the array pinned as `dir/map`.
    pub fn open_pinned(dir: &std::path::Path, map: &'static str) -> Result<Self, DataplaneError> {
        let path = dir.join(map);
        let data = MapData::from_pin(&path).map_err(|e| DataplaneError::Map {
            map,
            reason: format!("opening pin {}: {e}", path.display()),
        })?;
        let array = Map::from_map_data(data)
            .and_then(|m| m.try_into())
            .map_err(super::maps::map_err(map))?;
        Ok(Self { array, map })
    }
}

impl RecordStore for RecordArray {
    fn capacity(&self) -> u32 {
        self.array.len()
    }
    fn get(&self, id: u32) -> PopRoute {
        self.array.get(&id, 0).unwrap_or_default()
    }
    fn set(&mut self, id: u32, route: &PopRoute) -> Result<(), DataplaneError> {
        self.array
            .set(id, *route, 0)
            .map_err(super::maps::map_err(self.map))
    }
}

/// Route records in memory, and how many were written: for tests.
#[cfg(test)]
#[derive(Default)]
pub(super) struct MemoryRecords(pub Vec<PopRoute>, pub usize);

#[cfg(test)]
impl RecordStore for MemoryRecords {
    fn capacity(&self) -> u32 {
        self.0.len() as u32
    }
    fn get(&self, id: u32) -> PopRoute {
        self.0[id as usize]
    }
    fn set(&mut self, id: u32, route: &PopRoute) -> Result<(), DataplaneError> {
        self.0[id as usize] = *route;
        self.1 += 1;
        Ok(())
    }
}

/// Route record ids: values, reference counts, free ids.
#[derive(Default)]
pub(super) struct RecordIds {
    pub(super) by_value: HashMap<Key, u32>,
    pub(super) values: Vec<PopRoute>,
    pub(super) refs: Vec<u32>,
    /// Released and past a grace period: reusable now.
    free: Vec<u32>,
    /// Released; reusable after the next grace period.
    pending: Vec<u32>,
    /// Ids below this were used (or held by adopted tables).
    fresh: u32,
    /// The first id handed out (ids below it mean something else).
    first: u32,
    pub(super) capacity: u32,
    /// The array's name, for [`DataplaneError::MapFull`].
    map: &'static str,
}

impl RecordIds {
    /// Ids `first..capacity` of the array `map`.
    pub(super) fn new(capacity: u32, first: u32, map: &'static str) -> Self {
        Self {
            values: vec![PopRoute::default(); capacity as usize],
            refs: vec![0; capacity as usize],
            capacity,
            first,
            fresh: first,
            map,
            ..Default::default()
        }
    }

    /// Records in use (distinct values).
    pub(super) fn in_use(&self) -> u32 {
        self.by_value.len() as u32
    }

    fn full(&self) -> DataplaneError {
        DataplaneError::MapFull {
            map: self.map,
            max_entries: self.capacity,
        }
    }

    /// The id for `route`, taking a reference; writes a new record first.
    pub(super) fn acquire(
        &mut self,
        route: &PopRoute,
        store: &mut dyn RecordStore,
        wait: &mut dyn FnMut(),
    ) -> Result<u32, DataplaneError> {
        if let Some(&id) = self.by_value.get(&key(route)) {
            self.refs[id as usize] += 1;
            return Ok(id);
        }
        let id = if let Some(id) = self.free.pop() {
            id
        } else if self.fresh < self.capacity {
            self.fresh += 1;
            self.fresh - 1
        } else if !self.pending.is_empty() {
            wait();
            self.free.append(&mut self.pending);
            self.free.pop().expect("pending was not empty")
        } else {
            return Err(self.full());
        };
        if let Err(e) = store.set(id, route) {
            self.free.push(id);
            return Err(e);
        }
        self.values[id as usize] = *route;
        self.refs[id as usize] = 1;
        self.by_value.insert(key(route), id);
        Ok(id)
    }

    /// Points a route at the record for `route` instead of record `old`:
    /// takes the new id (writing the record first), calls `point(id)` to
    /// make the FIB use it, then releases `old`. Nothing changes if `old`
    /// already holds `route`; if `point` fails, the new id is released.
    pub(super) fn replace(
        &mut self,
        old: Option<u32>,
        route: &PopRoute,
        store: &mut dyn RecordStore,
        wait: fn(),
        point: impl FnOnce(u32) -> Result<(), DataplaneError>,
    ) -> Result<(), DataplaneError> {
        if old.is_some_and(|id| key(&self.values[id as usize]) == key(route)) {
            return Ok(());
        }
        let id = self.acquire(route, store, &mut || wait())?;
        if let Err(e) = point(id) {
            self.release(id);
            return Err(e);
        }
        if let Some(old) = old {
            self.release(old);
        }
        Ok(())
    }

    /// Drops a reference; the last one sends the id to the pending list.
    pub(super) fn release(&mut self, id: u32) {
        let n = &mut self.refs[id as usize];
        debug_assert!(
            *n > 0,
            "route record {id} released more often than acquired"
        );
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.by_value.remove(&key(&self.values[id as usize]));
            self.pending.push(id);
        }
    }

    /// Ids for `routes` after a restart. `held[id]`: the adopted tables may
    /// point at record `id`; held records are kept and reused for routes of
    /// the same value, and new values get ids no held answer points at.
    /// Returns each route's prefix with its id (one reference each); call
    /// [`RecordIds::adopted`] once the FIB points where these say.
    pub(super) fn adopt<P>(
        &mut self,
        held: &[bool],
        store: &mut dyn RecordStore,
        routes: impl IntoIterator<Item = (P, PopRoute)>,
    ) -> Result<Vec<(P, u32)>, DataplaneError> {
        for (id, h) in held.iter().enumerate() {
            if *h {
                let v = store.get(id as u32);
                self.values[id] = v;
                self.by_value.entry(key(&v)).or_insert(id as u32);
            }
        }
        let mut want = Vec::new();
        let mut next = self.first;
        for (p, route) in routes {
            let id = match self.by_value.get(&key(&route)) {
                Some(&id) => id,
                None => {
                    while (next as usize) < held.len() && held[next as usize] {
                        next += 1;
                    }
                    if next >= self.capacity {
                        return Err(self.full());
                    }
                    let id = next;
                    next += 1;
                    store.set(id, &route)?;
                    self.values[id as usize] = route;
                    self.by_value.insert(key(&route), id);
                    id
                }
            };
            self.refs[id as usize] += 1;
            want.push((p, id));
        }
        self.fresh = next.max(held.iter().rposition(|h| *h).map_or(0, |i| i as u32 + 1));
        Ok(want)
    }

    /// After [`RecordIds::adopt`]: held ids no route uses now are reusable
    /// after a grace period; ids neither held nor used are free now.
    pub(super) fn adopted(&mut self, held: &[bool]) {
        let refs = &self.refs;
        self.by_value.retain(|_, id| refs[*id as usize] > 0);
        for id in self.first..self.fresh {
            if self.refs[id as usize] == 0 {
                if held[id as usize] {
                    self.pending.push(id);
                } else {
                    self.free.push(id);
                }
            }
        }
        self.free.reverse();
    }
}
