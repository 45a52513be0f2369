//! Worker lifecycle: the workers of a hive, their records, and the processes behind them.
//!
//! This crate owns workers and knows nothing of HTTP or jobs. Its whole surface is the
//! [`WorkerManager`], the handles of a spawn ([`Spawning`]) and a delete ([`Stopping`]) under
//! way, and plain values ([`WorkerRecord`] and what it holds).
//!
//! Each worker has one owner: a supervisor task, the only writer of its record (kept in one
//! `watch` channel that everyone else reads), from the reservation of its id to its removal
//! from the registry. It launches the worker as the leader of its own process group, with
//! its output in a log file and a port held for it; proves readiness (the socket that
//! answers must be held by the worker's own group); and stops it: SIGTERM to the group, an
//! event-driven wait for at most the grace, SIGKILL, and the same for whatever the group
//! has left once the leader is gone, escalating at once when asked in any phase.
//!
//! Nothing is acknowledged before it is on disk, and nothing waits in line for the disk
//! that need not: a worker's process starts while its record is being saved, SIGTERM goes
//! while the stop is being saved, and [`Spawning::started`], [`Spawning::ready`] and
//! [`Stopping::finished`] return only once the state file holds what they report (one
//! `fsync` serves every change made meanwhile). Ids are never reused: a worker's log is
//! created before its process starts, and no id that a log names is handed out. After a
//! crash the next hive adopts every worker proven to be running, resumes stops that were
//! under way, stops what a dead leader left behind, and stops the runs it finds by its
//! marker that the state file does not name (their spawn was never acknowledged).
//!
//! # Layout
//! - `record`: [`WorkerRecord`] (PROTOCOL §5), [`WorkerStatus`] and its state machine,
//!   [`StopProgress`], [`WorkerExit`].
//! - `manager`: [`WorkerManager`] and [`Stopping`], the handle of a delete.
//! - `spawn`: [`WorkerManager::spawn`], its checks, and [`Spawning`], the handle of a start.
//! - `adopt`: what a hive finds when it starts: adoption, resumed stops, unrecorded runs.
//! - `events`: [`WorkerEvent`] and [`WorkerTransition`], what the supervisors tell their
//!   followers (telemetry, metrics) about what they did.
//! - `supervisor`: the per-worker task and its commands; `supervisor::stop`, the stop
//!   sequence and the one function from a stop's reason to a final status;
//!   `supervisor::restart`, the restart policy, its decisions and the next run's launch.
//! - `registry`: the slots of the workers, ids, generations and durable acknowledgement.
//! - `state_file`: the registry on disk (atomic writes, lock, corrupt files moved aside).
//! - `process`: process groups, pidfds, signals, survivors and marked runs.
//! - `procinfo`: the one reader of `/proc/<pid>/*` (the `procfs` crate): identity proofs,
//!   markers, held sockets, what `ps` shows, a group's resource use.
//! - `readiness`: health probing until `Ready`.
//! - `sockets`: which sockets listen on a port (`sock_diag`, or `/proc/net/tcp`), and whether
//!   a worker's group holds the one that accepts its connections.
//! - `ports`: ports from a range, held until the process is gone.
//! - `worker_types`: worker types, command templates, program lookup.
//! - `logs`: worker log files and their retention.
//! - `stats`: live resource use of each worker's process group, sampled by one task.
//! - `error`: [`LifecycleError`], what can go wrong.

#![deny(unreachable_pub)]

mod adopt;
mod error;
mod events;
mod logs;
mod manager;
mod ports;
mod process;
mod procinfo;
mod readiness;
mod record;
mod registry;
mod sockets;
mod spawn;
mod state_file;
mod stats;
mod supervisor;
mod worker_types;

pub use error::LifecycleError;
pub use events::{WorkerEvent, WorkerTransition};
pub use logs::LogRetention;
pub use manager::{
    DeviceInventory, LifecycleConfig, Reconfigure, Stopping, WorkerManager, WorkerTypeInfo,
};
pub use procinfo::ProcessInfo;
pub use record::{
    PAST_RUNS_KEPT, PastRun, StopProgress, StopReason, WorkerExit, WorkerHealth, WorkerRecord,
    WorkerStatus,
};
pub use spawn::{SpawnRequest, Spawning};
pub use stats::{GpuSample, GpuState, GpuUsage, WorkerStats};
pub use supervisor::HeartbeatState;
pub use supervisor::restart::{RestartMode, RestartPolicy};
pub use worker_types::{DeviceKind, WorkerTypeConfig};
