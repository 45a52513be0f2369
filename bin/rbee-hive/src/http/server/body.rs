//! The bodies the connection loop wraps around hyper's: a response body that counts its
//! request as in flight until it is done, and a request body with a total deadline.

use std::time::Duration;

use axum::body::Body;
use tokio::time::Instant;

use super::InFlight;

/// A response body that holds its request's [`InFlight`] until it is done.
pub(super) struct GuardedBody {
    inner: Body,
    _guard: InFlight,
}

impl GuardedBody {
    pub(super) fn new(inner: Body, guard: InFlight) -> Self {
        Self {
            inner,
            _guard: guard,
        }
    }
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

/// The request body arrived too slowly: not whole within the body timeout of its head.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?} (body_timeout_s)")]
pub struct BodyTimedOut(pub(super) Duration);

/// A request body that must end by a deadline; past it, it yields [`BodyTimedOut`].
pub(super) struct DeadlineBody {
    inner: hyper::body::Incoming,
    deadline: Instant,
    timeout: Duration,
    /// Made at the first read that has to wait (most bodies are read at once, or empty).
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl DeadlineBody {
    /// `inner`, which must end within `timeout` from now (its head just arrived).
    pub(super) fn new(inner: hyper::body::Incoming, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: Instant::now() + timeout,
            timeout,
            timer: None,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimedOut(self.timeout).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
