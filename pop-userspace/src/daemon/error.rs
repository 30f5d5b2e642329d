//! The controller's errors: one line each, naming the element and the limit
//! or the cause (`customer acme: rate_bps 100000000000000 exceeds the maximum
//! of 10000000000000`, `interface eth9: no such device`).
use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::config::validate::ConfigError;
use crate::dataplane::DataplaneError;
use crate::netlink::NetlinkError;
use crate::state::StateError;

/// Why popd refused a start, a change or a request.
#[derive(Debug, Error)]
pub enum ControlError {
    /// The desired state breaks a rule of the config (syntax, references,
    /// ranges, map capacities that the config alone determines).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The config file given with `--config` cannot be used.
    #[error("config {}: {reason}", path.display())]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// Why (read error or [`ConfigError`]), one line.
        reason: String,
    },
    /// The persisted desired state cannot be used.
    #[error("state {}: {reason}", path.display())]
    StateFile {
        /// The file.
        path: PathBuf,
        /// Why, one line.
        reason: String,
    },
    /// An `[[interfaces]]` entry the kernel does not have.
    #[error("interface {name}: no such device")]
    NoSuchInterface {
        /// Interface name.
        name: String,
    },
    /// A route whose `dev` the kernel does not have.
    #[error("route {prefix}: dev {dev:?}: no such device")]
    NoSuchRouteDev {
        /// The route's prefix.
        prefix: String,
        /// Its `dev`.
        dev: String,
    },
    /// More entries than one of the data plane's maps holds, once the
    /// desired state meets the kernel (VLAN devices, ACL tree size, ...).
    #[error("too many {what}: {count} exceeds the maximum of {max} (map {map})")]
    Capacity {
        /// What is counted, e.g. "ACL tree nodes".
        what: &'static str,
        /// The map that holds them.
        map: &'static str,
        /// How many the desired state needs.
        count: usize,
        /// The map's capacity.
        max: usize,
    },
    /// The ACL rules cannot be compiled.
    #[error("{0}")]
    Acl(String),
    /// The data plane (load, attach, map writes) failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// Persisting the desired state failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// Talking to the kernel over netlink failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// A socket or listener could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being set up, e.g. "socket /run/pop/popd.sock".
        what: String,
        /// The cause.
        source: io::Error,
    },
    /// The data plane was removed (`shutdown --detach` in progress).
    #[error("data plane removed")]
    Removed,
    /// A request that makes no sense for the current state (no such route,
    /// priority taken, ...), or an error of a layer that still reports text.
    #[error("{0}")]
    Rejected(String),
}

impl From<String> for ControlError {
    fn from(message: String) -> Self {
        ControlError::Rejected(message)
    }
}

impl From<&str> for ControlError {
    fn from(message: &str) -> Self {
        ControlError::Rejected(message.to_string())
    }
}
