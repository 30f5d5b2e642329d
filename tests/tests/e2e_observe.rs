//! End-to-end sFlow and packet capture, in one lab (`pte2o-*`).
//!
//! sFlow: popd exports to a real collector,
//! pmacct's sfacctd, running in the edge namespace on 127.0.0.1 (so the
//! datagrams leave through the edge's kernel routes, not through pop).
//! sfacctd renormalises the samples (x sampling rate); its estimate of the
//! packets c1 sent must be within 10% of what ping sent, counter samples must
//! arrive, and tshark must decode every datagram without errors, the dropped
//! packets' samples with output "discarded, reason 258 (ACL)".
//!
//! Capture: `popctl capture` of a customer's traffic and of ACL drops gives
//! pcapng that tcpdump reads with the expected packet count and whose packet
//! comments (tshark) give each verdict; popctl going away disarms the capture.
//! Needs root.
use std::collections::HashMap;
use std::process::Child;
use std::time::Duration;

use anyhow::{bail, ensure, Result};
use pop_lab::popd::metric_value;
use pop_lab::topology;
use pop_tests::lab_env::LabEnv;
use pop_tests::wait;

const PREFIX: &str = "pte2o-";
const PORT: u16 = 6343;
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(200);
const SAMPLING_RATE: u64 = 10;
/// Echo requests c1 sends through pop: 2000 samples expected.
const PINGS: u64 = 20_000;
/// Echo requests c1 sends to a destination an ACL drops.
const DROPPED_PINGS: u64 = 1_000;
/// The destination the ACL drops (routed to the upstream, never reached).
const DROPPED_DST: &str = "100.64.0.2";

type Env = LabEnv;

fn config() -> String {
    format!(
        "{}\n[sflow]\ncollectors = [\"127.0.0.1:{PORT}\"]\nsampling_rate = {SAMPLING_RATE}\npolling_interval = 1\n",
        topology::full_config()
    )
}

fn start() -> Result<Env> {
    let mut env = LabEnv::with_config(PREFIX, &config(), |_| Ok(()))?;
    env.start_resolved()?;
    Ok(env)
}

fn sfacctd_config(env: &Env) -> String {
    let d = env.scratch_dir().display();
    format!(
        "daemonize: false\n\
         sfacctd_ip: 127.0.0.1\n\
         sfacctd_port: {PORT}\n\
         sfacctd_renormalize: true\n\
         sfacctd_counter_file: {d}/counters.json\n\
         sfacctd_counter_output: json\n\
         plugins: print[flows]\n\
         aggregate[flows]: src_host, dst_host\n\
         print_output[flows]: csv\n\
         print_output_file[flows]: {d}/flows.csv\n\
         print_output_file_append[flows]: true\n\
         print_refresh_time[flows]: 1\n"
    )
}

/// Packets per (src, dst) in sfacctd's CSV (every refresh appended).
fn flows(csv: &str) -> HashMap<(String, String), u64> {
    let mut out = HashMap::new();
    let mut cols: Option<(usize, usize, usize)> = None;
    for line in csv.lines() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if let (Some(s), Some(d), Some(p)) = (
            f.iter().position(|c| *c == "SRC_IP"),
            f.iter().position(|c| *c == "DST_IP"),
            f.iter().position(|c| *c == "PACKETS"),
        ) {
            cols = Some((s, d, p));
            continue;
        }
        let Some((s, d, p)) = cols else { continue };
        if let (Some(src), Some(dst), Some(n)) = (
            f.get(s),
            f.get(d),
            f.get(p).and_then(|n| n.parse::<u64>().ok()),
        ) {
            *out.entry((src.to_string(), dst.to_string())).or_insert(0) += n;
        }
    }
    out
}

