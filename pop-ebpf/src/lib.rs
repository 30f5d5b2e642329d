//! pop's XDP data plane as compiled BPF objects (ELF with BTF).
//!
//! The C sources are in `src/*.bpf.c` and the headers beside them; `build.rs`
//! compiles them with clang. Loaders (aya) need the bytes aligned, hence
//! [`Aligned`].

/// Bytes with the alignment an ELF parser expects.
#[repr(C, align(32))]
pub struct Aligned<B: ?Sized> {
    /// The object file.
    pub bytes: B,
}

static POP: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/pop.bpf.o")),
};

static POP_VARIANT: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/pop_variant.bpf.o")),
};

static PASS: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/pass.bpf.o")),
};

static BENCH: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/bench.bpf.o")),
};

static FIB4_TEST: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/fib4_test.bpf.o")),
};

/// Test and measurement programs for the IPv4 FIB (`fib4.h`): `fib4_get`
/// (looks up the frame's destination and writes the answer after the IPv4
/// header), `fib4_bench`, `lpm4_bench` and `base_bench` (one lookup per run
/// of a cycled random address, in the FIB, in a kernel LPM trie, and none),
/// and `xdp_fib4_loads` (only the two lookups of a frame's addresses: the
/// bench's floor), with the FIB's maps `fib4_tbl24`, `fib4_tbl8`,
/// `fib4_results`.
pub fn fib4_test_object() -> &'static [u8] {
    &FIB4_TEST.bytes
}

static FIB6_TEST: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/fib6_test.bpf.o")),
};

/// Test and measurement programs for the IPv6 FIB (`fib6.h`): `fib6_get`
/// (looks up the frame's destination and writes the route record id after
/// the IPv6 header), `fib6_bench`, `lpm6_bench` and `base6_bench` (one lookup
/// per run of a cycled random address, in the FIB, in a kernel LPM trie, and
/// none), with the FIB's maps `fib6_root`, `fib6_nodes`, `fib6_routes`.
pub fn fib6_test_object() -> &'static [u8] {
    &FIB6_TEST.bytes
}

/// Benchmark helpers: `xdp_tx` (a live-frames traffic generator) and
/// `xdp_count_drop` (a counting sink, map `sink_packets`).
pub fn bench_object() -> &'static [u8] {
    &BENCH.bytes
}

/// The pop data plane object: programs `pop_xdp` (attached) and `pop_trace`
/// (run by `popctl trace`), and all their maps.
pub fn pop_object() -> &'static [u8] {
    &POP.bytes
}

/// Another build of the pop data plane (`pop.bpf.c` with `POP_VARIANT`: one
/// extra map counting packets), for tests of data-plane upgrades.
pub fn pop_variant_object() -> &'static [u8] {
    &POP_VARIANT.bytes
}

/// A reference program `xdp_pass` that returns `XDP_PASS`, for benchmarks.
pub fn pass_object() -> &'static [u8] {
    &PASS.bytes
}

/// Name of the XDP program in [`pop_object`].
pub const PROGRAM_NAME: &str = "pop_xdp";
/// Name of the trace program in [`pop_object`]: the same pipeline, never
/// attached, that records what it does in map `trace_out` and counts nothing.
pub const TRACE_PROGRAM_NAME: &str = "pop_trace";
/// Name of the XDP program in [`pass_object`].
pub const PASS_PROGRAM_NAME: &str = "xdp_pass";
