//! The registry of a hive's workers: a cheap `Clone` handle with the lock inside.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::error::LifecycleError;
use crate::record::WorkerRecord;

/// The workers of one hive.
#[derive(Clone, Default)]
pub struct Registry {
    // std Mutex: held only to read or update the map, never across an await.
    workers: Arc<Mutex<BTreeMap<String, WorkerRecord>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every registered worker, by id.
    pub fn list(&self) -> Vec<WorkerRecord> {
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// One worker.
    pub fn get(&self, id: &str) -> Result<WorkerRecord, LifecycleError> {
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        workers
            .get(id)
            .cloned()
            .ok_or_else(|| LifecycleError::NotFound(id.to_owned()))
    }
}
