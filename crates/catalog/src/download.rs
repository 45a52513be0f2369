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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use reqwest::header::{CONTENT_RANGE, LOCATION, RANGE};
use reqwest::{StatusCode, Url};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::artifact::{ArtifactStatus, Entry, ModelArtifact};
use crate::disk::{self, DownloadLock};
use crate::error::{CatalogError, DownloadError};
use crate::id::CatalogId;
use crate::models::ModelCatalog;
use crate::source::Source;

/// How many redirects a download follows.
const MAX_REDIRECTS: usize = 10;
/// Chunks queued between the network and the file writer.
const WRITE_QUEUE: usize = 64;
/// `total` when the size is not known.
const UNKNOWN: u64 = u64::MAX;

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

/// Where a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadProgress {
    /// Bytes of the file received so far (resumed bytes included).
    pub received: u64,
    /// The file's size, once the server announced it.
    pub total: Option<u64>,
    /// Bytes that were already on disk when this transfer started.
    pub resumed_from: u64,
    /// Time since the transfer started.
    pub elapsed: Duration,
}

type Outcome = Option<Result<Downloaded, DownloadError>>;

struct Counters {
    received: AtomicU64,
    total: AtomicU64,
    resumed_from: AtomicU64,
    started: Instant,
}

struct Transfer {
    source: Source,
    expected: Option<String>,
    cancel: CancellationToken,
    counters: Arc<Counters>,
    outcome: watch::Receiver<Outcome>,
}

impl Drop for Transfer {
    fn drop(&mut self) {
        // The last job following this transfer is gone: stop it.
        self.cancel.cancel();
    }
}

/// A job's hold on a transfer; dropping every handle of a transfer cancels it.
pub struct DownloadHandle {
    transfer: Arc<Transfer>,
    /// Whether this job joined a transfer another job had started.
    pub joined: bool,
}

impl DownloadHandle {
    /// What is downloaded.
    pub fn source(&self) -> &Source {
        &self.transfer.source
    }

    /// Where the transfer stands now.
    pub fn progress(&self) -> DownloadProgress {
        let counters = &self.transfer.counters;
        let total = counters.total.load(Ordering::Relaxed);
        DownloadProgress {
            received: counters.received.load(Ordering::Relaxed),
            total: (total != UNKNOWN).then_some(total),
            resumed_from: counters.resumed_from.load(Ordering::Relaxed),
            elapsed: counters.started.elapsed(),
        }
    }

    /// Waits for the transfer's outcome.
    pub async fn finished(&self) -> Result<Downloaded, DownloadError> {
        let mut outcome = self.transfer.outcome.clone();
        loop {
            if let Some(result) = outcome.borrow_and_update().clone() {
                return result;
            }
            if outcome.changed().await.is_err() {
                return Err(DownloadError::Cancelled);
            }
        }
    }
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
            // Only the same file joins: another source, or another digest to check, under
            // the same id would be answered with a file it did not ask for.
            if transfer.source.url != source.url {
                return Err(DownloadError::Source(format!(
                    "model '{}' is being downloaded from {}; wait for that download, or give another id",
                    source.id, transfer.source.url
                )));
            }
            if let Some((digest, _)) = &expected
                && transfer
                    .expected
                    .as_ref()
                    .is_some_and(|other| other != digest)
            {
                return Err(DownloadError::Source(format!(
                    "model '{}' is being downloaded with another expected sha256; wait for that download, or give another id",
                    source.id
                )));
            }
            return Ok(DownloadHandle {
                transfer,
                joined: true,
            });
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
        let counters = Arc::new(Counters {
            received: AtomicU64::new(0),
            total: AtomicU64::new(UNKNOWN),
            resumed_from: AtomicU64::new(0),
            started: Instant::now(),
        });
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
        Ok(DownloadHandle {
            transfer,
            joined: false,
        })
    }
}

