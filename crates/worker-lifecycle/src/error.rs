//! Errors of the worker lifecycle. Each variant carries what a person needs to act on it.

use std::path::PathBuf;
use std::time::Duration;

use crate::record::WorkerExit;

/// What can go wrong with a worker operation.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// No worker has this id.
    #[error("worker '{0}' not found")]
    NotFound(String),
    /// A pid that is not the process of a running worker of this hive.
    #[error(
        "PID {0} is not a running worker managed by this hive; only this hive's own worker processes can be shown or stopped (nothing was signalled)"
    )]
    NotAManagedPid(u64),
    /// The worker type is not configured.
    #[error("unknown worker type '{name}'; known types: {known}")]
    UnknownWorkerType {
        /// The type asked for.
        name: String,
        /// The types there are.
        known: String,
    },
    /// A configured worker type is unusable.
    #[error("worker type '{name}' is invalid: {reason}")]
    InvalidWorkerType {
        /// The type.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The worker program is not installed.
    #[error("worker program '{program}' not found ({searched}); {hint}")]
    ProgramNotFound {
        /// The program.
        program: String,
        /// Where the hive looked.
        searched: String,
        /// How to get it.
        hint: String,
    },
    /// The model is not a file the hive can give the worker. One message whatever the cause
    /// (missing, a folder, unreadable, not GGUF), so that a client cannot probe which paths
    /// exist; the cause goes to the daemon's log.
    #[error(
        "model '{path}' cannot be used: it is not a readable GGUF model file; give a model catalog id or the path of a .gguf file the hive can read"
    )]
    ModelNotFound {
        /// The path.
        path: String,
    },
    /// Every port of the range is held or in use.
    #[error(
        "no free worker port in {first}-{last} ({held} held by this hive's workers, the rest in use by other programs)"
    )]
    NoFreePort {
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
        /// How many this hive holds.
        held: usize,
    },
    /// The worker's command could not be filled in.
    #[error("cannot build the command of worker type '{name}': {reason}")]
    Template {
        /// The type.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A file or directory of the state dir could not be created.
    #[error("cannot use {path}: {source}")]
    StateDir {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another hive uses this state dir.
    #[error("state dir {path} is in use by another rbee-hive{}; two hives cannot share one state dir: give this one its own with --state-dir", holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    StateDirLocked {
        /// The state dir.
        path: PathBuf,
        /// The pid written in the lock file, if readable.
        holder: Option<u32>,
    },
    /// The worker's process could not be started (nothing runs; the id stays used).
    #[error("{id} could not be started: {reason}")]
    LaunchFailed {
        /// The worker.
        id: String,
        /// Why.
        reason: String,
    },
    /// The device is not one this hive has for the worker type's kind of device.
    #[error(
        "device {device} does not exist on this hive for worker type '{worker_type}' ({available}); \
         name one of those, or set `device_check = false` in [workers.{worker_type}] if the hive cannot see the device"
    )]
    DeviceNotFound {
        /// The device asked for (`CPU-5`).
        device: String,
        /// The worker type.
        worker_type: String,
        /// The devices of that kind there are.
        available: String,
    },
    /// The state file could not be written, so a change cannot be acknowledged.
    #[error("the hive could not save its state file: {0}")]
    StateNotSaved(String),
    /// The process exited before it answered its health check.
    #[error("{id} exited before it was ready ({exit}); last output:\n{output}")]
    ExitedBeforeReady {
        /// The worker.
        id: String,
        /// How it ended.
        exit: WorkerExit,
        /// The end of its output.
        output: String,
    },
    /// The process exited because it could not listen on its port.
    #[error("{id} could not bind its port {port} ({exit}); last output:\n{output}")]
    PortBindFailed {
        /// The worker.
        id: String,
        /// The port.
        port: u16,
        /// How it ended.
        exit: WorkerExit,
        /// The end of its output.
        output: String,
    },
    /// The process did not become healthy in time and was stopped.
    #[error(
        "{id} was not ready within {timeout:?} and was stopped{detail}; last output:\n{output}"
    )]
    ReadyTimeout {
        /// The worker.
        id: String,
        /// The ready timeout.
        timeout: Duration,
        /// Who answered its health checks instead (` (port … is held by pid …)`), or empty.
        detail: String,
        /// The end of its output.
        output: String,
    },
    /// The worker was deleted (or the hive shut down) while it was starting.
    #[error("{id} was stopped while it was starting ({why})")]
    StoppedWhileStarting {
        /// The worker.
        id: String,
        /// Who stopped it.
        why: &'static str,
    },
    /// The worker's processes could not all be ended.
    #[error("{id}: processes of its group are still running after SIGKILL: {pids:?}")]
    ProcessesLeft {
        /// The worker.
        id: String,
        /// The survivors.
        pids: Vec<u32>,
    },
}
