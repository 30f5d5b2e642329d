//! The data plane's counters for readers that are not the controller (the
//! `/metrics` endpoint): handles of their own on the per-CPU counter maps,
//! opened from the pins. Reading a per-CPU map is a syscall per record and
//! takes no lock of popd, so a scrape never waits for a change being written.
use std::path::Path;

use aya::maps::{MapData, PerCpuArray};
use pop_common::{maps as names, IcmpType, PopCounter, PopCustomerCounters, PopIfaceCounters};

use super::maps::open;
use super::DataplaneError;

/// Read-only handles on `iface_counters`, `customer_counters`, `icmp_stats`
/// and `acl_hits`. Sums are over CPUs; a record that cannot be read counts 0.
pub struct CounterReader {
    iface_counters: PerCpuArray<MapData, PopIfaceCounters>,
    customer_counters: PerCpuArray<MapData, PopCustomerCounters>,
    icmp_stats: PerCpuArray<MapData, PopCounter>,
    acl_hits: PerCpuArray<MapData, PopCounter>,
}

fn typed<V: aya::Pod>(
    dir: &Path,
    name: &'static str,
) -> Result<PerCpuArray<MapData, V>, DataplaneError> {
    PerCpuArray::try_from(open(dir, name)?).map_err(super::maps::map_err(name))
}

impl CounterReader {
    /// Opens the counter maps pinned in `maps_dir`. The handles keep the maps
    /// they opened: a data-plane upgrade renames its pins but keeps the maps.
    pub fn open(maps_dir: &Path) -> Result<Self, DataplaneError> {
        Ok(Self {
            iface_counters: typed(maps_dir, names::IFACE_COUNTERS)?,
            customer_counters: typed(maps_dir, names::CUSTOMER_COUNTERS)?,
            icmp_stats: typed(maps_dir, names::ICMP_STATS)?,
            acl_hits: typed(maps_dir, names::ACL_HITS)?,
        })
    }

    /// One interface slot's record.
    pub fn iface_record(&self, slot: u32) -> PopIfaceCounters {
        super::counters::iface_record(&self.iface_counters, slot)
    }

    /// Every interface record summed: its `drop` and `pass` are the global
    /// counters by reason.
    pub fn reason_totals(&self) -> PopIfaceCounters {
        super::counters::reason_totals(&self.iface_counters)
    }

    /// A customer's record.
    pub fn customer_record(&self, id: u32) -> PopCustomerCounters {
        self.customer_counters
            .get(&id, 0)
            .map(|v| PopCustomerCounters::sum(v.iter()))
            .unwrap_or_default()
    }

    /// ICMP errors sent of one kind.
    pub fn icmp_counter(&self, kind: IcmpType) -> PopCounter {
        self.icmp_stats
            .get(&(kind as u32), 0)
            .map(|v| PopCounter::sum(v.iter()))
            .unwrap_or_default()
    }

    /// The hits of one ACL rule slot (the rule's slot, the same in both copies).
    pub fn acl_hits(&self, slot: u32) -> PopCounter {
        self.acl_hits
            .get(&slot, 0)
            .map(|v| PopCounter::sum(v.iter()))
            .unwrap_or_default()
    }
}
