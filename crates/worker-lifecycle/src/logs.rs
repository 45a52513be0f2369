//! Worker logs: `<state_dir>/workers/worker-<n>.log`, the stdout and stderr of one worker.
//!
//! A log is created with `O_EXCL`, so a new worker never opens a file that another worker
//! still writes (ids are never reused, and the id counter is raised past every log found at
//! start-up, which also covers a state file that was lost). The log of every listed worker
//! is kept (a log is created by the worker's supervisor, so its worker is listed by then);
//! of removed workers, the most recent `keep` that are younger than `max_age`. The log with
//! the highest id is never removed: it carries the id counter through a lost state file.
//! Pruning runs at start-up and after removals, at most once a second.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::registry::{Registry, format_id, parse_id};

/// How many logs of removed workers are kept, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRetention {
    /// At most this many logs of removed workers (default 100).
    pub keep: usize,
    /// None older than this (default 7 days).
    pub max_age: Duration,
}

impl Default for LogRetention {
    fn default() -> Self {
        Self {
            keep: 100,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The path of a worker's log.
pub(crate) fn log_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{}.log", format_id(number)))
}

/// Creates a new worker's log; fails if the file exists.
pub(crate) fn create(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// The worker logs in `dir`: `(id number, path)`.
fn logs(dir: &Path) -> Vec<(u64, PathBuf)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let number = parse_id(name.to_str()?.strip_suffix(".log")?)?;
            Some((number, entry.path()))
        })
        .collect()
}

/// The highest worker id number that has a log in `dir`.
pub(crate) fn highest_logged_id(dir: &Path) -> u64 {
    logs(dir).into_iter().map(|(n, _)| n).max().unwrap_or(0)
}

/// Removes the logs of removed workers beyond `retention`; returns how many.
pub(crate) fn prune(dir: &Path, listed: &HashSet<u64>, retention: LogRetention) -> usize {
    let now = SystemTime::now();
    let all = logs(dir);
    let highest = all.iter().map(|(number, _)| *number).max();
    let mut removed: Vec<(SystemTime, PathBuf)> = all
        .into_iter()
        .filter(|(number, _)| !listed.contains(number) && Some(*number) != highest)
        .filter_map(|(_, path)| Some((std::fs::metadata(&path).ok()?.modified().ok()?, path)))
        .collect();
    // Newest first.
    removed.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    let mut pruned = 0;
    for (index, (modified, path)) in removed.into_iter().enumerate() {
        let too_old = now
            .duration_since(modified)
            .is_ok_and(|age| age > retention.max_age);
        if (index >= retention.keep || too_old) && std::fs::remove_file(&path).is_ok() {
            pruned += 1;
        }
    }
    pruned
}

/// Prunes at once, then after removals (at most once a second), until `stop`.
pub(crate) async fn janitor(
    dir: PathBuf,
    registry: Registry,
    retention: LogRetention,
    removed: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        let listed: HashSet<u64> = registry
            .records()
            .iter()
            .filter_map(|record| parse_id(&record.id))
            .collect();
        let dir = dir.clone();
        let pruned = tokio::task::spawn_blocking(move || prune(&dir, &listed, retention))
            .await
            .unwrap_or(0);
        if pruned > 0 {
            tracing::debug!("removed {pruned} old worker log(s)");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = removed.notified() => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_listed_logs_and_the_most_recent_removed_ones() {
        let dir = tempfile::tempdir().unwrap();
        for number in 1..=6 {
            let file = create(&log_path(dir.path(), number)).unwrap();
            // Older numbers are older files.
            let at = SystemTime::now() - Duration::from_secs(100 - number);
            file.set_modified(at).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "not a worker log").unwrap();
        assert!(create(&log_path(dir.path(), 3)).is_err(), "never reopened");
        assert_eq!(highest_logged_id(dir.path()), 6);
        let listed = HashSet::from([1]);
        let retention = LogRetention {
            keep: 2,
            max_age: Duration::from_secs(3600),
        };
        // worker-1 is listed; worker-6 has the highest id; of 2..=5 the newest two stay.
        assert_eq!(prune(dir.path(), &listed, retention), 2);
        let left = || {
            let mut left: Vec<u64> = logs(dir.path()).into_iter().map(|(n, _)| n).collect();
            left.sort();
            left
        };
        assert_eq!(left(), [1, 4, 5, 6]);
        assert!(dir.path().join("notes.txt").exists());
        let generous = LogRetention {
            keep: 100,
            max_age: Duration::from_secs(3600),
        };
        assert_eq!(prune(dir.path(), &listed, generous), 0);
        let strict = LogRetention {
            keep: 100,
            max_age: Duration::from_secs(1),
        };
        assert_eq!(prune(dir.path(), &listed, strict), 2);
        assert_eq!(left(), [1, 6]);
    }
}
