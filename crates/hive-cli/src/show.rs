//! How the client shows things to people: a worker's state and uptime for `ps`, its whole
//! record for `get`, sizes in binary units (KiB, MiB, GiB). Pure functions of the typed
//! records, tested here.

use chrono::{DateTime, Utc};
use worker_lifecycle::{StopProgress, WorkerRecord, WorkerStats};

use crate::output::short_duration;

/// The state column of `ps`: `restarting` while a restart waits, `stopping` while a stop
/// is under way, else the status's label.
pub(crate) fn state(record: &WorkerRecord) -> &'static str {
    if record.restart_pending() {
        "restarting"
    } else if record.is_stopping() && !record.status.is_terminal() {
        "stopping"
    } else {
        record.status.label()
    }
}

/// How long its current run has been up (`-` once it has ended or before it started).
pub(crate) fn uptime(record: &WorkerRecord, now: DateTime<Utc>) -> String {
    let live = record.is_launched() && record.exit.is_none() && !record.status.is_terminal();
    match live {
        true => since(run_started_at(record), now),
        false => "-".to_owned(),
    }
}

/// When its current (or last) run started.
fn run_started_at(record: &WorkerRecord) -> DateTime<Utc> {
    record.run_started_at.unwrap_or(record.started_at)
}

fn since(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    short_duration(now.signed_duration_since(at).to_std().unwrap_or_default())
}

pub(crate) use crate::units::bytes;

/// A size given in MiB (as samples give memory), in binary units.
pub(crate) fn mebibytes(mib: f64) -> String {
    bytes((mib.max(0.0) * 1024.0 * 1024.0).round() as u64)
}

/// The CPU and memory columns of `ps`: `-` before the first sample of the current run.
pub(crate) fn cpu_and_memory(stats: Option<&WorkerStats>) -> (String, String) {
    match stats {
        Some(stats) => (format!("{:.1}%", stats.cpu_pct), mebibytes(stats.rss_mb)),
        None => ("-".to_owned(), "-".to_owned()),
    }
}

/// A sample as one line: `cpu 0.4%, memory 11.2 MiB, 1 process, 3 threads, GPU memory …`.
pub(crate) fn stats_line(stats: &WorkerStats, now: DateTime<Utc>) -> String {
    let plural = |n: u64, one: &str, many: &str| match n {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    };
    let mut parts = vec![
        format!("cpu {:.1}%", stats.cpu_pct),
        format!("memory {}", mebibytes(stats.rss_mb)),
        plural(u64::from(stats.processes), "process", "processes"),
        plural(stats.threads, "thread", "threads"),
    ];
    if let Some(vram) = stats.vram_mb {
        let total = stats
            .total_vram_mb
            .map(|total| format!(" of {}", mebibytes(total)))
            .unwrap_or_default();
        parts.push(format!("GPU memory {}{total}", mebibytes(vram)));
    }
    if let Some(util) = stats.gpu_util_pct {
        parts.push(format!("GPU {util:.0}% busy"));
    }
    parts.push(format!("sampled {} ago", since(stats.sampled_at, now)));
    parts.join(", ")
}

/// A time as `2026-12-07 18:30:01 UTC (5m12s ago)`.
fn when(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let ago = match at <= now {
        true => format!("{} ago", since(at, now)),
        false => format!("in {}", since(now, at)),
    };
    format!("{} ({ago})", at.format("%Y-%m-%d %H:%M:%S UTC"))
}

