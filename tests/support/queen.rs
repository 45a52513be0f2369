//! [`FakeQueen`]: an in-process test double of today's rbee queen (`queen-rbee`), for the
//! tests of a hive's registration and telemetry (PROTOCOL §9).
//!
//! It owns exactly the part of the queen that a hive meets, copied from the upstream source
//! (veighnsche/llama-orch, `main` at 6ca9100, 2025-11-01; `/work/.mirror/veighnsche+llama-orch`):
//!
//! - `POST /v1/hive/ready` (`bin/10_queen_rbee/src/http/heartbeat.rs`, `handle_hive_ready`):
//!   body `{"hive_id","hive_url"}` through axum's `Json` extractor (the same axum 0.8, so the
//!   same 415/400/422 refusals), answer `{"status":"ok","message":"Subscribed to hive X SSE
//!   stream"}`, and one more subscription loop per call, never deduplicated.
//! - The subscription loop (`bin/10_queen_rbee/src/hive_subscriber.rs`, `subscribe_to_hive`),
//!   run with the same client crate (`reqwest-eventsource` 0.6, `EventSource::get`), so the
//!   request (`Accept: text/event-stream`, no token), the status and `Content-Type` checks
//!   (exactly 200 and `text/event-stream`, else an error) and the SSE parsing are upstream's.
//!   The stream URL is `format!("{}/v1/heartbeats/stream", hive_url)`: string concatenation,
//!   not a URL join (a trailing `/` in `hive_url` gives `//v1/…`; a path prefix is kept).
//! - The registry (`bin/15_queen_rbee_crates/telemetry-registry/src/registry.rs`,
//!   `TelemetryRegistry`): a set of listed hives and, apart from it, a map hive id → workers.
//!
//! Upstream's listing rules, kept here even where they look wrong (UPSTREAM.md says "copy its
//! wire shapes, not its behaviour", but a double must behave like the real queen):
//!
//! - A loop lists its hive (`register_hive`) at the start of every connection attempt,
//!   *before* the connection is made, and unlists it (`remove_hive`) when that attempt ends
//!   for any reason (refused, non-200, wrong content type, stream ended), then sleeps 5 s
//!   ([`QueenBuilder::retry_period`]) and tries again, forever. So during a hive outage the
//!   hive is listed for the few milliseconds of each attempt, and with two loops for one
//!   hive, the end of either connection unlists the hive although the other is still open
//!   (until the next attempt of either loop lists it again). [`HiveView::open_connections`]
//!   counts the connections really open, for tests that want that instead.
//! - Workers are stored under the `hive_id` *of the message*, not of the registration, and
//!   are never removed with the hive: they stay until the next accepted message for that id.
//! - The loop ends only where `EventSource::get` panics (a `hive_url` from which reqwest
//!   cannot build a request, e.g. `not a url`); the POST was answered `ok` before that.
//!
//! Not copied: the queen's own `/v1/heartbeats/stream`, jobs, discovery over ssh, the UI.
//!
//! A killed queen ([`FakeQueen::stop`]): the queen runs on a runtime of its own, in a thread
//! of its own; stopping drops that runtime, which closes the listener, every connection to
//! the queen and every subscription connection, and loses all its memory.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use reqwest_eventsource::{Event, EventSource};

use crate::wait;

pub use upstream::{
    HiveHeartbeatEvent, HiveReadyCallback, HttpHeartbeatAcknowledgement, ProcessStats,
};

/// Strict copies of the upstream serde types: same fields, same Rust types, same serde
/// attributes, so the same JSON is accepted and refused (extra fields ignored; a missing
/// field or a wrong JSON type refused; an `Option` field may be absent).
pub mod upstream {
    use serde::{Deserialize, Serialize};

