//! A lab with a popd in it, for one end-to-end test: the setup and teardown
//! every `tests/tests/e2e*.rs` scenario file needs.
use std::path::Path;

use anyhow::{ensure, Context, Result};
use pop_lab::{topology, Lab, Popd};

/// The lab (namespace names start with its prefix) and a popd on the edge
/// with the lab's full config and a state dir of its own. Dropped: popd is
/// killed and the lab torn down, also when the test failed half-way.
pub struct LabEnv {
    /// The namespaces.
    pub lab: Lab,
    /// popd on the edge (not started by [`LabEnv::new`]).
    pub popd: Popd,
    _state: tempfile::TempDir,
}

impl LabEnv {
    /// Brings the lab `prefix` up, runs `prepare` on it (e.g. XDP on the
    /// hosts' veths), and builds a popd with [`topology::full_config`], not
    /// started. On error the lab is down again.
    pub fn new(prefix: &str, prepare: impl FnOnce(&Lab) -> Result<()>) -> Result<Self> {
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
            let state = tempfile::Builder::new().prefix(prefix).tempdir()?;
            let popd = Popd::new(&lab, &bin_dir, state.path(), &topology::full_config())?;
            Ok((state, popd))
        });
        match made {
            Ok((state, popd)) => Ok(Self {
                lab,
                popd,
                _state: state,
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

    /// popd's state dir.
    pub fn state_dir(&self) -> &Path {
        self._state.path()
    }
}

impl Drop for LabEnv {
    fn drop(&mut self) {
        let _ = self.popd.kill();
        if let Err(e) = self.lab.down() {
            eprintln!("lab teardown: {e:#}");
        }
    }
}
