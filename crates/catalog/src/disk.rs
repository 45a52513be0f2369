//! The catalog's file-system habits: atomic metadata writes, entries that are real folders
//! (never followed through a symbolic link), containment of paths, and the download lock.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use crate::error::CatalogError;

/// The metadata file of an entry.
pub(crate) const METADATA: &str = "metadata.json";
/// `O_NOFOLLOW`: files of an entry are opened only if they are not links.
pub(crate) const O_NOFOLLOW: i32 = nix::fcntl::OFlag::O_NOFOLLOW.bits();

/// The lock file a download holds in its entry.
pub(crate) const DOWNLOAD_LOCK: &str = ".download.lock";

/// Writes `value` as pretty JSON to `path` atomically: a temporary file beside it, fsync,
/// rename over, fsync of the folder. A crash leaves the old file or the new one.
pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), CatalogError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temporary = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let text = serde_json::to_vec_pretty(value).map_err(|error| CatalogError::Metadata {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })?;
    let write = || -> std::io::Result<()> {
        // A fresh file, never one a link points to.
        match std::fs::remove_file(&temporary) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        sync_dir(dir)
    };
    write().map_err(|error| CatalogError::io("write", path, error))
}

/// Flushes a folder's entries (a rename or a new file) to disk.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether `path` is a folder itself (a symbolic link to one is not).
pub(crate) fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Whether `path` is a regular file itself (a symbolic link to one is not).
pub(crate) fn is_real_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

/// `path` resolved, if it lies inside `folder` (both resolved, so `..` and links count).
pub(crate) fn inside(folder: &Path, path: &Path) -> Option<PathBuf> {
    let folder = folder.canonicalize().ok()?;
    let resolved = path.canonicalize().ok()?;
    resolved.starts_with(&folder).then_some(resolved)
}

/// An exclusive lock on an entry's `.download.lock`, held while a download runs. Locks are
/// released by the kernel when the process dies, so a `Downloading` entry whose lock is free
/// was interrupted.
#[derive(Debug)]
pub(crate) struct DownloadLock {
    _lock: Flock<File>,
}

impl DownloadLock {
    /// Takes the lock of entry folder `dir`; `Ok(None)` when another holder has it.
    pub(crate) fn try_acquire(dir: &Path) -> Result<Option<Self>, CatalogError> {
        let path = dir.join(DOWNLOAD_LOCK);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(O_NOFOLLOW)
            .open(&path)
            .map_err(|error| CatalogError::io("open", &path, error))?;
        let inode = file
            .metadata()
            .map_err(|error| CatalogError::io("stat", &path, error))?
            .ino();
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            // The lock counts only if the file is still the one at the path: a finishing
            // download unlinks its lock file before it lets go of it.
            Ok(lock) => match std::fs::symlink_metadata(&path) {
                Ok(now) if now.ino() == inode => Ok(Some(Self { _lock: lock })),
                _ => Ok(None),
            },
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(CatalogError::io("lock", &path, errno.into())),
        }
    }

    /// Whether a download holds the lock of entry folder `dir` now.
    pub(crate) fn is_held(dir: &Path) -> bool {
        let path = dir.join(DOWNLOAD_LOCK);
        let Ok(file) = File::open(&path) else {
            return false;
        };
        matches!(
            Flock::lock(file, FlockArg::LockSharedNonblock),
            Err((_, nix::errno::Errno::EWOULDBLOCK))
        )
    }
}

/// Bytes available to an unprivileged writer on the file system of `dir`.
pub(crate) fn free_space(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DownloadLock::try_acquire(dir.path()).unwrap().unwrap();
        assert!(DownloadLock::is_held(dir.path()));
        assert!(DownloadLock::try_acquire(dir.path()).unwrap().is_none());
        drop(lock);
        assert!(!DownloadLock::is_held(dir.path()));
        assert!(DownloadLock::try_acquire(dir.path()).unwrap().is_some());
    }

    #[test]
    fn containment_resolves_dots_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("models/a");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("m.gguf"), b"x").unwrap();
        std::fs::write(dir.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), folder.join("link")).unwrap();
        assert!(inside(&folder, &folder.join("m.gguf")).is_some());
        assert!(inside(&folder, &folder.join("../../secret")).is_none());
        assert!(inside(&folder, &folder.join("link")).is_none());
        assert!(!is_real_file(&folder.join("link")));
    }
}
