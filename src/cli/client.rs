//! A small HTTP/1.1 client for the client verbs: over the broker's Unix
//! socket, or over its mutual-TLS listener with `--url` (see [`tls`]). One
//! client for every verb. Bodies that may hold values live in zeroizing
//! buffers.

mod tls;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use http::{Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use zeroize::Zeroizing;

use super::upload::BucketError;
use super::{ClientArgs, Exit};
use crate::api::ZeroizingBuf;
use crate::config::DEFAULT_SOCKET;

/// Why a client verb failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker answered with a contract error.
    #[error("{code}: {message} (status {status}, request {request_id}){}", .hint.map_or(String::new(), |h| format!("; hint: {h}")))]
    Api {
        /// HTTP status.
        status: u16,
        /// Contract error code.
        code: String,
        /// The broker's message.
        message: String,
        /// The request id, to find the audit line.
        request_id: String,
        /// What the CLI knows that the broker could not say.
        hint: Option<&'static str>,
    },
    /// The socket (or the TLS listener's address) could not be reached.
    #[error("cannot reach the broker at `{at}`: {why}")]
    Connect {
        /// The socket path or the URL.
        at: String,
        /// What went wrong and what to do about it.
        why: String,
    },
    /// The TLS handshake with the broker failed: it could not be trusted,
    /// or it refused the client certificate.
    #[error("tls with the broker at `{url}` failed: {why}")]
    Tls {
        /// The URL.
        url: String,
        /// Which side refused, and what to check.
        why: String,
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
    /// `upload`: a temp file (the spooled input or the ciphertext) could
    /// not be written.
    #[error("cannot write the upload's temp file: {0}; check the free space in $TMPDIR")]
    Spool(std::io::Error),
    /// `upload`: the bucket did not take the upload.
    #[error(transparent)]
    Bucket(#[from] BucketError),
}

impl ClientError {
    /// The exit code: a script tells "not allowed" from "no such secret"
    /// by it, without parsing text.
    fn exit(&self) -> Exit {
        match self {
            Self::Api { code, .. } => match code.as_str() {
                "unauthenticated" => Exit::Unauthenticated,
                "forbidden" => Exit::Forbidden,
                "not_found" => Exit::NotFound,
                "precondition_failed" => Exit::Exists,
                _ => Exit::Failure,
            },
            Self::Http(_) => Exit::Failure,
            Self::Connect { .. } | Self::Tls { .. } => Exit::Unavailable,
            Self::Read { .. } | Self::Spool(_) => Exit::Io,
            Self::Usage(_) => Exit::Usage,
            Self::Bucket(b) => match b {
                BucketError::Expired { .. } | BucketError::Refused { .. } => Exit::UploadRefused,
                BucketError::Exists { .. } => Exit::Exists,
                BucketError::Unreachable { .. }
                | BucketError::Tls { .. }
                | BucketError::Stalled { .. } => Exit::Unavailable,
                BucketError::Status { .. } | BucketError::Transfer(_) => Exit::Failure,
            },
        }
    }

    /// The error code of `--json` output: the broker's contract code, or
    /// one of the CLI's own for failures that never reached the API.
    fn code(&self) -> &str {
        match self {
            Self::Api { code, .. } => code,
            Self::Connect { .. } => "unreachable",
            Self::Tls { .. } => "tls_failed",
            Self::Http(_) => "bad_response",
            Self::Read { .. } | Self::Spool(_) => "io_error",
            Self::Usage(_) => "usage",
            Self::Bucket(BucketError::Expired { .. }) => "url_expired",
            Self::Bucket(BucketError::Refused { .. }) => "bucket_forbidden",
            Self::Bucket(BucketError::Exists { .. }) => "object_exists",
            Self::Bucket(BucketError::Status { .. }) => "bucket_error",
            Self::Bucket(BucketError::Unreachable { .. }) => "bucket_unreachable",
            Self::Bucket(BucketError::Tls { .. }) => "bucket_tls_failed",
            Self::Bucket(BucketError::Stalled { .. }) => "bucket_stalled",
            Self::Bucket(BucketError::Transfer(_)) => "upload_failed",
        }
    }

    /// The API's error envelope, `{"error":{"code","message","request_id"}}`
    /// (`request_id` null when no request was answered), one line.
    fn envelope(&self) -> String {
        let (message, request_id) = match self {
            Self::Api {
                message,
                request_id,
                ..
            } => (message.clone(), Some(request_id.as_str())),
            other => (other.to_string(), None),
        };
        let mut v = serde_json::json!({
            "error": {"code": self.code(), "message": message, "request_id": request_id}
        });
        if let Self::Api {
            hint: Some(hint), ..
        } = self
        {
            v["error"]["hint"] = serde_json::Value::from(*hint);
        }
        format!("{v}\n")
    }
}

/// Prints a failure and maps it to an exit code. The prose goes to stderr;
/// with `--json` the error envelope also goes to stdout, so a script reads
/// one JSON document there whatever happened.
pub fn report(json: bool, result: Result<(), ClientError>) -> Exit {
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("error: {e}");
            if json {
                // A closed stdout leaves the exit code to tell.
                let _ = write_stdout(e.envelope().as_bytes());
            }
            e.exit()
        }
    }
}

