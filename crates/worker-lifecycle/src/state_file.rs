//! The state file: the registry on disk, so that a restarted hive finds its workers again.
//!
//! `<state_dir>/workers.json` holds every worker record (pid, process start time, process
//! group, port, status, a stop under way …), the last id handed out, and the id of this
//! hive instance that marks its workers' processes. Version 1 files (no instance id, no
//! stops) are read too. It is written atomically — a
//! temporary file, `fsync`, `rename`, then `fsync` of the directory — so a crash leaves
//! either the old or the new file, never half of one. A file that cannot be read or parsed
//! is moved aside (`workers.json.corrupt-<time>`) with an error in the log, never silently
//! overwritten. `<state_dir>/rbee-hive.lock` is held with `flock` for the hive's life, so a
//! second hive on the same state dir is refused.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::LifecycleError;
use crate::record::WorkerRecord;

/// The file name of the state file in the state dir.
pub(crate) const STATE_FILE: &str = "workers.json";
/// The file name of the lock file in the state dir.
const LOCK_FILE: &str = "rbee-hive.lock";
const FORMAT_VERSION: u32 = 2;
const READABLE_VERSIONS: [u32; 2] = [1, 2];

/// What the state file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PersistedState {
    /// The format version.
    pub(crate) version: u32,
    /// The pid of the hive that wrote it.
    pub(crate) hive_pid: u32,
    /// When it was written.
    pub(crate) saved_at: DateTime<Utc>,
    /// The id that marks the processes of this state dir's workers (version 2).
    #[serde(default)]
    pub(crate) instance: Option<String>,
    /// The highest worker id number ever handed out (ids are never reused).
    pub(crate) last_id: u64,
    /// Every registered worker, including ids reserved for a process not started yet.
    pub(crate) workers: Vec<WorkerRecord>,
}

impl PersistedState {
    /// A state to save.
    pub(crate) fn new(instance: &str, last_id: u64, workers: Vec<WorkerRecord>) -> Self {
        Self {
            version: FORMAT_VERSION,
            hive_pid: std::process::id(),
            saved_at: Utc::now(),
            instance: Some(instance.to_owned()),
            last_id,
            workers,
        }
    }
}

/// The state dir of one hive, locked for its life.
#[derive(Debug)]
pub(crate) struct StateDir {
    dir: PathBuf,
    /// Holds the `flock` for the hive's life; closing it releases it.
    _lock: File,
    // std Mutex: held while one save writes, never across an await. Saves from the
    // background writer and from shutdown must not interleave on the temporary file.
    writing: std::sync::Mutex<()>,
}

impl StateDir {
    /// Creates the directory if needed and takes its lock; fails if another hive holds it.
    pub(crate) fn lock(dir: &Path) -> Result<Self, LifecycleError> {
        let io = |source| LifecycleError::StateDir {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock_path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|source| LifecycleError::StateDir {
                path: lock_path.clone(),
                source,
            })?;
        let mut lock = file;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(_) => {
                let mut file = lock;
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(LifecycleError::StateDirLocked {
                    path: dir.to_owned(),
                    holder: holder.trim().parse().ok(),
                });
            }
        }
        let _ = lock.set_len(0);
        let _ = lock.seek(SeekFrom::Start(0));
        let _ = writeln!(lock, "{}", std::process::id());
        Ok(Self {
            dir: dir.to_owned(),
            _lock: lock,
            writing: std::sync::Mutex::new(()),
        })
    }

    /// The state file's path.
    pub(crate) fn state_file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Reads the saved state. `None` when there is none; a file that cannot be read or
    /// parsed is moved aside (its new name is logged) and `None` is returned.
    pub(crate) fn load(&self) -> Option<PersistedState> {
        let path = self.state_file();
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                self.move_aside(&path, &format!("it cannot be read: {error}"));
                return None;
            }
        };
        match serde_json::from_slice::<PersistedState>(&text) {
            Ok(state) if READABLE_VERSIONS.contains(&state.version) => Some(state),
            Ok(state) => {
                self.move_aside(
                    &path,
                    &format!(
                        "it has format version {}, this hive reads versions 1 and 2",
                        state.version
                    ),
                );
                None
            }
            Err(error) => {
                self.move_aside(&path, &format!("it is not a valid state file: {error}"));
                None
            }
        }
    }

    fn move_aside(&self, path: &Path, why: &str) {
        let aside = path.with_extension(format!(
            "json.corrupt-{}",
            Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
        ));
        match std::fs::rename(path, &aside) {
            Ok(()) => tracing::error!(
                "state file {} is unusable ({why}); moved it to {} and starting with no workers",
                path.display(),
                aside.display()
            ),
            Err(error) => tracing::error!(
                "state file {} is unusable ({why}) and could not be moved aside ({error}); starting with no workers",
                path.display()
            ),
        }
    }

    /// Writes the state atomically: temporary file, fsync, rename, fsync of the directory.
    /// Takes the state to save while holding the writer's lock, so that of two saves the
    /// later snapshot is always the one left on disk.
    pub(crate) fn save_latest(
        &self,
        snapshot: impl FnOnce() -> PersistedState,
    ) -> std::io::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let state = snapshot();
        let path = self.state_file();
        let temporary = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?;
        {
            let mut file = File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, &path)?;
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::lock(dir.path()).unwrap();
        assert_eq!(state_dir.load(), None);
        let state = PersistedState::new("instance", 7, Vec::new());
        state_dir.save_latest(|| state.clone()).unwrap();
        assert_eq!(state_dir.load(), Some(state));
    }

    #[test]
    fn a_second_lock_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _first = StateDir::lock(dir.path()).unwrap();
        let error = StateDir::lock(dir.path()).unwrap_err();
        assert!(
            matches!(error, LifecycleError::StateDirLocked { holder: Some(pid), .. } if pid == std::process::id()),
            "{error}"
        );
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::lock(dir.path()).unwrap();
        std::fs::write(state_dir.state_file(), b"{ not json").unwrap();
        assert_eq!(state_dir.load(), None);
        assert!(!state_dir.state_file().exists());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("workers.json.corrupt-")
            })
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read(aside[0].path()).unwrap(), b"{ not json");
    }
}