    /// Copy of `rbee_hive_monitor::ProcessStats`
    /// (`bin/25_rbee_hive_crates/monitor/src/lib.rs`). Upstream derives `Debug, Clone,
    /// Serialize, Deserialize`; `PartialEq` is added for the tests and changes no parsing.
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct ProcessStats {
        /// `ProcessStats.pid: u32` (monitor/src/lib.rs).
        pub pid: u32,
        /// `ProcessStats.group: String` (monitor/src/lib.rs).
        pub group: String,
        /// `ProcessStats.instance: String` (monitor/src/lib.rs).
        pub instance: String,
        /// `ProcessStats.cpu_pct: f64` (monitor/src/lib.rs).
        pub cpu_pct: f64,
        /// `ProcessStats.rss_mb: u64` (monitor/src/lib.rs): a fraction is refused.
        pub rss_mb: u64,
        /// `ProcessStats.io_r_mb_s: f64` (monitor/src/lib.rs).
        pub io_r_mb_s: f64,
        /// `ProcessStats.io_w_mb_s: f64` (monitor/src/lib.rs).
        pub io_w_mb_s: f64,
        /// `ProcessStats.uptime_s: u64` (monitor/src/lib.rs).
        pub uptime_s: u64,
        /// `ProcessStats.gpu_util_pct: f64` (monitor/src/lib.rs).
        pub gpu_util_pct: f64,
        /// `ProcessStats.vram_mb: u64` (monitor/src/lib.rs).
        pub vram_mb: u64,
        /// `ProcessStats.total_vram_mb: u64` (monitor/src/lib.rs).
        pub total_vram_mb: u64,
        /// `ProcessStats.model: Option<String>` (monitor/src/lib.rs): serde's derive takes
        /// an absent `Option` field as `None`, so `model` may be left out, or be `null`.
        pub model: Option<String>,
    }

    /// Copy of `queen_rbee::hive_subscriber::HiveHeartbeatEvent`
    /// (`bin/10_queen_rbee/src/hive_subscriber.rs`): what the queen parses each SSE
    /// message's `data` into. Internally tagged: `"type":"telemetry"` is required.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum HiveHeartbeatEvent {
        /// `HiveHeartbeatEvent::Telemetry` (hive_subscriber.rs).
        Telemetry {
            /// `Telemetry.hive_id: String` (hive_subscriber.rs).
            hive_id: String,
            /// `Telemetry._hive_info: serde_json::Value`, renamed `hive_info`
            /// (hive_subscriber.rs): any JSON, `null` included, but it must be present.
            #[serde(rename = "hive_info")]
            _hive_info: serde_json::Value,
            /// `Telemetry.timestamp: String` (hive_subscriber.rs).
            timestamp: String,
            /// `Telemetry.workers: Vec<serde_json::Value>` (hive_subscriber.rs): must be an
            /// array; each element is then parsed into [`ProcessStats`] on its own.
            workers: Vec<serde_json::Value>,
        },
    }

    /// Copy of `queen_rbee::http::heartbeat::HiveReadyCallback`
    /// (`bin/10_queen_rbee/src/http/heartbeat.rs`): the body of `POST /v1/hive/ready`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct HiveReadyCallback {
        /// `HiveReadyCallback.hive_id: String` (http/heartbeat.rs).
        pub hive_id: String,
        /// `HiveReadyCallback.hive_url: String` (http/heartbeat.rs).
        pub hive_url: String,
    }

    /// Copy of `queen_rbee::http::heartbeat::HttpHeartbeatAcknowledgement`
    /// (`bin/10_queen_rbee/src/http/heartbeat.rs`): the answer to `POST /v1/hive/ready`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct HttpHeartbeatAcknowledgement {
        /// `HttpHeartbeatAcknowledgement.status: String` (http/heartbeat.rs): `"ok"`.
        pub status: String,
        /// `HttpHeartbeatAcknowledgement.message: String` (http/heartbeat.rs).
        pub message: String,
    }
}

/// Upstream's retry period after a subscription ends (`hive_subscriber.rs`: a fixed 5 s).
pub const UPSTREAM_RETRY: Duration = Duration::from_secs(5);

/// How the fake answers `POST /v1/hive/ready` (after recording it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyAnswer {
    /// As upstream: `200 {"status":"ok",…}` and one more subscription loop.
    Subscribe,
    /// This status with a plain-text body, and no subscription (a failing queen).
    Status(u16),
    /// Never answers (the connection stays open until the queen stops): upstream's hive
    /// gives up after its 5 s client timeout.
    Hang,
}

