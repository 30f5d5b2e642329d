//! Running popd in the lab's edge namespace and talking to it with popctl.
//!
//! popd runs as `nsenter --net=/run/netns/<prefix>edge popd --config F --state-dir D
//! --bpffs /sys/fs/bpf/<prefix>lab --socket D/popd.sock --metrics 127.0.0.1:9469`,
//! logging to `D/popd.log`; popctl runs in the root namespace with `--socket`.
use std::{
    fs::{self, OpenOptions},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{cmd, topology, Lab};

/// How long popd may take to answer `popctl status` after starting.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one popctl call may take.
const POPCTL_TIMEOUT: Duration = Duration::from_secs(30);

/// The directory with popd and popctl for an integration test binary
/// (target/<profile>/deps/<test>-<hash> → target/<profile>); fails with the
/// command to run when they are not built.
pub fn test_bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary is not in target/<profile>/deps")?
        .to_path_buf();
    for bin in ["popd", "popctl"] {
        if !dir.join(bin).exists() {
            bail!(
                "{} is missing: run `cargo build --workspace` first",
                dir.join(bin).display()
            );
        }
    }
    Ok(dir)
}

/// A popd started (or found running) in a lab's edge namespace.
///
/// Dropping it kills a popd this handle started (SIGKILL, like a crash: the data
/// plane stays until [`Popd::shutdown_detach`] or [`Lab::down`]).
#[derive(Debug)]
pub struct Popd {
    lab: Lab,
    popd_bin: PathBuf,
    popctl_bin: PathBuf,
    state_dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    /// Environment for the next starts (e.g. POP_DATAPLANE_OBJECT).
    env: Vec<(String, String)>,
    /// A command popd runs under (e.g. `setpriv ...`), inside the namespace.
    wrapper: Vec<String>,
    /// Options after the lab's own.
    extra_args: Vec<String>,
}

impl Popd {
    /// Prepares a popd for `lab` using the binaries in `bin_dir` (e.g. target/debug)
    /// and `state_dir`, writing `config_text` to `state_dir/pop.toml`. Nothing is
    /// started yet.
    pub fn new(lab: &Lab, bin_dir: &Path, state_dir: &Path, config_text: &str) -> Result<Popd> {
        fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create {}", state_dir.display()))?;
        let popd = Self::existing(lab, bin_dir, state_dir)?;
        fs::write(&popd.config, config_text)
            .with_context(|| format!("cannot write {}", popd.config.display()))?;
        Ok(popd)
    }

    /// A handle on a popd that may already be running with this state dir (started
    /// by an earlier process, e.g. `cargo xtask lab up`).
    pub fn existing(lab: &Lab, bin_dir: &Path, state_dir: &Path) -> Result<Popd> {
        let popd_bin = bin_dir.join("popd");
        let popctl_bin = bin_dir.join("popctl");
        for bin in [&popd_bin, &popctl_bin] {
            if !bin.exists() {
                bail!(
                    "{} is missing: run `cargo build --workspace` first",
                    bin.display()
                );
            }
        }
        Ok(Popd {
            lab: lab.clone(),
            popd_bin,
            popctl_bin,
            state_dir: state_dir.to_path_buf(),
            config: state_dir.join("pop.toml"),
            child: None,
            env: Vec::new(),
            wrapper: Vec::new(),
            extra_args: Vec::new(),
        })
    }

