//! Shared helpers for pop's integration tests and benchmarks.
//!
//! - [`testrun`]: load pop's XDP object, fill its maps, and run packets through it
//!   with BPF_PROG_TEST_RUN.
//! - [`model`]: a reference model of the packet pipeline; [`fuzz`]: the
//!   differential fuzzer that runs random frames through the program and the model;
//!   [`rng`]: the seeded PRNG of the table and address tests; [`lpm`]: the
//!   reference longest-prefix match of the FIB tests.
//! - [`lab`]: build and tear down the network-namespace PoP (upstream, edge,
//!   customers) used by the end-to-end tests, `cargo xtask lab` and the demo;
//!   [`lab_env`]: a lab with a popd in it, torn down when dropped;
//!   [`kernel_routes`]: routes written into the kernel table popd follows;
//!   [`wait`]: polling until a condition holds.
pub mod fuzz;
pub mod kernel_routes;
pub mod lab;
pub mod lab_env;
pub mod lpm;
pub mod model;
pub mod rng;
pub mod testrun;
pub mod wait;
