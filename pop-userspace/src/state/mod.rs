//! Durable desired state: the config popd is asked to realise, with the ids it
//! handed out, in `<state-dir>/`:
//! - `state.json`, the **snapshot**: the whole [`Persisted`] state at one
//!   generation. [`Store::save`] writes it to a new temp file (streaming, never
//!   the whole JSON in memory), fsyncs it, renames it over the old one and
//!   fsyncs the directory;
//! - `state.journal`, the **journal**: the changes made since the snapshot,
//!   one framed record each ([`journal`] has the format). [`Store::append`]
//!   writes one record with one `write(2)` and one `fdatasync(2)`, and returns
//!   only once it is durable.
//!
//! A change costs one append; now and then ([`Store::should_compact`]) the
//! caller saves a snapshot, which empties the journal. A kill or a power loss
//! at any instant leaves the old state or the new one, never a mix: a torn last
//! record was never acknowledged and is discarded, and records at or below the
//! snapshot's generation are skipped, so a snapshot saved but whose journal
//! was not yet emptied replays nothing twice.
//!
//! The state holds the whole config, so only popd's user and group may read
//! it: the directory is 0750 and the files 0640, whatever the umask. Files are
//! opened without following symlinks, and the temp file is created with
//! O_EXCL|O_NOFOLLOW, so a link planted in the directory can neither redirect
//! a write nor be read.
#[cfg(test)]
mod crash_tests;
pub mod journal;
mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufReader, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::model::Config;
use crate::config::routes::ConfiguredRoutes;

