//! Durable desired state: the config popd is asked to realise, with the ids it
//! handed out, in `<state-dir>/state.json`. Every change is written to a temp
//! file, fsynced, renamed over the old one and the directory fsynced before the
//! API call returns, so a crash or power loss leaves the old or the new state,
//! never a mix.
//!
//! The state holds the whole config, so only popd's user and group may read
//! it: the directory is 0750 and the files 0640. Files are opened without
//! following symlinks, and the temp file is created with O_EXCL|O_NOFOLLOW, so
//! a link planted in the directory can neither redirect a write nor be read.
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::model::Config;
use crate::daemon::routes::ConfiguredRoutes;

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
///
/// In the state file the routes are the config's `routes` list, as in the
/// config file; in memory they are the typed table
/// [`ConfiguredRoutes`], and `config.routes` stays empty.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Persisted {
    /// Increments on every applied change.
    pub generation: u64,
    /// The desired state, without its routes.
    pub config: Config,
    /// Stable ids.
    pub ids: Ids,
    /// The configured routes.
    pub routes: ConfiguredRoutes,
}

impl Persisted {
    /// A state holding `config`, its routes moved into the typed table.
    /// Invalid routes are an error.
    pub fn from_config(
        generation: u64,
        config: Config,
        ids: Ids,
    ) -> Result<Self, crate::config::validate::ConfigError> {
        let (config, text) = config.with_routes(Vec::new());
        let mut routes = ConfiguredRoutes::default();
        for r in &text {
            let v = crate::config::validate::check_route(r)?;
            routes.insert(
                v.prefix,
                crate::daemon::routes::Hops {
                    dev: v.dev,
                    via: v.via,
                },
            );
        }
        Ok(Self {
            generation,
            config,
            ids,
            routes,
        })
    }

    /// The desired state as a whole config (`popctl export`).
    pub fn whole_config(&self) -> Config {
        Config {
            routes: self.routes.to_routes(),
            ..self.config.clone()
        }
    }
}

/// The state file's document: `config` holds the routes.
#[derive(Deserialize)]
struct OnDisk {
    generation: u64,
    config: Config<ConfiguredRoutes>,
    #[serde(default)]
    ids: Ids,
}

/// [`OnDisk`] to write, borrowing the state.
#[derive(Serialize)]
struct OnDiskRef<'a> {
    generation: u64,
    config: ConfigRef<'a>,
    ids: &'a Ids,
}

#[derive(Serialize)]
struct ConfigRef<'a> {
    #[serde(flatten)]
    config: &'a Config,
    routes: &'a ConfiguredRoutes,
}

impl Serialize for Persisted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        debug_assert!(self.config.routes.is_empty(), "routes live in `routes`");
        OnDiskRef {
            generation: self.generation,
            config: ConfigRef {
                config: &self.config,
                routes: &self.routes,
            },
            ids: &self.ids,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Persisted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let disk = OnDisk::deserialize(d)?;
        let (config, routes) = disk.config.with_routes(Vec::new());
        Ok(Self {
            generation: disk.generation,
            config,
            ids: disk.ids,
            routes,
        })
    }
}

/// Mode of the state directory.
pub const DIR_MODE: u32 = 0o750;
/// Mode of the state files.
pub const FILE_MODE: u32 = 0o640;

/// Opens `path` for reading without following a symlink (ELOOP if it is one).
fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// The state directory.
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The state directory `dir`. Nothing is created before the first
    /// [`Store::save`] (a start that fails leaves no trace); an existing
    /// directory is made 0750 and an existing state file 0640 (an older popd
    /// left them readable to all).
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StateError::Io { path: p, source }
        };
        if dir.exists() && !dir.is_dir() {
            return Err(StateError::Io {
                path: dir.into(),
                source: io::Error::other("not a directory"),
            });
        }
        if dir.is_dir() {
            fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)).map_err(io(dir))?;
        }
        let store = Self {
            dir: dir.to_path_buf(),
        };
        let path = store.path();
        match open_nofollow(&path) {
            Ok(f) => f
                .set_permissions(Permissions::from_mode(FILE_MODE))
                .map_err(io(&path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        Ok(store)
    }

    /// Path of the state file.
    pub fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The persisted state, or None on first start.
    pub fn load(&self) -> Result<Option<Persisted>, StateError> {
        let path = self.path();
        let read = open_nofollow(&path).and_then(|mut f| {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).map(|_| bytes)
        });
        match read {
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

    /// Atomically replaces the persisted state (write temp, fsync, rename, fsync
    /// dir). The temp file is new (O_EXCL): a leftover one, or anything else
    /// at its name, is unlinked first, never written through.
    pub fn save(&self, state: &Persisted) -> Result<(), StateError> {
        let path = self.path();
        let tmp = self.dir.join(".state.json.tmp");
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StateError::Io { path: p, source }
        };
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        fs::set_permissions(&self.dir, Permissions::from_mode(DIR_MODE)).map_err(io(&self.dir))?;
        let bytes = serde_json::to_vec(state).expect("state serialises");
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io(&tmp)(e)),
            _ => {}
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io(&tmp))?;
        // Exactly 0640 whatever the umask.
        f.set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io(&path))?;
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.dir)
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

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn state_dir_is_0750_and_state_file_0640() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("state");
        let store = Store::open(&dir).unwrap();
        assert!(!dir.exists(), "nothing is created before the first save");
        store.save(&Persisted::default()).unwrap();
        assert_eq!(mode(&dir), 0o750);
        assert_eq!(mode(&store.path()), 0o640);
        // A state file and directory an older popd left open to all.
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(store.path(), Permissions::from_mode(0o644)).unwrap();
        let store = Store::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o750);
        assert_eq!(mode(&store.path()), 0o640);
    }

    #[test]
    fn a_symlink_planted_at_the_temp_path_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"untouched").unwrap();
        let victim_mode = mode(&victim);
        let store = Store::open(dir.path()).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".state.json.tmp")).unwrap();
        let st = Persisted {
            generation: 3,
            ..Default::default()
        };
        store.save(&st).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"untouched");
        assert_eq!(mode(&victim), victim_mode);
        assert!(fs::symlink_metadata(store.path()).unwrap().is_file());
        assert_eq!(store.load().unwrap(), Some(st));
    }

    #[test]
    fn a_symlinked_state_file_is_refused_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.json");
        fs::write(&secret, br#"{"generation": 9, "config": {}}"#).unwrap();
        fs::set_permissions(&secret, Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("state.json")).unwrap();
        let err = match Store::open(dir.path()).and_then(|s| s.load()) {
            Err(e) => e.to_string(),
            Ok(v) => panic!("a symlinked state file was followed: {v:?}"),
        };
        assert!(err.contains("state.json"), "{err}");
        assert_eq!(mode(&secret), 0o600, "the link's target was chmod-ed");
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
