//! What can go wrong in the catalogs and in downloads. Texts are shown to users as the
//! reason of a failed job, so each names the entry and what to do.

use std::path::PathBuf;

/// A catalog operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    /// The id cannot name an entry.
    #[error("invalid catalog id '{id}': {reason}")]
    InvalidId {
        /// The id as given (shortened).
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// No such entry.
    #[error("no entry '{id}' in {dir}; {}", known_ids(.known))]
    NotFound {
        /// The id.
        id: String,
        /// The catalog folder searched.
        dir: PathBuf,
        /// The ids that are there.
        known: Vec<String>,
    },
    /// The entry exists but cannot be used now.
    #[error("'{id}' cannot be used: {reason}")]
    Unusable {
        /// The id.
        id: String,
        /// Why.
        reason: String,
    },
    /// The entry is being changed by a download.
    #[error("'{id}' is being downloaded; cancel that download first")]
    Downloading {
        /// The id.
        id: String,
    },
    /// The disk refused.
    #[error("cannot {action} {path}: {reason}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// A `metadata.json` that cannot be read as an entry.
    #[error("unreadable catalog metadata {path}: {reason}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn known_ids(known: &[String]) -> String {
    if known.is_empty() {
        "the catalog is empty".to_owned()
    } else {
        format!("known ids: {}", known.join(", "))
    }
}

impl CatalogError {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, error: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            reason: error.to_string(),
        }
    }
}

/// A model download failed. Cloneable: every job following one transfer gets its outcome.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DownloadError {
    /// `model` is neither a URL nor a usable Hugging Face reference.
    #[error("{0}")]
    Source(String),
    /// The catalog refused.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The model is already in the catalog.
    #[error(
        "model '{id}' already exists in the catalog ({path}); delete it first to download it again"
    )]
    AlreadyExists {
        /// The id.
        id: String,
        /// Its folder.
        path: PathBuf,
    },
    /// Another process downloads this model into the same catalog.
    #[error("model '{id}' is being downloaded by another process using {dir}")]
    LockedElsewhere {
        /// The id.
        id: String,
        /// The catalog folder.
        dir: PathBuf,
    },
    /// The server answered with an error status.
    #[error("{url} answered HTTP {status}{detail}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// A hint (e.g. about tokens), with its leading separator.
        detail: String,
    },
    /// The connection failed or broke.
    #[error(
        "transfer from {url} failed after {received} bytes: {reason}; download it again to resume (model_download, or rbee-hive model download)"
    )]
    Transport {
        /// The URL.
        url: String,
        /// Bytes on disk so far.
        received: u64,
        /// What happened.
        reason: String,
    },
    /// No data for too long.
    #[error(
        "no data from {url} for {secs} s after {received} bytes; download it again to resume (model_download, or rbee-hive model download)"
    )]
    Stalled {
        /// The URL.
        url: String,
        /// How long.
        secs: u64,
        /// Bytes on disk so far.
        received: u64,
    },
    /// A redirect that is not followed.
    #[error("refused redirect from {from}: {reason}")]
    Redirect {
        /// Where it came from.
        from: String,
        /// Why it is not followed.
        reason: String,
    },
    /// Not enough room for the announced size.
    #[error(
        "not enough disk space in {dir}: the download needs {needed} more bytes, {free} are free"
    )]
    DiskSpace {
        /// The folder.
        dir: PathBuf,
        /// Bytes still to write.
        needed: u64,
        /// Bytes available.
        free: u64,
    },
    /// The body ended before the announced size.
    #[error(
        "the server closed the transfer after {received} of {total} bytes; download it again to resume (model_download, or rbee-hive model download)"
    )]
    Incomplete {
        /// Bytes received.
        received: u64,
        /// Bytes announced.
        total: u64,
    },
    /// The file's digest differs from the expected one; the partial file was removed.
    #[error(
        "sha256 mismatch: expected {expected}, got {got} ({source_of_expected}); the download was discarded"
    )]
    Checksum {
        /// Expected digest.
        expected: String,
        /// Digest of what arrived.
        got: String,
        /// Where the expected digest came from.
        source_of_expected: &'static str,
    },
    /// Writing the file failed.
    #[error("cannot {action} {path}: {reason}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// Every job following the transfer was cancelled.
    #[error("download cancelled")]
    Cancelled,
}

impl DownloadError {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, error: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            reason: error.to_string(),
        }
    }

    /// Whether the partial file is worth keeping for a resume: always, except when what
    /// arrived is known to be wrong (a resume compares its source first).
    pub(crate) fn keeps_partial(&self) -> bool {
        !matches!(self, Self::Checksum { .. })
    }
}