/// Says why connecting to `socket` failed, and what to do: above all, for
/// `EACCES`, which group the caller lacks (not "is it running?").
fn explain_connect(socket: &Path, e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    use std::os::unix::fs::MetadataExt as _;
    let fix = "set --socket or $SECRET_BROKER_SOCKET";
    match e.kind() {
        ErrorKind::NotFound => {
            format!("no socket there ({e}); is the broker running? {fix}")
        }
        ErrorKind::ConnectionRefused => format!(
            "nothing listens on it ({e}): a socket left by a broker that is not running; start it, or {fix}"
        ),
        ErrorKind::PermissionDenied => {
            let uid = rustix::process::geteuid().as_raw();
            let Ok(meta) = std::fs::metadata(socket) else {
                return format!(
                    "permission denied ({e}): a directory on the way to the socket does not let you (uid {uid}) through; ask for access to it, or {fix}"
                );
            };
            let (gid, mode) = (meta.gid(), meta.mode() & 0o7777);
            let group = match group_name(gid) {
                Some(name) => format!("`{name}` (gid {gid})"),
                None => format!("gid {gid}"),
            };
            if meta.uid() != uid && !in_group(gid) {
                format!(
                    "permission denied: the socket (mode {mode:04o}) is for the group {group}, and you (uid {uid}) are not in it; ask to be added to that group (then log in again), or run as a member of it"
                )
            } else {
                format!(
                    "permission denied: the socket's mode {mode:04o} (owner uid {}, group {group}) does not let you (uid {uid}) write to it; the broker's `[listen] mode` sets it",
                    meta.uid()
                )
            }
        }
        _ => format!("{e}; is the broker running? {fix}"),
    }
}

/// Whether the caller has `gid` as its effective or a supplementary group.
fn in_group(gid: u32) -> bool {
    rustix::process::getegid().as_raw() == gid
        || rustix::process::getgroups().is_ok_and(|gs| gs.iter().any(|g| g.as_raw() == gid))
}

/// The name of group `gid` in `/etc/group`, if it has one.
fn group_name(gid: u32) -> Option<String> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    group_name_in(&groups, gid)
}

fn group_name_in(groups: &str, gid: u32) -> Option<String> {
    groups.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id = f.nth(1)?.parse::<u32>().ok()?;
        (id == gid && !name.is_empty()).then(|| name.to_owned())
    })
}

/// Whether `$SECRET_BROKER_TOKEN`'s value looks like a file path rather
/// than a token: then a `401` carries a hint (the value itself is never
/// printed).
fn looks_like_path(token: &str) -> bool {
    ["./", "../", "~/"].iter().any(|p| token.starts_with(p))
        || (token.starts_with('/') && Path::new(token).exists())
}

/// The hint a `401` carries when `$SECRET_BROKER_TOKEN` looked like a path.
const TOKEN_PATH_HINT: &str = "$SECRET_BROKER_TOKEN holds the token itself, and its value looks like a file path; to read the token from a file, set $SECRET_BROKER_TOKEN_FILE or pass --token-file";

/// Reads a token file: its content, trimmed, must not be empty.
fn read_token_file(f: &Path) -> Result<Zeroizing<String>, ClientError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(f).map_err(|source| ClientError::Read {
            path: f.display().to_string(),
            source,
        })?,
    );
    let token = Zeroizing::new(text.trim().to_owned());
    if token.is_empty() {
        return Err(ClientError::Usage(format!(
            "the token file `{}` is empty",
            f.display()
        )));
    }
    Ok(token)
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

