//! The worker-binary catalog: `<catalog_dir>/workers/<id>/metadata.json`, as upstream's
//! installer writes it. A `worker_spawn` of type `cpu`, `cuda` or `metal` runs the newest
//! available binary of that kind for this platform when there is one (upstream's rule).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::artifact::{ArtifactStatus, Entry, Platform, WorkerArtifact, WorkerKind};
use crate::disk::{self, METADATA};
use crate::error::CatalogError;
use crate::id::CatalogId;
use crate::models::entry_ids;

/// The worker binaries of one catalog folder. Every call reads the disk.
#[derive(Debug, Clone)]
pub struct WorkerCatalog {
    dir: PathBuf,
}

impl WorkerCatalog {
    /// The worker catalog under `catalog_dir` (`<catalog_dir>/workers`).
    pub fn new(catalog_dir: &Path) -> Self {
        Self {
            dir: catalog_dir.join("workers"),
        }
    }

    /// `<catalog_dir>/workers`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every readable entry, by id (unreadable ones are logged and left out).
    pub fn list(&self) -> Result<Vec<Entry<WorkerArtifact>>, CatalogError> {
        let mut entries = Vec::new();
        for id in entry_ids(&self.dir)? {
            match self.read_entry(&id) {
                Ok(Some(entry)) => entries.push(entry),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "skipping a worker catalog entry"),
            }
        }
        Ok(entries)
    }

    /// One entry.
    pub fn get(&self, id: &CatalogId) -> Result<Entry<WorkerArtifact>, CatalogError> {
        self.read_entry(id)?.ok_or_else(|| CatalogError::NotFound {
            id: id.to_string(),
            dir: self.dir.clone(),
            known: entry_ids(&self.dir)
                .unwrap_or_default()
                .into_iter()
                .filter(|id| self.dir.join(id.as_str()).join(METADATA).is_file())
                .map(|id| id.to_string())
                .collect(),
        })
    }

    /// Removes entry `id` and everything in its folder.
    pub fn remove(&self, id: &CatalogId) -> Result<(), CatalogError> {
        // Even an unreadable entry can be removed, as long as it is an entry folder.
        let folder = self.dir.join(id.as_str());
        if !disk::is_real_dir(&folder) || !disk::is_real_file(&folder.join(METADATA)) {
            return Err(match self.get(id) {
                Err(error) => error,
                Ok(_) => CatalogError::Unusable {
                    id: id.to_string(),
                    reason: "not an entry folder".into(),
                },
            });
        }
        std::fs::remove_dir_all(&folder).map_err(|e| CatalogError::io("remove", &folder, e))?;
        disk::sync_dir(&self.dir).map_err(|e| CatalogError::io("sync", &self.dir, e))
    }

    /// The executable to run for the hive's worker type `worker_type`: the newest
    /// `Available` entry of its kind for this platform whose file is an executable inside
    /// its entry folder. `None` when there is none (the configured command is used).
    pub fn binary_for(&self, worker_type: &str) -> Option<PathBuf> {
        let kind = WorkerKind::for_worker_type(worker_type)?;
        let mut candidates: Vec<Entry<WorkerArtifact>> = self
            .list()
            .ok()?
            .into_iter()
            .filter(|entry| {
                entry.artifact.worker_type == kind
                    && entry.artifact.platform == Platform::current()
                    && entry.artifact.status == ArtifactStatus::Available
            })
            .collect();
        candidates.sort_by_key(|entry| std::cmp::Reverse(entry.added_at));
        candidates.into_iter().find_map(|entry| {
            let folder = self.dir.join(&entry.artifact.id);
            let path = disk::inside(&folder, &entry.artifact.path)?;
            let executable = std::fs::metadata(&path)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            if !executable {
                tracing::warn!(id = %entry.artifact.id, path = %path.display(), "catalog worker binary is not an executable file; skipped");
            }
            executable.then_some(path)
        })
    }

    fn read_entry(&self, id: &CatalogId) -> Result<Option<Entry<WorkerArtifact>>, CatalogError> {
        let folder = self.dir.join(id.as_str());
        let metadata = folder.join(METADATA);
        if !disk::is_real_dir(&folder) || !disk::is_real_file(&metadata) {
            return Ok(None);
        }
        let bytes = std::fs::read(&metadata).map_err(|e| CatalogError::io("read", &metadata, e))?;
        let mut entry: Entry<WorkerArtifact> =
            serde_json::from_slice(&bytes).map_err(|error| CatalogError::Metadata {
                path: metadata.clone(),
                reason: error.to_string(),
            })?;
        entry.artifact.id = id.to_string();
        Ok(Some(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn install(
        catalog_dir: &Path,
        id: &str,
        kind: WorkerKind,
        day: u32,
        executable: bool,
    ) -> PathBuf {
        let folder = catalog_dir.join("workers").join(id);
        std::fs::create_dir_all(&folder).unwrap();
        let binary = folder.join("llm-worker");
        std::fs::write(&binary, b"#!/bin/sh\n").unwrap();
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(mode)).unwrap();
        let at = Utc.with_ymd_and_hms(2025, 1, day, 0, 0, 0).unwrap();
        let entry = Entry {
            artifact: WorkerArtifact {
                id: id.into(),
                worker_type: kind,
                platform: Platform::current(),
                path: binary.clone(),
                size: 10,
                status: ArtifactStatus::Available,
                version: "0.1.0".into(),
                added_at: at,
            },
            added_at: at,
            last_accessed: at,
        };
        disk::write_json_atomic(&folder.join(METADATA), &entry).unwrap();
        binary
    }

    #[test]
    fn the_newest_usable_binary_of_a_kind_is_chosen() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = WorkerCatalog::new(dir.path());
        assert_eq!(catalog.binary_for("cpu"), None);
        let old = install(dir.path(), "cpu-old", WorkerKind::CpuLlm, 1, true);
        install(dir.path(), "cpu-broken", WorkerKind::CpuLlm, 3, false);
        install(dir.path(), "cuda-new", WorkerKind::CudaLlm, 4, true);
        assert_eq!(catalog.binary_for("cpu"), Some(old.canonicalize().unwrap()));
        assert_eq!(catalog.binary_for("demo"), None);
        assert_eq!(catalog.list().unwrap().len(), 3);
        let id = CatalogId::parse("cpu-old").unwrap();
        assert_eq!(catalog.get(&id).unwrap().artifact.name(), "llm-worker");
        catalog.remove(&id).unwrap();
        assert_eq!(catalog.binary_for("cpu"), None);
        let error = catalog.get(&id).unwrap_err().to_string();
        assert!(error.contains("known ids: cpu-broken, cuda-new"), "{error}");
    }
}
