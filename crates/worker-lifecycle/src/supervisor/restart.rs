//! Restarts of failed workers (a worker type's `restart = "on-failure"`): whether a run that
//! failed is followed by another and after which wait, how the next run is started, and the
//! "crash loop" reason once the limit is reached.
//!
//! Only a worker that was ready once is restarted (a spawn that never became ready is that
//! spawn's failure, reported to its job). A failure is an exit with a non-zero code or a
//! signal, or a run that does not become ready in time; never a delete, a cancelled spawn,
//! a shutdown, or a worker lost while the hive was down. The next run is the recorded
//! command line again, with the same id, port and log (its output appended after a line of
//! the hive's, so no run's output is lost), and the environment of its type as configured
//! now (a reload may have changed it).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Proc, Supervisor};
use crate::record::{StopReason, WorkerExit, WorkerStatus};

use crate::events::WorkerTransition;
use crate::process::{self, LaunchSpec};
use crate::procinfo;
use crate::record::{PAST_RUNS_KEPT, PastRun, WorkerRecord};
use crate::worker_types::{TemplateValues, WorkerTemplate, WorkerTypeConfig, seconds_in};

/// How the reason of a worker left `Failed` by its crash loop begins.
const CRASH_LOOP: &str = "crash loop:";

/// How the line that the hive writes into a worker's log before each restarted run begins.
const RUN_HEADER: &str = "==== rbee-hive:";

/// How many lines of the last run's output go into a crash-loop reason.
const CRASH_OUTPUT_LINES: usize = 10;

/// What follows a failed run of a worker whose type restarts on failure.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Next {
    /// Start it again after this wait.
    Restart {
        /// The backoff.
        delay: Duration,
    },
    /// Too many failures in the window: it stays `Failed` with this reason.
    CrashLoop {
        /// "crash loop: N exits in W s …", with the last run's output.
        reason: String,
    },
}

/// What follows the run of `record` that just failed at `now` (`why`: its failure).
pub(crate) fn next(
    policy: &RestartPolicy,
    record: &WorkerRecord,
    now: DateTime<Utc>,
    why: &str,
) -> Next {
    let window = chrono::Duration::from_std(policy.window).unwrap_or(chrono::Duration::MAX);
    let since = now
        .checked_sub_signed(window)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let recent = record
        .past_runs
        .iter()
        .filter(|run| run.exit.at > since)
        .count() as u32;
    if recent < policy.max_restarts {
        return Next::Restart {
            delay: policy.delay(recent),
        };
    }
    let output = last_run_output(&record.log_path, CRASH_OUTPUT_LINES);
    let output = match output.is_empty() {
        true => String::new(),
        false => format!("; its last output:\n{output}"),
    };
    Next::CrashLoop {
        reason: format!(
            "{CRASH_LOOP} {} exits in {} (max_restarts = {}); last failure: {why}{output}",
            recent + 1,
            seconds(policy.window),
            policy.max_restarts
        ),
    }
}

/// Adds the run that just failed to `record`'s past runs, keeping the most recent
/// [`PAST_RUNS_KEPT`] (or as many as `policy` counts, if more).
pub(crate) fn remember_run(record: &mut WorkerRecord, run: PastRun, policy_max: u32) {
    record.past_runs.push(run);
    let keep = PAST_RUNS_KEPT.max(policy_max as usize);
    let excess = record.past_runs.len().saturating_sub(keep);
    record.past_runs.drain(..excess);
}

/// Makes `record` that of its next run, led by `pid` (started at `started`, when known):
/// `Starting`, nothing of the last run's exit, stop or health, one restart more.
pub(crate) fn begin_next_run(
    record: &mut WorkerRecord,
    pid: u32,
    start_ticks: Option<u64>,
    started: Option<DateTime<Utc>>,
) {
    record.pid = pid;
    record.pgid = pid;
    record.start_ticks = start_ticks;
    record.status = crate::record::WorkerStatus::Starting;
    record.exit = None;
    record.stop = None;
    record.health = None;
    record.last_heartbeat = None;
    record.restart_at = None;
    record.restart_count += 1;
    record.run_started_at = started;
}

