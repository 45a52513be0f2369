//! The job server: operations run as jobs, each with a replayable stream of narration.
//!
//! A job starts running the moment it is submitted (a `POST` alone performs the
//! operation); its narration goes into a per-job event log that any number of readers can
//! read from the first line, at any time while the job is kept, woken by the log itself
//! rather than by polling. The log is bounded: when it is full the oldest lines are dropped
//! and readers are told how many (`narration_gap`), so a job never waits for a reader.
//! Finished jobs are kept for a retention period and up to a cap, then freed.
//!
//! The job server is generic over the operation: it runs any future that ends in
//! `Result<(), E: Display>`, and knows nothing of workers or HTTP.
//!
//! # Layout
//! - `id`: [`JobId`], `job-<uuid>`.
//! - `job`: one job: its state machine (queued → running → succeeded | failed | cancelled)
//!   and its event log.
//! - `reader`: [`LogReader`], one reader's position in a job's log.
//! - `store`: [`JobStore`]: submit, look up, read, cancel, retention, shutdown.

#![deny(unreachable_pub)]

mod id;
mod job;
mod reader;
mod store;

pub use id::JobId;
pub use job::{JobContext, JobEnd, JobSnapshot, JobState, LogEntry, LoggedEvent, ResultJson};
pub use reader::{LogReader, ReadItem};
pub use store::{CancelError, JobStore, JobStoreConfig, SubmitError};

/// The narration actor of the job lifecycle (`job-exec`).
pub const NARRATE: narration::NarrationFactory = narration::NarrationFactory::new("job-exec");
