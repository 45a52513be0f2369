//! Worker installs from a worker catalog server (upstream's `bin/80-hono-worker-catalog`):
//! the server's entries, and [`WorkerInstaller::install`], which puts a prebuilt,
//! checksum-verified binary into the worker catalog (`<catalog_dir>/workers/<id>/` with its
//! `metadata.json`), so that `worker_binary_list`/`get` list it and a `worker_spawn` of its
//! kind runs it.
//!
//! The prebuilt binary is named by the entry's PKGBUILD, read as data: its `source` /
//! `source_<arch>` archive URL and `sha256sums` / `sha256sums_<arch>` digest. A PKGBUILD
//! that builds (`build()`), or gives only VCS or local sources, is refused with what to do
//! instead; nothing fetched from the network is ever run.
//!
//! An install works in `<catalog_dir>/workers/.install/<id>/` (a folder that no catalog
//! list reads): it holds that id's lock (so concurrent installs of one id, in this process
//! or another, run one after the other, and the second finds the first's entry), the
//! download and the staging folder. The entry appears by one rename of the staging folder,
//! complete with its `metadata.json`; a crash leaves only files in the work folder, which
//! the next install of that id clears.
//!
//! # Layout
//! - this file: [`WorkerInstaller`], [`InstallStep`], [`Installed`]; the steps of one install.
//! - `server`: [`WorkerCatalogServer`], [`CatalogWorker`]: the server's shapes and reads.
//! - `pkgbuild`: [`Pkgbuild`]: a PKGBUILD read as data.
//! - `unpack`: the download made into files: a `.tar.gz` unpacked safely, or a bare
//!   executable; the executable found.
//! - `error`: [`InstallError`].

mod error;
mod pkgbuild;
mod server;
mod unpack;

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::fcntl::{Flock, FlockArg};
use reqwest::Url;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

pub use error::InstallError;
pub use pkgbuild::{Pkgbuild, PkgbuildError, SourceItem};
pub use server::{CatalogWorker, CatalogWorkerSource, WorkerCatalogServer};

use crate::artifact::{ArtifactStatus, Entry, Platform, WorkerArtifact, WorkerKind};
use crate::disk::{self, METADATA};
use crate::id::CatalogId;
use crate::workers::WorkerCatalog;
use unpack::Payload;

/// The platform name that catalog entries use for this hive's operating system.
pub const PLATFORM: &str = "linux";

/// This machine's architecture as PKGBUILDs and catalog entries name it (`x86_64`, `aarch64`).
pub const ARCH: &str = std::env::consts::ARCH;

/// A download that receives nothing for this long fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Numbers the installs of this process (the names of their files in a work folder).
static ATTEMPTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How often a running download reports its progress, at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What an install is doing, for its narration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallStep {
    /// The catalog entry was read.
    Entry {
        /// Its name.
        name: String,
        /// Its version.
        version: String,
    },
    /// The PKGBUILD was read and the prebuilt download chosen.
    Chosen {
        /// The PKGBUILD's URL.
        pkgbuild: String,
        /// The archive's URL.
        url: String,
        /// Its expected sha256.
        sha256: String,
    },
    /// Another install of the same id runs; this one waits for it.
    Waiting,
    /// An entry with this id exists but cannot be used; it is replaced.
    ReplacingBroken {
        /// Why it cannot be used.
        reason: String,
    },
    /// Bytes arrived.
    Progress {
        /// So far.
        received: u64,
        /// Announced, when known.
        total: Option<u64>,
    },
    /// The download's sha256 matched.
    Verified {
        /// Bytes downloaded.
        bytes: u64,
    },
    /// The download was unpacked (or copied, for a bare executable).
    Unpacked {
        /// How many archive entries (1 for a bare executable).
        entries: usize,
        /// The executable, relative to the entry folder.
        executable: PathBuf,
    },
}

/// The outcome of an install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The entry as `metadata.json` holds it.
    pub entry: Entry<WorkerArtifact>,
    /// False when the id was already installed and usable (nothing was downloaded).
    pub fresh: bool,
}

/// Installs workers from one catalog server into one worker catalog. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkerInstaller {
    catalog: WorkerCatalog,
    server: Option<WorkerCatalogServer>,
}

