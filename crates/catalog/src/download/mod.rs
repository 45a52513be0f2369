//! Model downloads into the catalog.
//!
//! A transfer streams to `<id>/<file>.part`, resumes with a Range request when a `.part`
//! is there (and starts over when the server ignores the range), checks the sha256 when one
//! is known (the request's, or the hub's `X-Linked-Etag`), fsyncs and renames the file into
//! place, then writes the entry as `Available`. While it runs its entry says `Downloading`
//! and its folder's lock is held. Redirects are followed by hand, so that only http(s)
//! targets are followed, the hub's headers on the redirect are seen, and the hub token is
//! sent to the hub's host only.
//!
//! Jobs asking for the same model share one transfer: each holds a [`DownloadHandle`], and
//! when the last handle is dropped (every job cancelled) the transfer stops, keeps its
//! `.part` for a later resume and records the entry as failed. Progress is kept in atomics
//! (no wake-up per chunk); the outcome is sent once.
//!
//! # Layout
//! - this file: [`Downloader`] (its settings, and `start`: join a running transfer of the
//!   same id, or take the folder's lock, write the entry `Downloading` and spawn a run),
//!   [`DownloadRequest`], [`Downloaded`].
//! - `handle`: [`DownloadHandle`] and the transfer the jobs share: who may join, cancel on
//!   the last drop, the outcome sent once.
//! - `progress`: [`DownloadProgress`] and the counters behind it.
//! - `run`: one transfer from the first request to the entry on disk (resume negotiation,
//!   disk space, the body, length and digest checks, the failed entry).
//! - `listing`: a bare `owner/repo`: the hub's file list, and the GGUF file picked from it.
//! - `http`: one GET with its range, redirects followed by hand, status errors.
//! - `partial`: the `.part` and the record of its source: where a resume starts, the rename
//!   into place, the discard.
//! - `writer`: the body written (and hashed) on a thread of its own.
//! - `checksum`: the expected sha256 (the request's, the hub's) and the hasher.

mod checksum;
mod handle;
mod http;
mod listing;
mod partial;
mod progress;
mod run;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use reqwest::Url;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use handle::DownloadHandle;
pub use listing::{PickedFile, QUANTS, is_bare_repo};
pub use progress::DownloadProgress;

use crate::artifact::{ArtifactStatus, Entry, ModelArtifact};
use crate::disk::{self, DownloadLock};
use crate::error::{CatalogError, DownloadError};
use crate::id::CatalogId;
use crate::models::ModelCatalog;
use crate::source::Source;
use checksum::parse_sha256;
use handle::Transfer;
use progress::Counters;
use run::Run;

/// Settings of the downloader.
#[derive(Debug, Clone)]
pub struct DownloaderConfig {
    /// The Hugging Face endpoint that `owner/repo:file` references resolve against.
    pub hub_endpoint: Url,
    /// Sent as a bearer token to the hub's host (`HF_TOKEN`).
    pub hub_token: Option<String>,
    /// A transfer that receives nothing for this long fails (and can be resumed).
    pub stall_timeout: Duration,
    /// The `User-Agent` header.
    pub user_agent: String,
}

/// What a job asks to download.
#[derive(Debug, Clone)]
pub struct DownloadRequest {
    /// An `http(s)://` URL or `owner/repo:file.gguf`.
    pub model: String,
    /// The catalog id to use (default: from the file name).
    pub id: Option<String>,
    /// The expected sha256 of the file (hex).
    pub sha256: Option<String>,
}

/// A finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// The entry, now `Available`.
    pub entry: Entry<ModelArtifact>,
    /// Bytes transferred by this download (a resumed one counts only the rest).
    pub transferred: u64,
    /// From the first request to the entry on disk.
    pub elapsed: Duration,
    /// Where the checked digest came from, if one was checked.
    pub verified_against: Option<&'static str>,
}

/// Starts and shares model downloads into one model catalog. A cheap `Clone` handle.
#[derive(Clone)]
pub struct Downloader {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: ModelCatalog,
    // Made on the first download: building a TLS client loads the root certificates, which
    // would cost every hive start (time and memory) whether it ever downloads or not.
    client: std::sync::OnceLock<reqwest::Client>,
    config: DownloaderConfig,
    // A std mutex, never held across an await: only map lookups and inserts happen under it.
    transfers: Mutex<HashMap<CatalogId, (u64, Weak<Transfer>)>>,
    next_number: AtomicU64,
}

impl Inner {
    fn client(&self) -> Result<&reqwest::Client, DownloadError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(15))
            .user_agent(self.config.user_agent.clone())
            .build()
            .map_err(|error| {
                DownloadError::Source(format!("cannot create an HTTP client: {error}"))
            })?;
        Ok(self.client.get_or_init(|| client))
    }
}

