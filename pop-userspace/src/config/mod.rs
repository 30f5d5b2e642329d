//! Config model (CONTRACT §3), validation and diffing.
pub mod diff;
pub mod model;
pub mod validate;