impl WorkerInstaller {
    /// An installer into `catalog` from the server at `server_url` (`None`: none is
    /// configured, and every call says so).
    pub fn new(
        catalog: WorkerCatalog,
        server_url: Option<Url>,
        user_agent: &str,
    ) -> Result<Self, InstallError> {
        let server = server_url
            .map(|url| WorkerCatalogServer::new(url, user_agent))
            .transpose()?;
        Ok(Self { catalog, server })
    }

    /// The catalog server, or [`InstallError::NotConfigured`].
    pub fn server(&self) -> Result<&WorkerCatalogServer, InstallError> {
        self.server.as_ref().ok_or(InstallError::NotConfigured)
    }

    /// Installs worker `id` from the catalog server, reporting each step to `step`. An id
    /// already installed and usable is left alone (`fresh: false`).
    pub async fn install(
        &self,
        id: &CatalogId,
        step: impl Fn(InstallStep) + Send + Sync,
    ) -> Result<Installed, InstallError> {
        let server = self.server()?;
        // Installed and usable: nothing to ask the server (checked again under the lock).
        if let Some(entry) = self.usable(id, &mut |_| {}) {
            return Ok(Installed {
                entry,
                fresh: false,
            });
        }
        let worker = server.get(id).await?;
        step(InstallStep::Entry {
            name: worker.name.clone(),
            version: worker.version.clone(),
        });
        if !worker.offers(PLATFORM, ARCH) {
            return Err(InstallError::NotForThisPlatform {
                id: id.to_string(),
                platform: PLATFORM,
                arch: ARCH,
                offered: format!("it lists {}", worker.platforms_phrase()),
            });
        }
        let kind = WorkerKind::for_worker_type(&worker.worker_type).ok_or_else(|| {
            InstallError::UnknownKind {
                id: id.to_string(),
                worker_type: worker.worker_type.clone(),
            }
        })?;

        let work = self.work_folder(id)?;
        let _lock = match try_lock(&work)? {
            Some(lock) => lock,
            None => {
                step(InstallStep::Waiting);
                lock_waiting(&work).await?
            }
        };
        // Under the lock: what an earlier install left (a crash) is cleared, and an install
        // that finished while this one waited is found.
        clear_leftovers(&work)?;
        if let Some(entry) = self.usable(id, &mut |reason| {
            step(InstallStep::ReplacingBroken { reason })
        }) {
            return Ok(Installed {
                entry,
                fresh: false,
            });
        }

        let (pkgbuild_url, text) = server.pkgbuild(&worker, id).await?;
        let unreadable = |reason: PkgbuildError| InstallError::Pkgbuild {
            id: id.to_string(),
            url: pkgbuild_url.to_string(),
            reason,
        };
        let pkgbuild = Pkgbuild::parse(&text).map_err(unreadable)?;
        let prebuilt = choose_prebuilt(id, &worker, &pkgbuild).map_err(|e| match e {
            Choice::Error(error) => error,
            Choice::Pkgbuild(reason) => unreadable(reason),
        })?;
        let url = Url::parse(&prebuilt.location).map_err(|e| InstallError::Download {
            url: prebuilt.location.clone(),
            reason: format!("not a URL: {e}"),
        })?;
        let expected = prebuilt.digest().unwrap_or_default().to_owned();
        step(InstallStep::Chosen {
            pkgbuild: pkgbuild_url.to_string(),
            url: url.to_string(),
            sha256: expected.clone(),
        });

        // Removed on every way out (error, cancel) but the rename that makes the entry. The
        // names are this install's own: a cancelled install's unpacking thread may still run
        // after the lock is free, and must not write into the next install's files.
        let attempt = format!(
            "{}-{}",
            std::process::id(),
            ATTEMPTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let download = Leftover(work.join(format!("download-{attempt}.part")));
        let staging = Leftover(work.join(format!("staging-{attempt}")));
        let bytes = fetch(server.client(), &url, &download.0, &expected, &step).await?;
        step(InstallStep::Verified { bytes });

        let version = if worker.version.is_empty() {
            pkgbuild.scalar("pkgver").ok().flatten().unwrap_or_default()
        } else {
            worker.version.clone()
        };
        let names = executable_names(id, &worker, &pkgbuild, &url);
        let final_folder = self.catalog.dir().join(id.as_str());
        let (entries, executable, entry) = {
            let (download, staging, final_folder, id) = (
                download.0.clone(),
                staging.0.clone(),
                final_folder.clone(),
                id.to_string(),
            );
            let url = url.to_string();
            tokio::task::spawn_blocking(move || {
                stage(
                    &download,
                    &staging,
                    &final_folder,
                    &names,
                    StagedEntry { id, kind, version },
                )
                .map_err(|reason| match reason {
                    StageError::Archive(reason) => InstallError::Archive { url, reason },
                    StageError::Install(error) => error,
                })
            })
            .await
            .map_err(|e| InstallError::Io {
                action: "unpack",
                path: work.clone(),
                reason: e.to_string(),
            })??
        };
        step(InstallStep::Unpacked {
            entries,
            executable,
        });
        // The old (broken) entry goes aside first, so the rename cannot fail on a full folder.
        if std::fs::symlink_metadata(&final_folder).is_ok() {
            let aside = work.join(format!("old-{attempt}"));
            std::fs::rename(&final_folder, &aside)
                .map_err(|e| InstallError::io("move aside", &final_folder, e))?;
            let _ = std::fs::remove_dir_all(&aside);
        }
        std::fs::rename(&staging.0, &final_folder)
            .map_err(|e| InstallError::io("install", &final_folder, e))?;
        disk::sync_dir(self.catalog.dir())
            .map_err(|e| InstallError::io("sync", self.catalog.dir(), e))?;
        Ok(Installed { entry, fresh: true })
    }

    /// `<catalog_dir>/workers/.install/<id>/`, created.
    fn work_folder(&self, id: &CatalogId) -> Result<PathBuf, InstallError> {
        let work = self.catalog.dir().join(".install").join(id.as_str());
        std::fs::create_dir_all(&work).map_err(|e| InstallError::io("create", &work, e))?;
        if !disk::is_real_dir(&work) {
            return Err(InstallError::Io {
                action: "use",
                path: work,
                reason: "it is not a folder".into(),
            });
        }
        Ok(work)
    }

    /// The installed entry `id` when it is usable; else `None`, telling `broken` why when
    /// one is there.
    fn usable(
        &self,
        id: &CatalogId,
        broken: &mut dyn FnMut(String),
    ) -> Option<Entry<WorkerArtifact>> {
        let folder = self.catalog.dir().join(id.as_str());
        if std::fs::symlink_metadata(&folder).is_err() {
            return None;
        }
        let entry = match self.catalog.get(id) {
            Ok(entry) => entry,
            Err(error) => {
                broken(error.to_string());
                return None;
            }
        };
        if entry.artifact.status != ArtifactStatus::Available {
            broken(format!("its status is {}", entry.artifact.status.word()));
            return None;
        }
        let executable = disk::inside(&folder, &entry.artifact.path).filter(|path| {
            std::fs::metadata(path)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
        if executable.is_none() {
            broken(format!(
                "{} is not an executable file inside {}",
                entry.artifact.path.display(),
                folder.display()
            ));
            return None;
        }
        Some(entry)
    }
}

/// Why no prebuilt download was chosen.
enum Choice {
    Error(InstallError),
    Pkgbuild(PkgbuildError),
}

impl From<PkgbuildError> for Choice {
    fn from(error: PkgbuildError) -> Self {
        Self::Pkgbuild(error)
    }
}

/// The PKGBUILD's prebuilt download for this architecture, or why there is none.
fn choose_prebuilt(
    id: &CatalogId,
    worker: &CatalogWorker,
    pkgbuild: &Pkgbuild,
) -> Result<SourceItem, Choice> {
    if let Some(arches) = pkgbuild.array("arch")?
        && !arches.iter().any(|a| a == ARCH || a == "any")
    {
        return Err(Choice::Error(InstallError::NotForThisPlatform {
            id: id.to_string(),
            platform: PLATFORM,
            arch: ARCH,
            offered: format!("its PKGBUILD lists arch=({})", arches.join(" ")),
        }));
    }
    let sources = pkgbuild.sources_for(ARCH)?;
    let binary = worker.binary_name.clone().unwrap_or_else(|| id.to_string());
    let downloads: Vec<&SourceItem> = sources.iter().filter(|s| s.is_download()).collect();
    if pkgbuild.has_function("build") || downloads.is_empty() {
        let mut what: Vec<String> = sources.iter().map(|s| s.location.clone()).collect();
        if what.is_empty() {
            what.push(format!("no source for {ARCH}"));
        }
        let mut what = format!("source: {}", what.join(", "));
        if pkgbuild.has_function("build") {
            what.push_str("; its PKGBUILD compiles it in build()");
        }
        return Err(Choice::Error(InstallError::SourceOnly {
            id: id.to_string(),
            what,
            binary,
        }));
    }
    // An archive when there is one (a LICENSE beside it is not the worker), else the first.
    let is_archive = |s: &&&SourceItem| {
        let name = s
            .file_name
            .clone()
            .unwrap_or_else(|| s.location.split(['?', '#']).next().unwrap_or("").to_owned())
            .to_ascii_lowercase();
        name.ends_with(".tar.gz") || name.ends_with(".tgz")
    };
    let chosen = downloads
        .iter()
        .find(is_archive)
        .or_else(|| downloads.first())
        .map(|s| (*s).clone())
        .expect("downloads is not empty");
    if chosen.digest().is_none() {
        return Err(Choice::Error(InstallError::Unverified {
            id: id.to_string(),
            url: chosen.location.clone(),
            given: match &chosen.sha256 {
                Some(given) => format!("it says '{given}'"),
                None => "sha256sums has no entry for it".to_owned(),
            },
        }));
    }
    Ok(chosen)
}

/// The names the worker's executable may have, most specific first.
fn executable_names(
    id: &CatalogId,
    worker: &CatalogWorker,
    pkgbuild: &Pkgbuild,
    url: &Url,
) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(binary) = &worker.binary_name {
        names.push(binary.clone());
    }
    if let Ok(Some(pkgname)) = pkgbuild.scalar("pkgname") {
        names.push(pkgname.strip_suffix("-bin").unwrap_or(&pkgname).to_owned());
        names.push(pkgname);
    }
    let bare = id.as_str().strip_suffix("-bin").unwrap_or(id.as_str());
    names.push(bare.to_owned());
    names.push(id.to_string());
    if let Some(last) = url.path_segments().and_then(|mut s| s.next_back()) {
        names.push(last.to_owned());
    }
    names.retain(|n| !n.is_empty() && !n.contains('/'));
    names.dedup();
    names
}

/// A path removed when dropped unless it is gone already (renamed into place).
struct Leftover(PathBuf);

impl Drop for Leftover {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.0) {
            Ok(meta) if meta.is_dir() => {
                let _ = std::fs::remove_dir_all(&self.0);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&self.0);
            }
            Err(_) => {}
        }
    }
}

