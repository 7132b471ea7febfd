//! The listener: socket creation and cleanup, the connection cap, hyper's
//! per-connection limits, SIGHUP reloads and a graceful SIGTERM/SIGINT drain.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Instant;

mod flush_io;
mod head_deadline;
mod per_uid;
mod plain_get;
mod prefixed;
mod socket;
mod spin;
mod spread;
pub mod tls;
mod workers;

pub use socket::{SocketError, SocketGuard};
pub use workers::{WorkerPool, Workers, default_socket_count as default_socket_workers};

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, watch};

use crate::api::{self, ApiRequest, AppState, ConnInfo};
use crate::audit::{AuditPeer, AuditRecord, now_rfc3339};
use crate::authz::Transport;
use crate::config::{Limits, ListenConfig};
use crate::identity::PeerCred;
use flush_io::FlushingIo;
use head_deadline::HeadWatch;
use plain_get::Lane;
use prefixed::Prefixed;
use spin::Spinner;
use spread::Spread;

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The socket could not be created safely.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// Installing a signal handler failed.
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
}

/// Creates the listening socket (see [`socket::bind`]).
pub fn bind(cfg: &ListenConfig) -> Result<(UnixListener, SocketGuard), ServerError> {
    Ok(socket::bind(cfg)?)
}

/// The signals `run` acts on, installed before the broker says it is
/// ready: a `TERM` that arrives at once after "ready" is then a graceful
/// stop (drain, socket removed), never the default disposition's kill.
#[derive(Debug)]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers for `TERM`, `INT` and `HUP`; a signal that
    /// arrives from now on is kept until `run` reads it.
    pub fn install() -> Result<Self, ServerError> {
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(ServerError::Signals)?,
            int: signal(SignalKind::interrupt()).map_err(ServerError::Signals)?,
            hup: signal(SignalKind::hangup()).map_err(ServerError::Signals)?,
        })
    }
}

/// Serves until SIGTERM or SIGINT, then drains in-flight requests (up to
/// the drain timeout) and returns. With `workers` (`per_core`), each
/// accepted connection is served on the next worker's runtime; without,
/// on the runtime this runs on.
pub async fn run(
    listener: UnixListener,
    state: Arc<AppState>,
    workers: Option<&Workers>,
    signals: Signals,
) -> Result<(), ServerError> {
    let Signals {
        term: mut sigterm,
        int: mut sigint,
        hup: mut sighup,
    } = signals;
    let limits = state.limits;
    let conns = Arc::new(Semaphore::new(limits.max_connections));
    let per_uid = per_uid::UidConnections::new(limits.max_connections_per_uid);
    // Each connection holds a receiver; the drain sends `true` and waits
    // for every receiver to be gone.
    let (drain, _) = watch::channel(false);

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let peer = stream.peer_cred().ok().map(|c| PeerCred {
                    uid: c.uid(),
                    gid: c.gid(),
                    pid: c.pid(),
                });
                // SECURITY: one uid cannot hold every connection slot.
                let uid_slot = match peer {
                    Some(p) => match per_uid.try_enter(p.uid) {
                        Some(slot) => Some(slot),
                        None => {
                            tokio::spawn(refuse_overloaded(stream, Arc::clone(&state), peer, PER_UID_FULL));
                            continue;
                        }
                    },
                    None => None,
                };
                let Ok(permit) = Arc::clone(&conns).try_acquire_owned() else {
                    tokio::spawn(refuse_overloaded(stream, Arc::clone(&state), peer, ALL_FULL));
                    continue;
                };
                let permit = ConnPermit { _all: permit, _uid: uid_slot };
                let info = ConnInfo { peer, transport: Transport::Unix, tls: None };
                let mut ctx = Conn::new(Arc::clone(&state), info);
                match workers {
                    None => spawn_connection(drain.subscribe(), stream, ctx, permit, None),
                    Some(workers) => {
                        // Move the socket to the worker's own reactor; the
                        // connection's tasks then spawn onto that runtime.
                        let worker = workers.next_for_socket();
                        match worker.adopt(stream) {
                            Ok(stream) => {
                                ctx.spinner = worker.watch(&stream);
                                ctx.spread = worker.spread();
                                let pool = ctx.spread.is_some().then(|| workers.pool());
                                let _entered = worker.handle().enter();
                                spawn_connection(drain.subscribe(), stream, ctx, permit, pool);
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot hand a connection to a worker"),
                        }
                    }
                }
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => reload(&state),
        }
    }
    drop(listener);
    tracing::info!(
        connections = drain.receiver_count(),
        "shutting down; draining"
    );
    // No receiver (no connection) is no error: nothing to drain.
    let _ = drain.send(true);
    tokio::select! {
        () = drain.closed() => tracing::info!("drained"),
        () = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!(timeout = ?limits.drain_timeout, "drain timed out; closing remaining connections");
        }
    }
    Ok(())
}

