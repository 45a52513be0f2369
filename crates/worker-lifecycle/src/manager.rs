//! [`WorkerManager`]: the face of the crate. Spawns workers, deletes them, records
//! heartbeats, and stops them all at shutdown.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch};

use crate::catalog::{self, Catalog, TemplateValues, WorkerTypeConfig};
use crate::error::LifecycleError;
use crate::ports::PortAllocator;
use crate::process::{self, LaunchSpec};
use crate::readiness;
use crate::record::{WorkerExit, WorkerHealth, WorkerRecord, WorkerStatus};
use crate::registry::{Registry, WorkerSlot, format_id, parse_id};
use crate::state_file::{PersistedState, StateDir};
use crate::supervisor::{ExitOutcome, ProcessPhase, ProcessView, StopReason, Supervisor};

/// How many lines of a worker's output go into a failure message.
pub const OUTPUT_TAIL_LINES: usize = 20;

/// Settings of the worker lifecycle.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// Worker logs live in `<state_dir>/workers/`.
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
}

/// What a heartbeat says about the worker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatState {
    /// Idle.
    Ready,
    /// Serving.
    Busy,
}

/// The workers of one hive and the processes behind them. A cheap `Clone` handle.
#[derive(Clone)]
pub struct WorkerManager {
    inner: Arc<Inner>,
}

struct Inner {
    state_dir: Arc<StateDir>,
    registry: Registry,
    ports: PortAllocator,
    catalog: Catalog,
    config: LifecycleConfig,
    logs_dir: PathBuf,
    http: reqwest::Client,
}