/// One `POST /v1/hive/ready` whose body parsed.
#[derive(Debug, Clone)]
pub struct Registration {
    /// `hive_id` of the body.
    pub hive_id: String,
    /// `hive_url` of the body.
    pub hive_url: String,
    /// When it arrived.
    pub at: Instant,
    /// The address it came from.
    pub peer: SocketAddr,
    /// How the fake answered it.
    pub answer: ReadyAnswer,
}

/// One `POST /v1/hive/ready` that axum's `Json` extractor refused, as upstream's would.
#[derive(Debug, Clone)]
pub struct RejectedRegistration {
    /// The status answered (415 no JSON content type, 400 bad JSON, 422 wrong shape).
    pub status: u16,
    /// The body answered (axum's reason).
    pub reason: String,
    /// The address it came from.
    pub peer: SocketAddr,
}

/// One connection attempt of a subscription loop.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Which registration's loop (index into [`FakeQueen::registrations`]).
    pub registration: usize,
    /// The hive id of that registration.
    pub hive_id: String,
    /// The URL requested, built as upstream builds it.
    pub url: String,
    /// The request path of `url` (with its query, if any).
    pub path: String,
    /// 1 for the loop's first attempt, then 2, ….
    pub attempt: u32,
    /// When the attempt started (and upstream listed the hive).
    pub started: Instant,
    /// When the hive's answer was accepted as an event stream (`Event::Open`).
    pub opened: Option<Instant>,
    /// When and why the attempt ended (the client's error).
    pub ended: Option<(Instant, String)>,
}

impl Subscription {
    /// Whether this connection is open now: accepted as a stream and not ended.
    pub fn is_open(&self) -> bool {
        self.opened.is_some() && self.ended.is_none()
    }
}

/// What the queen knows about one hive id.
#[derive(Debug, Clone, Default)]
pub struct HiveView {
    /// In upstream's hive list (`TelemetryRegistry::get_hive(id).is_some()`).
    pub listed: bool,
    /// Upstream's stored workers for this id (`get_workers(id)`, empty if none): the
    /// workers of the last accepted message whose `hive_id` is this id.
    pub workers: Vec<ProcessStats>,
    /// How the queen names those workers: `{group}-{instance}`.
    pub worker_ids: Vec<String>,
    /// Subscription connections of loops registered for this id that are open now.
    pub open_connections: usize,
    /// How many times the hive was taken off the list (`remove_hive` found it).
    pub removals: u64,
    /// Messages on this hive's connections that parsed (each replaced a worker list).
    pub messages_accepted: u64,
    /// Messages on this hive's connections that did not parse, dropped silently upstream.
    pub messages_dropped: u64,
    /// Why the last one was dropped (serde's error, the event name and the data).
    pub last_drop: Option<String>,
    /// Workers dropped alone out of accepted messages.
    pub workers_dropped: u64,
    /// Why the last one was dropped (serde's error and the worker's JSON).
    pub last_worker_drop: Option<String>,
    /// The `hive_id` inside the last accepted message on this hive's connections.
    pub last_message_hive_id: Option<String>,
}

/// Per registered hive id: what happened on its connections.
#[derive(Debug, Default)]
struct Counters {
    removals: u64,
    accepted: u64,
    dropped: u64,
    last_drop: Option<String>,
    workers_dropped: u64,
    last_worker_drop: Option<String>,
    last_message_hive_id: Option<String>,
}

/// The queen's memory. Locked briefly, never across an `.await`.
#[derive(Debug)]
struct Memory {
    /// Upstream `TelemetryRegistry.hives` (its keys).
    hives: HashSet<String>,
    /// Upstream `TelemetryRegistry.workers`.
    workers: HashMap<String, Vec<ProcessStats>>,
    counters: HashMap<String, Counters>,
    registrations: Vec<Registration>,
    rejected: Vec<RejectedRegistration>,
    subscriptions: Vec<Subscription>,
    ready_answer: ReadyAnswer,
    log: Vec<(Instant, String)>,
    started: Instant,
}

