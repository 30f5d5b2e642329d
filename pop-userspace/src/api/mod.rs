//! The popd API: protocol, client (popctl) and server (popd).
pub mod client;
pub mod protocol;
pub mod server;
