//! The HTTP/1.1 server loop: accepts connections, serves each with hyper, and bounds what
//! a client can hold:
//!
//! - a new connection may wait for the head of its first request at most
//!   `header_timeout_s`: slow or silent headers are closed;
//! - between requests, an idle keep-alive connection is closed after `idle_timeout_s` (a
//!   later request's head that trickles in is bounded by that, as this loop does not see
//!   partial bytes); a request in flight, a job or telemetry stream included, is never cut
//!   by either;
//! - at most `max_connections` are open (never more than the file-descriptor limit allows,
//!   less a reserve for workers and files); beyond, a new connection gets a `503` and is
//!   closed at once.
//!
//! Shutdown hands over without losing a request: accepting stops (under socket activation
//! the socket itself stays with the service manager, and the next hive accepts from it);
//! a request in flight is finished and its connection closed; an idle or fresh connection
//! is given one second for a last request (a client may be sending it right now), which is
//! served with `connection: close`, and is then closed; once the drain time is over, every
//! connection still open is dropped.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// The bounds of the server loop.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// The longest wait for a request's head.
    pub header_timeout: Duration,
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
    /// Set when the shutdown began: every response closes its connection.
    closing: AtomicBool,
    /// Woken when a request starts or ends.
    changed: tokio::sync::Notify,
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
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
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
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let router = router.clone();
                let shutdown = shutdown.clone();
                let abort = abort.clone();
                connections.spawn(async move {
                    tokio::select! {
                        () = serve_connection(stream, router, limits, shutdown) => {}
                        () = abort.cancelled() => {}
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                connections.spawn(refuse(stream, limits.max_connections));
            }
        }
    }
    // Under socket activation the service manager keeps its copy: connections that arrive
    // from now on wait in the backlog for the next hive.
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Answers a connection over the cap with a 503 and closes it.
async fn refuse(mut stream: TcpStream, cap: usize) {
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

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let state = Arc::new(ConnectionState {
        in_flight: AtomicUsize::new(0),
        started: AtomicUsize::new(0),
        closing: AtomicBool::new(false),
        changed: tokio::sync::Notify::new(),
    });
    let service_state = state.clone();
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let router = router.clone();
        let state = service_state.clone();
        state.started.fetch_add(1, Ordering::SeqCst);
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        state.changed.notify_one();
        // Made here, not in the future: a future dropped unpolled still counts out.
        let guard = InFlight(state.clone());
        async move {
            let mut response = router
                .oneshot(request.map(Body::new))
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
            let body = Body::new(GuardedBody {
                inner: body,
                _guard: guard,
            });
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
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    // When the connection last became idle (no request in flight), and how many requests
    // had started then.
    let mut idle_since = Instant::now();
    let mut started_when_idle = 0;
    // Set when the shutdown began: until then, a request that arrives is still served.
    let mut last_call: Option<Instant> = None;
    let mut told_to_close = false;
    loop {
        let in_flight = state.in_flight.load(Ordering::SeqCst);
        let started = state.started.load(Ordering::SeqCst);
        if in_flight > 0 {
            started_when_idle = usize::MAX;
        } else if started_when_idle != started {
            idle_since = Instant::now();
            started_when_idle = started;
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
                state.closing.store(true, Ordering::SeqCst);
                // A client may be sending a request on this connection right now (a fresh
                // one, or a keep-alive one it reuses): it has a moment to arrive, and is
                // served with `connection: close`. A request under way is finished.
                last_call = Some(Instant::now() + SHUTDOWN_LAST_CALL);
                if in_flight > 0 {
                    told_to_close = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// How long an idle connection may still bring a request once the shutdown began.
const SHUTDOWN_LAST_CALL: Duration = Duration::from_secs(1);

/// Counts a request out when dropped.
struct InFlight(Arc<ConnectionState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_one();
    }
}

/// A response body that holds its request's [`InFlight`] until it is done.
struct GuardedBody {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
