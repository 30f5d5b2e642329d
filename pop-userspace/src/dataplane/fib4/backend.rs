//! Where the FIB's tables live: [`MemoryBackend`] (a plain copy, for tests
//! and tools) and [`MmapBackend`] (the BPF maps, written through mmap).
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::Ordering;

use aya::maps::{MapData, MapInfo};
use pop_common::fib4::{
    maps as names, PopFib4Result, FIB4_BLOCK_ENTRIES, FIB4_MAX_GROUPS, FIB4_MAX_RESULTS,
    FIB4_TBL24_BLOCKS,
};

use super::mapping::Mapping;
use super::Fib4Error;

/// tbl24 entries: one per /24.
pub const TBL24_ENTRIES: usize = 1 << 24;
const GROUP: usize = FIB4_BLOCK_ENTRIES as usize;

/// The three tables of the FIB, as the writer sees them. Entries are result
/// indexes or `FIB4_EXT | group`; every store must be atomic (a lookup may
/// run at any time) and visible in program order.
pub trait Fib4Backend {
    /// Groups `fib4_tbl8` holds.
    fn group_capacity(&self) -> u32;
    /// Records `fib4_results` holds.
    fn result_capacity(&self) -> u32;
    /// The tbl24 entry of `/24` number `slot` (the address >> 8).
    fn tbl24(&self, slot: u32) -> u32;
    /// Stores a tbl24 entry.
    fn set_tbl24(&mut self, slot: u32, entry: u32);
    /// Entry `index` (the address's last byte) of tbl8 group `group`.
    fn tbl8(&self, group: u32, index: u32) -> u32;
    /// Stores a tbl8 entry.
    fn set_tbl8(&mut self, group: u32, index: u32, entry: u32);
    /// Result record `index`.
    fn result(&self, index: u32) -> PopFib4Result;
    /// Writes result record `index` (no entry points at it yet).
    fn set_result(&mut self, index: u32, record: PopFib4Result);
    /// Returns once no lookup that started before the call is still running,
    /// so groups and records it could have reached may be reused.
    fn wait_for_readers(&mut self);
    /// Gives back the pages this process maps to reach the tables (they
    /// count in its RSS), after a scan of them all; the next access maps
    /// what it needs again. Nothing to do where nothing is mapped.
    fn unmap(&mut self) {}
}

/// The tables in process memory (64 MB for tbl24 plus the groups).
pub struct MemoryBackend {
    tbl24: Vec<u32>,
    tbl8: Vec<u32>,
    results: Vec<PopFib4Result>,
}

impl MemoryBackend {
    /// Empty tables with room for `groups` tbl8 groups and `results` records.
    pub fn new(groups: u32, results: u32) -> Self {
        Self {
            tbl24: vec![0; TBL24_ENTRIES],
            tbl8: vec![0; groups as usize * GROUP],
            results: vec![PopFib4Result::default(); results as usize],
        }
    }

    /// The sizes of the BPF maps ([`FIB4_MAX_GROUPS`], [`FIB4_MAX_RESULTS`]).
    pub fn with_map_sizes() -> Self {
        Self::new(FIB4_MAX_GROUPS, FIB4_MAX_RESULTS)
    }
}

impl Fib4Backend for MemoryBackend {
    fn group_capacity(&self) -> u32 {
        (self.tbl8.len() / GROUP) as u32
    }
    fn result_capacity(&self) -> u32 {
        self.results.len() as u32
    }
    fn tbl24(&self, slot: u32) -> u32 {
        self.tbl24[slot as usize]
    }
    fn set_tbl24(&mut self, slot: u32, entry: u32) {
        self.tbl24[slot as usize] = entry;
    }
    fn tbl8(&self, group: u32, index: u32) -> u32 {
        self.tbl8[group as usize * GROUP + index as usize]
    }
    fn set_tbl8(&mut self, group: u32, index: u32, entry: u32) {
        self.tbl8[group as usize * GROUP + index as usize] = entry;
    }
    fn result(&self, index: u32) -> PopFib4Result {
        self.results[index as usize]
    }
    fn set_result(&mut self, index: u32, record: PopFib4Result) {
        self.results[index as usize] = record;
    }
    fn wait_for_readers(&mut self) {}
}

/// The BPF maps `fib4_tbl24`, `fib4_tbl8` and `fib4_results`, mapped into
/// this process: an entry is one aligned 32-bit store (no syscall), released
/// after the stores before it, so a group or record is complete before an
/// entry points at it.
///
/// The mapped pages are the kernel's map memory; they count in this process's
/// RSS (as file pages) without being allocated twice, so they are mapped a
/// chunk at a time, as used ([`Mapping`]).
pub struct MmapBackend {
    tbl24: Mapping,
    tbl8: Mapping,
    results: Mapping,
    groups: u32,
    result_count: u32,
}

// SAFETY: the mappings are plain shared memory owned by this value.
unsafe impl Send for MmapBackend {}

