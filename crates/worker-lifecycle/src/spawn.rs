//! Starting a worker: the checks made before any id is used (type, device, model file,
//! program, port), the command filled in, the record handed to a new supervisor, and
//! [`Spawning`], the handle that waits for the start and the readiness and says why a worker
//! did not get there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch};

use crate::error::LifecycleError;
use crate::logs;
use crate::manager::WorkerManager;
use crate::process::{self, LaunchSpec};
use crate::record::{StopReason, WorkerExit, WorkerRecord, WorkerStatus};
use crate::registry::{Registry, format_id};
use crate::supervisor::{Command, Start};
use crate::worker_types::{self, TemplateValues, WorkerTemplate};

/// How many lines of a worker's output go into a failure message.
const OUTPUT_TAIL_LINES: usize = 20;

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

impl WorkerManager {
    /// Starts a worker and returns the handle of its start. Refused at once, with nothing
    /// started, when the type, the device, the model file, the program or a port is missing
    /// (no id is used for those; a command that cannot be filled in uses one). The id is
    /// saved in the state file while the process starts (it does not wait for the save).
    pub async fn spawn(&self, request: &SpawnRequest) -> Result<Spawning, LifecycleError> {
        let inner = &self.inner;
        let template = self.worker_types().get(&request.worker_type)?.clone();
        // The program first: a missing program is the same answer whatever the model.
        let early_program = match (&request.program, template.command[0].contains('{')) {
            (Some(program), _) => Some(program.clone()),
            (None, true) => None,
            (None, false) => Some(worker_types::resolve_program(
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
            None => worker_types::resolve_program(&filled[0], &template.name)?,
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
