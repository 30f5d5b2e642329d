//! The interface records: every one in the hash `ifaces`, and those whose
//! ifindex is below [`IFACES_BY_INDEX`] also in the per-CPU array
//! `ifaces_by_index`, which the data plane finds by index (cheaper per packet
//! than a hash lookup). An array element holds an interface only with
//! [`IFACE_PRESENT`] set; one without it sends the data plane to the hash, so
//! the two answer the same for every ifindex as long as every array element
//! with the flag equals its hash entry (plus the flag). The writes keep that
//! order: the hash first when a record appears, the array first when it goes.
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
    /// Writes interface `ifindex`'s record: to `ifaces`, then to every CPU's
    /// element of `ifaces_by_index` (a packet in between finds the hash entry,
    /// or the array's previous record).
    pub fn set_iface(&mut self, ifindex: u32, iface: PopIface) -> Result<(), DataplaneError> {
        self.ifaces
            .insert(ifindex, iface, 0)
            .map_err(map_err(names::IFACES))?;
        self.set_indexed(ifindex, Some(iface))
    }

    /// Removes interface `ifindex`: its array element first, so that a packet
    /// in between still finds the hash entry, then the hash entry.
    pub fn remove_iface(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        self.set_indexed(ifindex, None)?;
        ignore_missing(self.ifaces.remove(&ifindex)).map_err(map_err(names::IFACES))
    }

    fn set_indexed(&mut self, ifindex: u32, iface: Option<PopIface>) -> Result<(), DataplaneError> {
        let Some(array) = &mut self.ifaces_by_index else {
            return Ok(());
        };
        if !indexed(ifindex) {
            return Ok(());
        }
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Map {
            map: names::IFACES_BY_INDEX,
            reason: e.to_string(),
        })?;
        let values =
            PerCpuValues::try_from(vec![indexed_value(iface); cpus]).expect("nr_cpus values");
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
            self.set_indexed(*ifindex, *want)?;
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
