//! Adoption: what a hive finds when it starts on a state dir. Every recorded worker whose
//! process is provably still the same (pid and start time, or the `RBEE_HIVE_WORKER`
//! marker for a run whose pid was not saved) is adopted and given to a supervisor; a stop
//! that was under way is resumed; what a dead leader left is stopped; a worker gone while
//! the hive was down is kept as `Failed: lost`; and the runs that carry this hive's marker
//! but that the state file does not name (started by a hive killed before it saved them)
//! are stopped. Each record is made whole here, before its supervisor exists, and from then
//! on the supervisor is its only writer.

use std::time::Duration;

use chrono::Utc;

use crate::manager::WorkerManager;
use crate::ports::PortLease;
use crate::process::{self, Members};
use crate::record::{StopProgress, StopReason, WorkerExit, WorkerRecord};
use crate::registry::parse_id;
use crate::state_file::PersistedState;
use crate::supervisor::{Start, final_status, restart};

impl WorkerManager {
    pub(crate) fn restore(&self, saved: PersistedState) {
        self.registry().raise_last_id(saved.last_id);
        for record in saved.workers {
            let Some(number) = parse_id(&record.id) else {
                tracing::warn!("state file: skipping a record with id {:?}", record.id);
                continue;
            };
            self.registry().raise_last_id(number);
            self.restore_one(number, record);
        }
    }

    fn restore_one(&self, number: u64, mut record: WorkerRecord) {
        if record.pgid == 0 {
            record.pgid = record.pid;
        }
        let maybe_running = !record.status.is_terminal() || record.is_stopping();
        if !maybe_running {
            self.install(number, record, Start::Ended, None, false);
            return;
        }
        if !record.is_launched() {
            self.restore_unlaunched(number, record);
            return;
        }
        if record.restart_pending() {
            self.restore_restart_pending(number, record);
            return;
        }
        let leader = record
            .start_ticks
            .and_then(|start| process::adopt(record.pid, record.pgid, start));
        let port = self.inner.ports.lease_exact(record.port);
        if port.is_none() {
            tracing::error!("{}: port {} is recorded twice", record.id, record.port);
        }
        if let Some(leader) = leader {
            let resume = record
                .stop
                .as_ref()
                .filter(|s| s.is_under_way())
                .map(|stop| (stop.reason, remaining_grace(stop)));
            tracing::info!(
                "adopted {} (pid {}, port {}, {}{})",
                record.id,
                record.pid,
                record.port,
                record.status.label(),
                if resume.is_some() {
                    ", resuming its stop"
                } else {
                    ""
                }
            );
            self.install(
                number,
                record,
                Start::Adopted { leader, resume },
                port,
                false,
            );
            return;
        }
        // The leader is gone (or its pid belongs to another process now).
        let marker = self.marker(&record.id);
        let members = match record.start_ticks {
            Some(start) => Members::survivors(record.pgid, start, &marker),
            None => Members::none(),
        };
        self.restore_dead_leader(number, record, members, port);
    }

    /// A record whose leader is gone: the stop under way, if any, finishes; the worker is
    /// otherwise lost; processes its group left are stopped.
    fn restore_dead_leader(
        &self,
        number: u64,
        mut record: WorkerRecord,
        members: Members,
        port: Option<PortLease>,
    ) {
        let stop = record.stop.clone().filter(|s| s.is_under_way());
        let lost = stop.is_none();
        // The hive saw the leader exit (its exit is recorded) and was stopping what it left:
        // the record's status stands, and the stop is finished by a supervisor (which also
        // restarts the worker if its type says so), even when nothing is left to stop.
        let exit_seen = stop
            .as_ref()
            .is_some_and(|s| s.reason == StopReason::LeaderExited)
            && record
                .exit
                .as_ref()
                .is_some_and(|e| e.code.is_some() || e.signal.is_some());
        if !exit_seen {
            // The stop (if any) ended while the hive was down: how the run ended is not known.
            let ready_timeout = self
                .worker_types()
                .get(&record.worker_type)
                .ok()
                .map(|template| template.ready_timeout);
            record.status =
                final_status(stop.as_ref().map(|s| s.reason), None, false, ready_timeout);
        }
        record.exit.get_or_insert_with(WorkerExit::unknown);
        if members.is_empty() && !exit_seen {
            if stop.as_ref().is_some_and(|s| s.reason.removes()) {
                tracing::info!(
                    "{}: its stop finished while the hive was down; removed",
                    record.id
                );
                self.registry().bump();
                return;
            }
            if let Some(stop) = record.stop.as_mut() {
                stop.finished_at = Some(Utc::now());
            }
            tracing::warn!(
                "{} (pid {}) is not running any more, or its pid now belongs to another process: \
                 reported {}, nothing signalled",
                record.id,
                record.pid,
                record.status.label()
            );
            self.install(number, record, Start::Ended, None, lost);
            return;
        }
        tracing::warn!(
            "{}: its leader (pid {}) {} and left {:?}; stopping them",
            record.id,
            record.pid,
            match exit_seen {
                true => "exited before the hive stopped",
                false => "died while the hive was down",
            },
            members.pids()
        );
        // The record says "stopping" from the first save on, so that a hive killed before
        // the supervisor records its own stop still finds these processes next time.
        let (reason, grace) = match &stop {
            Some(stop) => (stop.reason, remaining_grace(stop)),
            None => (StopReason::Lost, self.inner.context.default_grace()),
        };
        record.stop = Some(StopProgress::begin(reason, grace));
        self.install(
            number,
            record,
            Start::Survivors {
                members,
                reason,
                grace,
            },
            port,
            lost,
        );
    }

