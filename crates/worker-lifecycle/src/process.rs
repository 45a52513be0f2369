//! Worker processes: spawning into their own process group, signalling, waiting, reaping.
//!
//! Each worker is started as the leader of a new process group (`setpgid(0, 0)`), so that
//! its whole tree can be signalled at once. Its exit is awaited through a pidfd (readable
//! when the process ends), never by polling. The leader is reaped only after the rest of
//! its group is gone: until then it is an unreaped child (a zombie at worst), so its pid
//! and process group id cannot be reused and `killpg` can only reach the worker's own
//! processes. No pid of 0, 1, the hive itself or its group is ever signalled.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::record::WorkerExit;

/// What to start: a resolved program, its arguments and environment changes.
#[derive(Debug)]
pub struct LaunchSpec<'a> {
    /// The program (resolved path).
    pub program: &'a Path,
    /// Its arguments.
    pub args: &'a [String],
    /// Variables to set.
    pub env: &'a [(String, String)],
    /// Variables to remove (`PREFIX*` removes a prefix).
    pub env_remove: &'a [String],
    /// Where stdout and stderr go.
    pub log: File,
}

/// A worker process, owned by its supervisor.
pub struct WorkerProcess {
    pid: u32,
    ownership: Ownership,
    exited: AsyncFd<OwnedFd>,
}

/// How the hive holds the process.
enum Ownership {
    /// The hive's own, unreaped child: its pid and group cannot be reused.
    Child(Child),
    /// Found again after a restart (proven by pid and start time when its pidfd was opened);
    /// not the hive's child, so every signal goes through a pidfd.
    Adopted,
    /// Reaped (or, when adopted, seen to exit): never signalled again.
    Gone,
}

impl std::fmt::Debug for WorkerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ownership = match self.ownership {
            Ownership::Child(_) => "child",
            Ownership::Adopted => "adopted",
            Ownership::Gone => "gone",
        };
        f.debug_struct("WorkerProcess")
            .field("pid", &self.pid)
            .field("ownership", &ownership)
            .finish()
    }
}