/// Where the broker is.
#[derive(Debug)]
enum Transport {
    /// Its Unix socket.
    Unix(PathBuf),
    /// Its mutual-TLS listener.
    Tls(tls::Target),
}

/// The TLS settings: `--url` (else `$SECRET_BROKER_URL`) selects TLS, and
/// then each file comes from its flag, else its variable. `None` for the
/// socket; TLS flags without a URL are a usage error.
fn tls_args(args: &ClientArgs) -> Result<Option<tls::TlsArgs>, ClientError> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let url = match (&args.url, &args.socket) {
        (Some(_), Some(_)) => {
            return Err(ClientError::Usage(
                "both --url and --socket are given; the broker is reached by one of them".into(),
            ));
        }
        (Some(u), None) => Some(u.clone()),
        // An explicit --socket wins over the environment's URL.
        (None, Some(_)) => None,
        (None, None) => match (
            env("SECRET_BROKER_URL"),
            std::env::var_os("SECRET_BROKER_SOCKET").filter(|v| !v.is_empty()),
        ) {
            (Some(_), Some(_)) => {
                return Err(ClientError::Usage(
                    "both $SECRET_BROKER_URL and $SECRET_BROKER_SOCKET are set; unset one, or pass --url or --socket".into(),
                ));
            }
            (Some(u), None) => Some(u.to_string_lossy().into_owned()),
            (None, _) => None,
        },
    };
    let Some(url) = url else {
        if args.cert.is_some() || args.key.is_some() || args.cacert.is_some() || args.pin.is_some()
        {
            return Err(ClientError::Usage(
                "--cert, --key, --cacert and --pin are for the TLS listener: add --url https://HOST:PORT".into(),
            ));
        }
        return Ok(None);
    };
    Ok(Some(tls::TlsArgs {
        url,
        cert: args
            .cert
            .clone()
            .or_else(|| env("SECRET_BROKER_CERT").map(PathBuf::from)),
        key: args
            .key
            .clone()
            .or_else(|| env("SECRET_BROKER_KEY").map(PathBuf::from)),
        cacert: args
            .cacert
            .clone()
            .or_else(|| env("SECRET_BROKER_CACERT").map(PathBuf::from)),
        pin: args.pin.clone(),
    }))
}

/// Connection settings for the client verbs.
#[derive(Debug)]
pub struct Client {
    transport: Transport,
    token: Option<Zeroizing<String>>,
    /// `$SECRET_BROKER_TOKEN` looked like a file path (see [`looks_like_path`]).
    token_looks_like_path: bool,
    /// Print JSON for scripts.
    pub json: bool,
}

