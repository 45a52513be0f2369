//! What `/proc` says about processes: the lifecycle's one reader of `/proc/<pid>/*`, through
//! the `procfs` crate's parsers (no field counting by hand). The proofs of identity (group,
//! start time), the markers in a process's environment, the sockets it holds, what `ps`
//! would show, and the use of a whole process group for the stats sampler all read here.

use std::collections::HashMap;

use procfs::process::{FDTarget, Process, Stat};
use procfs::{Current, FromRead};

use crate::process::MARKER_VAR;

/// The fields of `/proc/<pid>/stat` the hive uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatFields {
    /// Process group id.
    pub(crate) pgid: u32,
    /// Start time in clock ticks since boot (identifies the process with its pid).
    pub(crate) start_ticks: u64,
    /// Whether it is a zombie (or dead).
    pub(crate) zombie: bool,
}

/// `/proc/<pid>/stat`, parsed; `None` if the process does not exist. One read: the sampler
/// calls it for every process of the machine at each tick.
fn stat(pid: u32) -> Option<Stat> {
    Stat::from_file(format!("/proc/{pid}/stat")).ok()
}

fn is_zombie(stat: &Stat) -> bool {
    matches!(stat.state, 'Z' | 'X')
}

/// Reads the fields of `/proc/<pid>/stat` the hive uses; `None` if the process does not exist.
pub(crate) fn stat_fields(pid: u32) -> Option<StatFields> {
    let stat = stat(pid)?;
    Some(StatFields {
        pgid: u32::try_from(stat.pgrp).ok()?,
        start_ticks: stat.starttime,
        zombie: is_zombie(&stat),
    })
}

/// Every pid in `/proc` now.
pub(crate) fn all_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
}

/// The value of `RBEE_HIVE_WORKER` in the environment `pid` was started with.
pub(crate) fn marker_of(pid: u32) -> Option<String> {
    let environ = Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .environ()
        .ok()?;
    environ
        .get(std::ffi::OsStr::new(MARKER_VAR))
        .map(|value| value.to_string_lossy().into_owned())
}

/// Whether the environment `pid` was started with holds `RBEE_HIVE_WORKER=<marker>`.
pub(crate) fn has_marker(pid: u32, marker: &str) -> bool {
    marker_of(pid).is_some_and(|found| found == marker)
}

/// Whether `pid` holds the socket with this inode.
pub(crate) fn holds_socket(pid: u32, inode: u64) -> bool {
    let Some(process) = i32::try_from(pid).ok().and_then(|p| Process::new(p).ok()) else {
        return false;
    };
    process
        .fd()
        .into_iter()
        .flatten()
        .any(|fd| fd.is_ok_and(|fd| matches!(fd.target, FDTarget::Socket(found) if found == inode)))
}

/// The pid and command name of a process that holds the socket with this inode.
pub(crate) fn holder_of_socket(inode: u64) -> Option<(u32, String)> {
    let pid = all_pids().find(|pid| holds_socket(*pid, inode))?;
    let name = stat(pid).map(|stat| stat.comm).unwrap_or_default();
    Some((pid, name))
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
pub(crate) fn process_info(pid: u32) -> Option<ProcessInfo> {
    let process = Process::new(i32::try_from(pid).ok()?).ok()?;
    let stat = process.stat().ok().filter(|stat| !is_zombie(stat))?;
    let ticks_per_second = procfs::ticks_per_second() as f64;
    let uptime = procfs::Uptime::current().ok()?.uptime;
    let elapsed_seconds = (uptime - stat.starttime as f64 / ticks_per_second).max(0.0);
    let cpu_seconds = (stat.utime + stat.stime) as f64 / ticks_per_second;
    let cpu_percent = if elapsed_seconds > 0.0 {
        (cpu_seconds / elapsed_seconds * 1000.0).round() / 10.0
    } else {
        0.0
    };
    let memory_kb = process
        .status()
        .ok()
        .and_then(|status| status.vmrss)
        .unwrap_or(0);
    let command = process
        .cmdline()
        .map(|parts| parts.join(" "))
        .unwrap_or_default();
    Some(ProcessInfo {
        pid,
        command,
        memory_kb,
        cpu_percent,
        elapsed: format_elapsed(elapsed_seconds as u64),
    })
}

fn format_elapsed(seconds: u64) -> String {
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (hours, rest) = (rest / 3600, rest % 3600);
    let (minutes, secs) = (rest / 60, rest % 60);
    match (days, hours) {
        (0, 0) => format!("{minutes:02}:{secs:02}"),
        (0, _) => format!("{hours:02}:{minutes:02}:{secs:02}"),
        _ => format!("{days}-{hours:02}:{minutes:02}:{secs:02}"),
    }
}

/// What one process group uses, summed over its processes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct GroupUse {
    /// Its live processes.
    pub(crate) pids: Vec<u32>,
    /// How many.
    pub(crate) processes: u32,
    /// Their threads.
    pub(crate) threads: u64,
    /// Their resident memory, in bytes.
    pub(crate) rss_bytes: u64,
    /// Their CPU time (user and system), in clock ticks.
    pub(crate) ticks: u64,
    /// Bytes they have read from storage (`/proc/<pid>/io` `read_bytes`).
    pub(crate) read_bytes: u64,
    /// Bytes they have caused to be written to storage (`write_bytes`).
    pub(crate) write_bytes: u64,
}

