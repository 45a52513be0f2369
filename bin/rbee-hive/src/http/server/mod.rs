//! The HTTP/1.1 server loop: accepts connections, serves each with hyper, and bounds what
//! a client can hold:
//!
//! - a new connection may wait for the head of its first request at most
//!   `header_timeout_s`: slow or silent headers are closed;
//! - a request's body must arrive whole within `body_timeout_s` of its head (a total, not
//!   a wait between bytes: a body that trickles in a byte at a time is cut too); the
//!   handler then answers `408` and the connection closes;
//! - between requests, an idle keep-alive connection is closed after `idle_timeout_s` (a
//!   later request's head that trickles in is bounded by that, as this loop does not see
//!   partial bytes); a request in flight, a job or telemetry stream included, is never cut
//!   by either;
//! - at most `max_connections` are open (never more than the file-descriptor limit allows,
//!   less a reserve for workers and files). At the cap, a new connection takes the place of
//!   the connection that has been idle longest (no request in flight: a silent, slow-header
//!   or kept-alive connection), which is closed, so `/health` and real clients keep being
//!   served while idle connections pile up; when every connection has a request in flight,
//!   the new one gets a `503` and is closed (and beyond 64 refusals at once,
//!   it is closed without an answer). A connection chosen at the instant its request's
//!   head arrives, before hyper has parsed it, is closed with it (its client sees a reset
//!   and may retry); one whose request was parsed finishes it and then closes, and its
//!   newcomer may wait up to a second for the place.
//!
//! Shutdown hands over without losing a request, and without waiting for idle clients:
//! accepting stops (under socket activation the socket itself stays with the service
//! manager, and the next hive accepts from it); a request in flight is finished and its
//! connection closed; an idle kept-alive connection is closed at once unless a request's
//! bytes are arriving on it (`io`); a fresh connection that has not sent its first byte yet
//! is given one second for it (its client connected to send a request); a request that
//! arrives is served with `connection: close`; once the drain time is over, every connection
//! still open is dropped.
//!
//! # Layout
//! - this file: the accept loop, the connection cap, and the monitor of one connection;
//! - `io`: the socket as hyper reads it, which ends idle reads once closing;
//! - `idle`: the idle connections a newcomer at the cap may take the place of;
//! - `body`: the response body that counts a request in flight, the request body deadline.

mod body;
mod idle;
mod io;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub use body::BodyTimedOut;
use body::{DeadlineBody, GuardedBody};
use idle::{IdleConnections, IdleEntry};

/// The bounds of the server loop.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// The longest wait for a request's head.
    pub header_timeout: Duration,
    /// The longest time for a request's body, from its head on.
    pub body_timeout: Duration,
    /// The longest idle time of a keep-alive connection between requests.
    pub idle_timeout: Duration,
    /// The most connections open at once.
    pub max_connections: usize,
}

/// What the connection monitor knows of one connection, shared with its service and IO.
struct ConnectionState {
    /// Requests whose response body has not ended yet.
    in_flight: AtomicUsize,
    /// Requests whose head arrived.
    started: AtomicUsize,
    /// Set when the shutdown began (or the connection was evicted with a request in
    /// flight): every response closes its connection, and a read between requests ends it.
    closing: AtomicBool,
    /// Bytes hyper has read from the socket.
    bytes_read: AtomicU64,
    /// `bytes_read` when the last request in flight ended: more since means a request's
    /// bytes are arriving.
    bytes_read_when_idle: AtomicU64,
    /// Set when hyper wrote and has not flushed yet: a response's end may still be in
    /// hyper's buffer after its body ended.
    unflushed: AtomicBool,
    /// Woken when a request starts or ends.
    changed: tokio::sync::Notify,
}