fn scenario(env: &mut Env) -> Result<()> {
    let dir = env.scratch_dir().to_path_buf();
    let conf = dir.join("sfacctd.conf");
    std::fs::write(&conf, sfacctd_config(env))?;
    let pcap = dir.join("sflow.pcap");
    env.children.push(env.lab.spawn(
        topology::EDGE,
        &[
            "tcpdump",
            "-i",
            "lo",
            "-U",
            "-n",
            "-w",
            &pcap.to_string_lossy(),
            "udp",
            "port",
            &PORT.to_string(),
        ],
    )?);
    env.children.push(
        env.lab
            .spawn(topology::EDGE, &["sfacctd", "-f", &conf.to_string_lossy()])?,
    );
    // Counter samples every second: the collector is up once one arrived.
    let counters = dir.join("counters.json");
    wait::until(
        "sfacctd logging counter samples",
        Duration::from_secs(20),
        POLL,
        || Ok(std::fs::metadata(&counters).is_ok_and(|m| m.len() > 0)),
    )?;

    let out = env.lab.exec_ok(
        topology::C1,
        &[
            "ping",
            "-f",
            "-q",
            "-c",
            &PINGS.to_string(),
            topology::INTERNET_V4,
        ],
    )?;
    let sent = pop_lab::PingStats::parse(&out)?;
    ensure!(sent.transmitted == PINGS, "ping: {sent}");

    env.popd.popctl_ok(&[
        "acl",
        "add",
        "10",
        "--action",
        "drop",
        "--proto",
        "icmp",
        "--dst",
        &format!("{DROPPED_DST}/32"),
    ])?;
    let out = env.lab.exec(
        topology::C1,
        &[
            "ping",
            "-q",
            "-i",
            "0.002",
            "-W",
            "1",
            "-c",
            &DROPPED_PINGS.to_string(),
            DROPPED_DST,
        ],
    )?;
    let dropped = pop_lab::PingStats::parse(&String::from_utf8_lossy(&out.stdout))?;
    ensure!(
        dropped.transmitted == DROPPED_PINGS && dropped.received == 0,
        "ping {DROPPED_DST} (dropped by the ACL): {dropped}"
    );

    // sfacctd writes every second; give it the last samples (popd sends
    // within 250 ms).
    let csv = dir.join("flows.csv");
    let key = (
        topology::C1_V4.to_string(),
        topology::INTERNET_V4.to_string(),
    );
    let mut estimate = 0;
    let _ = wait::until(
        "sfacctd's estimate settling",
        Duration::from_secs(6),
        POLL,
        || {
            let now = flows(&std::fs::read_to_string(&csv).unwrap_or_default())
                .get(&key)
                .copied()
                .unwrap_or(0);
            let settled = now > 0 && now == estimate;
            estimate = now;
            std::thread::sleep(Duration::from_millis(1500));
            Ok(settled)
        },
    );
    let error = (estimate as f64 - PINGS as f64).abs() / PINGS as f64;
    eprintln!(
        "sfacctd estimates {estimate} packets {} > {} for {PINGS} sent ({:.1}% off)",
        key.0,
        key.1,
        error * 100.0
    );
    ensure!(
        error <= 0.10,
        "sfacctd's renormalised estimate {estimate} is not within 10% of the {PINGS} packets sent"
    );

    let scrape = env.popd.metrics()?;
    let flow = metric_value(&scrape, "pop_sflow_samples_total", &[("kind", "flow")]);
    let counter = metric_value(&scrape, "pop_sflow_samples_total", &[("kind", "counter")]);
    ensure!(
        flow.is_some_and(|n| n >= (PINGS / SAMPLING_RATE / 2) as f64),
        "pop_sflow_samples_total{{kind=\"flow\"}} is {flow:?}, want at least the {} samples of the echo requests",
        PINGS / SAMPLING_RATE / 2
    );
    ensure!(
        counter.is_some_and(|n| n > 0.0),
        "pop_sflow_samples_total{{kind=\"counter\"}} is {counter:?}"
    );
    // The section is desired state: exported, and a bad value is refused.
    let exported = env.popd.popctl_ok(&["export"])?;
    ensure!(
        exported.contains("[sflow]")
            && exported.contains(&format!("sampling_rate = {SAMPLING_RATE}")),
        "popctl export lacks the [sflow] section: {exported}"
    );
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        exported.replace(
            &format!("sampling_rate = {SAMPLING_RATE}"),
            "sampling_rate = 0",
        ),
    )?;
    let out = env.popd.popctl(&["apply", &bad.to_string_lossy()])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && err.trim() == "popctl: sflow: sampling_rate 0 out of range 1-2147483647",
        "apply with sampling_rate 0: {out:?}"
    );
    let logged = std::fs::read_to_string(&counters)?;
    ensure!(
        logged.lines().count() >= 3,
        "sfacctd logged too few counter samples: {logged}"
    );

    // tshark decodes every datagram, and the ACL's drops are discards.
    for mut c in env.children.drain(..) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
        let _ = pop_lab::cmd::wait_timeout(&mut c, Duration::from_secs(5));
        let _ = c.kill();
        let _ = c.wait();
    }
    std::thread::sleep(Duration::from_millis(500));
    let decoded = pop_lab::cmd::run_ok(std::process::Command::new("tshark").args([
        "-n",
        "-d",
        &format!("udp.port=={PORT},sflow"),
        "-r",
        &pcap.to_string_lossy(),
        "-V",
    ]))?;
    ensure!(
        decoded.contains("sFlow"),
        "tshark decoded no sFlow in {}",
        pcap.display()
    );
    for bad in ["Malformed", "Expert Info (Error"] {
        ensure!(
            !decoded.contains(bad),
            "tshark reports {bad:?} decoding the datagrams: {}",
            decoded
                .lines()
                .find(|l| l.contains(bad))
                .unwrap_or_default()
        );
    }
    let fields = pop_lab::cmd::run_ok(std::process::Command::new("tshark").args([
        "-n",
        "-d",
        &format!("udp.port=={PORT},sflow"),
        "-r",
        &pcap.to_string_lossy(),
        "-T",
        "fields",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=;",
        "-e",
        "sflow.flow_sample.output_interface_format",
        "-e",
        "sflow.flow_sample.output_interface_value",
    ]))?;
    let discards = fields
        .lines()
        .flat_map(|l| {
            let mut cols = l.split('\t');
            let formats: Vec<String> = cols
                .next()
                .unwrap_or_default()
                .split(';')
                .map(str::to_string)
                .collect();
            let values: Vec<String> = cols
                .next()
                .unwrap_or_default()
                .split(';')
                .map(str::to_string)
                .collect();
            formats.into_iter().zip(values).collect::<Vec<_>>()
        })
        .filter(|(f, v)| f == "1" && v == "258")
        .count() as u64;
    let want = DROPPED_PINGS / SAMPLING_RATE / 2;
    ensure!(
        discards >= want,
        "tshark finds {discards} samples with output \"discarded, reason 258 (ACL)\", \
         want at least {want} of the {DROPPED_PINGS} dropped pings; fields:\n{}",
        fields.lines().take(5).collect::<Vec<_>>().join("\n")
    );
    Ok(())
}

