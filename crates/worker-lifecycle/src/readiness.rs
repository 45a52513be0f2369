//! Readiness: a worker is `Starting` until `GET http://127.0.0.1:{port}{health_path}`
//! answers 2xx **from a socket that a process of its own group holds**, then `Ready`.
//!
//! The hive asks: at once, then after 2 ms, then at an interval growing by half each time
//! up to 100 ms, so fast workers are seen ready within a few milliseconds and slow ones
//! cost little; and at once again whenever the worker sends a heartbeat while it starts
//! (an rbee worker sends its first once it listens), so such a worker is seen ready as soon
//! as it says so, not at the next tick. A 503 (llama-server
//! while it loads a model) or a refused connection means "still starting". An answer from
//! a socket held by another program (another hive's worker on the same port) does not
//! count: probing goes on, and a timeout then says who holds the port. The supervisor owns
//! the probe: it drops it the moment the worker exits or a stop begins.

use std::time::Duration;

use tokio::time::Instant;

use crate::record::WorkerHealth;
use crate::sockets;

const FIRST_DELAY: Duration = Duration::from_millis(2);
const MAX_DELAY: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a probe found out.
#[derive(Debug)]
pub(crate) enum Probe {
    /// Healthy, from a socket of the worker's own group.
    Ready,
    /// Not ready within the timeout; `detail` says who answered instead, if anyone did.
    TimedOut {
        /// Who holds the port, when a health check was answered by someone else.
        detail: Option<String>,
    },
    /// The one health check of an adopted worker.
    Health(WorkerHealth),
}

/// Where and how to probe one worker.
#[derive(Debug, Clone)]
pub(crate) struct ProbeTarget {
    /// `http://127.0.0.1:{port}{health_path}`, for messages.
    pub(crate) url: String,
    /// The health path (`/health`).
    pub(crate) path: String,
    /// The worker's port.
    pub(crate) port: u16,
    /// The worker's process group.
    pub(crate) pgid: u32,
    /// Woken when the worker sent a heartbeat: the next probe is made at once.
    pub(crate) nudge: std::sync::Arc<tokio::sync::Notify>,
}

impl ProbeTarget {
    /// Whether the health check answers 2xx from a socket of the worker's group; `Err`
    /// names who answered instead. The proof of who holds the port is taken while the
    /// check is under way (both describe the same instant, give or take the round trip),
    /// so a ready worker is not kept waiting for one after the other.
    async fn check(&self, deadline: Instant) -> Result<bool, String> {
        let answer = tokio::time::timeout_at(
            deadline.min(Instant::now() + PROBE_TIMEOUT),
            health_status(self.port, &self.path),
        );
        // `/proc` and netlink: off the runtime's threads.
        let (port, pgid) = (self.port, self.pgid);
        let proof =
            tokio::task::spawn_blocking(move || sockets::listener_is_held_by_group(port, pgid));
        let (answer, proof) = tokio::join!(answer, proof);
        match (answer, proof) {
            (Ok(Some(status)), Ok(Ok(()))) if (200..300).contains(&status) => Ok(true),
            (Ok(Some(status)), Ok(Err(_))) if (200..300).contains(&status) => {
                // The proof may have been taken just before the worker bound its socket, and
                // the answer just after: taken again, now that someone answered.
                match tokio::task::spawn_blocking(move || {
                    sockets::listener_is_held_by_group(port, pgid)
                })
                .await
                {
                    Ok(proof) => proof.map(|()| true),
                    Err(_) => Ok(false),
                }
            }
            // Not answered, not 2xx, or the runtime is shutting down: not proven.
            _ => Ok(false),
        }
    }
}