#[derive(Debug, Clone)]
struct Shared {
    memory: Arc<Mutex<Memory>>,
    retry: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Memory> {
        // A panicking test thread must not hide the queen's state from the next look.
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Memory {
    fn note(&mut self, line: String) {
        self.log.push((Instant::now(), line));
    }
}

/// Options for a [`FakeQueen`].
#[derive(Debug, Clone)]
pub struct QueenBuilder {
    port: u16,
    retry: Duration,
    ready_answer: ReadyAnswer,
}

impl Default for QueenBuilder {
    fn default() -> Self {
        Self {
            port: 0,
            retry: UPSTREAM_RETRY,
            ready_answer: ReadyAnswer::Subscribe,
        }
    }
}

impl QueenBuilder {
    /// Binds this port on 127.0.0.1 (default 0: any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// How long a loop waits after a connection ends before it tries again (upstream: 5 s).
    pub fn retry_period(mut self, period: Duration) -> Self {
        self.retry = period;
        self
    }

    /// How `POST /v1/hive/ready` is answered from the start.
    pub fn ready_answer(mut self, answer: ReadyAnswer) -> Self {
        self.ready_answer = answer;
        self
    }

    /// Starts the queen. Panics if the port cannot be bound.
    pub async fn start(self) -> FakeQueen {
        // Bound here, synchronously, so that the port is known and connections queue in
        // the backlog before the queen's runtime runs. std sets SO_REUSEADDR on Unix, so a
        // restart on the port of a stopped queen is not refused for its TIME_WAIT sockets.
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port))
            .unwrap_or_else(|e| panic!("fake queen cannot bind 127.0.0.1:{}: {e}", self.port));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("bound address").port();
        let shared = Shared {
            memory: Arc::new(Mutex::new(Memory {
                hives: HashSet::new(),
                workers: HashMap::new(),
                counters: HashMap::new(),
                registrations: Vec::new(),
                rejected: Vec::new(),
                subscriptions: Vec::new(),
                ready_answer: self.ready_answer,
                log: Vec::new(),
                started: Instant::now(),
            })),
            retry: self.retry,
        };
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let (stopped_tx, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("fake-queen-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake queen runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let serve = axum::serve(
                        listener,
                        app.into_make_service_with_connect_info::<SocketAddr>(),
                    );
                    tokio::select! {
                        result = async { serve.await } => {
                            panic!("fake queen server ended: {result:?}")
                        }
                        _ = shutdown_rx => {}
                    }
                });
                // Dropping the runtime drops every task on it: the listener, each
                // connection to the queen, each subscription loop and its connection.
                drop(runtime);
                let _ = stopped_tx.send(());
            })
            .expect("fake queen thread");
        FakeQueen {
            port,
            shared,
            shutdown: Some(shutdown),
            stopped: Some(stopped),
            thread: Some(thread),
        }
    }
}

/// A running fake of today's queen on 127.0.0.1; see the module doc.
#[derive(Debug)]
pub struct FakeQueen {
    port: u16,
    shared: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    stopped: Option<tokio::sync::oneshot::Receiver<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeQueen {
    /// Options for a queen (port, retry period, how registration is answered).
    pub fn builder() -> QueenBuilder {
        QueenBuilder::default()
    }

    /// A queen as upstream, on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// A queen as upstream on this port (e.g. the port of a stopped one: a restart).
    pub async fn start_on(port: u16) -> Self {
        Self::builder().port(port).start().await
    }

    /// `http://127.0.0.1:<port>`: what a hive takes as `queen_url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the queen: listener, every connection to it and every subscription connection
    /// closed, its memory gone. Returns once all of that is done.
    pub async fn stop(mut self) {
        self.signal_stop();
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.await;
        }
        if let Some(thread) = self.thread.take() {
            // It has sent `stopped` as its last act: this join does not wait.
            let _ = thread.join();
        }
    }

    fn signal_stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Changes how the next `POST /v1/hive/ready` is answered.
    pub fn set_ready_answer(&self, answer: ReadyAnswer) {
        self.shared.lock().ready_answer = answer;
    }

    /// Every registration whose body parsed, in order.
    pub fn registrations(&self) -> Vec<Registration> {
        self.shared.lock().registrations.clone()
    }

    /// Every registration refused by the `Json` extractor, in order.
    pub fn rejected_registrations(&self) -> Vec<RejectedRegistration> {
        self.shared.lock().rejected.clone()
    }