/// A connection's places under the connection caps, given back when it ends.
#[derive(Debug)]
struct ConnPermit {
    _all: tokio::sync::OwnedSemaphorePermit,
    _uid: Option<per_uid::UidSlot>,
}

/// The 429's message at `[limits] max_connections`.
const ALL_FULL: &str = "too many connections; retry shortly";
/// The 429's message at `[limits] max_connections_per_uid`.
const PER_UID_FULL: &str = "too many connections from this uid ([limits] max_connections_per_uid); close some or retry shortly";

/// Serves `stream` on a task of its own, with a watchdog task that closes
/// it once it has waited `header_timeout` for a request head.
/// `pool`: where the connection may move if its worker spreads
/// ([`spread`]).
fn spawn_connection(
    shutdown: watch::Receiver<bool>,
    stream: UnixStream,
    ctx: Conn,
    permit: ConnPermit,
    pool: Option<WorkerPool>,
) {
    let ctx = Arc::new(ctx);
    let peer = ctx.info.peer;
    let started = Instant::now();
    let task_ctx = Arc::clone(&ctx);
    let task = tokio::spawn(async move {
        let drain = shutdown.clone();
        let moved = match serve_stream(stream, Arc::clone(&task_ctx), shutdown).await {
            Ok(moved) => moved,
            Err(e) => {
                audit_connection_error(&task_ctx.state, peer.map(Into::into), &e, started);
                None
            }
        };
        task_ctx.watch.close();
        if let (Some(stream), Some(pool)) = (moved, pool) {
            move_connection(stream, &task_ctx, permit, drain, &pool);
        }
    });
    let watchdog_ctx = Arc::clone(&ctx);
    let conn_task = task.abort_handle();
    let watchdog = tokio::spawn(async move {
        let state = &watchdog_ctx.state;
        head_deadline::watchdog(
            &watchdog_ctx.watch,
            conn_task,
            state.limits.header_timeout,
            || audit_head_timeout(state, peer.map(Into::into), started),
        )
        .await;
    });
    ctx.watch.set_watchdog(watchdog.abort_handle());
}

/// Serves `stream`, between two of its requests, on a worker that does not
/// serve the socket, as a connection of its own there (a new context and
/// head deadline; the same connection slot, drain and caller). If it
/// cannot be moved it is closed, as a drain would close it between two
/// requests: the client opens another.
fn move_connection(
    stream: UnixStream,
    ctx: &Conn,
    permit: ConnPermit,
    drain: watch::Receiver<bool>,
    pool: &WorkerPool,
) {
    let target = ctx.spread.as_ref().and_then(|s| s.least_loaded_spare());
    let Some(worker) = target.and_then(|i| pool.worker(i)) else {
        return;
    };
    match worker.adopt(stream) {
        Ok(stream) => {
            let mut moved = Conn::new(Arc::clone(&ctx.state), ctx.info.clone());
            moved.spinner = worker.watch(&stream);
            moved.spread = worker.spread();
            let _entered = worker.handle().enter();
            spawn_connection(drain, stream, moved, permit, None);
        }
        Err(e) => tracing::warn!(error = %e, "cannot move a connection to another worker"),
    }
}

