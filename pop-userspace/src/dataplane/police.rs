//! Per-customer policer values (step 6 of the packet path; the bucket logic is in
//! `pop-ebpf/src/police.h`).
use pop_common::PopPolicer;

use super::DataplaneError;

/// Nanoseconds per second: tokens are bytes * 8 * this (bit-nanoseconds).
const NS_PER_SEC: u64 = 1_000_000_000;

/// Largest `burst_bytes` the bucket holds without overflowing 64 bits.
pub const MAX_BURST_BYTES: u64 = 1 << 31;

/// Largest `rate_bps` (10 Tbit/s) the refill can multiply without overflow.
pub const MAX_RATE_BPS: u64 = 10_000_000_000_000;

/// A full token bucket for `rate_bps` and `burst_bytes`.
pub fn policer(rate_bps: u64, burst_bytes: u64) -> Result<PopPolicer, DataplaneError> {
    if rate_bps == 0 || rate_bps > MAX_RATE_BPS {
        return Err(DataplaneError::Policer {
            field: "rate_bps",
            value: rate_bps,
            max: MAX_RATE_BPS,
        });
    }
    if burst_bytes == 0 || burst_bytes > MAX_BURST_BYTES {
        return Err(DataplaneError::Policer {
            field: "burst_bytes",
            value: burst_bytes,
            max: MAX_BURST_BYTES,
        });
    }
    let capacity = burst_bytes * 8 * NS_PER_SEC;
    Ok(PopPolicer {
        lock: 0,
        pad: 0,
        rate_bps,
        capacity,
        fill_ns: capacity.div_ceil(rate_bps),
        tokens: capacity,
        last_ns: 0,
    })
}

/// Whether two policers have the same configuration (ignoring bucket state):
/// rewriting an unchanged policer would refill its bucket.
pub fn same_config(a: &PopPolicer, b: &PopPolicer) -> bool {
    a.rate_bps == b.rate_bps && a.capacity == b.capacity && a.fill_ns == b.fill_ns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_bucket_and_fill_time() {
        let p = policer(8_000_000, 15_000).unwrap();
        assert_eq!(p.capacity, 15_000 * 8 * NS_PER_SEC);
        assert_eq!(p.tokens, p.capacity);
        // 15 kB at 1 byte/us: 15 ms.
        assert_eq!(p.fill_ns, 15_000_000);
    }

    #[test]
    fn limits_name_the_field() {
        assert_eq!(
            policer(0, 1).unwrap_err().to_string(),
            format!("rate_bps 0: must be between 1 and {MAX_RATE_BPS}")
        );
        assert!(policer(1, MAX_BURST_BYTES + 1)
            .unwrap_err()
            .to_string()
            .starts_with("burst_bytes"));
    }
}
