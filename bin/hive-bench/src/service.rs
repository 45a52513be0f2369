//! The `service` scenario: a restart with socket activation under 64 clients (refused or
//! reset requests, the longest request across the restart), the hive's memory and
//! descriptors with 2 000 idle connections and after they time out, and `/health` on new
//! connections while 2 000 silent connections, 500 slowloris and 200 slow bodies hit a hive
//! under a 1024 descriptor limit.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::hive::rss_kib;
use crate::stats::{Row, millis, summary};

/// Starts `rbee-hive` through a Python prelude (as a service manager would prepare it):
/// `listener` at fd 3 with `LISTEN_FDS`/`LISTEN_PID`, and/or a descriptor limit.
fn start(
    bin_dir: &Path,
    dir: &Path,
    config: &str,
    listener: Option<&TcpListener>,
    nofile: Option<u64>,
) -> anyhow::Result<Child> {
    std::fs::write(dir.join("hive.toml"), config)?;
    let mut prelude = String::from("import os, sys\n");
    // A copy without close-on-exec reaches the prelude, which puts it at fd 3.
    let inherited = listener
        .map(|listener| -> anyhow::Result<std::os::fd::OwnedFd> {
            let copy = nix::unistd::dup(listener)?;
            nix::fcntl::fcntl(
                &copy,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )?;
            Ok(copy)
        })
        .transpose()?;
    if let Some(copy) = &inherited {
        let raw = copy.as_raw_fd();
        prelude.push_str(&format!(
            "os.dup2({raw}, 3)\nos.close({raw})\n\
             os.environ['LISTEN_PID'] = str(os.getpid())\nos.environ['LISTEN_FDS'] = '1'\n"
        ));
    }
    if let Some(limit) = nofile {
        prelude.push_str(&format!(
            "import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))\n"
        ));
    }
    prelude.push_str("os.execv(sys.argv[1], sys.argv[1:])\n");
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg(prelude)
        .arg(bin_dir.join("rbee-hive"))
        .args(["--port", "0", "--config"])
        .arg(dir.join("hive.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().context("start rbee-hive through python3")?;
    drop(inherited);
    // The address line says it listens.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().context("stdout")?),
        &mut line,
    )?;
    if line.is_empty() {
        bail!("rbee-hive did not start");
    }
    Ok(child)
}

fn terminate(child: &mut Child) -> anyhow::Result<Duration> {
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id())?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    child.wait()?;
    Ok(started.elapsed())
}

/// `GET /health` on a new connection; `Ok` with the time if it answered 200.
async fn health(addr: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let answer = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(Duration::from_secs(10), answer).await {
        Ok(Ok(answer)) if answer.starts_with(b"HTTP/1.1 200") => Ok(started.elapsed()),
        Ok(Ok(answer)) => Err(String::from_utf8_lossy(&answer[..answer.len().min(40)]).into()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("no answer within 10 s".into()),
    }
}

/// SIGTERM and start again on the same inherited socket while 64 clients send requests, a
/// new connection each; `on_shutdown = "keep"`, so nothing is stopped.
pub async fn restart_under_load(bin_dir: &Path) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let listener = service_socket()?;
    let addr = listener.local_addr()?;
    let config = "on_shutdown = \"keep\"\n";
    let mut first = start(bin_dir, dir.path(), config, Some(&listener), None)?;
    let running = Arc::new(AtomicBool::new(true));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let running = running.clone();
            let answered = answered.clone();
            tokio::spawn(async move {
                let mut times = Vec::new();
                let mut failures = Vec::new();
                while running.load(Ordering::SeqCst) {
                    match health(addr).await {
                        Ok(took) => {
                            times.push(took);
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(why) => failures.push(why),
                    }
                }
                (times, failures)
            })
        })
        .collect();
    while answered.load(Ordering::SeqCst) < 2000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stop = terminate(&mut first)?;
    let exec = Instant::now();
    let mut second = start(bin_dir, dir.path(), config, Some(&listener), None)?;
    let start_up = exec.elapsed();
    let before = answered.load(Ordering::SeqCst);
    while answered.load(Ordering::SeqCst) < before + 2000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.store(false, Ordering::SeqCst);
    let mut times = Vec::new();
    let mut failures = Vec::new();
    for client in clients {
        let (t, f) = client.await?;
        times.extend(t);
        failures.extend(f);
    }
    terminate(&mut second)?;
    let longest = times.iter().max().copied().unwrap_or_default();
    let allowed = Duration::from_millis(100) + stop + start_up;
    let mut rows = vec![
        summary(
            "socket-activated restart under 64 clients: failed requests",
            "requests",
            vec![failures.len() as f64],
        )
        .target(
            &format!(
                "0 of {} (refused, reset, not 200)",
                times.len() + failures.len()
            ),
            failures.is_empty(),
        ),
        millis(
            "socket-activated restart: request latency across it",
            &times,
        ),
    ];
    rows.push(
        millis(
            "socket-activated restart: the longest request",
            &[longest],
        )
        .target(
            &format!(
                "≤ 100 ms + old hive's SIGTERM→exit ({:.0} ms) + new hive's exec→listening ({:.0} ms)",
                stop.as_secs_f64() * 1000.0,
                start_up.as_secs_f64() * 1000.0
            ),
            longest <= allowed,
        ),
    );
    if !failures.is_empty() {
        eprintln!("failed requests: {:?}", &failures[..failures.len().min(5)]);
    }
    Ok(rows)
}

