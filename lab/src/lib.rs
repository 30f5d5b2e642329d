//! Network-namespace lab (see docs/operations.md).
