//! Waiting for a condition in the end-to-end tests and benchmarks.
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Polls `ok` every `every` until it says true; fails naming `what` once
/// `timeout` passed, or with the first error `ok` returns.
pub fn until(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut ok: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ok()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(every);
    }
}
