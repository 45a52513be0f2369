//! Worker lifecycle: the workers of a hive, their records, and the processes behind them.
//!
//! This crate owns workers and knows nothing of HTTP or jobs. A worker is started from a
//! catalog template as the leader of its own process group, with its output in a log file
//! and a port held for it; a supervisor task owns the process until it is gone, and every
//! status change goes through the worker's slot in the registry, waking whoever waits.
//! Stopping is SIGTERM to the group, an event-driven wait for at most the grace, SIGKILL,
//! reaping, and a check that nothing of the group is left.
//!
//! # Layout
//! - [`record`]: [`WorkerRecord`] (PROTOCOL §5), [`WorkerStatus`] and its state machine.
//! - [`registry`]: [`Registry`], the cheap-`Clone` handle to the workers; ids.
//! - [`ports`]: [`PortAllocator`], ports from a range, held until the process is gone.
//! - [`catalog`]: worker types, command templates, program lookup.
//! - [`process`]: process groups, pidfds, signals, `/proc` checks.
//! - [`supervisor`]: the per-worker task from spawn to reaping.
//! - [`readiness`]: health probing until `Ready`.
//! - [`state_file`]: the registry on disk (atomic writes, lock, corrupt files moved aside).
//! - [`manager`]: [`WorkerManager`]: spawn, delete, heartbeat, stop all.
//! - [`error`]: [`LifecycleError`], what can go wrong.

pub mod catalog;
pub mod error;
pub mod manager;
pub mod ports;
pub mod process;
pub mod readiness;
pub mod record;
pub mod registry;
pub mod state_file;
pub mod supervisor;

pub use catalog::{Catalog, DeviceKind, WorkerTypeConfig};
pub use error::LifecycleError;
pub use manager::{
    HeartbeatState, LifecycleConfig, SpawnRequest, Spawning, Stopping, WorkerManager,
};
pub use ports::PortAllocator;
pub use record::{WorkerExit, WorkerHealth, WorkerRecord, WorkerStatus};
pub use registry::Registry;
pub use supervisor::{ExitOutcome, ProcessPhase, ProcessView, StopReason};

/// The narration actor of the worker lifecycle (`worker-lc`).
pub const NARRATE: narration::NarrationFactory = narration::NarrationFactory::new("worker-lc");