    /// Every connection attempt of every subscription loop, in order.
    pub fn subscription_attempts(&self) -> Vec<Subscription> {
        self.shared.lock().subscriptions.clone()
    }

    /// The attempts whose answer was accepted as an event stream, open now or not.
    pub fn subscriptions_opened(&self) -> Vec<Subscription> {
        let memory = self.shared.lock();
        memory
            .subscriptions
            .iter()
            .filter(|s| s.opened.is_some())
            .cloned()
            .collect()
    }

    /// The subscription connections open now.
    pub fn open_subscriptions(&self) -> Vec<Subscription> {
        let memory = self.shared.lock();
        memory
            .subscriptions
            .iter()
            .filter(|s| s.is_open())
            .cloned()
            .collect()
    }

    /// The queen's view of one hive id.
    pub fn hive(&self, hive_id: &str) -> HiveView {
        let memory = self.shared.lock();
        let workers = memory.workers.get(hive_id).cloned().unwrap_or_default();
        let counters = memory.counters.get(hive_id);
        HiveView {
            listed: memory.hives.contains(hive_id),
            worker_ids: workers.iter().map(worker_id).collect(),
            workers,
            open_connections: memory
                .subscriptions
                .iter()
                .filter(|s| s.hive_id == hive_id && s.is_open())
                .count(),
            removals: counters.map_or(0, |c| c.removals),
            messages_accepted: counters.map_or(0, |c| c.accepted),
            messages_dropped: counters.map_or(0, |c| c.dropped),
            last_drop: counters.and_then(|c| c.last_drop.clone()),
            workers_dropped: counters.map_or(0, |c| c.workers_dropped),
            last_worker_drop: counters.and_then(|c| c.last_worker_drop.clone()),
            last_message_hive_id: counters.and_then(|c| c.last_message_hive_id.clone()),
        }
    }

    /// The listed hive ids, sorted (upstream `list_online_hives`).
    pub fn listed_hives(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.shared.lock().hives.iter().cloned().collect();
        ids.sort();
        ids
    }

    /// Every worker the queen knows, of every hive, listed or not, as the queen names them
    /// (`{group}-{instance}`, upstream `create_queen_heartbeat`'s `worker_ids`), sorted.
    pub fn worker_ids(&self) -> Vec<String> {
        let memory = self.shared.lock();
        let mut ids: Vec<String> = memory.workers.values().flatten().map(worker_id).collect();
        ids.sort();
        ids
    }

    /// What the queen did, one line per event, with the time since it started: for the
    /// message of a failed wait.
    pub fn log(&self) -> String {
        let memory = self.shared.lock();
        let mut out = String::new();
        for (at, line) in &memory.log {
            let _ = writeln!(
                out,
                "[queen +{:.3}s] {line}",
                (*at - memory.started).as_secs_f64()
            );
        }
        out
    }

    /// Waits until the view of `hive_id` is accepted; returns it. Fails the test with
    /// `what`, the last view and the queen's log after `timeout`.
    pub async fn wait_for_hive(
        &self,
        what: &str,
        hive_id: &str,
        timeout: Duration,
        accept: impl Fn(&HiveView) -> bool,
    ) -> HiveView {
        let what = format!("{what} (hive {hive_id:?})");
        wait::wait_for(
            wait::with_context(&what, || self.log()),
            timeout,
            || std::future::ready(self.hive(hive_id)),
            accept,
        )
        .await
    }

    /// Waits until the queen shows a worker with this pid for `hive_id`; returns it.
    pub async fn wait_for_worker(
        &self,
        hive_id: &str,
        pid: u32,
        timeout: Duration,
    ) -> ProcessStats {
        let view = self
            .wait_for_hive(
                &format!("the queen shows worker pid {pid}"),
                hive_id,
                timeout,
                |v| v.workers.iter().any(|w| w.pid == pid),
            )
            .await;
        view.workers
            .into_iter()
            .find(|w| w.pid == pid)
            .expect("accepted above")
    }

    /// Waits until `hive_id` is listed.
    pub async fn wait_listed(&self, hive_id: &str, timeout: Duration) -> HiveView {
        self.wait_for_hive("the hive is listed", hive_id, timeout, |v| v.listed)
            .await
    }

