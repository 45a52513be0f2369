//! The job store: submit, look up, read, cancel; retention of finished jobs; shutdown.
//!
//! A submitted job is spawned at once on the Tokio runtime. Its narrations reach its log
//! through a narration sink attached for its id while it runs. Finished jobs are kept for
//! `retention` and at most `max_finished` of them (oldest freed first), so that memory does
//! not grow with the number of jobs ever run; a sweeper task frees them on time, sleeping
//! until the next expiry rather than ticking.

use std::collections::{HashMap, VecDeque};
use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::NARRATE;
use crate::id::JobId;
use crate::job::{Job, JobContext, JobSnapshot, JobState};
use crate::reader::LogReader;

/// Limits of the job store.
#[derive(Debug, Clone)]
pub struct JobStoreConfig {
    /// How long a finished job is kept (default 10 minutes).
    pub retention: Duration,
    /// How many finished jobs are kept at most (default 10 000).
    pub max_finished: usize,
    /// How many log entries one job keeps (default 10 000); older ones are dropped.
    pub event_buffer: usize,
}

impl Default for JobStoreConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(600),
            max_finished: 10_000,
            event_buffer: 10_000,
        }
    }
}

/// Why a job could not be submitted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    /// The hive is shutting down and takes no new jobs.
    #[error("the hive is shutting down and accepts no new jobs")]
    ShuttingDown,
}

/// Why a job could not be cancelled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CancelError {
    /// No such job (never existed, or freed after retention).
    #[error("job '{0}' not found")]
    NotFound(String),
    /// The job had already ended.
    #[error("job '{job_id}' already finished ({})", state.as_str())]
    AlreadyFinished {
        /// The job.
        job_id: String,
        /// How it ended.
        state: JobState,
    },
}

/// The jobs of one hive. A cheap `Clone` handle.
#[derive(Clone)]
pub struct JobStore {
    shared: Arc<Shared>,
}

struct Shared {
    // std Mutex: held for map updates only, never across an await.
    jobs: Mutex<Jobs>,
    config: JobStoreConfig,
    shutting_down: AtomicBool,
    /// Wakes the sweeper when a job finishes.
    finished: Arc<Notify>,
    /// The tasks that run jobs (waited for at shutdown).
    tasks: TaskTracker,
    _stop_sweeper: DropGuard,
}

/// Tables keep their largest size unless asked; after a burst of jobs is freed they are
/// shrunk, so that memory returns to its idle level (amortised: only when 4× too big).
fn shrink_capacity(len: usize, capacity: usize) -> Option<usize> {
    (capacity > 64 && capacity > len * 4).then_some(len * 2)
}

impl Jobs {
    fn shrink_after_burst(&mut self) {
        if let Some(target) = shrink_capacity(self.by_id.len(), self.by_id.capacity()) {
            self.by_id.shrink_to(target);
        }
        if let Some(target) = shrink_capacity(self.finished.len(), self.finished.capacity()) {
            self.finished.shrink_to(target);
        }
    }
}

#[derive(Default)]
struct Jobs {
    by_id: HashMap<JobId, Arc<Job>>,
    /// Finished jobs in the order they finished, with when they finished.
    finished: VecDeque<(Instant, JobId)>,
}

