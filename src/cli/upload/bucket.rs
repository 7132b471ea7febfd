//! `upload`'s `PUT` straight to the bucket: the signed URL and exactly the
//! headers the broker returned, the body streamed from a file (never held
//! in memory), over http or https (rustls on *ring*, the machine's CA
//! store, `$SSL_CERT_FILE` / `$SSL_CERT_DIR` honoured). No redirect is
//! followed.
//!
//! SECURITY: the URL is a credential. It is used to connect and to write
//! the request line, and nothing else: no error, message or panic here
//! holds it (an error names the bucket's host at most, and a bucket's
//! answer by its status and its S3 error code; its body, which can echo
//! the signature, is never printed).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt as _;
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::TokioIo;
use indicatif::ProgressBar;
use tokio::io::{AsyncRead, ReadBuf};
use zeroize::Zeroizing;

/// How long connecting (and the TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a bucket's error answer is read (for its `<Code>`).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The size of one read from the file, and so of one body frame.
const CHUNK: usize = 64 * 1024;

/// Why the bucket did not take the upload. Names the bucket's host at
/// most, never the URL.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// The URL had expired when the bucket checked it (`403`).
    #[error(
        "the upload url expired before the bucket took the upload (it lived until {expires_at}); run `upload` again to mint a fresh one"
    )]
    Expired {
        /// The URL's `expires_at`.
        expires_at: String,
    },
    /// The bucket refused the signed request (`403`): the request differs
    /// from what was signed, or the signing credential is no longer valid.
    #[error(
        "the bucket refused the upload (403{}): the request does not match what the broker signed, or its credential is no longer valid; run `upload` again, and if it fails again ask the platform operator",
        code_suffix(.code)
    )]
    Refused {
        /// The bucket's error code (`AccessDenied`, `SignatureDoesNotMatch`).
        code: Option<String>,
    },
    /// The object exists (`412`): upload URLs are create-only.
    #[error(
        "an object already exists at `{object}`: upload urls are create-only, so earlier output is never overwritten; upload to another path"
    )]
    Exists {
        /// The object name.
        object: String,
    },
    /// Another answer than success.
    #[error("the bucket answered {status}{}; nothing was uploaded", code_suffix(.code))]
    Status {
        /// The HTTP status.
        status: u16,
        /// The bucket's error code, when it sent one.
        code: Option<String>,
    },
    /// The bucket's address could not be reached.
    #[error("cannot reach the bucket at `{host}`: {why}")]
    Unreachable {
        /// `host:port`.
        host: String,
        /// What went wrong.
        why: String,
    },
    /// The TLS handshake with the bucket failed.
    #[error(
        "tls with the bucket at `{host}` failed: {why}; the machine's CA store (or $SSL_CERT_FILE) must hold the CA that signed the bucket's certificate"
    )]
    Tls {
        /// `host:port`.
        host: String,
        /// rustls's reason.
        why: String,
    },
    /// Nothing moved for the idle timeout: the bucket stopped reading, or
    /// did not answer once everything was sent.
    #[error(
        "the upload stalled: the bucket took no data and gave no answer for {secs}s; run `upload` again (nothing is stored from a partial upload), or raise --idle-timeout on a slow link"
    )]
    Stalled {
        /// The idle timeout, in seconds.
        secs: u64,
    },
    /// The transfer broke off (the connection, or the file being read).
    #[error(
        "the upload broke off: {0}; run `upload` again (nothing is stored from a partial upload)"
    )]
    Transfer(String),
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref().map_or(String::new(), |c| format!(" {c}"))
}