/// How a stop went, or is going: `delete, grace 10s: SIGTERM at …, done at … (SIGKILL was needed)`.
fn stop_line(stop: &StopProgress, now: DateTime<Utc>) -> String {
    let reason = serde_json::to_value(stop.reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
        .replace('_', " ");
    let grace = short_duration(std::time::Duration::from_millis(stop.grace_ms));
    let mut text = format!(
        "{reason}, grace {grace}, asked {}",
        when(stop.requested_at, now)
    );
    match stop.finished_at {
        Some(finished) => text.push_str(&format!(", done {}", when(finished, now))),
        None => text.push_str(", under way"),
    }
    if stop.sigkill_at.is_some() {
        text.push_str(" (SIGKILL was needed)");
    }
    if !stop.stuck.is_empty() {
        text.push_str(&format!("; still there after SIGKILL: {:?}", stop.stuck));
    }
    if let Some(detail) = &stop.detail {
        text.push_str(&format!("; {detail}"));
    }
    text
}

/// The lines of `get`: one `label: value` per thing a person wants to know, in the order
/// they want it.
pub(crate) fn record_lines(
    record: &WorkerRecord,
    stats: Option<&WorkerStats>,
    now: DateTime<Utc>,
) -> Vec<(&'static str, String)> {
    let mut lines = vec![
        ("id", record.id.clone()),
        ("model", record.model_id.clone()),
        ("type", record.worker_type.clone()),
        ("device", record.device.clone()),
        ("status", record.status.describe()),
    ];
    if record.is_stopping() && !record.status.is_terminal() {
        lines.push(("state", "stopping".to_owned()));
    }
    lines.push(("pid", record.pid.to_string()));
    lines.push(("port", record.port.to_string()));
    lines.push(("url", record.url.clone()));
    lines.push(("started", when(record.started_at, now)));
    if let Some(run) = record
        .run_started_at
        .filter(|run| *run != record.started_at)
    {
        lines.push(("this run started", when(run, now)));
    }
    if let Some(ready) = record.ready_at {
        lines.push(("ready", when(ready, now)));
    }
    if let Some(heartbeat) = record.last_heartbeat {
        let health = record
            .health
            .and_then(|h| serde_json::to_value(h).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .map(|h| format!(", {h}"))
            .unwrap_or_default();
        lines.push((
            "last heartbeat",
            format!("{}{health}", when(heartbeat, now)),
        ));
    }
    if let Some(exit) = &record.exit {
        lines.push(("exit", format!("{exit}, {}", when(exit.at, now))));
    }
    if let Some(stop) = &record.stop {
        lines.push(("stop", stop_line(stop, now)));
    }
    if record.restart_count > 0 || record.restart_pending() {
        let next = record
            .restart_at
            .map(|at| format!("; next run {}", when(at, now)))
            .unwrap_or_default();
        lines.push(("restarts", format!("{}{next}", record.restart_count)));
    }
    for run in &record.past_runs {
        lines.push((
            "past run",
            format!(
                "pid {}, started {}: {}",
                run.pid,
                run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                run.reason
            ),
        ));
    }
    lines.push(("command", record.command.join(" ")));
    lines.push(("log", record.log_path.display().to_string()));
    lines.push((
        "stats",
        match stats {
            Some(stats) => stats_line(stats, now),
            None => NO_SAMPLE.to_owned(),
        },
    ));
    lines
}

/// What `stats` reads before the first sample of a run (and once it has ended).
pub(crate) const NO_SAMPLE: &str = "no sample yet";

#[cfg(test)]
mod tests {
    use super::*;
    use worker_lifecycle::{StopReason, WorkerExit, WorkerStatus};

    fn record() -> WorkerRecord {
        serde_json::from_value(serde_json::json!({
            "id": "worker-1", "model_id": "m", "worker_type": "demo", "device": "CPU-0",
            "pid": 42, "port": 9100, "status": "Ready",
            "started_at": "2026-12-07T18:00:00Z", "url": "http://127.0.0.1:9100",
            "command": ["rbee-hive", "demo-worker"], "log_path": "/s/workers/worker-1.log"
        }))
        .unwrap()
    }

    fn now() -> DateTime<Utc> {
        "2026-12-07T18:05:12Z".parse().unwrap()
    }

    fn sample(pid: u32) -> WorkerStats {
        WorkerStats {
            processes: 1,
            threads: 3,
            rss_mb: 11.25,
            cpu_pct: 0.4,
            io_r_mb_s: 0.0,
            io_w_mb_s: 0.0,
            uptime_s: 312,
            pids: vec![pid],
            vram_mb: None,
            gpu_util_pct: None,
            total_vram_mb: None,
            sampled_at: "2026-12-07T18:05:11Z".parse().unwrap(),
        }
    }

    #[test]
    fn memory_samples_read_in_binary_units() {
        assert_eq!(mebibytes(11.25), "11.2 MiB");
        assert_eq!(mebibytes(18_636.8), "18.20 GiB");
    }

    #[test]
    fn state_and_uptime_of_ps() {
        let mut worker = record();
        assert_eq!(state(&worker), "ready");
        assert_eq!(uptime(&worker, now()), "5m12s");
        worker.restart_at = Some(now());
        worker.exit = Some(WorkerExit {
            code: Some(3),
            signal: None,
            at: now(),
        });
        assert_eq!(state(&worker), "restarting");
        assert_eq!(uptime(&worker, now()), "-");
        let mut stopping = record();
        stopping.stop = Some(StopProgress {
            reason: StopReason::Delete,
            grace_ms: 10_000,
            requested_at: now(),
            sigterm_at: None,
            sigkill_at: None,
            finished_at: None,
            stuck: vec![],
            detail: None,
        });
        assert_eq!(state(&stopping), "stopping");
    }

    #[test]
    fn a_restarting_worker_shows_no_sample_of_its_dead_run() {
        let mut worker = record();
        let old_run = sample(42);
        assert!(old_run.is_of_current_run(&worker));
        worker.exit = Some(WorkerExit {
            code: None,
            signal: Some(9),
            at: now(),
        });
        worker.restart_at = Some(now());
        assert!(!old_run.is_of_current_run(&worker));
        // The next run has another pid: the old run's sample is not its own.
        worker.exit = None;
        worker.restart_at = None;
        worker.pid = 43;
        assert!(!old_run.is_of_current_run(&worker));
        assert_eq!(cpu_and_memory(None), ("-".to_owned(), "-".to_owned()));
    }

    #[test]
    fn get_shows_a_readable_record() {
        let mut worker = record();
        worker.status = WorkerStatus::Failed {
            reason: "killed by signal 9 (SIGKILL)".into(),
        };
        worker.exit = Some(WorkerExit {
            code: None,
            signal: Some(9),
            at: now(),
        });
        let lines = record_lines(&worker, None, now());
        let value = |label: &str| {
            lines
                .iter()
                .find(|(l, _)| *l == label)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            value("status"),
            Some("failed: killed by signal 9 (SIGKILL)")
        );
        assert_eq!(
            value("started"),
            Some("2026-12-07 18:00:00 UTC (5m12s ago)")
        );
        assert_eq!(
            value("exit").map(|e| e.starts_with("signal 9 (SIGKILL), ")),
            Some(true)
        );
        assert_eq!(value("stats"), Some(NO_SAMPLE));
        assert_eq!(value("command"), Some("rbee-hive demo-worker"));
        assert!(!lines.iter().any(|(_, v)| v.contains('{')), "{lines:?}");
        let ready = record();
        let lines = record_lines(&ready, Some(&sample(42)), now());
        let stats = &lines.iter().find(|(l, _)| *l == "stats").unwrap().1;
        assert_eq!(
            stats,
            "cpu 0.4%, memory 11.2 MiB, 1 process, 3 threads, sampled 1s ago"
        );
    }
}
