//! Worker processes: spawning into their own process group, signalling, waiting, reaping,
//! and the `/proc` proofs that a process is (still) a worker's.
//!
//! Each worker is started as the leader of a new process group (`setpgid(0, 0)`), so that
//! its whole tree can be signalled at once, with a marker in its environment
//! (`RBEE_HIVE_WORKER=<hive instance>/<worker id>`) that its children inherit. Exits are
//! awaited through pidfds (readable when the process ends), never by polling. The leader,
//! the hive's own child, is reaped only once it has exited; until then its pid and group id
//! cannot be reused and `killpg` reaches only the worker's processes. A group member that
//! outlives its leader keeps the group id in use (the kernel frees a pid number only when
//! no process uses it as pid, group or session id), so the survivors of a dead leader are
//! the processes of that group that started after it, as long as no other process holds
//! the leader's pid. Every signal to a process that is not the unreaped leader goes through
//! a pidfd opened, and checked to be a group member, before the signal. No pid of 0, 1, the
//! hive itself or its group is ever signalled.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use chrono::Utc;
use rustix::process::{Pid, Signal};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::procinfo::{StatFields, all_pids, has_marker, marker_of, stat_fields};
use crate::record::WorkerExit;

/// The environment variable that marks a worker's processes:
/// `<hive instance id>/<worker id>`.
pub(crate) const MARKER_VAR: &str = "RBEE_HIVE_WORKER";

/// The signals the hive sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sig {
    /// Please stop.
    Term,
    /// Stop now.
    Kill,
}

impl Sig {
    fn signal(self) -> Signal {
        match self {
            Self::Term => Signal::TERM,
            Self::Kill => Signal::KILL,
        }
    }
}

/// What to start: a resolved program, its arguments and environment changes.
#[derive(Debug)]
pub(crate) struct LaunchSpec {
    /// The program (resolved path).
    pub(crate) program: std::path::PathBuf,
    /// Its arguments.
    pub(crate) args: Vec<String>,
    /// Variables to set (the marker among them).
    pub(crate) env: Vec<(String, String)>,
    /// Variables to remove (`PREFIX*` removes a prefix).
    pub(crate) env_remove: Vec<String>,
}

/// A worker's leader process, owned by its supervisor.
pub(crate) struct Leader {
    pid: u32,
    ownership: Ownership,
    exited: AsyncFd<OwnedFd>,
}

/// How the hive holds the leader.
enum Ownership {
    /// The hive's own, unreaped child: its pid and group cannot be reused.
    Child(Child),
    /// Found again after a restart (proven by pid and start time when its pidfd was opened);
    /// not the hive's child, so every signal goes through pidfds.
    Adopted,
}

/// What the hive's service manager gave the hive alone (systemd's notify socket, watchdog
/// and socket activation): a worker that inherited them could speak for the hive, or take
/// the listening sockets for its own.
const SERVICE_MANAGER_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// Starts a process as the leader of its own process group, its output going to `log`.
pub(crate) fn launch(spec: LaunchSpec, log: File) -> std::io::Result<Leader> {
    let stderr = log.try_clone()?;
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr);
    for key in SERVICE_MANAGER_ENV {
        command.env_remove(key);
    }
    for pattern in &spec.env_remove {
        match pattern.strip_suffix('*') {
            Some(prefix) => {
                for (key, _) in std::env::vars_os() {
                    if key.to_string_lossy().starts_with(prefix) {
                        command.env_remove(key);
                    }
                }
            }
            None => {
                command.env_remove(pattern);
            }
        }
    }
    command.envs(spec.env.iter().map(|(k, v)| (k, v)));
    let mut child = command.spawn()?;
    let pid = child.id();
    match open_pidfd(pid).and_then(watch_pidfd) {
        Ok(exited) => Ok(Leader {
            pid,
            ownership: Ownership::Child(child),
            exited,
        }),
        Err(error) => {
            // Without a pidfd the hive could not wait for this process safely: undo the start.
            let _ = child.kill();
            let _ = child.wait();
            Err(std::io::Error::other(format!(
                "cannot watch the new process (pidfd_open: {error})"
            )))
        }
    }
}