/// The HTTP/1.1 settings every connection gets: the head size limit
/// enforced by hyper while it reads. The head deadline is kept by
/// [`head_deadline`] (hyper's own would arm a timer per request).
fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    builder
}

/// What every request on one connection shares. Each request holds a
/// reference to it (not to the shared state directly), so the per-request
/// reference count lives on the connection's own cache line instead of one
/// that every worker thread contends for.
#[derive(Debug)]
struct Conn {
    state: Arc<AppState>,
    info: ConnInfo,
    watch: HeadWatch,
    /// The worker's spinner, told of each request (`per_core` with
    /// `idle_spin`) and, when the connection is over, of that.
    spinner: Option<Arc<Spinner>>,
    /// A socket worker's spreading state, told of each request and of the
    /// connection's end; it says when the connection should move.
    spread: Option<Arc<Spread>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The last holder of the context is gone: so is the connection.
        if let Some(spinner) = &self.spinner {
            spinner.closed();
        }
        if let Some(spread) = &self.spread {
            spread.closed();
        }
    }
}

impl Conn {
    fn new(state: Arc<AppState>, info: ConnInfo) -> Self {
        Self {
            state,
            info,
            watch: HeadWatch::new(),
            spinner: None,
            spread: None,
        }
    }
}

/// What the API answers `req` with, on `ctx`'s connection, the moment its
/// head is in: hyper's service and the plain-GET lane both ask here.
fn answer(ctx: Arc<Conn>, req: ApiRequest) -> impl Future<Output = api::Answer> + Send + 'static {
    let serve = ctx.watch.begin_request();
    if let Some(spinner) = &ctx.spinner {
        spinner.request_arrived();
    }
    if let Some(spread) = &ctx.spread {
        spread.request_arrived();
    }
    async move {
        if !serve {
            // The head deadline passed as this head arrived: the
            // watchdog audited the 408 and is closing the connection.
            return api::error_response(
                &api::ApiError::RequestTimeout(ctx.state.limits.header_timeout),
                "",
            );
        }
        let response = api::handle(&ctx.state, &ctx.info, req).await;
        ctx.watch.end_request();
        response
    }
}

/// One connection served by hyper, over any byte stream.
fn connection<I>(
    builder: &http1::Builder,
    io: I,
    ctx: Arc<Conn>,
) -> http1::Connection<
    TokioIo<I>,
    impl hyper::service::HttpService<hyper::body::Incoming, ResBody = api::Body, Future: Send>
    + Send
    + use<I>,
>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        // Copy out what the API uses and drop hyper's request now, before
        // hyper reads on (see `api::request`).
        let answer = answer(Arc::clone(&ctx), ApiRequest::from(req));
        async move { Ok::<_, Infallible>(answer.await.into_response()) }
    });
    builder.serve_connection(TokioIo::new(io), service)
}

