//! The metrics listener: `GET /metrics` on a TCP address, nothing else.
//!
//! SECURITY: whoever reaches the port must never be able to starve the API
//! on the Unix socket (the two share the process's file descriptors). The
//! listener serves a few connections at once and closes the rest at once,
//! gives each a deadline for its request head (and for the next one when
//! idle) and a maximum age, and accepts nothing while fewer than
//! [`FD_RESERVE`] descriptors are left under the process's limit.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use super::Metrics;

/// Connections served at once; more are closed as soon as they are
/// accepted. A scraper needs one (two during a rolling restart).
const MAX_CONNECTIONS: usize = 8;
/// Time allowed for a request head, and for an idle connection to send the
/// next one (Prometheus scrapes every 15 s or more, and reconnects).
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection is kept, however busy.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(30);
/// File descriptors left for the API: the metrics listener accepts nothing
/// while fewer than this many are free under `RLIMIT_NOFILE`.
pub const FD_RESERVE: u64 = 64;

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on `{addr}`: {source}")]
pub struct MetricsError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Whether a metrics connection may be served: at least [`FD_RESERVE`]
/// descriptors stay free for the API. Unknown (no `/proc`, no limit) is yes:
/// the connection cap still bounds what metrics can take.
fn fds_to_spare() -> bool {
    use rustix::process::{Resource, getrlimit};
    let Some(limit) = getrlimit(Resource::Nofile).current else {
        return true;
    };
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return true;
    };
    let open = dir.count() as u64;
    open.saturating_add(FD_RESERVE) <= limit
}

/// Binds `addr` and serves the registry until the task is dropped.
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> Result<tokio::task::JoinHandle<()>, MetricsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError { addr, source })?;
    tracing::info!(%addr, "metrics listening");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            // SECURITY: closed at once, never queued: neither a flood of
            // connections nor a process near its descriptor limit lets
            // metrics take what the API needs.
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                tracing::debug!("metrics connection refused: all slots taken");
                continue;
            };
            if !fds_to_spare() {
                tracing::warn!(
                    reserve = FD_RESERVE,
                    "metrics connection refused: file descriptors are kept for the API"
                );
                continue;
            }
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |req| {
                    let metrics = Arc::clone(&metrics);
                    async move {
                        let (status, body) = if req.uri().path() == "/metrics" {
                            (200, metrics.render())
                        } else {
                            (404, "not found; see /metrics\n".to_owned())
                        };
                        let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() =
                            hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
                        resp.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static(
                                "text/plain; version=0.0.4; charset=utf-8",
                            ),
                        );
                        Ok::<_, Infallible>(resp)
                    }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .max_buf_size(16 * 1024)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(MAX_CONNECTION_AGE, conn).await;
            });
        }
    }))
}
