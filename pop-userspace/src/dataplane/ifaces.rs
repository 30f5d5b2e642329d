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
//! set. A removal clears the flag before the hash entry goes.
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

impl Maps {
    /// Writes interface `ifindex`'s record to `ifaces` and, below the
    /// bound, to every CPU's element of `ifaces_by_index` (see the module's
    /// order of writes).
    pub fn set_iface(&mut self, ifindex: u32, iface: PopIface) -> Result<(), DataplaneError> {
        let want = indexed_value(Some(iface));
        if self
            .indexed_values(ifindex)?
            .is_some_and(|have| have.iter().all(|v| *v == want))
        {
            return self
                .ifaces
                .insert(ifindex, iface, 0)
                .map_err(map_err(names::IFACES));
        }
        self.withdraw_indexed(ifindex)?;
        self.ifaces
            .insert(ifindex, iface, 0)
            .map_err(map_err(names::IFACES))?;
        self.publish_indexed(ifindex, Some(iface))
    }

    /// Removes interface `ifindex`: the array element's flag first, so that
    /// a packet in between still finds the hash entry, then the hash entry,
    /// then the rest of the element.
    pub fn remove_iface(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        self.withdraw_indexed(ifindex)?;
        ignore_missing(self.ifaces.remove(&ifindex)).map_err(map_err(names::IFACES))?;
        self.publish_indexed(ifindex, None)
    }

    /// Every CPU's element for `ifindex` (`None`: no array, or an ifindex
    /// beyond it).
    fn indexed_values(&self, ifindex: u32) -> Result<Option<Vec<PopIface>>, DataplaneError> {
        let Some(array) = &self.ifaces_by_index else {
            return Ok(None);
        };
        if !indexed(ifindex) {
            return Ok(None);
        }
        let have = array
            .get(&ifindex, 0)
            .map_err(map_err(names::IFACES_BY_INDEX))?;
        Ok(Some(have.iter().copied().collect()))
    }

    /// Clears the flag of `ifindex`'s element on every CPU, each CPU's other
    /// words rewritten as they are: packets go to the hash from now on.
    fn withdraw_indexed(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        let Some(have) = self.indexed_values(ifindex)? else {
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
        self.write_indexed(ifindex, cleared)
    }

    /// Writes `iface` (or zeros) into `ifindex`'s element, whose flag is
    /// clear: first without the flag, then with it.
    fn publish_indexed(
        &mut self,
        ifindex: u32,
        iface: Option<PopIface>,
    ) -> Result<(), DataplaneError> {
        if self.ifaces_by_index.is_none() || !indexed(ifindex) {
            return Ok(());
        }
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Map {
            map: names::IFACES_BY_INDEX,
            reason: e.to_string(),
        })?;
        let value = indexed_value(iface);
        let mut hidden = value;
        hidden.flags &= !IFACE_PRESENT;
        self.write_indexed(ifindex, vec![hidden; cpus])?;
        if value.flags & IFACE_PRESENT != 0 {
            self.write_indexed(ifindex, vec![value; cpus])?;
        }
        Ok(())
    }

    fn write_indexed(&mut self, ifindex: u32, values: Vec<PopIface>) -> Result<(), DataplaneError> {
        let Some(array) = &mut self.ifaces_by_index else {
            return Ok(());
        };
        let values = PerCpuValues::try_from(values).expect("one value per CPU");
        array
            .set(ifindex, values, 0)
            .map_err(map_err(names::IFACES_BY_INDEX))
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
            self.withdraw_indexed(*ifindex)?;
            self.publish_indexed(*ifindex, *want)?;
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