impl JobStore {
    /// A new store; must be called within a Tokio runtime (it starts the retention sweeper).
    pub fn new(config: JobStoreConfig) -> Self {
        let stop = CancellationToken::new();
        let finished = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            jobs: Mutex::new(Jobs::default()),
            config,
            shutting_down: AtomicBool::new(false),
            finished: finished.clone(),
            tasks: TaskTracker::new(),
            _stop_sweeper: stop.clone().drop_guard(),
        });
        tokio::spawn(sweep(Arc::downgrade(&shared), finished, stop));
        Self { shared }
    }

    /// Starts `run` as a new job and returns its id. The job runs whether or not anyone
    /// reads its stream; its error text becomes the job's failure reason.
    pub fn submit<F, Fut, E>(&self, operation: &str, run: F) -> Result<JobId, SubmitError>
    where
        F: FnOnce(JobContext) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let id = JobId::generate();
        let job = Arc::new(Job::new(
            id.clone(),
            operation.to_owned(),
            self.shared.config.event_buffer,
        ));
        {
            // Checked under the lock that `begin_shutdown` takes: a job is either refused or
            // among those that the shutdown cancels, never neither.
            let mut jobs = self.shared.lock();
            if self.shared.shutting_down.load(Ordering::SeqCst) {
                return Err(SubmitError::ShuttingDown);
            }
            jobs.by_id.insert(id.clone(), job.clone());
        }
        let operation = run(JobContext { job: job.clone() });
        let shared = self.shared.clone();
        self.shared.tasks.spawn(async move {
            job.mark_running();
            let outcome = tokio::select! {
                biased;
                _ = job.cancel.cancelled() => None,
                result = AssertUnwindSafe(operation).catch_unwind() => Some(result),
            };
            match outcome {
                Some(Ok(Ok(()))) => {
                    job.finish(JobState::Succeeded, None);
                }
                Some(Ok(Err(error))) => fail(&job, error.to_string()),
                Some(Err(panic)) => {
                    let message = panic_message(panic.as_ref());
                    tracing::error!(job_id = %job.id, "operation panicked: {message}");
                    fail(
                        &job,
                        format!("internal error: the operation panicked ({message})"),
                    );
                }
                None => {
                    job.finish(JobState::Cancelled, None);
                }
            }
            shared.record_finished(&job.id);
        });
        Ok(id)
    }

    /// The status of a job, if it is kept.
    pub fn snapshot(&self, id: &JobId) -> Option<JobSnapshot> {
        self.get(id).map(|job| job.snapshot())
    }

    /// The status of every kept job, oldest first.
    pub fn list(&self) -> Vec<JobSnapshot> {
        let jobs: Vec<Arc<Job>> = self.shared.lock().by_id.values().cloned().collect();
        let mut snapshots: Vec<JobSnapshot> = jobs.iter().map(|job| job.snapshot()).collect();
        snapshots.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.job_id.cmp(&b.job_id))
        });
        snapshots
    }

    /// A reader of a job's log that starts after `after_seq` (0: from the first line).
    pub fn reader(&self, id: &JobId, after_seq: u64) -> Option<LogReader> {
        self.get(id).map(|job| job.reader(after_seq))
    }

    /// Cancels a queued or running job: its operation's future is dropped and its stream
    /// ends with `[CANCELLED]`.
    pub fn cancel(&self, id: &JobId) -> Result<(), CancelError> {
        let job = self
            .get(id)
            .ok_or_else(|| CancelError::NotFound(id.to_string()))?;
        cancel_job(&job).map_err(|state| CancelError::AlreadyFinished {
            job_id: id.to_string(),
            state,
        })
    }

    /// Refuses new jobs from now on and cancels every job still running; returns how many.
    pub fn begin_shutdown(&self) -> usize {
        let jobs: Vec<Arc<Job>> = {
            let jobs = self.shared.lock();
            self.shared.shutting_down.store(true, Ordering::SeqCst);
            jobs.by_id.values().cloned().collect()
        };
        jobs.iter().filter(|job| cancel_job(job).is_ok()).count()
    }

    /// Waits until every job's task has ended (after [`begin_shutdown`](Self::begin_shutdown)
    /// that is soon: each cancelled operation's future is dropped, running its cleanup).
    pub async fn wait_for_tasks(&self) {
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }

    /// Whether [`begin_shutdown`](Self::begin_shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::SeqCst)
    }

    /// How many jobs are kept (running and finished).
    pub fn len(&self) -> usize {
        self.shared.lock().by_id.len()
    }

    /// Whether no job is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, id: &JobId) -> Option<Arc<Job>> {
        self.shared.lock().by_id.get(id).cloned()
    }
}

/// Ends a job as cancelled and stops its future; `Err(state)` if it had already ended.
fn cancel_job(job: &Job) -> Result<(), JobState> {
    if job.finish(JobState::Cancelled, None) {
        job.cancel.cancel();
        Ok(())
    } else {
        Err(job.state())
    }
}

