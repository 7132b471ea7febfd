//! A small HTTP/1.1 client over the broker's Unix socket, for the client
//! verbs. Bodies that may hold values live in zeroizing buffers.

use std::io::Write as _;
use std::path::PathBuf;

use http::{Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use zeroize::Zeroizing;

use super::{ClientArgs, Exit};
use crate::api::ZeroizingBuf;
use crate::config::DEFAULT_SOCKET;

/// Why a client verb failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker answered with a contract error.
    #[error("{code}: {message} (status {status}, request {request_id})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Contract error code.
        code: String,
        /// The broker's message.
        message: String,
        /// The request id, to find the audit line.
        request_id: String,
    },
    /// The socket could not be reached.
    #[error(
        "cannot reach the broker at `{socket}`: {source} (is it running? set --socket or $SECRET_BROKER_SOCKET)"
    )]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("http exchange with the broker failed: {0}")]
    Http(String),
    /// A local file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    fn exit(&self) -> Exit {
        match self {
            Self::Api { .. } | Self::Http(_) => Exit::Failure,
            Self::Connect { .. } => Exit::Unavailable,
            Self::Read { .. } => Exit::Io,
            Self::Usage(_) => Exit::Usage,
        }
    }
}

/// Prints a failure and maps it to an exit code.
pub fn report(result: Result<(), ClientError>) -> Exit {
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit()
        }
    }
}

/// A broker response.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The response headers (`x-secret-version` for `run`).
    pub headers: http::HeaderMap,
    /// The body (zeroized on drop).
    pub body: Zeroizing<Vec<u8>>,
}

impl Reply {
    /// The body as JSON (for non-secret responses).
    pub fn json(&self) -> Result<serde_json::Value, ClientError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ClientError::Http(format!("the broker's answer is not JSON: {e}")))
    }
}

/// Connection settings for the client verbs.
#[derive(Debug)]
pub struct Client {
    socket: PathBuf,
    token: Option<Zeroizing<String>>,
    /// Print JSON for scripts.
    pub json: bool,
}

impl Client {
    /// Resolves socket and token from flags and environment.
    pub fn new(args: &ClientArgs) -> Result<Self, ClientError> {
        let socket = args
            .socket
            .clone()
            .or_else(|| std::env::var_os("SECRET_BROKER_SOCKET").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        let token = match &args.token_file {
            Some(f) => Some(Zeroizing::new(
                std::fs::read_to_string(f)
                    .map_err(|source| ClientError::Read {
                        path: f.display().to_string(),
                        source,
                    })?
                    .trim()
                    .to_owned(),
            )),
            None => std::env::var("SECRET_BROKER_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .map(Zeroizing::new),
        };
        Ok(Self {
            socket,
            token,
            json: args.json,
        })
    }

    /// Sends one request; a non-2xx answer becomes [`ClientError::Api`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
        extra: &[(&str, &str)],
    ) -> Result<Reply, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect {
                socket: self.socket.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "secret-broker");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {}", t.as_str()));
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(b) => {
                req = req
                    .header("content-type", "application/json")
                    .header("content-length", b.len());
                ZeroizingBuf::new(b)
            }
            None => ZeroizingBuf::default(),
        };
        let req = req
            .body(Full::new(body))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut buf = Zeroizing::new(Vec::new());
        let mut incoming = resp.into_body();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
            }
        }
        driver.abort();
        let reply = Reply {
            status,
            headers,
            body: buf,
        };
        if (200..300).contains(&status) {
            return Ok(reply);
        }
        let v = reply.json().unwrap_or_default();
        let field = |k: &str| v["error"][k].as_str().unwrap_or("").to_owned();
        Err(ClientError::Api {
            status,
            code: field("code"),
            message: field("message"),
            request_id: field("request_id"),
        })
    }
}

/// Writes bytes to stdout, flushing.
pub fn write_stdout(bytes: &[u8]) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| ClientError::Http(format!("cannot write to stdout: {e}")))
}