/// An expected digest and where it came from.
type Expected = (String, &'static str);

fn parse_sha256(text: &str) -> Result<Expected, DownloadError> {
    let lower = text.trim().to_ascii_lowercase();
    if lower.len() == 64 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok((lower, "the request's sha256"))
    } else {
        Err(DownloadError::Source(
            "field `sha256` must be 64 hexadecimal digits".into(),
        ))
    }
}

/// The hub's `X-Linked-Etag` is the LFS file's sha256 (quoted); other etags are not digests.
fn linked_sha256(value: &str) -> Option<String> {
    let value = value.trim().trim_start_matches("W/").trim_matches('"');
    (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| value.to_ascii_lowercase())
}

struct Run {
    inner: Arc<Inner>,
    source: Source,
    expected: Option<Expected>,
    counters: Arc<Counters>,
    folder: PathBuf,
}

impl Run {
    fn final_path(&self) -> PathBuf {
        self.folder.join(&self.source.file_name)
    }

    fn part_path(&self) -> PathBuf {
        self.folder.join(format!("{}.part", self.source.file_name))
    }

    /// Beside the `.part`: the URL and ETag it came from, so that a resume continues only the
    /// same file.
    fn source_file_path(&self) -> PathBuf {
        self.folder
            .join(format!("{}.part.source", self.source.file_name))
    }

    fn entry(&self, size: u64, status: ArtifactStatus) -> Entry<ModelArtifact> {
        let now = Utc::now();
        let name = self
            .source
            .file_name
            .strip_suffix(".gguf")
            .unwrap_or(&self.source.file_name)
            .to_owned();
        Entry {
            artifact: ModelArtifact {
                id: self.source.id.to_string(),
                name,
                path: self.final_path(),
                size,
                status,
                added_at: now,
            },
            added_at: now,
            last_accessed: now,
        }
    }

