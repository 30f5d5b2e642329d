//! End-to-end: changes that cannot be applied are refused whole, by the same
//! checks everywhere, and never keep popd from starting again. The real popd
//! and popctl (target/debug) in the lab (namespaces `ptval-*`). Needs root.
//!
//! The scenarios share one lab and build on each other, so a single test runs
//! them in order; the lab is removed when it ends, also on failure.
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use pop_lab::{
    cmd,
    topology::{self, C1, EDGE},
    Lab, Popd,
};
use pop_tests::lab_env::{LabEnv, Scenario};

/// Namespace (and veth, bpffs) prefix of these tests.
const PREFIX: &str = "ptval-";
/// Beyond the policer's maximum rate (10 Tbit/s).
const HUGE_RATE: &str = "100000000000000";
/// The policer's maximum rate.
const MAX_RATE: &str = "10000000000000";
/// Host addresses put on the edge: more than the 4096 the local-address map
/// used to hold.
const HOST_ADDRESSES: u32 = 5000;

type Env = LabEnv;

/// The lab's full config with acme policed at `rate`.
fn config_with_rate(rate: &str) -> String {
    topology::full_config().replacen(
        "name = \"acme\"\n",
        &format!("name = \"acme\"\nrate_bps = {rate}\n"),
        1,
    )
}

