//! The registry of a hive's workers and its way to disk.
//!
//! Each worker has a slot: a receiver of its record (the sender belongs to the worker's
//! supervisor, the record's only writer) and the channel to that supervisor. Ids are
//! `worker-<n>` from a counter that is never turned back, and never reused.
//!
//! Every change that the state file must hold bumps a generation counter; one writer
//! thread saves the registry whenever the counter moved (many changes, one `fsync`), then
//! publishes the generation it saved. It is a thread of its own, woken directly by the
//! change, rather than a task that hands each save to the blocking pool: the save is on the
//! path of every acknowledgement, and the two hand-overs cost 0.1–0.2 ms each time here. An acknowledgement waits for the save that contains
//! its change ([`Registry::wait_durable`]): a snapshot taken after reading generation `g`
//! holds every change numbered up to `g`, because each change is applied before it is
//! counted.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::error::LifecycleError;
use crate::record::WorkerRecord;
use crate::state_file::{PersistedState, StateDir};
use crate::supervisor::Command;

/// The workers of one hive. A cheap `Clone` handle.
#[derive(Clone)]
pub(crate) struct Registry {
    shared: Arc<Shared>,
}

struct Shared {
    // std Mutex: held only to read or update the map, never across an await.
    slots: Mutex<Slots>,
    /// Bumped after every change the state file must follow.
    generation: watch::Sender<u64>,
    /// What the writer has saved.
    durable: watch::Sender<Durable>,
    /// Wakes the writer thread.
    writer: WriterBell,
    /// Marks this state dir's worker processes (`RBEE_HIVE_WORKER=<instance>/<id>`).
    instance: String,
}

#[derive(Default)]
struct Slots {
    by_number: BTreeMap<u64, Slot>,
    last_id: u64,
}

/// One worker's place in the registry.
#[derive(Clone)]
pub(crate) struct Slot {
    /// The record, written by the supervisor alone.
    pub(crate) record: watch::Receiver<WorkerRecord>,
    /// Requests to the supervisor.
    pub(crate) commands: mpsc::UnboundedSender<Command>,
}

/// What the writer thread waits on: a change to save, or the end.
#[derive(Default)]
struct WriterBell {
    // std Mutex: the writer thread waits on it; held for a flag, never across an await.
    state: Mutex<Bell>,
    rung: Condvar,
}

#[derive(Default)]
struct Bell {
    changed: bool,
    stop: bool,
}

impl WriterBell {
    fn lock(&self) -> MutexGuard<'_, Bell> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ring(&self, apply: impl FnOnce(&mut Bell)) {
        apply(&mut self.lock());
        self.rung.notify_one();
    }

    /// Waits for a change; false once told to stop.
    fn wait(&self) -> bool {
        let mut bell = self.lock();
        while !bell.changed && !bell.stop {
            bell = self.rung.wait(bell).unwrap_or_else(|e| e.into_inner());
        }
        bell.changed = false;
        !bell.stop
    }

    /// Waits `pause` whatever changes meanwhile (a failed save is retried once a second, not
    /// at every change); false once told to stop.
    fn pause(&self, pause: Duration) -> bool {
        let until = std::time::Instant::now() + pause;
        let mut bell = self.lock();
        while !bell.stop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            bell = self
                .rung
                .wait_timeout(bell, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        bell.changed = false;
        !bell.stop
    }
}

/// Stops the writer thread when dropped (with the manager): the thread must not outlive
/// it, holding the state dir's lock, even when no runtime is left to run a task.
pub(crate) struct WriterStop(Registry);

impl Drop for WriterStop {
    fn drop(&mut self) {
        self.0.shared.writer.ring(|bell| bell.stop = true);
    }
}

/// The writer's progress.
#[derive(Debug, Clone, Default)]
struct Durable {
    /// Every change up to this generation is on disk.
    saved: u64,
    /// The last failed save: the generation it tried and why it failed.
    failure: Option<(u64, String)>,
    /// Whether the writer has ended (nothing more will be saved).
    stopped: bool,
}

