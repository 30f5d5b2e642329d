//! The interface records: every one in the hash `ifaces`, and those whose
//! ifindex is below [`IFACES_BY_INDEX`] also in the per-CPU array
//! `ifaces_by_index`, which the data plane finds by index (cheaper per packet
//! than a hash lookup). An array element holds an interface only with
//! [`IFACE_PRESENT`] set; one without it sends the data plane to the hash, so
//! the two answer the same for every ifindex as long as every array element
//! with the flag equals its hash entry (plus the flag).
//!
//! A packet may read an element while popd writes it, and the kernel copies
//! the value word by word in no promised order, so a write must never mix
//! two records under the flag. Every write changes either the flag alone
//! (the other words rewritten with their own values) or the other words
//! alone (with the flag clear before and after). A change is therefore: the
//! flag cleared (packets go to the hash, which still holds the old record),
//! the hash written, the new record written without the flag, then the flag
//! set. A removal clears the flag before the hash entry goes. The writes go
//! through `IfaceStore`, so the tests below can record them and check
//! this order.
use aya::maps::PerCpuValues;
use pop_common::{maps as names, PopIface, IFACES_BY_INDEX, IFACE_PRESENT};

use super::maps::{ignore_missing, is_missing, map_err, Maps};
use super::DataplaneError;

/// Whether `ifindex` has an element in `ifaces_by_index` (element 0 is the
/// data plane's scratch copy, no interface has ifindex 0).
pub fn indexed(ifindex: u32) -> bool {
    (1..IFACES_BY_INDEX).contains(&ifindex)
}

/// The array element for a record (`None`: no interface, all zero).
pub fn indexed_value(iface: Option<PopIface>) -> PopIface {
    iface
        .map(|mut v| {
            v.flags |= IFACE_PRESENT;
            v
        })
        .unwrap_or_default()
}

/// The map operations the record writes are made of: [`Maps`] does them on
/// the pinned maps, a test records them to check their order.
trait IfaceStore {
    /// Writes `iface` as `ifindex`'s entry of the hash `ifaces`.
    fn insert_hash(&mut self, ifindex: u32, iface: PopIface) -> Result<(), DataplaneError>;
    /// Removes `ifindex`'s entry of `ifaces` (absent is fine).
    fn remove_hash(&mut self, ifindex: u32) -> Result<(), DataplaneError>;
    /// Every CPU's value of element `ifindex` (an [`indexed`] one) of
    /// `ifaces_by_index`; `None` when there is no array.
    fn read_element(&self, ifindex: u32) -> Result<Option<Vec<PopIface>>, DataplaneError>;
    /// How many values (CPUs) an element has; `None` when there is no array.
    fn element_cpus(&self) -> Result<Option<usize>, DataplaneError>;
    /// Writes element `ifindex` of `ifaces_by_index` (one value per CPU).
    fn write_element(&mut self, ifindex: u32, values: Vec<PopIface>) -> Result<(), DataplaneError>;
}

impl IfaceStore for Maps {
    fn insert_hash(&mut self, ifindex: u32, iface: PopIface) -> Result<(), DataplaneError> {
        self.ifaces
            .insert(ifindex, iface, 0)
            .map_err(map_err(names::IFACES))
    }

    fn remove_hash(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        ignore_missing(self.ifaces.remove(&ifindex)).map_err(map_err(names::IFACES))
    }

    fn read_element(&self, ifindex: u32) -> Result<Option<Vec<PopIface>>, DataplaneError> {
        let Some(array) = &self.ifaces_by_index else {
            return Ok(None);
        };
        let have = array
            .get(&ifindex, 0)
            .map_err(map_err(names::IFACES_BY_INDEX))?;
        Ok(Some(have.iter().copied().collect()))
    }

    fn element_cpus(&self) -> Result<Option<usize>, DataplaneError> {
        if self.ifaces_by_index.is_none() {
            return Ok(None);
        }
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Map {
            map: names::IFACES_BY_INDEX,
            reason: e.to_string(),
        })?;
        Ok(Some(cpus))
    }

    fn write_element(&mut self, ifindex: u32, values: Vec<PopIface>) -> Result<(), DataplaneError> {
        let Some(array) = &mut self.ifaces_by_index else {
            return Ok(());
        };
        let values = PerCpuValues::try_from(values).expect("one value per CPU");
        array
            .set(ifindex, values, 0)
            .map_err(map_err(names::IFACES_BY_INDEX))
    }
}

