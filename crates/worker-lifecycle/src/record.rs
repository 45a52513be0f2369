//! The worker record of PROTOCOL §5 and its status.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a worker is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerStatus {
    /// The process runs but has not answered its health check yet.
    Starting,
    /// Healthy and idle.
    Ready,
    /// Healthy and serving.
    Busy,
    /// Exited with code 0.
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
    /// Its process id (the leader of its process group).
    pub pid: u32,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its status.
    pub status: WorkerStatus,
    /// When it was started.
    pub started_at: DateTime<Utc>,
}
