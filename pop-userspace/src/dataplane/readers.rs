//! Waiting for the packets in flight: what makes a swap of map copies (ACL
//! rules, IPv6 customer tables, FIB pages, a whole data plane on upgrade)
//! safe to reuse the old copy.

/// Waits until every packet that may have read an old value is done.
///
/// XDP programs (and BPF_PROG_TEST_RUN) run inside RCU read-side sections;
/// `membarrier(MEMBARRIER_CMD_GLOBAL)` waits for an RCU grace period
/// (`synchronize_rcu`), so afterwards no packet still walks the old copy.
pub fn wait_for_readers() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes no pointers.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0 {
        // nohz_full kernels refuse CMD_GLOBAL: a packet takes microseconds.
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
