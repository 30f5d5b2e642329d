//! Follows the kernel routing table of `[kernel_routes]`: a thread reads route
//! notifications, batches them, and hands each batch to the controller, which
//! writes only the affected map entries. When the kernel drops notifications
//! (ENOBUFS: the socket's buffer overflowed in a burst), or the table or the
//! ports pop forwards out of change, the table is dumped again into a fresh
//! copy and only the differences are written: the maps keep forwarding by the
//! old entries meanwhile.
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::controller::Controller;
use super::learned::{Pinned, Staged};
use crate::netlink::routes::{self, Received, RouteMsg, RouteSocket};

/// Whether the learned routes equal the kernel table (1) or a dump is due or
/// under way (0); exported as `pop_kernel_routes_synced`.
pub static SYNCED: AtomicBool = AtomicBool::new(false);
/// Dumps after the first one (ENOBUFS, table or port changes);
/// `pop_kernel_routes_resyncs_total`.
pub static RESYNCS: AtomicU64 = AtomicU64::new(0);

/// Notifications applied under one lock of the controller, at most.
const BATCH: usize = 8192;
/// Default receive buffer of the notification socket: a few seconds of a
/// BGP peer's flap at full speed.
pub const DEFAULT_RCVBUF: usize = 64 << 20;

/// The route sockets: subscribed before the first dump, so no change between
/// the dump and the follow is missed.
pub struct Follower {
    sub: RouteSocket,
    dumper: RouteSocket,
}

impl Follower {
    /// Subscribes to route changes with a receive buffer of `rcvbuf` bytes.
    pub fn open(rcvbuf: usize) -> io::Result<Self> {
        Ok(Self {
            sub: RouteSocket::subscribe(rcvbuf)?,
            dumper: RouteSocket::dumper()?,
        })
    }

    /// Follows the table until the process exits (run on its own thread).
    /// First the initial sync: the table is dumped while the API already
    /// answers and the pinned entries keep forwarding; then a data-plane
    /// upgrade waiting for it is finished.
    pub fn run(mut self, ctl: Arc<Mutex<Controller>>, changed: Arc<Notify>) {
        fn lock(c: &Mutex<Controller>) -> std::sync::MutexGuard<'_, Controller> {
            c.lock().unwrap_or_else(|p| p.into_inner())
        }
        let mut inputs = lock(&ctl).learned_inputs();
        let dir = lock(&ctl).learned_pinned_dir();
        if let Some(dir) = dir {
            // What the previous run left in the maps: read here, not under the
            // lock (a full table takes seconds), so the API answers meanwhile.
            let started = Instant::now();
            match Pinned::read_routes(&dir) {
                Ok(p) => {
                    tracing::info!(
                        entries = p.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "pinned route entries read back"
                    );
                    lock(&ctl).learned_attach_pinned(p);
                }
                Err(e) => tracing::error!("reading the pinned routes back: {e}"),
            }
            self.resync(inputs.0, &ctl, &changed, true);
            if let Err(e) = lock(&ctl).finish_start() {
                tracing::error!("finishing the data-plane upgrade: {e}");
            }
        }
        let mut resync = false;
        let mut buf = vec![0u8; 1 << 20];
        let mut batch: Vec<RouteMsg> = Vec::with_capacity(BATCH);
        let mut checked = Instant::now();
        loop {
            let timeout = if batch.is_empty() { 200 } else { 0 };
            let idle = match self.sub.recv(&mut buf, timeout) {
                Ok(Received::Data(n)) => {
                    if let Some(table) = inputs.0 {
                        for (kind, _, payload) in routes::messages(&buf[..n]) {
                            if let Some(m) = routes::parse(kind, payload) {
                                if m.table() == table {
                                    batch.push(m);
                                }
                            }
                        }
                    }
                    false
                }
                Ok(Received::Timeout) => true,
                Ok(Received::Overflow) => {
                    tracing::warn!(
                        "kernel route notifications were lost (socket buffer full): \
                         dumping the table again"
                    );
                    SYNCED.store(false, Ordering::Relaxed);
                    resync = true;
                    true
                }
                Err(e) => {
                    tracing::error!("reading kernel route notifications: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                    true
                }
            };
            if !batch.is_empty() && (idle || batch.len() >= BATCH) {
                if lock(&ctl).learned_apply(&batch) {
                    changed.notify_one();
                }
                batch.clear();
            }
            if checked.elapsed() >= Duration::from_secs(1) {
                checked = Instant::now();
                let now = {
                    let mut c = lock(&ctl);
                    c.learned_retry();
                    c.learned_inputs()
                };
                if now != inputs {
                    inputs = now;
                    resync = true;
                }
            }
            if resync && batch.is_empty() {
                resync = false;
                self.resync(inputs.0, &ctl, &changed, false);
            }
        }
    }

    /// Dumps the table into a fresh copy (in chunks, so the controller lock is
    /// never held for the whole dump) and swaps it in, writing differences.
    fn resync(
        &mut self,
        table: Option<u32>,
        ctl: &Arc<Mutex<Controller>>,
        changed: &Notify,
        first: bool,
    ) {
        let lock = || ctl.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        // Empty the subscription first: after an overflow the kernel reports
        // ENOBUFS only once until the queue has been drained, so notifications
        // dropped during the dump would go unnoticed. What is read here is
        // older than the dump, which covers it.
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(Received::Data(_) | Received::Overflow) = self.sub.recv(&mut buf, 0) {}
        let mut st = Staged::default();
        while let Some(table) = table {
            let mut chunk: Vec<RouteMsg> = Vec::with_capacity(4096);
            let res = self.dumper.dump(table, &mut |m| {
                chunk.push(m);
                if chunk.len() == chunk.capacity() {
                    lock().learned_stage(&mut st, &chunk);
                    chunk.clear();
                }
            });
            match res {
                Ok(()) => {
                    lock().learned_stage(&mut st, &chunk);
                    break;
                }
                Err(e) => {
                    tracing::error!(table, "dumping kernel routing table: {e}; retrying");
                    SYNCED.store(false, Ordering::Relaxed);
                    lock().learned_discard(std::mem::take(&mut st));
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        let routes = st.len();
        if lock().learned_commit(st) {
            changed.notify_one();
        }
        if !first {
            RESYNCS.fetch_add(1, Ordering::Relaxed);
        }
        SYNCED.store(table.is_some(), Ordering::Relaxed);
        tracing::info!(
            table,
            routes,
            ms = started.elapsed().as_millis() as u64,
            "{}",
            if first {
                "kernel routes learned"
            } else {
                "kernel routes re-synced"
            }
        );
    }
}
