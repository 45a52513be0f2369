//! [`WorkerManager`]: the face of the crate. Deletes workers, records heartbeats, adopts
//! them after a restart (`adopt`), and stops them at shutdown; spawns them (`spawn`);
//! [`Stopping`] is the handle of a delete under way.
//!
//! The manager never writes a record: it reserves ids, checks requests, and hands each
//! worker to its supervisor, then talks to it through commands.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::error::LifecycleError;
use crate::events::WorkerEvent;
use crate::logs::{self, LogRetention};
use crate::ports::{PortAllocator, PortLease};
use crate::process;
use crate::procinfo::{self, ProcessInfo};
use crate::record::{StopReason, WorkerHealth, WorkerRecord};
use crate::registry::{Registry, Slot, parse_id};
use crate::state_file::StateDir;
use crate::stats::{GpuUsage, StatsTable, WorkerStats};
use crate::supervisor::{Command, Context, HeartbeatState, Start, Supervisor};
use crate::worker_types::{DeviceKind, WorkerTypeConfig, WorkerTypes};

/// Which devices of a kind this machine has, as the hive detects them (`/capabilities`).
/// A spawn must name one of them unless its worker type sets `device_check = false`.
pub trait DeviceInventory: Send + Sync + 'static {
    /// The ordinals of the devices of `kind` (`GPU-<n>`: the NVIDIA GPUs' indices).
    fn ordinals(&self, kind: DeviceKind) -> BoxFuture<'_, Vec<u32>>;
}

/// Settings of the worker lifecycle.
#[derive(Clone)]
pub struct LifecycleConfig {
    /// The state file and the worker logs (`<state_dir>/workers/`) live here.
    pub state_dir: PathBuf,
    /// Worker ports (default 9100–9199).
    pub ports: RangeInclusive<u16>,
    /// Time between SIGTERM and SIGKILL when a delete does not say (default 10 s).
    pub stop_grace: Duration,
    /// The hive's own URL, for `{hive_url}`.
    pub hive_url: String,
    /// The orchestrator's URL, for `{queen_url}`.
    pub queen_url: Option<String>,
    /// Configured worker types (`[workers.<name>]`).
    pub worker_types: BTreeMap<String, WorkerTypeConfig>,
    /// The `llama-server` program of the built-in `llama` type (default: found on `PATH`).
    pub llama_server: Option<PathBuf>,
    /// The command that starts the demo worker, for the built-in `demo` type (default
    /// `rbee-demo-worker`; the daemon runs its own executable as `… demo-worker`).
    pub demo_worker: Option<Vec<String>>,
    /// The devices a spawn may name.
    pub devices: Arc<dyn DeviceInventory>,
    /// How many logs of removed workers are kept.
    pub logs: LogRetention,
    /// How often the workers' resource use is sampled (default 1 s).
    pub stats_interval: Duration,
    /// Where GPU memory per process comes from (none: no GPU fields).
    pub gpu_usage: Option<Arc<dyn GpuUsage>>,
    /// How many worker events a slow subscriber may fall behind before it misses some.
    pub event_buffer: usize,
}

/// What a reload may change in a running manager.
#[derive(Debug, Clone)]
pub struct Reconfigure {
    /// The configured worker types (`[workers.<name>]`).
    pub worker_types: BTreeMap<String, WorkerTypeConfig>,
    /// Ports of workers spawned from now on.
    pub ports: RangeInclusive<u16>,
    /// The stop grace when a delete gives none.
    pub stop_grace: Duration,
}

/// The workers of one hive and the processes behind them. A cheap `Clone` handle; when the
/// last one is dropped, supervision ends and the processes are left as they are.
#[derive(Clone)]
pub struct WorkerManager {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) context: Arc<Context>,
    pub(crate) ports: PortAllocator,
    pub(crate) config: LifecycleConfig,
    pub(crate) logs_dir: PathBuf,
    pub(crate) stats: StatsTable,
    pub(crate) _state_dir: Arc<StateDir>,
    pub(crate) _stop_tasks: DropGuard,
    /// Stops the state file's writer thread with the manager (set once it is started, after
    /// the records are restored: its first save is of the restored registry).
    pub(crate) writer: std::sync::OnceLock<crate::registry::WriterStop>,
}