/// Runs popd to its exit (it must exit: the start fails) and returns its output.
fn failed_start(popd: &Popd) -> Result<Output> {
    let mut cmd = popd.command();
    cmd.stdin(Stdio::null());
    let out = cmd::output_timeout(&mut cmd, Duration::from_secs(30))?;
    ensure!(
        !out.status.success(),
        "popd started (or exited 0) with a config it must refuse:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// Names in a directory, sorted.
fn listing(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    Ok(names)
}

/// Every file (pin) under `dir`, recursively; none when it does not exist.
fn pins_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Edge ports with XDP attached.
fn edge_xdp(lab: &Lab) -> Result<Vec<String>> {
    Ok(lab
        .xdp_attached(EDGE)?
        .into_iter()
        .map(|(name, _)| name)
        .filter(|n| ["eth0", "eth1", "eth2"].contains(&n.as_str()))
        .collect())
}

/// stderr's non-empty lines.
fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// A popctl call that must fail with exactly one stderr line; returns it.
fn refused(popd: &Popd, args: &[&str]) -> Result<String> {
    let out = popd.popctl(args)?;
    let lines = stderr_lines(&out);
    ensure!(
        !out.status.success(),
        "`popctl {}` exited 0; stdout: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    ensure!(
        lines.len() == 1,
        "`popctl {}`: expected one stderr line, got {lines:?}",
        args.join(" ")
    );
    Ok(lines[0].clone())
}

fn generation(popd: &Popd) -> Result<u64> {
    popd.popctl_json(&["status"])?["generation"]
        .as_u64()
        .context("status without generation")
}

fn ping_ok(lab: &Lab, dst: &str) -> Result<()> {
    let stats = lab.ping(C1, dst, 3, 0.2)?;
    ensure!(
        stats.transmitted == 3 && stats.received == 3,
        "ping {dst} from c1: {stats}"
    );
    Ok(())
}

#[test]
fn refused_changes_leave_everything_as_it_was() {
    let mut env = LabEnv::with_config(PREFIX, &config_with_rate(HUGE_RATE), |_| Ok(()))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let scenarios: &[(&str, Scenario)] = &[
        (
            "1 a first start beyond the policer's limits changes nothing",
            first_start_refused,
        ),
        ("2 a good config starts and forwards", good_start),
        (
            "3 apply of a file listing a route twice is refused, also when nothing would change",
            duplicate_route_refused,
        ),
        (
            "4 dry-run refuses what apply refuses",
            dry_run_refuses_what_apply_refuses,
        ),
        (
            "4b SIGHUP refuses what apply refuses",
            sighup_refuses_what_apply_refuses,
        ),
        (
            "5 a refused start leaves a running data plane forwarding",
            refused_start_keeps_pinned_data_plane,
        ),
        (
            "6 thousands of host addresses do not block a change",
            many_host_addresses,
        ),
        (
            "7 a big apply with one bad route deep in it is refused naming that route; nothing changes",
            big_apply_with_one_bad_route,
        ),
    ];
    env.run_scenarios("e2e_validate", scenarios);
}

/// (1) A first config with a policer rate beyond the limit: popd exits with one
/// line naming the customer and the limit; the state dir holds what it held,
/// and no pin or XDP attachment is left.
fn first_start_refused(env: &mut Env) -> Result<()> {
    let before = listing(env.state_dir())?;
    let out = failed_start(&env.popd)?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("rate_bps")).collect();
    ensure!(
        errors.len() == 1,
        "the error must be printed once, got:\n{stderr}"
    );
    ensure!(
        errors[0].contains("customer acme")
            && errors[0].contains(HUGE_RATE)
            && errors[0].contains(&format!("maximum of {MAX_RATE}")),
        "the error must name the customer, the value and the limit: {}",
        errors[0]
    );
    let after = listing(env.state_dir())?;
    ensure!(
        before == after,
        "the state dir changed: {before:?} → {after:?}"
    );
    let pins = pins_under(&env.lab.bpffs_dir());
    ensure!(pins.is_empty(), "pins left behind: {pins:?}");
    ensure!(
        !env.lab.bpffs_dir().exists(),
        "{} created by a refused start",
        env.lab.bpffs_dir().display()
    );
    let attached = edge_xdp(&env.lab)?;
    ensure!(attached.is_empty(), "XDP left attached on {attached:?}");

    // A good config, but a data plane that does not load: the same.
    let garbage = env.state_dir().join("garbage.o");
    fs::write(&garbage, b"not an ELF object")?;
    fs::write(env.popd.config_path(), topology::full_config())?;
    let before = listing(env.state_dir())?;
    env.popd.set_env("POP_DATAPLANE_OBJECT", garbage.to_str());
    let out = failed_start(&env.popd);
    env.popd.set_env("POP_DATAPLANE_OBJECT", None);
    let out = out?;
    let lines: Vec<String> = stderr_lines(&out)
        .into_iter()
        .filter(|l| l.contains("ERROR"))
        .collect();
    ensure!(lines.len() == 1, "one error line, got {lines:?}");
    fs::remove_file(&garbage)?;
    let after = listing(env.state_dir())?;
    ensure!(
        before
            .into_iter()
            .filter(|n| n != "garbage.o")
            .collect::<Vec<_>>()
            == after,
        "the state dir changed: {after:?}"
    );
    ensure!(
        !env.lab.bpffs_dir().exists(),
        "a data plane that failed to load left {}",
        env.lab.bpffs_dir().display()
    );
    Ok(())
}

/// (2) The same state dir with a good config: popd starts and forwards. The
/// state dir holds what a popd before these checks left after such a refused
/// first start: that config saved, as generation 1, never applied. It gives
/// way to the good config.
fn good_start(env: &mut Env) -> Result<()> {
    let left = pop::state::Persisted::from_config(
        1,
        pop::config::validate::parse_config(&config_with_rate(HUGE_RATE))?,
        Default::default(),
    )?;
    let state = env.state_dir().join("state.json");
    fs::write(&state, serde_json::to_vec(&left)?)?;
    fs::write(env.popd.config_path(), topology::full_config())?;
    env.popd.start()?;
    let customers = env.popd.popctl_json(&["customer", "show"])?;
    ensure!(
        customers
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c.get("rate_bps").is_none())),
        "the state never applied must give way to --config: {customers}"
    );
    env.popd.wait_resolved(Duration::from_secs(10))?;
    ping_ok(&env.lab, topology::INTERNET_V4)?;
    ensure!(
        env.state_dir().join("state.json").exists(),
        "a started popd persists its state"
    );
    Ok(())
}

fn write_file(dir: &Path, name: &str, text: &str) -> Result<String> {
    let path = dir.join(name);
    fs::write(&path, text)?;
    Ok(path.to_string_lossy().into_owned())
}

