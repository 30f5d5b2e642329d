//! pop's controller library: everything `popd` and `popctl` are made of.
//!
//! Imports flow downward only: binaries → `daemon` → `api::server`/`cli` →
//! `api::protocol`/`capture`/`metrics` → `acl`/`state`/`sflow` → `config` →
//! `dataplane`/`netlink` → `pop-common` (docs/architecture.md, "Modules and
//! layers").
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
#[cfg(test)]
mod test_rng;
