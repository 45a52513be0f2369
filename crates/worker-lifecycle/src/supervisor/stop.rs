//! Stopping a worker's processes, and what a stopped or ended run leaves behind.
//!
//! The stop sequence of a supervisor: SIGTERM to the group with the stop's record
//! ([`Supervisor::begin_stop`]), SIGKILL at the end of the grace, what an exited leader left
//! stopped the same way, each member through its pidfd, and the end of the run
//! ([`Supervisor::on_gone`]). Its decisions are functions of plain values, tested here:
//! [`final_status`], the one function from a stop's reason (and the run's exit, when the
//! hive saw it) to the worker's final status, used by the supervisor when a run ends and by
//! adoption when it ended while the hive was down.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use super::restart::{self, Next};
use super::{Proc, SIGKILL_WAIT, Supervisor};
use crate::events::{WorkerTransition, elapsed};
use crate::process::{self, Members, Sig};
use crate::record::{
    LOST, PastRun, StopProgress, StopReason, WorkerExit, WorkerRecord, WorkerStatus, signal_name,
};

/// The status a worker ends with.
///
/// - `reason`: why the hive stopped it, if it did;
/// - `exit`: how its leader ended, when the hive saw it (`None`: the run ended while the
///   hive was down);
/// - `lost`: its leader died while the hive was down;
/// - `ready_timeout`: its type's, when known (for the words of a ready timeout).
pub(crate) fn final_status(
    reason: Option<StopReason>,
    exit: Option<&WorkerExit>,
    lost: bool,
    ready_timeout: Option<Duration>,
) -> WorkerStatus {
    let stopped_by_the_hive = |why: String| WorkerStatus::Failed {
        reason: match exit {
            Some(exit) => format!("{why}; stopped by the hive ({exit})"),
            None => format!("{why}; stopped by the hive"),
        },
    };
    if lost {
        return lost_status();
    }
    match (reason, exit) {
        (Some(StopReason::Delete | StopReason::Shutdown), _) => WorkerStatus::Stopped,
        (Some(StopReason::ReadyTimeout), _) => stopped_by_the_hive(match ready_timeout {
            Some(timeout) => format!("not ready within {timeout:?}"),
            None => "not ready in time".to_owned(),
        }),
        (Some(StopReason::SpawnCancelled), _) => {
            stopped_by_the_hive("the spawn was cancelled".to_owned())
        }
        (Some(StopReason::Lost), _) => lost_status(),
        (Some(StopReason::LeaderExited) | None, Some(exit)) => exit_status(exit),
        // It ended while the hive was down, and nobody saw how.
        (Some(StopReason::LeaderExited) | None, None) => lost_status(),
    }
}