/// [`Maps::set_iface`] on any store.
fn set_iface(
    store: &mut impl IfaceStore,
    ifindex: u32,
    iface: PopIface,
) -> Result<(), DataplaneError> {
    let want = indexed_value(Some(iface));
    if indexed_values(store, ifindex)?.is_some_and(|have| have.iter().all(|v| *v == want)) {
        return store.insert_hash(ifindex, iface);
    }
    withdraw_indexed(store, ifindex)?;
    store.insert_hash(ifindex, iface)?;
    publish_indexed(store, ifindex, Some(iface))
}

/// [`Maps::remove_iface`] on any store.
fn remove_iface(store: &mut impl IfaceStore, ifindex: u32) -> Result<(), DataplaneError> {
    withdraw_indexed(store, ifindex)?;
    store.remove_hash(ifindex)?;
    publish_indexed(store, ifindex, None)
}

/// Every CPU's element for `ifindex` (`None`: no array, or an ifindex
/// beyond it).
fn indexed_values(
    store: &impl IfaceStore,
    ifindex: u32,
) -> Result<Option<Vec<PopIface>>, DataplaneError> {
    if !indexed(ifindex) {
        return Ok(None);
    }
    store.read_element(ifindex)
}

/// Clears the flag of `ifindex`'s element on every CPU, each CPU's other
/// words rewritten as they are: packets go to the hash from now on.
fn withdraw_indexed(store: &mut impl IfaceStore, ifindex: u32) -> Result<(), DataplaneError> {
    let Some(have) = indexed_values(store, ifindex)? else {
        return Ok(());
    };
    if have.iter().all(|v| v.flags & IFACE_PRESENT == 0) {
        return Ok(());
    }
    let cleared = have
        .into_iter()
        .map(|mut v| {
            v.flags &= !IFACE_PRESENT;
            v
        })
        .collect();
    store.write_element(ifindex, cleared)
}

/// Writes `iface` (or zeros) into `ifindex`'s element, whose flag is
/// clear: first without the flag, then with it.
fn publish_indexed(
    store: &mut impl IfaceStore,
    ifindex: u32,
    iface: Option<PopIface>,
) -> Result<(), DataplaneError> {
    if !indexed(ifindex) {
        return Ok(());
    }
    let Some(cpus) = store.element_cpus()? else {
        return Ok(());
    };
    let value = indexed_value(iface);
    let mut hidden = value;
    hidden.flags &= !IFACE_PRESENT;
    store.write_element(ifindex, vec![hidden; cpus])?;
    if value.flags & IFACE_PRESENT != 0 {
        store.write_element(ifindex, vec![value; cpus])?;
    }
    Ok(())
}

impl Maps {
    /// Writes interface `ifindex`'s record to `ifaces` and, below the
    /// bound, to every CPU's element of `ifaces_by_index` (see the module's
    /// order of writes).
    pub fn set_iface(&mut self, ifindex: u32, iface: PopIface) -> Result<(), DataplaneError> {
        set_iface(self, ifindex, iface)
    }

    /// Removes interface `ifindex`: the array element's flag first, so that
    /// a packet in between still finds the hash entry, then the hash entry,
    /// then the rest of the element.
    pub fn remove_iface(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        remove_iface(self, ifindex)
    }

    /// Makes `ifaces_by_index` say what `ifaces` says, for maps that were in
    /// use (a restart): an element that differs from its hash entry on any CPU
    /// is rewritten, one with the flag but no hash entry (left by a build that
    /// did not write the array) is cleared. Returns how many were rewritten.
    pub fn sync_ifaces_by_index(&mut self) -> Result<usize, DataplaneError> {
        let Some(array) = &self.ifaces_by_index else {
            return Ok(0);
        };
        let mut wrong = Vec::new();
        for ifindex in 1..IFACES_BY_INDEX {
            let want = match self.ifaces.get(&ifindex, 0) {
                Ok(v) => Some(v),
                Err(e) if is_missing(&e) => None,
                Err(e) => return Err(map_err(names::IFACES)(e)),
            };
            let have = array
                .get(&ifindex, 0)
                .map_err(map_err(names::IFACES_BY_INDEX))?;
            let value = indexed_value(want);
            if have.iter().any(|v| *v != value) {
                wrong.push((ifindex, want));
            }
        }
        for (ifindex, want) in &wrong {
            withdraw_indexed(self, *ifindex)?;
            publish_indexed(self, *ifindex, *want)?;
        }
        if !wrong.is_empty() {
            tracing::info!(
                count = wrong.len(),
                "ifaces_by_index: elements rewritten to match ifaces"
            );
        }
        Ok(wrong.len())
    }
}

