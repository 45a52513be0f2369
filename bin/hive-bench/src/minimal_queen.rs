//! A minimal queen inside the bench process: the part of today's rbee queen (`queen-rbee`,
//! PROTOCOL §9) that a hive meets, and what it saw, timed by this process's clock.
//!
//! - `POST /v1/hive/ready` `{"hive_id","hive_url"}` (a JSON content type, a body that parses
//!   into [`HiveReadyCallback`]; else 415 or 422 as the queen's axum extractor answers)
//!   answers `{"status":"ok","message":"Subscribed to hive X SSE stream"}` and starts one
//!   more subscription, never deduplicated (as upstream's `handle_hive_ready`).
//! - A subscription reads `format!("{hive_url}/v1/heartbeats/stream")` (string
//!   concatenation, as upstream's `subscribe_to_hive`) as an SSE client does (`accept:
//!   text/event-stream`; only a 200 with that content type is read), parses each message's
//!   data into [`HiveHeartbeatEvent`] (our other events fail that and are dropped, as the
//!   queen drops them) and each worker alone into [`ProcessStats`] (one that fails is
//!   dropped). The parsed list replaces the hive's workers (upstream's `update_workers`);
//!   the instant each pid first appears in it is recorded. A subscription that ends is
//!   retried after 5 s, as upstream's loop does.
//!
//! The HTTP server and the stream reader are the bench's own small ones (no axum, no
//! reqwest), so the queen costs the bench's process little and the hive's numbers are the
//! hive's; the serde types are strict copies of the upstream's, which decide what counts.
//! The test double of the end-to-end tests (`tests/support/queen.rs`) is the full one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::client::Connection;

/// Upstream's wait before a subscription that ended is tried again (`hive_subscriber.rs`).
const RETRY: Duration = Duration::from_secs(5);

/// Copy of `rbee_hive_monitor::ProcessStats` (`bin/25_rbee_hive_crates/monitor/src/lib.rs`):
/// the same fields and Rust types, so the same JSON is accepted and refused (extra fields
/// ignored, a missing field or another JSON type refused, `model` may be absent).
#[derive(Debug, Clone, Deserialize)]
#[allow(dead_code)] // Read by serde's checks; the bench only looks at the pid.
pub struct ProcessStats {
    pub pid: u32,
    pub group: String,
    pub instance: String,
    pub cpu_pct: f64,
    pub rss_mb: u64,
    pub io_r_mb_s: f64,
    pub io_w_mb_s: f64,
    pub uptime_s: u64,
    pub gpu_util_pct: f64,
    pub vram_mb: u64,
    pub total_vram_mb: u64,
    pub model: Option<String>,
}

/// Copy of `queen_rbee::hive_subscriber::HiveHeartbeatEvent`: what the queen parses each
/// SSE message's data into (`"type":"telemetry"` required; `hive_info` any JSON, present).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(dead_code)] // As upstream: `_hive_info` and `timestamp` are required, not used.
pub enum HiveHeartbeatEvent {
    Telemetry {
        hive_id: String,
        #[serde(rename = "hive_info")]
        _hive_info: serde_json::Value,
        timestamp: String,
        workers: Vec<serde_json::Value>,
    },
}

/// Copy of `queen_rbee::http::heartbeat::HiveReadyCallback`: the body of `POST
/// /v1/hive/ready`.
#[derive(Debug, Clone, Deserialize)]
pub struct HiveReadyCallback {
    pub hive_id: String,
    pub hive_url: String,
}

/// One accepted heartbeat (a message whose data parsed).
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// When it was parsed.
    pub at: Instant,
    /// The whole SSE message as it arrived (`event:` and `data:` lines and the blank line).
    pub message_bytes: usize,
    /// Workers in the message.
    pub listed: usize,
    /// Of those, the ones that parsed into [`ProcessStats`].
    pub parsed: usize,
}

/// What the queen saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Registrations accepted: `(hive_id, hive_url)`.
    pub registrations: Vec<(String, String)>,
    /// Subscriptions whose stream is open now.
    pub open: usize,
    /// Why the last subscription attempt ended, when one did.
    pub last_error: Option<String>,
    /// The workers of each hive: the last accepted message's (upstream's registry).
    pub workers: HashMap<String, Vec<ProcessStats>>,
    /// When each pid first appeared in a parsed list.
    pub first_seen: HashMap<u32, Instant>,
    /// When each pid of `first_seen` was first missing from a later list.
    pub gone: HashMap<u32, Instant>,
    /// When each pid was first listed with the hive's `"state":"ready"` (a field of ours
    /// that the queen's types ignore; read for the bench, beside what the queen keeps).
    pub first_ready: HashMap<u32, Instant>,
    /// Every accepted heartbeat, in order.
    pub heartbeats: Vec<Heartbeat>,
    /// Messages whose data was not a heartbeat (the hive's other events), dropped.
    pub dropped_messages: u64,
    /// Every byte read from subscription streams (chunk payloads).
    pub stream_bytes: u64,
}

