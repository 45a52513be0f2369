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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, RestartMode};
use crate::logs;
use crate::ports::PortLease;
use crate::process::{self, LaunchSpec, Leader, Members, Sig};
use crate::readiness::{self, Probe, ProbeTarget};
use crate::record::{
    LOST, PastRun, StopProgress, StopReason, WorkerExit, WorkerHealth, WorkerRecord, WorkerStatus,
    signal_name,
};
use crate::registry::Registry;
use crate::restart::{self, Next};

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
    pub(crate) catalog: std::sync::RwLock<Arc<Catalog>>,
    /// `{hive_url}` of a restarted worker's environment.
    pub(crate) hive_url: String,
    /// `{queen_url}` of a restarted worker's environment (empty when none is configured).
    pub(crate) queen_url: String,
    /// Set when the hive begins to shut down: no worker is started again from then on.
    pub(crate) restarts_held: AtomicBool,
}

impl Context {
    /// The worker types as they are now.
    pub(crate) fn catalog(&self) -> Arc<Catalog> {
        self.catalog
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

/// A change of a worker, as the one writer of its record makes it.
#[derive(Debug, Clone)]
pub enum WorkerEvent {
    /// The record after a change.
    Changed(Box<WorkerRecord>),
    /// The worker left the registry.
    Removed {
        /// Its id.
        id: String,
    },
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

struct StopPlan {
    reason: StopReason,
    requested: Instant,
    kill_at: Instant,
    sigkill_sent: bool,
    give_up_at: Option<Instant>,
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
        let id = self.id();
        self.context.registry.remove(self.number);
        self.answer_settle_waiters();
        self.context.removed.notify_one();
        // Nobody listening is fine.
        let _ = self.context.events.send(WorkerEvent::Removed { id });
        // Dropping `self.record` here tells every handle that the worker is gone.
    }

    fn id(&self) -> String {
        self.record.borrow().id.clone()
    }

    /// Applies `change` to the record and wakes its readers; returns the generation that
    /// the state file must reach to hold it (`persist`), or the current one.
    fn publish(&self, persist: bool, change: impl FnOnce(&mut WorkerRecord)) -> u64 {
        // The change and its generation together: a reader that sees the change and then
        // waits for the generation waits for a save that holds it.
        let generation = self
            .context
            .registry
            .change(persist, || self.record.send_modify(change));
        if self.context.events.receiver_count() > 0 {
            let record = self.record.borrow().clone();
            let _ = self
                .context
                .events
                .send(WorkerEvent::Changed(Box::new(record)));
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
                let start_ticks = process::stat_fields(pid).map(|f| f.start_ticks);
                let recorded = self.publish(true, |record| {
                    record.pid = pid;
                    record.pgid = pid;
                    record.start_ticks = start_ticks;
                });
                self.process = Proc::Leader(leader);
                self.probe = Some(self.readiness_probe(recorded));
                true
            }
            Err(reason) => {
                self.publish(false, |record| {
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

    fn on_stop(&mut self, grace: Duration, reason: StopReason) {
        self.remove |= reason.removes();
        if matches!(self.process, Proc::Gone | Proc::Pending) {
            // Nothing runs. The group was seen empty, so its id may already name another
            // group: it is never looked at again. A restart that was pending is not made.
            if self.record.borrow().restart_pending() {
                let why = match reason {
                    StopReason::Shutdown => "the hive shut down",
                    _ => "it was stopped",
                };
                self.give_up_restart(why);
            }
            return;
        }
        match &mut self.plan {
            Some(plan) => {
                // A delete during another stop: the stop now also removes the worker, and
                // the state file says so (a restarted hive resumes it as a delete).
                if reason.removes() && !plan.reason.removes() {
                    plan.reason = reason;
                    self.publish(true, |record| {
                        if let Some(stop) = &mut record.stop {
                            stop.reason = reason;
                        }
                    });
                }
                self.shorten(grace);
            }
            None => self.begin_stop(reason, grace, None),
        }
    }

    /// Moves SIGKILL earlier: to `grace` after the stop was asked for, if that is sooner.
    fn shorten(&mut self, grace: Duration) {
        let Some(plan) = &mut self.plan else { return };
        let kill_at = Instant::now() + grace;
        if kill_at >= plan.kill_at || plan.sigkill_sent {
            return;
        }
        plan.kill_at = kill_at;
        let grace_ms = (kill_at - plan.requested).as_millis() as u64;
        self.publish(false, |record| {
            if let Some(stop) = &mut record.stop {
                stop.grace_ms = grace_ms;
            }
        });
    }

    /// Sends SIGTERM and records the stop (with when SIGTERM went) in one change, which is
    /// saved while the worker exits; SIGKILL at the end of the grace ([`kill`](Self::kill)).
    /// The stop's acknowledgement waits for the save of its end, which holds the record
    /// too. A hive killed before the record was saved finds the worker as it was: adopted
    /// if its processes still run, `Failed: lost` once they are gone (the delete was not
    /// acknowledged, and nothing of the worker is left running).
    fn begin_stop(&mut self, reason: StopReason, grace: Duration, detail: Option<String>) {
        let now = Instant::now();
        let grace = match self.context.hurried.load(Ordering::SeqCst) {
            true => Duration::ZERO,
            false => grace,
        };
        self.remove |= reason.removes();
        self.probe = None;
        // When the leader has exited already, its exit and status go in the same change.
        let exited = self
            .exit
            .clone()
            .map(|exit| (self.final_status(Some(reason), &exit), exit));
        let sigterm_at = self.signal(Sig::Term).then(Utc::now);
        self.publish(true, |record| {
            if let Some((status, exit)) = exited {
                apply_exit(record, exit, status);
            }
            record.stop = Some(StopProgress {
                reason,
                grace_ms: grace.as_millis() as u64,
                requested_at: Utc::now(),
                sigterm_at,
                sigkill_at: None,
                finished_at: None,
                stuck: Vec::new(),
                detail,
            });
        });
        self.plan = Some(StopPlan {
            reason,
            requested: now,
            kill_at: now + grace,
            sigkill_sent: false,
            give_up_at: None,
        });
    }

    /// Signals whatever is left of the worker's processes; whether anyone got it.
    fn signal(&self, sig: Sig) -> bool {
        match &self.process {
            Proc::Leader(leader) => leader.signal_group(sig),
            Proc::Draining(members) => members.signal(sig) > 0,
            Proc::Pending | Proc::Gone => false,
        }
    }

    fn kill(&mut self) {
        let Some(plan) = &mut self.plan else { return };
        plan.sigkill_sent = true;
        plan.give_up_at = Some(Instant::now() + SIGKILL_WAIT);
        let grace_ms = (plan.kill_at - plan.requested).as_millis() as u64;
        if self.signal(Sig::Kill) {
            tracing::info!(worker = %self.id(), "grace over: sent SIGKILL to the worker's processes");
            self.publish(true, |record| {
                if let Some(stop) = &mut record.stop {
                    stop.sigkill_at = Some(Utc::now());
                    stop.grace_ms = grace_ms;
                }
            });
        }
    }

    fn on_leader_exit(&mut self) {
        let Proc::Leader(leader) = std::mem::replace(&mut self.process, Proc::Gone) else {
            return;
        };
        let pgid = leader.pid();
        self.exit = Some(leader.reap());
        self.probe = None;
        let members = self.survivors(pgid);
        if members.is_empty() {
            self.on_gone();
            return;
        }
        tracing::info!(worker = %self.id(), "the leader exited; stopping what is left of its group: {:?}", members.pids());
        self.process = Proc::Draining(members);
        match &self.plan {
            // The exit and the stop of what the leader left reach the record (and the state
            // file) in one change: a record that says "exited" without "stopping" would
            // let a restarted hive leave these processes running.
            None => {
                let grace = self.context.default_grace();
                self.begin_stop(StopReason::LeaderExited, grace, None);
            }
            Some(plan) => {
                if plan.sigkill_sent {
                    self.signal(Sig::Kill);
                }
                // They had SIGTERM with the whole group when the stop began.
                self.publish_exit();
            }
        }
    }

    /// Records how the leader ended and the status that follows (its group may still be
    /// stopping).
    fn publish_exit(&self) {
        let Some(exit) = self.exit.clone() else {
            return;
        };
        let status = self.final_status(self.plan.as_ref().map(|plan| plan.reason), &exit);
        self.publish(true, |record| apply_exit(record, exit, status));
    }

    /// The members of group `pgid` once its leader is gone: only processes that carry the
    /// worker's marker (once the group was empty, its id may name someone else's group).
    fn survivors(&self, pgid: u32) -> Members {
        let record = self.record.borrow();
        let marker = format!("{}/{}", self.context.registry.instance(), record.id);
        match record.start_ticks {
            Some(start) if process::group_has_members(pgid) => {
                Members::survivors(pgid, start, &marker)
            }
            _ => Members::none(),
        }
    }

    fn on_members_gone(&mut self) {
        let Proc::Draining(members) = &self.process else {
            return;
        };
        // Members may have forked while they were stopping: look again.
        let next = self.survivors(members.pgid());
        if next.is_empty() {
            self.process = Proc::Gone;
            self.on_gone();
            return;
        }
        let killing = self.plan.as_ref().is_some_and(|plan| plan.sigkill_sent);
        next.signal(if killing { Sig::Kill } else { Sig::Term });
        self.process = Proc::Draining(next);
    }

    fn give_up(&mut self) {
        self.stuck = match &self.process {
            Proc::Draining(members) => members.still_running(),
            // A leader that outlives SIGKILL (stuck in the kernel, as with a hung GPU
            // driver): it stays the hive's unreaped child, and the stop is reported stuck.
            Proc::Leader(leader) => vec![leader.pid()],
            Proc::Pending | Proc::Gone => return,
        };
        tracing::error!(worker = %self.id(), "not gone {SIGKILL_WAIT:?} after SIGKILL: {:?}", self.stuck);
        if let Proc::Leader(leader) = std::mem::replace(&mut self.process, Proc::Gone) {
            leader.abandon();
        }
        self.on_gone();
    }

    /// No process of the group is left: record how it ended, and either give the port back
    /// or, when its type restarts it, keep the port and schedule the next run.
    fn on_gone(&mut self) {
        self.probe = None;
        let reason = self.plan.take().map(|plan| plan.reason);
        let exit = self.exit.clone().unwrap_or_else(WorkerExit::unknown);
        let status = self.final_status(reason, &exit);
        let next = self.after_failure(reason, &status, &exit);
        if !matches!(next, Some((Next::Restart { .. }, _))) {
            self.port = None;
        }
        let stuck = std::mem::take(&mut self.stuck);
        let now = Utc::now();
        let restart_in = match &next {
            Some((Next::Restart { delay }, _)) => Some(*delay),
            _ => None,
        };
        // A worker that leaves the registry leaves it right after this (the next turn of
        // `run`): its removal is the change the state file must hold, and one save then
        // holds both. Saving this record first would put a second save on the delete's path.
        let generation = self.publish(!self.remove, |record| {
            match next {
                Some((Next::Restart { delay }, max_restarts)) => {
                    let at = now + chrono::Duration::from_std(delay).unwrap_or_default();
                    let run = PastRun {
                        pid: record.pid,
                        started_at: record.run_started_at.unwrap_or(record.started_at),
                        exit: exit.clone(),
                        reason: failure_text(&status),
                        restart_at: at,
                    };
                    restart::remember_run(record, run, max_restarts);
                    record.restart_at = Some(at);
                    // Not `Failed` (the state machine's end): it starts again.
                    record.status = WorkerStatus::Starting;
                }
                Some((Next::CrashLoop { reason }, _)) => {
                    record.status = WorkerStatus::Failed { reason };
                }
                None if record.status.can_become(&status) => record.status = status,
                None => {}
            }
            if let Some(stop) = record.stop.as_mut().filter(|stop| stop.is_under_way()) {
                stop.finished_at = Some(Utc::now());
                stop.stuck = stuck;
            }
            record.exit.get_or_insert(exit);
        });
        if let Some(delay) = restart_in {
            tracing::warn!(worker = %self.id(), "failed; starting it again in {delay:?}");
            self.restart = Some((Instant::now() + delay, generation));
        }
        // A worker that leaves the registry is settled once it has left (see `run`): a
        // shutdown that flushes the state after settling must find it gone.
        if !self.remove {
            self.answer_settle_waiters();
        }
    }

    /// What follows a run that ended with `status` (after a stop for `reason`, if any) when
    /// its type restarts on failure: with the type's `max_restarts`.
    fn after_failure(
        &self,
        reason: Option<StopReason>,
        status: &WorkerStatus,
        exit: &WorkerExit,
    ) -> Option<(Next, u32)> {
        let WorkerStatus::Failed { reason: why } = status else {
            return None;
        };
        let failed_on_its_own = matches!(
            reason,
            None | Some(StopReason::LeaderExited | StopReason::ReadyTimeout)
        );
        // An adopted leader's exit status is unknown (it is not the hive's child): it may
        // have been a clean exit. Processes stuck after SIGKILL still hold the port and
        // perhaps the GPU: a new run would only fail beside them.
        let unknown_exit = exit.code.is_none() && exit.signal.is_none();
        if self.lost || self.remove || !failed_on_its_own || unknown_exit {
            return None;
        }
        if !self.stuck.is_empty() {
            return None;
        }
        // A clone: the crash-loop reason reads the log, not to be done under the borrow.
        let record = self.record.borrow().clone();
        // A run that never became ready is its spawn's failure, reported to that job.
        if record.ready_at.is_none() || self.context.restarts_held.load(Ordering::SeqCst) {
            return None;
        }
        let policy = self
            .context
            .catalog()
            .get(&record.worker_type)
            .ok()?
            .restart;
        if policy.mode != RestartMode::OnFailure {
            return None;
        }
        let next = restart::next(&policy, &record, Utc::now(), why);
        if let Next::CrashLoop { reason } = &next {
            tracing::error!(worker = %record.id, "{reason}");
        }
        Some((next, policy.max_restarts))
    }

    /// Starts the next run of a worker whose restart is due (and recorded, unless
    /// `recorded` says the state file could not be written).
    fn relaunch(&mut self, recorded: Result<(), crate::LifecycleError>) {
        self.restart = None;
        if self.context.restarts_held.load(Ordering::SeqCst) {
            // Left pending: a `stop` shutdown cancels it; after a `keep` shutdown the next
            // hive makes it.
            tracing::info!(worker = %self.id(), "not restarted: the hive is shutting down");
            return;
        }
        if let Err(error) = recorded {
            // The writer retries a failed save: so does the restart, a second later.
            tracing::warn!(worker = %self.id(), "restart postponed: its wait is not saved yet ({error})");
            self.restart = Some((
                Instant::now() + Duration::from_secs(1),
                self.context.registry.generation(),
            ));
            return;
        }
        let record = self.record.borrow().clone();
        let catalog = self.context.catalog();
        let template = match catalog.get(&record.worker_type) {
            Ok(template) if template.restart.mode == RestartMode::OnFailure => template,
            Ok(_) => return self.give_up_restart("its type's `restart` is now \"never\""),
            Err(_) => return self.give_up_restart("its worker type is no longer configured"),
        };
        self.health_path = template.health_path.clone();
        self.ready_timeout = template.ready_timeout;
        let marker = format!("{}/{}", self.context.registry.instance(), record.id);
        let urls = (
            self.context.hive_url.as_str(),
            self.context.queen_url.as_str(),
        );
        let launched = restart::launch_spec(template, &record, urls, marker).and_then(|spec| {
            let program = spec.program.display().to_string();
            restart::open_log_for_run(&record)
                .map_err(|e| format!("cannot open its log {}: {e}", record.log_path.display()))
                .and_then(|log| {
                    process::launch(spec, log).map_err(|e| format!("cannot start {program}: {e}"))
                })
        });
        let leader = match launched {
            Ok(leader) => leader,
            Err(why) => return self.give_up_restart(&why),
        };
        let pid = leader.pid();
        let start_ticks = process::stat_fields(pid).map(|f| f.start_ticks);
        tracing::info!(worker = %record.id, "started again (pid {pid}, restart {})", record.restart_count + 1);
        self.exit = None;
        self.process = Proc::Leader(leader);
        let recorded = self.publish(true, |record| {
            restart::begin_next_run(record, pid, start_ticks, Some(Utc::now()));
        });
        self.probe = Some(self.readiness_probe(recorded));
    }

    /// A pending restart is not made: the worker stays `Failed` with its last run's failure.
    fn give_up_restart(&mut self, why: &str) {
        self.restart = None;
        self.port = None;
        tracing::warn!(worker = %self.id(), "not restarted: {why}");
        self.publish(true, |record| {
            let last = record
                .past_runs
                .last()
                .map(|run| run.reason.clone())
                .unwrap_or_else(|| "failed".to_owned());
            record.restart_at = None;
            record.status = WorkerStatus::Failed {
                reason: format!("{last}; not restarted: {why}"),
            };
        });
    }

    fn answer_settle_waiters(&mut self) {
        for waiter in self.settle_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    fn final_status(&self, reason: Option<StopReason>, exit: &WorkerExit) -> WorkerStatus {
        if self.lost {
            return WorkerStatus::Failed {
                reason: LOST.to_owned(),
            };
        }
        match reason {
            Some(StopReason::Delete | StopReason::Shutdown) => WorkerStatus::Stopped,
            Some(StopReason::ReadyTimeout) => WorkerStatus::Failed {
                reason: format!(
                    "not ready within {:?}; stopped by the hive ({exit})",
                    self.ready_timeout
                ),
            },
            Some(StopReason::SpawnCancelled) => WorkerStatus::Failed {
                reason: format!("the spawn was cancelled; stopped by the hive ({exit})"),
            },
            Some(StopReason::Lost) => WorkerStatus::Failed {
                reason: LOST.to_owned(),
            },
            Some(StopReason::LeaderExited) | None => exit_status(exit),
        }
    }

    fn on_heartbeat(&mut self, health: WorkerHealth, state: Option<HeartbeatState>) {
        if !matches!(self.process, Proc::Leader(_)) {
            return;
        }
        self.publish(false, |record| {
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
        let next = match (state, &self.record.borrow().status) {
            (Some(HeartbeatState::Busy), WorkerStatus::Ready) => WorkerStatus::Busy,
            (Some(HeartbeatState::Ready), WorkerStatus::Busy) => WorkerStatus::Ready,
            _ => return,
        };
        self.publish(true, |record| record.status = next);
    }

    fn on_probe(&mut self, probe: Probe) {
        self.probe = None;
        match probe {
            Probe::Ready => {
                if self.plan.is_none() && self.record.borrow().status == WorkerStatus::Starting {
                    tracing::info!(worker = %self.id(), "ready");
                    self.publish(true, |record| {
                        record.status = WorkerStatus::Ready;
                        record.ready_at.get_or_insert_with(Utc::now);
                    });
                }
            }
            Probe::TimedOut { detail } => {
                tracing::warn!(worker = %self.id(), "not ready within {:?}; stopping it", self.ready_timeout);
                let grace = self.context.default_grace();
                self.begin_stop(StopReason::ReadyTimeout, grace, detail);
            }
            Probe::Health(health) => {
                self.publish(false, |record| record.health = Some(health));
            }
        }
    }
}

/// The failure of a status, for a past run ("exited with code 3").
fn failure_text(status: &WorkerStatus) -> String {
    match status {
        WorkerStatus::Failed { reason } => reason.clone(),
        other => other.label().to_owned(),
    }
}

/// Writes a leader's exit and the status that follows into a record.
fn apply_exit(record: &mut WorkerRecord, exit: WorkerExit, status: WorkerStatus) {
    record.exit = Some(exit);
    if record.status.can_become(&status) {
        record.status = status;
    }
}

/// The status of a worker whose leader ended on its own.
fn exit_status(exit: &WorkerExit) -> WorkerStatus {
    if exit.success() {
        return WorkerStatus::Stopped;
    }
    WorkerStatus::Failed {
        reason: match (exit.code, exit.signal) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal} ({})", signal_name(signal)),
            (None, None) => {
                "exited (status unknown: adopted after a hive restart, so not the hive's child)"
                    .to_owned()
            }
        },
    }
}

/// The final status of a stop that ended while the hive was down (`None`: nothing was
/// stopping, the worker was lost).
pub(crate) fn status_after_restart(stop: Option<&StopProgress>) -> WorkerStatus {
    match stop.map(|stop| stop.reason) {
        Some(StopReason::Delete | StopReason::Shutdown) => WorkerStatus::Stopped,
        Some(StopReason::ReadyTimeout) => WorkerStatus::Failed {
            reason: "not ready in time; stopped by the hive".to_owned(),
        },
        Some(StopReason::SpawnCancelled) => WorkerStatus::Failed {
            reason: "the spawn was cancelled; stopped by the hive".to_owned(),
        },
        Some(StopReason::LeaderExited | StopReason::Lost) | None => WorkerStatus::Failed {
            reason: LOST.to_owned(),
        },
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
