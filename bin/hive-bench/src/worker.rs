//! The demo worker on its own, without the hive: its own exec-to-listening time and its
//! own SIGTERM-to-exit time, the references the hive's numbers are compared with.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::hive::free_port;

/// Times one demo worker: from just before exec to its port accepting a connection, and
/// from SIGTERM to its exit (reaped).
pub fn own_times(bin_dir: &Path) -> anyhow::Result<(Duration, Duration)> {
    let port = free_port()?;
    let started = Instant::now();
    let mut child = Command::new(bin_dir.join("rbee-demo-worker"))
        .args([
            "--worker-id",
            "bench",
            "--model",
            "m",
            "--port",
            &port.to_string(),
            "--heartbeat-ms",
            "0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let listening = loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            bail!("the demo worker did not listen within 10 s");
        }
        std::thread::sleep(Duration::from_micros(100));
    };
    let stop = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    child.wait()?;
    Ok((listening, stop.elapsed()))
}
