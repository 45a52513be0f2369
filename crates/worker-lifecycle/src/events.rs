//! What happens to workers, said by the one who makes it happen: each change a supervisor
//! makes to its record goes out as a [`WorkerEvent`] with the transitions it made.
//! Followers (telemetry, metrics) `match` on the transitions; none of them compares an old
//! record with a new one to guess what happened.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::record::{StopReason, WorkerExit, WorkerRecord};

/// A change of a worker, as the one writer of its record makes it.
#[derive(Debug, Clone)]
pub enum WorkerEvent {
    /// The record after a change, and the transitions that change made, in the order they
    /// happened. Empty for a change that is no transition (its pid saved, a heartbeat's
    /// time, a health sample, a stop's grace shortened).
    Changed {
        /// What happened.
        transitions: Vec<WorkerTransition>,
        /// The record after it.
        record: Box<WorkerRecord>,
    },
    /// The worker left the registry. Only a worker that was ever listed (its process
    /// started) is announced; a spawn refused before its process started leaves silently.
    Removed {
        /// Its id.
        id: String,
    },
}

/// One thing that happened to a worker.
/// Not `#[non_exhaustive]`: a transition added here must be handled by every follower,
/// and the compiler says where.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerTransition {
    /// Its first run's process started: it is listed from now on.
    Spawned,
    /// Its readiness probe succeeded, or a heartbeat says it is idle again after being
    /// busy. `spawn_to_ready` is set the first time the worker is ready: the time from its
    /// spawn to then.
    Ready {
        /// From the worker's spawn to its first readiness.
        spawn_to_ready: Option<Duration>,
    },
    /// A heartbeat says it is serving a request.
    Busy,
    /// A stop began: SIGTERM went to whatever runs of it.
    Stopping {
        /// Why.
        reason: StopReason,
    },
    /// The stop's grace ran out and SIGKILL went to what was left.
    Killed,
    /// Its run ended: the leader's exit as the hive saw it (unknown for a worker adopted
    /// from an earlier hive, which is not its parent).
    Exited {
        /// How.
        exit: WorkerExit,
    },
    /// No process of its group is left; `stop_took` is how long the stop under way took,
    /// from its request to now (none when the worker ended on its own).
    Gone {
        /// From the stop's request to the last process gone.
        stop_took: Option<Duration>,
    },
    /// The run failed and its type restarts it: the next run starts at `at`.
    Restarting {
        /// When the next run starts.
        at: DateTime<Utc>,
    },
    /// The next run started (same id, port and log).
    Restarted {
        /// How many times the worker has been started again.
        restart_count: u32,
    },
    /// It failed more often than its type allows: no more restarts, it stays failed.
    CrashLoop,
    /// A pending restart was not made (the hive shut down, it was stopped, its type
    /// changed): it stays failed with its last run's failure.
    RestartAbandoned,
}

/// The time from `from` to `to`, never negative (clocks step).
pub(crate) fn elapsed(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}