/// (3) The running state with one route listed twice: nothing would change,
/// yet the file is invalid. apply and its dry run refuse it alike.
fn duplicate_route_refused(env: &mut Env) -> Result<()> {
    let generation_before = generation(&env.popd)?;
    let exported = env.popd.popctl_json(&["export"])?["config"]
        .as_str()
        .context("export without config")?
        .to_string();
    let same = write_file(env.state_dir(), "same.toml", &exported)?;
    let apply = env.popd.popctl_json(&["apply", &same])?;
    ensure!(
        apply["changes"].as_array().is_some_and(|c| c.is_empty()),
        "applying the export changes nothing: {apply}"
    );
    let twice = export_with_route_twice(&env.popd)?;
    let file = write_file(env.state_dir(), "twice.toml", &twice)?;
    let applied = refused(&env.popd, &["apply", &file])?;
    ensure!(
        applied.contains("route 0.0.0.0/0: prefix listed twice"),
        "{applied}"
    );
    let dry = refused(&env.popd, &["apply", &file, "--dry-run"])?;
    ensure!(dry == applied, "dry run said {dry:?}, apply {applied:?}");
    ensure!(generation(&env.popd)? == generation_before);
    Ok(())
}

/// (4) An interface the kernel lacks and a policer beyond its limits: refused
/// by the dry run exactly as by apply and by a single change.
fn dry_run_refuses_what_apply_refuses(env: &mut Env) -> Result<()> {
    let generation_before = generation(&env.popd)?;
    let exported = env.popd.popctl_json(&["export"])?["config"]
        .as_str()
        .context("export without config")?
        .to_string();
    let missing = format!("{exported}\n[[interfaces]]\nname = \"eth9\"\nrole = \"customer\"\n");
    let policed = exported.replacen(
        "name = \"acme\"\n",
        &format!("name = \"acme\"\nrate_bps = {HUGE_RATE}\n"),
        1,
    );
    ensure!(policed != exported, "acme not in the export: {exported}");
    for (name, text, expected) in [
        (
            "missing.toml",
            missing,
            "interface eth9: no such device".to_string(),
        ),
        (
            "policed.toml",
            policed,
            format!("customer acme: rate_bps {HUGE_RATE} exceeds the maximum of {MAX_RATE}"),
        ),
    ] {
        let file = write_file(env.state_dir(), name, &text)?;
        let dry = refused(&env.popd, &["apply", &file, "--dry-run"])?;
        ensure!(dry.contains(&expected), "{name}: dry run said {dry:?}");
        let applied = refused(&env.popd, &["apply", &file])?;
        ensure!(
            dry == applied,
            "{name}: dry run said {dry:?}, apply {applied:?}"
        );
    }
    let single = refused(
        &env.popd,
        &[
            "customer",
            "add",
            "initech",
            "--prefix",
            "10.77.0.0/16",
            "--rate-bps",
            HUGE_RATE,
        ],
    )?;
    ensure!(
        single.contains(&format!(
            "customer initech: rate_bps {HUGE_RATE} exceeds the maximum of {MAX_RATE}"
        )),
        "{single}"
    );
    // A single customer change is checked alone against the others: still
    // the validator's words, and nothing applied.
    for (args, expected) in [
        (
            &["customer", "add", "acme", "--prefix", "10.78.0.0/16"][..],
            "customer acme: already exists",
        ),
        (
            &["customer", "add", "initech", "--prefix", "198.51.100.128/25"],
            "customer initech: prefix \"198.51.100.128/25\" overlaps prefix \"198.51.100.0/24\" of customer acme",
        ),
        (
            &[
                "customer", "add", "initech", "--prefix", "10.78.0.0/16", "--iface", "eth0",
            ],
            "customer initech: interface \"eth0\" has role upstream, not customer",
        ),
        (
            &["customer", "del", "nobody"],
            "customer nobody: no such customer",
        ),
    ] {
        let got = refused(&env.popd, args)?;
        ensure!(got.contains(expected), "{args:?}: {got:?}, expected {expected:?}");
    }
    let route = refused(
        &env.popd,
        &[
            "route",
            "add",
            "10.98.0.0/16",
            "via",
            "192.0.2.1",
            "dev",
            "eth9",
        ],
    )?;
    ensure!(route.contains("eth9"), "{route}");
    ensure!(generation(&env.popd)? == generation_before);
    ping_ok(&env.lab, topology::INTERNET_V4)
}

