//! Network-namespace lab (owned by the lab/xtask work).