impl WorkerManager {
    /// A manager for the workers recorded in the state dir: locks the state dir (a second
    /// hive on it is refused), checks the catalog, reads the state file back and adopts
    /// every recorded worker that is provably still running; the others are kept as
    /// `Failed` with reason `lost`, and nothing is signalled. From then on every change is
    /// saved. Must be called within a Tokio runtime.
    pub fn new(config: LifecycleConfig) -> Result<Self, LifecycleError> {
        let catalog = Catalog::new(&config.worker_types, config.llama_server.as_deref())?;
        let state_dir = Arc::new(StateDir::lock(&config.state_dir)?);
        let logs_dir = config.state_dir.join("workers");
        std::fs::create_dir_all(&logs_dir).map_err(|source| LifecycleError::StateDir {
            path: logs_dir.clone(),
            source,
        })?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| LifecycleError::StateDir {
                path: logs_dir.clone(),
                source: std::io::Error::other(e),
            })?;
        let manager = Self {
            inner: Arc::new(Inner {
                state_dir,
                registry: Registry::new(),
                ports: PortAllocator::new(config.ports.clone()),
                catalog,
                config,
                logs_dir,
                http,
            }),
        };
        if let Some(saved) = manager.inner.state_dir.load() {
            manager.restore(saved);
        }
        manager.flush();
        tokio::spawn(persist(
            manager.inner.registry.clone(),
            manager.inner.state_dir.clone(),
        ));
        Ok(manager)
    }

    fn restore(&self, saved: PersistedState) {
        let inner = &self.inner;
        inner.registry.raise_last_id(saved.last_id);
        for mut record in saved.workers {
            let Some(number) = parse_id(&record.id) else {
                tracing::warn!("state file: skipping a record with id {:?}", record.id);
                continue;
            };
            inner.registry.raise_last_id(number);
            if record.status.is_terminal() {
                self.insert_ended(number, record);
                continue;
            }
            let pgid = if record.pgid == 0 {
                record.pid
            } else {
                record.pgid
            };
            let Some(process) = process::adopt(record.pid, pgid, record.start_ticks) else {
                tracing::warn!(
                    "{} (pid {}) is not running any more, or its pid now belongs to another process: \
                     reported lost, nothing signalled",
                    record.id,
                    record.pid
                );
                record.status = WorkerStatus::Failed {
                    reason: "lost".to_owned(),
                };
                self.insert_ended(number, record);
                continue;
            };
            let Some(port) = inner.ports.lease_exact(record.port) else {
                tracing::error!(
                    "{}: port {} is recorded twice; not adopting it",
                    record.id,
                    record.port
                );
                record.status = WorkerStatus::Failed {
                    reason: "lost".to_owned(),
                };
                self.insert_ended(number, record);
                continue;
            };
            let template = inner.catalog.get(&record.worker_type).ok();
            let ready_timeout = template
                .map(|t| t.ready_timeout)
                .unwrap_or(Duration::from_secs(60));
            let health_url = format!(
                "{}{}",
                record.url,
                template
                    .map(|t| t.health_path.as_str())
                    .unwrap_or("/health")
            );
            tracing::info!(
                "adopted {} (pid {}, port {}, {})",
                record.id,
                record.pid,
                record.port,
                record.status.label()
            );
            let starting = record.status == WorkerStatus::Starting;
            let slot = self.supervise(number, record, process, port, ready_timeout);
            if starting {
                tokio::spawn(readiness::await_healthy(
                    slot,
                    inner.http.clone(),
                    health_url,
                    ready_timeout,
                    inner.config.stop_grace,
                ));
            } else {
                tokio::spawn(readiness::check_adopted(
                    slot,
                    inner.http.clone(),
                    health_url,
                ));
            }
        }
    }

    /// Registers a worker whose process runs and starts the supervisor that owns it.
    fn supervise(
        &self,
        number: u64,
        record: WorkerRecord,
        process: process::WorkerProcess,
        port: crate::ports::PortLease,
        ready_timeout: Duration,
    ) -> Arc<WorkerSlot> {
        let inner = &self.inner;
        let (control, commands) = mpsc::unbounded_channel();
        let slot = Arc::new(WorkerSlot::new(
            &inner.registry,
            number,
            record,
            control,
            ProcessView::running(),
        ));
        inner.registry.insert(slot.clone());
        tokio::spawn(
            Supervisor {
                slot: slot.clone(),
                process,
                port,
                registry: inner.registry.clone(),
                commands,
                default_grace: inner.config.stop_grace,
                ready_timeout,
            }
            .run(),
        );
        slot
    }

    /// Registers a worker whose process is gone (no supervisor; a delete just removes it).
    fn insert_ended(&self, number: u64, record: WorkerRecord) {
        let exit = record.exit.clone().unwrap_or(WorkerExit {
            code: None,
            signal: None,
            at: Utc::now(),
        });
        let view = ProcessView {
            phase: ProcessPhase::Exited,
            outcome: Some(ExitOutcome {
                exit,
                leftover: Vec::new(),
            }),
            ..ProcessView::running()
        };
        let (control, _) = mpsc::unbounded_channel();
        self.inner.registry.insert(Arc::new(WorkerSlot::new(
            &self.inner.registry,
            number,
            record,
            control,
            view,
        )));
    }

    /// Writes the state file now (it is also written after every change).
    pub fn flush(&self) {
        if let Err(error) = self
            .inner
            .state_dir
            .save_latest(|| self.inner.registry.snapshot())
        {
            tracing::error!(
                "cannot write the state file {}: {error}",
                self.inner.state_dir.state_file().display()
            );
        }
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Every registered worker.
    pub fn list(&self) -> Vec<WorkerRecord> {
        self.inner.registry.list()
    }

    /// One worker.
    pub fn get(&self, id: &str) -> Result<WorkerRecord, LifecycleError> {
        self.inner.registry.get(id)
    }

    /// The worker whose process has this pid, if that process is running and still provably
    /// the worker (same start time). Any other pid — 0, 1, the hive's own, one above
    /// `i32::MAX`, an exited worker's, a stranger's — is refused.
    pub fn find_by_pid(
        &self,
        pid: u64,
    ) -> Result<(WorkerRecord, process::ProcessInfo), LifecycleError> {
        let refused = || LifecycleError::NotAManagedPid(pid);
        let pid32 = u32::try_from(pid).map_err(|_| refused())?;
        process::signallable(pid32).ok_or_else(refused)?;
        self.inner
            .registry
            .slots()
            .iter()
            .find(|slot| slot.record.borrow().pid == pid32)
            .and_then(|slot| running_process(slot))
            .ok_or_else(refused)
    }

    /// Every worker whose process is running and still provably the worker, with what
    /// `/proc` says about it (one pass over the registry).
    pub fn running_processes(&self) -> Vec<(WorkerRecord, process::ProcessInfo)> {
        self.inner
            .registry
            .slots()
            .iter()
            .filter_map(|slot| running_process(slot))
            .collect()
    }

    /// Starts a worker process and registers it as `Starting`; [`Spawning::ready`] waits
    /// until it is healthy. Nothing is started, and no id is used, when the type, the
    /// program or a port is missing. Must be called within a Tokio runtime.
    pub fn spawn(&self, request: &SpawnRequest) -> Result<Spawning, LifecycleError> {
        let inner = &self.inner;
        let template = inner.catalog.get(&request.worker_type)?.clone();
        if template.model_is_path {
            check_model_file(&request.model)?;
        }
        let early_program = match template.command[0].contains('{') {
            true => None,
            false => Some(catalog::resolve_program(&template.command[0])?),
        };
        let port = inner.ports.lease()?;
        let number = inner.registry.next_number();
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
        let fill = |part: &String| {
            catalog::fill(part, &values).map_err(|reason| LifecycleError::Template {
                name: template.name.clone(),
                reason,
            })
        };
        let filled: Vec<String> = template
            .command
            .iter()
            .map(fill)
            .collect::<Result<_, _>>()?;
        let env: Vec<(String, String)> = template
            .env
            .iter()
            .map(|(k, v)| Ok((k.clone(), fill(v)?)))
            .collect::<Result<_, LifecycleError>>()?;
        let program = match early_program {
            Some(program) => program,
            None => catalog::resolve_program(&filled[0])?,
        };
        let log_path = inner.logs_dir.join(format!("{id}.log"));
        let log = std::fs::File::create(&log_path).map_err(|source| LifecycleError::StateDir {
            path: log_path.clone(),
            source,
        })?;
        let args = &filled[1..];
        let process = process::launch(LaunchSpec {
            program: &program,
            args,
            env: &env,
            env_remove: &template.env_remove,
            log,
        })
        .map_err(|source| LifecycleError::Spawn {
            program: program.clone(),
            source,
        })?;
        let mut command = vec![program.display().to_string()];
        command.extend(args.iter().cloned());
        let url = format!("http://127.0.0.1:{}", port.port());
        let record = WorkerRecord {
            id: id.clone(),
            model_id: request.model.clone(),
            worker_type: template.name.clone(),
            device,
            pid: process.pid(),
            port: port.port(),
            pgid: process.pid(),
            start_ticks: process::stat_fields(process.pid()).map(|f| f.start_ticks),
            status: WorkerStatus::Starting,
            started_at: Utc::now(),
            url: url.clone(),
            ready_at: None,
            last_heartbeat: None,
            health: None,
            exit: None,
            command,
            log_path,
        };
        let slot = self.supervise(number, record, process, port, template.ready_timeout);
        tokio::spawn(readiness::await_healthy(
            slot.clone(),
            inner.http.clone(),
            format!("{url}{}", template.health_path),
            template.ready_timeout,
            inner.config.stop_grace,
        ));
        Ok(Spawning {
            slot,
            grace: inner.config.stop_grace,
            ready_timeout: template.ready_timeout,
            settled: false,
        })
    }

    /// Stops worker `id`'s process tree (SIGTERM, `grace`, SIGKILL) and removes it from the
    /// registry. The stop goes on even if the returned handle is dropped.
    pub fn delete(&self, id: &str, grace: Option<Duration>) -> Result<Stopping, LifecycleError> {
        let slot = self.inner.registry.slot(id)?;
        let grace = grace.unwrap_or(self.inner.config.stop_grace);
        let view = slot.watch_process();
        let already_exited = view.borrow().phase == ProcessPhase::Exited;
        slot.request_stop(grace, StopReason::Delete, true);
        // The supervisor may have finished just before the request: then remove here.
        if view.borrow().phase == ProcessPhase::Exited {
            self.inner.registry.remove(slot.number);
        }
        Ok(Stopping {
            slot,
            registry: self.inner.registry.clone(),
            view,
            grace,
            already_exited,
        })
    }

    /// Records a heartbeat; `state` moves a worker between `Ready` and `Busy`.
    pub fn heartbeat(
        &self,
        id: &str,
        health: WorkerHealth,
        state: Option<HeartbeatState>,
    ) -> Result<WorkerRecord, LifecycleError> {
        let slot = self.inner.registry.slot(id)?;
        slot.update(|record| {
            record.last_heartbeat = Some(Utc::now());
            record.health = Some(health);
        });
        let current = slot.record().status;
        match (state, current) {
            (Some(HeartbeatState::Busy), WorkerStatus::Ready) => {
                slot.set_status(WorkerStatus::Busy);
            }
            (Some(HeartbeatState::Ready), WorkerStatus::Busy) => {
                slot.set_status(WorkerStatus::Ready);
            }
            _ => {}
        }
        Ok(slot.record())
    }

    /// Cuts every stop short: SIGKILL now, without waiting for the rest of the grace (a
    /// second SIGTERM during shutdown).
    pub fn kill_all_now(&self) {
        for slot in self.inner.registry.slots() {
            if slot.watch_process().borrow().phase != ProcessPhase::Exited {
                slot.request_stop(Duration::ZERO, StopReason::Shutdown, true);
            }
        }
    }

    /// Stops every worker in parallel, as a delete would, and waits until all are gone;
    /// returns how many were stopped.
    pub async fn stop_all(&self) -> usize {
        let grace = self.inner.config.stop_grace;
        let mut stopping = Vec::new();
        for slot in self.inner.registry.slots() {
            let view = slot.watch_process();
            if view.borrow().phase == ProcessPhase::Exited {
                continue;
            }
            slot.request_stop(grace, StopReason::Shutdown, true);
            stopping.push(Stopping {
                slot,
                registry: self.inner.registry.clone(),
                view,
                grace,
                already_exited: false,
            });
        }
        let count = stopping.len();
        futures::future::join_all(
            stopping
                .into_iter()
                .map(|mut s| async move { s.finished().await }),
        )
        .await;
        count
    }
}

