//! What can go wrong reading the worker catalog server and installing a worker. Each text is
//! a failed job's reason, so it says what happened and what to set or do.

use std::path::PathBuf;

use super::pkgbuild::PkgbuildError;
use crate::error::CatalogError;

/// Reading the worker catalog server or installing a worker failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    /// No `worker_catalog_url` is configured.
    #[error(
        "no worker catalog server is configured; set worker_catalog_url (flag --worker-catalog-url, \
         env RBEE_HIVE_WORKER_CATALOG_URL, or worker_catalog_url = \"http://…\" in hive.toml; \
         upstream's catalog server listens on http://localhost:8787) and restart the hive"
    )]
    NotConfigured,
    /// The server could not be reached or broke off.
    #[error(
        "the worker catalog server at {url} cannot be reached: {reason}; start it, or set \
         worker_catalog_url to one that runs"
    )]
    Unreachable {
        /// The configured base URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The server does not know the worker.
    #[error(
        "worker '{id}' is not in the worker catalog ({url} answered 404); worker_catalog_list shows \
         the ids it offers"
    )]
    NotInCatalog {
        /// The id asked for.
        id: String,
        /// The URL asked.
        url: String,
    },
    /// The server answered with another error status.
    #[error(
        "the worker catalog server answered HTTP {status} for {url}; check that worker_catalog_url \
         names a worker catalog server"
    )]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The answer is not the worker catalog's shape.
    #[error(
        "{url} did not answer with the worker catalog's shape ({reason}); is worker_catalog_url \
         a worker catalog server (GET /workers answers {{\"workers\": [...]}})?"
    )]
    Shape {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The PKGBUILD cannot be read as data.
    #[error("the PKGBUILD of '{id}' ({url}) cannot be read as data: {reason}")]
    Pkgbuild {
        /// The worker.
        id: String,
        /// Where it came from.
        url: String,
        /// What is wrong.
        reason: PkgbuildError,
    },
    /// The worker is not offered for this machine.
    #[error("worker '{id}' is not offered for {platform}/{arch}: {offered}")]
    NotForThisPlatform {
        /// The worker.
        id: String,
        /// `linux`.
        platform: &'static str,
        /// This machine's architecture.
        arch: &'static str,
        /// What it is offered for.
        offered: String,
    },
    /// The catalog offers only a build from source.
    #[error(
        "worker '{id}' is offered only as source to build ({what}); this hive installs prebuilt, \
         checksum-verified binaries only and never runs a build script fetched from the network. \
         Build it yourself and configure a worker type with its program path \
         ([workers.<name>] command = [\"/path/to/{binary}\", …] in hive.toml), or install a \
         prebuilt variant if the catalog offers one (worker_catalog_list)"
    )]
    SourceOnly {
        /// The worker.
        id: String,
        /// What the PKGBUILD gives (sources, `build()`).
        what: String,
        /// The executable's name, for the hint.
        binary: String,
    },
    /// The prebuilt download has no checksum to verify it against.
    #[error(
        "the PKGBUILD of '{id}' gives no sha256 for {url} ({given}); a prebuilt binary is \
         installed only when its checksum can be verified"
    )]
    Unverified {
        /// The worker.
        id: String,
        /// The download.
        url: String,
        /// What `sha256sums` holds there (`SKIP`, nothing).
        given: String,
    },
    /// The worker entry names a kind of worker this hive has no type for.
    #[error(
        "worker '{id}' has worker_type '{worker_type}'; this hive installs cpu, cuda and metal workers"
    )]
    UnknownKind {
        /// The worker.
        id: String,
        /// What the entry says.
        worker_type: String,
    },
    /// The archive download failed.
    #[error("downloading {url} failed: {reason}; nothing was installed")]
    Download {
        /// The URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The download's digest is not the PKGBUILD's.
    #[error(
        "sha256 mismatch for {url}: the PKGBUILD says {expected}, the download is {got}; the \
         download was removed and nothing was installed"
    )]
    Checksum {
        /// The URL.
        url: String,
        /// The PKGBUILD's digest.
        expected: String,
        /// The download's digest.
        got: String,
    },
    /// The archive is unsafe or unreadable.
    #[error("the download from {url} cannot be installed: {reason}; nothing was installed")]
    Archive {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
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
    /// The catalog refused.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl InstallError {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, error: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            reason: error.to_string(),
        }
    }
}