    /// The config file popd reads.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// popd's `--state-dir`.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// popd's API socket.
    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("popd.sock")
    }

    /// popd's log (stderr, appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.state_dir.join("popd.log")
    }

    fn pid_file(&self) -> PathBuf {
        self.state_dir.join("popd.pid")
    }

    /// The full popd command line.
    pub fn command(&self) -> Command {
        let bpffs = self.lab.bpffs_dir();
        let popd = self.popd_bin.to_string_lossy().into_owned();
        let args = [
            popd.as_str(),
            "--config",
            &self.config.to_string_lossy(),
            "--state-dir",
            &self.state_dir.to_string_lossy(),
            "--bpffs",
            &bpffs.to_string_lossy(),
            "--socket",
            &self.socket().to_string_lossy(),
            "--metrics",
            topology::METRICS_ADDR,
        ]
        .map(|s| s.to_string());
        let argv: Vec<&str> = self
            .wrapper
            .iter()
            .chain(args.iter())
            .chain(self.extra_args.iter())
            .map(String::as_str)
            .collect();
        let mut cmd = self.lab.command(topology::EDGE, &argv);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs popd under `wrapper` (a command that execs its arguments, e.g.
    /// `setpriv --no-new-privs ...`), inside the edge namespace, from the next
    /// start on.
    pub fn set_wrapper(&mut self, wrapper: &[String]) {
        self.wrapper = wrapper.to_vec();
    }

    /// Options given to popd after the lab's own (e.g. `--socket-group pop`).
    pub fn set_extra_args(&mut self, args: &[&str]) {
        self.extra_args = args.iter().map(|s| s.to_string()).collect();
    }

    /// Sets (or with `None` removes) an environment variable for the next starts.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    /// Starts popd and waits until `popctl status` answers (at most 20 s). On
    /// failure the error includes the tail of popd's log.
    pub fn start(&mut self) -> Result<()> {
        self.start_within(READY_TIMEOUT)
    }

    /// [`Popd::start`], waiting at most `timeout` (a restart over a full
    /// table reads every pinned route entry back first).
    pub fn start_within(&mut self, timeout: Duration) -> Result<()> {
        if self.is_running() {
            bail!("popd is already running (pid {:?})", self.pid());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("cannot open {}", self.log_path().display()))?;
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Its own process group: a Ctrl-C meant for the caller does not reach it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{}`", cmd::describe(&cmd)))?;
        fs::write(self.pid_file(), child.id().to_string())?;
        self.child = Some(child);
        self.wait_ready(timeout)
    }

    /// Polls `popctl status` until it exits 0. Fails early if popd exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "popd exited during startup ({status}); its log ends with:\n{}",
                        self.log_tail(30)
                    );
                }
            }
            let last = self.popctl(&["status"]);
            if matches!(&last, Ok(out) if out.status.success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let why = match last {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                bail!(
                    "popd did not answer `popctl status` within {timeout:?} ({why}); its log ends with:\n{}",
                    self.log_tail(30)
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The pid of the running popd: the child this handle started, else the one
    /// recorded in the state dir if that process is still a popd.
    pub fn pid(&self) -> Option<u32> {
        if let Some(child) = &self.child {
            return Some(child.id());
        }
        let pid: u32 = fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "popd").then_some(pid)
    }

    /// Whether popd is running.
    pub fn is_running(&mut self) -> bool {
        if let Some(child) = self.child.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                return true;
            }
            self.child = None;
            return false;
        }
        self.pid().is_some()
    }

    /// Kills popd with SIGKILL (a crash: pinned program, maps and links stay) and
    /// waits for it to be gone.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait().context("waiting for popd")?;
        } else if let Some(pid) = self.pid() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = fs::remove_file(self.pid_file());
        Ok(())
    }

    /// Waits up to `timeout` for a popd this handle started to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            bail!("popd was not started by this handle");
        };
        match cmd::wait_timeout(child, timeout)? {
            Some(status) => {
                self.child = None;
                let _ = fs::remove_file(self.pid_file());
                Ok(status)
            }
            None => bail!("popd still running after {timeout:?}"),
        }
    }

    /// `popctl shutdown --detach`, then waits for popd to exit (killing it after
    /// 10 s). Returns popctl's error, if any, after making sure popd is gone.
    pub fn shutdown_detach(&mut self) -> Result<()> {
        let result = self.popctl_ok(&["shutdown", "--detach"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.is_running() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        if self.is_running() {
            self.kill()?;
            result?;
            bail!("popd did not exit within 10 s of `popctl shutdown --detach`; killed it");
        }
        let _ = fs::remove_file(self.pid_file());
        result.map(|_| ())
    }

    /// Leaves popd running after this handle is dropped (for `cargo xtask lab up`).
    pub fn release(mut self) -> Option<u32> {
        let pid = self.pid();
        self.child = None;
        pid
    }

    /// `popctl --socket S ARGS` from the root namespace, whatever its exit status.
    pub fn popctl(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(&self.popctl_bin);
        cmd.arg("--socket").arg(self.socket()).args(args);
        cmd::output_timeout(&mut cmd, POPCTL_TIMEOUT)
    }

    /// `popctl ARGS`, failing with its stderr unless it exits 0; returns stdout.
    pub fn popctl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.popctl(args)?;
        if !out.status.success() {
            bail!(
                "`popctl {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `popctl -j ARGS`, parsed.
    pub fn popctl_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        let text = self.popctl_ok(&all)?;
        serde_json::from_str(&text)
            .with_context(|| format!("`popctl -j {}` printed no JSON: {text:?}", args.join(" ")))
    }

    /// Waits until every next hop in `popctl -j route show` is resolved (popd
    /// adds managed neighbours, the kernel resolves them); fails after `timeout`.
    pub fn wait_resolved(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let routes = self.popctl_json(&["route", "show"])?;
            let all = routes.as_array().is_some_and(|rs| {
                rs.iter().all(|r| {
                    r["nexthops"]
                        .as_array()
                        .is_some_and(|n| n.iter().all(|h| h["state"] == "resolved"))
                })
            });
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("next hops not resolved after {timeout:?}: {routes}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `lines` lines of popd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The Prometheus scrape of popd's `/metrics` (curl inside the edge namespace).
    pub fn metrics(&self) -> Result<String> {
        let url = format!("http://{}/metrics", topology::METRICS_ADDR);
        self.lab
            .exec_ok(topology::EDGE, &["curl", "-sSf", "--max-time", "10", &url])
    }
}

impl Drop for Popd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = fs::remove_file(self.pid_file());
        }
    }
}

/// Finds the counters of customer `name` in `popctl -j stats` output: the first
/// JSON object with `"name": name` that has a `packets_in` field.
pub fn customer_stats<'a>(
    stats: &'a serde_json::Value,
    name: &str,
) -> Option<&'a serde_json::Value> {
    match stats {
        serde_json::Value::Object(map) => {
            if map.get("name").and_then(|n| n.as_str()) == Some(name)
                && map.contains_key("packets_in")
            {
                return Some(stats);
            }
            if let Some(v) = map.get(name) {
                if v.get("packets_in").is_some() {
                    return Some(v);
                }
            }
            map.values().find_map(|v| customer_stats(v, name))
        }
        serde_json::Value::Array(items) => items.iter().find_map(|v| customer_stats(v, name)),
        _ => None,
    }
}