struct Shared {
    seen: Mutex<Seen>,
    /// Woken on every change of [`Seen`].
    changed: Notify,
    /// The subscriptions' tasks, aborted with the queen.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().expect("queen state lock")
    }

    fn update(&self, change: impl FnOnce(&mut Seen)) {
        self.update_with(change);
    }

    fn update_with<T>(&self, change: impl FnOnce(&mut Seen) -> T) -> T {
        let result = change(&mut self.seen());
        self.changed.notify_waiters();
        result
    }
}

/// A running minimal queen; stops (its listener and subscriptions) when dropped.
pub struct MinimalQueen {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl MinimalQueen {
    /// Listens on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            seen: Mutex::new(Seen::default()),
            changed: Notify::new(),
            tasks: Mutex::new(Vec::new()),
        });
        let server = tokio::spawn({
            let shared = shared.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        if let Err(error) = serve(stream, &shared).await {
                            eprintln!("   minimal queen: a connection failed: {error:#}");
                        }
                    });
                }
            }
        });
        Ok(Self {
            addr,
            shared,
            server,
        })
    }

    /// Its URL, as a hive's `queen_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Reads what it saw.
    pub fn seen<T>(&self, read: impl FnOnce(&Seen) -> T) -> T {
        read(&self.shared.seen())
    }

    /// Waits until `condition` holds of what it saw, for at most `within`.
    pub async fn wait_for(
        &self,
        within: Duration,
        what: &str,
        condition: impl Fn(&Seen) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before the check, so that no change falls between the two.
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if condition(&self.shared.seen()) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let seen = self.shared.seen();
                bail!(
                    "the queen did not see {what} within {within:?} ({} registrations, {} subscriptions open, {} heartbeats, last error: {:?})",
                    seen.registrations.len(),
                    seen.open,
                    seen.heartbeats.len(),
                    seen.last_error
                );
            }
        }
    }

    /// When `pid` first appeared in the queen's list, waiting for it for at most `within`.
    pub async fn first_seen(&self, pid: u32, within: Duration) -> anyhow::Result<Instant> {
        self.wait_for(within, &format!("pid {pid}"), |seen| {
            seen.first_seen.contains_key(&pid)
        })
        .await?;
        Ok(self.seen(|seen| seen.first_seen[&pid]))
    }
}

impl MinimalQueen {
    /// When `pid` was first missing from the queen's list after it had been in it, waiting
    /// for that for at most `within`; then forgets the pid (a later process may reuse it).
    pub async fn gone(&self, pid: u32, within: Duration) -> anyhow::Result<Instant> {
        self.wait_for(within, &format!("pid {pid} gone"), |seen| {
            seen.gone.contains_key(&pid)
        })
        .await?;
        Ok(self.shared.update_with(|seen| {
            seen.first_seen.remove(&pid);
            seen.first_ready.remove(&pid);
            seen.gone.remove(&pid).expect("waited for")
        }))
    }
}

impl MinimalQueen {
    /// When `pid` was first listed as ready, waiting for that for at most `within`.
    pub async fn first_ready(&self, pid: u32, within: Duration) -> anyhow::Result<Instant> {
        self.wait_for(within, &format!("pid {pid} ready"), |seen| {
            seen.first_ready.contains_key(&pid)
        })
        .await?;
        Ok(self.seen(|seen| seen.first_ready[&pid]))
    }
}

impl Drop for MinimalQueen {
    fn drop(&mut self) {
        self.server.abort();
        for task in self.shared.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
    }
}

