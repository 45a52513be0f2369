//! The connection's socket as hyper reads it, with one rule added for the shutdown: once the
//! connection is closing, a read that would wait *between requests* ends the connection, as
//! if the client had closed it. So an idle keep-alive connection (a worker's heartbeat
//! connection, a client's pooled one) is closed at once when the shutdown begins, while
//! a request whose bytes have arrived, whole or in part, is still read and served (with
//! `connection: close`).
//!
//! "Between requests" means: a request was served on it before and its answer was flushed
//! out of hyper's buffer, none is in flight, and no byte has been read since the last one
//! ended. (A pipelined request whose first part hyper had already read with the previous
//! one, and whose rest arrives just as the shutdown begins, is closed unanswered; clients
//! retry on a new connection, and pipelining is rare.) A fresh connection that has not sent its
//! first byte is left to the connection loop's last call (its client connected to send a
//! request, which may be on its way). A client that sends a request on a kept-alive
//! connection at the very instant it is closed sees the close, as with any HTTP/1.1 server
//! that closes idle connections (RFC 9112 §9.3.1: such a client retries on a new one).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::ConnectionState;

/// A [`TcpStream`] that counts what hyper reads and ends idle reads once closing.
pub(super) struct DrainingIo {
    stream: TcpStream,
    state: Arc<ConnectionState>,
}

impl DrainingIo {
    pub(super) fn new(stream: TcpStream, state: Arc<ConnectionState>) -> Self {
        Self { stream, state }
    }
}

impl AsyncRead for DrainingIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = (buf.filled().len() - before) as u64;
                self.state.bytes_read.fetch_add(read, Ordering::SeqCst);
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.state.is_between_requests_while_closing() => {
                // Nothing is arriving: read as the end of the connection (hyper closes it
                // cleanly, as when a client closes a kept-alive connection).
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for DrainingIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.state.unflushed.store(true, Ordering::SeqCst);
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.state.unflushed.store(true, Ordering::SeqCst);
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    /// hyper flushes its IO only once its own buffer is written out: from here on, what
    /// it wrote is the kernel's to send, and a close no longer cuts an answer short.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.stream).poll_flush(cx);
        if matches!(flushed, Poll::Ready(Ok(()))) {
            self.state.unflushed.store(false, Ordering::SeqCst);
            if self.state.is_between_requests_while_closing() {
                // A read that waited for this flush is looked at again (the same task).
                cx.waker().wake_by_ref();
            }
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
