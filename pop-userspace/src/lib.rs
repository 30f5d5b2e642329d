//! pop's controller library: everything `popd` and `popctl` are made of.
//!
//! Imports flow downward: binaries → `daemon`/`cli` → `api`/`state`/`metrics` →
//! `dataplane`/`netlink`/`config` → `pop-common`.
pub mod acl;
pub mod api;
pub mod capture;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod docgen;
pub mod metrics;
pub mod netlink;
pub mod sflow;
pub mod state;