#[cfg(test)]
mod tests {
    //! The order of the writes, against a store that records them: what a
    //! packet reading the array between any two writes may see.
    use std::collections::BTreeMap;

    use super::*;

    /// CPUs of the recorded array.
    const CPUS: usize = 3;
    /// An ifindex with an array element.
    const IFINDEX: u32 = 5;

    /// One recorded write: the map, the ifindex, and the value (`None`: the
    /// hash entry removed; the array's one value per CPU).
    type Write = (&'static str, u32, Option<Vec<PopIface>>);

    /// Maps in memory that record every write.
    #[derive(Default)]
    struct Recorder {
        hash: BTreeMap<u32, PopIface>,
        /// Elements written (the others are all zero).
        array: BTreeMap<u32, Vec<PopIface>>,
        writes: Vec<Write>,
    }

    impl IfaceStore for Recorder {
        fn insert_hash(&mut self, ifindex: u32, iface: PopIface) -> Result<(), DataplaneError> {
            self.hash.insert(ifindex, iface);
            self.writes
                .push((names::IFACES, ifindex, Some(vec![iface])));
            Ok(())
        }

        fn remove_hash(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
            self.hash.remove(&ifindex);
            self.writes.push((names::IFACES, ifindex, None));
            Ok(())
        }

        fn read_element(&self, ifindex: u32) -> Result<Option<Vec<PopIface>>, DataplaneError> {
            assert!(
                indexed(ifindex),
                "read of element {ifindex}, beyond the array"
            );
            Ok(Some(self.element(ifindex)))
        }

        fn element_cpus(&self) -> Result<Option<usize>, DataplaneError> {
            Ok(Some(CPUS))
        }

        fn write_element(
            &mut self,
            ifindex: u32,
            values: Vec<PopIface>,
        ) -> Result<(), DataplaneError> {
            assert!(
                indexed(ifindex),
                "write of element {ifindex}, beyond the array"
            );
            assert_eq!(values.len(), CPUS, "values of element {ifindex}");
            self.array.insert(ifindex, values.clone());
            self.writes
                .push((names::IFACES_BY_INDEX, ifindex, Some(values)));
            Ok(())
        }
    }

    impl Recorder {
        fn element(&self, ifindex: u32) -> Vec<PopIface> {
            self.array
                .get(&ifindex)
                .cloned()
                .unwrap_or_else(|| vec![PopIface::default(); CPUS])
        }

        /// The writes since the last call.
        fn take(&mut self) -> Vec<Write> {
            std::mem::take(&mut self.writes)
        }
    }

    /// An interface record with the other `flags` (never the flag itself).
    fn record(slot: u32, mtu: u32, flags: u32) -> PopIface {
        PopIface {
            slot,
            role: 1,
            flags,
            mtu,
            mac: [2, 0, 0, 0, 0, slot as u8],
            ..PopIface::default()
        }
    }

    fn without_flag(mut v: PopIface) -> PopIface {
        v.flags &= !IFACE_PRESENT;
        v
    }

    fn hash(iface: Option<PopIface>) -> Write {
        (names::IFACES, IFINDEX, iface.map(|v| vec![v]))
    }

    fn array(value: PopIface) -> Write {
        (names::IFACES_BY_INDEX, IFINDEX, Some(vec![value; CPUS]))
    }

    /// Runs `change` on `store`, which holds interface [`IFINDEX`] as
    /// `before` in both maps (`None`: not at all), and returns its writes
    /// after checking them: between any two writes a packet reading the
    /// array finds what the hash says, no write mixes two records under the
    /// flag, the flag is never set on a record other than `before` or
    /// `after`, and at the end both maps hold `after`.
    fn checked(
        store: &mut Recorder,
        before: Option<PopIface>,
        after: Option<PopIface>,
        change: impl FnOnce(&mut Recorder),
    ) -> Vec<Write> {
        let complete = |record: Option<PopIface>| vec![indexed_value(record); CPUS];
        let mut hash = store.hash.get(&IFINDEX).copied();
        let mut element = store.element(IFINDEX);
        assert_eq!((hash, &element), (before, &complete(before)), "before");
        store.take();
        change(store);
        let writes = store.take();
        let whole: Vec<PopIface> = [before, after].into_iter().flatten().collect();
        for (step, (map, ifindex, value)) in writes.iter().enumerate() {
            assert_eq!(*ifindex, IFINDEX, "step {step}: ifindex");
            if *map == names::IFACES {
                hash = value.as_ref().map(|v| v[0]);
            } else {
                let new = value.clone().expect("an array element is never removed");
                for (cpu, (old, new)) in element.iter().zip(&new).enumerate() {
                    // One write changes the flag alone, or the other words
                    // alone under a clear flag: a reader copying word by
                    // word never sees two records mixed under the flag.
                    let flag_alone = without_flag(*old) == without_flag(*new);
                    let hidden = (old.flags | new.flags) & IFACE_PRESENT == 0;
                    assert!(
                        flag_alone || hidden,
                        "step {step}, CPU {cpu}: {old:?} -> {new:?} changes the record and the flag at once"
                    );
                    if new.flags & IFACE_PRESENT != 0 {
                        assert!(
                            whole.contains(&without_flag(*new)),
                            "step {step}, CPU {cpu}: flag set on {new:?}, neither the previous nor the new record"
                        );
                    }
                }
                element = new;
            }
            // Between writes the array answers what the hash answers.
            for (cpu, v) in element.iter().enumerate() {
                if v.flags & IFACE_PRESENT != 0 {
                    assert_eq!(
                        Some(without_flag(*v)),
                        hash,
                        "step {step}, CPU {cpu}: the flagged element differs from the hash entry"
                    );
                }
            }
        }
        assert_eq!((hash, &element), (after, &complete(after)), "after");
        writes
    }

    #[test]
    fn an_add_writes_the_hash_then_the_element_then_its_flag() {
        let mut store = Recorder::default();
        let new = record(1, 1500, 0);
        let writes = checked(&mut store, None, Some(new), |store| {
            set_iface(store, IFINDEX, new).unwrap()
        });
        assert_eq!(
            writes,
            [hash(Some(new)), array(new), array(indexed_value(Some(new)))]
        );
    }

    #[test]
    fn a_change_clears_the_flag_then_writes_the_hash_the_element_and_the_flag() {
        let mut store = Recorder::default();
        let old = record(1, 1500, 0);
        set_iface(&mut store, IFINDEX, old).unwrap();
        let new = record(2, 9000, pop_common::IFACE_ANTI_SPOOFING);
        let writes = checked(&mut store, Some(old), Some(new), |store| {
            set_iface(store, IFINDEX, new).unwrap()
        });
        assert_eq!(
            writes,
            [
                array(old),
                hash(Some(new)),
                array(new),
                array(indexed_value(Some(new))),
            ]
        );
        // The same record again: the element already says it, only the hash
        // is written.
        let writes = checked(&mut store, Some(new), Some(new), |store| {
            set_iface(store, IFINDEX, new).unwrap()
        });
        assert_eq!(writes, [hash(Some(new))]);
    }

    #[test]
    fn a_removal_clears_the_flag_before_the_hash_entry_goes() {
        let mut store = Recorder::default();
        let old = record(1, 1500, pop_common::IFACE_ANTI_SPOOFING);
        set_iface(&mut store, IFINDEX, old).unwrap();
        let writes = checked(&mut store, Some(old), None, |store| {
            remove_iface(store, IFINDEX).unwrap()
        });
        assert_eq!(writes, [array(old), hash(None), array(PopIface::default())]);
    }

    #[test]
    fn an_ifindex_beyond_the_array_is_written_to_the_hash_only() {
        let mut store = Recorder::default();
        let new = record(1, 1500, 0);
        set_iface(&mut store, IFACES_BY_INDEX, new).unwrap();
        remove_iface(&mut store, IFACES_BY_INDEX).unwrap();
        assert_eq!(
            store.take(),
            [
                (names::IFACES, IFACES_BY_INDEX, Some(vec![new])),
                (names::IFACES, IFACES_BY_INDEX, None),
            ]
        );
    }
}
