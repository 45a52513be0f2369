//! Where a transfer stands: counters the transfer stores into and every job reads.
//!
//! They are atomics, not a channel: a transfer stores after each chunk and wakes no one;
//! a job reads them when it wants to report progress.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `total` when the size is not known.
const UNKNOWN: u64 = u64::MAX;

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

/// One transfer's counters, shared by the transfer (the writer) and its handles (readers).
pub(super) struct Counters {
    received: AtomicU64,
    total: AtomicU64,
    resumed_from: AtomicU64,
    started: Instant,
}

impl Counters {
    /// Counters of a transfer starting now: nothing received, size unknown.
    pub(super) fn new() -> Self {
        Self {
            received: AtomicU64::new(0),
            total: AtomicU64::new(UNKNOWN),
            resumed_from: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// The body starts at `offset` (bytes already on disk) of a file of `total` bytes.
    pub(super) fn begin(&self, offset: u64, total: Option<u64>) {
        self.resumed_from.store(offset, Ordering::Relaxed);
        self.received.store(offset, Ordering::Relaxed);
        self.total
            .store(total.unwrap_or(UNKNOWN), Ordering::Relaxed);
    }

    /// `received` bytes of the file are in, resumed bytes included.
    pub(super) fn received(&self, received: u64) {
        self.received.store(received, Ordering::Relaxed);
    }

    /// The file's size, once the server announced it.
    pub(super) fn total(&self) -> Option<u64> {
        let total = self.total.load(Ordering::Relaxed);
        (total != UNKNOWN).then_some(total)
    }

    /// Time since the transfer started.
    pub(super) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Where the transfer stands now.
    pub(super) fn snapshot(&self) -> DownloadProgress {
        DownloadProgress {
            received: self.received.load(Ordering::Relaxed),
            total: self.total(),
            resumed_from: self.resumed_from.load(Ordering::Relaxed),
            elapsed: self.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_transfer_counts_its_bytes_on_disk() {
        let counters = Counters::new();
        assert_eq!(counters.snapshot().total, None);
        counters.begin(100, Some(300));
        counters.received(250);
        let progress = counters.snapshot();
        assert_eq!(
            (progress.received, progress.total, progress.resumed_from),
            (250, Some(300), 100)
        );
        counters.begin(0, None);
        assert_eq!(counters.total(), None);
    }
}