fn lost_status() -> WorkerStatus {
    WorkerStatus::Failed {
        reason: LOST.to_owned(),
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

/// The failure of a status, for a past run ("exited with code 3").
pub(crate) fn failure_text(status: &WorkerStatus) -> String {
    match status {
        WorkerStatus::Failed { reason } => reason.clone(),
        other => other.label().to_owned(),
    }
}

/// Writes a leader's exit and the status that follows into a record.
pub(crate) fn apply_exit(record: &mut WorkerRecord, exit: WorkerExit, status: WorkerStatus) {
    record.exit = Some(exit);
    if record.status.can_become(&status) {
        record.status = status;
    }
}

/// A stop under way: when SIGKILL is due, and whether it was sent.
pub(super) struct StopPlan {
    pub(super) reason: StopReason,
    pub(super) requested: Instant,
    pub(super) kill_at: Instant,
    pub(super) sigkill_sent: bool,
    pub(super) give_up_at: Option<Instant>,
}

impl Supervisor {
    pub(super) fn on_stop(&mut self, grace: Duration, reason: StopReason) {
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
                    self.publish(true, Vec::new(), |record| {
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
    pub(super) fn shorten(&mut self, grace: Duration) {
        let Some(plan) = &mut self.plan else { return };
        let kill_at = Instant::now() + grace;
        if kill_at >= plan.kill_at || plan.sigkill_sent {
            return;
        }
        plan.kill_at = kill_at;
        let grace_ms = (kill_at - plan.requested).as_millis() as u64;
        self.publish(false, Vec::new(), |record| {
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
    pub(super) fn begin_stop(
        &mut self,
        reason: StopReason,
        grace: Duration,
        detail: Option<String>,
    ) {
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
        let mut transitions = self.exit_transition(exited.as_ref().map(|(_, exit)| exit));
        transitions.push(WorkerTransition::Stopping { reason });
        self.publish(true, transitions, |record| {
            if let Some((status, exit)) = exited {
                apply_exit(record, exit, status);
            }
            record.stop = Some(StopProgress {
                sigterm_at,
                detail,
                ..StopProgress::begin(reason, grace)
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
    pub(super) fn signal(&self, sig: Sig) -> bool {
        match &self.process {
            Proc::Leader(leader) => leader.signal_group(sig),
            Proc::Draining(members) => members.signal(sig) > 0,
            Proc::Pending | Proc::Gone => false,
        }
    }

    pub(super) fn kill(&mut self) {
        let Some(plan) = &mut self.plan else { return };
        plan.sigkill_sent = true;
        plan.give_up_at = Some(Instant::now() + SIGKILL_WAIT);
        let grace_ms = (plan.kill_at - plan.requested).as_millis() as u64;
        if self.signal(Sig::Kill) {
            tracing::info!(worker = %self.id(), "grace over: sent SIGKILL to the worker's processes");
            self.publish(true, vec![WorkerTransition::Killed], |record| {
                if let Some(stop) = &mut record.stop {
                    stop.sigkill_at = Some(Utc::now());
                    stop.grace_ms = grace_ms;
                }
            });
        }
    }

    pub(super) fn on_leader_exit(&mut self) {
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

    /// `Exited` when `exit` is the first exit the record gets (an exit the last hive saw
    /// was announced then).
    fn exit_transition(&self, exit: Option<&WorkerExit>) -> Vec<WorkerTransition> {
        match exit {
            Some(exit) if self.record.borrow().exit.is_none() => {
                vec![WorkerTransition::Exited { exit: exit.clone() }]
            }
            _ => Vec::new(),
        }
    }

    /// Records how the leader ended and the status that follows (its group may still be
    /// stopping).
    pub(super) fn publish_exit(&self) {
        let Some(exit) = self.exit.clone() else {
            return;
        };
        let status = self.final_status(self.plan.as_ref().map(|plan| plan.reason), &exit);
        let transitions = self.exit_transition(Some(&exit));
        self.publish(true, transitions, |record| apply_exit(record, exit, status));
    }

    /// The members of group `pgid` once its leader is gone: only processes that carry the
    /// worker's marker (once the group was empty, its id may name someone else's group).
    pub(super) fn survivors(&self, pgid: u32) -> Members {
        let record = self.record.borrow();
        let marker = format!("{}/{}", self.context.registry.instance(), record.id);
        match record.start_ticks {
            Some(start) if process::group_has_members(pgid) => {
                Members::survivors(pgid, start, &marker)
            }
            _ => Members::none(),
        }
    }

    pub(super) fn on_members_gone(&mut self) {
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

    pub(super) fn give_up(&mut self) {
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
    pub(super) fn on_gone(&mut self) {
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
        let restart_at =
            restart_in.map(|delay| now + chrono::Duration::from_std(delay).unwrap_or_default());
        let mut transitions = self.exit_transition(Some(&exit));
        let stop_took = {
            let record = self.record.borrow();
            let stop = record.stop.as_ref().filter(|stop| stop.is_under_way());
            stop.map(|stop| elapsed(stop.requested_at, now))
        };
        transitions.push(WorkerTransition::Gone { stop_took });
        match (&next, restart_at) {
            (Some((Next::Restart { .. }, _)), Some(at)) => {
                transitions.push(WorkerTransition::Restarting { at });
            }
            (Some((Next::CrashLoop { .. }, _)), _) => transitions.push(WorkerTransition::CrashLoop),
            _ => {}
        }
        // A worker that leaves the registry leaves it right after this (the next turn of
        // `run`): its removal is the change the state file must hold, and one save then
        // holds both. Saving this record first would put a second save on the delete's path.
        let generation = self.publish(!self.remove, transitions, |record| {
            match next {
                Some((Next::Restart { .. }, max_restarts)) => {
                    let at = restart_at.unwrap_or(now);
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
                stop.finished_at = Some(now);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn exit(code: Option<i32>, signal: Option<i32>) -> WorkerExit {
        WorkerExit {
            code,
            signal,
            at: Utc::now(),
        }
    }

    fn reason_of(status: WorkerStatus) -> String {
        match status {
            WorkerStatus::Failed { reason } => reason,
            other => panic!("not failed: {other:?}"),
        }
    }

    #[test]
    fn every_stop_reason_has_its_final_status() {
        let sigterm = exit(None, Some(15));
        let timeout = Some(Duration::from_millis(500));
        for reason in [StopReason::Delete, StopReason::Shutdown] {
            for seen in [Some(&sigterm), None] {
                assert_eq!(
                    final_status(Some(reason), seen, false, timeout),
                    WorkerStatus::Stopped
                );
            }
        }
        assert_eq!(
            reason_of(final_status(
                Some(StopReason::ReadyTimeout),
                Some(&sigterm),
                false,
                timeout
            )),
            "not ready within 500ms; stopped by the hive (signal 15 (SIGTERM))"
        );
        // After a restart: the same words, with what is known.
        assert_eq!(
            reason_of(final_status(
                Some(StopReason::ReadyTimeout),
                None,
                false,
                timeout
            )),
            "not ready within 500ms; stopped by the hive"
        );
        assert_eq!(
            reason_of(final_status(
                Some(StopReason::ReadyTimeout),
                None,
                false,
                None
            )),
            "not ready in time; stopped by the hive"
        );
        assert_eq!(
            reason_of(final_status(
                Some(StopReason::SpawnCancelled),
                Some(&exit(Some(0), None)),
                false,
                timeout
            )),
            "the spawn was cancelled; stopped by the hive (exit code 0)"
        );
        assert_eq!(
            reason_of(final_status(
                Some(StopReason::Lost),
                Some(&sigterm),
                false,
                None
            )),
            LOST
        );
        // What an exited leader left was stopped: its own exit decides.
        assert_eq!(
            reason_of(final_status(
                Some(StopReason::LeaderExited),
                Some(&exit(Some(3), None)),
                false,
                None
            )),
            "exited with code 3"
        );
        assert_eq!(
            final_status(
                Some(StopReason::LeaderExited),
                Some(&exit(Some(0), None)),
                false,
                None
            ),
            WorkerStatus::Stopped
        );
        // Ended while the hive was down, nobody saw how: lost.
        assert_eq!(
            reason_of(final_status(
                Some(StopReason::LeaderExited),
                None,
                false,
                None
            )),
            LOST
        );
        assert_eq!(reason_of(final_status(None, None, false, None)), LOST);
    }

    #[test]
    fn an_exit_on_its_own_reads_as_its_code_or_signal() {
        assert_eq!(
            final_status(None, Some(&exit(Some(0), None)), false, None),
            WorkerStatus::Stopped
        );
        assert_eq!(
            reason_of(final_status(None, Some(&exit(None, Some(9))), false, None)),
            "killed by signal 9 (SIGKILL)"
        );
        assert!(
            reason_of(final_status(None, Some(&exit(None, None)), false, None))
                .starts_with("exited (status unknown")
        );
    }

    #[test]
    fn a_leader_that_died_while_the_hive_was_down_is_lost_whatever_the_stop() {
        for reason in [
            None,
            Some(StopReason::Delete),
            Some(StopReason::ReadyTimeout),
        ] {
            assert_eq!(
                reason_of(final_status(reason, Some(&exit(Some(0), None)), true, None)),
                LOST
            );
        }
    }
}
