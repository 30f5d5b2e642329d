//! The popd API: protocol, client (popctl) and server (popd).
pub mod client;
pub mod protocol;
mod request_line;
pub mod server;