impl Registry {
    /// An empty registry whose workers carry `instance` in their marker.
    pub(crate) fn new(instance: String) -> Self {
        Self {
            shared: Arc::new(Shared {
                slots: Mutex::default(),
                generation: watch::channel(0).0,
                durable: watch::channel(Durable::default()).0,
                writer: WriterBell::default(),
                instance,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.shared.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The id of this state dir's hive instance.
    pub(crate) fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// Makes a change of a record (`change`) and counts it (`persist`) in one critical
    /// section with the state file's snapshot and with [`generation`](Self::generation): whoever
    /// sees the changed record and then asks for the generation gets one that covers it, and
    /// no snapshot holds the change without its generation or the generation without it.
    /// Returns the generation to wait for.
    pub(crate) fn change(&self, persist: bool, change: impl FnOnce()) -> u64 {
        let _slots = self.lock();
        change();
        match persist {
            true => self.bump(),
            false => *self.shared.generation.borrow(),
        }
    }

    /// Counts a change that the state file must hold; returns its generation.
    pub(crate) fn bump(&self) -> u64 {
        let mut generation = 0;
        self.shared.generation.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        self.shared.writer.ring(|bell| bell.changed = true);
        generation
    }

    /// The generation of the latest change (taken under the lock of [`change`](Self::change),
    /// so that it covers every change already visible).
    pub(crate) fn generation(&self) -> u64 {
        let _slots = self.lock();
        *self.shared.generation.borrow()
    }

    /// Takes the next id number (never handed out again). It reaches the disk with the
    /// insertion of its worker, which follows at once (an id whose worker never gets
    /// inserted was never shown to anyone).
    pub(crate) fn reserve_number(&self) -> u64 {
        let mut slots = self.lock();
        slots.last_id += 1;
        slots.last_id
    }

    /// The highest id handed out or known so far.
    pub(crate) fn last_id(&self) -> u64 {
        self.lock().last_id
    }

    /// Raises the id counter to at least `last_id` (ids survive restarts).
    pub(crate) fn raise_last_id(&self, last_id: u64) {
        let mut slots = self.lock();
        slots.last_id = slots.last_id.max(last_id);
    }

    /// Adds a worker's slot (a change the state file must hold).
    pub(crate) fn insert(&self, number: u64, slot: Slot) {
        let mut slots = self.lock();
        slots.last_id = slots.last_id.max(number);
        slots.by_number.insert(number, slot);
        // Counted before the lock is released: see `change`.
        self.bump();
    }

    /// Removes a worker's slot: called by its supervisor alone, once its processes are gone.
    pub(crate) fn remove(&self, number: u64) {
        let mut slots = self.lock();
        if slots.by_number.remove(&number).is_some() {
            // Counted before the lock is released: see `change`.
            self.bump();
        }
    }

    /// The slot of worker `id`.
    pub(crate) fn slot(&self, id: &str) -> Result<Slot, LifecycleError> {
        parse_id(id)
            .and_then(|number| self.lock().by_number.get(&number).cloned())
            .ok_or_else(|| LifecycleError::NotFound(id.to_owned()))
    }

    /// Every slot, by id number.
    pub(crate) fn slots(&self) -> Vec<Slot> {
        self.lock().by_number.values().cloned().collect()
    }

    /// Every record, by id number.
    pub(crate) fn records(&self) -> Vec<WorkerRecord> {
        self.lock()
            .by_number
            .values()
            .map(|slot| slot.record.borrow().clone())
            .collect()
    }

    /// Everything the state file holds, taken under one lock.
    pub(crate) fn snapshot(&self) -> PersistedState {
        let slots = self.lock();
        let workers = slots
            .by_number
            .values()
            .map(|slot| slot.record.borrow().clone())
            .collect();
        PersistedState::new(&self.shared.instance, slots.last_id, workers)
    }

    /// Waits until the state file holds every change up to `generation`; fails if the save
    /// that should have held it failed.
    pub(crate) async fn wait_durable(&self, generation: u64) -> Result<(), LifecycleError> {
        let mut durable = self.shared.durable.subscribe();
        let outcome = durable
            .wait_for(|d| {
                d.saved >= generation
                    || d.stopped
                    || d.failure.as_ref().is_some_and(|(g, _)| *g >= generation)
            })
            .await
            .map(|d| d.clone());
        match outcome {
            Ok(d) if d.saved >= generation => Ok(()),
            Ok(Durable {
                failure: Some((failed, why)),
                ..
            }) if failed >= generation => Err(LifecycleError::StateNotSaved(why)),
            _ => Err(LifecycleError::StateNotSaved(
                "the state file writer has stopped".into(),
            )),
        }
    }

    /// Waits until every change made so far is on disk.
    pub(crate) async fn flush(&self) -> Result<(), LifecycleError> {
        self.wait_durable(self.generation()).await
    }

    /// Starts the writer thread: it saves the registry at once, then whenever it changed,
    /// coalescing bursts, until `stop` is cancelled or the returned guard is dropped. A
    /// failed save is retried after a second even without a new change. Must be called
    /// within a Tokio runtime (a task rings the bell when `stop` is cancelled).
    pub(crate) fn start_writer(
        &self,
        state_dir: Arc<StateDir>,
        stop: CancellationToken,
    ) -> WriterStop {
        let registry = self.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            registry.shared.writer.ring(|bell| bell.stop = true);
        });
        let registry = self.clone();
        let spawned = std::thread::Builder::new()
            .name("rbee-state-writer".into())
            .spawn(move || registry.write_state(&state_dir));
        if let Err(error) = spawned {
            tracing::error!("cannot start the state file writer: {error}");
            self.shared.durable.send_modify(|d| d.stopped = true);
        }
        WriterStop(self.clone())
    }

    /// The writer thread's loop.
    fn write_state(self, state_dir: &StateDir) {
        const RETRY_AFTER: Duration = Duration::from_secs(1);
        /// Tells waiters that nothing more will be saved, however the writer ends.
        struct Stopped(Registry);
        impl Drop for Stopped {
            fn drop(&mut self) {
                self.0.shared.durable.send_modify(|d| d.stopped = true);
            }
        }
        let _stopped = Stopped(self.clone());
        let mut retry = true;
        loop {
            if !retry && !self.shared.writer.wait() {
                return;
            }
            // Read before the snapshot: the snapshot holds every change counted up to it.
            let generation = *self.shared.generation.borrow();
            let saved = state_dir.save_latest(|| self.snapshot());
            retry = saved.is_err();
            self.shared.durable.send_modify(|durable| match saved {
                Ok(()) => durable.saved = durable.saved.max(generation),
                Err(error) => {
                    tracing::error!(
                        "cannot write the state file {}: {error}",
                        state_dir.state_file().display()
                    );
                    durable.failure = Some((generation, error.to_string()));
                }
            });
            if retry && !self.shared.writer.pause(RETRY_AFTER) {
                return;
            }
        }
    }
}

/// `worker-<n>` → `n` (canonical decimal, no sign, no leading zeros).
pub(crate) fn parse_id(id: &str) -> Option<u64> {
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
pub(crate) fn format_id(number: u64) -> String {
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
        let registry = Registry::new("test".into());
        let a = registry.reserve_number();
        registry.raise_last_id(a - 1);
        let b = registry.reserve_number();
        assert!(b > a);
    }

    #[tokio::test]
    async fn an_acknowledgement_waits_for_the_save_that_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = Arc::new(StateDir::lock(dir.path()).unwrap());
        let registry = Registry::new("test".into());
        let stop = CancellationToken::new();
        let _writer = registry.start_writer(state_dir.clone(), stop.clone());
        let number = registry.reserve_number();
        // The insertion of its worker is what counts the change.
        registry.bump();
        registry.flush().await.unwrap();
        // Once the flush returns, the reservation is in the file.
        assert_eq!(state_dir.load().unwrap().last_id, number);
        stop.cancel();
        let mut durable = registry.shared.durable.subscribe();
        durable.wait_for(|d| d.stopped).await.unwrap();
        // With the writer gone, nothing can be acknowledged any more.
        registry.bump();
        assert!(matches!(
            registry.flush().await,
            Err(LifecycleError::StateNotSaved(_))
        ));
    }
}