    /// Waits until `hive_id` is not listed.
    pub async fn wait_unlisted(&self, hive_id: &str, timeout: Duration) -> HiveView {
        self.wait_for_hive("the hive is not listed", hive_id, timeout, |v| !v.listed)
            .await
    }

    /// Waits until at least `count` registrations arrived; returns them all.
    pub async fn wait_for_registrations(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Vec<Registration> {
        let what = format!("{count} registration(s) at the queen");
        wait::wait_for(
            wait::with_context(&what, || self.log()),
            timeout,
            || std::future::ready(self.registrations()),
            |r| r.len() >= count,
        )
        .await
    }

    /// Waits until exactly `count` subscription connections are open; returns them.
    pub async fn wait_for_open_subscriptions(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Vec<Subscription> {
        let what = format!("{count} open subscription connection(s)");
        wait::wait_for(
            wait::with_context(&what, || self.log()),
            timeout,
            || std::future::ready(self.open_subscriptions()),
            |s| s.len() == count,
        )
        .await
    }
}

impl Drop for FakeQueen {
    fn drop(&mut self) {
        // A queen dropped without `stop` is stopped too, so no loop outlives its test.
        self.signal_stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How the queen names a worker (`heartbeat_stream.rs`, `job_router.rs`, `simple.rs`).
pub fn worker_id(w: &ProcessStats) -> String {
    format!("{}-{}", w.group, w.instance)
}

fn router(shared: Shared) -> axum::Router {
    axum::Router::new()
        // Upstream `handle_health`: a bare 200.
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/v1/hive/ready", post(handle_hive_ready))
        .with_state(shared)
}

/// Upstream `handle_hive_ready`, with recording and the failure modes added.
async fn handle_hive_ready(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<HiveReadyCallback>, JsonRejection>,
) -> Response {
    let callback = match body {
        Ok(Json(callback)) => callback,
        Err(rejection) => {
            let status = rejection.status().as_u16();
            let reason = rejection.body_text();
            let mut memory = shared.lock();
            memory.note(format!(
                "POST /v1/hive/ready from {peer} refused {status}: {reason}"
            ));
            memory.rejected.push(RejectedRegistration {
                status,
                reason,
                peer,
            });
            drop(memory);
            return rejection.into_response();
        }
    };
    let (answer, registration) = {
        let mut memory = shared.lock();
        let answer = memory.ready_answer;
        memory.note(format!(
            "POST /v1/hive/ready from {peer}: hive_id={:?} hive_url={:?}, answer {answer:?}",
            callback.hive_id, callback.hive_url
        ));
        memory.registrations.push(Registration {
            hive_id: callback.hive_id.clone(),
            hive_url: callback.hive_url.clone(),
            at: Instant::now(),
            peer,
            answer,
        });
        (answer, memory.registrations.len() - 1)
    };
    match answer {
        ReadyAnswer::Subscribe => {
            // Upstream spawns the loop and answers without waiting for it.
            tokio::spawn(subscribe_to_hive(
                shared,
                callback.hive_url.clone(),
                callback.hive_id.clone(),
                registration,
            ));
            Json(HttpHeartbeatAcknowledgement {
                status: "ok".to_string(),
                message: format!("Subscribed to hive {} SSE stream", callback.hive_id),
            })
            .into_response()
        }
        ReadyAnswer::Status(code) => {
            let status = StatusCode::from_u16(code).expect("a valid status code");
            (status, "fake queen: /v1/hive/ready set to fail").into_response()
        }
        ReadyAnswer::Hang => std::future::pending().await,
    }
}

/// Upstream `subscribe_to_hive`, step for step, with recording.
async fn subscribe_to_hive(shared: Shared, hive_url: String, hive_id: String, registration: usize) {
    let stream_url = format!("{}/v1/heartbeats/stream", hive_url);
    let path = request_path(&stream_url);
    let mut attempt = 0;
    loop {
        attempt += 1;
        // Upstream: `EventSource::get(&stream_url)`, which is
        // `EventSource::new(Client::new().get(url)).unwrap()`, and `new` fails exactly when
        // the request builder cannot be cloned, i.e. when reqwest could not build a request
        // from the URL. Upstream's task then panics and its loop is over; here the same test
        // ends the loop without the panic's noise in every test's output.
        if reqwest::Client::new()
            .get(&stream_url)
            .try_clone()
            .is_none()
        {
            shared.lock().note(format!(
                "loop {registration} for {hive_id:?}: EventSource::get({stream_url:?}) would \
                 panic (no request can be built); the loop ends, as upstream's task does"
            ));
            return;
        }
        let mut event_source = EventSource::get(&stream_url);
        // Upstream registers the hive here, before the connection is even tried.
        let index = {
            let mut memory = shared.lock();
            memory.hives.insert(hive_id.clone());
            memory.note(format!(
                "loop {registration} attempt {attempt}: GET {stream_url} (hive {hive_id:?} listed)"
            ));
            memory.subscriptions.push(Subscription {
                registration,
                hive_id: hive_id.clone(),
                url: stream_url.clone(),
                path: path.clone(),
                attempt,
                started: Instant::now(),
                opened: None,
                ended: None,
            });
            memory.subscriptions.len() - 1
        };
        let mut reason = "stream returned None".to_string();
        while let Some(event) = event_source.next().await {
            match event {
                Ok(Event::Message(message)) => {
                    on_message(&shared, &hive_id, &message.event, &message.data)
                }
                Ok(Event::Open) => {
                    let mut memory = shared.lock();
                    memory.subscriptions[index].opened = Some(Instant::now());
                    memory.note(format!("loop {registration} attempt {attempt}: open"));
                }
                Err(e) => {
                    reason = e.to_string();
                    break;
                }
            }
        }
        {
            let mut memory = shared.lock();
            memory.subscriptions[index].ended = Some((Instant::now(), reason.clone()));
            let removed = memory.hives.remove(&hive_id);
            if removed {
                memory.counters.entry(hive_id.clone()).or_default().removals += 1;
            }
            memory.note(format!(
                "loop {registration} attempt {attempt}: ended ({reason}); hive {hive_id:?} \
                 removed: {removed}; retry in {:?}",
                shared.retry
            ));
        }
        tokio::time::sleep(shared.retry).await;
    }
}

/// Upstream's handling of one message: `serde_json::from_str::<HiveHeartbeatEvent>(&data)`,
/// dropped silently on error (the event name is never looked at); then each worker
/// `serde_json::from_value::<ProcessStats>` on its own inside `filter_map(.. .ok())`, so a
/// bad worker is dropped alone and the others are kept; then
/// `update_workers(<the message's hive_id>, parsed)`, which replaces the whole list.
/// `registered` is the hive id of the loop, which only keys the counters here.
fn on_message(shared: &Shared, registered: &str, event: &str, data: &str) {
    let parsed = serde_json::from_str::<HiveHeartbeatEvent>(data);
    let mut memory = shared.lock();
    let memory = &mut *memory;
    let counters = memory.counters.entry(registered.to_owned()).or_default();
    match parsed {
        Err(e) => {
            counters.dropped += 1;
            let line = format!(
                "dropped message (event {event:?}): {e}; data {}",
                clip(data)
            );
            counters.last_drop = Some(line.clone());
            memory
                .log
                .push((Instant::now(), format!("hive {registered:?}: {line}")));
        }
        Ok(HiveHeartbeatEvent::Telemetry {
            hive_id, workers, ..
        }) => {
            let mut kept = Vec::with_capacity(workers.len());
            for worker in workers {
                let text = worker.to_string();
                match serde_json::from_value::<ProcessStats>(worker) {
                    Ok(stats) => kept.push(stats),
                    Err(e) => {
                        counters.workers_dropped += 1;
                        let line = format!("dropped worker: {e}; worker {}", clip(&text));
                        counters.last_worker_drop = Some(line.clone());
                        memory
                            .log
                            .push((Instant::now(), format!("hive {registered:?}: {line}")));
                    }
                }
            }
            counters.accepted += 1;
            counters.last_message_hive_id = Some(hive_id.clone());
            memory.workers.insert(hive_id, kept);
        }
    }
}

/// The path and query of a URL, or the whole text if it does not parse.
fn request_path(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(url) => match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        },
        Err(_) => url.to_owned(),
    }
}

/// At most 300 characters of a message, for the log.
fn clip(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}