/// Finds a recorded leader again after a restart: only if `pid` runs, is not a zombie, has
/// the recorded start time, and leads process group `pgid`, checked again after its pidfd is
/// open (from then on the pidfd names that very process, whatever happens to the pid).
/// `None` means it cannot be proven to be the worker; it must then never be signalled.
pub(crate) fn adopt(pid: u32, pgid: u32, start_ticks: u64) -> Option<Leader> {
    signallable(pid)?;
    let matches = || {
        stat_fields(pid)
            .is_some_and(|f| !f.zombie && f.start_ticks == start_ticks && f.pgid == pgid)
    };
    if !matches() {
        return None;
    }
    let fd = open_pidfd(pid).ok()?;
    if !matches() {
        return None;
    }
    Some(Leader {
        pid,
        ownership: Ownership::Adopted,
        exited: watch_pidfd(fd).ok()?,
    })
}

impl Leader {
    /// The leader's pid, which is also the process group id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Resolves once the leader has exited (a child stays unreaped until [`reap`](Self::reap)).
    pub(crate) async fn exited(&self) {
        // A pidfd becomes readable when its process ends and stays readable.
        let _ = self.exited.readable().await;
    }

    /// Sends `sig` to the whole process group; returns whether it reached anyone.
    ///
    /// For the hive's own child this is `killpg`, safe because the unreaped leader keeps the
    /// group id. For an adopted leader each member is signalled through its own pidfd, after
    /// checking that it is still in the worker's group.
    pub(crate) fn signal_group(&self, sig: Sig) -> bool {
        match self.ownership {
            Ownership::Child(_) => {
                let Some(pgid) = signallable(self.pid) else {
                    return false;
                };
                match rustix::process::kill_process_group(pgid, sig.signal()) {
                    Ok(()) => true,
                    Err(error) => {
                        tracing::debug!(pid = self.pid, "killpg {sig:?}: {error}");
                        false
                    }
                }
            }
            Ownership::Adopted => Members::scan(self.pid, None).signal(sig) > 0,
        }
    }

    /// Gives up on a leader that outlived SIGKILL: it is neither waited for nor signalled
    /// again (a child of the hive stays unreaped, so its pid cannot be reused).
    pub(crate) fn abandon(self) {
        tracing::error!(
            pid = self.pid,
            "giving up on a process that outlived SIGKILL"
        );
    }

    /// Reaps the leader (the hive's own child) and returns how it ended. Call only after
    /// [`exited`](Self::exited). An adopted process was reaped by another: its status is
    /// unknown.
    pub(crate) fn reap(self) -> WorkerExit {
        let status = match self.ownership {
            Ownership::Child(mut child) => child.wait().ok(),
            Ownership::Adopted => None,
        };
        WorkerExit {
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            at: Utc::now(),
        }
    }
}

