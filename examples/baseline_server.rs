//! The ceiling for any HTTP-over-UDS sidecar: a bare hyper 1.x server on a
//! Unix socket answering every request with a fixed 64-byte JSON body. The
//! load bench measures the broker as ratios to this, interleaved in one run.
//!
//! `baseline_server SOCKET [multi|current]`
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
        .expect("usage: baseline_server SOCKET [multi|current]");
    let mut rt = match args.next().as_deref() {
        Some("current") => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    rt.enable_all().build().unwrap().block_on(async move {
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
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
            });
        }
    });
}