/// Starts a process as the leader of its own process group.
pub fn launch(spec: LaunchSpec<'_>) -> std::io::Result<WorkerProcess> {
    let stderr = spec.log.try_clone()?;
    let mut command = Command::new(spec.program);
    command
        .args(spec.args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(spec.log)
        .stderr(stderr);
    for pattern in spec.env_remove {
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
    let exited = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| std::io::Error::other("the kernel returned pid 0"))
        .and_then(|raw| {
            rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())
                .map_err(Into::into)
        })
        .and_then(watch_pidfd);
    match exited {
        Ok(exited) => Ok(WorkerProcess {
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

/// Finds a recorded worker again after a restart: only if `pid` runs, is not a zombie, has
/// the recorded start time, and leads process group `pgid`, checked again after its pidfd is
/// open (from then on the pidfd names that very process, whatever happens to the pid).
/// `None` means it cannot be proven to be the worker; it must then never be signalled.
pub fn adopt(pid: u32, pgid: u32, start_ticks: Option<u64>) -> Option<WorkerProcess> {
    let expected = start_ticks?;
    signallable(pid)?;
    let matches = || {
        stat_fields(pid).is_some_and(|f| !f.zombie && f.start_ticks == expected && f.pgid == pgid)
    };
    if !matches() {
        return None;
    }
    let raw = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
    let fd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()).ok()?;
    if !matches() {
        return None;
    }
    let exited = watch_pidfd(fd).ok()?;
    Some(WorkerProcess {
        pid,
        ownership: Ownership::Adopted,
        exited,
    })
}

impl WorkerProcess {
    /// The leader's pid, which is also the process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Resolves once the leader has exited (it stays unreaped until [`reap`](Self::reap)).
    pub async fn exited(&self) {
        // A pidfd becomes readable when its process ends and stays readable.
        let _ = self.exited.readable().await;
    }

    /// Sends `signal` to the whole process group; returns whether it reached anyone.
    ///
    /// For the hive's own child this is `killpg`, safe because the unreaped leader keeps the
    /// group id. For an adopted worker each member is signalled through its own pidfd,
    /// after checking that it is still in the worker's group.
    pub fn signal_group(&self, signal: Signal) -> bool {
        match self.ownership {
            Ownership::Child(_) => {
                let Some(pgid) = signallable(self.pid) else {
                    return false;
                };
                match killpg(pgid, signal) {
                    Ok(()) => true,
                    Err(error) => {
                        tracing::debug!(pid = self.pid, "killpg {signal}: {error}");
                        false
                    }
                }
            }
            Ownership::Adopted => signal_members(self.pid, signal) > 0,
            Ownership::Gone => false,
        }
    }

    /// Reaps the leader (the hive's own child) and returns how it ended. Call only after
    /// [`exited`](Self::exited). An adopted process was reaped by init: its status is unknown.
    pub fn reap(&mut self) -> WorkerExit {
        let status = match std::mem::replace(&mut self.ownership, Ownership::Gone) {
            Ownership::Child(mut child) => child.wait().ok(),
            Ownership::Adopted | Ownership::Gone => None,
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
pub fn group_has_members(pgid: u32) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    if raw <= 1 {
        return false;
    }
    !matches!(
        killpg(Pid::from_raw(raw), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Signals every live member of group `pgid` through its own pidfd; returns how many.
pub fn signal_members(pgid: u32, signal: Signal) -> usize {
    let rustix_signal = match signal {
        Signal::SIGKILL => rustix::process::Signal::KILL,
        _ => rustix::process::Signal::TERM,
    };
    group_members(pgid)
        .into_iter()
        .filter(|pid| {
            let Some(raw) =
                signallable(*pid).and_then(|p| rustix::process::Pid::from_raw(p.as_raw()))
            else {
                return false;
            };
            let Ok(fd) = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())
            else {
                return false;
            };
            // The pidfd pins the process; make sure it is still a member before signalling.
            stat_fields(*pid).is_some_and(|f| f.pgid == pgid && !f.zombie)
                && rustix::process::pidfd_send_signal(&fd, rustix_signal).is_ok()
        })
        .count()
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
pub fn signallable(pid: u32) -> Option<Pid> {
    let raw = i32::try_from(pid).ok().filter(|raw| *raw > 1)?;
    let own = std::process::id() as i32;
    let own_group = nix::unistd::getpgrp().as_raw();
    (raw != own && raw != own_group).then(|| Pid::from_raw(raw))
}

/// Live (non-zombie) processes whose process group is `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat_fields(*pid).is_some_and(|f| f.pgid == pgid && !f.zombie))
        .collect()
}

/// The fields of `/proc/<pid>/stat` the hive uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFields {
    /// Process group id.
    pub pgid: u32,
    /// Start time in clock ticks since boot (identifies the process with its pid).
    pub start_ticks: u64,
    /// Whether it is a zombie (or dead).
    pub zombie: bool,
}

/// Reads `/proc/<pid>/stat`; `None` if the process does not exist.
pub fn stat_fields(pid: u32) -> Option<StatFields> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces; fields follow the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); pgrp is field 5, starttime field 22.
    Some(StatFields {
        zombie: matches!(fields.first().copied(), Some("Z" | "X")),
        pgid: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// Waits until every pid in `pids` has exited or `deadline` passes; returns those still
/// running. Each process is awaited through its own pidfd; one that cannot be opened is
/// already gone.
pub async fn wait_all_gone(pids: &[u32], pgid: u32, deadline: Instant) -> Vec<u32> {
    let watched: Vec<(u32, AsyncFd<OwnedFd>)> = pids
        .iter()
        .filter_map(|pid| {
            let raw = rustix::process::Pid::from_raw(i32::try_from(*pid).ok()?)?;
            let fd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()).ok()?;
            // The pid might have been reused between the scan and the open: keep only
            // processes that are still members of the worker's group.
            stat_fields(*pid).filter(|f| f.pgid == pgid && !f.zombie)?;
            Some((*pid, watch_pidfd(fd).ok()?))
        })
        .collect();
    let all_gone = futures::future::join_all(watched.iter().map(|(_, fd)| async move {
        let _ = fd.readable().await;
    }));
    if tokio::time::timeout_at(deadline, all_gone).await.is_ok() {
        return Vec::new();
    }
    watched
        .iter()
        .map(|(pid, _)| *pid)
        .filter(|pid| stat_fields(*pid).is_some_and(|f| !f.zombie))
        .collect()
}

/// The last `max_lines` lines of a log file (at most 4 KiB), for failure messages.
pub fn log_tail(path: &Path, max_lines: usize) -> String {
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

/// What `/proc` says about a running process, as `ps` would show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProcessInfo {
    /// The pid.
    pub pid: u32,
    /// The command line.
    pub command: String,
    /// Resident memory in KiB.
    pub memory_kb: u64,
    /// CPU time over the process's lifetime, as a percentage of one core (like `ps`).
    pub cpu_percent: f64,
    /// Time since the process started, `[[dd-]hh:]mm:ss` (like `ps -o etime`).
    pub elapsed: String,
}

/// Reads [`ProcessInfo`] for a live, non-zombie process.
pub fn process_info(pid: u32) -> Option<ProcessInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first().copied(), Some("Z" | "X")) {
        return None;
    }
    // Fields 14 (utime), 15 (stime) and 22 (starttime), counted from 3 at index 0.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let start_ticks: u64 = fields.get(19)?.parse().ok()?;
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let elapsed_seconds = (uptime - start_ticks as f64 / ticks_per_second).max(0.0);
    let cpu_seconds = (utime + stime) as f64 / ticks_per_second;
    let cpu_percent = if elapsed_seconds > 0.0 {
        (cpu_seconds / elapsed_seconds * 1000.0).round() / 10.0
    } else {
        0.0
    };
    let memory_kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let command = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    Some(ProcessInfo {
        pid,
        command,
        memory_kb,
        cpu_percent,
        elapsed: format_elapsed(elapsed_seconds as u64),
    })
}

/// `ps -o etime` style: `mm:ss`, `hh:mm:ss`, `dd-hh:mm:ss`.
pub fn format_elapsed(seconds: u64) -> String {
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (hours, rest) = (rest / 3600, rest % 3600);
    let (minutes, secs) = (rest / 60, rest % 60);
    match (days, hours) {
        (0, 0) => format!("{minutes:02}:{secs:02}"),
        (0, _) => format!("{hours:02}:{minutes:02}:{secs:02}"),
        _ => format!("{days}-{hours:02}:{minutes:02}:{secs:02}"),
    }
}

/// How long to wait for processes after SIGKILL before calling them stuck.
pub const SIGKILL_WAIT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_signals_special_pids() {
        assert!(signallable(0).is_none());
        assert!(signallable(1).is_none());
        assert!(signallable(u32::MAX).is_none());
        assert!(signallable(i32::MAX as u32 + 1).is_none());
        assert!(signallable(std::process::id()).is_none());
        assert!(signallable(nix::unistd::getpgrp().as_raw() as u32).is_none());
        assert!(signallable(12345).is_some());
    }

    #[test]
    fn reads_own_stat() {
        let own = stat_fields(std::process::id()).unwrap();
        assert_eq!(own.pgid, nix::unistd::getpgrp().as_raw() as u32);
        assert!(!own.zombie);
        assert!(stat_fields(u32::MAX).is_none());
    }

    #[test]
    fn reads_own_process_info() {
        let info = process_info(std::process::id()).unwrap();
        assert!(info.memory_kb > 0);
        assert!(!info.command.is_empty());
        assert!(info.cpu_percent >= 0.0);
        assert_eq!(format_elapsed(5), "00:05");
        assert_eq!(format_elapsed(3725), "01:02:05");
        assert_eq!(format_elapsed(90_061), "1-01:01:01");
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
        let sh = Path::new("/bin/sh");
        let args = vec![
            "-c".to_string(),
            "echo hello; sleep 30 & exec sleep 30".to_string(),
        ];
        let mut process = launch(LaunchSpec {
            program: sh,
            args: &args,
            env: &[],
            env_remove: &[],
            log,
        })
        .unwrap();
        let pid = process.pid();
        // The group holds the leader and its background child.
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_members(pid).len() < 2 && Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        assert_eq!(stat_fields(pid).unwrap().pgid, pid);
        let members = group_members(pid);
        assert_eq!(members.len(), 2, "{members:?}");
        assert!(process.signal_group(Signal::SIGTERM));
        tokio::time::timeout(Duration::from_secs(5), process.exited())
            .await
            .unwrap();
        let others: Vec<u32> = members.into_iter().filter(|p| *p != pid).collect();
        assert!(
            wait_all_gone(&others, pid, Instant::now() + Duration::from_secs(5))
                .await
                .is_empty()
        );
        let exit = process.reap();
        assert_eq!(exit.signal, Some(15));
        assert!(
            !process.signal_group(Signal::SIGKILL),
            "never signals after reaping"
        );
        assert!(group_members(pid).is_empty());
    }
}
