//! The plain-GET lane: a socket connection's requests are read here, not
//! by hyper, for as long as each is a `GET` that leaves nothing to judge
//! about framing: HTTP/1.1, an origin-form path of plain URI characters,
//! no query, and none of the headers that frame a body or change the
//! connection (`Content-Length`, `Transfer-Encoding`, `Connection`,
//! `Expect`, `Upgrade`). That is every read, list and health check a task
//! makes. The head is parsed with `httparse`, as hyper parses it, handed to
//! the same [`answer`](super::answer) as hyper's requests, and the answer
//! written with one `writev`, as hyper writes it.
//!
//! Why: hyper's HTTP/1 machinery (its dispatcher, header maps, request and
//! response types, encoder) costs about 0.9 µs of CPU per request at 16
//! connections, a sixth of a bare hyper server's whole cost
//! (docs/performance.md, session 13), and the broker's answer is the same
//! without it.
//!
//! SECURITY: the lane never decides how a message is framed. The first
//! request it does not take (any other method, a body, a query, an
//! absolute or odd target, a head too large or malformed, HTTP/1.0, a
//! `Connection` header) goes to hyper with every byte the lane has read and
//! not served ([`Lane::Handoff`]), and hyper serves the connection from
//! there on, its limits, errors and audit lines included. So a request
//! the lane serves is one that hyper would have read as the same bodiless
//! request with the same fields (a property test holds the two parsers to
//! that), and anything else gets hyper's answer.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::Conn;
use crate::api::{Answer, ApiRequest};

/// How many headers a head may have (hyper's default limit; a head with
/// more goes to hyper, which refuses it).
const MAX_HEADERS: usize = 100;
/// How much is read at a time (hyper's first read buffer).
const READ_CHUNK: usize = 8 * 1024;
/// Headers that frame a body or change the connection: a head with any of
/// them is hyper's to read.
const HYPER_HEADERS: [&[u8]; 5] = [
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"expect",
    b"upgrade",
];

/// How the lane left a connection.
pub(super) enum Lane<I> {
    /// It is over: the peer left, an I/O error, or the broker is draining.
    Closed,
    /// A request the lane does not take: hyper serves the connection from
    /// here, starting with the bytes read and not served.
    Handoff(I, Vec<u8>),
    /// Between two requests, with nothing read: the connection's worker
    /// spread it to another worker ([`super::spread`]).
    Move(I),
}

/// What the start of a read buffer holds.
#[derive(Debug)]
pub(super) enum Head {
    /// A plain GET, `len` bytes long.
    Plain { req: ApiRequest, len: usize },
    /// Not a whole head yet.
    Partial,
    /// Anything else: hyper's.
    Other,
}

/// Reads the head at the start of `buf`, at most `max_head` bytes long.
pub(super) fn parse(buf: &[u8], max_head: usize) -> Head {
    // Uninitialised slots, as hyper parses: filling 100 empty headers
    // first would cost more than the parse.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut []);
    let len = match head.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) if len < max_head => len,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Head::Partial,
        _ => return Head::Other,
    };
    let (Some("GET"), Some(1), Some(path)) = (head.method, head.version, head.path) else {
        return Head::Other;
    };
    if !plain_path(path)
        || head.headers.iter().any(|h| {
            HYPER_HEADERS
                .iter()
                .any(|name| h.name.as_bytes().eq_ignore_ascii_case(name))
        })
    {
        return Head::Other;
    }
    let req = ApiRequest::plain_get(
        path,
        head.headers.iter().map(|h| (h.name.as_bytes(), h.value)),
    );
    Head::Plain { req, len }
}

/// An origin-form path of unreserved, sub-delimiter, `:`, `@`, `/` and `%`
/// characters only: read the same by every parser (no query, fragment,
/// space, quote, backslash or byte outside ASCII).
fn plain_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b))
}