/// A worker that was started and is not known to be ready yet. Dropping it before
/// [`ready`](Self::ready) returns (a cancelled spawn job) stops and removes the worker.
pub struct Spawning {
    slot: Arc<WorkerSlot>,
    grace: Duration,
    /// The worker type's ready timeout.
    pub ready_timeout: Duration,
    settled: bool,
}

impl Spawning {
    /// The worker's record now.
    pub fn record(&self) -> WorkerRecord {
        self.slot.record()
    }

    /// Waits until the worker is ready (its record) or has failed to start (why, with the
    /// end of its output). When this returns an error the worker's processes are gone.
    /// Cancel-safe: it can be raced against a timer and called again.
    pub async fn ready(&mut self) -> Result<WorkerRecord, LifecycleError> {
        let mut records = self.slot.watch_record();
        loop {
            let record = records.borrow_and_update().clone();
            match record.status {
                WorkerStatus::Ready | WorkerStatus::Busy => {
                    self.settled = true;
                    return Ok(record);
                }
                WorkerStatus::Stopped | WorkerStatus::Failed { .. } => {
                    self.settled = true;
                    return Err(self.failure(&record));
                }
                WorkerStatus::Starting => {}
            }
            if records.changed().await.is_err() {
                self.settled = true;
                return Err(LifecycleError::NotFound(record.id));
            }
        }
    }

