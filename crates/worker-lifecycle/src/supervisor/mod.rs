//! The supervisor: one task per worker, the only writer of its record, from the reservation
//! of its id to its removal from the registry.
//!
//! It launches the process while the reservation is being saved, probes readiness (a worker
//! is `Ready` only once its record with its pid is on disk as well), takes commands (stop,
//! hurry, heartbeat, "tell me when no stop is under way"), and watches the leader's exit
//! through its pidfd. A stop sends SIGTERM to the group and records the stop in one change,
//! saved while the worker exits (a hive killed once it is saved resumes the stop), and
//! SIGKILL goes when the grace is over. Once the leader has exited — on its own or stopped — the rest of its
//! group is stopped the same way, each member through its own pidfd, and the supervisor
//! keeps reading commands all the while: a shorter grace or a hurry escalates at once, in
//! every phase. When no process of the group is left, the port is given back, the record
//! gets its exit and final status, and a deleted worker leaves the registry — here, and
//! nowhere else. A worker whose type restarts on failure is started again from here after
//! its backoff (`restart`), with the same id, port and log; the wait is on disk first, so a
//! hive killed during it restarts the worker when it starts again.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::events::{WorkerEvent, WorkerTransition, elapsed};
use crate::logs;
use crate::ports::PortLease;
use crate::process::{self, LaunchSpec, Leader, Members};
use crate::procinfo;
use crate::readiness::{self, Probe, ProbeTarget};
use crate::record::{StopReason, WorkerExit, WorkerHealth, WorkerRecord, WorkerStatus};
use crate::registry::Registry;
use crate::worker_types::WorkerTypes;
pub(crate) mod restart;
mod stop;

use stop::StopPlan;
pub(crate) use stop::final_status;

/// How long to wait for processes after SIGKILL before calling them stuck.
const SIGKILL_WAIT: Duration = Duration::from_secs(5);

/// What a heartbeat says about the worker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatState {
    /// Idle.
    Ready,
    /// Serving.
    Busy,
}

/// A request to a supervisor.
#[derive(Debug)]
pub(crate) enum Command {
    /// Stop the worker's processes; the shortest grace asked for wins.
    Stop {
        /// Time between SIGTERM and SIGKILL.
        grace: Duration,
        /// Who asks (a delete or a cancelled spawn also removes the worker afterwards).
        reason: StopReason,
    },
    /// If a stop is under way: SIGKILL now.
    Hurry,
    /// A heartbeat from the worker; answered with the record.
    Heartbeat {
        health: WorkerHealth,
        state: Option<HeartbeatState>,
        reply: oneshot::Sender<WorkerRecord>,
    },
    /// Answered once no stop is under way.
    WhenSettled(oneshot::Sender<()>),
}

/// What every supervisor shares.
pub(crate) struct Context {
    pub(crate) registry: Registry,
    /// The stop grace when none is given, in milliseconds (a reload may change it).
    pub(crate) default_grace_ms: std::sync::atomic::AtomicU64,
    /// Cancelled when the manager is dropped: supervisors end without touching processes.
    pub(crate) shutdown: CancellationToken,
    /// Woken when a worker leaves the registry (its log may be pruned later).
    pub(crate) removed: Arc<Notify>,
    /// Set by a second signal during shutdown: every stop under way, and every stop that
    /// begins from then on, goes straight to SIGKILL.
    pub(crate) hurried: AtomicBool,
    /// Bounds the health checks of adopted workers that run at once: after a restart with
    /// hundreds of workers they would otherwise crowd out the first requests.
    pub(crate) adopted_checks: Arc<tokio::sync::Semaphore>,
    /// Every change of every record, and every removal, as it happens (telemetry, metrics).
    pub(crate) events: tokio::sync::broadcast::Sender<WorkerEvent>,
    /// The worker types; a reload replaces it (running workers keep the command they were
    /// started with: it is in their record).
    pub(crate) worker_types: std::sync::RwLock<Arc<WorkerTypes>>,
    /// `{hive_url}` of a restarted worker's environment.
    pub(crate) hive_url: String,
    /// `{queen_url}` of a restarted worker's environment (empty when none is configured).
    pub(crate) queen_url: String,
    /// Set when the hive begins to shut down: no worker is started again from then on.
    pub(crate) restarts_held: AtomicBool,
}

