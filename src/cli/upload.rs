//! `secret-broker upload PATH (--from-file F | --stdin) [--content-type T]`:
//! task output straight to the bucket. The broker mints a signed,
//! create-only `PUT` URL for the exact size and SHA-256 of what will be
//! sent (`POST /v1/uploads/{path}`); the bytes then go from this process
//! to the bucket, streamed from a file, never through the broker.
//!
//! Standard input (and any source that is not a regular file) is first
//! spooled to an anonymous `0600` temp file while it is hashed: the size
//! must be known before the URL is minted.
//!
//! Whether to encrypt is known only from a mint's answer (its age
//! `recipient`, `[uploads] encrypt_to`), so `upload` first asks for a URL
//! for the output's size and no checksum (a size over the limit is refused
//! there, before anything else), which is dropped unused; then, having
//! encrypted to the recipient if there is one (into another anonymous temp
//! file), it asks for exactly the size and SHA-256 of what it sends.
//! SECURITY: so no audit line ever records the plaintext's SHA-256 when
//! the output is encrypted (its size, within age's fixed overhead, the
//! ciphertext's size tells anyway).
//!
//! SECURITY: the URL is a credential. It is never printed, logged or put
//! in an error: success prints the object, size and SHA-256; failures name
//! the bucket's host at most (see [`bucket`]).

mod bucket;

use std::io::{BufReader, BufWriter, IsTerminal as _, Read, Seek as _, SeekFrom, Write as _};
use std::path::PathBuf;

use clap::Args;
use http::Method;
use indicatif::{ProgressBar, ProgressStyle};
use zeroize::Zeroizing;

pub use bucket::BucketError;

use super::ClientArgs;
use super::client::{Client, ClientError, write_stdout};
use crate::secret::SecretPath;
use crate::upload::encrypt::{self, Recipient};

/// Arguments of `upload`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["from_file", "stdin"])))]
pub struct UploadArgs {
    /// The output path (`scope/name`); the object is the broker's
    /// `[uploads] prefix` followed by it.
    path: String,
    /// Upload this file, byte for byte (streamed, never held in memory).
    #[arg(long, value_name = "F")]
    from_file: Option<PathBuf>,
    /// Upload standard input, byte for byte (spooled to an anonymous temp
    /// file first: the size is signed into the URL).
    #[arg(long)]
    stdin: bool,
    /// The object's Content-Type, e.g. application/gzip (signed into the URL).
    #[arg(long, value_name = "T")]
    content_type: Option<String>,
    /// Give up when the bucket takes no data, or gives no answer once all
    /// is sent, for this long (e.g. 30s, 5m).
    #[arg(long, value_name = "D", default_value = "60s", value_parser = super::run::positive_duration)]
    idle_timeout: std::time::Duration,
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

/// A file ready to send: its size and SHA-256, read back from the start.
#[derive(Debug)]
struct Prepared {
    file: std::fs::File,
    size: u64,
    sha256: [u8; 32],
}

/// The broker's answer to a mint. Holds the URL (a credential): `Debug`
/// leaves it out.
struct Minted {
    object: String,
    url: Zeroizing<String>,
    headers: Vec<(String, String)>,
    expires_at: String,
    recipient: Option<String>,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("object", &self.object)
            .field("url", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .field("recipient", &self.recipient)
            .finish_non_exhaustive()
    }
}

fn io_error(what: &str, source: std::io::Error) -> ClientError {
    ClientError::Read {
        path: what.to_owned(),
        source,
    }
}

fn spool_error(source: std::io::Error) -> ClientError {
    ClientError::Spool(source)
}

/// A progress bar on stderr when it is a terminal, else none.
fn bar(len: Option<u64>, what: &'static str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let (bar, template) = match len {
        Some(n) => (
            ProgressBar::new(n),
            "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "{msg:>10} {bytes} {bytes_per_sec}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    Some(bar)
}

/// Copies `input` into an anonymous `0600` temp file (gone when closed),
/// counting and hashing it.
fn spool(input: impl Read, what: &'static str) -> Result<Prepared, ClientError> {
    let tmp = tempfile::tempfile().map_err(spool_error)?;
    let shown = bar(None, what);
    let mut input = match &shown {
        Some(b) => Box::new(b.wrap_read(input)) as Box<dyn Read>,
        None => Box::new(input),
    };
    let mut out = encrypt::Digesting::new(BufWriter::with_capacity(64 * 1024, tmp));
    // Not `io::copy`: a failed read and a failed write (a full disk) are
    // different errors to report.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(what, e)),
        };
        out.write_all(&buf[..n]).map_err(spool_error)?;
    }
    let (w, size, sha256) = out.finish().map_err(spool_error)?;
    let mut file = w.into_inner().map_err(|e| spool_error(e.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(spool_error)?;
    if let Some(b) = shown {
        b.finish_and_clear();
    }
    Ok(Prepared { file, size, sha256 })
}

/// The source, measured: a regular file is read once to hash it and then
/// sent from its start; anything else (stdin, a pipe) is spooled.
fn prepare(args: &UploadArgs) -> Result<Prepared, ClientError> {
    let Some(path) = &args.from_file else {
        return spool(std::io::stdin().lock(), "stdin");
    };
    let shown = path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(|e| io_error(&shown, e))?;
    let meta = file.metadata().map_err(|e| io_error(&shown, e))?;
    if !meta.is_file() {
        return spool(file, "reading");
    }
    let progress = bar(Some(meta.len()), "hashing");
    let reader = BufReader::with_capacity(64 * 1024, &mut file);
    let (size, sha256) = match &progress {
        Some(b) => encrypt::digest(b.wrap_read(reader)),
        None => encrypt::digest(reader),
    }
    .map_err(|e| io_error(&shown, e))?;
    if let Some(b) = progress {
        b.finish_and_clear();
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| io_error(&shown, e))?;
    Ok(Prepared { file, size, sha256 })
}

/// A reader that remembers whether it failed: an error out of the
/// encryptor is then told apart as the input's or the temp file's.
struct Watched<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed = true)
    }
}