    async fn run(&self, cancel: CancellationToken) -> Result<Downloaded, DownloadError> {
        let catalog = &self.inner.catalog;
        // The transfer watches `cancel` itself: it always waits for its file writer, so that
        // nothing writes to the `.part` once the lock is released.
        let result = self.transfer(&cancel).await;
        if let Err(error) = &result {
            if !error.keeps_partial() {
                let part = self.part_path();
                let source_file = self.source_file_path();
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = std::fs::remove_file(part);
                    let _ = std::fs::remove_file(source_file);
                })
                .await;
            }
            let size = self.counters.total.load(Ordering::Relaxed);
            let failed = self.entry(
                if size == UNKNOWN { 0 } else { size },
                ArtifactStatus::Failed {
                    error: error.to_string(),
                },
            );
            if let Err(write_error) = catalog.write_entry(&failed) {
                tracing::warn!(%write_error, "cannot record a failed download");
            }
        }
        result
    }

    async fn transfer(&self, cancel: &CancellationToken) -> Result<Downloaded, DownloadError> {
        let part = self.part_path();
        let recorded = PartSource::read(&self.source_file_path());
        let mut offset = match &recorded {
            // A partial file continues only the same URL's download.
            Some(recorded)
                if recorded.url == self.source.url.as_str() && disk::is_real_file(&part) =>
            {
                std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0)
            }
            _ => 0,
        };
        let if_range = recorded.and_then(|r| r.etag);
        let mut linked = Linked::default();
        let (response, url, total) = loop {
            let fetched = tokio::select! {
                fetched = self.fetch(offset, if_range.as_deref(), &mut linked) => fetched,
                () = cancel.cancelled() => return Err(DownloadError::Cancelled),
            };
            let (response, url) = fetched?;
            let status = response.status();
            if offset > 0 && status == StatusCode::RANGE_NOT_SATISFIABLE {
                // The partial file is not a prefix the server can continue: start over.
                offset = 0;
                continue;
            }
            if !status.is_success() {
                return Err(status_error(&url, status));
            }
            let range_start = response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range);
            match (status, range_start) {
                (StatusCode::PARTIAL_CONTENT, Some((start, total))) if start == offset => {
                    break (response, url, total);
                }
                (StatusCode::PARTIAL_CONTENT, _) if offset > 0 => {
                    // A range the hive did not ask for: ask once more for the whole file.
                    offset = 0;
                    continue;
                }
                (StatusCode::PARTIAL_CONTENT, _) => {
                    return Err(DownloadError::Transport {
                        url: url.to_string(),
                        received: 0,
                        reason: "it answered 206 Partial Content to a request for the whole file"
                            .into(),
                    });
                }
                // A whole body: the server ignored the range, or there was none.
                _ => {
                    offset = 0;
                    let total = response.content_length();
                    break (response, url, total);
                }
            }
        };
        let expected = self.expected.clone().or_else(|| {
            linked
                .sha256
                .map(|digest| (digest, "the hub's X-Linked-Etag"))
        });
        let counters = &self.counters;
        counters.resumed_from.store(offset, Ordering::Relaxed);
        counters.received.store(offset, Ordering::Relaxed);
        counters
            .total
            .store(total.unwrap_or(UNKNOWN), Ordering::Relaxed);
        // The hub announces the file's size on its redirect too; the larger announcement
        // counts, so that a lying Content-Length cannot fill the disk past the check.
        if let Some(announced) = total.into_iter().chain(linked.size).max() {
            let needed = announced.saturating_sub(offset);
            if let Some(free) = disk::free_space(&self.folder)
                && free < needed
            {
                return Err(DownloadError::DiskSpace {
                    dir: self.folder.clone(),
                    needed,
                    free,
                });
            }
            self.inner
                .catalog
                .write_entry(&self.entry(announced, ArtifactStatus::Downloading))?;
        }

        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|tag| !tag.starts_with("W/"))
            .map(str::to_owned);
        PartSource {
            url: self.source.url.to_string(),
            etag,
        }
        .write(&self.source_file_path())?;
        let writer = Writer::start(part.clone(), offset, expected.is_some());
        let mut received = offset;
        let mut body = response.bytes_stream();
        let stall = self.inner.config.stall_timeout;
        let body_result = loop {
            let next = tokio::select! {
                next = tokio::time::timeout(stall, body.next()) => next,
                () = cancel.cancelled() => break Err(DownloadError::Cancelled),
            };
            match next {
                Err(_) => {
                    break Err(DownloadError::Stalled {
                        url: url.to_string(),
                        secs: stall.as_secs(),
                        received,
                    });
                }
                Ok(None) => break Ok(()),
                Ok(Some(Err(error))) => {
                    break Err(DownloadError::Transport {
                        url: url.to_string(),
                        received,
                        reason: error_chain(&error),
                    });
                }
                Ok(Some(Ok(chunk))) => {
                    received += chunk.len() as u64;
                    if writer.chunks.send(chunk).await.is_err() {
                        break Ok(());
                    }
                    counters.received.store(received, Ordering::Relaxed);
                }
            }
        };
        let written = writer.finish().await;
        body_result?;
        let (written, digest) = written?;
        if let Some(total) = total
            && written != total
        {
            return Err(DownloadError::Incomplete {
                received: written,
                total,
            });
        }
        let verified_against = match (expected, digest) {
            (Some((expected, source)), Some(got)) => {
                if expected != got {
                    return Err(DownloadError::Checksum {
                        expected,
                        got,
                        source_of_expected: source,
                    });
                }
                Some(source)
            }
            _ => None,
        };
        let final_path = self.final_path();
        let _ = std::fs::remove_file(self.source_file_path());
        std::fs::rename(&part, &final_path).map_err(|e| DownloadError::io("rename", &part, e))?;
        disk::sync_dir(&self.folder).map_err(|e| DownloadError::io("sync", &self.folder, e))?;
        let entry = self.entry(written, ArtifactStatus::Available);
        self.inner.catalog.write_entry(&entry)?;
        Ok(Downloaded {
            entry,
            transferred: written - offset,
            elapsed: counters.started.elapsed(),
            verified_against,
        })
    }

    /// One GET, following redirects by hand; records the hub's `X-Linked-*` headers on the
    /// way.
    async fn fetch(
        &self,
        offset: u64,
        if_range: Option<&str>,
        linked: &mut Linked,
    ) -> Result<(reqwest::Response, Url), DownloadError> {
        let config = &self.inner.config;
        let mut url = self.source.url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.inner.client()?.get(url.clone());
            if offset > 0 {
                request = request.header(RANGE, format!("bytes={offset}-"));
                // A file that changed since the partial one answers whole (200): a clean
                // restart instead of a splice.
                if let Some(tag) = if_range {
                    request = request.header(reqwest::header::IF_RANGE, tag);
                }
            }
            if let Some(token) = &config.hub_token
                && same_origin(&url, &config.hub_endpoint)
            {
                request = request.bearer_auth(token);
            }
            let stall = config.stall_timeout;
            let response = match tokio::time::timeout(stall, request.send()).await {
                Err(_) => {
                    return Err(DownloadError::Stalled {
                        url: url.to_string(),
                        secs: stall.as_secs(),
                        received: offset,
                    });
                }
                Ok(sent) => sent.map_err(|error| DownloadError::Transport {
                    url: url.to_string(),
                    received: offset,
                    reason: error_chain(&error),
                })?,
            };

            let header = |name| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            if let Some(digest) = header("x-linked-etag").as_deref().and_then(linked_sha256) {
                linked.sha256 = Some(digest);
            }
            if let Some(size) = header("x-linked-size").and_then(|v| v.trim().parse().ok()) {
                linked.size = Some(size);
            }
            if !response.status().is_redirection() {
                return Ok((response, url));
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| DownloadError::Redirect {
                    from: url.to_string(),
                    reason: "no Location header".into(),
                })?;
            let next = url
                .join(location)
                .map_err(|error| DownloadError::Redirect {
                    from: url.to_string(),
                    reason: format!("bad Location {location:?}: {error}"),
                })?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(DownloadError::Redirect {
                    from: url.to_string(),
                    reason: format!(
                        "it leads to a {}: URL; only http(s) is followed",
                        next.scheme()
                    ),
                });
            }
            url = next;
        }
        Err(DownloadError::Redirect {
            from: self.source.url.to_string(),
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }
}