impl ConnectionState {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            bytes_read: AtomicU64::new(0),
            bytes_read_when_idle: AtomicU64::new(0),
            unflushed: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Closing, a request was served before and all of its answer handed to the kernel,
    /// none is in flight and no byte of another has been read: nothing is arriving that the
    /// client expects an answer to.
    fn is_between_requests_while_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
            && self.started.load(Ordering::SeqCst) > 0
            && self.in_flight.load(Ordering::SeqCst) == 0
            && !self.unflushed.load(Ordering::SeqCst)
            && self.bytes_read.load(Ordering::SeqCst)
                == self.bytes_read_when_idle.load(Ordering::SeqCst)
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then hands over as the module
/// says. Returns once every connection has closed; `abort` drops those still open.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    abort: CancellationToken,
) {
    let server = Server {
        router,
        limits,
        shutdown: shutdown.clone(),
        abort,
        permits: Arc::new(tokio::sync::Semaphore::new(limits.max_connections)),
        refusing: Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING)),
        idle: IdleConnections::default(),
        waiting: Arc::new(AtomicUsize::new(0)),
        placed: Arc::new(tokio::sync::Notify::new()),
    };
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        // While many newcomers wait for the places of connections they evicted (each holds
        // a descriptor beyond the cap), the next connections wait in the kernel's backlog
        // instead: they cost the hive nothing there.
        while server.waiting.load(Ordering::SeqCst) >= MAX_EVICTING && !shutdown.is_cancelled() {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = server.placed.notified() => {}
            }
        }
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors or memory for a moment: the connection stays in the
                // backlog; try again shortly rather than spin.
                tracing::warn!("accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Narration is many small writes: without TCP_NODELAY, Nagle's algorithm and the
        // client's delayed ACK hold lines back for up to 40 ms.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {error}");
        }
        // Places freed by evictions belong to the connections that evicted for them: a
        // newcomer takes a free place only beyond those.
        let free = server.permits.available_permits() > server.waiting.load(Ordering::SeqCst);
        let place = free
            .then(|| server.permits.clone().try_acquire_owned().ok())
            .flatten();
        if let Some(place) = place {
            connections.spawn(server.clone().serve(stream, place));
        } else if server.idle.evict_oldest() {
            server.waiting.fetch_add(1, Ordering::SeqCst);
            connections.spawn(server.clone().serve_after_eviction(stream));
        } else {
            connections.spawn(server.clone().refuse(stream));
        }
    }
    // Under socket activation the service manager keeps its copy: connections that arrive
    // from now on wait in the backlog for the next hive.
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// How many connections over the cap may be answered `503` at once (each holds a descriptor
/// for up to a second); beyond, they are closed without an answer.
const MAX_REFUSING: usize = 64;

/// How many newcomers may wait at once for the place of a connection they evicted (each
/// holds a descriptor beyond the cap meanwhile); beyond, accepting pauses.
const MAX_EVICTING: usize = 64;

/// How long a connection that took an idle connection's place waits for that place.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// What every connection task of one server shares.
#[derive(Clone)]
struct Server {
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    abort: CancellationToken,
    /// One per open connection, up to the cap.
    permits: Arc<tokio::sync::Semaphore>,
    /// One per `503` being answered.
    refusing: Arc<tokio::sync::Semaphore>,
    idle: IdleConnections,
    /// Connections that evicted an idle one and wait for its place.
    waiting: Arc<AtomicUsize>,
    /// Woken when one of them got its place (or gave up).
    placed: Arc<tokio::sync::Notify>,
}

impl Server {
    /// Serves one connection, holding its place until it ends (or the drain is over).
    async fn serve(self, stream: TcpStream, place: tokio::sync::OwnedSemaphorePermit) {
        tokio::select! {
            () = serve_connection(stream, self.router, self.limits, self.shutdown, self.idle) => {}
            () = self.abort.cancelled() => {}
        }
        drop(place);
    }

