//! The parts of xtask that tests use too: building the Debian package
//! ([`deb`]), so the package tests check exactly what `cargo xtask dist` ships.
pub mod deb;
