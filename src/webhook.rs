//! The Kubernetes mutating admission webhook: HTTPS (rustls), `POST /mutate`
//! for AdmissionReviews, `GET /healthz`; the certificate is reloaded when
//! its files change.

mod conns;
pub mod review;
pub(crate) mod tls;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use conns::{Admission, ConnState, Conns};
pub use review::{refuse, respond, respond_with};

/// Largest AdmissionReview body accepted.
///
/// The API server refuses a client's request body over 3 MiB
/// (`MaxRequestBodyBytes`) and etcd stores no object over 1.5 MiB (its
/// default `--max-request-bytes`), so no pod or workload the webhook is
/// asked about is larger than 3 MiB of JSON; a review wraps one (`CREATE`)
/// or two stored ones (`UPDATE`: `object` and `oldObject`) in an envelope
/// of a few KiB. Real ones are a few KiB to a few tens of KiB.
const MAX_BODY: usize = 3 * 1024 * 1024;
/// Body bytes every connection may hold without asking: real reviews are
/// smaller, so they never wait on [`BODY_BUDGET`].
const FREE_BODY: usize = 64 * 1024;
/// Body bytes beyond [`FREE_BODY`] held by all connections at once. A body
/// with a declared length takes its share whole before it is read (so
/// large bodies never each hold a part and wait for the rest); one without
/// takes it as it arrives.
const BODY_BUDGET: usize = 4 * MAX_BODY;
/// Connections served at once. More are not queued: the one that has
/// waited longest on its client is closed for the new one, or, when every
/// connection is busy with a review, the new one is closed at once (see
/// `conns`).
const MAX_CONNECTIONS: usize = 128;
/// Reviews whose object is built and injected at once: the CPU-bound part,
/// and the one whose memory grows with the object, so it is kept to one.
const TREE_WORKERS: usize = 1;
/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a request head, and for an idle connection to send its
/// next one. The API server gives a call `timeoutSeconds` (5 s as shipped,
/// 30 s at most) and writes the request at once.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a request body, from its head.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection's read buffer: the request head must fit (the API server's
/// is well under 1 KiB); the body streams through it.
const READ_BUFFER: usize = 32 * 1024;

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A certificate or key file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A certificate or key is unusable.
    #[error("tls: `{path}` {message}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The address could not be bound.
    #[error("cannot listen on `{addr}`: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// What the webhook serves with.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// How often to look for a rotated certificate.
    pub reload_every: Duration,
    /// What every injection uses (the default image).
    pub inject: crate::inject::InjectOptions,
}

/// Binds `addr` and serves until SIGTERM or SIGINT.
pub async fn run(addr: &str, opts: &WebhookOptions) -> Result<(), WebhookError> {
    let certs = tls::CertReloader::new(&opts.cert, &opts.key)?;
    let config = Arc::new(tls::server_config(Arc::clone(&certs))?);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| WebhookError::Bind {
            addr: addr.to_owned(),
            source,
        })?;
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(addr = %local, "secret-broker webhook listening (https)");
    let watcher = tokio::spawn(Arc::clone(&certs).watch(opts.reload_every));
    let result = serve(listener, config, opts.inject.clone()).await;
    watcher.abort();
    result
}

/// What every connection shares.
#[derive(Debug)]
struct Shared {
    conns: Arc<Conns>,
    body_budget: Arc<Semaphore>,
    tree_workers: Arc<Semaphore>,
    /// Refused and evicted connections since the last warning, and when
    /// that was (ms since `started`): one warning per 10 s at most.
    shed: AtomicU64,
    last_warning: AtomicU64,
    started: Instant,
    /// What every injection uses.
    inject: Arc<crate::inject::InjectOptions>,
}

impl Shared {
    fn new(inject: crate::inject::InjectOptions) -> Arc<Self> {
        Arc::new(Self {
            inject: Arc::new(inject),
            conns: Conns::new(MAX_CONNECTIONS),
            body_budget: Arc::new(Semaphore::new(BODY_BUDGET)),
            tree_workers: Arc::new(Semaphore::new(TREE_WORKERS)),
            shed: AtomicU64::new(0),
            last_warning: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    fn shed(&self, what: &'static str) {
        let n = self.shed.fetch_add(1, Ordering::Relaxed) + 1;
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_warning.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 10_000)
            && self
                .last_warning
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.shed.store(0, Ordering::Relaxed);
            tracing::warn!(
                connections = n,
                last = what,
                max = MAX_CONNECTIONS,
                "connection limit reached: connections were closed to make room or refused"
            );
        }
    }
}

async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    inject: crate::inject::InjectOptions,
) -> Result<(), WebhookError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).map_err(WebhookError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(WebhookError::Signals)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let shared = Shared::new(inject);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        };
        // SECURITY: never wait for a slot (a queue that slow clients keep
        // full starves the API server's calls): take a free one, or the
        // one of the connection that has waited longest on its client, or
        // refuse.
        let slot = match shared.conns.admit().await {
            Admission::Admitted(slot) => slot,
            Admission::Evicted(slot) => {
                shared.shed("evicted");
                slot
            }
            Admission::Full => {
                shared.shed("refused");
                drop(tcp);
                continue;
            }
        };
        let slot_id = slot.id();
        let acceptor = acceptor.clone();
        let conn_shared = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            let state = Arc::clone(&slot.state);
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "tls handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "tls handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                handle(req, Arc::clone(&conn_shared), Arc::clone(&state))
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(READ_BUFFER)
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
        shared.conns.serving(slot_id, task.abort_handle());
    }
    tracing::info!("secret-broker webhook stopping");
    // Let in-flight reviews finish (the API server times out at 10-30 s).
    shared.conns.drain(Duration::from_secs(10)).await;
    Ok(())
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn review_reply(status: StatusCode, review: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(review).unwrap_or_default();
    reply(status, "application/json", body)
}