    /// A reserved id whose process the state file does not know: the hive stopped between
    /// the reservation and saving the pid. The process is found by its marker.
    fn restore_unlaunched(&self, number: u64, record: WorkerRecord) {
        let port = self.inner.ports.lease_exact(record.port);
        if let Some(record) = self.adopt_unrecorded_run(number, record, port) {
            // It never ran: the reservation goes (its id stays used).
            tracing::info!("{}: reserved but never started; removed", record.id);
            self.registry().bump();
        }
    }

    /// A worker that waited for its restart when the hive stopped. If the hive had started
    /// the next run without recording it, that run is found by its marker; otherwise the
    /// restart is made when it is due.
    fn restore_restart_pending(&self, number: u64, record: WorkerRecord) {
        let port = self.inner.ports.lease_exact(record.port);
        if port.is_none() {
            tracing::error!("{}: port {} is recorded twice", record.id, record.port);
        }
        if let Some(record) = self.adopt_unrecorded_run(number, record, port) {
            tracing::info!(
                "{}: restarting it at {} as its type's `restart` asked",
                record.id,
                record
                    .restart_at
                    .map(|at| at.to_rfc3339())
                    .unwrap_or_default()
            );
            let port = self.inner.ports.lease_exact(record.port);
            self.install(number, record, Start::RestartPending, port, false);
        }
    }

    /// Looks for processes of worker `record` that the state file does not name (started
    /// by a hive killed before it saved their pid), by their marker: adopts their leader,
    /// or stops what a dead leader left. Gives the record back when there are none.
    fn adopt_unrecorded_run(
        &self,
        number: u64,
        mut record: WorkerRecord,
        port: Option<PortLease>,
    ) -> Option<WorkerRecord> {
        let marker = self.marker(&record.id);
        let marked = process::find_marked(&marker);
        let new_run = |record: &mut WorkerRecord, pid: u32, start_ticks: u64| {
            if record.is_launched() {
                // The next run of a worker that waited for its restart (when it started is
                // not known).
                restart::begin_next_run(record, pid, Some(start_ticks), None);
            } else {
                record.pid = pid;
                record.pgid = pid;
                record.start_ticks = Some(start_ticks);
            }
        };
        if let Some((pid, stat)) = marked.iter().find(|(pid, stat)| stat.pgid == *pid)
            && let Some(leader) = process::adopt(*pid, *pid, stat.start_ticks)
        {
            new_run(&mut record, *pid, stat.start_ticks);
            tracing::info!("adopted {} (pid {pid}), found by its marker", record.id);
            self.install(
                number,
                record,
                Start::Adopted {
                    leader,
                    resume: None,
                },
                port,
                false,
            );
            return None;
        }
        let Some(first_start) = marked.iter().map(|(_, stat)| stat.start_ticks).min() else {
            return Some(record);
        };
        let pgid = marked[0].1.pgid;
        new_run(&mut record, pgid, first_start);
        let members = Members::survivors(pgid, first_start, &marker);
        self.restore_dead_leader(number, record, members, port);
        None
    }