impl Context {
    /// The worker types as they are now.
    pub(crate) fn worker_types(&self) -> Arc<WorkerTypes> {
        self.worker_types
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The stop grace when none is given.
    pub(crate) fn default_grace(&self) -> Duration {
        Duration::from_millis(
            self.default_grace_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

/// How a supervisor begins.
pub(crate) enum Start {
    /// A reserved id: launch the process (while the reservation is being saved).
    Launch(Box<LaunchSpec>),
    /// A leader found again after a restart; `resume` a stop that was under way.
    Adopted {
        leader: Leader,
        resume: Option<(StopReason, Duration)>,
    },
    /// A worker that waits for its restart (its record says when).
    RestartPending,
    /// Processes left by a leader that died while the hive was down, or whose exit the last
    /// hive saw: stop them (with what is left of the grace of a stop that was under way;
    /// there may be none left to stop).
    Survivors {
        members: Members,
        reason: StopReason,
        grace: Duration,
    },
    /// Nothing runs any more; the record is kept until it is deleted.
    Ended,
}

/// Where the worker's processes are.
enum Proc {
    /// Not started yet.
    Pending,
    /// The leader runs (or has exited and is not reaped yet).
    Leader(Leader),
    /// The leader is gone; these members of its group are not.
    Draining(Members),
    /// No process of the group is left.
    Gone,
}

/// Owns one worker until it leaves the registry.
pub(crate) struct Supervisor {
    number: u64,
    record: watch::Sender<WorkerRecord>,
    commands: mpsc::UnboundedReceiver<Command>,
    context: Arc<Context>,
    port: Option<PortLease>,
    health_path: String,
    ready_timeout: Duration,
    process: Proc,
    plan: Option<StopPlan>,
    probe: Option<BoxFuture<'static, Probe>>,
    /// Tells a readiness probe that the worker sent a heartbeat (probe again at once).
    probe_nudge: Arc<tokio::sync::Notify>,
    settle_waiters: Vec<oneshot::Sender<()>>,
    exit: Option<WorkerExit>,
    stuck: Vec<u32>,
    /// Its leader died while the hive was down.
    lost: bool,
    /// It leaves the registry once its processes are gone.
    remove: bool,
    /// A restart is due at this instant, once the state file holds this generation (the
    /// record that says it is pending).
    restart: Option<(Instant, u64)>,
}

impl Supervisor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        number: u64,
        record: watch::Sender<WorkerRecord>,
        commands: mpsc::UnboundedReceiver<Command>,
        context: Arc<Context>,
        port: Option<PortLease>,
        health_path: String,
        ready_timeout: Duration,
        lost: bool,
    ) -> Self {
        Self {
            number,
            record,
            commands,
            context,
            port,
            health_path,
            ready_timeout,
            process: Proc::Pending,
            plan: None,
            probe: None,
            probe_nudge: Arc::new(tokio::sync::Notify::new()),
            settle_waiters: Vec::new(),
            exit: None,
            stuck: Vec::new(),
            lost,
            remove: false,
            restart: None,
        }
    }

    pub(crate) async fn run(mut self, start: Start) {
        match start {
            Start::Launch(spec) => {
                if !self.launch(*spec).await {
                    self.process = Proc::Gone;
                    self.remove = true;
                }
            }
            Start::Adopted { leader, resume } => {
                self.process = Proc::Leader(leader);
                match resume {
                    Some((reason, grace)) => self.begin_stop(reason, grace, None),
                    None => self.probe_adopted(),
                }
            }
            Start::Survivors {
                members,
                reason,
                grace,
            } => {
                // A leader's exit the last hive saw (it was its child) is the run's end.
                self.exit = self
                    .record
                    .borrow()
                    .exit
                    .clone()
                    .filter(|e| e.code.is_some() || e.signal.is_some());
                self.process = Proc::Draining(members);
                self.begin_stop(reason, grace, None);
            }
            Start::RestartPending => {
                self.process = Proc::Gone;
                let at = self.record.borrow().restart_at;
                let wait = at
                    .and_then(|at| (at - Utc::now()).to_std().ok())
                    .unwrap_or_default();
                self.restart = Some((Instant::now() + wait, self.context.registry.generation()));
            }
            Start::Ended => self.process = Proc::Gone,
        }
        loop {
            if self.remove && matches!(self.process, Proc::Gone) {
                break;
            }
            let kill_at = self
                .plan
                .as_ref()
                .filter(|plan| !plan.sigkill_sent)
                .map(|plan| plan.kill_at);
            let give_up_at = self.plan.as_ref().and_then(|plan| plan.give_up_at);
            tokio::select! {
                biased;
                _ = self.context.shutdown.cancelled() => return,
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => return,
                },
                _ = leader_exited(&self.process) => self.on_leader_exit(),
                _ = members_gone(&self.process) => self.on_members_gone(),
                _ = sleep_until_some(kill_at) => self.kill(),
                _ = sleep_until_some(give_up_at) => self.give_up(),
                probe = next_probe(&mut self.probe) => self.on_probe(probe),
                recorded = restart_due(&self.context.registry, self.restart) => self.relaunch(recorded),
            }
        }
        let (id, listed) = {
            let record = self.record.borrow();
            (record.id.clone(), record.is_launched())
        };
        self.context.registry.remove(self.number);
        self.answer_settle_waiters();
        self.context.removed.notify_one();
        if listed {
            // Nobody listening is fine.
            let _ = self.context.events.send(WorkerEvent::Removed { id });
        }
        // Dropping `self.record` here tells every handle that the worker is gone.
    }

    fn id(&self) -> String {
        self.record.borrow().id.clone()
    }

    /// Applies `change` to the record, wakes its readers and tells the followers of the
    /// event stream what happened (`transitions`); returns the generation that the state
    /// file must reach to hold it (`persist`), or the current one.
    fn publish(
        &self,
        persist: bool,
        transitions: Vec<WorkerTransition>,
        change: impl FnOnce(&mut WorkerRecord),
    ) -> u64 {
        // The change and its generation together: a reader that sees the change and then
        // waits for the generation waits for a save that holds it.
        let generation = self
            .context
            .registry
            .change(persist, || self.record.send_modify(change));
        if self.context.events.receiver_count() > 0 {
            let record = self.record.borrow().clone();
            let _ = self.context.events.send(WorkerEvent::Changed {
                transitions,
                record: Box::new(record),
            });
        }
        generation
    }

    fn probe_target(&self) -> ProbeTarget {
        let record = self.record.borrow();
        ProbeTarget {
            url: format!("{}{}", record.url, self.health_path),
            path: self.health_path.clone(),
            port: record.port,
            pgid: record.pgid,
            nudge: self.probe_nudge.clone(),
        }
    }

    fn probe_adopted(&mut self) {
        let target = self.probe_target();
        let checks = self.context.adopted_checks.clone();
        self.probe = Some(match self.record.borrow().status {
            WorkerStatus::Starting => Box::pin(readiness::until_ready(target, self.ready_timeout)),
            _ => Box::pin(async move {
                let _permit = checks.acquire_owned().await;
                readiness::check_adopted(target).await
            }),
        });
    }

    /// Probes a run just started until it is ready. `Ready` is shown to everyone at once
    /// (listings, telemetry): it waits for the save of the record that names the run
    /// (`recorded`, usually long done by then), so that a hive killed after anyone saw the
    /// worker ready adopts it rather than stopping it as a run the state file does not name.
    fn readiness_probe(&self, recorded: u64) -> BoxFuture<'static, Probe> {
        let target = self.probe_target();
        let timeout = self.ready_timeout;
        let registry = self.context.registry.clone();
        Box::pin(async move {
            let probe = readiness::until_ready(target, timeout).await;
            if matches!(probe, Probe::Ready) {
                // A failed save shows in the acknowledgement, which waits for it too.
                let _ = registry.wait_durable(recorded).await;
            }
            probe
        })
    }

