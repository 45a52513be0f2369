//! The registry of a hive's workers: a cheap `Clone` handle with the lock inside.
//!
//! Each worker has a slot holding its record in a `watch` channel: every change of a
//! worker's record goes through its slot ([`WorkerSlot::set_status`] for the status, which
//! enforces the state machine, and [`WorkerSlot::update`] for the rest) and wakes whoever
//! waits on it. Ids are `worker-<n>`, handed out from a counter and never reused.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::error::LifecycleError;
use crate::record::{WorkerRecord, WorkerStatus};
use crate::supervisor::{Control, ProcessView};

/// The workers of one hive.
#[derive(Clone)]
pub struct Registry {
    // std Mutex: held only to read or update the map, never across an await.
    inner: Arc<Mutex<Inner>>,
    /// Bumped on every change of the map or of any record (the state file follows it).
    changes: Arc<watch::Sender<u64>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            changes: Arc::new(watch::channel(0).0),
        }
    }
}

#[derive(Default)]
struct Inner {
    slots: BTreeMap<u64, Arc<WorkerSlot>>,
    last_id: u64,
}

/// One worker: its record, the channel to its supervisor, and its process's progress.
pub struct WorkerSlot {
    /// The number in `worker-<n>`.
    pub number: u64,
    pub(crate) record: watch::Sender<WorkerRecord>,
    pub(crate) control: mpsc::UnboundedSender<Control>,
    pub(crate) process: watch::Sender<ProcessView>,
    changes: Arc<watch::Sender<u64>>,
}

impl WorkerSlot {
    pub(crate) fn new(
        registry: &Registry,
        number: u64,
        record: WorkerRecord,
        control: mpsc::UnboundedSender<Control>,
        process: ProcessView,
    ) -> Self {
        Self {
            number,
            record: watch::channel(record).0,
            control,
            process: watch::channel(process).0,
            changes: registry.changes.clone(),
        }
    }

    /// The worker's id.
    pub fn id(&self) -> String {
        self.record.borrow().id.clone()
    }

    /// A copy of the record.
    pub fn record(&self) -> WorkerRecord {
        self.record.borrow().clone()
    }

    /// The one place a worker's status changes: applies `next` if the state machine allows
    /// it, wakes waiters, and returns whether it changed.
    pub fn set_status(&self, next: WorkerStatus) -> bool {
        let changed = self.record.send_if_modified(|record| {
            if record.status.can_become(&next) {
                if next == WorkerStatus::Ready && record.ready_at.is_none() {
                    record.ready_at = Some(chrono::Utc::now());
                }
                record.status = next;
                true
            } else {
                false
            }
        });
        if changed {
            bump(&self.changes);
        }
        changed
    }

    /// Changes fields other than the status.
    pub fn update(&self, change: impl FnOnce(&mut WorkerRecord)) {
        self.record.send_modify(|record| {
            let status = record.status.clone();
            change(record);
            debug_assert_eq!(
                record.status, status,
                "status changes go through set_status"
            );
            record.status = status;
        });
        bump(&self.changes);
    }

    /// Subscribes to the record.
    pub fn watch_record(&self) -> watch::Receiver<WorkerRecord> {
        self.record.subscribe()
    }

    /// Subscribes to the process's progress.
    pub fn watch_process(&self) -> watch::Receiver<ProcessView> {
        self.process.subscribe()
    }

    /// Asks the supervisor to stop the worker (ignored once its process is gone).
    pub(crate) fn request_stop(
        &self,
        grace: Duration,
        reason: crate::supervisor::StopReason,
        remove: bool,
    ) {
        let _ = self.control.send(Control::Stop {
            grace,
            reason,
            remove,
        });
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the next id number (never handed out again).
    pub(crate) fn next_number(&self) -> u64 {
        let mut inner = self.lock();
        inner.last_id += 1;
        inner.last_id
    }

    /// The highest id number ever handed out.
    pub fn last_id(&self) -> u64 {
        self.lock().last_id
    }

    pub(crate) fn insert(&self, slot: Arc<WorkerSlot>) {
        {
            let mut inner = self.lock();
            inner.last_id = inner.last_id.max(slot.number);
            inner.slots.insert(slot.number, slot);
        }
        bump(&self.changes);
    }

    /// Removes a worker's slot; returns whether it was there.
    pub(crate) fn remove(&self, number: u64) -> bool {
        let removed = self.lock().slots.remove(&number).is_some();
        if removed {
            bump(&self.changes);
        }
        removed
    }

    /// Raises the id counter to at least `last_id` (ids survive restarts).
    pub(crate) fn raise_last_id(&self, last_id: u64) {
        let mut inner = self.lock();
        inner.last_id = inner.last_id.max(last_id);
    }

    /// Subscribes to changes (a counter bumped on each).
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Everything the state file holds, taken under one lock.
    pub fn snapshot(&self) -> crate::state_file::PersistedState {
        let inner = self.lock();
        let workers = inner.slots.values().map(|slot| slot.record()).collect();
        crate::state_file::PersistedState::new(inner.last_id, workers)
    }

    /// The slot of worker `id`.
    pub fn slot(&self, id: &str) -> Result<Arc<WorkerSlot>, LifecycleError> {
        parse_id(id)
            .and_then(|number| self.lock().slots.get(&number).cloned())
            .ok_or_else(|| LifecycleError::NotFound(id.to_owned()))
    }

    /// Every slot, by id number.
    pub fn slots(&self) -> Vec<Arc<WorkerSlot>> {
        self.lock().slots.values().cloned().collect()
    }

    /// Every registered worker, by id number.
    pub fn list(&self) -> Vec<WorkerRecord> {
        self.slots().iter().map(|slot| slot.record()).collect()
    }

    /// One worker.
    pub fn get(&self, id: &str) -> Result<WorkerRecord, LifecycleError> {
        self.slot(id).map(|slot| slot.record())
    }

    /// How many workers are registered.
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether no worker is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn bump(changes: &watch::Sender<u64>) {
    changes.send_modify(|generation| *generation = generation.wrapping_add(1));
}

/// `worker-<n>` → `n` (canonical decimal, no sign, no leading zeros).
pub fn parse_id(id: &str) -> Option<u64> {
    let digits = id.strip_prefix("worker-")?;
    if digits.is_empty()
        || digits.len() > 19
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
    {
        return None;
    }
    digits.parse().ok()
}

/// `n` → `worker-<n>`.
pub fn format_id(number: u64) -> String {
    format!("worker-{number}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_canonically() {
        assert_eq!(parse_id("worker-1"), Some(1));
        assert_eq!(parse_id(&format_id(42)), Some(42));
        for bad in [
            "worker-",
            "worker-01",
            "worker-0",
            "worker--1",
            "worker-1/..",
            "Worker-1",
            "worker-99999999999999999999",
        ] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn numbers_are_never_reused() {
        let registry = Registry::new();
        let a = registry.next_number();
        let b = registry.next_number();
        assert!(b > a);
        assert_eq!(registry.last_id(), b);
    }
}