impl Client {
    /// Resolves socket and token from flags and environment. The token:
    /// the file `--token-file F`, else the file `$SECRET_BROKER_TOKEN_FILE`,
    /// else `$SECRET_BROKER_TOKEN` itself; both variables set is an error
    /// (which one was meant?).
    pub fn new(args: &ClientArgs) -> Result<Self, ClientError> {
        if let Some(tls) = tls_args(args)? {
            // SECURITY: over TLS only certificate principals match, so a
            // bearer token would gain nothing and hand the token to a
            // remote endpoint: none is sent.
            if args.token_file.is_some() {
                return Err(ClientError::Usage(
                    "--token-file is for the socket: over --url the client certificate is the identity".into(),
                ));
            }
            return Ok(Self {
                transport: Transport::Tls(tls::Target::load(&tls)?),
                token: None,
                token_looks_like_path: false,
                json: args.json,
            });
        }
        let socket = args
            .socket
            .clone()
            .or_else(|| std::env::var_os("SECRET_BROKER_SOCKET").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        let env_file = std::env::var_os("SECRET_BROKER_TOKEN_FILE")
            .filter(|f| !f.is_empty())
            .map(PathBuf::from);
        let env_token = std::env::var("SECRET_BROKER_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .map(Zeroizing::new);
        let mut token_looks_like_path = false;
        let token = match (&args.token_file, env_file, env_token) {
            (Some(f), _, _) => Some(read_token_file(f)?),
            (None, Some(_), Some(_)) => {
                return Err(ClientError::Usage(
                    "both $SECRET_BROKER_TOKEN (the token) and $SECRET_BROKER_TOKEN_FILE (a file holding it) are set; unset one".into(),
                ));
            }
            (None, Some(f), None) => Some(read_token_file(&f)?),
            (None, None, Some(t)) => {
                token_looks_like_path = looks_like_path(&t);
                Some(t)
            }
            (None, None, None) => None,
        };
        Ok(Self {
            transport: Transport::Unix(socket),
            token,
            token_looks_like_path,
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
        let host = match &self.transport {
            Transport::Unix(_) => "secret-broker",
            Transport::Tls(target) => &target.authority,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
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
        match &self.transport {
            Transport::Unix(socket) => {
                let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
                    ClientError::Connect {
                        why: explain_connect(socket, &e),
                        at: socket.display().to_string(),
                    }
                })?;
                let http = |e: hyper::Error| ClientError::Http(e.to_string());
                self.exchange(stream, req, &http).await
            }
            Transport::Tls(target) => {
                let stream = target.connect().await?;
                // In TLS 1.3 the broker refuses a client certificate after
                // the client's side of the handshake: that alert arrives
                // with the first read, and is explained like a handshake's.
                let http = |e: hyper::Error| {
                    if tls::find_rustls(&e).is_some() {
                        target.tls_error(&e)
                    } else {
                        ClientError::Http(e.to_string())
                    }
                };
                self.exchange(stream, req, &http).await
            }
        }
    }

    /// One request and its answer on a connected stream; `http` maps the
    /// transport's failures.
    async fn exchange<IO>(
        &self,
        stream: IO,
        req: Request<Full<ZeroizingBuf>>,
        http: &(dyn Fn(hyper::Error) -> ClientError + Sync),
    ) -> Result<Reply, ClientError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        let driver = tokio::spawn(conn);
        let resp = sender.send_request(req).await.map_err(http)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut buf = Zeroizing::new(Vec::new());
        let mut incoming = resp.into_body();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(http)?;
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
            hint: (status == 401 && self.token_looks_like_path).then_some(TOKEN_PATH_HINT),
        })
    }
}

/// Writes a JSON document to stdout on one line of its own: the API's
/// bodies have no final newline, and every `--json` output ends with one.
pub fn write_json_line(bytes: &[u8]) -> Result<(), ClientError> {
    write_stdout(bytes)?;
    if bytes.last() != Some(&b'\n') {
        write_stdout(b"\n")?;
    }
    Ok(())
}

/// Writes bytes to stdout, flushing.
pub fn write_stdout(bytes: &[u8]) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| ClientError::Http(format!("cannot write to stdout: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_come_from_etc_group() {
        let groups = "root:x:0:\nsecret-broker:x:1234:alice,bob\nbad line\n:x:9:\n";
        assert_eq!(
            group_name_in(groups, 1234).as_deref(),
            Some("secret-broker")
        );
        assert_eq!(group_name_in(groups, 0).as_deref(), Some("root"));
        assert_eq!(group_name_in(groups, 9), None);
        assert_eq!(group_name_in(groups, 4321), None);
    }

    #[test]
    fn tokens_that_look_like_paths() {
        for t in ["./token", "../t", "~/.sb-token", "/"] {
            assert!(looks_like_path(t), "{t}");
        }
        for t in ["sbdev_0123abcd", "/no-such-file-here-sb", "abc/def=="] {
            assert!(!looks_like_path(t), "{t}");
        }
    }

    #[test]
    fn json_errors_are_the_api_envelope_on_one_line() {
        let e = ClientError::Api {
            status: 404,
            code: "not_found".into(),
            message: "no secret `a/b`".into(),
            request_id: "r-1".into(),
            hint: None,
        };
        assert_eq!(
            e.envelope(),
            "{\"error\":{\"code\":\"not_found\",\"message\":\"no secret `a/b`\",\"request_id\":\"r-1\"}}\n"
        );
        assert_eq!(e.exit(), Exit::NotFound);
        let e = ClientError::Usage("bad".into());
        let v: serde_json::Value = serde_json::from_str(&e.envelope()).unwrap();
        assert_eq!(v["error"]["code"], "usage");
        assert!(v["error"]["request_id"].is_null());
    }
}
