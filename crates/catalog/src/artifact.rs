//! The catalog's JSON, as the upstream rbee hive writes it: each entry folder holds a
//! `metadata.json` of `{"artifact": {…}, "added_at", "last_accessed"}`.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Whether an artifact can be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArtifactStatus {
    /// On disk and complete.
    Available,
    /// Being downloaded.
    Downloading,
    /// A download or install failed.
    Failed {
        /// Why.
        error: String,
    },
}

impl ArtifactStatus {
    /// The lowercase word of list lines: `available`, `downloading`, `failed`.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Downloading => "downloading",
            Self::Failed { .. } => "failed",
        }
    }
}

/// A model in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelArtifact {
    /// The entry id (its folder's name).
    pub id: String,
    /// A display name (the file's name without `.gguf`, or what the writer chose).
    pub name: String,
    /// The model file.
    pub path: PathBuf,
    /// Its size in bytes (the announced size while downloading, when known).
    pub size: u64,
    /// Whether it can be used.
    pub status: ArtifactStatus,
    /// When the entry was made.
    pub added_at: DateTime<Utc>,
}

/// The kinds of worker binary that upstream installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerKind {
    /// `llm-worker-rbee-cpu`, worker type `cpu`.
    CpuLlm,
    /// `llm-worker-rbee-cuda`, worker type `cuda`.
    CudaLlm,
    /// `llm-worker-rbee-metal`, worker type `metal`.
    MetalLlm,
}

impl WorkerKind {
    /// The kind whose binaries serve the hive's worker type `name`, if any.
    pub fn for_worker_type(name: &str) -> Option<Self> {
        match name {
            "cpu" => Some(Self::CpuLlm),
            "cuda" => Some(Self::CudaLlm),
            "metal" => Some(Self::MetalLlm),
            _ => None,
        }
    }
}

/// The operating systems of upstream's worker binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Platform {
    /// Linux.
    Linux,
    /// macOS.
    MacOS,
    /// Windows.
    Windows,
}

impl Platform {
    /// The platform this hive runs on.
    pub fn current() -> Self {
        if cfg!(target_os = "macos") {
            Self::MacOS
        } else if cfg!(target_os = "windows") {
            Self::Windows
        } else {
            Self::Linux
        }
    }
}

/// A worker binary in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerArtifact {
    /// The entry id (its folder's name), e.g. `cpu-llm-worker-rbee-v0.1.0-linux`.
    pub id: String,
    /// Which worker it is.
    pub worker_type: WorkerKind,
    /// The operating system it runs on.
    pub platform: Platform,
    /// The executable.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Whether it can be used.
    pub status: ArtifactStatus,
    /// Its version.
    pub version: String,
    /// When the entry was made.
    pub added_at: DateTime<Utc>,
}

impl WorkerArtifact {
    /// A display name: the executable's file name.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.id.clone())
    }
}

/// One catalog entry as `metadata.json` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<A> {
    /// What the entry is.
    pub artifact: A,
    /// When the entry was made.
    pub added_at: DateTime<Utc>,
    /// When it was last used.
    pub last_accessed: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_upstreams_json() {
        let text = r#"{
          "artifact": {"id": "tiny", "name": "tiny", "path": "/c/models/tiny/tiny.gguf",
                       "size": 12, "status": {"Failed": {"error": "boom"}},
                       "added_at": "2025-01-02T03:04:05Z"},
          "added_at": "2025-01-02T03:04:05Z", "last_accessed": "2025-01-02T03:04:05Z"}"#;
        let entry: Entry<ModelArtifact> = serde_json::from_str(text).unwrap();
        assert_eq!(entry.artifact.status.word(), "failed");
        let back = serde_json::to_value(&entry).unwrap();
        assert_eq!(back["artifact"]["status"]["Failed"]["error"], "boom");
        let available = serde_json::to_value(ArtifactStatus::Available).unwrap();
        assert_eq!(available, "Available");

        let text = r#"{"artifact": {"id": "cpu-llm-worker-rbee-v0.1.0-linux",
            "worker_type": "CpuLlm", "platform": "Linux", "path": "/c/w/x", "size": 5,
            "status": "Available", "version": "0.1.0", "added_at": "2025-01-02T03:04:05Z"},
            "added_at": "2025-01-02T03:04:05Z", "last_accessed": "2025-01-02T03:04:05Z"}"#;
        let entry: Entry<WorkerArtifact> = serde_json::from_str(text).unwrap();
        assert_eq!(entry.artifact.worker_type, WorkerKind::CpuLlm);
        assert_eq!(entry.artifact.name(), "x");
    }
}
