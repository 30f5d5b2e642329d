//! The IPv4 FIB's ABI (`pop-ebpf/src/fib4.h`): a DIR-24-8 table in BPF array
//! maps whose entries point at interned answers ([`PopFib4Result`]).
//!
//! An entry of `fib4_tbl24` (one per /24) or of a `fib4_tbl8` group (one per
//! address of a split /24) is a result index, or [`FIB4_EXT`] | group.

/// Entries per element of `fib4_tbl24` and per group of `fib4_tbl8`.
pub const FIB4_BLOCK_ENTRIES: u32 = 256;
/// Elements of `fib4_tbl24`: 2^24 entries / [`FIB4_BLOCK_ENTRIES`].
pub const FIB4_TBL24_BLOCKS: u32 = 65_536;
/// Groups of `fib4_tbl8`: /24s that hold prefixes longer than /24.
pub const FIB4_MAX_GROUPS: u32 = 16_384;
/// Records of `fib4_results`: distinct answers at once (index 0 is the empty one).
pub const FIB4_MAX_RESULTS: u32 = 65_536;
/// An entry with this bit points at the `fib4_tbl8` group in its low bits.
pub const FIB4_EXT: u32 = 1 << 31;

/// [`PopFib4Result::flags`]: the address has a route; `route_id` is its ECMP group.
pub const FIB4_ROUTE: u32 = 1 << 0;
/// [`PopFib4Result::flags`]: the route is a blackhole (set with [`FIB4_ROUTE`]).
pub const FIB4_BLACKHOLE: u32 = 1 << 1;
/// [`PopFib4Result::flags`]: an address of this host.
pub const FIB4_LOCAL: u32 = 1 << 2;
/// [`PopFib4Result::flags`]: a directed broadcast address of a local subnet.
pub const FIB4_BROADCAST: u32 = 1 << 3;

/// Map names, as pinned under popd's `--bpffs` directory once wired in.
pub mod maps {
    /// block (addr >> 16) → [`super::PopFib4Block`] of tbl24 entries.
    pub const FIB4_TBL24: &str = "fib4_tbl24";
    /// group → [`super::PopFib4Block`] of tbl8 entries.
    pub const FIB4_TBL8: &str = "fib4_tbl8";
    /// result index → [`super::PopFib4Result`].
    pub const FIB4_RESULTS: &str = "fib4_results";
}

/// `struct pop_fib4_block`: 256 entries, an element of `fib4_tbl24` or a
/// group of `fib4_tbl8`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PopFib4Block {
    /// Result indexes or [`FIB4_EXT`] | group.
    pub entry: [u32; FIB4_BLOCK_ENTRIES as usize],
}

/// `struct pop_fib4_result`: what a lookup answers for an address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PopFib4Result {
    /// The route's ECMP group, with [`FIB4_ROUTE`] and without [`FIB4_BLACKHOLE`].
    pub route_id: u32,
    /// The customer the address belongs to; 0: none.
    pub customer_id: u32,
    /// `FIB4_*` bits.
    pub flags: u32,
    /// Zero (keeps the record 16 bytes, the array's element stride).
    pub pad: u32,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: #[repr(C)] plain u32 fields and arrays; any bit pattern is valid.
    unsafe impl aya::Pod for PopFib4Block {}
    unsafe impl aya::Pod for PopFib4Result {}
}

/// The FIB's structs with C name, size and field offsets, for a BTF check
/// (of the object that includes `fib4.h`).
pub fn layouts() -> &'static [crate::Layout] {
    use core::mem::{offset_of, size_of};
    &[
        (
            "pop_fib4_block",
            size_of::<PopFib4Block>(),
            &[("entry", offset_of!(PopFib4Block, entry))],
        ),
        (
            "pop_fib4_result",
            size_of::<PopFib4Result>(),
            &[
                ("route_id", offset_of!(PopFib4Result, route_id)),
                ("customer_id", offset_of!(PopFib4Result, customer_id)),
                ("flags", offset_of!(PopFib4Result, flags)),
                ("pad", offset_of!(PopFib4Result, pad)),
            ],
        ),
    ]
}

/// The `#define`s of `fib4.h` with their values, for a check against the header.
pub fn defines() -> &'static [(&'static str, i64)] {
    &[
        ("POP_FIB4_BLOCK_ENTRIES", FIB4_BLOCK_ENTRIES as i64),
        ("POP_FIB4_TBL24_BLOCKS", FIB4_TBL24_BLOCKS as i64),
        ("POP_FIB4_MAX_GROUPS", FIB4_MAX_GROUPS as i64),
        ("POP_FIB4_MAX_RESULTS", FIB4_MAX_RESULTS as i64),
        ("POP_FIB4_EXT", FIB4_EXT as i64),
        ("POP_FIB4_ROUTE", FIB4_ROUTE as i64),
        ("POP_FIB4_BLACKHOLE", FIB4_BLACKHOLE as i64),
        ("POP_FIB4_LOCAL", FIB4_LOCAL as i64),
        ("POP_FIB4_BROADCAST", FIB4_BROADCAST as i64),
    ]
}

// Every group index fits below the EXT bit, and tbl24 covers 2^24 /24s.
const _: () = assert!(FIB4_MAX_GROUPS < FIB4_EXT && FIB4_MAX_RESULTS < FIB4_EXT);
const _: () = assert!(FIB4_TBL24_BLOCKS * FIB4_BLOCK_ENTRIES == 1 << 24);
