//! BPF_PROG_TEST_RUN harness (owned by the packet-test work).
