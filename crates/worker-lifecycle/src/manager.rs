//! [`WorkerManager`]: the face of the crate. Spawns workers, deletes them, records
//! heartbeats, adopts them after a restart, and stops them at shutdown; [`Spawning`] and
//! [`Stopping`] are the handles of a spawn and a delete under way.
//!
//! The manager never writes a record: it reserves ids, checks requests, and hands each
//! worker to its supervisor, then talks to it through commands.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::catalog::{self, Catalog, DeviceKind, TemplateValues, WorkerTemplate, WorkerTypeConfig};
use crate::error::LifecycleError;
use crate::events::WorkerEvent;
use crate::logs::{self, LogRetention};
use crate::ports::{PortAllocator, PortLease};
use crate::process::{self, LaunchSpec, ProcessInfo};
use crate::record::{StopReason, WorkerExit, WorkerHealth, WorkerRecord, WorkerStatus};
use crate::registry::{Registry, Slot, format_id, parse_id};
use crate::state_file::StateDir;
use crate::stats::{GpuUsage, StatsTable, WorkerStats};
use crate::supervisor::{Command, Context, HeartbeatState, Start, Supervisor};

/// How many lines of a worker's output go into a failure message.
const OUTPUT_TAIL_LINES: usize = 20;

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

/// What to spawn.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    /// The model (passed to the worker as `{model}`).
    pub model: String,
    /// The worker type.
    pub worker_type: String,
    /// The device ordinal.
    pub device_ordinal: u32,
    /// The program to run instead of the type's own (a worker binary from the catalog).
    pub program: Option<PathBuf>,
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
    /// hive on it is refused), checks the catalog, reads the state file back and adopts
    /// every recorded worker whose process is provably still running; the processes that a
    /// dead leader left are stopped; the others are kept as `Failed` with reason `lost`.
    /// Nothing is signalled that is not proven to be a worker's. Must be called within a
    /// Tokio runtime.
    pub fn new(config: LifecycleConfig) -> Result<Self, LifecycleError> {
        let catalog = Catalog::new(
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
                    catalog: std::sync::RwLock::new(Arc::new(catalog)),
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
    pub(crate) fn catalog(&self) -> Arc<Catalog> {
        self.inner.context.catalog()
    }

    /// Applies a reloaded configuration: worker types, the port range of new workers, the
    /// default stop grace. Checked first: on an error nothing changes. Running workers keep
    /// their command, port and the grace of a stop already under way.
    pub fn reconfigure(&self, change: Reconfigure) -> Result<(), LifecycleError> {
        let catalog = Catalog::new(
            &change.worker_types,
            self.inner.config.llama_server.as_deref(),
            self.inner.config.demo_worker.as_deref(),
        )?;
        *self
            .inner
            .context
            .catalog
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(catalog);
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
        let catalog = self.catalog();
        let template = catalog.get(&record.worker_type).ok();
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

    /// The names of the worker types in effect (built-in and configured), in order.
    pub fn worker_type_names(&self) -> Vec<String> {
        self.catalog().names()
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
        Ok(self.catalog().get(name)?.model_is_path)
    }

    /// Every worker whose process is running and still provably the worker, with what
    /// `/proc` says about it.
    pub fn running_processes(&self) -> Vec<(WorkerRecord, ProcessInfo)> {
        self.list()
            .into_iter()
            .filter_map(running_process)
            .collect()
    }

    /// Starts a worker and returns the handle of its start. Refused at once, with nothing
    /// started, when the type, the device, the model file, the program or a port is missing
    /// (no id is used for those; a command that cannot be filled in uses one). The id is
    /// saved in the state file while the process starts (it does not wait for the save).
    pub async fn spawn(&self, request: &SpawnRequest) -> Result<Spawning, LifecycleError> {
        let inner = &self.inner;
        let template = self.catalog().get(&request.worker_type)?.clone();
        // The program first: a missing program is the same answer whatever the model.
        let early_program = match (&request.program, template.command[0].contains('{')) {
            (Some(program), _) => Some(program.clone()),
            (None, true) => None,
            (None, false) => Some(catalog::resolve_program(
                &template.command[0],
                &template.name,
            )?),
        };
        if template.model_is_path {
            check_model_file(&request.model)?;
        }
        self.check_device(&template, request.device_ordinal).await?;
        let port = inner.ports.lease()?;
        let number = self.registry().reserve_number();
        let id = format_id(number);
        let device = template.device.device_name(request.device_ordinal);
        let values = TemplateValues {
            worker_id: &id,
            model: &request.model,
            port: port.port(),
            device: &device,
            device_ordinal: request.device_ordinal,
            hive_url: &inner.config.hive_url,
            queen_url: inner.config.queen_url.as_deref().unwrap_or(""),
        };
        let filled: Vec<String> = template
            .command
            .iter()
            .map(|part| template.fill(part, &values))
            .collect::<Result<_, _>>()?;
        let env = template.worker_env(&values, self.marker(&id))?;
        let program = match early_program {
            Some(program) => program,
            None => catalog::resolve_program(&filled[0], &template.name)?,
        };
        let log_path = logs::log_path(&inner.logs_dir, number);
        let args = filled[1..].to_vec();
        let mut command = vec![program.display().to_string()];
        command.extend(args.iter().cloned());
        let record = WorkerRecord {
            id,
            model_id: request.model.clone(),
            worker_type: template.name.clone(),
            device,
            pid: 0,
            port: port.port(),
            pgid: 0,
            start_ticks: None,
            status: WorkerStatus::Starting,
            started_at: Utc::now(),
            url: format!("http://127.0.0.1:{}", port.port()),
            ready_at: None,
            last_heartbeat: None,
            health: None,
            stop: None,
            exit: None,
            restart_count: 0,
            restart_at: None,
            past_runs: Vec::new(),
            run_started_at: None,
            command,
            log_path,
        };
        let spec = LaunchSpec {
            program,
            args,
            env,
            env_remove: template.env_remove.clone(),
        };
        let (record, commands) = self.install(
            number,
            record,
            Start::Launch(Box::new(spec)),
            Some(port),
            false,
        );
        Ok(Spawning {
            record,
            commands,
            registry: self.registry().clone(),
            grace: inner.context.default_grace(),
            ready_timeout: template.ready_timeout,
            settled: false,
        })
    }

    async fn check_device(
        &self,
        template: &WorkerTemplate,
        ordinal: u32,
    ) -> Result<(), LifecycleError> {
        if !template.device_check {
            return Ok(());
        }
        let kind = template.device;
        let ordinals = self.inner.config.devices.ordinals(kind).await;
        if ordinals.contains(&ordinal) {
            return Ok(());
        }
        let available = match ordinals.is_empty() {
            true => format!("this hive detects no {} device", kind.label()),
            false => format!(
                "its {} devices: {}",
                kind.label(),
                ordinals
                    .iter()
                    .map(|o| kind.device_name(*o))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        Err(LifecycleError::DeviceNotFound {
            device: kind.device_name(ordinal),
            worker_type: template.name.clone(),
            available,
        })
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

/// A worker being started. Dropping it before [`ready`](Self::ready) returns (a cancelled
/// spawn job) stops and removes the worker.
pub struct Spawning {
    record: watch::Receiver<WorkerRecord>,
    commands: mpsc::UnboundedSender<Command>,
    registry: Registry,
    grace: Duration,
    /// The worker type's ready timeout.
    pub ready_timeout: Duration,
    settled: bool,
}

impl Spawning {
    /// The worker's record now.
    pub fn record(&self) -> WorkerRecord {
        self.record.borrow().clone()
    }

    /// Waits until the process is started and its record, with its pid, is on disk (a hive
    /// killed from then on adopts it), or could not be. The process does not wait for that
    /// save: it starts meanwhile.
    pub async fn started(&mut self) -> Result<WorkerRecord, LifecycleError> {
        loop {
            let record = self.record.borrow_and_update().clone();
            if record.is_launched() {
                self.registry.flush().await?;
                return Ok(record);
            }
            if record.status.is_terminal() || self.record.changed().await.is_err() {
                self.settled = true;
                return Err(self.failure(&self.record.borrow().clone()));
            }
        }
    }

    /// Waits until the worker is ready and that is on disk (its record), or has failed to
    /// start (why, with the end of its output). When this returns an error the worker's
    /// processes are gone — except for [`LifecycleError::StateNotSaved`] (the ready worker
    /// could not be recorded), after which dropping the handle stops it, as for any spawn
    /// that did not succeed. Cancel-safe: it can be raced against a timer and called again.
    pub async fn ready(&mut self) -> Result<WorkerRecord, LifecycleError> {
        loop {
            let record = self.record.borrow_and_update().clone();
            match record.status {
                WorkerStatus::Ready | WorkerStatus::Busy if !record.is_stopping() => {
                    self.registry.flush().await?;
                    self.settled = true;
                    return Ok(record);
                }
                // Failed, and whatever its group left is stopped too.
                WorkerStatus::Stopped | WorkerStatus::Failed { .. } if !record.is_stopping() => {
                    self.settled = true;
                    return Err(self.failure(&record));
                }
                _ => {}
            }
            if self.record.changed().await.is_err() {
                self.settled = true;
                return Err(self.failure(&self.record.borrow().clone()));
            }
        }
    }

    fn failure(&self, record: &WorkerRecord) -> LifecycleError {
        let id = record.id.clone();
        if !record.is_launched() {
            let reason = match &record.status {
                WorkerStatus::Failed { reason } => reason.clone(),
                _ => "it was removed before it started".to_owned(),
            };
            return LifecycleError::LaunchFailed { id, reason };
        }
        let output = process::log_tail(&record.log_path, OUTPUT_TAIL_LINES);
        let exit = record.exit.clone().unwrap_or_else(WorkerExit::unknown);
        let stop = record.stop.as_ref();
        match stop.map(|s| s.reason) {
            Some(StopReason::ReadyTimeout) => LifecycleError::ReadyTimeout {
                id,
                timeout: self.ready_timeout,
                detail: stop
                    .and_then(|s| s.detail.as_deref())
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default(),
                output,
            },
            Some(StopReason::Delete) => LifecycleError::StoppedWhileStarting {
                id,
                why: "it was deleted",
            },
            Some(StopReason::Shutdown) => LifecycleError::StoppedWhileStarting {
                id,
                why: "the hive is shutting down",
            },
            Some(StopReason::SpawnCancelled) => LifecycleError::StoppedWhileStarting {
                id,
                why: "the spawn was cancelled",
            },
            _ if looks_like_bind_failure(&output) => LifecycleError::PortBindFailed {
                id,
                port: record.port,
                exit,
                output,
            },
            _ => LifecycleError::ExitedBeforeReady { id, exit, output },
        }
    }
}

impl Drop for Spawning {
    fn drop(&mut self) {
        if !self.settled {
            tracing::info!(worker = %self.record.borrow().id, "spawn abandoned before the worker was ready; stopping it");
            let _ = self.commands.send(Command::Stop {
                grace: self.grace,
                reason: StopReason::SpawnCancelled,
            });
        }
    }
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
    let alive = process::stat_fields(record.pid)
        .is_some_and(|f| !f.zombie && Some(f.start_ticks) == record.start_ticks);
    let info = process::process_info(record.pid).filter(|_| alive)?;
    Some((record, info))
}

/// A model that must be a file: a regular file the hive can open that starts with the GGUF
/// magic. Every failure gives the same error (the cause is logged), so that a client cannot
/// learn which paths exist.
fn check_model_file(model: &str) -> Result<(), LifecycleError> {
    use std::io::Read;
    let check = || -> Result<(), String> {
        let metadata = std::fs::metadata(Path::new(model)).map_err(|e| e.to_string())?;
        if !metadata.is_file() {
            return Err("not a regular file".to_owned());
        }
        let mut magic = [0u8; 4];
        std::fs::File::open(model)
            .and_then(|mut file| file.read_exact(&mut magic))
            .map_err(|e| e.to_string())?;
        if &magic != b"GGUF" {
            return Err("no GGUF magic at its start".to_owned());
        }
        Ok(())
    };
    check().map_err(|reason| {
        tracing::info!(model, %reason, "spawn refused: unusable model file");
        LifecycleError::ModelNotFound {
            path: model.to_owned(),
        }
    })
}

fn looks_like_bind_failure(output: &str) -> bool {
    let lower = output.to_ascii_lowercase();
    [
        "address already in use",
        "addrinuse",
        "couldn't bind",
        "could not bind",
        "failed to bind",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}