/// "60 s", "0.5 s".
fn seconds(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    match seconds.fract() == 0.0 {
        true => format!("{seconds:.0} s"),
        false => format!("{seconds} s"),
    }
}

/// How the next run of `record` is started: its recorded command line, the environment of
/// `template` filled with the record's values, the processes marked with `marker`.
pub(crate) fn launch_spec(
    template: &WorkerTemplate,
    record: &WorkerRecord,
    urls: (&str, &str),
    marker: String,
) -> Result<LaunchSpec, String> {
    let (program, args) = record
        .command
        .split_first()
        .ok_or("its recorded command line is empty")?;
    let device_ordinal = record
        .device
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let values = TemplateValues {
        worker_id: &record.id,
        model: &record.model_id,
        port: record.port,
        device: &record.device,
        device_ordinal,
        hive_url: urls.0,
        queen_url: urls.1,
    };
    let env = template
        .worker_env(&values, marker)
        .map_err(|e| e.to_string())?;
    Ok(LaunchSpec {
        program: program.into(),
        args: args.to_vec(),
        env,
        env_remove: template.env_remove.clone(),
    })
}

/// Opens a worker's log for its next run: appends a line of the hive's that says which run
/// begins and how the last one ended, then the run's output follows.
pub(crate) fn open_log_for_run(record: &WorkerRecord) -> std::io::Result<File> {
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&record.log_path)?;
    let last = record
        .past_runs
        .last()
        .map(|run| run.reason.as_str())
        .unwrap_or("unknown");
    writeln!(
        log,
        "{RUN_HEADER} {} restart {} at {}; last failure: {last} ====",
        record.id,
        record.restart_count + 1,
        Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )?;
    Ok(log)
}

/// The last `max_lines` lines of the last run's output (after the hive's last run line).
pub(crate) fn last_run_output(log: &Path, max_lines: usize) -> String {
    let tail = process::log_tail(log, 200);
    let lines: Vec<&str> = tail.lines().collect();
    let start = lines
        .iter()
        .rposition(|line| line.starts_with(RUN_HEADER))
        .map_or(0, |header| header + 1);
    let run = &lines[start..];
    run[run.len().saturating_sub(max_lines)..].join("\n")
}

/// Whether workers of a type are started again when they fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// A worker that ends stays ended.
    #[default]
    Never,
    /// A worker that was ready once and then exits with a non-zero code, is killed by a
    /// signal, or does not become ready again in time is started again.
    OnFailure,
}

/// The restart policy of a worker type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Whether to restart at all.
    pub mode: RestartMode,
    /// At most this many restarts within `window`.
    pub max_restarts: u32,
    /// The window `max_restarts` counts in.
    pub window: Duration,
    /// The wait before the first restart in the window.
    pub backoff: Duration,
    /// The longest wait.
    pub backoff_max: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            mode: RestartMode::Never,
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff: Duration::from_millis(1000),
            backoff_max: Duration::from_secs(30),
        }
    }
}

impl RestartPolicy {
    /// The wait before the next run, after `recent` restarts within the window: `backoff`
    /// doubled for each, at most `backoff_max`.
    pub fn delay(&self, recent: u32) -> Duration {
        let factor = 2u32.saturating_pow(recent.min(31));
        self.backoff.saturating_mul(factor).min(self.backoff_max)
    }
}

impl RestartPolicy {
    /// The policy a worker type's keys give, over `base` (a built-in type's policy, or the
    /// default); the reason when a value is out of bounds.
    pub(crate) fn from_config(
        config: &WorkerTypeConfig,
        base: Option<RestartPolicy>,
    ) -> Result<RestartPolicy, &'static str> {
        const HOUR_MS: u64 = 3_600_000;
        let base = base.unwrap_or_default();
        let window = match config.restart_window_s {
            Some(seconds) => seconds_in(seconds, 86_400.0)
                .ok_or("`restart_window_s` must be between 0 and 86400")?,
            None => base.window,
        };
        let backoff_ms = config
            .restart_backoff_ms
            .unwrap_or(base.backoff.as_millis() as u64);
        let backoff_max_ms = config
            .restart_backoff_max_ms
            .unwrap_or((base.backoff_max.as_millis() as u64).max(backoff_ms));
        if backoff_ms > HOUR_MS || backoff_max_ms > HOUR_MS {
            return Err(
                "`restart_backoff_ms` and `restart_backoff_max_ms` must be at most 3600000",
            );
        }
        if backoff_max_ms < backoff_ms {
            return Err("`restart_backoff_max_ms` must not be below `restart_backoff_ms`");
        }
        let max_restarts = config.max_restarts.unwrap_or(base.max_restarts);
        // Each restart in the window is kept in the record (`past_runs`), which the state
        // file holds.
        if max_restarts > 100 {
            return Err("`max_restarts` must be at most 100");
        }
        Ok(RestartPolicy {
            mode: config.restart.unwrap_or(base.mode),
            max_restarts,
            window,
            backoff: Duration::from_millis(backoff_ms),
            backoff_max: Duration::from_millis(backoff_max_ms),
        })
    }
}