/// The value of the sample `metric{labels}` in a Prometheus text scrape, matching
/// the given labels whatever their order (extra labels on the sample are allowed).
pub fn metric_value(scrape: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, rest) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if name != metric {
                return None;
            }
            let found: Vec<(&str, &str)> = rest
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
                .collect();
            labels
                .iter()
                .all(|want| found.contains(want))
                .then(|| value.parse().ok())?
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_customer_stats_in_array_or_object() {
        let array: serde_json::Value = serde_json::from_str(
            r#"[{"name":"acme","packets_in":5},{"name":"globex","packets_in":7}]"#,
        )
        .unwrap();
        assert_eq!(customer_stats(&array, "globex").unwrap()["packets_in"], 7);
        let wrapped: serde_json::Value =
            serde_json::from_str(r#"{"customers":[{"name":"acme","packets_in":5}]}"#).unwrap();
        assert_eq!(customer_stats(&wrapped, "acme").unwrap()["packets_in"], 5);
        assert!(customer_stats(&wrapped, "initech").is_none());
    }

    #[test]
    fn reads_a_metric_by_labels_in_any_order() {
        let scrape = "# TYPE pop_packets_total counter\n\
                      pop_packets_total{interface=\"eth0\",action=\"redirect\"} 3\n\
                      pop_packets_total{action=\"redirect\",interface=\"eth1\"} 42\n\
                      pop_build_info{version=\"0.1.0\"} 1\n";
        let labels = [("interface", "eth1"), ("action", "redirect")];
        assert_eq!(
            metric_value(scrape, "pop_packets_total", &labels),
            Some(42.0)
        );
        assert_eq!(
            metric_value(scrape, "pop_packets_total", &[("interface", "eth2")]),
            None
        );
        assert_eq!(metric_value(scrape, "pop_build_info", &[]), Some(1.0));
    }
}
