//! The Kubernetes mutating admission webhook: HTTPS (rustls), `POST /mutate`
//! for AdmissionReviews, `GET /healthz`; the certificate is reloaded when
//! its files change.

pub mod review;
mod tls;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use review::{refuse, respond};

/// Largest AdmissionReview accepted: objects are at most ~1.5 MiB in etcd,
/// and a review of an update carries two of them.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 256;
/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    let result = serve(listener, config).await;
    watcher.abort();
    result
}

async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> Result<(), WebhookError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).map_err(WebhookError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(WebhookError::Signals)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return Ok(());
        };
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
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "tls handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(handle);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("secret-broker webhook stopping");
    // Let in-flight reviews finish (the API server times out at 10-30 s).
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        slots.acquire_many(MAX_CONNECTIONS as u32),
    )
    .await;
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

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    Ok(match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        (&Method::POST, "/mutate") => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    let review = refuse(&format!("cannot read the review: {e}"));
                    return Ok(review_reply(StatusCode::PAYLOAD_TOO_LARGE, &review));
                }
            };
            let (review, well_formed) = respond(&body);
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