/// How a run ended, as far as the restart policy cares.
pub(super) struct RunEnd<'a> {
    /// Why the hive stopped it, if it did.
    pub(super) stop: Option<StopReason>,
    /// The status it ended with.
    pub(super) status: &'a WorkerStatus,
    /// How its leader ended.
    pub(super) exit: &'a WorkerExit,
    /// Its leader died while the hive was down.
    pub(super) lost: bool,
    /// It leaves the registry (deleted, or its spawn cancelled).
    pub(super) removed: bool,
    /// Processes of it survived SIGKILL.
    pub(super) stuck: bool,
    /// It was ready once.
    pub(super) was_ready: bool,
    /// The hive is shutting down: no new run.
    pub(super) restarts_held: bool,
}

/// Whether a run that ended so is followed by another under `mode`: the failure it counts
/// as (its reason), or `None`.
///
/// Only a failure on its own is restarted — a non-zero exit, a signal, or not being ready
/// again in time — of a worker that was ready once (a spawn that never became ready is
/// that spawn's failure, reported to its job). Never: a clean exit, a delete or a cancelled
/// spawn, a shutdown, a worker lost while the hive was down, an adopted leader whose exit
/// the hive cannot know (it may have been clean), processes stuck after SIGKILL (they hold
/// the port and perhaps the GPU: a new run would only fail beside them).
pub(super) fn restart_wanted<'a>(ended: &RunEnd<'a>, mode: RestartMode) -> Option<&'a str> {
    let WorkerStatus::Failed { reason } = ended.status else {
        return None;
    };
    let failed_on_its_own = matches!(
        ended.stop,
        None | Some(StopReason::LeaderExited | StopReason::ReadyTimeout)
    );
    let unknown_exit = ended.exit.code.is_none() && ended.exit.signal.is_none();
    let eligible = mode == RestartMode::OnFailure
        && failed_on_its_own
        && ended.was_ready
        && !(ended.lost || ended.removed || ended.stuck || unknown_exit || ended.restarts_held);
    eligible.then_some(reason.as_str())
}

impl Supervisor {
    /// What follows a run that ended with `status` (after a stop for `reason`, if any) when
    /// its type restarts on failure: with the type's `max_restarts`.
    pub(super) fn after_failure(
        &self,
        reason: Option<StopReason>,
        status: &WorkerStatus,
        exit: &WorkerExit,
    ) -> Option<(Next, u32)> {
        // A clone: the crash-loop reason reads the log, not to be done under the borrow.
        let record = self.record.borrow().clone();
        let policy = self
            .context
            .worker_types()
            .get(&record.worker_type)
            .map(|template| template.restart)
            .unwrap_or_default();
        let ended = RunEnd {
            stop: reason,
            status,
            exit,
            lost: self.lost,
            removed: self.remove,
            stuck: !self.stuck.is_empty(),
            was_ready: record.ready_at.is_some(),
            restarts_held: self.context.restarts_held.load(Ordering::SeqCst),
        };
        let why = restart_wanted(&ended, policy.mode)?;
        let next = next(&policy, &record, Utc::now(), why);
        if let Next::CrashLoop { reason } = &next {
            tracing::error!(worker = %record.id, "{reason}");
        }
        Some((next, policy.max_restarts))
    }