/// Streams `url` into `part`, hashing as it goes; checks the digest. Returns the size.
async fn fetch(
    client: &reqwest::Client,
    url: &Url,
    part: &Path,
    expected: &str,
    step: &(impl Fn(InstallStep) + Send + Sync),
) -> Result<u64, InstallError> {
    let failed = |reason: String| InstallError::Download {
        url: url.to_string(),
        reason,
    };
    let mut response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| failed(server::plain(&e)))?;
    if !response.status().is_success() {
        return Err(failed(format!(
            "the server answered HTTP {}",
            response.status()
        )));
    }
    let total = response.content_length();
    let mut file = tokio::fs::File::options()
        .write(true)
        .create_new(true)
        .open(part)
        .await
        .map_err(|e| InstallError::io("create", part, e))?;
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut reported = Instant::now();
    step(InstallStep::Progress { received, total });
    loop {
        let chunk = tokio::time::timeout(STALL_TIMEOUT, response.chunk())
            .await
            .map_err(|_| {
                failed(format!(
                    "no data for {} s after {received} bytes",
                    STALL_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| failed(format!("after {received} bytes: {}", server::plain(&e))))?;
        let Some(chunk) = chunk else { break };
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| InstallError::io("write", part, e))?;
        received += chunk.len() as u64;
        if reported.elapsed() >= PROGRESS_EVERY {
            reported = Instant::now();
            step(InstallStep::Progress { received, total });
        }
    }
    if let Some(total) = total
        && received != total
    {
        return Err(failed(format!(
            "the server closed the transfer after {received} of {total} bytes"
        )));
    }
    file.sync_all()
        .await
        .map_err(|e| InstallError::io("sync", part, e))?;
    drop(file);
    let got: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if got != expected {
        return Err(InstallError::Checksum {
            url: url.to_string(),
            expected: expected.to_owned(),
            got,
        });
    }
    step(InstallStep::Progress {
        received,
        total: Some(received),
    });
    Ok(received)
}

/// What the staged entry's metadata says besides its path and size.
struct StagedEntry {
    id: String,
    kind: WorkerKind,
    version: String,
}

enum StageError {
    Archive(String),
    Install(InstallError),
}

/// Makes `staging` the complete entry folder: the download unpacked (or copied), the
/// executable found and made executable, `metadata.json` written with the paths it will
/// have once `staging` is renamed to `final_folder`.
fn stage(
    download: &Path,
    staging: &Path,
    final_folder: &Path,
    names: &[String],
    staged: StagedEntry,
) -> Result<(usize, PathBuf, Entry<WorkerArtifact>), StageError> {
    let io = |action, path: &Path, e| StageError::Install(InstallError::io(action, path, e));
    std::fs::create_dir(staging).map_err(|e| io("create", staging, e))?;
    let (entries, executable) = match Payload::sniff(download).map_err(StageError::Archive)? {
        Payload::TarGz => {
            let entries = unpack::unpack_tar_gz(download, staging).map_err(StageError::Archive)?;
            let executable =
                unpack::find_executable(staging, names).map_err(StageError::Archive)?;
            (entries, executable)
        }
        Payload::Executable => {
            let name = PathBuf::from(names.first().cloned().unwrap_or_else(|| "worker".into()));
            let target = staging.join(&name);
            std::fs::copy(download, &target).map_err(|e| io("copy", &target, e))?;
            (1, name)
        }
    };
    let binary = staging.join(&executable);
    let file = File::open(&binary).map_err(|e| io("open", &binary, e))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io("chmod", &binary, e))?;
    file.sync_all().map_err(|e| io("sync", &binary, e))?;
    let size = file.metadata().map_err(|e| io("stat", &binary, e))?.len();
    // The folders that lead to it too, so that after a power loss an entry that says
    // Available has its executable (the metadata write syncs `staging` itself).
    for folder in binary.ancestors().skip(1) {
        if folder == staging || !folder.starts_with(staging) {
            break;
        }
        disk::sync_dir(folder).map_err(|e| io("sync", folder, e))?;
    }
    let now = Utc::now();
    let entry = Entry {
        artifact: WorkerArtifact {
            id: staged.id,
            worker_type: staged.kind,
            platform: Platform::current(),
            path: final_folder.join(&executable),
            size,
            status: ArtifactStatus::Available,
            version: staged.version,
            added_at: now,
        },
        added_at: now,
        last_accessed: now,
    };
    disk::write_json_atomic(&staging.join(METADATA), &entry)
        .map_err(|e| StageError::Install(e.into()))?;
    Ok((entries, executable, entry))
}