    fn failure(&self, record: &WorkerRecord) -> LifecycleError {
        let view = self.slot.process.borrow().clone();
        let output = process::log_tail(&record.log_path, OUTPUT_TAIL_LINES);
        let exit = record.exit.clone().unwrap_or(WorkerExit {
            code: None,
            signal: None,
            at: Utc::now(),
        });
        let id = record.id.clone();
        match view.stop_reason {
            Some(StopReason::ReadyTimeout) => LifecycleError::ReadyTimeout {
                id,
                timeout: self.ready_timeout,
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
            None if looks_like_bind_failure(&output) => LifecycleError::PortBindFailed {
                id,
                port: record.port,
                exit,
                output,
            },
            None => LifecycleError::ExitedBeforeReady { id, exit, output },
        }
    }
}

impl Drop for Spawning {
    fn drop(&mut self) {
        if !self.settled {
            tracing::info!(worker = %self.slot.id(), "spawn abandoned before the worker was ready; stopping it");
            self.slot
                .request_stop(self.grace, StopReason::SpawnCancelled, true);
        }
    }
}

/// The record and `/proc` view of a worker whose process runs and has its recorded start
/// time; `None` for an exited worker or a pid that is no longer its process.
fn running_process(slot: &WorkerSlot) -> Option<(WorkerRecord, process::ProcessInfo)> {
    if slot.watch_process().borrow().phase == ProcessPhase::Exited {
        return None;
    }
    let record = slot.record();
    let alive = process::stat_fields(record.pid)
        .is_some_and(|f| !f.zombie && Some(f.start_ticks) == record.start_ticks);
    let info = process::process_info(record.pid).filter(|_| alive)?;
    Some((record, info))
}

/// A model that must be a file: it exists, is a regular file, and can be opened.
fn check_model_file(model: &str) -> Result<(), LifecycleError> {
    let refuse = |reason: String| LifecycleError::ModelNotFound {
        path: model.to_owned(),
        reason,
    };
    let metadata = std::fs::metadata(model).map_err(|e| refuse(e.to_string()))?;
    if !metadata.is_file() {
        return Err(refuse("it is not a regular file".to_owned()));
    }
    std::fs::File::open(model)
        .map(drop)
        .map_err(|e| refuse(e.to_string()))
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

/// A worker being stopped by a delete. The stop goes on if this is dropped.
pub struct Stopping {
    slot: Arc<WorkerSlot>,
    registry: Registry,
    view: watch::Receiver<ProcessView>,
    /// The grace that was asked for.
    pub grace: Duration,
    /// Whether the process had already exited when the delete came.
    pub already_exited: bool,
}

impl Stopping {
    /// The worker's record as it was when the stop began.
    pub fn record(&self) -> WorkerRecord {
        self.slot.record()
    }

    /// The process's progress now.
    pub fn view(&self) -> ProcessView {
        self.view.borrow().clone()
    }

    /// Waits for the next change of progress. Cancel-safe.
    pub async fn changed(&mut self) {
        if self.view.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Waits until the whole process group is gone and the worker is out of the registry.
    pub async fn finished(&mut self) -> Result<ExitOutcome, LifecycleError> {
        let outcome = loop {
            if let Some(outcome) = self.view.borrow_and_update().outcome.clone() {
                break outcome;
            }
            self.changed().await;
        };
        self.registry.remove(self.slot.number);
        if outcome.leftover.is_empty() {
            Ok(outcome)
        } else {
            Err(LifecycleError::ProcessesLeft {
                id: self.slot.id(),
                pids: outcome.leftover,
            })
        }
    }
}

/// Saves the state file after every change, coalescing bursts: while one save runs, further
/// changes wait and are written together by the next.
async fn persist(registry: Registry, state_dir: Arc<StateDir>) {
    let mut changes = registry.watch_changes();
    while changes.changed().await.is_ok() {
        let dir = state_dir.clone();
        let registry = registry.clone();
        match tokio::task::spawn_blocking(move || dir.save_latest(|| registry.snapshot())).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(
                    "cannot write the state file {}: {error}",
                    state_dir.state_file().display()
                )
            }
            Err(error) => tracing::error!("state file writer failed: {error}"),
        }
    }
}
