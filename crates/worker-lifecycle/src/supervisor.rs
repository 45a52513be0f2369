//! The supervisor: one task per worker that owns its process from spawn to reaping.
//!
//! It waits for the leader to exit (through its pidfd) and takes stop requests. A stop sends
//! SIGTERM to the process group and arms the grace deadline; past the deadline the group gets
//! SIGKILL. Once the leader has exited — on its own or stopped — the rest of the group gets
//! the same treatment (SIGTERM, the remaining grace, SIGKILL), then the leader is reaped, the
//! port is given back, the record gets its exit and final status, and a deleted worker
//! leaves the registry. Because one task does all of this, two deletes, a delete during
//! start-up, and an exit during a delete all end in the same single sequence.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::ports::PortLease;
use crate::process::{self, SIGKILL_WAIT, WorkerProcess};
use crate::record::{WorkerExit, WorkerStatus, signal_name};
use crate::registry::{Registry, WorkerSlot};

/// A request to a supervisor.
#[derive(Debug, Clone)]
pub(crate) enum Control {
    /// Stop the worker's process tree.
    Stop {
        /// Time between SIGTERM and SIGKILL.
        grace: Duration,
        /// Who asks.
        reason: StopReason,
        /// Whether to remove the worker from the registry once it is gone.
        remove: bool,
    },
}

/// Why the hive stopped a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A `worker_delete`.
    Delete,
    /// The hive is shutting down.
    Shutdown,
    /// It did not become ready in time.
    ReadyTimeout,
    /// The job spawning it was cancelled.
    SpawnCancelled,
}

/// Where the worker's process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessPhase {
    /// Running; no stop asked.
    Running,
    /// A stop is under way.
    Stopping,
    /// The whole group is gone and the leader reaped.
    Exited,
}

/// How a worker's processes ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitOutcome {
    /// How the leader ended.
    pub exit: WorkerExit,
    /// Group members still alive after SIGKILL (empty unless something is badly wrong).
    pub leftover: Vec<u32>,
}

/// A worker process's progress, published to whoever waits on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessView {
    /// The phase.
    pub phase: ProcessPhase,
    /// Why a stop was asked, if one was.
    pub stop_reason: Option<StopReason>,
    /// When the first stop was asked.
    pub stop_requested_at: Option<Instant>,
    /// The grace that applies.
    pub grace: Option<Duration>,
    /// Whether SIGTERM went to the group.
    pub sigterm_sent: bool,
    /// Whether SIGKILL was needed and sent.
    pub sigkill_sent: bool,
    /// How it ended, once it has.
    pub outcome: Option<ExitOutcome>,
}

impl ProcessView {
    pub(crate) fn running() -> Self {
        Self {
            phase: ProcessPhase::Running,
            stop_reason: None,
            stop_requested_at: None,
            grace: None,
            sigterm_sent: false,
            sigkill_sent: false,
            outcome: None,
        }
    }
}

/// Owns one worker's process until it is gone.
pub(crate) struct Supervisor {
    pub(crate) slot: Arc<WorkerSlot>,
    pub(crate) process: WorkerProcess,
    pub(crate) port: PortLease,
    pub(crate) registry: Registry,
    pub(crate) commands: mpsc::UnboundedReceiver<Control>,
    pub(crate) default_grace: Duration,
    pub(crate) ready_timeout: Duration,
}

impl Supervisor {
    pub(crate) async fn run(mut self) {
        let mut deadline: Option<Instant> = None;
        let mut remove = false;
        loop {
            let kill_armed = deadline.is_some() && !self.slot.process.borrow().sigkill_sent;
            tokio::select! {
                biased;
                _ = self.process.exited() => break,
                Some(control) = self.commands.recv() => self.on_control(control, &mut deadline, &mut remove),
                _ = sleep_until_some(deadline), if kill_armed => self.kill_group(),
            }
        }
        // Reap first: then an empty group answers ESRCH at once, without scanning /proc.
        let exit = self.process.reap();
        let pid = self.process.pid();
        let leftover = self.finish_group(deadline).await;
        if !leftover.is_empty() {
            tracing::error!(worker = %self.slot.id(), "processes of group {pid} survived SIGKILL: {leftover:?}");
        }
        let Supervisor {
            slot,
            port,
            registry,
            mut commands,
            ready_timeout,
            ..
        } = self;
        drop(port);
        let stop_reason = slot.process.borrow().stop_reason;
        slot.update(|record| record.exit = Some(exit.clone()));
        slot.set_status(final_status(stop_reason, &exit, ready_timeout));
        remove |= drain_removals(&mut commands);
        if remove {
            registry.remove(slot.number);
        }
        slot.process.send_modify(|view| {
            view.phase = ProcessPhase::Exited;
            view.outcome = Some(ExitOutcome { exit, leftover });
        });
        // A delete that arrived while the view was being published still removes the worker.
        if drain_removals(&mut commands) {
            registry.remove(slot.number);
        }
    }