/// The work folder's lock, held for a whole install; `None` when another install holds it.
fn try_lock(work: &Path) -> Result<Option<Flock<File>>, InstallError> {
    match Flock::lock(lock_file(work)?, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(InstallError::io("lock", work, errno.into())),
    }
}

/// Waits for the work folder's lock on a blocking thread (a lock is an event the kernel
/// wakes us for, not something to poll).
async fn lock_waiting(work: &Path) -> Result<Flock<File>, InstallError> {
    let file = lock_file(work)?;
    let path = work.to_path_buf();
    tokio::task::spawn_blocking(move || {
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| InstallError::io("lock", &path, errno.into()))
    })
    .await
    .map_err(|e| InstallError::Io {
        action: "lock",
        path: work.to_path_buf(),
        reason: e.to_string(),
    })?
}

fn lock_file(work: &Path) -> Result<File, InstallError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = work.join("lock");
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(disk::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| InstallError::io("open", &path, e))
}

/// Removes everything in the work folder but its lock (what a crashed install left).
fn clear_leftovers(work: &Path) -> Result<(), InstallError> {
    let entries = std::fs::read_dir(work).map_err(|e| InstallError::io("read", work, e))?;
    for entry in entries.flatten() {
        if entry.file_name() == "lock" {
            continue;
        }
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        removed.map_err(|e| InstallError::io("remove", &path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