/// The running state as `popctl export` prints it, with the default route
/// listed a second time.
fn export_with_route_twice(popd: &Popd) -> Result<String> {
    let exported = popd.popctl_json(&["export"])?["config"]
        .as_str()
        .context("export without config")?
        .to_string();
    Ok(format!(
        "{exported}\n[[routes]]\nprefix = \"0.0.0.0/0\"\nvia = [\"192.0.2.1\"]\ndev = \"eth0\"\n"
    ))
}

/// (4b) SIGHUP re-reads --config through the same checks: a file listing a
/// route twice is refused (once in the log), also when nothing would change.
fn sighup_refuses_what_apply_refuses(env: &mut Env) -> Result<()> {
    let generation_before = generation(&env.popd)?;
    fs::write(env.popd.config_path(), export_with_route_twice(&env.popd)?)?;
    let log_start = fs::metadata(env.popd.log_path())?.len() as usize;
    let pid = env.popd.pid().context("popd not running")?;
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(15);
    let lines = loop {
        let log = fs::read(env.popd.log_path())?;
        let new = String::from_utf8_lossy(&log[log_start.min(log.len())..]).into_owned();
        let lines: Vec<String> = new
            .lines()
            .filter(|l| l.contains("SIGHUP"))
            .map(str::to_string)
            .collect();
        if !lines.is_empty() {
            break lines;
        }
        if Instant::now() > deadline {
            bail!("popd logged nothing about SIGHUP within 15 s");
        }
        thread::sleep(Duration::from_millis(100));
    };
    ensure!(
        lines.len() == 1
            && lines[0].contains("route 0.0.0.0/0: prefix listed twice")
            && lines[0].contains("nothing changed"),
        "SIGHUP with a route listed twice: {lines:?}"
    );
    ensure!(generation(&env.popd)? == generation_before);
    fs::write(env.popd.config_path(), topology::full_config())?;
    Ok(())
}

/// (5) popd crashes; another popd with a fresh state dir and a config it must
/// refuse starts on the same bpffs: it exits, and the pinned data plane keeps
/// forwarding, untouched. The first popd then starts again on its state.
fn refused_start_keeps_pinned_data_plane(env: &mut Env) -> Result<()> {
    env.popd.kill()?;
    ping_ok(&env.lab, topology::INTERNET_V4).context("after a crash, XDP still forwards")?;
    let pins_before = pins_under(&env.lab.bpffs_dir()).len();
    let other_dir = env.state_dir().join("other");
    let other = Popd::new(
        &env.lab,
        &env.bin_dir,
        &other_dir,
        &config_with_rate(HUGE_RATE),
    )?;
    let out = failed_start(&other)?;
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("customer acme: rate_bps"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        !other_dir.join("state.json").exists(),
        "a refused start persisted its state"
    );
    ensure!(
        pins_under(&env.lab.bpffs_dir()).len() == pins_before,
        "a refused start changed the pins"
    );
    ensure!(edge_xdp(&env.lab)?.len() == 3, "XDP detached");
    ping_ok(&env.lab, topology::INTERNET_V4).context("after a refused start")?;
    env.popd.start()?;
    ping_ok(&env.lab, topology::INTERNET_V4)
}