impl WorkerManager {
    /// A manager for the workers recorded in the state dir: locks the state dir (a second
    /// hive on it is refused), checks the worker types, reads the state file back and adopts
    /// every recorded worker whose process is provably still running; the processes that a
    /// dead leader left are stopped; the others are kept as `Failed` with reason `lost`.
    /// Nothing is signalled that is not proven to be a worker's. Must be called within a
    /// Tokio runtime.
    pub fn new(config: LifecycleConfig) -> Result<Self, LifecycleError> {
        let worker_types = WorkerTypes::new(
            &config.worker_types,
            config.llama_server.as_deref(),
            config.demo_worker.as_deref(),
        )?;
        let state_dir = Arc::new(StateDir::lock(&config.state_dir)?);
        let logs_dir = config.state_dir.join("workers");
        std::fs::create_dir_all(&logs_dir).map_err(|source| LifecycleError::StateDir {
            path: logs_dir.clone(),
            source,
        })?;
        let saved = state_dir.load();
        let saved_instance = saved.as_ref().and_then(|s| s.instance.clone());
        let registry = Registry::new(
            saved_instance
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        );
        // Ids are never reused, even if the state file was lost: no log names an id above.
        registry.raise_last_id(logs::highest_logged_id(&logs_dir));
        let stop = CancellationToken::new();
        let removed = Arc::new(Notify::new());
        let manager = Self {
            inner: Arc::new(Inner {
                context: Arc::new(Context {
                    registry: registry.clone(),
                    default_grace_ms: std::sync::atomic::AtomicU64::new(
                        u64::try_from(config.stop_grace.as_millis()).unwrap_or(u64::MAX),
                    ),
                    shutdown: stop.clone(),
                    removed: removed.clone(),
                    hurried: AtomicBool::new(false),
                    adopted_checks: Arc::new(tokio::sync::Semaphore::new(2)),
                    events: tokio::sync::broadcast::channel(config.event_buffer.max(1)).0,
                    worker_types: std::sync::RwLock::new(Arc::new(worker_types)),
                    hive_url: config.hive_url.clone(),
                    queen_url: config.queen_url.clone().unwrap_or_default(),
                    restarts_held: AtomicBool::new(false),
                }),
                ports: PortAllocator::new(config.ports.clone()),
                logs_dir: logs_dir.clone(),
                stats: StatsTable::default(),
                config: config.clone(),
                _state_dir: state_dir.clone(),
                _stop_tasks: stop.clone().drop_guard(),
                writer: std::sync::OnceLock::new(),
            }),
        };
        if let Some(saved) = saved {
            manager.restore(saved);
        }
        if saved_instance.is_none() {
            // The instance names this hive's workers in their marker, and a worker starts
            // while its reservation is being saved: it must be on disk before the first one,
            // so that a hive killed then can find that worker by its marker. Saved once the
            // records (of an older state file without an instance) are restored, so that
            // this save never holds fewer workers than the file it replaces.
            state_dir
                .save_latest(|| registry.snapshot())
                .map_err(|source| LifecycleError::StateDir {
                    path: state_dir.state_file(),
                    source,
                })?;
        }
        manager.stop_unrecorded_runs();
        let writer = registry.start_writer(state_dir, stop.clone());
        let _ = manager.inner.writer.set(writer);
        tokio::spawn(crate::stats::sampler(
            registry.clone(),
            manager.inner.stats.clone(),
            config.stats_interval,
            config.gpu_usage.clone(),
            stop.clone(),
        ));
        tokio::spawn(logs::janitor(
            logs_dir,
            registry,
            config.logs,
            removed,
            stop,
        ));
        Ok(manager)
    }

    /// The worker types as they are now.
    pub(crate) fn worker_types(&self) -> Arc<WorkerTypes> {
        self.inner.context.worker_types()
    }