    /// Starts the next run of a worker whose restart is due (and recorded, unless
    /// `recorded` says the state file could not be written).
    pub(super) fn relaunch(&mut self, recorded: Result<(), crate::LifecycleError>) {
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
        let worker_types = self.context.worker_types();
        let template = match worker_types.get(&record.worker_type) {
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
        let launched = launch_spec(template, &record, urls, marker).and_then(|spec| {
            let program = spec.program.display().to_string();
            open_log_for_run(&record)
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
        let start_ticks = procinfo::stat_fields(pid).map(|f| f.start_ticks);
        tracing::info!(worker = %record.id, "started again (pid {pid}, restart {})", record.restart_count + 1);
        self.exit = None;
        self.process = Proc::Leader(leader);
        let restarted = WorkerTransition::Restarted {
            restart_count: record.restart_count + 1,
        };
        let recorded = self.publish(true, vec![restarted], |record| {
            begin_next_run(record, pid, start_ticks, Some(Utc::now()));
        });
        self.probe = Some(self.readiness_probe(recorded));
    }

    /// A pending restart is not made: the worker stays `Failed` with its last run's failure.
    pub(super) fn give_up_restart(&mut self, why: &str) {
        self.restart = None;
        self.port = None;
        tracing::warn!(worker = %self.id(), "not restarted: {why}");
        self.publish(true, vec![WorkerTransition::RestartAbandoned], |record| {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{WorkerExit, WorkerStatus};

    fn record(log_path: &Path, exits_ago_s: &[i64]) -> WorkerRecord {
        let now = Utc::now();
        let run = |ago: i64| PastRun {
            pid: 100,
            started_at: now - chrono::Duration::seconds(ago + 1),
            exit: WorkerExit {
                code: Some(3),
                signal: None,
                at: now - chrono::Duration::seconds(ago),
            },
            reason: "exited with code 3".into(),
            restart_at: now,
        };
        WorkerRecord {
            id: "worker-7".into(),
            model_id: "m".into(),
            worker_type: "demo".into(),
            device: "GPU-2".into(),
            pid: 100,
            port: 9100,
            pgid: 100,
            start_ticks: None,
            status: WorkerStatus::Ready,
            started_at: now,
            url: String::new(),
            ready_at: Some(now),
            last_heartbeat: None,
            health: None,
            stop: None,
            exit: None,
            restart_count: exits_ago_s.len() as u32,
            restart_at: None,
            past_runs: exits_ago_s.iter().map(|ago| run(*ago)).collect(),
            run_started_at: None,
            command: vec!["/bin/worker".into(), "--port".into(), "9100".into()],
            log_path: log_path.to_owned(),
        }
    }

    fn policy() -> RestartPolicy {
        RestartPolicy {
            mode: RestartMode::OnFailure,
            max_restarts: 3,
            window: Duration::from_secs(60),
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
        }
    }

    #[test]
    fn backs_off_within_the_window_and_stops_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker-7.log");
        let now = Utc::now();
        let delay = |exits: &[i64]| match next(&policy(), &record(&log, exits), now, "x") {
            Next::Restart { delay } => Some(delay.as_millis()),
            Next::CrashLoop { .. } => None,
        };
        assert_eq!(delay(&[]), Some(100));
        assert_eq!(delay(&[10]), Some(200));
        assert_eq!(delay(&[20, 10]), Some(400));
        // Runs that failed before the window do not count.
        assert_eq!(delay(&[300, 200, 100, 10]), Some(200));

        let mut first = record(&log, &[]);
        first.restart_count = 0;
        std::fs::write(&log, "run one\n").unwrap();
        let mut file = open_log_for_run(&first).unwrap();
        writeln!(file, "run two, line 1\nrun two, line 2").unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.starts_with("run one\n==== rbee-hive: worker-7 restart 1 at "),
            "{text}"
        );
        assert_eq!(
            last_run_output(&log, 10),
            "run two, line 1\nrun two, line 2"
        );
        assert_eq!(last_run_output(&log, 1), "run two, line 2");

        match next(
            &policy(),
            &record(&log, &[30, 20, 10]),
            now,
            "exited with code 3",
        ) {
            Next::CrashLoop { reason } => assert_eq!(
                reason,
                "crash loop: 4 exits in 60 s (max_restarts = 3); last failure: exited with \
                 code 3; its last output:\nrun two, line 1\nrun two, line 2"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_next_run_is_the_recorded_command_with_the_types_environment() {
        let dir = tempfile::tempdir().unwrap();
        let record = record(&dir.path().join("w.log"), &[]);
        let mut template = crate::worker_types::WorkerTypes::new(&Default::default(), None, None)
            .unwrap()
            .get("llama")
            .unwrap()
            .clone();
        template
            .env
            .insert("WHO".into(), "{worker_id}@{hive_url}".into());
        let spec =
            launch_spec(&template, &record, ("http://hive", ""), "i/worker-7".into()).unwrap();
        assert_eq!(spec.program, Path::new("/bin/worker"));
        assert_eq!(spec.args, ["--port", "9100"]);
        assert!(
            spec.env
                .contains(&("CUDA_VISIBLE_DEVICES".into(), "2".into()))
        );
        assert!(
            spec.env
                .contains(&("WHO".into(), "worker-7@http://hive".into()))
        );
        assert_eq!(
            spec.env.last().unwrap(),
            &("RBEE_HIVE_WORKER".into(), "i/worker-7".into())
        );
        assert_eq!(spec.env_remove, ["LLAMA_ARG_*"]);
    }

    #[test]
    fn only_a_failure_on_its_own_of_a_worker_ready_once_is_restarted() {
        let failed = WorkerStatus::Failed {
            reason: "exited with code 3".into(),
        };
        let code = |code| WorkerExit {
            code: Some(code),
            signal: None,
            at: Utc::now(),
        };
        let (exit_3, unknown) = (
            code(3),
            WorkerExit {
                code: None,
                signal: None,
                at: Utc::now(),
            },
        );
        let base = RunEnd {
            stop: None,
            status: &failed,
            exit: &exit_3,
            lost: false,
            removed: false,
            stuck: false,
            was_ready: true,
            restarts_held: false,
        };
        let on = RestartMode::OnFailure;
        assert_eq!(restart_wanted(&base, on), Some("exited with code 3"));
        assert_eq!(
            restart_wanted(&base, RestartMode::Never),
            None,
            "the type says never"
        );
        for stop in [StopReason::LeaderExited, StopReason::ReadyTimeout] {
            let ended = RunEnd {
                stop: Some(stop),
                ..base
            };
            assert!(restart_wanted(&ended, on).is_some(), "{stop:?}");
        }
        for stop in [
            StopReason::Delete,
            StopReason::Shutdown,
            StopReason::SpawnCancelled,
            StopReason::Lost,
        ] {
            let ended = RunEnd {
                stop: Some(stop),
                ..base
            };
            assert_eq!(restart_wanted(&ended, on), None, "{stop:?}");
        }
        let stopped = WorkerStatus::Stopped;
        let not_restarted = [
            RunEnd {
                status: &stopped,
                ..base
            },
            RunEnd { lost: true, ..base },
            RunEnd {
                removed: true,
                ..base
            },
            RunEnd {
                stuck: true,
                ..base
            },
            RunEnd {
                was_ready: false,
                ..base
            },
            RunEnd {
                restarts_held: true,
                ..base
            },
            RunEnd {
                exit: &unknown,
                ..base
            },
        ];
        for (n, ended) in not_restarted.iter().enumerate() {
            assert_eq!(restart_wanted(ended, on), None, "case {n}");
        }
    }

    #[test]
    fn keeps_the_most_recent_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = record(&dir.path().join("w.log"), &[]);
        let run = |pid| PastRun {
            pid,
            started_at: Utc::now(),
            exit: WorkerExit::unknown(),
            reason: String::new(),
            restart_at: Utc::now(),
        };
        for pid in 0..30 {
            remember_run(&mut record, run(pid), 3);
        }
        assert_eq!(record.past_runs.len(), PAST_RUNS_KEPT);
        assert_eq!(record.past_runs[0].pid, 10);
        remember_run(&mut record, run(30), 40);
        assert_eq!(record.past_runs.len(), PAST_RUNS_KEPT + 1);
    }
}