/// A listening socket as a service manager holds it, with a backlog as deep as the hive's
/// own (4096).
fn service_socket() -> anyhow::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    Ok(socket.listen(4096)?.into_std()?)
}

/// The hive's open descriptors.
fn fd_count(pid: u32) -> usize {
    i32::try_from(pid)
        .ok()
        .and_then(|pid| procfs::process::Process::new(pid).ok())
        .and_then(|process| process.fd_count().ok())
        .unwrap_or(0)
}

/// Raises this process's soft descriptor limit to its hard one; returns it.
fn raise_own_limit() -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

async fn wait_for(what: &str, limit: Duration, condition: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !condition() {
        if Instant::now() > deadline {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Memory and descriptors of a hive idle, holding 2 000 idle connections, and after its
/// header timeout closed them.
pub async fn idle_connections(bin_dir: &Path) -> anyhow::Result<Vec<Row>> {
    const CONNECTIONS: usize = 2000;
    if raise_own_limit()? < CONNECTIONS as u64 + 256 {
        bail!("this process may not open {CONNECTIONS} connections (RLIMIT_NOFILE)");
    }
    let dir = tempfile::tempdir()?;
    let listener = service_socket()?;
    let addr = listener.local_addr()?;
    let mut hive = start(
        bin_dir,
        dir.path(),
        "header_timeout_s = 5\n",
        Some(&listener),
        None,
    )?;
    let pid = hive.id();
    health(addr).await.map_err(anyhow::Error::msg)?;
    let (idle_fds, idle_rss) = (fd_count(pid), rss_kib(pid)?);
    let mut connections = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        connections.push(TcpStream::connect(addr).await?);
    }

    let held = wait_for(
        "the hive holds every connection",
        Duration::from_secs(30),
        || {
            // (The idle count may include a descriptor of the moment, such as the first
            // request's connection.)
            fd_count(pid) >= CONNECTIONS + idle_fds.saturating_sub(2)
        },
    )
    .await;
    if let Err(error) = held {
        let fds = fd_count(pid);
        let exited = hive.try_wait()?;
        let _ = terminate(&mut hive);
        bail!("{error} (it holds {fds} descriptors, {idle_fds} when idle; exit: {exited:?})");
    }
    let (held_fds, held_rss) = (fd_count(pid), rss_kib(pid)?);
    wait_for(
        "the header timeout closes them",
        Duration::from_secs(30),
        || fd_count(pid) <= idle_fds,
    )
    .await?;
    let (after_fds, after_rss) = (fd_count(pid), rss_kib(pid)?);
    drop(connections);
    terminate(&mut hive)?;
    let per_connection = (held_rss.saturating_sub(idle_rss)) as f64 / CONNECTIONS as f64;
    Ok(vec![
        summary("hive fds: idle", "fds", vec![idle_fds as f64]),
        summary(
            "hive fds: 2000 idle connections",
            "fds",
            vec![held_fds as f64],
        ),
        summary(
            "hive fds: after the header timeout",
            "fds",
            vec![after_fds as f64],
        )
        .target("back to idle", after_fds <= idle_fds),
        summary("hive RSS: idle", "MiB", vec![idle_rss as f64 / 1024.0]),
        summary(
            "hive RSS: 2000 idle connections",
            "MiB",
            vec![held_rss as f64 / 1024.0],
        )
        .comment(&format!("{per_connection:.1} KiB per connection")),
        summary(
            "hive RSS: after the header timeout",
            "MiB",
            vec![after_rss as f64 / 1024.0],
        ),
    ])
}

/// `/health` on a new connection every 50 ms while a hive under a 1024 descriptor limit is
/// hit by 2 000 silent connections, 500 slowloris and 200 slow bodies.
pub async fn hostile(bin_dir: &Path) -> anyhow::Result<Vec<Row>> {
    if raise_own_limit()? < 4096 {
        bail!("this process may not open the 2 700 hostile connections (RLIMIT_NOFILE)");
    }
    let dir = tempfile::tempdir()?;
    let listener = service_socket()?;
    let addr = listener.local_addr()?;
    let config = "header_timeout_s = 3\nbody_timeout_s = 4\nidle_timeout_s = 3\n";
    let mut hive = start(bin_dir, dir.path(), config, Some(&listener), Some(1024))?;
    health(addr).await.map_err(anyhow::Error::msg)?;
    let probing = Arc::new(AtomicBool::new(true));
    let prober = tokio::spawn({
        let probing = probing.clone();
        async move {
            let mut results = Vec::new();
            while probing.load(Ordering::SeqCst) {
                results.push(health(addr).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            results
        }
    });
    let trickle = |first: &'static [u8], drip: &'static [u8]| async move {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            return;
        };
        let _ = stream.write_all(first).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut sink = [0u8; 512];
        while Instant::now() < deadline {
            tokio::select! {
                read = stream.read(&mut sink) => if matches!(read, Ok(0) | Err(_)) { return },
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    if stream.write_all(drip).await.is_err() { return }
                }
            }
        }
    };
    let mut attackers = Vec::new();
    for _ in 0..500 {
        attackers.push(tokio::spawn(trickle(
            b"GET /health HTTP/1.1\r\nhost: x\r\n",
            b"x-slow: 1\r\n",
        )));
    }
    for _ in 0..200 {
        attackers.push(tokio::spawn(trickle(
            b"POST /v1/jobs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 60000\r\n\r\n{",
            b" ",
        )));
    }
    let mut silent = Vec::new();
    for _ in 0..2000 {
        if let Ok(stream) = TcpStream::connect(addr).await {
            silent.push(stream);
        }
    }
    for attacker in attackers {
        attacker.await?;
    }
    drop(silent);
    probing.store(false, Ordering::SeqCst);
    let results = prober.await?;
    terminate(&mut hive)?;
    let failed = results.iter().filter(|r| r.is_err()).count();
    let times: Vec<Duration> = results.into_iter().filter_map(Result::ok).collect();
    let row = millis(
        "/health under 2000 idle + 500 slowloris + 200 slow bodies, fd limit 1024",
        &times,
    );
    let met = failed == 0 && row.max <= 100.0;
    Ok(vec![row.target(
        &format!("every one 200 and ≤ 100 ms ({failed} failed)"),
        met,
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_and_memory_of_this_process() {
        let pid = std::process::id();
        let before = fd_count(pid);
        let file = std::fs::File::open("/dev/null").unwrap();
        // At least one more: another test may open a descriptor meanwhile.
        assert!(fd_count(pid) > before);
        drop(file);
        assert!(rss_kib(pid).unwrap() > 0);
    }
}
