//! Saving a snapshot: the whole state streamed into a new temp file, renamed
//! over `state.json`, and only then the journal emptied.
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, BufWriter};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

use super::{
    io_at, journal, open_nofollow, sync_dir, Cursor, Persisted, SaveOrder, StateError, Store,
    DIR_MODE, FILE_MODE,
};

impl Store {
    /// Saves `state` as the snapshot and empties the journal: temp file
    /// written (streamed) and fsynced, renamed over `state.json`, directory
    /// fsynced; only then the journal truncated and fdatasynced. The temp
    /// file is new (O_EXCL): a leftover one, or anything else at its name, is
    /// unlinked first, never written through.
    ///
    /// Refuses ([`StateError::StaleSnapshot`]) a state older than the
    /// journal's last record. Once the snapshot is renamed into place the
    /// save has succeeded: a failure to empty the journal after that is
    /// logged, not returned (its records are skipped at load, being at or
    /// below the snapshot's generation).
    pub fn save(&self, state: &Persisted) -> Result<(), StateError> {
        self.save_steps(state, usize::MAX, SaveOrder::SnapshotFirst)
    }

    /// [`Store::save`], stopping after `steps` of its five steps (1: temp
    /// written and fsynced, 2: renamed, 3: directory fsynced, 4: journal
    /// truncated, 5: journal fdatasynced), in `order`. Tests use it to leave
    /// the files as a crash between two steps would.
    pub(super) fn save_steps(
        &self,
        state: &Persisted,
        steps: usize,
        order: SaveOrder,
    ) -> Result<(), StateError> {
        let mut cursor = self.cursor();
        if !cursor.scanned {
            // A save before any load: learn the journal's last generation
            // (a missing journal has none).
            let path = self.journal_path();
            match open_nofollow(&path) {
                Ok(file) => {
                    let scanned = journal::scan(&path, file, |_, _, _| Ok(()))?;
                    cursor.last_generation = cursor.last_generation.max(scanned.last_generation);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&path)(e)),
            }
        }
        if state.generation < cursor.last_generation {
            return Err(StateError::StaleSnapshot {
                path: self.path(),
                generation: state.generation,
                last: cursor.last_generation,
            });
        }
        fs::create_dir_all(&self.dir).map_err(io_at(&self.dir))?;
        fs::set_permissions(&self.dir, Permissions::from_mode(DIR_MODE))
            .map_err(io_at(&self.dir))?;
        let mut done = 0;
        if order == SaveOrder::JournalFirst {
            done += self.empty_journal(&mut cursor, steps)?;
        }
        let snapshot_bytes = self.write_snapshot(state, steps.saturating_sub(done))?;
        done += 3;
        if done > steps {
            return Ok(());
        }
        cursor.snapshot_exists = Some(true);
        cursor.snapshot_bytes = snapshot_bytes;
        cursor.last_generation = state.generation;
        cursor.based = true;
        if order == SaveOrder::SnapshotFirst {
            if let Err(e) = self.empty_journal(&mut cursor, steps - done) {
                tracing::warn!("{e}; its records are at or below the snapshot's generation and will be skipped");
                // Its length is unknown now: the next append scans it.
                cursor.scanned = false;
                cursor.file = None;
                return Ok(());
            }
        }
        cursor.poisoned = None;
        Ok(())
    }

    /// Steps 1-3 of a save, or fewer: writes the temp file, renames it,
    /// fsyncs the directory. Returns the snapshot's size.
    fn write_snapshot(&self, state: &Persisted, steps: usize) -> Result<u64, StateError> {
        let path = self.path();
        let tmp = self.dir.join(".state.json.tmp");
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(&tmp)(e)),
            _ => {}
        }
        if steps == 0 {
            return Ok(0);
        }
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io_at(&tmp))?;
        // Exactly 0640 whatever the umask.
        f.set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(io_at(&tmp))?;
        // Streamed: with a million routes the JSON would double popd's memory.
        let mut writer = BufWriter::with_capacity(1 << 20, f);
        serde_json::to_writer(&mut writer, state).map_err(|e| StateError::Encode {
            path: tmp.clone(),
            generation: state.generation,
            reason: e.to_string(),
        })?;
        let f = writer
            .into_inner()
            .map_err(|e| io_at(&tmp)(e.into_error()))?;
        f.sync_all().map_err(io_at(&tmp))?;
        let bytes = f.metadata().map_err(io_at(&tmp))?.len();
        drop(f);
        if steps == 1 {
            return Ok(bytes);
        }
        fs::rename(&tmp, &path).map_err(io_at(&path))?;
        if steps == 2 {
            return Ok(bytes);
        }
        sync_dir(&self.dir).map_err(io_at(&self.dir))?;
        Ok(bytes)
    }

    /// Steps 4-5 of a save, or fewer: truncates the journal to nothing and
    /// fdatasyncs it. Returns the steps it counts (2), done or not.
    fn empty_journal(&self, cursor: &mut Cursor, steps: usize) -> Result<usize, StateError> {
        let path = self.journal_path();
        let opened;
        let file = match &cursor.file {
            Some(f) => f,
            None => match OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(f) => {
                    opened = f;
                    &opened
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    cursor.scanned = true;
                    cursor.end = 0;
                    cursor.records = 0;
                    cursor.truncate_first = false;
                    return Ok(2);
                }
                Err(e) => return Err(io_at(&path)(e)),
            },
        };
        if steps == 0 {
            return Ok(2);
        }
        file.set_len(0).map_err(io_at(&path))?;
        if steps >= 2 {
            file.sync_data().map_err(io_at(&path))?;
        }
        cursor.scanned = true;
        cursor.end = 0;
        cursor.records = 0;
        cursor.truncate_first = false;
        Ok(2)
    }
}
