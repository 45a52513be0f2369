//! One job: its state machine and its event log.
//!
//! The state and the log live together in one `watch` channel, so that a state change and
//! the lines before it are seen by readers atomically, and every change wakes every reader.
//! The first terminal state wins (a cancel racing with the end of the operation yields one
//! outcome); lines pushed after it are not logged.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use narration::{Narration, NarrationSink};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::id::JobId;
use crate::reader::LogReader;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, not yet running.
    Queued,
    /// The operation is running.
    Running,
    /// The operation finished successfully.
    Succeeded,
    /// The operation failed; the job's `error` says why.
    Failed,
    /// The job was cancelled before it finished.
    Cancelled,
}

impl JobState {
    /// Whether the job is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobEnd {
    /// `succeeded`, `failed` or `cancelled`.
    pub state: JobState,
    /// The failure reason, for `failed`.
    pub error: Option<String>,
}

/// What a job logs.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEntry {
    /// A narration line.
    Narration(Narration),
    /// The operation's result object (the worker list, the worker).
    Result(ResultJson),
}

/// An operation's result, serialised once when it is published: readers embed the text as
/// it is, and no tree of JSON values is built for it (a list of 200 workers would be
/// thousands of small allocations).
#[derive(Debug, Clone)]
pub struct ResultJson(Box<serde_json::value::RawValue>);

impl ResultJson {
    /// `value` as JSON; `null` if it cannot be serialised (a map with non-string keys).
    pub fn new<T: serde::Serialize + ?Sized>(value: &T) -> Self {
        Self(
            serde_json::value::to_raw_value(value).unwrap_or_else(|error| {
                tracing::error!("a job result could not be serialised: {error}");
                serde_json::value::RawValue::from_string("null".to_owned()).expect("null is JSON")
            }),
        )
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for ResultJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl serde::Serialize for ResultJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A log entry with its sequence number (1, 2, 3, … per job).
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    /// Position in the job's log, from 1; `Last-Event-ID` refers to it.
    pub seq: u64,
    /// The entry.
    pub entry: LogEntry,
}

/// The job status document of `GET /v1/jobs/{id}` (and of each job of `GET /v1/jobs`);
/// clients read it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSnapshot {
    /// The job id.
    pub job_id: JobId,
    /// The operation name.
    pub operation: String,
    /// The state.
    pub state: JobState,
    /// When the job was accepted.
    pub created_at: DateTime<Utc>,
    /// When it ended, if it has.
    pub finished_at: Option<DateTime<Utc>>,
    /// The failure reason, if it failed.
    pub error: Option<String>,
}

pub(crate) struct LogState {
    pub(crate) state: JobState,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    pub(crate) error: Option<String>,
    pub(crate) events: VecDeque<Arc<LoggedEvent>>,
    /// The sequence number the next entry gets; entries `next_seq - events.len() ..` are kept.
    pub(crate) next_seq: u64,
    capacity: usize,
}

impl LogState {
    pub(crate) fn first_kept_seq(&self) -> u64 {
        self.next_seq - self.events.len() as u64
    }

    pub(crate) fn end(&self) -> Option<JobEnd> {
        self.state.is_terminal().then(|| JobEnd {
            state: self.state,
            error: self.error.clone(),
        })
    }
}

/// One job. Shared by the store, the running task, the narration sink and readers.
pub(crate) struct Job {
    pub(crate) id: JobId,
    pub(crate) operation: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) log: watch::Sender<LogState>,
    pub(crate) cancel: CancellationToken,
}

impl Job {
    pub(crate) fn new(id: JobId, operation: String, capacity: usize) -> Self {
        let (log, _) = watch::channel(LogState {
            state: JobState::Queued,
            finished_at: None,
            error: None,
            events: VecDeque::new(),
            next_seq: 1,
            capacity: capacity.max(1),
        });
        Self {
            id,
            operation,
            created_at: Utc::now(),
            log,
            cancel: CancellationToken::new(),
        }
    }

    pub(crate) fn snapshot(&self) -> JobSnapshot {
        let log = self.log.borrow();
        JobSnapshot {
            job_id: self.id.clone(),
            operation: self.operation.clone(),
            state: log.state,
            created_at: self.created_at,
            finished_at: log.finished_at,
            error: log.error.clone(),
        }
    }

    pub(crate) fn state(&self) -> JobState {
        self.log.borrow().state
    }

    pub(crate) fn mark_running(&self) {
        self.log.send_if_modified(|log| {
            let queued = log.state == JobState::Queued;
            if queued {
                log.state = JobState::Running;
            }
            queued
        });
    }

    /// Appends an entry unless the job has ended; drops the oldest entry when full.
    pub(crate) fn append(&self, entry: LogEntry) {
        self.log.send_if_modified(|log| {
            if log.state.is_terminal() {
                return false;
            }
            if log.events.len() >= log.capacity {
                log.events.pop_front();
            }
            let seq = log.next_seq;
            log.next_seq += 1;
            log.events.push_back(Arc::new(LoggedEvent { seq, entry }));
            true
        });
    }

    /// Ends the job; returns false if it had already ended (the first end wins).
    pub(crate) fn finish(&self, state: JobState, error: Option<String>) -> bool {
        debug_assert!(state.is_terminal());
        self.log.send_if_modified(|log| {
            if log.state.is_terminal() {
                return false;
            }
            log.state = state;
            log.error = error;
            log.finished_at = Some(Utc::now());
            true
        })
    }

    pub(crate) fn reader(&self, after_seq: u64) -> LogReader {
        LogReader::new(self.log.subscribe(), after_seq)
    }
}

impl NarrationSink for Job {
    fn job_id(&self) -> &str {
        self.id.as_str()
    }

    fn push(&self, narration: Narration) {
        self.append(LogEntry::Narration(narration));
    }
}

/// The handle a running operation is given: it narrates to its job
/// (`NARRATE.action(…).human(…).emit_to(job)`) and publishes its result object.
#[derive(Clone)]
pub struct JobContext {
    pub(crate) job: Arc<Job>,
}

impl NarrationSink for JobContext {
    fn job_id(&self) -> &str {
        self.job.id.as_str()
    }

    fn push(&self, narration: Narration) {
        self.job.push(narration);
    }
}

impl JobContext {
    /// The id of the running job.
    pub fn job_id(&self) -> &str {
        self.job.id.as_str()
    }

    /// Publishes the operation's result (sent as `event: result` in the structured format),
    /// serialised once, here.
    pub fn publish_result<T: serde::Serialize + ?Sized>(&self, value: &T) {
        self.job.append(LogEntry::Result(ResultJson::new(value)));
    }
}