/// `popctl --socket S capture ARGS` started in the background.
fn capture(env: &Env, args: &[&str], stdout: Option<std::fs::File>) -> Result<Child> {
    let bin = pop_lab::popd::test_bin_dir()?.join("popctl");
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("--socket")
        .arg(env.popd.socket())
        .arg("capture")
        .args(args);
    cmd.stdin(std::process::Stdio::null());
    cmd.stderr(std::process::Stdio::piped());
    match stdout {
        Some(f) => cmd.stdout(f),
        None => cmd.stdout(std::process::Stdio::null()),
    };
    Ok(cmd.spawn()?)
}

/// Waits until popctl wrote the pcapng header (the capture is armed).
fn wait_armed(file: &std::path::Path) -> Result<()> {
    wait::until(
        "the capture being armed",
        Duration::from_secs(10),
        POLL,
        || Ok(std::fs::metadata(file).is_ok_and(|m| m.len() > 0)),
    )
}

/// Waits for popctl to exit 0 (it stops after --count packets).
fn wait_done(mut child: Child) -> Result<()> {
    let status = pop_lab::cmd::wait_timeout(&mut child, Duration::from_secs(20))?;
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("popctl capture did not stop after its --count packets");
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    ensure!(status.success(), "popctl capture failed ({status}): {err}");
    Ok(())
}

/// `tcpdump -r FILE`'s packets, one line each.
fn tcpdump_read(file: &std::path::Path) -> Result<Vec<String>> {
    let out = pop_lab::cmd::run_ok(std::process::Command::new("tcpdump").args([
        "-n",
        "-r",
        &file.to_string_lossy(),
    ]))?;
    Ok(out.lines().map(str::to_string).collect())
}

/// tshark's packet comments, one per packet.
fn comments(file: &std::path::Path) -> Result<Vec<String>> {
    let out = pop_lab::cmd::run_ok(std::process::Command::new("tshark").args([
        "-r",
        &file.to_string_lossy(),
        "-T",
        "fields",
        "-e",
        "frame.comment",
    ]))?;
    Ok(out.lines().map(str::to_string).collect())
}