/// Serves one socket connection until the peer leaves or `shutdown` turns
/// true (answering the request in progress first): its plain GETs by the
/// lane of [`plain_get`], then, from the first request the lane does not
/// take, every request by hyper. Returns the stream, between two requests,
/// when its worker spread it elsewhere ([`spread`]).
async fn serve_stream<I>(
    io: I,
    ctx: Arc<Conn>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Option<I>, hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = FlushingIo::new(io, Arc::clone(&ctx.state.audit));
    let (io, read) = match plain_get::serve(io, &ctx, &shutdown).await {
        Lane::Closed => return Ok(None),
        Lane::Move(io) => return Ok(Some(io.into_inner())),
        Lane::Handoff(io, read) => (io, read),
    };
    let builder = http1_builder(&ctx.state.limits);
    let conn = connection(&builder, Prefixed::new(read, io), ctx);
    tokio::pin!(conn);
    // One wait for the whole connection, as hyper-util's graceful watch
    // keeps. Only `true` is ever sent, and a sender gone counts as a drain.
    let drained = shutdown.changed();
    tokio::pin!(drained);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => return r.map(|()| None),
            _ = &mut drained, if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Serves one connection over any byte stream (an in-memory duplex in the
/// fuzz target and benches) as the listener would, audit included, but
/// with no head deadline (the caller owns the stream's lifetime).
pub async fn serve_io<I>(io: I, state: Arc<AppState>, info: ConnInfo)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let started = Instant::now();
    let peer = info.peer;
    let ctx = Arc::new(Conn::new(Arc::clone(&state), info));
    // Never drained: the sender lives as long as the connection.
    let (_never, shutdown) = watch::channel(false);
    // No worker, so never spread: the stream never comes back.
    if let Err(e) = serve_stream(io, ctx, shutdown).await {
        audit_connection_error(&state, peer.map(Into::into), &e, started);
    }
}

/// Reloads policies; a bad set is refused and the last good one stays.
fn reload(state: &AppState) {
    let started = Instant::now();
    let request_id = state.next_request_id();
    let (status, decision) = match state.broker.authorizer().reload() {
        Ok(()) => {
            tracing::info!("policies reloaded");
            state.metrics.reload(true);
            (200, Some("allow"))
        }
        Err(e) => {
            tracing::error!(error = %e, "policy reload refused; the previous policy set stays in force");
            state.metrics.reload(false);
            (500, Some("deny"))
        }
    };
    // A failure is logged and counted by the sink; a reload has no answer
    // to withhold.
    let audited = state.audit.record(&AuditRecord {
        ts: now_rfc3339(),
        request_id: &request_id,
        principal: None,
        peer: None,
        action: Some("reload"),
        path: None,
        upload: None,
        decision,
        policies: &[],
        status,
        latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
    });
    if audited.is_err() {
        state.metrics.audit_failure();
    }
}

/// Audits a request that never reached the API because hyper could not
/// parse it (too large or malformed).
fn audit_connection_error(
    state: &AppState,
    peer: Option<AuditPeer<'_>>,
    e: &hyper::Error,
    started: Instant,
) {
    let status = if e.is_parse_too_large() {
        431
    } else if e.is_parse() || e.is_parse_status() {
        400
    } else {
        tracing::debug!(error = %e, "connection ended");
        return;
    };
    let request_id = state.next_request_id();
    audit_unparsed(state, &request_id, peer, status, started.elapsed());
}

/// Audits a connection closed for waiting longer than `header_timeout` for
/// a complete request head.
fn audit_head_timeout(state: &AppState, peer: Option<AuditPeer<'_>>, started: Instant) {
    let request_id = state.next_request_id();
    audit_unparsed(state, &request_id, peer, 408, started.elapsed());
}

/// Audits and counts a request that never reached the API (malformed, too
/// slow, or refused at the connection cap): no principal, action or path.
fn audit_unparsed(
    state: &AppState,
    request_id: &str,
    peer: Option<AuditPeer<'_>>,
    status: u16,
    latency: std::time::Duration,
) {
    let audited = state.audit.record(&AuditRecord {
        ts: now_rfc3339(),
        request_id,
        principal: None,
        peer,
        action: None,
        path: None,
        upload: None,
        decision: None,
        policies: &[],
        status,
        latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
    });
    // Nothing is served on these paths (the connection is refused or
    // closed), so there is nothing to withhold.
    if audited.is_err() {
        state.metrics.audit_failure();
    }
    state.metrics.request(None, None, status, latency);
}

/// Answers a connection over the cap with `429 overloaded` and closes it.
async fn refuse_overloaded(
    mut stream: UnixStream,
    state: Arc<AppState>,
    peer: Option<PeerCred>,
    message: &'static str,
) {
    let started = Instant::now();
    let request_id = state.next_request_id();
    let body = serde_json::json!({"error": {
        "code": "overloaded",
        "message": message,
        "request_id": request_id.as_str(),
    }})
    .to_string();
    let head = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {request_id}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    // Half-close after the answer, then drain what the client sent: closing
    // a Unix socket with unread input resets it, and the client would lose
    // the 429 it was about to read. Bounded in time and bytes.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        use tokio::io::AsyncReadExt;
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < 64 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    audit_unparsed(
        &state,
        &request_id,
        peer.map(Into::into),
        429,
        started.elapsed(),
    );
}