/// A minted URL, parsed for connecting. Holds the credential: no `Debug`
/// of its parts.
pub struct Target {
    https: bool,
    host: String,
    port: u16,
    /// `host[:port]`, as signed (the port only when not the scheme's).
    authority: String,
    /// Path and query: the signed request target.
    target: Zeroizing<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Parses the broker's `url`: absolute `http` or `https` with a host.
    /// The error does not quote it.
    pub fn parse(url: &str) -> Result<Self, String> {
        let bad = || "its `url` is not an absolute http(s) url".to_owned();
        let u = url::Url::parse(url).map_err(|_| bad())?;
        let https = match u.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(bad()),
        };
        let host = u.host_str().ok_or_else(bad)?.to_owned();
        let port = u.port_or_known_default().ok_or_else(bad)?;
        let authority = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let mut target = Zeroizing::new(String::with_capacity(url.len()));
        target.push_str(u.path());
        if let Some(q) = u.query() {
            target.push('?');
            target.push_str(q);
        }
        Ok(Self {
            https,
            // IPv6 literals are bracketed in URLs, not in socket addresses.
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            authority,
            target,
        })
    }

    fn shown(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The file to send, exactly `len` bytes of it from where it stands.
#[derive(Debug)]
pub struct FileBody {
    file: tokio::fs::File,
    left: u64,
    buf: Box<[u8]>,
    bar: Option<ProgressBar>,
    /// When a frame was last handed to the connection (see [`Progress`]).
    progress: Progress,
}

/// When the transfer last moved: milliseconds since its start, shared by
/// the body (each frame it hands over) and the stall watchdog in [`put`].
#[derive(Debug, Clone)]
pub struct Progress {
    start: std::time::Instant,
    last_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Progress {
    fn new() -> Self {
        Self {
            start: std::time::Instant::now(),
            last_ms: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_ms
            .store(self.now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// How long since the transfer last moved.
    fn idle(&self) -> Duration {
        let last = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }
}

impl FileBody {
    /// `len` bytes of `file`, counted on `bar` as they are sent.
    pub fn new(file: std::fs::File, len: u64, bar: Option<ProgressBar>) -> Self {
        Self {
            file: tokio::fs::File::from_std(file),
            left: len,
            buf: vec![0u8; CHUNK].into_boxed_slice(),
            bar,
            progress: Progress::new(),
        }
    }
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.left).map_or(CHUNK, |l| l.min(CHUNK));
        let mut rb = ReadBuf::new(&mut this.buf[..want]);
        ready!(Pin::new(&mut this.file).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            // INVARIANT: exactly the signed `content-length` is sent or
            // nothing: a short body is an error, never padded.
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file got shorter while it was being uploaded",
            ))));
        }
        this.left -= n as u64;
        this.progress.touch();
        if let Some(bar) = &this.bar {
            bar.inc(n as u64);
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(rb.filled())))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// `PUT`s `body` to `to` with exactly `headers`; `object` and
/// `expires_at` are for the messages.
pub async fn put(
    to: &Target,
    headers: &[(String, String)],
    body: FileBody,
    object: &str,
    expires_at: &str,
    idle_timeout: Duration,
) -> Result<(), BucketError> {
    let progress = body.progress.clone();
    progress.touch();
    let stalled = async {
        loop {
            let idle = progress.idle();
            if idle >= idle_timeout {
                break;
            }
            tokio::time::sleep(idle_timeout - idle).await;
        }
    };
    tokio::select! {
        r = put_now(to, headers, body, object, expires_at) => r,
        () = stalled => Err(BucketError::Stalled { secs: idle_timeout.as_secs() }),
    }
}

/// [`put`] without the stall watchdog.
async fn put_now(
    to: &Target,
    headers: &[(String, String)],
    body: FileBody,
    object: &str,
    expires_at: &str,
) -> Result<(), BucketError> {
    let mut req = Request::builder()
        .method(http::Method::PUT)
        .uri(to.target.as_str())
        .header(http::header::HOST, &to.authority);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    // The broker's answer was checked to be a URL and header names and
    // values; this fails only on a target hyper cannot send.
    let req = req
        .body(body)
        .map_err(|_| BucketError::Transfer("the url or a header cannot be sent".into()))?;
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((to.host.as_str(), to.port)),
    )
    .await
    .map_err(|_| BucketError::Unreachable {
        host: to.shown(),
        why: format!("no connection within {}s", CONNECT_TIMEOUT.as_secs()),
    })?
    .map_err(|e| BucketError::Unreachable {
        host: to.shown(),
        why: e.to_string(),
    })?;
    let (status, code, message) = if to.https {
        let name = rustls::pki_types::ServerName::try_from(to.host.clone()).map_err(|_| {
            BucketError::Tls {
                host: to.shown(),
                why: "the host is not a DNS name or an IP address".into(),
            }
        })?;
        let connector = tokio_rustls::TlsConnector::from(tls_config(&to.shown())?);
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| BucketError::Unreachable {
                host: to.shown(),
                why: format!("no TLS handshake within {}s", CONNECT_TIMEOUT.as_secs()),
            })?
            .map_err(|e| BucketError::Tls {
                host: to.shown(),
                why: e.to_string(),
            })?;
        exchange(tls, req).await?
    } else {
        exchange(tcp, req).await?
    };
    match status {
        200..=299 => Ok(()),
        412 => Err(BucketError::Exists {
            object: object.to_owned(),
        }),
        403 => {
            // S3 and s3rver say "Request has expired"; a local clock past
            // `expires_at` says it too (the bucket's may lag).
            let past = jiff::Timestamp::now()
                > expires_at
                    .parse::<jiff::Timestamp>()
                    .unwrap_or(jiff::Timestamp::MAX);
            if past || message.to_ascii_lowercase().contains("expired") {
                Err(BucketError::Expired {
                    expires_at: expires_at.to_owned(),
                })
            } else {
                Err(BucketError::Refused { code })
            }
        }
        _ => Err(BucketError::Status { status, code }),
    }
}

