//! `pop-bench`: pop's benchmarks (issue #4), run by `cargo xtask bench`.
//!
//! 1. test_run: ns per packet through BPF_PROG_TEST_RUN for an XDP_PASS
//!    reference and pop's paths, with tables filled to realistic sizes.
//! 2. lab: 60-byte UDP through the edge namespace, received packets per second
//!    for kernel forwarding, kernel + nftables, and pop, interleaved, medians.
//! 3. control plane: route load, route change latency, scrape time, RSS.
//!
//! Prints a table; `--json FILE` writes the document described in
//! docs/benchmarks.md. `--quick` uses small sizes (a CI smoke run).
mod bgp;
mod churn;
mod control_plane;
mod cycle;
mod lab_throughput;
mod report;
mod single;
mod testrun_cost;

use std::path::PathBuf;

use anyhow::{bail, Result};

/// Options.
pub struct Opts {
    /// Small sizes, few rounds.
    pub quick: bool,
    /// Where to write JSON.
    pub json: Option<PathBuf>,
    /// Where to write the SVG plots.
    pub plots: Option<PathBuf>,
    /// Directory with popd and popctl.
    pub bin_dir: PathBuf,
    /// Which parts to run.
    pub parts: Vec<String>,
}

fn parse_args() -> Result<Opts> {
    let mut args = std::env::args().skip(1);
    let exe = std::env::current_exe()?;
    let mut o = Opts {
        quick: false,
        json: None,
        plots: None,
        bin_dir: exe.parent().expect("exe has a directory").to_path_buf(),
        parts: vec!["test_run".into(), "lab".into(), "control_plane".into()],
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--json" => {
                o.json = Some(
                    args.next()
                        .ok_or_else(|| anyhow::anyhow!("--json needs a FILE"))?
                        .into(),
                )
            }
            "--plots" => {
                o.plots = Some(
                    args.next()
                        .ok_or_else(|| anyhow::anyhow!("--plots needs a DIR"))?
                        .into(),
                )
            }
            "--only" => {
                let v = args.next().ok_or_else(|| {
                    anyhow::anyhow!("--only needs test_run,lab,control_plane,bgp,single")
                })?;
                o.parts = v.split(',').map(str::to_string).collect();
            }
            "-h" | "--help" => {
                println!(
                    "pop-bench [--quick] [--json FILE] [--plots DIR] [--only test_run,lab,control_plane,bgp,single]\n\
                     Benchmarks pop against XDP_PASS, kernel forwarding and nftables on this machine.\n\
                     `bgp` is the learned-route part of control_plane alone (full table, churn);\n\
                     `single` its customer changes alone (metrics_10k_customers_ms, customer_add_10k_ms).\n\
                     Needs root. See docs/benchmarks.md.\n\
                     Environment: POP_BENCH_OBJECT=FILE loads that object instead of pop's;\n\
                     POP_BENCH_CASES=ipv6_forward,acl (case-name prefixes) runs only the references\n\
                     and that case of test_run; POP_BENCH_BIN_B=DIR runs `single` also with the popd\n\
                     and popctl in DIR, alternating, and prints the A/B ratios; POP_BENCH_OBJECT_B=FILE[:FILE...]\n\
                     measures other builds of the data plane in the same rounds (rows CASE [B]);\n\
                     POP_BENCH_ROUNDS=N sets the rounds; POP_BENCH_V6_WRITES=one|batches:N writes the\n\
                     IPv6 table in one bulk write, or in writes of N routes (default: one per table size);\n\
                     POP_BENCH_LAB_CASES=pop,=pop [B (case-name prefixes, `=NAME` exactly) keeps those lab\n\
                     cases besides the references; POP_BENCH_LAB_WINDOW_MS=N sets the lab window in ms;\n\
                     POP_BENCH_ACL_ONLY=1 runs only the ACL keys of control_plane (with POP_BENCH_BIN_B:\n\
                     both builds, alternating); POP_BENCH_APPLY_ONLY=1 only the 1M-route apply."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(o)
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pop-bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&opts) {
        eprintln!("pop-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run(o: &Opts) -> Result<()> {
    if !pop_lab::is_root() {
        bail!("benchmarks need root (BPF, network namespaces): run `cargo xtask bench` as root");
    }
    let mut doc = report::Report::default();
    if o.parts.iter().any(|p| p == "test_run") {
        println!("== test_run: ns per packet (BPF_PROG_TEST_RUN, medians of interleaved rounds)");
        doc.test_run = testrun_cost::run(o.quick)?;
        report::print_test_run(&doc.test_run);
        if let Some(dir) = &o.plots {
            report::plots(&doc.test_run, dir)?;
        }
    }
    if o.parts.iter().any(|p| p == "lab") {
        println!("\n== lab: 60-byte UDP through the edge namespace (received pps, medians)");
        doc.lab = lab_throughput::run(o)?;
        report::print_lab(&doc.lab);
    }
    if o.parts.iter().any(|p| p == "control_plane") {
        println!("\n== control plane");
        doc.control_plane = control_plane::run(o)?;
        report::print_control_plane(&doc.control_plane, o.quick);
    } else if o.parts.iter().any(|p| p == "bgp") {
        // The BGP part of the control plane alone: full table and churn.
        println!("\n== control plane: learned routes only");
        let b = bgp::run(o)?;
        let cp = &mut doc.control_plane;
        cp.bgp_full_table_ratio = b.full_table_ratio;
        cp.route_churn_per_s = b.churn_per_s;
        cp.route_churn_lag_p99_ms = b.churn_lag_p99_ms;
        cp.popd_rss_mb_full_table = b.rss_mb;
        cp.bgp_routes = b.routes;
        report::print_control_plane(&doc.control_plane, o.quick);
    }
    if o.parts.iter().any(|p| p == "single") && !o.parts.iter().any(|p| p == "control_plane") {
        // The customer changes of the control plane alone.
        println!("\n== control plane: customer changes only");
        doc.control_plane = single::run(o)?;
        report::print_control_plane(&doc.control_plane, o.quick);
    }
    if let Some(path) = &o.json {
        std::fs::write(path, serde_json::to_string_pretty(&doc.to_json())?)?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}
