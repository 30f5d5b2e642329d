//! Admission control compiled for the data plane (anti-spoofing, ACLs and
//! policers, in the order a packet meets them): the ACL classifier
//! ([`tree`]) and anti-spoofing tables ([`spoof`]), computed from the config.
//! The maps they go into are written through
//! [`crate::dataplane::acl::AclMaps`] (re-exported here), which the data
//! plane's [`crate::dataplane::Maps`] owns; the per-rule hit counters
//! ([`hits`]) and policer values ([`police`]) live in `dataplane` too.
pub mod filter;
pub mod incremental;
pub mod spoof;
pub mod tree;

pub use crate::dataplane::acl::{AclDelta, AclMaps, AclStats, CompiledAcl, SpoofTables};
pub use crate::dataplane::acl_hits as hits;
pub use crate::dataplane::police::{self, policer};
pub use crate::dataplane::wait_for_readers;
pub use spoof::spoof_tables;
pub use tree::{compile, key_v4, key_v6, AclKey};