/// One request on a connected stream: the status, and the S3 `<Code>` and
/// `<Message>` of an error answer.
async fn exchange<IO>(
    stream: IO,
    req: Request<FileBody>,
) -> Result<(u16, Option<String>, String), BucketError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| BucketError::Transfer(chain(&e)))?;
    let driver = tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| BucketError::Transfer(chain(&e)))?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    if !resp.status().is_success() {
        let mut incoming = resp.into_body();
        while let Some(Ok(frame)) = incoming.frame().await {
            if let Ok(data) = frame.into_data() {
                let room = MAX_ERROR_BODY.saturating_sub(body.len());
                body.extend_from_slice(&data[..data.len().min(room)]);
                if room <= data.len() {
                    break;
                }
            }
        }
    }
    driver.abort();
    let text = String::from_utf8_lossy(&body);
    let code = xml_element(&text, "Code").filter(|c| {
        // Only a plain error code is shown, never free text.
        c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
    });
    let message = xml_element(&text, "Message").unwrap_or_default();
    Ok((status, code, message))
}

/// The text of the first `<name>…</name>` in `xml`.
fn xml_element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..start + end].trim().to_owned())
}

/// An error and its causes, joined: hyper's own message ("error from
/// user's Body stream") says less than the file's error under it.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// rustls on *ring*, TLS 1.3 and 1.2, the machine's CA store.
fn tls_config(host: &str) -> Result<Arc<rustls::ClientConfig>, BucketError> {
    let tls = |why: String| BucketError::Tls {
        host: host.to_owned(),
        why,
    };
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(tls(
            "no CA certificates found on this machine (install ca-certificates, or set $SSL_CERT_FILE)".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_keep_the_signed_host_and_never_print_the_query() {
        let t = Target::parse("http://127.0.0.1:4568/b/o%20x?X-Amz-Signature=CANARY").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 4568));
        assert_eq!(t.authority, "127.0.0.1:4568");
        assert_eq!(t.target.as_str(), "/b/o%20x?X-Amz-Signature=CANARY");
        assert!(!format!("{t:?}").contains("CANARY"));
        let t = Target::parse("https://b.s3.eu-west-1.amazonaws.com/o?X=1").unwrap();
        assert_eq!((t.https, t.port), (true, 443));
        assert_eq!(t.authority, "b.s3.eu-west-1.amazonaws.com");
        let t = Target::parse("http://[::1]:9000/b/o").unwrap();
        assert_eq!(
            (t.host.as_str(), t.authority.as_str()),
            ("::1", "[::1]:9000")
        );
        for bad in ["ftp://h/x?CANARY", "/relative?CANARY", "CANARY"] {
            let e = Target::parse(bad).unwrap_err();
            assert!(!e.contains("CANARY"), "{e}");
        }
    }

    /// Exactly `len` bytes are sent, in frames of at most 64 KiB; a file
    /// shorter than that is an error, never a short or padded body.
    #[tokio::test]
    async fn a_file_body_sends_exactly_its_length_or_fails() {
        use std::io::Write as _;
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        f.write_all(&data).unwrap();
        let read = |len: u64| {
            let mut f = f.try_clone().unwrap();
            async move {
                use std::io::Seek as _;
                f.seek(std::io::SeekFrom::Start(0)).unwrap();
                let mut body = FileBody::new(f, len, None);
                assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(len));
                let mut got = Vec::new();
                while let Some(frame) = body.frame().await {
                    let data = frame?.into_data().unwrap();
                    assert!(data.len() <= CHUNK);
                    got.extend_from_slice(&data);
                }
                Ok::<_, io::Error>(got)
            }
        };
        assert_eq!(read(200_000).await.unwrap(), data);
        assert_eq!(read(70_000).await.unwrap(), &data[..70_000]);
        assert_eq!(read(0).await.unwrap(), b"");
        let e = read(200_001).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn only_a_plain_error_code_is_taken_from_an_answer() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message><X-Amz-Expires>1</X-Amz-Expires></Error>";
        assert_eq!(xml_element(xml, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(
            xml_element(xml, "Message").as_deref(),
            Some("Request has expired")
        );
        assert_eq!(xml_element("no xml", "Code"), None);
        let e = BucketError::Status {
            status: 400,
            code: Some("BadDigest".into()),
        };
        assert_eq!(
            e.to_string(),
            "the bucket answered 400 BadDigest; nothing was uploaded"
        );
    }
}
