//! `cargo xtask`: build, lab, demo, test, fuzz, bench and dist for pop.
//!
//! Everything that builds first checks (and, as root on Debian, installs) the tools
//! it needs; everything that touches the network (lab, demo, test) needs root.
mod bench;
mod demo;
mod dist;
mod fuzz;
mod lab;
mod prereqs;
mod test;
mod workspace;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// pop's developer tasks.
#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, lab, demo, test, bench and dist for pop"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the workspace (the XDP object, popd, popctl).
    Build {
        /// Optimised build.
        #[arg(long)]
        release: bool,
    },
    /// Bring the network-namespace PoP up or down, or show it (needs root).
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
    /// Build, bring up the lab, push config with popctl, send traffic, show counters
    /// and metrics, tear down (needs root).
    Demo,
    /// fmt, clippy, build and every test including end-to-end (needs root).
    Test,
    /// Benchmarks: test_run cost vs XDP_PASS, lab throughput vs kernel forwarding
    /// and nftables, control plane (needs root; see docs/benchmarks.md).
    Bench {
        /// Small sizes on the debug build, under 3 minutes (what CI runs).
        #[arg(long)]
        quick: bool,
        /// Write the results as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Differential fuzzing: random frames through the XDP program and the
    /// reference model, any difference fails with a reproduction (needs root).
    Fuzz {
        /// How many frames (each `cargo test` runs 1,000,000).
        #[arg(long, default_value_t = 10_000_000)]
        frames: u64,
        /// Seed of the tables and frames (default: the test's fixed seed).
        #[arg(long)]
        seed: Option<u64>,
        /// Optimised build (the model and the generator run faster; the first
        /// build takes minutes).
        #[arg(long)]
        release: bool,
    },
    /// Release build, Debian package target/dist/pop_<version>-1_amd64.deb and
    /// tarball target/dist/pop-<version>-x86_64.tar.gz.
    Dist,
}

#[derive(Subcommand)]
enum LabAction {
    /// Build, create the namespaces and links, start popd with the lab config.
    Up {
        /// Only the namespaces and links: no build, no popd.
        #[arg(long)]
        no_popd: bool,
        /// Run bird2 on the upstream announcing N IPv4 prefixes (and N/5 IPv6)
        /// over eBGP to a bird2 on the edge, which exports them into kernel
        /// table 100; popd learns them ([kernel_routes] table = 100) instead of
        /// having default routes.
        #[arg(long, value_name = "N")]
        bgp: Option<u32>,
    },
    /// Stop popd (detaching XDP) and remove everything the lab created.
    Down,
    /// Show namespaces, addresses, XDP attachments and popd.
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Build { release } => prereqs::ensure_prereqs("build", prereqs::Needs::Build)
            .and_then(|()| workspace::build(release)),
        Task::Lab { action } => lab::run(action),
        Task::Demo => demo::run(),
        Task::Test => test::run(),
        Task::Bench { quick, json } => bench::run(quick, json),
        Task::Fuzz {
            frames,
            seed,
            release,
        } => fuzz::run(frames, seed, release),
        Task::Dist => dist::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
