//! The worker record of PROTOCOL §5 and the plain values inside it: the protocol status and
//! its state machine, how a stop went, and how a process ended.
//!
//! A record is what `worker_get` shows and what the state file holds. Its `status` keeps
//! the protocol's five values; what the protocol does not name lives beside it: `stop` (a
//! stop under way, or how the last one went) and `exit` (how the leader ended). A worker
//! whose id is reserved but whose process is not started yet has `pid` 0 and is not listed.

use std::fmt;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a worker is in its life, as the protocol names it.
///
/// ```text
/// Starting ──► Ready ⇄ Busy
///    │           │      │
///    └───────────┴──────┴──► Stopped | Failed{reason}
/// ```
/// A stop under way does not change the status (the process still runs); the record's
/// `stop` says it is under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerStatus {
    /// The process runs but has not answered its health check yet.
    Starting,
    /// Healthy and idle.
    Ready,
    /// Healthy and serving.
    Busy,
    /// Exited with code 0, or stopped by the hive.
    Stopped,
    /// Exited with an error, failed to start, or was lost.
    Failed {
        /// Why.
        reason: String,
    },
}

/// The reason of a worker whose process was gone when the hive started again.
pub(crate) const LOST: &str = "lost";

impl WorkerStatus {
    /// The lowercase name of the listing (`starting`, `ready`, `busy`, `stopped`, `failed`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Busy => "busy",
            Self::Stopped => "stopped",
            Self::Failed { .. } => "failed",
        }
    }

    /// The status as people read it: its label, and for `Failed` the reason
    /// (`failed: killed by signal 9 (SIGKILL)`).
    pub fn describe(&self) -> String {
        match self {
            Self::Failed { reason } => format!("failed: {reason}"),
            other => other.label().to_owned(),
        }
    }

    /// Whether the process is gone for good.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Stopped | Self::Failed { .. })
    }

    /// Whether the state machine allows going from `self` to `next`.
    pub fn can_become(&self, next: &WorkerStatus) -> bool {
        use WorkerStatus::*;
        matches!(
            (self, next),
            (Starting, Ready)
                | (Ready, Busy)
                | (Busy, Ready)
                | (Starting | Ready | Busy, Stopped | Failed { .. })
        )
    }
}

/// Why the hive stopped a worker's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A `worker_delete` (or `worker_process_delete`).
    Delete,
    /// The hive is shutting down with `on_shutdown = "stop"`.
    Shutdown,
    /// It did not become ready in time.
    ReadyTimeout,
    /// The job spawning it was cancelled.
    SpawnCancelled,
    /// Its leader exited and left processes of its group behind.
    LeaderExited,
    /// Its leader died while the hive was down and left processes of its group behind.
    Lost,
}

impl StopReason {
    /// Whether the worker leaves the registry once its processes are gone.
    pub(crate) fn removes(self) -> bool {
        matches!(self, Self::Delete | Self::SpawnCancelled)
    }
}

/// A stop of a worker's processes: under way until `finished_at` (no process of the group
/// is left), and afterwards a record of how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopProgress {
    /// Why.
    pub reason: StopReason,
    /// The grace between SIGTERM and SIGKILL, in milliseconds (the shortest asked for).
    pub grace_ms: u64,
    /// When the stop was asked.
    pub requested_at: DateTime<Utc>,
    /// When SIGTERM went to the group.
    #[serde(default)]
    pub sigterm_at: Option<DateTime<Utc>>,
    /// When SIGKILL went to the group, if it was needed.
    #[serde(default)]
    pub sigkill_at: Option<DateTime<Utc>>,
    /// When no process of the group was left.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Processes of the group still there after SIGKILL (empty unless something is badly
    /// wrong, such as a process stuck in the kernel).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stuck: Vec<u32>,
    /// What else is known (who answered the health check of a worker that never did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl StopProgress {
    /// A stop asked for now, for `reason`, with `grace` between SIGTERM and SIGKILL.
    pub(crate) fn begin(reason: StopReason, grace: std::time::Duration) -> Self {
        Self {
            reason,
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            requested_at: Utc::now(),
            sigterm_at: None,
            sigkill_at: None,
            finished_at: None,
            stuck: Vec::new(),
            detail: None,
        }
    }

    /// Whether the stop is still going on.
    pub fn is_under_way(&self) -> bool {
        self.finished_at.is_none()
    }
}

/// How a worker's leader process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerExit {
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// When the hive saw it end.
    pub at: DateTime<Utc>,
}

impl WorkerExit {
    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// An exit whose status the hive cannot know (the process was not its child).
    pub(crate) fn unknown() -> Self {
        Self {
            code: None,
            signal: None,
            at: Utc::now(),
        }
    }
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(signal)) => write!(f, "signal {signal} ({})", signal_name(signal)),
            (None, None) => f.write_str("an unknown exit status"),
        }
    }
}

/// The conventional name of a signal number (Linux's numbering, as on x86 and Arm).
pub(crate) fn signal_name(signal: i32) -> &'static str {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(signal)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|index| NAMES.get(index).copied())
        .unwrap_or("unknown signal")
}

/// The health a worker reports in its heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerHealth {
    /// All well.
    Healthy,
    /// Working, but not at its best.
    Degraded,
}