fn fail(job: &Job, reason: String) {
    NARRATE
        .action("failed")
        .context(&job.id)
        .context(&reason)
        .human("Job {} failed: {}")
        .error()
        .emit_to(job);
    job.finish(JobState::Failed, Some(reason));
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record_finished(&self, id: &JobId) {
        let mut jobs = self.lock();
        jobs.finished.push_back((Instant::now(), id.clone()));
        while jobs.finished.len() > self.config.max_finished {
            if let Some((_, old)) = jobs.finished.pop_front() {
                jobs.by_id.remove(&old);
            }
        }
        drop(jobs);
        self.finished.notify_one();
    }

    /// Frees jobs past retention; returns when the next one expires, if any is kept.
    fn free_expired(&self, now: Instant) -> Option<Instant> {
        let mut jobs = self.lock();
        let mut next = None;
        while let Some((finished_at, _)) = jobs.finished.front() {
            let expires = *finished_at + self.config.retention;
            if expires > now {
                next = Some(expires);
                break;
            }
            if let Some((_, id)) = jobs.finished.pop_front() {
                jobs.by_id.remove(&id);
            }
        }
        jobs.shrink_after_burst();
        next
    }
}

async fn sweep(shared: Weak<Shared>, finished: Arc<Notify>, stop: CancellationToken) {
    loop {
        let next_expiry = match shared.upgrade() {
            Some(shared) => shared.free_expired(Instant::now()),
            None => return,
        };
        let wait = async {
            match next_expiry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => finished.notified().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wait => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::LogEntry;
    use crate::reader::ReadItem;

    const NARRATE_TEST: narration::NarrationFactory = narration::NarrationFactory::new("test");

    async fn read_all(store: &JobStore, id: &JobId, after: u64) -> Vec<ReadItem> {
        let mut reader = store.reader(id, after).expect("job kept");
        let mut all = Vec::new();
        loop {
            let batch = reader.next_batch().await;
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    }

    fn texts(items: &[ReadItem]) -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                ReadItem::Event(e) => match &e.entry {
                    LogEntry::Narration(n) => n.text(),
                    LogEntry::Result(v) => format!("result {}", v.get()),
                },
                ReadItem::Gap { dropped, .. } => format!("gap {dropped}"),
                ReadItem::End(end) => format!("end {}", end.state.as_str()),
            })
            .collect()
    }

    #[tokio::test]
    async fn runs_without_reader_and_replays_to_late_readers() {
        let store = JobStore::new(JobStoreConfig::default());
        let id = store
            .submit("op", |ctx| async move {
                NARRATE_TEST.action("a").human("one").emit_to(&ctx);
                ctx.publish_result(&serde_json::json!({"n": 1}));
                NARRATE_TEST.action("b").human("two").emit_to(&ctx);
                Ok::<(), String>(())
            })
            .unwrap();
        let first = read_all(&store, &id, 0).await;
        let second = read_all(&store, &id, 0).await;
        assert_eq!(
            texts(&first),
            vec![
                "[test      ] a              : one",
                "result {\"n\":1}",
                "[test      ] b              : two",
                "end succeeded"
            ]
        );
        assert_eq!(first, second);
        assert_eq!(
            texts(&read_all(&store, &id, 2).await),
            vec!["[test      ] b              : two", "end succeeded"]
        );
        assert_eq!(store.snapshot(&id).unwrap().state, JobState::Succeeded);
    }

    #[tokio::test]
    async fn failure_narrates_reason_then_ends_failed() {
        let store = JobStore::new(JobStoreConfig::default());
        let id = store
            .submit("op", |_| async {
                Err::<(), _>("worker 'worker-9' not found")
            })
            .unwrap();
        let items = read_all(&store, &id, 0).await;
        assert_eq!(
            texts(&items),
            vec![
                format!(
                    "[job-exec  ] failed         : Job {id} failed: worker 'worker-9' not found"
                ),
                "end failed".into()
            ]
        );
        let snap = store.snapshot(&id).unwrap();
        assert_eq!(snap.error.as_deref(), Some("worker 'worker-9' not found"));
        assert!(snap.finished_at.is_some());
    }

    #[tokio::test]
    async fn cancel_drops_the_future_and_ends_cancelled() {
        let store = JobStore::new(JobStoreConfig::default());
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let id = store
            .submit("op", |_| async move {
                let _tell_on_drop = dropped_tx;
                std::future::pending::<Result<(), String>>().await
            })
            .unwrap();
        store.cancel(&id).unwrap();
        dropped_rx
            .await
            .expect_err("the future was dropped, closing the channel");
        assert_eq!(
            texts(&read_all(&store, &id, 0).await),
            vec!["end cancelled"]
        );
        assert_eq!(
            store.cancel(&id),
            Err(CancelError::AlreadyFinished {
                job_id: id.to_string(),
                state: JobState::Cancelled
            })
        );
        assert!(
            store
                .cancel(&JobId::generate())
                .unwrap_err()
                .to_string()
                .contains("not found")
        );
    }

    #[tokio::test]
    async fn panics_become_failures() {
        let store = JobStore::new(JobStoreConfig::default());
        let id = store
            .submit("op", |_| async {
                if true {
                    panic!("boom");
                }
                Ok::<(), String>(())
            })
            .unwrap();
        let items = read_all(&store, &id, 0).await;
        assert_eq!(texts(&items).last().unwrap(), "end failed");
        assert!(store.snapshot(&id).unwrap().error.unwrap().contains("boom"));
    }

    #[tokio::test]
    async fn full_log_drops_oldest_and_reports_gap() {
        let store = JobStore::new(JobStoreConfig {
            event_buffer: 3,
            ..Default::default()
        });
        let id = store
            .submit("op", |ctx| async move {
                for i in 0..10 {
                    NARRATE_TEST
                        .action("n")
                        .context(i)
                        .human("{}")
                        .emit_to(&ctx);
                }
                Ok::<(), String>(())
            })
            .unwrap();
        let items = read_all(&store, &id, 0).await;
        assert_eq!(
            texts(&items),
            vec![
                "gap 7",
                "[test      ] n              : 7",
                "[test      ] n              : 8",
                "[test      ] n              : 9",
                "end succeeded"
            ]
        );
    }

    #[tokio::test]
    async fn reader_is_woken_by_new_lines() {
        let store = JobStore::new(JobStoreConfig::default());
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let id = store
            .submit("op", |ctx| async move {
                NARRATE_TEST.action("first").human("1").emit_to(&ctx);
                go_rx.await.ok();
                NARRATE_TEST.action("second").human("2").emit_to(&ctx);
                Ok::<(), String>(())
            })
            .unwrap();
        let mut reader = store.reader(&id, 0).unwrap();
        assert_eq!(
            texts(&reader.next_batch().await),
            vec!["[test      ] first          : 1"]
        );
        go_tx.send(()).unwrap();
        let mut rest = Vec::new();
        loop {
            let batch = reader.next_batch().await;
            if batch.is_empty() {
                break;
            }
            rest.extend(batch);
        }
        assert_eq!(
            texts(&rest),
            vec!["[test      ] second         : 2", "end succeeded"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn finished_jobs_are_freed_after_retention() {
        let store = JobStore::new(JobStoreConfig {
            retention: Duration::from_secs(60),
            ..Default::default()
        });
        let id = store
            .submit("op", |_| async { Ok::<(), String>(()) })
            .unwrap();
        read_all(&store, &id, 0).await;
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(store.snapshot(&id).is_some());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(store.snapshot(&id).is_none());
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn finished_jobs_are_capped() {
        let store = JobStore::new(JobStoreConfig {
            max_finished: 5,
            ..Default::default()
        });
        let mut ids = Vec::new();
        for _ in 0..20 {
            let id = store
                .submit("op", |_| async { Ok::<(), String>(()) })
                .unwrap();
            read_all(&store, &id, 0).await;
            ids.push(id);
        }
        // The last reader saw the end before the task recorded it: wait for the bookkeeping.
        while store.len() > 5 {
            tokio::task::yield_now().await;
        }
        assert_eq!(store.len(), 5);
        assert!(store.snapshot(&ids[19]).is_some());
        assert!(store.snapshot(&ids[0]).is_none());
    }

    #[tokio::test]
    async fn shutdown_cancels_running_jobs_and_refuses_new_ones() {
        let store = JobStore::new(JobStoreConfig::default());
        let id = store
            .submit("op", |_| std::future::pending::<Result<(), String>>())
            .unwrap();
        assert_eq!(store.begin_shutdown(), 1);
        assert_eq!(
            texts(&read_all(&store, &id, 0).await),
            vec!["end cancelled"]
        );
        assert_eq!(
            store.submit("op", |_| async { Ok::<(), String>(()) }),
            Err(SubmitError::ShuttingDown)
        );
    }
}
