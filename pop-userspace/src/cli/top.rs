//! `popctl top`: polls `Stats` and draws per-customer rates from the deltas.
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::render::{write_all, Table};
use super::{call_ok, CliError};
use crate::api::protocol::{CustomerStats, Request};

/// ANSI: cursor home, clear screen.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// One customer's rates over the last interval (also the `-j` shape).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Rates {
    /// Customer name.
    pub name: String,
    /// Packets per second towards the customer.
    pub pps_in: f64,
    /// Bits per second towards the customer.
    pub bps_in: f64,
    /// Packets per second from the customer.
    pub pps_out: f64,
    /// Bits per second from the customer.
    pub bps_out: f64,
    /// Dropped packets per second, all reasons.
    pub drops_pps: f64,
}

/// Rates between two samples taken `seconds` apart. Counters that went backwards
/// (popd restarted, customer re-created) count as zero.
pub fn rates(prev: &[CustomerStats], now: &[CustomerStats], seconds: f64) -> Vec<Rates> {
    let prev: HashMap<&str, &CustomerStats> = prev.iter().map(|s| (s.name.as_str(), s)).collect();
    let seconds = seconds.max(1e-6);
    now.iter()
        .map(|s| {
            let p = prev.get(s.name.as_str());
            let delta = |f: fn(&CustomerStats) -> u64| {
                p.map_or(0, |p| f(s).saturating_sub(f(p))) as f64 / seconds
            };
            let drops = |c: &CustomerStats| c.drops.values().sum::<u64>();
            Rates {
                name: s.name.clone(),
                pps_in: delta(|c| c.packets_in),
                bps_in: delta(|c| c.bytes_in) * 8.0,
                pps_out: delta(|c| c.packets_out),
                bps_out: delta(|c| c.bytes_out) * 8.0,
                drops_pps: p.map_or(0, |p| drops(s).saturating_sub(drops(p))) as f64 / seconds,
            }
        })
        .collect()
}

/// `1234567.0` → `1.23M` (SI, 1000-based, like link speeds).
pub fn si(value: f64) -> String {
    const UNITS: [(f64, &str); 4] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    for (scale, unit) in UNITS {
        if value >= scale {
            return format!("{:.2}{unit}", value / scale);
        }
    }
    format!("{value:.0}")
}

fn fetch(socket: &Path) -> Result<Vec<CustomerStats>, CliError> {
    let data = call_ok(socket, &Request::Stats { customer: None })?;
    serde_json::from_value(data).map_err(|e| CliError::BadData {
        what: "stats",
        error: e.to_string(),
    })
}

/// Runs the loop: `iterations` redraws (forever when `None`), `interval` apart.
/// With `json`, prints one JSON array of [`Rates`] per line instead of a screen.
pub fn run(
    socket: &Path,
    iterations: Option<u64>,
    interval: Duration,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut prev = fetch(socket)?;
    let mut prev_at = Instant::now();
    let mut drawn = 0u64;
    while iterations.is_none_or(|n| drawn < n) {
        std::thread::sleep(interval);
        let now = fetch(socket)?;
        let now_at = Instant::now();
        let rates = rates(&prev, &now, now_at.duration_since(prev_at).as_secs_f64());
        let text = if json {
            format!("{}\n", serde_json::to_string(&rates).unwrap_or_default())
        } else {
            let mut t = Table::new(&[
                "CUSTOMER",
                "PPS_IN",
                "BPS_IN",
                "PPS_OUT",
                "BPS_OUT",
                "DROPS_PPS",
            ]);
            for r in &rates {
                t.row(vec![
                    r.name.clone(),
                    si(r.pps_in),
                    si(r.bps_in),
                    si(r.pps_out),
                    si(r.bps_out),
                    si(r.drops_pps),
                ]);
            }
            format!(
                "{CLEAR}popctl top: every {:.1} s, Ctrl-C to quit\n\n{}",
                interval.as_secs_f64(),
                t.render()
            )
        };
        write_all(out, &text)?;
        (prev, prev_at) = (now, now_at);
        drawn += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, pkts: u64, bytes: u64, drops: u64) -> CustomerStats {
        CustomerStats {
            name: name.into(),
            packets_in: pkts,
            bytes_in: bytes,
            packets_out: pkts / 2,
            bytes_out: bytes / 2,
            drops: [("acl".to_string(), drops)].into(),
        }
    }

    #[test]
    fn rates_are_deltas_per_second() {
        let prev = [sample("acme", 100, 10_000, 1)];
        let now = [sample("acme", 300, 30_000, 5), sample("new", 50, 5000, 0)];
        let r = rates(&prev, &now, 2.0);
        assert_eq!(r[0].pps_in, 100.0);
        assert_eq!(r[0].bps_in, 80_000.0);
        assert_eq!(r[0].pps_out, 50.0);
        assert_eq!(r[0].drops_pps, 2.0);
        // No previous sample: no rate yet rather than the whole counter.
        assert_eq!(r[1].pps_in, 0.0);
    }

    #[test]
    fn si_units() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(999.0), "999");
        assert_eq!(si(1_234_567.0), "1.23M");
        assert_eq!(si(10e9), "10.00G");
    }
}