const BPF_F_MMAPABLE: u32 = 1 << 10;
const RESULT_WORDS: usize = std::mem::size_of::<PopFib4Result>() / 4;

/// The map's element count, after checking its value size, BPF_F_MMAPABLE
/// and (if given) its element count.
pub(crate) fn checked(
    map: &'static str,
    info: Result<MapInfo, aya::maps::MapError>,
    value_size: u32,
    entries: Option<u32>,
) -> Result<u32, Fib4Error> {
    let bad = |reason: String| Fib4Error::Map { map, reason };
    let info = info.map_err(|e| bad(format!("map info: {e}")))?;
    if info.value_size() != value_size {
        return Err(bad(format!(
            "value size {} is not {value_size}",
            info.value_size()
        )));
    }
    if info.map_flags() & BPF_F_MMAPABLE == 0 {
        return Err(bad("not created with BPF_F_MMAPABLE".into()));
    }
    if let Some(n) = entries {
        if info.max_entries() != n {
            return Err(bad(format!("{} entries, not {n}", info.max_entries())));
        }
    }
    Ok(info.max_entries())
}

/// `bytes` rounded up to whole pages (what mmap maps).
pub(crate) fn page_round(bytes: usize) -> usize {
    bytes.div_ceil(4096) * 4096
}

impl MmapBackend {
    /// Maps the three maps (of a loaded object, or opened from pins).
    /// Checks their value sizes, sizes and BPF_F_MMAPABLE.
    pub fn new(tbl24: &MapData, tbl8: &MapData, results: &MapData) -> Result<Self, Fib4Error> {
        let block = FIB4_BLOCK_ENTRIES * 4;
        checked(
            names::FIB4_TBL24,
            tbl24.info(),
            block,
            Some(FIB4_TBL24_BLOCKS),
        )?;
        let groups = checked(names::FIB4_TBL8, tbl8.info(), block, None)?;
        let result_size = std::mem::size_of::<PopFib4Result>() as u32;
        let result_count = checked(names::FIB4_RESULTS, results.info(), result_size, None)?;
        Ok(Self {
            tbl24: Mapping::new(names::FIB4_TBL24, tbl24.fd().as_fd(), TBL24_ENTRIES * 4)?,
            tbl8: Mapping::new(
                names::FIB4_TBL8,
                tbl8.fd().as_fd(),
                page_round(groups as usize * block as usize),
            )?,
            results: Mapping::new(
                names::FIB4_RESULTS,
                results.fd().as_fd(),
                page_round(result_count as usize * result_size as usize),
            )?,
            groups,
            result_count,
        })
    }

    /// Maps the maps pinned in `dir` (popd's `<bpffs>/maps`).
    pub fn open_pinned(dir: &Path) -> Result<Self, Fib4Error> {
        let open = |name: &'static str| {
            MapData::from_pin(dir.join(name)).map_err(|e| Fib4Error::Map {
                map: name,
                reason: format!("opening the pin in {}: {e}", dir.display()),
            })
        };
        let (a, b, c) = (
            open(names::FIB4_TBL24)?,
            open(names::FIB4_TBL8)?,
            open(names::FIB4_RESULTS)?,
        );
        Self::new(&a, &b, &c)
    }
}

impl Fib4Backend for MmapBackend {
    fn group_capacity(&self) -> u32 {
        self.groups
    }
    fn result_capacity(&self) -> u32 {
        self.result_count
    }
    fn tbl24(&self, slot: u32) -> u32 {
        self.tbl24.word(slot as usize).load(Ordering::Relaxed)
    }
    fn set_tbl24(&mut self, slot: u32, entry: u32) {
        self.tbl24
            .word(slot as usize)
            .store(entry, Ordering::Release);
    }
    fn tbl8(&self, group: u32, index: u32) -> u32 {
        self.tbl8
            .word(group as usize * GROUP + index as usize)
            .load(Ordering::Relaxed)
    }
    fn set_tbl8(&mut self, group: u32, index: u32, entry: u32) {
        self.tbl8
            .word(group as usize * GROUP + index as usize)
            .store(entry, Ordering::Release);
    }
    fn result(&self, index: u32) -> PopFib4Result {
        let w = |i: usize| {
            self.results
                .word(index as usize * RESULT_WORDS + i)
                .load(Ordering::Relaxed)
        };
        PopFib4Result {
            route_id: w(0),
            customer_id: w(1),
            flags: w(2),
            pad: w(3),
        }
    }
    fn set_result(&mut self, index: u32, record: PopFib4Result) {
        let words = [
            record.route_id,
            record.customer_id,
            record.flags,
            record.pad,
        ];
        for (i, v) in words.into_iter().enumerate() {
            self.results
                .word(index as usize * RESULT_WORDS + i)
                .store(v, Ordering::Release);
        }
    }
    fn wait_for_readers(&mut self) {
        crate::dataplane::wait_for_readers();
    }
    fn unmap(&mut self) {
        self.tbl24.unmap();
        self.tbl8.unmap();
        self.results.unmap();
    }
}
