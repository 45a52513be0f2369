//! Starting and stopping a real `rbee-hive` process for a benchmark, and measuring it.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running hive.
pub struct BenchHive {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    bin_dir: PathBuf,
    dir: tempfile::TempDir,
}

/// A port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl BenchHive {
    /// Starts `rbee-hive` from `bin_dir` with `config` (TOML) and waits for its address line.
    pub fn start(bin_dir: &Path, config: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("hive.toml"), config)?;
        let mut child = Self::command(bin_dir, dir.path(), 0)
            .stdout(Stdio::piped())
            .spawn()
            .context("start rbee-hive")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok())
            .context("address line")?;
        Ok(Self {
            child: Some(child),
            addr,
            bin_dir: bin_dir.to_owned(),
            dir,
        })
    }

    fn command(bin_dir: &Path, dir: &Path, port: u16) -> Command {
        let mut command = Command::new(bin_dir.join("rbee-hive"));
        command
            .args(["--port", &port.to_string(), "--config"])
            .arg(dir.join("hive.toml"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        command
    }

    /// The hive's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The hive's resident memory in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid())
    }

    /// SIGTERM, then waits for it to exit; returns the time from the signal to the exit.
    pub fn stop_timed(&mut self) -> anyhow::Result<Duration> {
        let mut child = self.child.take().context("the hive is not running")?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        let started = Instant::now();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let status = child.wait()?;
        let elapsed = started.elapsed();
        if !status.success() {
            bail!("rbee-hive exited with {status}");
        }
        Ok(elapsed)
    }

    /// SIGTERM, then waits for it to exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_timed().map(drop)
    }

    /// Starts the stopped hive again on its state dir and config, on a free port; returns
    /// the instant of the exec and the time from it to the first `/health` answer.
    pub fn restart(&mut self) -> anyhow::Result<(Instant, Duration)> {
        if self.child.is_some() {
            bail!("the hive is still running");
        }
        let port = free_port()?;
        let started = Instant::now();
        let child = Self::command(&self.bin_dir, self.dir.path(), port).spawn()?;
        self.child = Some(child);
        self.addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if health_answers(port) {
                return Ok((started, started.elapsed()));
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("no /health answer within 10 s of the restart");
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

impl Drop for BenchHive {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(None) = child.try_wait()
        {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

/// Resident memory of a process in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = procfs::process::Process::new(i32::try_from(pid)?)?.status()?;
    status.vmrss.context("VmRSS")
}

/// Time from exec of `rbee-hive` to its first `/health` answer.
pub fn startup_to_health(bin_dir: &Path) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let started = Instant::now();
    let mut child = Command::new(bin_dir.join("rbee-hive"))
        .args(["--port", &port.to_string(), "--state-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let elapsed = loop {
        if health_answers(port) {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("no /health answer within 10 s");
        }
        std::thread::sleep(Duration::from_micros(100));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    child.wait()?;
    Ok(elapsed)
}

fn health_answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    if stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
        && answer.ends_with("ok")
}

/// The directory of the workspace's release binaries (where this benchmark runs from).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("executable dir")?.to_path_buf())
}