    fn on_control(&mut self, control: Control, deadline: &mut Option<Instant>, remove: &mut bool) {
        let Control::Stop {
            grace,
            reason,
            remove: remove_after,
        } = control;
        *remove |= remove_after;
        let now = Instant::now();
        let asked = now + grace;
        if deadline.is_some_and(|d| d <= asked) {
            return;
        }
        let first = deadline.is_none();
        *deadline = Some(asked);
        let sent = first && self.process.signal_group(Signal::SIGTERM);
        self.slot.process.send_modify(|view| {
            if first {
                view.phase = ProcessPhase::Stopping;
                view.stop_reason = Some(reason);
                view.stop_requested_at = Some(now);
                view.sigterm_sent = sent;
            }
            view.grace = Some(grace);
        });
    }

    fn kill_group(&mut self) {
        let sent = self.process.signal_group(Signal::SIGKILL);
        self.slot
            .process
            .send_modify(|view| view.sigkill_sent |= sent);
        if sent {
            tracing::info!(worker = %self.slot.id(), "grace over: sent SIGKILL to process group {}", self.process.pid());
        }
    }

    /// After the leader exited and was reaped: ends the rest of its group (SIGTERM, the
    /// remaining grace, SIGKILL) and returns the processes that are still there after it.
    ///
    /// Members that outlive their leader keep the group id in use, so it cannot name a new
    /// group while they live; each is still signalled through its own pidfd after checking
    /// that it is a member.
    async fn finish_group(&mut self, deadline: Option<Instant>) -> Vec<u32> {
        let pgid = self.process.pid();
        if !process::group_has_members(pgid) {
            return Vec::new();
        }
        let others = process::group_members(pgid);
        if others.is_empty() {
            return Vec::new();
        }
        let (sigterm_sent, sigkill_sent) = {
            let view = self.slot.process.borrow();
            (view.sigterm_sent, view.sigkill_sent)
        };
        let remaining = if sigkill_sent {
            others
        } else {
            if !sigterm_sent {
                let sent = process::signal_members(pgid, Signal::SIGTERM) > 0;
                self.slot
                    .process
                    .send_modify(|view| view.sigterm_sent |= sent);
            }
            let deadline = deadline.unwrap_or_else(|| Instant::now() + self.default_grace);
            process::wait_all_gone(&others, pgid, deadline).await
        };
        if remaining.is_empty() {
            return Vec::new();
        }
        let sent = process::signal_members(pgid, Signal::SIGKILL) > 0;
        self.slot
            .process
            .send_modify(|view| view.sigkill_sent |= sent);
        let stuck = process::wait_all_gone(&remaining, pgid, Instant::now() + SIGKILL_WAIT).await;
        if !stuck.is_empty() {
            tracing::error!(worker = %self.slot.id(), "not gone {SIGKILL_WAIT:?} after SIGKILL: {stuck:?}");
        }
        stuck
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn drain_removals(commands: &mut mpsc::UnboundedReceiver<Control>) -> bool {
    let mut remove = false;
    while let Ok(Control::Stop { remove: r, .. }) = commands.try_recv() {
        remove |= r;
    }
    remove
}

fn final_status(
    stop_reason: Option<StopReason>,
    exit: &WorkerExit,
    ready_timeout: Duration,
) -> WorkerStatus {
    match stop_reason {
        Some(StopReason::Delete | StopReason::Shutdown) => WorkerStatus::Stopped,
        Some(StopReason::ReadyTimeout) => WorkerStatus::Failed {
            reason: format!("not ready within {ready_timeout:?}; stopped by the hive ({exit})"),
        },
        Some(StopReason::SpawnCancelled) => WorkerStatus::Failed {
            reason: format!("the spawn was cancelled; stopped by the hive ({exit})"),
        },
        None if exit.success() => WorkerStatus::Stopped,
        None => WorkerStatus::Failed {
            reason: match (exit.code, exit.signal) {
                (Some(code), _) => format!("exited with code {code}"),
                (None, Some(signal)) => {
                    format!("killed by signal {signal} ({})", signal_name(signal))
                }
                (None, None) => {
                    "exited (status unknown: adopted after a hive restart, so not the hive's child)"
                        .to_owned()
                }
            },
        },
    }
}