/// One worker, as `worker_get` shows it and the state file keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// `worker-<n>`.
    pub id: String,
    /// The model it serves.
    pub model_id: String,
    /// The worker type it was started from (`cpu`, `cuda`, `demo`, …).
    pub worker_type: String,
    /// `GPU-<n>`, `CPU-<n>` or `METAL-<n>`.
    pub device: String,
    /// Its process id; also its process group id (it leads its own group). 0 while the
    /// process is not started yet.
    pub pid: u32,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its process group id (equal to `pid`: it leads its own group).
    #[serde(default)]
    pub pgid: u32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat`): with `pid`, it proves
    /// after a restart that a process is still this worker.
    #[serde(default)]
    pub start_ticks: Option<u64>,
    /// Its status.
    pub status: WorkerStatus,
    /// When it was started.
    pub started_at: DateTime<Utc>,
    /// Its base URL.
    pub url: String,
    /// When it first answered its health check (from a process of its own group).
    #[serde(default)]
    pub ready_at: Option<DateTime<Utc>>,
    /// When it last sent a heartbeat.
    #[serde(default)]
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// The health it last reported (or, after a restart, what its health check said).
    #[serde(default)]
    pub health: Option<WorkerHealth>,
    /// A stop of its processes: under way, or how the last one went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopProgress>,
    /// How its leader ended, once it has (for a worker waiting to be restarted: how its
    /// last run ended).
    #[serde(default)]
    pub exit: Option<WorkerExit>,
    /// How many times the hive started it again after a failure (its type's `restart`).
    #[serde(default)]
    pub restart_count: u32,
    /// When the next run starts, while it waits to be restarted (its status is `Starting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_at: Option<DateTime<Utc>>,
    /// The runs that failed and were followed by a restart, oldest first (the last
    /// [`PAST_RUNS_KEPT`]); each run's output is in the log, after a line of the hive's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub past_runs: Vec<PastRun>,
    /// When the current (or last) run started; `started_at` for the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_started_at: Option<DateTime<Utc>>,
    /// The command line it was started with (no shell).
    pub command: Vec<String>,
    /// Its stdout and stderr.
    pub log_path: PathBuf,
}

/// How many past runs a record keeps.
pub const PAST_RUNS_KEPT: usize = 20;

/// A run of a worker that failed and was followed by a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastRun {
    /// The pid it ran as.
    pub pid: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// How it ended.
    pub exit: WorkerExit,
    /// Why it counts as a failure (`exited with code 3`, `not ready within …`).
    pub reason: String,
    /// When the next run was due (its end plus the backoff).
    pub restart_at: DateTime<Utc>,
}

impl WorkerRecord {
    /// Whether it waits to be started again (its processes are gone).
    pub fn restart_pending(&self) -> bool {
        self.restart_at.is_some()
    }

    /// Whether its processes may run now or again: it has not exited, a stop of its
    /// processes is under way, or a restart is pending.
    pub fn is_active(&self) -> bool {
        self.exit.is_none() || self.is_stopping() || self.restart_pending()
    }

    /// Whether its process has been started (a reserved id has none yet).
    pub fn is_launched(&self) -> bool {
        self.pid != 0
    }

    /// Whether a stop of its processes is under way.
    pub fn is_stopping(&self) -> bool {
        self.stop.as_ref().is_some_and(StopProgress::is_under_way)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_follow_the_platforms_numbers() {
        use rustix::process::Signal;
        for (signal, name) in [
            (Signal::HUP, "SIGHUP"),
            (Signal::INT, "SIGINT"),
            (Signal::ABORT, "SIGABRT"),
            (Signal::KILL, "SIGKILL"),
            (Signal::SEGV, "SIGSEGV"),
            (Signal::ALARM, "SIGALRM"),
            (Signal::TERM, "SIGTERM"),
            (Signal::CHILD, "SIGCHLD"),
            (Signal::STOP, "SIGSTOP"),
            (Signal::VTALARM, "SIGVTALRM"),
            (Signal::SYS, "SIGSYS"),
        ] {
            assert_eq!(signal_name(signal.as_raw()), name);
        }
        assert_eq!(signal_name(0), "unknown signal");
        assert_eq!(signal_name(64), "unknown signal");
    }

    #[test]
    fn status_serialises_as_protocol_says() {
        assert_eq!(
            serde_json::to_string(&WorkerStatus::Ready).unwrap(),
            "\"Ready\""
        );
        assert_eq!(
            serde_json::to_string(&WorkerStatus::Failed {
                reason: LOST.into()
            })
            .unwrap(),
            r#"{"Failed":{"reason":"lost"}}"#
        );
    }

    #[test]
    fn status_reads_as_its_label_and_reason() {
        assert_eq!(WorkerStatus::Ready.describe(), "ready");
        let killed = WorkerStatus::Failed {
            reason: "killed by signal 9 (SIGKILL)".into(),
        };
        assert_eq!(killed.describe(), "failed: killed by signal 9 (SIGKILL)");
    }

    #[test]
    fn state_machine() {
        use WorkerStatus::*;
        let failed = Failed { reason: "x".into() };
        assert!(Starting.can_become(&Ready));
        assert!(Ready.can_become(&Busy) && Busy.can_become(&Ready));
        assert!(Starting.can_become(&failed) && Busy.can_become(&Stopped));
        assert!(!Ready.can_become(&Starting));
        assert!(!Starting.can_become(&Busy));
        assert!(!Stopped.can_become(&Ready) && !failed.can_become(&Stopped));
    }

    #[test]
    fn exit_text() {
        let at = Utc::now();
        assert_eq!(
            WorkerExit {
                code: Some(3),
                signal: None,
                at
            }
            .to_string(),
            "exit code 3"
        );
        assert_eq!(
            WorkerExit {
                code: None,
                signal: Some(9),
                at
            }
            .to_string(),
            "signal 9 (SIGKILL)"
        );
    }
}
