//! The connection's byte stream, which appends the audit lines its requests
//! left in the spool (`AuditLog::flush_local`) right after each answer is
//! written: the client is already reading its answer while the line's
//! `write(2)` runs, and the line is in the audit file before the connection
//! reads its next request.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::audit::AuditLog;

/// A byte stream that flushes this thread's audit spool after every write
/// it completes and when it is dropped.
#[derive(Debug)]
pub(super) struct FlushingIo<I> {
    /// `None` only once [`FlushingIo::into_inner`] took it.
    io: Option<I>,
    audit: Arc<AuditLog>,
}

impl<I> FlushingIo<I> {
    pub(super) fn new(io: I, audit: Arc<AuditLog>) -> Self {
        Self {
            io: Some(io),
            audit,
        }
    }

    /// The stream, this thread's audit spool flushed first.
    pub(super) fn into_inner(mut self) -> I {
        self.audit.flush_local();
        // INVARIANT: `io` is `Some` until this, which consumes `self`.
        self.io
            .take()
            .unwrap_or_else(|| unreachable!("taken only here"))
    }

    fn io(&mut self) -> Pin<&mut I>
    where
        I: Unpin,
    {
        // INVARIANT: `io` is `Some` until `into_inner`, which consumes `self`.
        Pin::new(
            self.io
                .as_mut()
                .unwrap_or_else(|| unreachable!("taken only by into_inner")),
        )
    }

    /// Flushes once the inner call completed (written or failed): the
    /// answer has left, or never will.
    fn after<T>(&self, polled: Poll<T>) -> Poll<T> {
        if polled.is_ready() {
            self.audit.flush_local();
        }
        polled
    }
}

impl<I> Drop for FlushingIo<I> {
    fn drop(&mut self) {
        // A connection cut before its answer was written.
        self.audit.flush_local();
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FlushingIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FlushingIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = self.io().poll_write(cx, buf);
        self.after(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = self.io().poll_write_vectored(cx, bufs);
        self.after(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = self.io().poll_shutdown(cx);
        self.after(polled)
    }
}