/// Serves `io`'s plain GETs until the peer leaves, `shutdown` turns true
/// (checked between requests: one in progress is answered first), or a
/// request the lane does not take arrives.
pub(super) async fn serve<I>(
    mut io: I,
    ctx: &Arc<Conn>,
    shutdown: &watch::Receiver<bool>,
) -> Lane<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let max_head = ctx.state.limits.max_header_bytes;
    // One wait for the drain for the whole connection, polled only while
    // the lane waits for a new request: a wait made and dropped per
    // request would lock the channel's waiter list, shared by every
    // connection, twice per request.
    let mut watch = shutdown.clone();
    let drained = watch.changed();
    tokio::pin!(drained);
    let mut buf: Vec<u8> = Vec::new();
    let mut head_out: Vec<u8> = Vec::with_capacity(256);
    loop {
        match parse(&buf, max_head) {
            Head::Plain { req, len } => {
                buf.drain(..len);
                let answer = super::answer(Arc::clone(ctx), req).await;
                match write_answer(&mut io, &mut head_out, answer).await {
                    Ok(true) if !draining(shutdown) => {}
                    _ => return close(io).await,
                }
            }
            Head::Partial => {
                buf.reserve(READ_CHUNK);
                let read = if buf.is_empty() {
                    // Between requests, nothing read: where a connection
                    // moves to another worker, if its worker spreads.
                    if ctx.spread.as_ref().is_some_and(|s| s.take_move()) {
                        return Lane::Move(io);
                    }
                    // Between requests: the only place a drain closes.
                    tokio::select! {
                        // The read first: a request that is in never
                        // polls the drain's wait.
                        biased;
                        read = io.read_buf(&mut buf) => read,
                        // Only `true` is ever sent, or the sender is gone.
                        _ = &mut drained => return close(io).await,
                    }
                } else {
                    io.read_buf(&mut buf).await
                };
                match read {
                    Ok(0) if buf.is_empty() => return Lane::Closed,
                    // A head cut short: hyper says so, as it would have.
                    Ok(0) => return Lane::Handoff(io, buf),
                    Ok(_) => {}
                    Err(_) => return Lane::Closed,
                }
            }
            Head::Other => return Lane::Handoff(io, buf),
        }
    }
}

/// Whether the broker is draining: only `true` is ever sent, and a closed
/// channel counts (its owner is gone). One atomic load: no lock.
fn draining(shutdown: &watch::Receiver<bool>) -> bool {
    shutdown.has_changed().unwrap_or(true)
}

async fn close<I: AsyncWrite + Unpin>(mut io: I) -> Lane<I> {
    let _ = io.shutdown().await;
    Lane::Closed
}

/// Writes `answer` as hyper would (status line, its headers, then
/// `content-length` and `date`, then the body), head and body in one
/// `writev`. Returns whether the connection stays open. The answer (and
/// its body, zeroized) is dropped once written.
async fn write_answer<I>(io: &mut I, head: &mut Vec<u8>, answer: Answer) -> io::Result<bool>
where
    I: AsyncWrite + Unpin,
{
    let status = answer.status();
    head.clear();
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    head.extend_from_slice(b"\r\n");
    answer.headers(|name, value| {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    });
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let body: &[u8] = if bodiless { &[] } else { answer.body() };
    if !bodiless {
        head.extend_from_slice(b"content-length: ");
        head.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"date: ");
    http_date(head);
    head.extend_from_slice(b"\r\n\r\n");
    write_all_vectored(io, head, body).await?;
    Ok(!answer.closes())
}

thread_local! {
    /// The `date` header of the current second (hyper keeps one too).
    static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// Appends the current time as an HTTP date (whole seconds), read from the
/// coarse real-time clock: a few milliseconds of resolution, and cheaper
/// to read than the precise one.
fn http_date(out: &mut Vec<u8>) {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            *text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// Writes `head` then `body`, vectored, however the writes split them.
async fn write_all_vectored<I: AsyncWrite + Unpin>(
    io: &mut I,
    mut head: &[u8],
    mut body: &[u8],
) -> io::Result<()> {
    while !head.is_empty() {
        let n = io
            .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n < head.len() {
            head = &head[n..];
        } else {
            body = &body[n - head.len()..];
            head = &[];
        }
    }
    io.write_all(body).await
}

#[cfg(test)]
mod tests;