    /// Applies a reloaded configuration: worker types, the port range of new workers, the
    /// default stop grace. Checked first: on an error nothing changes. Running workers keep
    /// their command, port and the grace of a stop already under way.
    pub fn reconfigure(&self, change: Reconfigure) -> Result<(), LifecycleError> {
        let worker_types = WorkerTypes::new(
            &change.worker_types,
            self.inner.config.llama_server.as_deref(),
            self.inner.config.demo_worker.as_deref(),
        )?;
        *self
            .inner
            .context
            .worker_types
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(worker_types);
        self.inner.ports.set_range(change.ports);
        self.inner.context.default_grace_ms.store(
            u64::try_from(change.stop_grace.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.context.registry
    }

    /// Hands a worker to a new supervisor; returns its record and command channels.
    pub(crate) fn install(
        &self,
        number: u64,
        record: WorkerRecord,
        start: Start,
        port: Option<PortLease>,
        lost: bool,
    ) -> (
        watch::Receiver<WorkerRecord>,
        mpsc::UnboundedSender<Command>,
    ) {
        let worker_types = self.worker_types();
        let template = worker_types.get(&record.worker_type).ok();
        let health_path = template
            .map(|t| t.health_path.clone())
            .unwrap_or_else(|| "/health".to_owned());
        let ready_timeout = template
            .map(|t| t.ready_timeout)
            .unwrap_or(Duration::from_secs(60));
        let (record_tx, record_rx) = watch::channel(record);
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        self.registry().insert(
            number,
            Slot {
                record: record_rx.clone(),
                commands: commands_tx.clone(),
            },
        );
        let supervisor = Supervisor::new(
            number,
            record_tx,
            commands_rx,
            self.inner.context.clone(),
            port,
            health_path,
            ready_timeout,
            lost,
        );
        tokio::spawn(supervisor.run(start));
        (record_rx, commands_tx)
    }

    /// What marks worker `id`'s processes (`RBEE_HIVE_WORKER=<instance>/<id>`).
    pub(crate) fn marker(&self, id: &str) -> String {
        format!("{}/{id}", self.registry().instance())
    }

    /// Every listed worker (ids whose process is not started yet are not listed).
    pub fn list(&self) -> Vec<WorkerRecord> {
        self.registry()
            .records()
            .into_iter()
            .filter(WorkerRecord::is_launched)
            .collect()
    }

    /// One worker.
    pub fn get(&self, id: &str) -> Result<WorkerRecord, LifecycleError> {
        let record = self.registry().slot(id)?.record.borrow().clone();
        match record.is_launched() {
            true => Ok(record),
            false => Err(LifecycleError::NotFound(id.to_owned())),
        }
    }

    /// Every change of every worker's record, and every removal, from now on. A subscriber
    /// that falls more than a few thousand events behind is told how many it missed
    /// (`RecvError::Lagged`); the hive never waits for it.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<WorkerEvent> {
        self.inner.context.events.subscribe()
    }

    /// The last sample of worker `id`'s resource use (its whole process group); `None` until
    /// its first sample, and once it has exited.
    pub fn stats(&self, id: &str) -> Option<WorkerStats> {
        let record = self.get(id).ok()?;
        self.inner
            .stats
            .get(id)
            .filter(|stats| stats.is_of_current_run(&record))
    }

    /// Every listed worker with the last sample of its current run (none before the first
    /// sample, and none once the run's process has exited).
    pub fn list_with_stats(&self) -> Vec<(WorkerRecord, Option<WorkerStats>)> {
        let mut samples = self.inner.stats.all();
        self.list()
            .into_iter()
            .map(|record| {
                let stats = samples
                    .remove(&record.id)
                    .filter(|stats| stats.is_of_current_run(&record));
                (record, stats)
            })
            .collect()
    }

    /// Every worker whose process runs now, with its resource use: the last sample of its
    /// group, or, for one started since the last sample, its leader measured now (so a
    /// worker is reported as soon as it runs, never with made-up figures).
    pub fn running_with_stats(&self) -> Vec<(WorkerRecord, WorkerStats)> {
        self.list_with_stats()
            .into_iter()
            .filter(|(record, _)| {
                record.is_launched() && record.exit.is_none() && !record.restart_pending()
            })
            .filter_map(|(record, sampled)| {
                let stats = sampled.or_else(|| crate::stats::measure_now(&record))?;
                Some((record, stats))
            })
            .collect()
    }

    /// The names of the worker types in effect (built-in and configured), in order.
    pub fn worker_type_names(&self) -> Vec<String> {
        self.worker_types().names()
    }

    /// The last sample of every listed worker's current run, by id.
    pub fn all_stats(&self) -> std::collections::HashMap<String, WorkerStats> {
        self.list_with_stats()
            .into_iter()
            .filter_map(|(record, stats)| Some((record.id, stats?)))
            .collect()
    }

    /// The log file of worker `id`: a listed worker's, or that of a removed worker whose log
    /// retention kept.
    pub fn log_file(&self, id: &str) -> Result<PathBuf, LifecycleError> {
        match self.get(id) {
            Ok(record) => Ok(record.log_path),
            Err(error) => parse_id(id)
                .map(|number| logs::log_path(&self.inner.logs_dir, number))
                .filter(|path| path.is_file())
                .ok_or(error),
        }
    }

    /// Whether worker `id` is gone: removed, or its processes have exited and no restart is
    /// pending (nothing more will be written to its log).
    pub fn is_gone(&self, id: &str) -> bool {
        self.get(id).map_or(true, |record| !record.is_active())
    }

    /// The worker whose process has this pid, if that process is running and still provably
    /// the worker (same start time). Any other pid — 0, 1, the hive's own, one above
    /// `i32::MAX`, an exited worker's, a stranger's — is refused.
    pub fn find_by_pid(&self, pid: u64) -> Result<(WorkerRecord, ProcessInfo), LifecycleError> {
        let refused = || LifecycleError::NotAManagedPid(pid);
        let pid32 = u32::try_from(pid).map_err(|_| refused())?;
        process::signallable(pid32).ok_or_else(refused)?;
        self.list()
            .into_iter()
            .filter(|record| record.pid == pid32)
            .find_map(running_process)
            .ok_or_else(refused)
    }

    /// Whether worker type `name` takes a model file path (`model_is_path`).
    pub fn model_is_path(&self, name: &str) -> Result<bool, LifecycleError> {
        Ok(self.worker_types().get(name)?.model_is_path)
    }

    /// What a self-test or a choice of type needs to know of worker type `name`: its device
    /// kind and where its program is (looked up as a spawn would, without starting it).
    pub fn worker_type_info(&self, name: &str) -> Result<WorkerTypeInfo, LifecycleError> {
        let template = self.worker_types().get(name)?.clone();
        let program = &template.command[0];
        // A program named by a placeholder is known only per worker.
        let found = match program.contains('{') {
            true => None,
            false => Some(crate::worker_types::resolve_program(
                program,
                &template.name,
            )),
        };
        Ok(WorkerTypeInfo {
            name: template.name,
            device: template.device,
            device_check: template.device_check,
            program: program.clone(),
            found,
        })
    }

    /// A port of the worker range that is free now (none is held for it: the answer of a
    /// self-test, not a reservation).
    pub fn free_port(&self) -> Result<u16, LifecycleError> {
        self.inner.ports.lease().map(|lease| lease.port())
    }

    /// Every worker whose process is running and still provably the worker, with what
    /// `/proc` says about it.
    pub fn running_processes(&self) -> Vec<(WorkerRecord, ProcessInfo)> {
        self.list()
            .into_iter()
            .filter_map(running_process)
            .collect()
    }

    /// Stops worker `id`'s processes (SIGTERM, `grace`, SIGKILL) and removes it from the
    /// registry. The stop goes on even if the returned handle is dropped.
    pub fn delete(&self, id: &str, grace: Option<Duration>) -> Result<Stopping, LifecycleError> {
        let slot = self.registry().slot(id)?;
        let initial = slot.record.borrow().clone();
        if !initial.is_launched() {
            return Err(LifecycleError::NotFound(id.to_owned()));
        }
        let grace = grace.unwrap_or(self.inner.context.default_grace());
        let _ = slot.commands.send(Command::Stop {
            grace,
            reason: StopReason::Delete,
        });
        Ok(Stopping {
            already_exited: initial.exit.is_some() && !initial.is_stopping(),
            initial,
            record: slot.record,
            registry: self.registry().clone(),
            grace,
        })
    }

    /// Records a heartbeat; `state` moves a worker between `Ready` and `Busy`.
    pub async fn heartbeat(
        &self,
        id: &str,
        health: WorkerHealth,
        state: Option<HeartbeatState>,
    ) -> Result<WorkerRecord, LifecycleError> {
        let slot = self.registry().slot(id)?;
        let (reply, answer) = oneshot::channel();
        slot.commands
            .send(Command::Heartbeat {
                health,
                state,
                reply,
            })
            .map_err(|_| LifecycleError::NotFound(id.to_owned()))?;
        answer
            .await
            .map_err(|_| LifecycleError::NotFound(id.to_owned()))
    }

    /// Stops every worker in parallel, as a delete would but keeping the records, and waits
    /// until all are gone; returns how many had processes to stop.
    pub async fn stop_all(&self) -> usize {
        self.hold_restarts();
        let slots = self.registry().slots();
        let mut count = 0;
        for slot in &slots {
            let record = slot.record.borrow().clone();
            if record.is_active() {
                count += 1;
                let _ = slot.commands.send(Command::Stop {
                    grace: self.inner.context.default_grace(),
                    reason: StopReason::Shutdown,
                });
            }
        }
        settle(&slots).await;
        count
    }

    /// No failed worker is started again from now on (the hive is shutting down); a restart
    /// that is pending stays so in the state file, for a `stop` shutdown to cancel or the
    /// next hive to make.
    pub fn hold_restarts(&self) {
        self.inner
            .context
            .restarts_held
            .store(true, Ordering::SeqCst);
    }

    /// Waits until no stop is under way (deletes, cancelled spawns, ready timeouts,
    /// processes a dead leader left), leaving every other worker as it is; returns how many
    /// stops it waited for.
    pub async fn settle(&self) -> usize {
        let slots = self.registry().slots();
        let count = slots
            .iter()
            .filter(|slot| slot.record.borrow().is_stopping())
            .count();
        settle(&slots).await;
        count
    }

    /// Cuts every stop short, those under way and those that begin from now on: SIGKILL
    /// without grace (a second signal during shutdown).
    pub fn hurry_all(&self) {
        self.inner.context.hurried.store(true, Ordering::SeqCst);
        for slot in self.registry().slots() {
            let _ = slot.commands.send(Command::Hurry);
        }
    }

    /// Waits until every change so far is in the state file.
    pub async fn flush(&self) -> Result<(), LifecycleError> {
        self.registry().flush().await
    }

    /// How many workers are listed.
    pub fn len(&self) -> usize {
        self.list().len()
    }

    /// Whether no worker is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Waits until none of `slots` has a stop under way (commands are handled in order, so a
/// stop sent before is under way by then).
async fn settle(slots: &[Slot]) {
    let waits: Vec<oneshot::Receiver<()>> = slots
        .iter()
        .filter_map(|slot| {
            let (reply, settled) = oneshot::channel();
            slot.commands.send(Command::WhenSettled(reply)).ok()?;
            Some(settled)
        })
        .collect();
    futures::future::join_all(waits).await;
}

/// A worker being stopped by a delete. The stop goes on if this is dropped.
pub struct Stopping {
    initial: WorkerRecord,
    record: watch::Receiver<WorkerRecord>,
    registry: Registry,
    /// The grace that was asked for.
    pub grace: Duration,
    /// Whether the process had already exited when the delete came.
    pub already_exited: bool,
}

impl Stopping {
    /// The worker's record as it was when the delete came.
    pub fn record(&self) -> WorkerRecord {
        self.initial.clone()
    }

    /// The record now: its `stop` tells how the stop goes.
    pub fn progress(&self) -> WorkerRecord {
        self.record.borrow().clone()
    }

    /// Waits for the next change; false once the worker is out of the registry.
    /// Cancel-safe.
    pub async fn changed(&mut self) -> bool {
        self.record.changed().await.is_ok()
    }

    /// Waits until the whole process group is gone, the worker is out of the registry, and
    /// that is on disk; returns the last record.
    pub async fn finished(&mut self) -> Result<WorkerRecord, LifecycleError> {
        while self.changed().await {}
        self.registry.flush().await?;
        let last = self.progress();
        match last.stop.as_ref().map(|s| s.stuck.clone()) {
            Some(stuck) if !stuck.is_empty() => Err(LifecycleError::ProcessesLeft {
                id: last.id,
                pids: stuck,
            }),
            _ => Ok(last),
        }
    }
}

/// The record and `/proc` view of a worker whose process runs and has its recorded start
/// time; `None` for an exited worker or a pid that is no longer its process.
fn running_process(record: WorkerRecord) -> Option<(WorkerRecord, ProcessInfo)> {
    if record.exit.is_some() {
        return None;
    }
    let alive = procinfo::stat_fields(record.pid)
        .is_some_and(|f| !f.zombie && Some(f.start_ticks) == record.start_ticks);
    let info = procinfo::process_info(record.pid).filter(|_| alive)?;
    Some((record, info))
}

/// A worker type as [`WorkerManager::worker_type_info`] describes it.
#[derive(Debug)]
pub struct WorkerTypeInfo {
    /// The type's name.
    pub name: String,
    /// The kind of device it runs on (names its device `CPU-<n>`, `GPU-<n>`, `METAL-<n>`).
    pub device: DeviceKind,
    /// Whether a spawn must name a device the hive detects.
    pub device_check: bool,
    /// The program of its command, as written.
    pub program: String,
    /// Where the program was found, or why not; `None` when the program is a placeholder.
    pub found: Option<Result<PathBuf, LifecycleError>>,
}
