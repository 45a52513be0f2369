//! The worker record of PROTOCOL §5, its status state machine, and how a process ended.

use std::fmt;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a worker is in its life.
///
/// ```text
/// Starting ──► Ready ⇄ Busy
///    │           │      │
///    └───────────┴──────┴──► Stopped | Failed{reason}
/// ```
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

/// How a worker process ended.
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

/// The conventional name of a signal number.
pub fn signal_name(signal: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str())
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

/// One worker, as `worker_get` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// `worker-<n>`.
    pub id: String,
    /// The model it serves.
    pub model_id: String,
    /// The catalog type it was started from (`cpu`, `cuda`, `demo`, …).
    pub worker_type: String,
    /// `GPU-<n>`, `CPU-<n>` or `METAL-<n>`.
    pub device: String,
    /// Its process id; also its process group id (it leads its own group).
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
    /// When it first answered its health check.
    #[serde(default)]
    pub ready_at: Option<DateTime<Utc>>,
    /// When it last sent a heartbeat.
    #[serde(default)]
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// The health it last reported.
    #[serde(default)]
    pub health: Option<WorkerHealth>,
    /// How it ended, once it has.
    #[serde(default)]
    pub exit: Option<WorkerExit>,
    /// The command line it was started with (no shell).
    pub command: Vec<String>,
    /// Its stdout and stderr.
    pub log_path: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serialises_as_protocol_says() {
        assert_eq!(
            serde_json::to_string(&WorkerStatus::Ready).unwrap(),
            "\"Ready\""
        );
        assert_eq!(
            serde_json::to_string(&WorkerStatus::Failed {
                reason: "lost".into()
            })
            .unwrap(),
            r#"{"Failed":{"reason":"lost"}}"#
        );
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