/// Where a `.part` came from (`<file>.part.source`, JSON).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PartSource {
    url: String,
    etag: Option<String>,
}

impl PartSource {
    fn read(path: &Path) -> Option<Self> {
        if !disk::is_real_file(path) {
            return None;
        }
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    fn write(&self, path: &Path) -> Result<(), DownloadError> {
        disk::write_json_atomic(path, self).map_err(DownloadError::from)
    }
}

/// What the hub says about an LFS file on its redirect.
#[derive(Debug, Default)]
struct Linked {
    /// `X-Linked-Etag`, when it is a sha256.
    sha256: Option<String>,
    /// `X-Linked-Size`.
    size: Option<u64>,
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

fn status_error(url: &Url, status: StatusCode) -> DownloadError {
    let detail = match status.as_u16() {
        401 | 403 => {
            "; the file may be gated or private: set HF_TOKEN in the hive's environment".to_owned()
        }
        404 => "; check the repository and file name".to_owned(),
        _ => String::new(),
    };
    DownloadError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        detail,
    }
}

/// `bytes <start>-<end>/<total>` → (start, total).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

/// An error with its causes (reqwest's own text says little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Writes (and hashes) the body on a thread of its own, so that the network is read while
/// the disk writes.
struct Writer {
    chunks: tokio::sync::mpsc::Sender<Bytes>,
    done: tokio::task::JoinHandle<Result<(u64, Option<String>), DownloadError>>,
}

impl Writer {
    fn start(part: PathBuf, offset: u64, hash: bool) -> Self {
        let (chunks, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
        let done = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let io = |action, e| DownloadError::io(action, &part, e);
            let mut file = if offset > 0 {
                let file = std::fs::File::options()
                    .append(true)
                    .custom_flags(disk::O_NOFOLLOW)
                    .open(&part)
                    .map_err(|e| io("open", e))?;
                file.set_len(offset).map_err(|e| io("truncate", e))?;
                file
            } else {
                std::fs::File::options()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(disk::O_NOFOLLOW)
                    .open(&part)
                    .map_err(|e| io("create", e))?
            };
            // Hashing runs on a thread of its own, beside the writes and the final fsync.
            let hasher = hash.then(|| Hasher::start(part.clone(), offset));
            let mut written = offset;
            while let Some(chunk) = receiver.blocking_recv() {
                file.write_all(&chunk).map_err(|e| io("write", e))?;
                written += chunk.len() as u64;
                if let Some(hasher) = &hasher {
                    hasher.feed(chunk);
                }
            }
            file.sync_all().map_err(|e| io("sync", e))?;
            let digest = hasher.map(Hasher::finish).transpose()?;
            Ok((written, digest))
        });
        Self { chunks, done }
    }

