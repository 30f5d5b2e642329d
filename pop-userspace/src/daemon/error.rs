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
    /// `--socket-group` cannot be used.
    #[error(transparent)]
    SocketGroup(#[from] crate::api::server::GroupError),
    /// The data plane was removed (`shutdown --detach` in progress).
    #[error("data plane removed")]
    Removed,
    /// `route del` of a prefix with no configured route.
    #[error("route {prefix}: no such route")]
    NoSuchRoute {
        /// The prefix as given.
        prefix: String,
    },
    /// `customer add` of a name that exists.
    #[error("customer {name}: already exists")]
    CustomerExists {
        /// The customer's name.
        name: String,
    },
    /// A customer name that does not exist (`customer del`, `stats`).
    #[error("customer {name}: no such customer")]
    NoSuchCustomer {
        /// The name as given.
        name: String,
    },
    /// `acl add` with a priority another rule has.
    #[error("acl {priority}: priority {priority} is taken")]
    AclPriorityTaken {
        /// The priority.
        priority: u32,
    },
    /// `acl del` of a priority no rule has.
    #[error("acl {priority}: no such rule")]
    NoSuchAcl {
        /// The priority.
        priority: u32,
    },
    /// No id left for another customer, interface or next hop.
    #[error("{what}: table full ({entries} entries)")]
    IdsFull {
        /// "customers", "interfaces" or "next hops".
        what: &'static str,
        /// How many ids there are.
        entries: u32,
    },
    /// `route show --source` other than config or kernel.
    #[error("route show: source \"{0}\": expected config or kernel")]
    RouteSource(String),
    /// `route get` of something that is not an address.
    #[error("address \"{0}\": not an IP address")]
    NotAnAddress(String),
    /// `route get` of an address no route covers.
    #[error("no route to {0}")]
    NoRoute(std::net::IpAddr),
    /// `trace --in` names an interface the kernel does not have.
    #[error("trace: --in {0}: no such device")]
    TraceNoDevice(String),
    /// A `trace` request that describes no packet pop can build.
    #[error("{0}")]
    Trace(String),
    /// `trace` after the data plane was removed.
    #[error("trace: the data plane is not loaded")]
    TraceNoDataplane,
    /// A request of the wrong kind for the path it took (a programming
    /// error, named for the log): a capture is a stream, a route change is
    /// not a config edit and the other way round.
    #[error("{0}")]
    WrongRequest(&'static str),
}