impl Downloader {
    /// A downloader into `catalog`.
    pub fn new(catalog: ModelCatalog, config: DownloaderConfig) -> Result<Self, DownloadError> {
        Ok(Self {
            inner: Arc::new(Inner {
                catalog,
                client: std::sync::OnceLock::new(),
                config,
                transfers: Mutex::new(HashMap::new()),
                next_number: AtomicU64::new(1),
            }),
        })
    }

    /// The catalog downloads go into.
    pub fn catalog(&self) -> &ModelCatalog {
        &self.inner.catalog
    }

    /// Resolves what `request` names (no network, no disk).
    pub fn resolve(&self, request: &DownloadRequest) -> Result<Source, DownloadError> {
        Source::resolve(
            &request.model,
            request.id.as_deref(),
            &self.inner.config.hub_endpoint,
        )
    }

    /// Picks the GGUF file of hub repository `repo` (`owner/repo`) by the quantisation order
    /// [`QUANTS`], from the hub's list of its files.
    pub async fn pick_file(&self, repo: &str) -> Result<PickedFile, DownloadError> {
        listing::pick(&self.inner, repo).await
    }

    /// Starts downloading `source`, or joins the transfer of the same id already running.
    /// Refused when the model is already in the catalog or another process downloads it.
    pub fn start(
        &self,
        source: Source,
        sha256: Option<&str>,
    ) -> Result<DownloadHandle, DownloadError> {
        let expected = sha256.map(parse_sha256).transpose()?;
        let inner = &self.inner;
        let mut transfers = inner.transfers.lock().expect("transfers lock");
        if let Some(transfer) = transfers
            .get(&source.id)
            .and_then(|(_, weak)| weak.upgrade())
        {
            transfer.admits(
                &source,
                expected.as_ref().map(|(digest, _)| digest.as_str()),
            )?;
            return Ok(DownloadHandle::new(transfer, true));
        }
        let folder = inner.catalog.folder(&source.id);
        if std::fs::symlink_metadata(&folder).is_ok() && !disk::is_real_dir(&folder) {
            return Err(CatalogError::Unusable {
                id: source.id.to_string(),
                reason: format!("{} is a link or not a folder", folder.display()),
            }
            .into());
        }
        if let Some(entry) = inner.catalog.read_entry(&source.id)?
            && entry.artifact.status == ArtifactStatus::Available
        {
            return Err(DownloadError::AlreadyExists {
                id: source.id.to_string(),
                path: folder,
            });
        }
        std::fs::create_dir_all(&folder).map_err(|e| DownloadError::io("create", &folder, e))?;
        let Some(lock) = DownloadLock::try_acquire(&folder)? else {
            return Err(DownloadError::LockedElsewhere {
                id: source.id.to_string(),
                dir: inner.catalog.dir().to_path_buf(),
            });
        };
        let number = inner.next_number.fetch_add(1, Ordering::Relaxed);
        let counters = Arc::new(Counters::new());
        let (outcome_tx, outcome) = watch::channel(None);
        let cancel = CancellationToken::new();
        let transfer = Arc::new(Transfer {
            source: source.clone(),
            expected: expected.as_ref().map(|(digest, _)| digest.clone()),
            cancel: cancel.clone(),
            counters: counters.clone(),
            outcome,
        });
        transfers.insert(source.id.clone(), (number, Arc::downgrade(&transfer)));
        drop(transfers);
        let run = Run {
            inner: self.inner.clone(),
            source,
            expected,
            counters,
            folder,
        };
        // On disk before the caller hears of the transfer, so that a list right after
        // shows it.
        if let Err(error) = inner
            .catalog
            .write_entry(&run.entry(0, ArtifactStatus::Downloading))
        {
            let _ = std::fs::remove_file(run.folder.join(disk::DOWNLOAD_LOCK));
            return Err(error.into());
        }
        tokio::spawn(async move {
            let outcome = run.run(cancel).await;
            // Removed while still held, so that no other downloader locks a file about to go.
            let _ = std::fs::remove_file(run.folder.join(disk::DOWNLOAD_LOCK));
            drop(lock);
            let mut transfers = run.inner.transfers.lock().expect("transfers lock");
            if transfers
                .get(&run.source.id)
                .is_some_and(|(n, _)| *n == number)
            {
                transfers.remove(&run.source.id);
            }
            drop(transfers);
            let _ = outcome_tx.send(Some(outcome));
        });
        Ok(DownloadHandle::new(transfer, false))
    }
}