/// Whether any process is in group `pgid` (a signal-0 probe: nothing is delivered). After
/// the leader is reaped, `false` means the group is empty.
pub(crate) fn group_has_members(pgid: u32) -> bool {
    let Some(pgid) = signallable(pgid) else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process_group(pgid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// Processes of a worker's group whose leader is gone, each held by a pidfd.
pub(crate) struct Members {
    pgid: u32,
    watched: Vec<(u32, AsyncFd<OwnedFd>)>,
}

impl Members {
    /// No process.
    pub(crate) fn none() -> Self {
        Self {
            pgid: 0,
            watched: Vec::new(),
        }
    }

    /// What is left of a worker's group once its leader is gone: the members of group `pgid`
    /// that started no earlier than the leader (`leader_start`) and carry the worker's
    /// marker (`RBEE_HIVE_WORKER=<marker>`) — none if another process holds the leader's pid.
    /// The marker matters once the group may have been empty: its id can then name an
    /// unrelated group whose leader has exited too.
    pub(crate) fn survivors(pgid: u32, leader_start: u64, marker: &str) -> Self {
        let mut members = Self::scan(pgid, Some(leader_start));
        members.watched.retain(|(pid, _)| has_marker(*pid, marker));
        members
    }

    /// The live members of group `pgid`, other than a process with pid `pgid`. With
    /// `leader_start`, only members that started no earlier than the leader, and none at
    /// all if a process that is not the leader holds the leader's pid (then the group id
    /// names someone else's group).
    pub(crate) fn scan(pgid: u32, leader_start: Option<u64>) -> Self {
        let empty = Self {
            pgid,
            watched: Vec::new(),
        };
        if signallable(pgid).is_none() {
            return empty;
        }
        if let Some(start) = leader_start
            && stat_fields(pgid).is_some_and(|f| !f.zombie && f.start_ticks != start)
        {
            return empty;
        }
        let is_member = |pid: u32| {
            stat_fields(pid).is_some_and(|f| {
                f.pgid == pgid && !f.zombie && leader_start.is_none_or(|s| f.start_ticks >= s)
            })
        };
        let watched = all_pids()
            .filter(|pid| *pid != pgid || leader_start.is_none())
            .filter(|pid| is_member(*pid) && signallable(*pid).is_some())
            .filter_map(|pid| {
                let fd = open_pidfd(pid).ok()?;
                // The pidfd pins the process; check again that it is the member we saw.
                is_member(pid).then_some(())?;
                Some((pid, watch_pidfd(fd).ok()?))
            })
            .collect();
        Self { pgid, watched }
    }

    /// The group they were found in.
    pub(crate) fn pgid(&self) -> u32 {
        self.pgid
    }

    /// Whether none was found.
    pub(crate) fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// Their pids.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.watched.iter().map(|(pid, _)| *pid).collect()
    }

    /// Signals each one still in the group, through its pidfd; returns how many.
    pub(crate) fn signal(&self, sig: Sig) -> usize {
        self.watched
            .iter()
            .filter(|(pid, fd)| {
                stat_fields(*pid).is_some_and(|f| f.pgid == self.pgid && !f.zombie)
                    && rustix::process::pidfd_send_signal(fd.get_ref(), sig.signal()).is_ok()
            })
            .count()
    }

    /// Resolves once every one of them has exited.
    pub(crate) async fn all_gone(&self) {
        futures::future::join_all(self.watched.iter().map(|(_, fd)| async move {
            let _ = fd.readable().await;
        }))
        .await;
    }

    /// Those still running.
    pub(crate) fn still_running(&self) -> Vec<u32> {
        self.watched
            .iter()
            .map(|(pid, _)| *pid)
            .filter(|pid| stat_fields(*pid).is_some_and(|f| !f.zombie))
            .collect()
    }
}

/// Live processes whose environment holds `RBEE_HIVE_WORKER=<marker>`, with their stat.
pub(crate) fn find_marked(marker: &str) -> Vec<(u32, StatFields)> {
    all_pids()
        .filter(|pid| signallable(*pid).is_some() && has_marker(*pid, marker))
        .filter_map(|pid| Some((pid, stat_fields(pid).filter(|f| !f.zombie)?)))
        .collect()
}

/// The worker ids in the markers (`<prefix><id>`, the prefix being `<hive instance>/`) of
/// live processes.
pub(crate) fn marked_ids(prefix: &str) -> std::collections::BTreeSet<String> {
    all_pids()
        .filter(|pid| signallable(*pid).is_some())
        .filter(|pid| stat_fields(*pid).is_some_and(|f| !f.zombie))
        .filter_map(|pid| marker_of(pid)?.strip_prefix(prefix).map(str::to_owned))
        .collect()
}

/// Every live process that carries `marker`, in whatever process group it is (a child may
/// have left its worker's group), as one [`Members`] per group, each held by pidfds.
pub(crate) fn marked_members(marker: &str) -> Vec<Members> {
    let groups: std::collections::BTreeSet<u32> = find_marked(marker)
        .into_iter()
        .map(|(_, stat)| stat.pgid)
        .collect();
    groups
        .into_iter()
        .map(|pgid| {
            let mut members = Members::scan(pgid, None);
            members.watched.retain(|(pid, _)| has_marker(*pid, marker));
            members
        })
        .filter(|members| !members.is_empty())
        .collect()
}

fn open_pidfd(pid: u32) -> std::io::Result<OwnedFd> {
    let raw = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::other(format!("pid {pid} is out of range")))?;
    Ok(rustix::process::pidfd_open(
        raw,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// Registers a pidfd with the Tokio reactor, to await its process's exit.
#[allow(unsafe_code)]
fn watch_pidfd(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `OwnedFd` is moved into the `AsyncFd`, so it stays open and names the same
    // pidfd for the `AsyncFd`'s whole life, and `OwnedFd::as_raw_fd` always returns it.
    Ok(unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?)
}

/// A pid that may be signalled: positive, above 1, within `i32`, and neither the hive itself
/// nor its process group.
pub(crate) fn signallable(pid: u32) -> Option<Pid> {
    let raw = i32::try_from(pid).ok().filter(|raw| *raw > 1)?;
    let own = std::process::id() as i32;
    let own_group = rustix::process::getpgrp().as_raw_nonzero().get();
    (raw != own && raw != own_group)
        .then(|| Pid::from_raw(raw))
        .flatten()
}

/// The last `max_lines` lines of a log file (at most 4 KiB), for failure messages.
pub(crate) fn log_tail(path: &Path, max_lines: usize) -> String {
    const MAX_BYTES: u64 = 4096;
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(MAX_BYTES);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let skip_partial = usize::from(start > 0 && !lines.is_empty());
    let lines = &lines[skip_partial..];
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn never_signals_special_pids() {
        assert!(signallable(0).is_none());
        assert!(signallable(1).is_none());
        assert!(signallable(u32::MAX).is_none());
        assert!(signallable(i32::MAX as u32 + 1).is_none());
        assert!(signallable(std::process::id()).is_none());
        assert!(signallable(rustix::process::getpgrp().as_raw_nonzero().get() as u32).is_none());
        assert!(signallable(12345).is_some());
    }

    #[test]
    fn tail_keeps_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(log_tail(&path, 2), "line 98\nline 99");
        assert_eq!(log_tail(&dir.path().join("missing"), 2), "");
    }

    #[tokio::test]
    async fn launches_in_own_group_and_waits_by_event() {
        let dir = tempfile::tempdir().unwrap();
        let log = File::create(dir.path().join("log")).unwrap();
        let leader = launch(
            LaunchSpec {
                program: "/bin/sh".into(),
                args: vec![
                    "-c".to_string(),
                    "echo hello; sleep 30 & exec sleep 30".to_string(),
                ],
                env: vec![(MARKER_VAR.into(), "test-instance/worker-1".into())],
                env_remove: Vec::new(),
            },
            log,
        )
        .unwrap();
        let pid = leader.pid();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while Members::scan(pid, None).pids().len() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the group never had 2 members"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(stat_fields(pid).unwrap().pgid, pid);
        let marked: Vec<u32> = find_marked("test-instance/worker-1")
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert!(marked.contains(&pid), "{marked:?}");
        // Members other than the leader, as a restarted hive would find them.
        let leader_start = stat_fields(pid).unwrap().start_ticks;
        let others = Members::scan(pid, Some(leader_start));
        assert_eq!(others.pids().len(), 1, "{:?}", others.pids());
        assert!(leader.signal_group(Sig::Term));
        tokio::time::timeout(Duration::from_secs(5), leader.exited())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), others.all_gone())
            .await
            .unwrap();
        let exit = leader.reap();
        assert_eq!(exit.signal, Some(15));
        // A member that exited may stay a zombie until its new parent reaps it: it still
        // counts for the kernel's group probe, but is no process to stop.
        assert!(Members::scan(pid, None).is_empty());
        assert!(others.still_running().is_empty());
    }
}
