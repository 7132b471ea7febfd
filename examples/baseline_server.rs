//! The ceiling for any HTTP-over-UDS sidecar: a bare hyper 1.x server on a
//! Unix socket answering every request with a fixed 64-byte JSON body. The
//! load bench measures the broker as ratios to this, interleaved in one run.
//!
//! `baseline_server SOCKET [multi|current|per_core|per_core_handrolled]`:
//! tokio's multi-thread runtime (the default, as `#[tokio::main]`), its
//! current-thread runtime, or the broker's `per_core` shape (as many
//! current-thread runtimes as serve its socket by default, each serving
//! the connections the accepting thread hands it in turn); `per_core_handrolled` is that shape without
//! hyper (`httparse` and one write per answer: the least an HTTP/1.1
//! server can do), to measure what hyper's HTTP/1 machinery costs
//! (`LOAD_BASELINE=per_core_handrolled`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;

/// Exactly 64 bytes, shaped like a broker read.
const BODY: &[u8; 64] = br#"{"path":"acme/tasks/t-42/db","version":1,"value":"0123456789ab"}"#;

fn main() {
    let mut args = std::env::args().skip(1);
    let socket = args
        .next()
        .expect("usage: baseline_server SOCKET [multi|current|per_core]");
    let _ = std::fs::remove_file(&socket);
    match args.next().as_deref() {
        Some("per_core") => per_core(&socket, false),
        Some("per_core_handrolled") => per_core(&socket, true),
        Some("current") => serve(&socket, tokio::runtime::Builder::new_current_thread()),
        _ => serve(&socket, tokio::runtime::Builder::new_multi_thread()),
    }
}

/// One runtime accepts and serves every connection.
fn serve(socket: &str, mut rt: tokio::runtime::Builder) {
    rt.enable_all().build().unwrap().block_on(async move {
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(connection(stream));
        }
    });
}

/// The accepting thread hands each connection to the next of as many
/// current-thread runtimes as the broker's `per_core` serves its socket
/// with by default (one per two cores, rounded up).
fn per_core(socket: &str, handrolled: bool) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers: Vec<tokio::runtime::Handle> =
        (0..secret_broker::server::default_socket_workers(cores))
            .map(|_| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let handle = rt.handle().clone();
                std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
                handle
            })
            .collect();
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    for (stream, worker) in listener.incoming().zip(workers.iter().cycle()) {
        let stream = stream.unwrap();
        stream.set_nonblocking(true).unwrap();
        let _entered = worker.enter();
        let stream = tokio::net::UnixStream::from_std(stream).unwrap();
        if handrolled {
            tokio::spawn(handrolled_connection(stream));
        } else {
            tokio::spawn(connection(stream));
        }
    }
}

/// One connection served by bare hyper (also `benches/request.rs`'s).
pub async fn connection<I>(stream: I)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(|_req| async {
        let mut resp = hyper::Response::new(Full::new(Bytes::from_static(BODY)));
        resp.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_static("application/json"),
        );
        Ok::<_, Infallible>(resp)
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The least an HTTP/1.1 server can do: `httparse` and one write per
/// answer, the same body and headers as [`connection`] (also
/// `benches/request.rs`'s).
pub async fn handrolled_connection<I>(mut io: I)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::with_capacity(8192);
    let mut out = Vec::with_capacity(512);
    let mut date = (u64::MAX, String::new());
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let now = std::time::SystemTime::now();
                let secs = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                if secs != date.0 {
                    date = (secs, httpdate::fmt_http_date(now));
                }
                out.clear();
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 64\r\ndate: ");
                out.extend_from_slice(date.1.as_bytes());
                out.extend_from_slice(b"\r\n\r\n");
                out.extend_from_slice(BODY);
                let close = req.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("connection")
                        && h.value.eq_ignore_ascii_case(b"close")
                });
                buf.drain(..n);
                if io.write_all(&out).await.is_err() || close {
                    return;
                }
            }
            Ok(httparse::Status::Partial) => {
                let mut chunk = [0u8; 4096];
                match io.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            Err(_) => return,
        }
    }
}