/// Encrypts `plain` to `recipient` into an anonymous `0600` temp file.
fn encrypt_file(
    plain: Prepared,
    recipient: &Recipient,
    source: &str,
) -> Result<Prepared, ClientError> {
    let tmp = tempfile::tempfile().map_err(spool_error)?;
    let progress = bar(Some(plain.size), "encrypting");
    let reader = BufReader::with_capacity(64 * 1024, plain.file);
    let mut input = Watched {
        inner: match &progress {
            Some(b) => Box::new(b.wrap_read(reader)) as Box<dyn Read>,
            None => Box::new(reader),
        },
        failed: false,
    };
    let out = BufWriter::with_capacity(64 * 1024, tmp);
    let (w, size, sha256) = encrypt::encrypt(recipient, &mut input, out).map_err(|e| {
        if input.failed {
            io_error(source, e)
        } else {
            spool_error(e)
        }
    })?;
    if let Some(b) = progress {
        b.finish_and_clear();
    }
    let mut file = w.into_inner().map_err(|e| spool_error(e.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(spool_error)?;
    Ok(Prepared { file, size, sha256 })
}

/// Asks the broker for a URL for exactly `p`'s bytes, or, as the probe
/// that learns the recipient (`with_sha256` false), for its size alone.
async fn mint(
    client: &Client,
    api_path: &str,
    p: &Prepared,
    with_sha256: bool,
    content_type: Option<&str>,
) -> Result<Minted, ClientError> {
    let mut body = serde_json::json!({"size": p.size});
    if with_sha256 {
        body["sha256"] = serde_json::Value::from(hex::encode(p.sha256));
    }
    if let Some(t) = content_type {
        body["content_type"] = serde_json::Value::from(t);
    }
    let body = Zeroizing::new(body.to_string().into_bytes());
    let reply = client.send(Method::POST, api_path, Some(body), &[]).await?;
    let v = reply.json()?;
    let bad = |what: &str| ClientError::Http(format!("the broker's upload answer {what}"));
    if v["method"].as_str() != Some("PUT") {
        return Err(bad("does not say `method: PUT`"));
    }
    let url = Zeroizing::new(
        v["url"]
            .as_str()
            .ok_or_else(|| bad("has no `url`"))?
            .to_owned(),
    );
    let mut headers = Vec::new();
    for (k, val) in v["headers"]
        .as_object()
        .ok_or_else(|| bad("has no `headers`"))?
    {
        let val = val
            .as_str()
            .filter(|s| http::HeaderValue::from_str(s).is_ok())
            .ok_or_else(|| bad("has a header value that cannot be sent"))?;
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(bad("has a header name that cannot be sent"));
        }
        headers.push((k.clone(), val.to_owned()));
    }
    Ok(Minted {
        object: v["object"]
            .as_str()
            .ok_or_else(|| bad("has no `object`"))?
            .to_owned(),
        url,
        headers,
        expires_at: v["expires_at"].as_str().unwrap_or_default().to_owned(),
        recipient: v["recipient"].as_str().map(str::to_owned),
    })
}

/// Runs `upload`.
pub async fn run(args: UploadArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.client)?;
    SecretPath::parse(&args.path).map_err(|e| {
        ClientError::Usage(format!("`{}` is not a valid output path: {e}", args.path))
    })?;
    let api_path = format!("/v1/uploads/{}", args.path);
    let content_type = args.content_type.as_deref();
    let plain = prepare(&args)?;
    // The probe: learns the recipient; no checksum of the plaintext.
    let probe = mint(&client, &api_path, &plain, false, content_type).await?;
    let (sent, recipient) = match probe.recipient.clone() {
        None => (plain, None),
        Some(r) => {
            let recipient = Recipient::parse(&r)
                .map_err(|e| ClientError::Http(format!("the broker's upload `recipient` {e}")))?;
            let source = args
                .from_file
                .as_ref()
                .map_or_else(|| "stdin".to_owned(), |f| f.display().to_string());
            let cipher = encrypt_file(plain, &recipient, &source)?;
            (cipher, Some(r))
        }
    };
    drop(probe);
    let minted = mint(&client, &api_path, &sent, true, content_type).await?;
    if minted.recipient != recipient {
        return Err(ClientError::Http(
            "the broker's upload recipient changed between two answers; run `upload` again".into(),
        ));
    }
    let target = bucket::Target::parse(&minted.url)
        .map_err(|why| ClientError::Http(format!("the broker's upload answer: {why}")))?;
    let progress = bar(Some(sent.size), "uploading");
    let body = bucket::FileBody::new(sent.file, sent.size, progress.clone());
    let result = bucket::put(
        &target,
        &minted.headers,
        body,
        &minted.object,
        &minted.expires_at,
        args.idle_timeout,
    )
    .await;
    if let Some(b) = progress {
        b.finish_and_clear();
    }
    result?;
    let sha = hex::encode(sent.sha256);
    if client.json {
        let v = serde_json::json!({
            "path": args.path,
            "object": minted.object,
            "size": sent.size,
            "sha256": sha,
            "recipient": recipient,
        });
        return write_stdout(format!("{v}\n").as_bytes());
    }
    let mut line = format!(
        "uploaded {} to {}: {} bytes, sha256 {sha}",
        args.path, minted.object, sent.size
    );
    if let Some(r) = &recipient {
        line.push_str(&format!(" (age-encrypted to {r})"));
    }
    line.push('\n');
    write_stdout(line.as_bytes())
}