    /// Stops, in the background, the processes that carry this hive's marker for a worker the
    /// state file does not name: started by a hive that was killed while their reservation
    /// was being saved. Their spawn was never acknowledged (its ready line waits for that
    /// save), so nothing that was promised is lost; left running they would hold a port and
    /// a GPU for nobody. Only processes carrying the marker are signalled, each through its
    /// pidfd.
    ///
    /// Called at start-up, before anything is spawned: the ids this hive hands out are all
    /// above the highest id known now (its logs included), so only the processes of ids up
    /// to it are looked at — never a worker this hive starts while the scan runs.
    pub(crate) fn stop_unrecorded_runs(&self) {
        let prefix = format!("{}/", self.registry().instance());
        let recorded: std::collections::HashSet<String> = self
            .registry()
            .records()
            .into_iter()
            .map(|r| r.id)
            .collect();
        let highest_known = self.registry().last_id();
        let grace = self.inner.config.stop_grace;
        tokio::spawn(async move {
            let scan_prefix = prefix.clone();
            let found: Vec<String> =
                tokio::task::spawn_blocking(move || process::marked_ids(&scan_prefix))
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|id| is_unrecorded_run(id, highest_known, &recorded))
                    .collect();
            tracing::info!(
                "start-up scan: {} run(s) the state file does not name",
                found.len()
            );
            for id in found {
                let marker = format!("{prefix}{id}");
                tokio::spawn(stop_unrecorded(id, marker, grace));
            }
        });
    }
}

/// What is left of a recorded stop's grace.
fn remaining_grace(stop: &StopProgress) -> Duration {
    let elapsed = (Utc::now() - stop.requested_at)
        .to_std()
        .unwrap_or_default();
    Duration::from_millis(stop.grace_ms).saturating_sub(elapsed)
}

/// Whether marked processes of worker `id`, found at start-up, are a run the state file does
/// not name: an id known then (this hive hands out only higher ones) that no record has.
fn is_unrecorded_run(
    id: &str,
    highest_known: u64,
    recorded: &std::collections::HashSet<String>,
) -> bool {
    parse_id(id).is_some_and(|number| number <= highest_known) && !recorded.contains(id)
}

/// SIGTERM to the processes of an unrecorded run (those carrying `marker`, in any group),
/// SIGKILL after `grace` for those left; looked for again afterwards, for children forked
/// meanwhile, a few times at most.
async fn stop_unrecorded(id: String, marker: String, grace: Duration) {
    for round in 0..UNRECORDED_ROUNDS {
        let scan_marker = marker.clone();
        let groups = tokio::task::spawn_blocking(move || process::marked_members(&scan_marker))
            .await
            .unwrap_or_default();
        if groups.is_empty() {
            return;
        }
        let pids: Vec<u32> = groups.iter().flat_map(Members::pids).collect();
        match round {
            0 => tracing::warn!(
                "stopping {id} (pids {pids:?}): started by a hive that was killed before it recorded the worker; its spawn was never acknowledged"
            ),
            _ => tracing::warn!("stopping what is left of {id}: pids {pids:?}"),
        }
        let all_gone = || futures::future::join_all(groups.iter().map(Members::all_gone));
        for group in &groups {
            group.signal(process::Sig::Term);
        }
        if tokio::time::timeout(grace, all_gone()).await.is_err() {
            for group in &groups {
                group.signal(process::Sig::Kill);
            }
            if tokio::time::timeout(UNRECORDED_KILL_WAIT, all_gone())
                .await
                .is_err()
            {
                let left: Vec<u32> = groups.iter().flat_map(Members::still_running).collect();
                tracing::error!("{id}: processes {left:?} survive SIGKILL");
                return;
            }
        }
    }
}

/// How many times the processes of an unrecorded run are looked for and stopped.
const UNRECORDED_ROUNDS: usize = 3;

/// How long the processes of an unrecorded run may take to go after SIGKILL.
const UNRECORDED_KILL_WAIT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_stop_keeps_what_is_left_of_its_grace() {
        let mut stop = StopProgress::begin(StopReason::Delete, Duration::from_secs(5));
        stop.requested_at = Utc::now() - chrono::Duration::seconds(2);
        let left = remaining_grace(&stop);
        assert!(
            left <= Duration::from_secs(3) && left > Duration::from_millis(2500),
            "{left:?}"
        );
        stop.requested_at = Utc::now() - chrono::Duration::seconds(10);
        assert_eq!(remaining_grace(&stop), Duration::ZERO);
    }

    #[test]
    fn only_runs_of_ids_known_at_start_up_and_not_recorded_are_unrecorded() {
        let recorded: std::collections::HashSet<String> = ["worker-3".to_owned()].into();
        assert!(is_unrecorded_run("worker-5", 6, &recorded));
        assert!(!is_unrecorded_run("worker-3", 6, &recorded), "recorded");
        // Started by this hive after start-up, while the scan ran.
        assert!(!is_unrecorded_run("worker-7", 6, &recorded));
        assert!(!is_unrecorded_run("worker-07", 6, &recorded));
        assert!(!is_unrecorded_run("not-a-worker", 6, &recorded));
    }
}
