//! Config model (the config file in docs/reference.md), validation and diffing.
pub mod diff;
pub mod model;
pub mod routes;
pub mod validate;
