//! One transfer from its first request to its entry on disk.
//!
//! It resumes the `.part` when the server continues the same file (and starts over when it
//! does not), checks the free space against the announced size, streams the body to the
//! writer, checks the length and the sha256, renames the file into place and writes the
//! entry `Available`; on failure it writes the entry `Failed` (keeping the `.part` only when
//! a resume can continue it). The caller holds the folder's lock throughout.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::CONTENT_RANGE;
use tokio_util::sync::CancellationToken;

use super::checksum::Expected;
use super::http::{self, Linked, error_chain, parse_content_range, status_error};
use super::partial::Partial;
use super::progress::Counters;
use super::writer::Writer;
use super::{Downloaded, Inner};
use crate::artifact::{ArtifactStatus, Entry, ModelArtifact};
use crate::disk;
use crate::error::DownloadError;
use crate::source::Source;

/// One transfer's inputs.
pub(super) struct Run {
    pub(super) inner: Arc<Inner>,
    pub(super) source: Source,
    pub(super) expected: Option<Expected>,
    pub(super) counters: Arc<Counters>,
    /// The entry's folder.
    pub(super) folder: PathBuf,
}

impl Run {
    fn final_path(&self) -> PathBuf {
        self.folder.join(&self.source.file_name)
    }

    fn partial(&self) -> Partial {
        Partial::new(&self.folder, &self.source.file_name)
    }

    /// The entry of this download, `size` bytes, in `status`.
    pub(super) fn entry(&self, size: u64, status: ArtifactStatus) -> Entry<ModelArtifact> {
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

    /// Runs the transfer to its end; a failure is recorded in the entry before it returns.
    pub(super) async fn run(&self, cancel: CancellationToken) -> Result<Downloaded, DownloadError> {
        let catalog = &self.inner.catalog;
        // The transfer watches `cancel` itself: it always waits for its file writer, so that
        // nothing writes to the `.part` once the lock is released.
        let result = self.transfer(&cancel).await;
        if let Err(error) = &result {
            if !error.keeps_partial() {
                self.partial().discard().await;
            }
            let failed = self.entry(
                self.counters.total().unwrap_or(0),
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
        let partial = self.partial();
        let (mut offset, if_range) = partial.resume_point(&self.source.url);
        let mut linked = Linked::default();
        let (response, url, total) = loop {
            let fetched = tokio::select! {
                fetched = http::fetch(&self.inner, &self.source.url, offset, if_range.as_deref(), &mut linked) => fetched,
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
        counters.begin(offset, total);
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
        partial.record(&self.source.url, etag)?;
        let writer = Writer::start(partial.path().to_path_buf(), offset, expected.is_some());
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
                    if !writer.write(chunk).await {
                        break Ok(());
                    }
                    counters.received(received);
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
        partial.complete(&self.final_path(), &self.folder)?;
        let entry = self.entry(written, ArtifactStatus::Available);
        self.inner.catalog.write_entry(&entry)?;
        Ok(Downloaded {
            entry,
            transferred: written - offset,
            elapsed: counters.elapsed(),
            verified_against,
        })
    }
}