/// Errors of the state store.
#[derive(Debug, Error)]
pub enum StateError {
    /// Reading or writing a state file failed.
    #[error("state {path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// A state file is not valid.
    #[error("state {path}: {reason}")]
    Corrupt {
        /// File involved.
        path: PathBuf,
        /// What is wrong, and where (the journal names the byte offset).
        reason: String,
    },
    /// An append whose generation is not the last one recorded (in the
    /// snapshot or the journal) plus one.
    #[error("state {path}: generation {generation} does not follow the last recorded generation {last} (the next is {last} + 1)")]
    OutOfOrder {
        /// The journal.
        path: PathBuf,
        /// Generation of the refused record.
        generation: u64,
        /// Last generation already recorded.
        last: u64,
    },
    /// A snapshot older than the journal's last record: saving it would lose
    /// that record.
    #[error("state {path}: snapshot generation {generation} is older than the journal's last record, generation {last}")]
    StaleSnapshot {
        /// The snapshot.
        path: PathBuf,
        /// Generation of the refused snapshot.
        generation: u64,
        /// Generation of the journal's last record.
        last: u64,
    },
    /// An append before any snapshot: a record is a change to a snapshot.
    #[error("state {path}: no snapshot yet; save one before appending changes")]
    NoSnapshot {
        /// The snapshot that is missing.
        path: PathBuf,
    },
    /// A record does not serialise.
    #[error("state {path}: record of generation {generation} does not serialise: {reason}")]
    Encode {
        /// The journal.
        path: PathBuf,
        /// Generation of the record.
        generation: u64,
        /// Serialiser message.
        reason: String,
    },
    /// [`Store::load`] found changes in the journal that only
    /// [`Store::load_with_journal`] can replay.
    #[error("state {path}: {records} change(s) after the snapshot need replaying; this reader cannot replay them")]
    Unreplayed {
        /// The journal.
        path: PathBuf,
        /// Records after the snapshot.
        records: usize,
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
                crate::config::routes::Hops {
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

/// Name of the snapshot in the state directory.
pub const SNAPSHOT_FILE: &str = "state.json";
/// Name of the journal in the state directory.
pub const JOURNAL_FILE: &str = "state.journal";

/// A journal is compacted (see [`Store::should_compact`]) once it holds at
/// least this many bytes and half the snapshot's size...
pub const COMPACT_MIN_BYTES: u64 = 64 * 1024;
/// ...or this many records, whatever their size.
pub const COMPACT_MAX_RECORDS: u64 = 1_000_000;

/// Size of the journal, in records and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalLen {
    /// Whole valid records (including any at or below the snapshot's
    /// generation that a compaction did not get to remove).
    pub records: u64,
    /// Bytes of those records.
    pub bytes: u64,
}

/// Opens `path` for reading without following a symlink (ELOOP if it is one).
fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// fsyncs the directory `dir`, so that a file created or renamed in it stays.
fn sync_dir(dir: &Path) -> io::Result<()> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
        .and_then(|d| d.sync_all())
}

/// Maps an `io::Error` on `path` to [`StateError::Io`].
fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What this Store knows of the files, so an append costs one write and one
/// fdatasync and nothing else.
#[derive(Debug, Default)]
struct Cursor {
    /// The journal, open for appending (O_APPEND), once an append needed it.
    file: Option<File>,
    /// Whether the fields below describe the journal on disk (after a load,
    /// a save, or the scan an append does when neither came first).
    scanned: bool,
    /// Bytes of whole valid records in the journal.
    end: u64,
    /// Records in the journal.
    records: u64,
    /// Last generation recorded, in the snapshot or the journal.
    last_generation: u64,
    /// Whether `last_generation` counts the snapshot's (after a load or a
    /// save; an append without either reads it).
    based: bool,
    /// Bytes past `end` may exist (a torn tail, a failed write): truncate
    /// them away before the next append.
    truncate_first: bool,
    /// An append failed and could not be undone: its record may or may not
    /// be on disk, so no further append until a snapshot replaces the
    /// journal.
    poisoned: Option<String>,
    /// Whether the snapshot exists (None: not yet looked).
    snapshot_exists: Option<bool>,
    /// Size of the snapshot in bytes.
    snapshot_bytes: u64,
}

/// How far [`Store::save`] goes, and in which order; anything but the full
/// correct order is for tests that simulate a crash between the steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
enum SaveOrder {
    /// Snapshot written and renamed and the directory fsynced, then the
    /// journal emptied.
    SnapshotFirst,
    /// The journal emptied first: wrong, a crash in between loses the
    /// journal's changes. Only to prove the tests notice.
    JournalFirst,
}

/// The state directory: its snapshot and its journal.
///
/// Every method takes `&self` (the journal's cursor is behind a mutex), so a
/// Store can be shared; appends and saves are serialised.
pub struct Store {
    dir: PathBuf,
    cursor: Mutex<Cursor>,
}

impl Store {
    /// The state directory `dir`. Nothing is created before the first
    /// [`Store::save`] (a start that fails leaves no trace); an existing
    /// directory is made 0750 and existing state files 0640 (an older popd
    /// left them readable to all).
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        if dir.exists() && !dir.is_dir() {
            return Err(StateError::Io {
                path: dir.into(),
                source: io::Error::other("not a directory"),
            });
        }
        if dir.is_dir() {
            fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)).map_err(io_at(dir))?;
        }
        let store = Self {
            dir: dir.to_path_buf(),
            cursor: Mutex::new(Cursor::default()),
        };
        for path in [store.path(), store.journal_path()] {
            match open_nofollow(&path) {
                Ok(f) => f
                    .set_permissions(Permissions::from_mode(FILE_MODE))
                    .map_err(io_at(&path))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&path)(e)),
            }
        }
        Ok(store)
    }

    /// Path of the snapshot, `<dir>/state.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    /// Path of the journal, `<dir>/state.journal`.
    pub fn journal_path(&self) -> PathBuf {
        self.dir.join(JOURNAL_FILE)
    }

    fn cursor(&self) -> MutexGuard<'_, Cursor> {
        // A panic while holding the lock leaves the cursor as it was between
        // two syscalls, which every path below tolerates.
        self.cursor.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The snapshot alone, or None on first start. Refuses
    /// ([`StateError::Unreplayed`]) when the journal holds changes after the
    /// snapshot: a reader that cannot replay them must not start from a
    /// state that lacks them.
    pub fn load(&self) -> Result<Option<Persisted>, StateError> {
        match self.load_with_journal::<serde::de::IgnoredAny>()? {
            None => Ok(None),
            Some((state, records)) if records.is_empty() => Ok(Some(state)),
            Some((_, records)) => Err(StateError::Unreplayed {
                path: self.journal_path(),
                records: records.len(),
            }),
        }
    }

    /// The snapshot and the records appended after it, in order, or None
    /// on first start (no snapshot and an empty or missing journal).
    ///
    /// Records at or below the snapshot's generation are skipped (a
    /// compaction that stopped before emptying the journal). A torn last
    /// record (never acknowledged) is discarded, and truncated away before
    /// the next append. Errors: [`StateError::Corrupt`] for a bad snapshot,
    /// for damage before the journal's tail (naming the byte offset), for a
    /// record that is not an `R`, and for a journal holding records without
    /// a snapshot; [`StateError::Io`] (ELOOP) when either file is a symlink.
    pub fn load_with_journal<R: DeserializeOwned>(
        &self,
    ) -> Result<Option<(Persisted, Vec<R>)>, StateError> {
        let mut cursor = self.cursor();
        let snapshot = self.read_snapshot()?;
        let after = snapshot.as_ref().map_or(0, |(s, _)| s.generation);
        let journal_path = self.journal_path();
        let mut records = Vec::new();
        let mut next = after + 1;
        let scanned = match open_nofollow(&journal_path) {
            Ok(file) => journal::scan(&journal_path, file, |offset, generation, payload| {
                if generation > after {
                    if generation != next {
                        // A snapshot and a journal from different moments
                        // (say, copied while popd ran).
                        return Err(StateError::Corrupt {
                            path: journal_path.clone(),
                            reason: format!(
                                "record at offset {offset} has generation {generation}, \
                                 but the snapshot {SNAPSHOT_FILE} is at generation {after}: \
                                 the changes in between are missing"
                            ),
                        });
                    }
                    next += 1;
                    let record =
                        serde_json::from_slice(payload).map_err(|e| StateError::Corrupt {
                            path: journal_path.clone(),
                            reason: format!(
                                "record at offset {offset} (generation {generation}): {e}"
                            ),
                        })?;
                    records.push(record);
                }
                Ok(())
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => journal::ScanEnd::default(),
            Err(e) => return Err(io_at(&journal_path)(e)),
        };
        if scanned.torn_bytes > 0 {
            tracing::warn!(
                "journal {}: discarded {} bytes at offset {}: a change that was never acknowledged",
                journal_path.display(),
                scanned.torn_bytes,
                scanned.end
            );
        }
        cursor.scanned = true;
        cursor.end = scanned.end;
        cursor.records = scanned.records;
        cursor.last_generation = after.max(scanned.last_generation);
        cursor.based = true;
        cursor.truncate_first |= scanned.torn_bytes > 0;
        cursor.snapshot_exists = Some(snapshot.is_some());
        cursor.snapshot_bytes = snapshot.as_ref().map_or(0, |(_, bytes)| *bytes);
        match snapshot {
            Some((state, _)) => Ok(Some((state, records))),
            None if scanned.records == 0 => Ok(None),
            None => Err(StateError::Corrupt {
                path: journal_path,
                reason: format!(
                    "{} record(s) but no snapshot {SNAPSHOT_FILE} to apply them to",
                    scanned.records
                ),
            }),
        }
    }

    /// The snapshot and its size in bytes, streamed from the file.
    fn read_snapshot(&self) -> Result<Option<(Persisted, u64)>, StateError> {
        let path = self.path();
        let file = match open_nofollow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(&path)(e)),
        };
        let bytes = file.metadata().map_err(io_at(&path))?.len();
        let reader = BufReader::with_capacity(1 << 20, file);
        let state = serde_json::from_reader(reader).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some((state, bytes)))
    }

    /// Appends the change `record`, of generation `generation`, to the
    /// journal, and returns once it is durable: one `write(2)` of one framed
    /// record, one `fdatasync(2)`. The first append creates the journal
    /// (0640, O_NOFOLLOW|O_CLOEXEC|O_APPEND, directory fsynced).
    ///
    /// `generation` must be the last one recorded (snapshot or journal) plus
    /// one: [`StateError::OutOfOrder`] otherwise, so a load can tell a
    /// complete journal from one with a hole; a snapshot must exist:
    /// [`StateError::NoSnapshot`] otherwise. On any error the record is not
    /// in the journal: a partial write is truncated away (if even that
    /// fails, appends are refused until the next [`Store::save`]).
    ///
    /// Call [`Store::load_with_journal`] or [`Store::save`] first; otherwise
    /// the first append scans the journal once to find its end.
    pub fn append<R: Serialize>(&self, generation: u64, record: &R) -> Result<(), StateError> {
        let path = self.journal_path();
        let mut guard = self.cursor();
        let cursor = &mut *guard;
        if let Some(reason) = &cursor.poisoned {
            return Err(StateError::Io {
                path,
                source: journal::poisoned_error(reason),
            });
        }
        if cursor.snapshot_exists != Some(true) {
            let snapshot = self.path();
            match fs::symlink_metadata(&snapshot) {
                Ok(_) => cursor.snapshot_exists = Some(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(StateError::NoSnapshot { path: snapshot });
                }
                Err(e) => return Err(io_at(&snapshot)(e)),
            }
        }
        self.open_journal(cursor)?;
        if !cursor.based {
            let generation = self.snapshot_generation()?;
            cursor.last_generation = cursor.last_generation.max(generation);
            cursor.based = true;
        }
        if Some(generation) != cursor.last_generation.checked_add(1) {
            return Err(StateError::OutOfOrder {
                path,
                generation,
                last: cursor.last_generation,
            });
        }
        let file = cursor.file.as_ref().expect("opened above");
        if cursor.truncate_first {
            file.set_len(cursor.end)
                .and_then(|()| file.sync_data())
                .map_err(io_at(&path))?;
            cursor.truncate_first = false;
        }
        let mut frame = vec![0u8; journal::HEADER_BYTES];
        serde_json::to_writer(&mut frame, record)
            .map_err(|e| e.to_string())
            .and_then(|()| journal::seal(&mut frame, generation))
            .map_err(|reason| StateError::Encode {
                path: path.clone(),
                generation,
                reason,
            })?;
        let mut writer = file;
        if let Err(e) = writer.write_all(&frame).and_then(|()| file.sync_data()) {
            // Not acknowledged, so it must not be replayed: cut it off.
            let undo = file.set_len(cursor.end).and_then(|()| file.sync_data());
            if let Err(undo) = undo {
                cursor.poisoned = Some(format!("{e}; truncating it: {undo}"));
            }
            return Err(io_at(&path)(e));
        }
        cursor.end += frame.len() as u64;
        cursor.records += 1;
        cursor.last_generation = generation;
        Ok(())
    }

    /// The snapshot's generation, without building the state.
    fn snapshot_generation(&self) -> Result<u64, StateError> {
        #[derive(Deserialize)]
        struct Head {
            generation: u64,
        }
        let path = self.path();
        let file = open_nofollow(&path).map_err(io_at(&path))?;
        let head: Head =
            serde_json::from_reader(BufReader::with_capacity(1 << 20, file)).map_err(|e| {
                StateError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                }
            })?;
        Ok(head.generation)
    }

    /// Opens (creating if needed) the journal for appending, and learns its
    /// end if no load or save did.
    fn open_journal(&self, cursor: &mut Cursor) -> Result<(), StateError> {
        if cursor.file.is_some() {
            return Ok(());
        }
        let path = self.journal_path();
        let open = |create: bool| {
            let mut o = OpenOptions::new();
            o.append(true)
                .mode(FILE_MODE)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
            if create {
                // O_CREAT|O_EXCL: never through a link planted at the path.
                o.create_new(true);
            }
            o.open(&path)
        };
        let (file, created) = match open(true) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                (open(false).map_err(io_at(&path))?, false)
            }
            Err(e) => return Err(io_at(&path)(e)),
        };
        // Exactly 0640 whatever the umask.
        file.set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(io_at(&path))?;
        if created {
            sync_dir(&self.dir).map_err(io_at(&self.dir))?;
        }
        if !cursor.scanned {
            let reader = open_nofollow(&path).map_err(io_at(&path))?;
            let scanned = journal::scan(&path, reader, |_, _, _| Ok(()))?;
            cursor.scanned = true;
            cursor.end = scanned.end;
            cursor.records = scanned.records;
            cursor.last_generation = cursor.last_generation.max(scanned.last_generation);
            cursor.truncate_first |= scanned.torn_bytes > 0;
        }
        cursor.file = Some(file);
        Ok(())
    }

    /// Size of the journal as this Store knows it: as loaded by
    /// [`Store::load_with_journal`] plus the appends since, or zero after a
    /// [`Store::save`].
    pub fn journal_len(&self) -> JournalLen {
        let cursor = self.cursor();
        JournalLen {
            records: cursor.records,
            bytes: cursor.end,
        }
    }

    /// Whether it is time to compact (save a snapshot, which empties the
    /// journal): when the journal holds at least [`COMPACT_MIN_BYTES`] and
    /// at least half the snapshot's size, or [`COMPACT_MAX_RECORDS`]
    /// records. So the journal adds at most about half the snapshot to the
    /// disk and to the time a start takes to load, and a compaction (which
    /// costs a snapshot's size) comes after at least half a snapshot's worth
    /// of changes: writing stays within about three times the bytes the
    /// changes themselves take.
    pub fn should_compact(&self) -> bool {
        let cursor = self.cursor();
        (cursor.end >= COMPACT_MIN_BYTES && cursor.end >= cursor.snapshot_bytes / 2)
            || cursor.records >= COMPACT_MAX_RECORDS
    }
}