/// Serves one connection: requests in a row until the peer closes it.
async fn serve(stream: TcpStream, shared: &Arc<Shared>) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        );
        let (mut length, mut json) = (0usize, false);
        loop {
            line.clear();
            if stream.read_line(&mut line).await? == 0 {
                bail!("connection closed in the headers");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().context("content-length")?;
                } else if name.eq_ignore_ascii_case("content-type") {
                    // axum's `Json`: `application/json` or `application/*+json`.
                    let mime = value.split(';').next().unwrap_or_default().trim();
                    let mime = mime.to_ascii_lowercase();
                    json = mime == "application/json"
                        || (mime.starts_with("application/") && mime.ends_with("+json"));
                }
            }
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await?;
        let (status, answer) = match (method.as_str(), path.as_str()) {
            ("POST", "/v1/hive/ready") if !json => (
                415,
                "Expected request with `Content-Type: application/json`".to_owned(),
            ),
            ("POST", "/v1/hive/ready") => {
                match serde_json::from_slice::<HiveReadyCallback>(&body) {
                    Err(error) => (422, format!("Failed to deserialize the JSON body: {error}")),
                    Ok(ready) => {
                        let answer = serde_json::json!({
                            "status": "ok",
                            "message": format!("Subscribed to hive {} SSE stream", ready.hive_id),
                        });
                        subscribe(shared, ready);
                        (200, answer.to_string())
                    }
                }
            }
            _ => (404, String::new()),
        };
        let kind = if status == 200 {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        let head = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\r\n",
            if status == 200 { "OK" } else { "Error" },
            answer.len()
        );
        let stream = stream.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(answer.as_bytes()).await?;
    }
}

/// Starts one more subscription loop for a registration (never deduplicated, as upstream).
fn subscribe(shared: &Arc<Shared>, ready: HiveReadyCallback) {
    shared.update(|seen| {
        seen.registrations
            .push((ready.hive_id.clone(), ready.hive_url.clone()))
    });
    let task = tokio::spawn({
        let shared = shared.clone();
        async move {
            let url = format!("{}/v1/heartbeats/stream", ready.hive_url);
            loop {
                let ended = read_stream(&url, &shared).await;
                shared.update(|seen| {
                    seen.last_error = Some(match ended {
                        Ok(()) => "the stream ended".to_owned(),
                        Err(error) => format!("{error:#}"),
                    });
                });
                tokio::time::sleep(RETRY).await;
            }
        }
    });
    shared.tasks.lock().expect("tasks lock").push(task);
}

