//! The IPv6 FIB's ABI (`pop-ebpf/src/fib6.h`): a multibit trie in BPF array
//! maps, a root of one entry per /20 and nodes of 16 entries (4-bit strides)
//! below it, whose entries hold the answer for their addresses.
//!
//! An entry is [`FIB6_EXT`] | node, or an answer: the route record id (an
//! index of `fib6_routes`, 0: no route) in [`FIB6_ROUTE_MASK`], the customer
//! id above it ([`FIB6_CUSTOMER_SHIFT`], [`FIB6_CUSTOMER_MASK`]; 0: none) and
//! [`FIB6_LOCAL`] for an address of this host.

/// Bits the root decides (one entry per /20).
pub const FIB6_ROOT_BITS: u32 = 20;
/// Entries per element of `fib6_root`.
pub const FIB6_ROOT_BLOCK_ENTRIES: u32 = 256;
/// Elements of `fib6_root`: 2^20 entries / [`FIB6_ROOT_BLOCK_ENTRIES`].
pub const FIB6_ROOT_BLOCKS: u32 = 4096;
/// Bits each node decides.
pub const FIB6_STRIDE: u32 = 4;
/// Entries of a node: 2^[`FIB6_STRIDE`].
pub const FIB6_NODE_ENTRIES: u32 = 16;
/// Node levels below the root: (128 - 20) / 4.
pub const FIB6_LEVELS: u32 = 27;
/// Nodes of `fib6_nodes`.
pub const FIB6_MAX_NODES: u32 = 786_432;
/// Route records of `fib6_routes` (id 0 stands for "no route").
pub const FIB6_MAX_ROUTES: u32 = 65_536;
/// An entry with this bit points at the node in its low bits.
pub const FIB6_EXT: u32 = 1 << 31;
/// The route record id of an answer entry.
pub const FIB6_ROUTE_MASK: u32 = 0xffff;
/// Where an answer entry's customer id starts.
pub const FIB6_CUSTOMER_SHIFT: u32 = 16;
/// The customer id of an answer entry, after the shift (ids below 16384).
pub const FIB6_CUSTOMER_MASK: u32 = 0x3fff;
/// An answer entry of an address of this host (a /128).
pub const FIB6_LOCAL: u32 = 1 << 30;

/// Map names, as pinned under popd's `--bpffs` directory.
pub mod maps {
    /// block (top 20 bits >> 8) → [`super::PopFib6Block`] of root entries.
    pub const FIB6_ROOT: &str = "fib6_root";
    /// node → [`super::PopFib6Node`].
    pub const FIB6_NODES: &str = "fib6_nodes";
    /// route record id → [`crate::PopRoute`].
    pub const FIB6_ROUTES: &str = "fib6_routes";
}

/// `struct pop_fib6_block`: 256 root entries, an element of `fib6_root`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PopFib6Block {
    /// Answers or [`FIB6_EXT`] | node.
    pub entry: [u32; FIB6_ROOT_BLOCK_ENTRIES as usize],
}

/// `struct pop_fib6_node`: the entries for the next [`FIB6_STRIDE`] bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopFib6Node {
    /// Answers or [`FIB6_EXT`] | node.
    pub entry: [u32; FIB6_NODE_ENTRIES as usize],
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: #[repr(C)] arrays of u32; any bit pattern is valid.
    unsafe impl aya::Pod for PopFib6Block {}
    unsafe impl aya::Pod for PopFib6Node {}
}

/// The `#define`s of `fib6.h` with their values, for a check against the header.
pub fn defines() -> &'static [(&'static str, i64)] {
    &[
        ("POP_FIB6_ROOT_BITS", FIB6_ROOT_BITS as i64),
        (
            "POP_FIB6_ROOT_BLOCK_ENTRIES",
            FIB6_ROOT_BLOCK_ENTRIES as i64,
        ),
        ("POP_FIB6_ROOT_BLOCKS", FIB6_ROOT_BLOCKS as i64),
        ("POP_FIB6_STRIDE", FIB6_STRIDE as i64),
        ("POP_FIB6_NODE_ENTRIES", FIB6_NODE_ENTRIES as i64),
        ("POP_FIB6_LEVELS", FIB6_LEVELS as i64),
        ("POP_FIB6_MAX_NODES", FIB6_MAX_NODES as i64),
        ("POP_FIB6_MAX_ROUTES", FIB6_MAX_ROUTES as i64),
        ("POP_FIB6_EXT", FIB6_EXT as i64),
        ("POP_FIB6_ROUTE_MASK", FIB6_ROUTE_MASK as i64),
        ("POP_FIB6_CUSTOMER_SHIFT", FIB6_CUSTOMER_SHIFT as i64),
        ("POP_FIB6_CUSTOMER_MASK", FIB6_CUSTOMER_MASK as i64),
        ("POP_FIB6_LOCAL", FIB6_LOCAL as i64),
    ]
}

const _: () = assert!(FIB6_ROOT_BLOCKS * FIB6_ROOT_BLOCK_ENTRIES == 1 << FIB6_ROOT_BITS);
const _: () = assert!(FIB6_NODE_ENTRIES == 1 << FIB6_STRIDE);
const _: () = assert!(FIB6_MAX_ROUTES - 1 <= FIB6_ROUTE_MASK);
const _: () = assert!(crate::MAX_CUSTOMERS - 1 <= FIB6_CUSTOMER_MASK);
const _: () = assert!(FIB6_ROOT_BITS + FIB6_LEVELS * FIB6_STRIDE == 128);
const _: () =
    assert!(32_u32.is_multiple_of(FIB6_STRIDE) && FIB6_ROOT_BITS.is_multiple_of(FIB6_STRIDE));
const _: () = assert!(FIB6_MAX_NODES < FIB6_EXT && FIB6_MAX_ROUTES < FIB6_EXT);