/// A refusal before the review was read; the rest of the body is not read,
/// so the connection is closed after it.
fn refusal(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    let mut r = review_reply(status, &refuse(reason));
    r.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    r
}

/// Why a body was not read whole.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the review is larger than {} MiB", MAX_BODY / (1024 * 1024))]
    TooLarge,
    #[error("the review did not arrive within {}s", BODY_TIMEOUT.as_secs())]
    Timeout,
    #[error("cannot read the review: {0}")]
    Read(hyper::Error),
    #[error("the webhook is stopping")]
    Closed,
}

impl BodyError {
    fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::Read(_) => StatusCode::BAD_REQUEST,
            Self::Closed => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Reads a body of at most [`MAX_BODY`] bytes; what it holds beyond
/// [`FREE_BODY`] comes out of the shared budget (released with the bytes).
async fn read_body(
    req: Request<Incoming>,
    budget: &Arc<Semaphore>,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), BodyError> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(BodyError::TooLarge);
    }
    let take = |n: usize| async move {
        let n = u32::try_from(n).map_err(|_| BodyError::TooLarge)?;
        Arc::clone(budget)
            .acquire_many_owned(n)
            .await
            .map_err(|_| BodyError::Closed)
    };
    let mut allowed = FREE_BODY;
    let mut held: Option<OwnedSemaphorePermit> = None;
    if let Some(n) = declared.filter(|n| *n > FREE_BODY) {
        held = Some(take(n - FREE_BODY).await?);
        allowed = n;
    }
    let mut body = req.into_body();
    let mut buf = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
            continue;
        };
        let len = buf.len() + data.len();
        if len > MAX_BODY {
            return Err(BodyError::TooLarge);
        }
        if len > allowed {
            // No declared length (or more than declared, which hyper
            // refuses anyway): take the rest as it comes.
            let more = take(len - allowed).await?;
            match &mut held {
                Some(h) => h.merge(more),
                None => held = Some(more),
            }
            allowed = len;
        }
        buf.extend_from_slice(&data);
    }
    Ok((buf, held))
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    conn: Arc<ConnState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // A new request head arrived: the client is making progress.
    conn.progressed();
    let path = req.uri().path().to_owned();
    Ok(match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        (&Method::POST, "/mutate") => {
            // SECURITY: a body that trickles in holds its connection and
            // its bytes of the budget for BODY_TIMEOUT at most.
            let read = tokio::time::timeout(BODY_TIMEOUT, read_body(req, &shared.body_budget));
            let (body, _bytes) = match read.await.unwrap_or(Err(BodyError::Timeout)) {
                Ok(b) => b,
                Err(e) => return Ok(refusal(e.status(), &e.to_string())),
            };
            let _busy = conn.busy();
            let Ok(_worker) = Arc::clone(&shared.tree_workers).acquire_owned().await else {
                return Ok(refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the webhook is stopping",
                ));
            };
            // Parsing and injecting a large object is CPU work: off the
            // threads that serve connections.
            let opts = Arc::clone(&shared.inject);
            let answer = tokio::task::spawn_blocking(move || respond_with(&body, &opts)).await;
            let Ok((review, well_formed)) = answer else {
                return Ok(refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the review could not be answered",
                ));
            };
            let status = if well_formed {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            };
            let allowed = review["response"]["allowed"].as_bool().unwrap_or(false);
            tracing::info!(
                uid = review["response"]["uid"].as_str().unwrap_or(""),
                allowed,
                patched = review["response"].get("patch").is_some(),
                reason = review["response"]["status"]["message"]
                    .as_str()
                    .unwrap_or(""),
                "admission review"
            );
            review_reply(status, &review)
        }
        (_, "/healthz" | "/mutate") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"method not allowed\n".to_vec(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    })
}