/// `http://host:port/path` → the address and the path (only what a hive's URL holds here).
async fn split_url(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("not an http:// URL: {url}"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = tokio::net::lookup_host(authority)
        .await?
        .next()
        .with_context(|| format!("no address for {authority}"))?;
    let path = if path.is_empty() { "/" } else { path };
    Ok((addr, path.to_owned()))
}

/// Reads one subscription's stream to its end.
async fn read_stream(url: &str, shared: &Shared) -> anyhow::Result<()> {
    let (addr, path) = split_url(url).await?;
    let mut connection = Connection::open(addr).await?;
    connection.open_event_stream(&path).await?;
    shared.update(|seen| seen.open += 1);
    let result = read_messages(&mut connection, shared).await;
    shared.update(|seen| seen.open -= 1);
    result
}

async fn read_messages(connection: &mut Connection, shared: &Shared) -> anyhow::Result<()> {
    let mut pending = String::new();
    loop {
        let chunk = connection.next_chunk().await?;
        if chunk.is_empty() {
            return Ok(());
        }
        shared.update(|seen| seen.stream_bytes += chunk.len() as u64);
        pending.push_str(std::str::from_utf8(&chunk).context("the stream is not UTF-8")?);
        // SSE: a message ends at a blank line; its data is its `data:` lines, joined.
        while let Some(end) = pending.find("\n\n") {
            let block: String = pending.drain(..end + 2).collect();
            let data: Vec<&str> = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if data.is_empty() {
                continue;
            }
            accept(shared, &data.join("\n"), block.len());
        }
    }
}

/// What the queen does with one message's data.
fn accept(shared: &Shared, data: &str, message_bytes: usize) {
    let Ok(HiveHeartbeatEvent::Telemetry {
        hive_id, workers, ..
    }) = serde_json::from_str::<HiveHeartbeatEvent>(data)
    else {
        shared.update(|seen| seen.dropped_messages += 1);
        return;
    };
    let listed = workers.len();
    let ready: Vec<u32> = workers
        .iter()
        .filter(|w| w["state"] == "ready")
        .filter_map(|w| w["pid"].as_u64()?.try_into().ok())
        .collect();
    let parsed: Vec<ProcessStats> = workers
        .into_iter()
        .filter_map(|w| serde_json::from_value(w).ok())
        .collect();
    let at = Instant::now();
    shared.update(|seen| {
        for worker in &parsed {
            seen.first_seen.entry(worker.pid).or_insert(at);
        }
        for pid in ready {
            seen.first_ready.entry(pid).or_insert(at);
        }
        let in_list: std::collections::HashSet<u32> = parsed.iter().map(|w| w.pid).collect();
        let Seen {
            first_seen, gone, ..
        } = &mut *seen;
        for pid in first_seen.keys().filter(|pid| !in_list.contains(pid)) {
            gone.entry(*pid).or_insert(at);
        }
        seen.heartbeats.push(Heartbeat {
            at,
            message_bytes,
            listed,
            parsed: parsed.len(),
        });
        seen.workers.insert(hive_id, parsed);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(pid: u32) -> serde_json::Value {
        serde_json::json!({"pid": pid, "group": "demo", "instance": "9100", "cpu_pct": 0.5,
            "rss_mb": 12, "io_r_mb_s": 0.0, "io_w_mb_s": 0.0, "uptime_s": 3,
            "gpu_util_pct": 0.0, "vram_mb": 0, "total_vram_mb": 0, "model": "m",
            "worker_id": "worker-1", "state": "ready"})
    }

    fn shared() -> Shared {
        Shared {
            seen: Mutex::new(Seen::default()),
            changed: Notify::new(),
            tasks: Mutex::new(Vec::new()),
        }
    }

    #[test]
    fn parses_as_strictly_as_the_queen() {
        let shared = shared();
        let mut fractional = worker(2);
        fractional["rss_mb"] = serde_json::json!(12.5);
        let mut no_model = worker(3);
        no_model.as_object_mut().unwrap().remove("model");
        let message = serde_json::json!({"type": "telemetry", "hive_id": "h",
            "hive_info": null, "timestamp": "t",
            "workers": [worker(1), fractional, no_model]});
        accept(&shared, &message.to_string(), 100);
        // Our other events have no `type` tag: dropped, as the queen drops them.
        accept(&shared, r#"{"workers":[],"at":"t"}"#, 10);
        // `hive_info` must be present, even as null.
        let mut missing = message.clone();
        missing.as_object_mut().unwrap().remove("hive_info");
        accept(&shared, &missing.to_string(), 10);
        let seen = shared.seen();
        assert_eq!(seen.dropped_messages, 2);
        assert_eq!(seen.heartbeats.len(), 1);
        assert_eq!(
            (seen.heartbeats[0].listed, seen.heartbeats[0].parsed),
            (3, 2)
        );
        let mut pids: Vec<u32> = seen.first_seen.keys().copied().collect();
        pids.sort_unstable();
        assert_eq!(pids, [1, 3]);
        assert_eq!(seen.workers["h"].len(), 2);
        drop(seen);
        // The next list lacks pid 1: it is gone from then on; pid 3 is not.
        let next = serde_json::json!({"type": "telemetry", "hive_id": "h",
            "hive_info": {}, "timestamp": "t", "workers": [worker(3)]});
        accept(&shared, &next.to_string(), 100);
        let seen = shared.seen();
        assert!(seen.gone.contains_key(&1));
        assert!(!seen.gone.contains_key(&3));
    }

    #[tokio::test]
    async fn registers_answers_ok_and_subscribes_by_concatenation() {
        // A stand-in hive: one SSE answer under a path prefix, with one heartbeat.
        let hive = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hive_addr = hive.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (stream, _) = hive.accept().await.unwrap();
            let mut stream = BufReader::new(stream);
            let mut request = String::new();
            stream.read_line(&mut request).await.unwrap();
            let message = format!(
                "event: heartbeat\ndata: {}\n\n",
                serde_json::json!({"type": "telemetry", "hive_id": "h", "hive_info": {},
                    "timestamp": "t", "workers": [worker(42)]})
            );
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{message}\r\n",
                message.len()
            );
            stream.get_mut().write_all(answer.as_bytes()).await.unwrap();
            // Kept open until the queen is dropped.
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
            request
        });
        let queen = MinimalQueen::start().await.unwrap();
        let body = format!(r#"{{"hive_id":"h","hive_url":"http://{hive_addr}/queen/k"}}"#);
        let mut connection = tokio::net::TcpStream::connect(queen.addr).await.unwrap();
        connection
            .write_all(
                format!(
                    "POST /v1/hive/ready HTTP/1.1\r\nhost: q\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut answer = vec![0; 512];
        let n = connection.read(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(r#""status":"ok""#), "{answer}");
        queen.first_seen(42, Duration::from_secs(5)).await.unwrap();
        drop(queen);
        let request = served.await.unwrap();
        assert_eq!(
            request.trim_end(),
            "GET /queen/k/v1/heartbeats/stream HTTP/1.1"
        );
    }
}
