//! A lab with a popd in it, for one end-to-end test: the setup and teardown
//! every `tests/tests/e2e*.rs` scenario file needs.
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use pop_lab::bgp::Bgp;
use pop_lab::{topology, Lab, Popd};

/// One step of an end-to-end test, run on the test's lab in order with the
/// others by [`LabEnv::run_scenarios`].
pub type Scenario = fn(&mut LabEnv) -> Result<()>;

/// The lab (namespace names start with its prefix) and a popd on the edge
/// with a config of the test's and a state dir of its own. Dropped: the
/// test's processes are killed, then popd, then bird2, and the lab is torn
/// down, also when the test failed half-way.
pub struct LabEnv {
    /// The namespaces.
    pub lab: Lab,
    /// popd on the edge (not started by [`LabEnv::new`]).
    pub popd: Popd,
    /// Where popd and popctl are.
    pub bin_dir: PathBuf,
    /// Processes a test started in the lab (servers, collectors, captures):
    /// killed and reaped when dropped, before popd.
    pub children: Vec<Child>,
    /// bird2 in the lab, once a test started it: stopped when dropped, after
    /// popd.
    pub bgp: Option<Bgp>,
    /// A scratch dir for the test's files; popd's state dir is `state` in it.
    dir: tempfile::TempDir,
}

impl LabEnv {
    /// Brings the lab `prefix` up, runs `prepare` on it (e.g. XDP on the
    /// hosts' veths), and builds a popd with [`topology::full_config`], not
    /// started. On error the lab is down again.
    pub fn new(prefix: &str, prepare: impl FnOnce(&Lab) -> Result<()>) -> Result<Self> {
        Self::with_config(prefix, &topology::full_config(), prepare)
    }

    /// [`LabEnv::new`] with popd's config `config`.
    pub fn with_config(
        prefix: &str,
        config: &str,
        prepare: impl FnOnce(&Lab) -> Result<()>,
    ) -> Result<Self> {
        ensure!(
            pop_lab::is_root(),
            "the end-to-end tests need root (network namespaces, BPF): run them as root, \
             e.g. `cargo xtask test`"
        );
        pop_lab::ensure_bpffs()?;
        let bin_dir = pop_lab::popd::test_bin_dir()?;
        let lab = Lab::new(prefix);
        lab.up().context("lab up")?;
        let made = prepare(&lab).and_then(|()| {
            let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
            let popd = Popd::new(&lab, &bin_dir, &dir.path().join("state"), config)?;
            Ok((dir, popd))
        });
        match made {
            Ok((dir, popd)) => Ok(Self {
                lab,
                popd,
                bin_dir,
                children: Vec::new(),
                bgp: None,
                dir,
            }),
            Err(e) => {
                let _ = lab.down();
                Err(e)
            }
        }
    }

    /// [`LabEnv::new`] with nothing to prepare, and popd started.
    pub fn started(prefix: &str) -> Result<Self> {
        let mut env = Self::new(prefix, |_| Ok(()))?;
        env.popd.start()?;
        Ok(env)
    }

    /// Starts popd and waits until it resolved its next hops (10 s at most).
    pub fn start_resolved(&mut self) -> Result<()> {
        self.popd.start()?;
        self.popd.wait_resolved(Duration::from_secs(10))
    }

    /// Runs the `scenarios` of the test `test` in order on this lab, printing
    /// each name and how long it took; the first one that fails panics with
    /// its error and the end of popd's log.
    pub fn run_scenarios(&mut self, test: &str, scenarios: &[(&str, Scenario)]) {
        for (name, scenario) in scenarios {
            eprintln!("{test} scenario: {name}");
            let started = Instant::now();
            if let Err(e) = scenario(self) {
                panic!(
                    "{test} scenario {name:?} failed: {e:#}\n--- popd log ({}) ends with:\n{}",
                    self.popd.log_path().display(),
                    self.popd.log_tail(40)
                );
            }
            eprintln!("  ok in {:?}", started.elapsed());
        }
    }

    /// The hits of ACL rule `priority` in `popctl -j acl show`.
    pub fn acl_hits(&self, priority: u64) -> Result<u64> {
        let rules = self.popd.popctl_json(&["acl", "show"])?;
        rules
            .as_array()
            .and_then(|l| l.iter().find(|r| r["priority"] == priority))
            .and_then(|r| r["hits"].as_u64())
            .with_context(|| format!("no hits of rule {priority} in `popctl -j acl show`: {rules}"))
    }

    /// popd's state dir.
    pub fn state_dir(&self) -> &Path {
        self.popd.state_dir()
    }

    /// A dir for the test's own files, beside popd's state dir (removed when
    /// dropped).
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for LabEnv {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.popd.kill();
        self.bgp = None;
        if let Err(e) = self.lab.down() {
            eprintln!("lab teardown: {e:#}");
        }
    }
}
