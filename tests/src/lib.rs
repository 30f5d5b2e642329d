//! Shared helpers for pop integration tests.
