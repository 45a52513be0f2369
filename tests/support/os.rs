//! Checks against the operating system: processes, their environment, ports.

use std::net::TcpListener;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Whether a process with this pid exists (zombies count as gone).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the command name in parentheses.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// Sends a signal to one pid (never 0, 1 or negative values).
pub fn signal_pid(pid: u32, signal: Signal) {
    let raw = i32::try_from(pid).expect("pid fits i32");
    assert!(raw > 1, "refusing to signal pid {pid}");
    let _ = kill(Pid::from_raw(raw), signal);
}

/// The pids under `/proc`, live or not.
fn proc_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
}

/// Pids of live processes whose environment holds `key=value`.
pub fn pids_with_env(key: &str, value: &str) -> Vec<u32> {
    let needle = format!("{key}={value}");
    proc_pids()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| {
                    env.split(|b| *b == 0)
                        .any(|entry| entry == needle.as_bytes())
                })
                .unwrap_or(false)
        })
        .filter(|pid| pid_alive(*pid))
        .collect()
}

/// Whether `127.0.0.1:port` can be bound right now.
pub fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The pids in process group `pgid` that are alive.
pub fn group_members(pgid: u32) -> Vec<u32> {
    proc_pids()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| stat.rsplit(')').next().map(str::to_owned))
                .and_then(|rest| {
                    rest.split_whitespace()
                        .nth(2)
                        .and_then(|g| g.parse::<u32>().ok())
                })
                == Some(pgid)
        })
        .filter(|pid| pid_alive(*pid))
        .collect()
}

/// An unrelated process (`sleep`) that tests check is never signalled; killed on drop.
pub struct Bystander(std::process::Child);

impl Bystander {
    /// Starts `sleep 86400`.
    pub fn start() -> Self {
        Self(
            std::process::Command::new("sleep")
                .arg("86400")
                .spawn()
                .expect("start sleep"),
        )
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The names in `dir`, sorted; none if it cannot be read.
pub fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|read| {
            read.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
