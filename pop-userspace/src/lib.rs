//! pop's controller library: config model and validation, the data plane (load,
//! attach, pin, maps), durable state and reconciliation, the API, metrics and
//! netlink. The binaries `popd` and `popctl` are thin layers over it.
pub mod api;
pub mod config;
