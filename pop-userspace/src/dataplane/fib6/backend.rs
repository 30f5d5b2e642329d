//! Where the IPv6 FIB's tables live: [`MemoryBackend`] (a plain copy, for
//! tests and tools) and [`MmapBackend`] (the BPF maps, written through mmap).
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::Ordering;

use aya::maps::MapData;
use pop_common::fib6::{
    maps as names, FIB6_MAX_NODES, FIB6_NODE_ENTRIES, FIB6_ROOT_BITS, FIB6_ROOT_BLOCKS,
    FIB6_ROOT_BLOCK_ENTRIES,
};

use super::Fib6Error;
use crate::dataplane::fib4::{checked, page_round, Fib4Error, Mapping};

/// Root entries: one per /20.
pub const ROOT_ENTRIES: usize = 1 << FIB6_ROOT_BITS;
const NODE: usize = FIB6_NODE_ENTRIES as usize;

/// The trie's two tables, as the writer sees them. Entries are 0, route
/// record ids or `FIB6_EXT | node`; every store must be atomic (a lookup may
/// run at any time) and visible in program order.
pub trait Fib6Backend {
    /// Nodes `fib6_nodes` holds.
    fn node_capacity(&self) -> u32;
    /// The root entry of /20 number `slot` (the address's top 20 bits).
    fn root(&self, slot: u32) -> u32;
    /// Stores a root entry.
    fn set_root(&mut self, slot: u32, entry: u32);
    /// Entry `index` (4 bits of the address) of node `node`.
    fn node(&self, node: u32, index: u32) -> u32;
    /// Stores a node entry.
    fn set_node(&mut self, node: u32, index: u32, entry: u32);
    /// Returns once no lookup that started before the call is still running,
    /// so nodes it could have reached may be reused.
    fn wait_for_readers(&mut self);
    /// Gives back the pages this process maps to reach the tables (they
    /// count in its RSS), after a scan of them all; the next access maps
    /// what it needs again. Nothing to do where nothing is mapped.
    fn unmap(&mut self) {}
}

/// The tables in process memory.
#[derive(Clone, PartialEq, Eq)]
pub struct MemoryBackend {
    root: Vec<u32>,
    nodes: Vec<u32>,
}

impl MemoryBackend {
    /// Empty tables with room for `nodes` nodes.
    pub fn new(nodes: u32) -> Self {
        Self {
            root: vec![0; ROOT_ENTRIES],
            nodes: vec![0; nodes as usize * NODE],
        }
    }

    /// The size of the BPF map ([`FIB6_MAX_NODES`]).
    pub fn with_map_sizes() -> Self {
        Self::new(FIB6_MAX_NODES)
    }
}

impl Fib6Backend for MemoryBackend {
    fn node_capacity(&self) -> u32 {
        (self.nodes.len() / NODE) as u32
    }
    fn root(&self, slot: u32) -> u32 {
        self.root[slot as usize]
    }
    fn set_root(&mut self, slot: u32, entry: u32) {
        self.root[slot as usize] = entry;
    }
    fn node(&self, node: u32, index: u32) -> u32 {
        self.nodes[node as usize * NODE + index as usize]
    }
    fn set_node(&mut self, node: u32, index: u32, entry: u32) {
        self.nodes[node as usize * NODE + index as usize] = entry;
    }
    fn wait_for_readers(&mut self) {}
}

/// The BPF maps `fib6_root` and `fib6_nodes`, mapped into this process: an
/// entry is one aligned 32-bit store (no syscall), released after the
/// stores before it, so a node is complete before an entry points at it.
/// The mapped pages are the kernel's map memory (RSS as file pages).
pub struct MmapBackend {
    root: Mapping,
    nodes: Mapping,
    node_count: u32,
}

// SAFETY: the mappings are plain shared memory owned by this value.
unsafe impl Send for MmapBackend {}

fn map_err(e: Fib4Error) -> Fib6Error {
    match e {
        Fib4Error::Map { map, reason } => Fib6Error::Map { map, reason },
        other => Fib6Error::Map {
            map: names::FIB6_NODES,
            reason: other.to_string(),
        },
    }
}

impl MmapBackend {
    /// Maps the two maps (of a loaded object, or opened from pins). Checks
    /// their value sizes, sizes and BPF_F_MMAPABLE.
    pub fn new(root: &MapData, nodes: &MapData) -> Result<Self, Fib6Error> {
        let block = FIB6_ROOT_BLOCK_ENTRIES * 4;
        let node = FIB6_NODE_ENTRIES * 4;
        checked(names::FIB6_ROOT, root.info(), block, Some(FIB6_ROOT_BLOCKS)).map_err(map_err)?;
        let node_count = checked(names::FIB6_NODES, nodes.info(), node, None).map_err(map_err)?;
        Ok(Self {
            root: Mapping::new(names::FIB6_ROOT, root.fd().as_fd(), ROOT_ENTRIES * 4)
                .map_err(map_err)?,
            nodes: Mapping::new(
                names::FIB6_NODES,
                nodes.fd().as_fd(),
                page_round(node_count as usize * node as usize),
            )
            .map_err(map_err)?,
            node_count,
        })
    }

    /// Maps the maps pinned in `dir` (popd's `<bpffs>/maps`).
    pub fn open_pinned(dir: &Path) -> Result<Self, Fib6Error> {
        let open = |name: &'static str| {
            MapData::from_pin(dir.join(name)).map_err(|e| Fib6Error::Map {
                map: name,
                reason: format!("opening the pin in {}: {e}", dir.display()),
            })
        };
        let (root, nodes) = (open(names::FIB6_ROOT)?, open(names::FIB6_NODES)?);
        Self::new(&root, &nodes)
    }
}

impl Fib6Backend for MmapBackend {
    fn node_capacity(&self) -> u32 {
        self.node_count
    }
    fn root(&self, slot: u32) -> u32 {
        self.root.word(slot as usize).load(Ordering::Relaxed)
    }
    fn set_root(&mut self, slot: u32, entry: u32) {
        self.root
            .word(slot as usize)
            .store(entry, Ordering::Release);
    }
    fn node(&self, node: u32, index: u32) -> u32 {
        self.nodes
            .word(node as usize * NODE + index as usize)
            .load(Ordering::Relaxed)
    }
    fn set_node(&mut self, node: u32, index: u32, entry: u32) {
        self.nodes
            .word(node as usize * NODE + index as usize)
            .store(entry, Ordering::Release);
    }
    fn wait_for_readers(&mut self) {
        crate::dataplane::wait_for_readers();
    }
    fn unmap(&mut self) {
        self.root.unmap();
        self.nodes.unmap();
    }
}