/// (6) 5000 addresses on an edge port: popd loads them all (packets to them
/// reach the edge's kernel) and a route add still succeeds.
fn many_host_addresses(env: &mut Env) -> Result<()> {
    let mut batch = String::new();
    for i in 0..HOST_ADDRESSES {
        batch.push_str(&format!(
            "address add 10.200.{}.{}/32 dev eth1\n",
            i / 250,
            i % 250 + 1
        ));
    }
    let mut child = env
        .lab
        .command(EDGE, &["ip", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(batch.as_bytes())?;
    let out = cmd::wait_output_timeout(child, Duration::from_secs(60))?;
    ensure!(
        out.status.success(),
        "ip -batch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // popd follows the kernel: wait until it has loaded the addresses.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = env.popd.popctl_json(&["status"])?;
        let local_v4 = status["maps"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == "local_v4"))
            .and_then(|m| m["entries"].as_u64())
            .unwrap_or(0);
        if local_v4 >= u64::from(HOST_ADDRESSES) {
            break;
        }
        if Instant::now() > deadline {
            bail!("popd loaded {local_v4} of the edge's {HOST_ADDRESSES}+ addresses into local_v4");
        }
        thread::sleep(Duration::from_millis(200));
    }
    env.popd
        .popctl_ok(&[
            "route",
            "add",
            "10.97.0.0/16",
            "via",
            "192.0.2.1",
            "dev",
            "eth0",
        ])
        .context("a route add with 5000 host addresses")?;
    // The last address is the edge's own: the kernel answers.
    let last = HOST_ADDRESSES - 1;
    ping_ok(
        &env.lab,
        &format!("10.200.{}.{}", last / 250, last % 250 + 1),
    )
}

/// (7) 50,000 new routes, the 40,001st with a gateway of the wrong family:
/// apply (and its dry run) refuse the file naming that route, and none of
/// the 40,000 before it is in the maps. With it fixed, all are, and the old
/// config applied again takes them all away.
fn big_apply_with_one_bad_route(env: &mut Env) -> Result<()> {
    let generation_before = generation(&env.popd)?;
    let exported = env.popd.popctl_json(&["export"])?["config"]
        .as_str()
        .context("export without config")?
        .to_string();
    let n = 50_000u32;
    let bad = 40_000u32;
    let mut text = exported.clone();
    for i in 0..n {
        let via = if i == bad { "2001:db8::1" } else { "192.0.2.1" };
        text += &format!(
            "\n[[routes]]\nprefix = \"20.{}.{}.0/24\"\nvia = [\"{via}\"]\ndev = \"eth0\"\n",
            i >> 8,
            i & 0xff
        );
    }
    let file = write_file(env.state_dir(), "big-bad.toml", &text)?;
    let expected =
        "route 20.156.64.0/24: via \"2001:db8::1\": address family differs from the prefix";
    let applied = refused(&env.popd, &["apply", &file])?;
    ensure!(applied.contains(expected), "{applied}");
    let dry = refused(&env.popd, &["apply", &file, "--dry-run"])?;
    ensure!(dry == applied, "dry run said {dry:?}, apply {applied:?}");
    ensure!(generation(&env.popd)? == generation_before);
    let prefix_of = |addr: &str| -> Result<String> {
        let get = env.popd.popctl_json(&["route", "get", addr])?;
        Ok(get["prefix"].as_str().unwrap_or("").to_string())
    };
    for addr in ["20.0.0.1", "20.100.1.1", "20.156.63.1"] {
        let p = prefix_of(addr)?;
        ensure!(
            !p.starts_with("20."),
            "{addr} routed by {p} after a refused apply"
        );
    }
    let good = text.replace("\"2001:db8::1\"", "\"192.0.2.1\"");
    let file = write_file(env.state_dir(), "big-good.toml", &good)?;
    let applied = env.popd.popctl_json(&["apply", &file])?;
    ensure!(
        applied["more"].as_u64().unwrap_or(0)
            + applied["changes"].as_array().map_or(0, |c| c.len() as u64)
            == u64::from(n),
        "{n} routes added: {}",
        applied["more"]
    );
    ensure!(prefix_of("20.156.64.1")? == "20.156.64.0/24");
    ensure!(prefix_of("20.195.79.1")? == "20.195.79.0/24");
    let back = write_file(env.state_dir(), "back.toml", &exported)?;
    env.popd.popctl_json(&["apply", &back])?;
    ensure!(!prefix_of("20.0.0.1")?.starts_with("20."));
    ping_ok(&env.lab, topology::INTERNET_V4)
}