    /// Serves a connection once the idle connection evicted for it has given its place
    /// back; refuses it if none comes free in time.
    async fn serve_after_eviction(self, stream: TcpStream) {
        let place = tokio::time::timeout(EVICTION_WAIT, self.permits.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.placed.notify_one();
        match place {
            Ok(Ok(place)) => self.serve(stream, place).await,
            _ => self.refuse(stream).await,
        }
    }

    /// Answers a connection over the cap with a 503 and closes it; closes it without an
    /// answer when too many are being refused already.
    async fn refuse(self, mut stream: TcpStream) {
        let Ok(_refusal) = self.refusing.clone().try_acquire_owned() else {
            return;
        };
        let cap = self.limits.max_connections;
        let body = format!(
            r#"{{"error":"too many connections (the cap is {cap}); try again shortly","code":"overloaded"}}"#
        );
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let write = async {
            stream.write_all(response.as_bytes()).await?;
            stream.shutdown().await?;
            // Read what the client sent until it closes: closing with unread data would reset
            // the connection, and the client could see the reset instead of the 503.
            let mut sink = [0u8; 4096];
            while tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? > 0 {}
            Ok::<(), std::io::Error>(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    idle: IdleConnections,
) {
    let state = Arc::new(ConnectionState::new());
    let service_state = state.clone();
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let router = router.clone();
        let state = service_state.clone();
        state.started.fetch_add(1, Ordering::SeqCst);
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        state.changed.notify_one();
        // Made here, not in the future: a future dropped unpolled still counts out.
        let guard = InFlight(state.clone());
        let request = request.map(|body| Body::new(DeadlineBody::new(body, limits.body_timeout)));
        async move {
            let mut response = router
                .oneshot(request)
                .await
                .unwrap_or_else(|never: Infallible| match never {});
            if state.closing.load(Ordering::SeqCst) {
                response
                    .headers_mut()
                    .insert("connection", HeaderValue::from_static("close"));
            }
            // The request counts as in flight until its response body has been sent or
            // dropped: a stream is never idle.
            let (parts, body) = response.into_parts();
            let body = Body::new(GuardedBody::new(body, guard));
            Ok::<_, Infallible>(Response::from_parts(parts, body))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The server loop keeps its own header and idle timers (hyper's header timer would also
    // cut idle keep-alive connections at the header timeout).
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    let io = io::DrainingIo::new(stream, state.clone());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    // When the connection last became idle (no request in flight), and how many requests
    // had started then.
    let mut idle_since = Instant::now();
    let mut started_when_idle = 0;
    // Set when the shutdown began: until then, a request that arrives is still served.
    let mut last_call: Option<Instant> = None;
    let mut told_to_close = false;
    // Cancelled when a new connection at the cap takes this one's place.
    let evicted = CancellationToken::new();
    let mut listed = IdleEntry { idle, key: None };
    loop {
        let in_flight = state.in_flight.load(Ordering::SeqCst);
        let started = state.started.load(Ordering::SeqCst);
        if in_flight > 0 {
            started_when_idle = usize::MAX;
            listed.set_busy();
        } else {
            if started_when_idle != started {
                idle_since = Instant::now();
                started_when_idle = started;
            }
            listed.set_idle(idle_since, &evicted);
        }
        // No request in flight: a fresh connection may wait `header_timeout` for its first
        // request; after one, `idle_timeout` for the next. (A head that arrives in part is
        // not seen here; the idle time bounds it, as does hyper's buffer limit.) During the
        // shutdown, the last call bounds both.
        let deadline = (in_flight == 0).then(|| {
            let timeout = if started == 0 {
                limits.header_timeout
            } else {
                limits.idle_timeout
            };
            let deadline = idle_since + timeout;
            match (last_call, told_to_close) {
                (None, _) => deadline,
                (Some(last), false) => deadline.min(last),
                // Told to close, and hyper has not (a head that arrived in part keeps it
                // reading): the header timeout after the last call ends it.
                (Some(last), true) => last + limits.header_timeout,
            }
        });
        let wait_for_deadline = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!("connection ended: {error}");
                }
                return;
            }
            () = state.changed.notified() => {}
            () = evicted.cancelled(), if !told_to_close => {
                if state.in_flight.load(Ordering::SeqCst) == 0 {
                    tracing::debug!("closing an idle connection for a new one (at the cap)");
                    return;
                }
                // A request arrived as it was chosen: it is finished, then the connection
                // closes.
                told_to_close = true;
                state.closing.store(true, Ordering::SeqCst);
                connection.as_mut().graceful_shutdown();
            }
            () = wait_for_deadline => {
                if last_call.is_none() || told_to_close {
                    tracing::debug!("closing a connection idle past its timeout");
                    return;
                }
                // Shutting down and no request came: close, once what was written is sent.
                tracing::debug!(started, "closing an idle connection at shutdown");
                told_to_close = true;
                connection.as_mut().graceful_shutdown();
            }
            () = shutdown.cancelled(), if last_call.is_none() => {
                // From now on every response closes its connection, and a kept-alive
                // connection with nothing arriving reads as closed: hyper sees that at its
                // next read, when the loop polls it again right below. A fresh connection
                // (its client connected to send a request) or one whose request's bytes are
                // arriving has the last call for it. A request under way is finished.
                state.closing.store(true, Ordering::SeqCst);
                last_call = Some(Instant::now() + SHUTDOWN_LAST_CALL);
                if in_flight > 0 {
                    told_to_close = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// How long a fresh connection may still bring its first request (or one whose request is
/// arriving, the rest of it) once the shutdown began.
const SHUTDOWN_LAST_CALL: Duration = Duration::from_secs(1);

/// Counts a request out when dropped.
pub(super) struct InFlight(Arc<ConnectionState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.0;
        // What was read so far belongs to the requests served (bytes read later are the
        // next request's) when the last one in flight ends.
        let read = state.bytes_read.load(Ordering::SeqCst);
        if state.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            state.bytes_read_when_idle.store(read, Ordering::SeqCst);
        }
        state.changed.notify_one();
    }
}
