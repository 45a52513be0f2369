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
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::catalog::{RestartPolicy, TemplateValues, WorkerTemplate};
use crate::process::{self, LaunchSpec};
use crate::record::{PAST_RUNS_KEPT, PastRun, WorkerRecord};

/// How the reason of a worker left `Failed` by its crash loop begins.
pub const CRASH_LOOP: &str = "crash loop:";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::RestartMode;
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
        let mut template = crate::catalog::Catalog::new(&Default::default(), None, None)
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