fn capture_scenario(env: &mut Env) -> Result<()> {
    let dir = env.scratch_dir().to_path_buf();
    // A customer's traffic: 10 echo requests from acme and their replies.
    let file = dir.join("acme.pcapng");
    let child = capture(
        env,
        &[
            "--customer",
            "acme",
            "--count",
            "20",
            "-w",
            &file.to_string_lossy(),
        ],
        None,
    )?;
    wait_armed(&file)?;
    let out = env.lab.exec_ok(
        topology::C1,
        &[
            "ping",
            "-q",
            "-c",
            "10",
            "-i",
            "0.05",
            topology::INTERNET_V4,
        ],
    )?;
    ensure!(
        pop_lab::PingStats::parse(&out)?.received == 10,
        "ping through pop during the capture: {out}"
    );
    wait_done(child)?;
    let lines = tcpdump_read(&file)?;
    ensure!(
        lines.len() == 20,
        "tcpdump reads {} packets, want 20: {lines:?}",
        lines.len()
    );
    ensure!(
        lines
            .iter()
            .filter(|l| l.contains("ICMP echo request"))
            .count()
            == 10
            && lines
                .iter()
                .filter(|l| l.contains("ICMP echo reply"))
                .count()
                == 10,
        "want 10 echo requests and 10 replies: {lines:?}"
    );
    let c = comments(&file)?;
    for want in ["redirect; in eth1 out eth0", "redirect; in eth0 out eth1"] {
        ensure!(
            c.iter().filter(|l| *l == want).count() == 10,
            "want 10 packets with comment {want:?}, comments: {c:?}"
        );
    }

    // ACL drops, written to stdout.
    let file = dir.join("drops.pcapng");
    let child = capture(
        env,
        &[
            "--drop",
            "acl",
            "--count",
            "5",
            "--snaplen",
            "64",
            "-w",
            "-",
        ],
        Some(std::fs::File::create(&file)?),
    )?;
    wait_armed(&file)?;
    let _ = env.lab.exec(
        topology::C1,
        &[
            "ping",
            "-q",
            "-c",
            "5",
            "-i",
            "0.05",
            "-W",
            "1",
            DROPPED_DST,
        ],
    )?;
    wait_done(child)?;
    let lines = tcpdump_read(&file)?;
    ensure!(
        lines.len() == 5 && lines.iter().all(|l| l.contains(DROPPED_DST)),
        "tcpdump reads {} packets, want the 5 dropped echo requests: {lines:?}",
        lines.len()
    );
    let c = comments(&file)?;
    ensure!(
        c.len() == 5 && c.iter().all(|l| l == "drop acl; in eth1"),
        "want 5 comments \"drop acl; in eth1\": {c:?}"
    );

    // Only root and the socket's group may capture: not user nobody.
    let popctl = pop_lab::popd::test_bin_dir()?.join("popctl");
    let out = pop_lab::cmd::output(
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&popctl)
            .arg("--socket")
            .arg(env.popd.socket())
            .args(["capture", "-w", "-"]),
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("Permission denied"),
        "popctl capture as nobody: {out:?}"
    );

    // A popctl that goes away without its count disarms the capture: the
    // next one can be armed (one capture at a time).
    let file = dir.join("killed.pcapng");
    let mut child = capture(env, &["-w", &file.to_string_lossy()], None)?;
    wait_armed(&file)?;
    let busy = env.popd.popctl(&["capture", "-w", "-"])?;
    ensure!(
        !busy.status.success()
            && String::from_utf8_lossy(&busy.stderr).contains("another capture is running"),
        "a second capture while one runs: {busy:?}"
    );
    child.kill()?;
    child.wait()?;
    let file = dir.join("after.pcapng");
    wait::until(
        "the killed capture being disarmed",
        Duration::from_secs(5),
        POLL,
        || {
            let child = capture(env, &["--count", "1", "-w", &file.to_string_lossy()], None)?;
            std::thread::sleep(Duration::from_millis(300));
            let armed = std::fs::metadata(&file).is_ok_and(|m| m.len() > 0);
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            Ok(armed)
        },
    )?;
    Ok(())
}

#[test]
fn sflow_and_capture() {
    let mut env = match start() {
        Ok(env) => env,
        Err(e) => panic!("setting up the lab and popd: {e:#}"),
    };
    type Scenario = fn(&mut Env) -> Result<()>;
    let scenarios: [(&str, Scenario); 2] = [
        ("sflow to sfacctd", scenario),
        ("capture", capture_scenario),
    ];
    for (name, run) in scenarios {
        eprintln!("scenario {name}");
        if let Err(e) = run(&mut env) {
            panic!(
                "scenario {name} failed: {e:#}\n--- popd log ends with:\n{}",
                env.popd.log_tail(30)
            );
        }
    }
}