    /// Starts the process; false if it could not start. Its reservation (the id, in the
    /// record made before) is being saved meanwhile: the process does not wait for that
    /// `fsync`, and what acknowledges the worker ([`Spawning::ready`](crate::Spawning))
    /// waits for a save that holds both. A hive killed between the two leaves a process the
    /// state file does not name; the next hive finds it by its marker and stops it (its
    /// spawn was never acknowledged), and its log keeps its id from being handed out again.
    async fn launch(&mut self, spec: LaunchSpec) -> bool {
        let program = spec.program.display().to_string();
        // The log is created here, once the worker is listed (the log pruner keeps the logs
        // of listed workers), and never over another worker's (`O_EXCL`).
        let log_path = self.record.borrow().log_path.clone();
        let launched = logs::create(&log_path)
            .map_err(|e| format!("cannot create its log {}: {e}", log_path.display()))
            .and_then(|log| {
                process::launch(spec, log).map_err(|e| format!("cannot start {program}: {e}"))
            });
        match launched {
            Ok(leader) => {
                let pid = leader.pid();
                let start_ticks = procinfo::stat_fields(pid).map(|f| f.start_ticks);
                let recorded = self.publish(true, vec![WorkerTransition::Spawned], |record| {
                    record.pid = pid;
                    record.pgid = pid;
                    record.start_ticks = start_ticks;
                });
                self.process = Proc::Leader(leader);
                self.probe = Some(self.readiness_probe(recorded));
                true
            }
            Err(reason) => {
                self.publish(false, Vec::new(), |record| {
                    record.status = WorkerStatus::Failed { reason };
                });
                false
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Stop { grace, reason } => self.on_stop(grace, reason),
            Command::Hurry => self.shorten(Duration::ZERO),
            Command::Heartbeat {
                health,
                state,
                reply,
            } => {
                self.on_heartbeat(health, state);
                let _ = reply.send(self.record.borrow().clone());
            }
            Command::WhenSettled(reply) => match self.plan {
                Some(_) => self.settle_waiters.push(reply),
                None => {
                    let _ = reply.send(());
                }
            },
        }
    }

    fn answer_settle_waiters(&mut self) {
        for waiter in self.settle_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    fn final_status(&self, reason: Option<StopReason>, exit: &WorkerExit) -> WorkerStatus {
        stop::final_status(reason, Some(exit), self.lost, Some(self.ready_timeout))
    }

    fn on_heartbeat(&mut self, health: WorkerHealth, state: Option<HeartbeatState>) {
        if !matches!(self.process, Proc::Leader(_)) {
            return;
        }
        self.publish(false, Vec::new(), |record| {
            record.last_heartbeat = Some(Utc::now());
            record.health = Some(health);
        });
        if self.probe.is_some() && self.record.borrow().status == WorkerStatus::Starting {
            // It speaks, so it probably listens: ask now rather than at the next tick.
            self.probe_nudge.notify_one();
        }
        if self.plan.is_some() {
            return;
        }
        let (next, transition) = match (state, &self.record.borrow().status) {
            (Some(HeartbeatState::Busy), WorkerStatus::Ready) => {
                (WorkerStatus::Busy, WorkerTransition::Busy)
            }
            (Some(HeartbeatState::Ready), WorkerStatus::Busy) => (
                WorkerStatus::Ready,
                WorkerTransition::Ready {
                    spawn_to_ready: None,
                },
            ),
            _ => return,
        };
        self.publish(true, vec![transition], |record| record.status = next);
    }

    fn on_probe(&mut self, probe: Probe) {
        self.probe = None;
        match probe {
            Probe::Ready => {
                if self.plan.is_none() && self.record.borrow().status == WorkerStatus::Starting {
                    tracing::info!(worker = %self.id(), "ready");
                    let now = Utc::now();
                    let spawn_to_ready = {
                        let record = self.record.borrow();
                        let first = record.ready_at.is_none();
                        first.then(|| elapsed(record.started_at, now))
                    };
                    let ready = WorkerTransition::Ready { spawn_to_ready };
                    self.publish(true, vec![ready], |record| {
                        record.status = WorkerStatus::Ready;
                        record.ready_at.get_or_insert(now);
                    });
                }
            }
            Probe::TimedOut { detail } => {
                tracing::warn!(worker = %self.id(), "not ready within {:?}; stopping it", self.ready_timeout);
                let grace = self.context.default_grace();
                self.begin_stop(StopReason::ReadyTimeout, grace, detail);
            }
            Probe::Health(health) => {
                self.publish(false, Vec::new(), |record| record.health = Some(health));
            }
        }
    }
}

async fn leader_exited(process: &Proc) {
    match process {
        Proc::Leader(leader) => leader.exited().await,
        _ => std::future::pending().await,
    }
}

async fn members_gone(process: &Proc) {
    match process {
        Proc::Draining(members) => members.all_gone().await,
        _ => std::future::pending().await,
    }
}

/// Resolves when a restart is due and the state file holds its generation (or could not).
async fn restart_due(
    registry: &Registry,
    restart: Option<(Instant, u64)>,
) -> Result<(), crate::LifecycleError> {
    match restart {
        Some((at, generation)) => {
            tokio::time::sleep_until(at).await;
            registry.wait_durable(generation).await
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn next_probe(probe: &mut Option<BoxFuture<'static, Probe>>) -> Probe {
    match probe {
        Some(future) => Pin::new(future).await,
        None => std::future::pending().await,
    }
}