    async fn finish(self) -> Result<(u64, Option<String>), DownloadError> {
        drop(self.chunks);
        self.done.await.unwrap_or_else(|error| {
            Err(DownloadError::Io {
                action: "write",
                path: Path::new("(download writer)").to_path_buf(),
                reason: error.to_string(),
            })
        })
    }
}

/// A sha256 over a `.part`'s first `offset` bytes (read back from the file) and then every
/// chunk fed to it, computed on its own thread.
struct Hasher {
    chunks: std::sync::mpsc::SyncSender<Bytes>,
    thread: std::thread::JoinHandle<Result<String, DownloadError>>,
}

impl Hasher {
    fn start(part: PathBuf, offset: u64) -> Self {
        let (chunks, receiver) = std::sync::mpsc::sync_channel::<Bytes>(WRITE_QUEUE);
        let thread = std::thread::spawn(move || {
            use std::io::Read;
            use std::os::unix::fs::OpenOptionsExt;
            let mut hasher = Sha256::new();
            if offset > 0 {
                let file = std::fs::File::options()
                    .read(true)
                    .custom_flags(disk::O_NOFOLLOW)
                    .open(&part)
                    .map_err(|e| DownloadError::io("read", &part, e))?;
                let mut prefix = file.take(offset);
                let mut buffer = vec![0u8; 1 << 20];
                loop {
                    let n = prefix
                        .read(&mut buffer)
                        .map_err(|e| DownloadError::io("read", &part, e))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buffer[..n]);
                }
            }
            for chunk in receiver {
                hasher.update(&chunk);
            }
            Ok(hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect())
        });
        Self { chunks, thread }
    }

    fn feed(&self, chunk: Bytes) {
        // A hasher that stopped has an error of its own, reported by `finish`.
        let _ = self.chunks.send(chunk);
    }

    fn finish(self) -> Result<String, DownloadError> {
        drop(self.chunks);
        self.thread.join().unwrap_or_else(|_| {
            Err(DownloadError::Io {
                action: "hash",
                path: PathBuf::from("(download hasher)"),
                reason: "the hashing thread panicked".into(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_and_linked_etags() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        let digest = "a".repeat(64);
        assert_eq!(
            linked_sha256(&format!("\"{digest}\"")),
            Some(digest.clone())
        );
        assert_eq!(linked_sha256("\"abc\""), None);
        assert!(parse_sha256(&digest.to_uppercase()).is_ok());
        assert!(parse_sha256("xyz").is_err());
    }
}