/// `GET path` on a new connection to `127.0.0.1:port`: the status code of the answer, or
/// none when nothing (or no HTTP) answers. A client of its own, as small as the question:
/// one request with `connection: close`, its status line read; the rest of the answer is
/// read in the background, so that the worker's server sees a clean close.
async fn health_status(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let _ = stream.set_nodelay(true);
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nuser-agent: rbee-hive\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::with_capacity(256);
    let mut buffer = [0u8; 1024];
    let line_end = loop {
        if let Some(end) = answer.windows(2).position(|pair| pair == b"\r\n") {
            break end;
        }
        let read = stream.read(&mut buffer).await.ok()?;
        if read == 0 || answer.len() > STATUS_LINE_MAX {
            return None;
        }
        answer.extend_from_slice(&buffer[..read]);
    };
    let status = status_code(&answer[..line_end]);
    tokio::spawn(tokio::time::timeout(DRAIN_TIME, async move {
        let mut drained = 0;
        while let Ok(read @ 1..) = stream.read(&mut buffer).await {
            drained += read;
            if drained > DRAIN_MAX {
                break;
            }
        }
    }));
    status
}

/// The longest status line read.
const STATUS_LINE_MAX: usize = 8 * 1024;

/// The longest the rest of an answer is read for (a server may ignore `connection: close`).
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// The most of an answer's rest read before the connection is closed anyway.
const DRAIN_MAX: usize = 64 * 1024;

/// The code of an HTTP/1.x status line (`HTTP/1.1 200 OK`).
fn status_code(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    parts
        .next()
        .filter(|version| version.starts_with("HTTP/1."))?;
    parts.next().filter(|code| code.len() == 3)?.parse().ok()
}

/// Probes until the worker is proven healthy or `timeout` passes.
pub(crate) async fn until_ready(target: ProbeTarget, timeout: Duration) -> Probe {
    let deadline = Instant::now() + timeout;
    let mut delay = FIRST_DELAY;
    let mut impostor: Option<String> = None;
    loop {
        match target.check(deadline).await {
            Ok(true) => return Probe::Ready,
            Ok(false) => {}
            Err(who) => {
                if impostor.as_deref() != Some(who.as_str()) {
                    tracing::warn!(url = %target.url, "a health check was answered, but not by the worker: {who}");
                }
                impostor = Some(who);
            }
        }
        if Instant::now() >= deadline {
            return Probe::TimedOut { detail: impostor };
        }
        tokio::select! {
            () = tokio::time::sleep_until((Instant::now() + delay).min(deadline)) => {}
            () = target.nudge.notified() => {}
        }
        delay = (delay * 3 / 2).min(MAX_DELAY);
    }
}

/// After a restart: asks an adopted `Ready`/`Busy` worker for its health once. A worker
/// that does not answer, or whose port someone else answers, is marked degraded, not
/// stopped.
pub(crate) async fn check_adopted(target: ProbeTarget) -> Probe {
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let health = match target.check(deadline).await {
        Ok(true) => WorkerHealth::Healthy,
        Ok(false) => {
            tracing::warn!(
                "adopted worker does not answer {}; marked degraded",
                target.url
            );
            WorkerHealth::Degraded
        }
        Err(who) => {
            tracing::warn!(
                "adopted worker's {} is answered by someone else ({who}); marked degraded",
                target.url
            );
            WorkerHealth::Degraded
        }
    };
    Probe::Health(health)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(status_code(b"HTTP/1.1 204"), Some(204));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH_9.2"), None);
        assert_eq!(status_code(b"HTTP/1.1 2000 x"), None);
        assert_eq!(status_code(b""), None);
    }

    #[tokio::test]
    async fn the_status_of_a_real_server_is_read() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut connection, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 1024];
            let read = connection.read(&mut request).await.unwrap();
            let request = String::from_utf8_lossy(&request[..read]).into_owned();
            connection
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 7\r\n\r\nloading")
                .await
                .unwrap();
            request
        });
        assert_eq!(health_status(port, "/health").await, Some(503));
        let request = server.await.unwrap();
        assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
        // Nothing listens: no status.
        drop(tokio::net::TcpListener::bind(("127.0.0.1", port)).await);
        assert_eq!(health_status(port, "/health").await, None);
    }
}
