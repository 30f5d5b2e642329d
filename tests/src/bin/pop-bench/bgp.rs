//! Learned routes at scale, in a lab of their own: bird2 announces a full
//! table (1M IPv4 + 200k IPv6; 20k + 4k with --quick) over eBGP into kernel
//! table 100.
//!
//! - `bgp_full_table_ratio`: seconds from bird's start until pop holds the whole
//!   table (its learned counts match and random `route get`s agree), divided by
//!   the same until the kernel table holds it with popd off, in the same run.
//! - `route_churn_per_s`, `route_churn_lag_p99_ms`: the highest rate of route
//!   updates written into the followed table by a netlink writer that popd
//!   absorbs with an update-to-map lag p99 ≤ 1 s and no loss on a stable flow
//!   (see churn.rs), on top of that full table.
//! - `popd_rss_mb_full_table`: popd's VmHWM with the full table learned.
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pop_lab::bgp::{self, Bgp, Table, KERNEL_TABLE};
use pop_lab::popd::{metric_value, Popd};
use pop_lab::topology::EDGE;
use pop_lab::Lab;

use crate::Opts;

/// What this part measures.
#[derive(Clone, Copy, Debug, Default)]
pub struct BgpBench {
    /// Pop's time to hold the table ÷ the kernel's.
    pub full_table_ratio: Option<f64>,
    /// Learned updates per second absorbed with lag p99 ≤ 1 s and no loss.
    pub churn_per_s: Option<f64>,
    /// The update-to-map lag p99 at that rate, ms.
    pub churn_lag_p99_ms: Option<f64>,
    /// popd VmHWM in MB with the table learned.
    pub rss_mb: Option<f64>,
    /// IPv4 + IPv6 routes announced.
    pub routes: u64,
}

/// Runs in its own lab.
pub fn run(o: &Opts) -> Result<BgpBench> {
    let lab = Lab::new("pbbgp-");
    lab.up().context("lab up")?;
    let r = run_in_lab(o, &lab);
    let _ = lab.down();
    r
}

fn learned(popd: &Popd) -> Option<(f64, f64, f64)> {
    let m = popd.metrics().ok()?;
    let count = |family| {
        metric_value(
            &m,
            "pop_routes",
            &[("family", family), ("source", "kernel")],
        )
    };
    Some((
        count("ipv4")?,
        count("ipv6")?,
        metric_value(&m, "pop_kernel_routes_synced", &[])?,
    ))
}

fn wait_learned(popd: &Popd, v4: usize, v6: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if learned(popd) == Some((v4 as f64, v6 as f64, 1.0)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("popd did not learn {v4} + {v6} routes: {:?}", learned(popd));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn run_in_lab(o: &Opts, lab: &Lab) -> Result<BgpBench> {
    let table = if o.quick {
        Table {
            v4: 20_000,
            v6: 4_000,
            churn_v4: 0,
        }
    } else {
        Table {
            v4: 1_000_000,
            v6: 200_000,
            churn_v4: 0,
        }
    };
    let timeout = Duration::from_secs(900);
    let table_arg = KERNEL_TABLE.to_string();
    // The kernel alone.
    let t = Instant::now();
    let b = Bgp::start(lab, table)?;
    let (a4, a6) = b.announced();
    b.wait_kernel_routes(a4, a6, timeout)?;
    let kernel_s = t.elapsed().as_secs_f64();
    drop(b);
    for family in ["-4", "-6"] {
        let _ = lab.exec(EDGE, &["ip", family, "route", "flush", "table", &table_arg]);
    }
    eprintln!("  bird → kernel table: {a4} + {a6} routes in {kernel_s:.1} s");

    // With popd following the table.
    let state = tempfile::tempdir()?;
    let mut popd = Popd::new(lab, &o.bin_dir, state.path(), &bgp::popd_config())?;
    popd.start()?;
    let mut out = BgpBench {
        routes: (a4 + a6) as u64,
        ..Default::default()
    };
    let result = (|| -> Result<()> {
        let t = Instant::now();
        let _b = Bgp::start(lab, table)?;
        wait_learned(&popd, a4, a6, timeout)?;
        let pop_s = t.elapsed().as_secs_f64();
        // Random route gets agree (checked after the clock stopped: each is a
        // popctl round trip).
        for i in 0..20u32 {
            let n = (i.wrapping_mul(2_654_435_761)) % table.v4;
            let prefix = bgp::generated_v4(n);
            let addr = prefix.replace(".0/24", ".7");
            let got = popd.popctl_json(&["route", "get", &addr])?;
            if got["prefix"] != prefix.as_str() || got["source"] != "kernel" {
                bail!("route get {addr}: {got}, want {prefix} from the kernel");
            }
        }
        out.full_table_ratio = Some(pop_s / kernel_s);
        let pid = popd.pid().context("popd pid")?;
        out.rss_mb = Some(crate::control_plane::peak_rss_mb(pid)?);
        eprintln!(
            "  bird → kernel → pop: {pop_s:.1} s (ratio {:.2}); popd VmHWM {:.0} MB",
            pop_s / kernel_s,
            out.rss_mb.unwrap_or_default()
        );

        let settle = || wait_learned(&popd, a4, a6, Duration::from_secs(120));
        let churn = crate::churn::run(lab, &popd, o.quick, &settle)?;
        out.churn_per_s = churn.per_s;
        out.churn_lag_p99_ms = churn.lag_p99_ms;
        match (churn.per_s, churn.lag_p99_ms) {
            (Some(rate), Some(p99)) => eprintln!(
                "  churn: {rate:.0} updates/s absorbed with lag p99 {p99:.0} ms and no loss"
            ),
            _ => eprintln!("  churn: not even the lowest rate stayed within the goals"),
        }
        Ok(())
    })();
    let _ = popd.shutdown_detach();
    result.map(|()| out)
}
