//! The hive's catalogs: models and worker binaries on disk, in the upstream rbee layout
//! (`<catalog_dir>/models/<id>/metadata.json`, `<catalog_dir>/workers/<id>/metadata.json`),
//! and model downloads into the model catalog.
//!
//! This crate knows nothing of HTTP jobs or worker processes. It owns the catalog folder:
//! every path it touches is `<catalog_dir>/<models|workers>/<id>/…` for a validated
//! [`CatalogId`], entries are never followed through symbolic links, metadata is written
//! atomically (temporary file, fsync, rename), and a download holds a lock file in its
//! entry for as long as it runs, so that an entry left `Downloading` by a crash reads as
//! interrupted, not as running.
//!
//! # Layout
//! - `id`: [`CatalogId`], the one validation of entry ids.
//! - `artifact`: the on-disk JSON ([`ModelArtifact`], [`WorkerArtifact`], [`ArtifactStatus`],
//!   [`Entry`]).
//! - `disk`: atomic writes, containment checks, the download lock.
//! - `models`: [`ModelCatalog`]: list, get, remove, the file a worker is given.
//! - `workers`: [`WorkerCatalog`]: list, get, remove, the binary for a worker type.
//! - `source`: what `model_download` was asked for: a URL or a Hugging Face reference.
//! - `download`: [`Downloader`]: transfers with resume, checksum, progress, sharing, cancel.
//! - `install`: the worker catalog server ([`WorkerCatalogServer`], [`CatalogWorker`]) and
//!   [`WorkerInstaller`]: prebuilt, checksum-verified workers from it, PKGBUILDs read as data.
//! - `error`: [`CatalogError`], [`DownloadError`].

#![deny(unreachable_pub)]

mod artifact;
mod disk;
mod download;
mod error;
mod id;
mod install;
mod models;
mod source;
mod workers;

pub use artifact::{ArtifactStatus, Entry, ModelArtifact, WorkerArtifact, WorkerKind};
pub use download::{
    DownloadHandle, DownloadProgress, DownloadRequest, Downloaded, Downloader, DownloaderConfig,
    PickedFile, QUANTS, is_bare_repo,
};
pub use error::{CatalogError, DownloadError};
pub use id::CatalogId;
pub use install::{
    ARCH, CatalogWorker, CatalogWorkerSource, InstallError, InstallStep, Installed, PLATFORM,
    Pkgbuild, PkgbuildError, SourceItem, WorkerCatalogServer, WorkerInstaller,
};
pub use models::ModelCatalog;
pub use source::Source;
pub use workers::WorkerCatalog;

/// The default catalog folder: `$XDG_CACHE_HOME/rbee`, else `~/.cache/rbee` (upstream's).
pub fn default_catalog_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return std::path::PathBuf::from(dir).join("rbee");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return std::path::PathBuf::from(home).join(".cache/rbee");
    }
    std::env::temp_dir().join("rbee")
}
