//! One transfer shared by several jobs: each job holds a [`DownloadHandle`] on it.
//!
//! The transfer lives as long as a handle does. When the last handle is dropped (every job
//! following it was cancelled) the transfer is told to stop; it then keeps its `.part` for a
//! later resume. The outcome is sent once, on a watch channel, so that a job that looks late
//! still sees it.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Downloaded;
use super::progress::{Counters, DownloadProgress};
use crate::error::DownloadError;
use crate::source::Source;

/// What a transfer ended with; `None` while it runs.
pub(super) type Outcome = Option<Result<Downloaded, DownloadError>>;

/// What the jobs following one transfer share.
pub(super) struct Transfer {
    pub(super) source: Source,
    /// The digest the transfer checks, when a job gave one (a job asking for another one
    /// does not join).
    pub(super) expected: Option<String>,
    pub(super) cancel: CancellationToken,
    pub(super) counters: Arc<Counters>,
    pub(super) outcome: watch::Receiver<Outcome>,
}

impl Transfer {
    /// Whether a job asking for `source` (checked against `expected`, when given) may follow
    /// this transfer. Only the same file joins: another source, or another digest to check,
    /// under the same id would be answered with a file it did not ask for.
    pub(super) fn admits(
        &self,
        source: &Source,
        expected: Option<&str>,
    ) -> Result<(), DownloadError> {
        if self.source.url != source.url {
            return Err(DownloadError::Source(format!(
                "model '{}' is being downloaded from {}; wait for that download, or give another id",
                source.id, self.source.url
            )));
        }
        if let Some(digest) = expected
            && self
                .expected
                .as_deref()
                .is_some_and(|other| other != digest)
        {
            return Err(DownloadError::Source(format!(
                "model '{}' is being downloaded with another expected sha256; wait for that download, or give another id",
                source.id
            )));
        }
        Ok(())
    }
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
    /// A hold on `transfer`; `joined` when another job started it.
    pub(super) fn new(transfer: Arc<Transfer>, joined: bool) -> Self {
        Self { transfer, joined }
    }

    /// What is downloaded.
    pub fn source(&self) -> &Source {
        &self.transfer.source
    }

    /// Where the transfer stands now.
    pub fn progress(&self) -> DownloadProgress {
        self.transfer.counters.snapshot()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn source(url: &str) -> Source {
        let hub = reqwest::Url::parse("https://huggingface.co").unwrap();
        Source::resolve(url, Some("m"), &hub).unwrap()
    }

    fn transfer(url: &str, expected: Option<&str>) -> (Arc<Transfer>, watch::Sender<Outcome>) {
        let (outcome_tx, outcome) = watch::channel(None);
        let transfer = Arc::new(Transfer {
            source: source(url),
            expected: expected.map(str::to_owned),
            cancel: CancellationToken::new(),
            counters: Arc::new(Counters::new()),
            outcome,
        });
        (transfer, outcome_tx)
    }

    #[test]
    fn only_the_same_file_with_the_same_digest_joins() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let (running, _tx) = transfer("http://h/m.gguf", Some(&a));
        assert!(running.admits(&source("http://h/m.gguf"), None).is_ok());
        assert!(running.admits(&source("http://h/m.gguf"), Some(&a)).is_ok());
        assert!(
            running
                .admits(&source("http://h/m.gguf"), Some(&b))
                .is_err()
        );
        assert!(
            running
                .admits(&source("http://other/m.gguf"), None)
                .is_err()
        );
        let (unchecked, _tx) = transfer("http://h/m.gguf", None);
        assert!(
            unchecked
                .admits(&source("http://h/m.gguf"), Some(&b))
                .is_ok()
        );
    }

    #[test]
    fn the_last_handle_dropped_cancels_the_transfer() {
        let (running, _tx) = transfer("http://h/m.gguf", None);
        let cancel = running.cancel.clone();
        let first = DownloadHandle::new(running.clone(), false);
        let second = DownloadHandle::new(running, true);
        drop(first);
        assert!(!cancel.is_cancelled());
        drop(second);
        assert!(cancel.is_cancelled());
    }
}