/// `/proc/<pid>/io`'s storage counters (`read_bytes`, `write_bytes`): what the process made
/// the block layer read and write, the measure the upstream's cgroup `io.stat` gives.
/// `None` when it cannot be read (another user's process, a kernel without task I/O
/// accounting).
fn storage_io(pid: u32) -> Option<(u64, u64)> {
    let io = procfs::process::Io::from_file(format!("/proc/{pid}/io")).ok()?;
    Some((io.read_bytes, io.write_bytes))
}

/// One pass over `/proc`: what each of `groups` uses (zombies left out).
pub(crate) fn group_use(groups: &[u32]) -> HashMap<u32, GroupUse> {
    let mut usage: HashMap<u32, GroupUse> =
        groups.iter().map(|g| (*g, GroupUse::default())).collect();
    let page_size = procfs::page_size();
    for pid in all_pids() {
        let Some(stat) = stat(pid).filter(|stat| !is_zombie(stat)) else {
            continue;
        };
        let Some(group) = u32::try_from(stat.pgrp)
            .ok()
            .and_then(|pgid| usage.get_mut(&pgid))
        else {
            continue;
        };
        group.pids.push(pid);
        group.processes += 1;
        group.threads += u64::try_from(stat.num_threads).unwrap_or(0);
        group.rss_bytes += stat.rss * page_size;
        group.ticks += stat.utime + stat.stime;
        if let Some((read, written)) = storage_io(pid) {
            group.read_bytes += read;
            group.write_bytes += written;
        }
    }
    usage
}

/// What one process has used since it started, and how many seconds ago that was (a
/// worker's leader, measured before the sampler's first look at its group).
pub(crate) fn process_use(pid: u32) -> Option<(GroupUse, f64)> {
    let stat = stat(pid).filter(|stat| !is_zombie(stat))?;
    let uptime = procfs::Uptime::current().ok()?.uptime;
    let age_s = (uptime - stat.starttime as f64 / procfs::ticks_per_second() as f64).max(0.0);
    let (read_bytes, write_bytes) = storage_io(pid).unwrap_or_default();
    let usage = GroupUse {
        pids: vec![pid],
        processes: 1,
        threads: u64::try_from(stat.num_threads).unwrap_or(0),
        rss_bytes: stat.rss * procfs::page_size(),
        ticks: stat.utime + stat.stime,
        read_bytes,
        write_bytes,
    };
    Some((usage, age_s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_group() -> u32 {
        rustix::process::getpgrp().as_raw_nonzero().get() as u32
    }

    #[test]
    fn reads_own_stat() {
        let own = stat_fields(std::process::id()).unwrap();
        assert_eq!(own.pgid, own_group());
        assert!(!own.zombie);
        assert!(stat_fields(u32::MAX).is_none());
    }

    #[test]
    fn a_stat_line_with_a_hostile_name_parses() {
        let line = "4242 (evil) 1 2 3 (x) S 1 4240 4240 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 5 0 12345 1000000 321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
        let stat = Stat::from_read(line.as_bytes()).unwrap();
        assert_eq!(stat.comm, "evil) 1 2 3 (x");
        assert_eq!(
            (
                stat.pgrp,
                stat.num_threads,
                stat.rss,
                stat.utime + stat.stime,
                stat.starttime
            ),
            (4240, 5, 321, 10, 12345)
        );
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
    fn this_process_is_found_in_its_group() {
        let pgid = own_group();
        let usage = group_use(&[pgid]);
        let group = &usage[&pgid];
        assert!(
            group.pids.contains(&std::process::id()) && group.threads >= 1 && group.rss_bytes > 0,
            "{group:?}"
        );
    }

    #[test]
    fn counts_what_its_processes_write_to_storage() {
        // A file written and synced goes through the block layer, which `write_bytes`
        // counts (tmpfs would not: the test writes in the crate's folder, on disk).
        let Some((_, written_before)) = storage_io(std::process::id()) else {
            eprintln!("skipped: /proc/self/io is not readable here");
            return;
        };
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("written");
        let mut file = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut file, &vec![7u8; 1 << 20]).unwrap();
        file.sync_all().unwrap();
        let (_, written_after) = storage_io(std::process::id()).unwrap();
        assert!(
            written_after >= written_before + (1 << 20),
            "{written_before} → {written_after}"
        );
    }

    #[test]
    fn reads_its_own_marker() {
        // The test process has no marker: nothing is found, nothing panics.
        assert_eq!(marker_of(std::process::id()), None);
        assert!(!has_marker(std::process::id(), "x/worker-1"));
        assert_eq!(marker_of(u32::MAX), None);
    }
}
