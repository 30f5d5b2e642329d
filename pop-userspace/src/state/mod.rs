//! Durable desired state: the config popd is asked to realise, with the ids it
//! handed out, in `<state-dir>/state.json`. Every change is written to a temp
//! file, fsynced, renamed over the old one and the directory fsynced before the
//! API call returns, so a crash or power loss leaves the old or the new state,
//! never a mix.
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::model::Config;

/// Errors of the state store.
#[derive(Debug, Error)]
pub enum StateError {
    /// Reading or writing the state file failed.
    #[error("state {path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The state file is not valid.
    #[error("state {path}: {reason}")]
    Corrupt {
        /// File involved.
        path: PathBuf,
        /// Parser message.
        reason: String,
    },
}

/// Ids that must stay stable across restarts, because the data plane's maps
/// and counters are indexed by them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids {
    /// Customer name → customer_id (1..MAX_CUSTOMERS).
    #[serde(default)]
    pub customers: BTreeMap<String, u32>,
    /// Interface name → slot in `iface_stats` (0..MAX_IFACES).
    #[serde(default)]
    pub iface_slots: BTreeMap<String, u32>,
    /// "dev via" → next-hop id (1..MAX_NEXTHOPS).
    #[serde(default)]
    pub nexthops: BTreeMap<String, u32>,
}

/// What is persisted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    /// Increments on every applied change.
    pub generation: u64,
    /// The desired state.
    pub config: Config,
    /// Stable ids.
    #[serde(default)]
    pub ids: Ids,
}

/// The state directory.
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The state directory `dir`. Nothing is created before the first
    /// [`Store::save`]: a start that fails leaves no trace.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        if dir.exists() && !dir.is_dir() {
            return Err(StateError::Io {
                path: dir.into(),
                source: io::Error::other("not a directory"),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Path of the state file.
    pub fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The persisted state, or None on first start.
    pub fn load(&self) -> Result<Option<Persisted>, StateError> {
        let path = self.path();
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StateError::Corrupt {
                        path,
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Atomically replaces the persisted state (write temp, fsync, rename, fsync dir).
    pub fn save(&self, state: &Persisted) -> Result<(), StateError> {
        let path = self.path();
        let tmp = self.dir.join(".state.json.tmp");
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StateError::Io { path: p, source }
        };
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let bytes = serde_json::to_vec(state).expect("state serialises");
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let mut st = Persisted {
            generation: 7,
            ..Default::default()
        };
        st.ids.customers.insert("acme".into(), 3);
        store.save(&st).unwrap();
        assert_eq!(store.load().unwrap(), Some(st));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn corrupt_state_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("state.json"), b"{not json").unwrap();
        let err = Store::open(dir.path())
            .unwrap()
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.contains("state.json"), "{err}");
    }
}
