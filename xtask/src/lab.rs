//! `cargo xtask lab up|down|status`: the namespace PoP kept up for exploring.
use std::path::Path;

use anyhow::Result;
use pop_lab::{bgp, topology, Lab, Popd};

use crate::{
    prereqs::{self, Needs},
    workspace::{self, step},
    LabAction,
};

/// Namespace prefix of the lab and the demo.
pub const PREFIX: &str = "pop-";
/// popd's state dir, config, socket and log for the lab and the demo.
pub const STATE_DIR: &str = "/run/pop-lab";

/// Runs one `lab` action.
pub fn run(action: LabAction) -> Result<()> {
    let lab = Lab::new(PREFIX);
    match action {
        LabAction::Up { no_popd, bgp } => up(&lab, no_popd, bgp),
        LabAction::Down => {
            prereqs::require_root("lab down");
            down(&lab)
        }
        LabAction::Status => {
            prereqs::require_root("lab status");
            status(&lab)
        }
    }
}

fn up(lab: &Lab, no_popd: bool, bgp: Option<u32>) -> Result<()> {
    prereqs::ensure_prereqs("lab up", Needs::Lab)?;
    if !no_popd {
        workspace::build(false)?;
    }
    stop_popd(lab);
    step(&format!(
        "creating the lab ({PREFIX}up, {PREFIX}edge, {PREFIX}c1, {PREFIX}c2)"
    ));
    lab.up()?;
    if let Err(e) = workspace::attach_host_xdp(lab) {
        println!("note: {e:#}; ICMP errors pop sends (traceroute) may reach the hosts late");
    }
    if no_popd {
        println!(
            "lab is up without popd (kernel forwarding on the edge is off: nothing forwards yet)"
        );
        return Ok(());
    }
    let config = match bgp {
        Some(n) => {
            step(&format!(
                "starting bird2 on {PREFIX}up (announcing {n} IPv4 and {} IPv6 prefixes) \
                 and on {PREFIX}edge (exporting into kernel table {})",
                n / 5,
                bgp::KERNEL_TABLE
            ));
            let table = bgp::Table {
                v4: n,
                v6: n / 5,
                churn_v4: 0,
            };
            let b = match bgp::Bgp::start(lab, table) {
                Ok(b) => b,
                Err(e) => {
                    let _ = lab.down();
                    return Err(e);
                }
            };
            let (v4, v6) = b.announced();
            let timeout = std::time::Duration::from_secs(60 + u64::from(n) / 20_000);
            if let Err(e) = b.wait_kernel_routes(v4, v6, timeout) {
                let _ = lab.down();
                return Err(e);
            }
            b.release();
            bgp::popd_config()
        }
        None => topology::full_config(),
    };
    step("starting popd in the edge namespace with the lab config");
    let mut popd = Popd::new(
        lab,
        &workspace::debug_bin_dir(),
        Path::new(STATE_DIR),
        &config,
    )?;
    if let Err(e) = popd.start() {
        let _ = lab.down();
        return Err(e);
    }
    let socket = popd.socket();
    let log = popd.log_path();
    let config = popd.config_path().to_path_buf();
    let pid = popd.release();
    println!(
        "popd is running (pid {})",
        pid.map_or("?".into(), |p| p.to_string())
    );
    println!(
        "\nexplore:\n  config    {config}\n  log       {log}\n  popctl    target/debug/popctl --socket {socket} status\n  \
         traffic   nsenter --net=/run/netns/{PREFIX}c1 ping {v4}\n  \
         metrics   nsenter --net=/run/netns/{PREFIX}edge curl -s http://{metrics}/metrics\n  \
         learned   target/debug/popctl --socket {socket} route show --source kernel (with --bgp)\n  \
         tear down cargo xtask lab down",
        config = config.display(),
        log = log.display(),
        socket = socket.display(),
        v4 = topology::INTERNET_V4,
        metrics = topology::METRICS_ADDR,
    );
    Ok(())
}

/// Stops a popd left running by `lab up` or a failed demo, detaching XDP; problems
/// are reported, not fatal (the namespaces are removed next anyway).
pub fn stop_popd(lab: &Lab) {
    let Ok(mut popd) = Popd::existing(lab, &workspace::debug_bin_dir(), Path::new(STATE_DIR))
    else {
        return;
    };
    if popd.is_running() {
        println!("stopping popd (popctl shutdown --detach)");
        if let Err(e) = popd.shutdown_detach() {
            eprintln!("warning: {e:#}");
        }
    }
}

fn down(lab: &Lab) -> Result<()> {
    step("tearing down the lab");
    stop_popd(lab);
    lab.down()?;
    let _ = std::fs::remove_dir_all(STATE_DIR);
    println!("lab is down");
    Ok(())
}

fn status(lab: &Lab) -> Result<()> {
    print!("{}", lab.status()?);
    if let Ok(mut popd) = Popd::existing(lab, &workspace::debug_bin_dir(), Path::new(STATE_DIR)) {
        if popd.is_running() {
            println!(
                "\npopd: running (pid {}), socket {}",
                popd.pid().unwrap_or(0),
                popd.socket().display()
            );
            match popd.popctl_ok(&["status"]) {
                Ok(out) => print!("{out}"),
                Err(e) => println!("popctl status: {e:#}"),
            }
        } else {
            println!("\npopd: not running");
        }
    }
    Ok(())
}
