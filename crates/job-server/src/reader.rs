//! One reader's position in a job's log.
//!
//! A reader starts after a sequence number (0 for the beginning) and gets every kept entry
//! from there, then the job's end. It waits on the log's `watch` channel, so it is woken
//! by each change, never by a timer. When entries it has not read were dropped from a full
//! log, it first gets a [`ReadItem::Gap`] saying how many.

use std::sync::Arc;

use tokio::sync::watch;

use crate::job::{JobEnd, LogState, LoggedEvent};

/// What a reader gets next.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadItem {
    /// The next entry.
    Event(Arc<LoggedEvent>),
    /// `dropped` entries were lost before this reader got them; `last_seq` is the last of them.
    Gap {
        /// How many entries were dropped.
        dropped: u64,
        /// The sequence number of the last dropped entry (a resume point).
        last_seq: u64,
    },
    /// The job ended; nothing follows.
    End(JobEnd),
}

/// A cursor into one job's log.
pub struct LogReader {
    log: watch::Receiver<LogState>,
    next_seq: u64,
    ended: bool,
}

impl LogReader {
    pub(crate) fn new(log: watch::Receiver<LogState>, after_seq: u64) -> Self {
        Self {
            log,
            next_seq: after_seq.saturating_add(1),
            ended: false,
        }
    }

    /// Appends to `out` everything that is available now, without waiting; returns false
    /// once the end has been delivered (nothing more will come).
    pub fn read_available(&mut self, out: &mut Vec<ReadItem>) -> bool {
        if self.ended {
            return false;
        }
        let log = self.log.borrow_and_update();
        let first_kept = log.first_kept_seq();
        if self.next_seq < first_kept {
            out.push(ReadItem::Gap {
                dropped: first_kept - self.next_seq,
                last_seq: first_kept - 1,
            });
            self.next_seq = first_kept;
        }
        if self.next_seq < log.next_seq {
            let start = (self.next_seq - first_kept) as usize;
            out.extend(log.events.range(start..).cloned().map(ReadItem::Event));
            self.next_seq = log.next_seq;
        }
        if let Some(end) = log.end() {
            out.push(ReadItem::End(end));
            self.ended = true;
        }
        true
    }

    /// Waits until something is available, then returns all of it (empty once ended).
    pub async fn next_batch(&mut self) -> Vec<ReadItem> {
        let mut out = Vec::new();
        loop {
            if !self.read_available(&mut out) || !out.is_empty() {
                return out;
            }
            if self.log.changed().await.is_err() {
                // The job was freed while we waited; it had ended, so read what is left.
                self.read_available(&mut out);
                return out;
            }
        }
    }
}
