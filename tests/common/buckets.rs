//! Local S3 servers for the upload tests, each started privately on a free
//! loopback port and killed when dropped: `@20minutes/s3rver` (checks
//! SigV4 query signatures, their expiry and signed headers; ignores
//! `If-None-Match` on `PUT`) and moto (checks no signature, but refuses a
//! `PUT` with `If-None-Match: *` over an existing object with `412`).
//! And a broker that signs upload URLs for one of them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};

use super::common::{Broker, default_principals};
use super::servers::{self, Server, server_bin};

/// The bucket every test uploads to.
pub const BUCKET: &str = "task-output";

/// A broker with `[uploads]` signing for `endpoint` with this credential
/// (its whole environment: nothing of the machine's AWS config reaches
/// it), logging at trace level; `uploads_extra` adds lines to `[uploads]`.
pub fn uploads_broker(
    endpoint: &str,
    region: &str,
    credential: (&str, &str, Option<&str>),
    expiry: &str,
    uploads_extra: &str,
) -> Broker {
    uploads_broker_sized(endpoint, region, credential, expiry, "64MiB", uploads_extra)
}

/// [`uploads_broker`] with `max_size` of its own.
pub fn uploads_broker_sized(
    endpoint: &str,
    region: &str,
    (key_id, secret, token): (&str, &str, Option<&str>),
    expiry: &str,
    max_size: &str,
    uploads_extra: &str,
) -> Broker {
    let dir = Broker::temp_dir();
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).unwrap();
    std::fs::write(dir.path().join("store.key"), key).unwrap();
    let extra = format!(
        r#"{}
[uploads]
backend = "s3"
bucket = "{BUCKET}"
prefix = "tenant-a/"
expiry = "{expiry}"
max_size = "{max_size}"
region = "{region}"
endpoint_url = "{endpoint}"
{uploads_extra}
"#,
        default_principals()
    );
    let mut env = vec![
        ("AWS_ACCESS_KEY_ID", key_id),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("RUST_LOG", "trace"),
    ];
    if let Some(t) = token {
        env.push(("AWS_SESSION_TOKEN", t));
    }
    // The broker sees these variables alone: its credential is the one the
    // test checks the signature with, and no machine config interferes.
    Broker::start_isolated(
        dir,
        "backend = \"embedded\"\npath = \"store.redb\"\nkey_file = \"store.key\"",
        &extra,
        &env,
    )
}

/// `@20minutes/s3rver` (4.0.4, from npm), run by node from
/// `.backends/s3rver` (or `$SB_S3RVER`, the package's directory); a loud
/// skip when missing, a failure under CI.
pub struct S3rver {
    child: std::process::Child,
    bucket: String,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl S3rver {
    /// s3rver's one account: key id and secret.
    pub const CREDENTIAL: (&'static str, &'static str, Option<&'static str>) =
        ("S3RVER", "S3RVER", None);

    /// s3rver with the bucket [`BUCKET`].
    pub fn start() -> Option<Self> {
        Self::start_with_bucket(BUCKET)
    }

    /// s3rver with one bucket, `bucket`.
    pub fn start_with_bucket(bucket: &str) -> Option<Self> {
        let pkg = std::env::var("SB_S3RVER").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/.backends/s3rver/node_modules/@20minutes/s3rver"
            )
            .to_owned()
        });
        if !Path::new(&pkg).join("lib/s3rver.js").exists() {
            eprintln!(
                "\n*** SKIPPED uploads through s3rver: `{pkg}` is missing; \
                 npm install --prefix .backends/s3rver @20minutes/s3rver@4.0.4 ***\n"
            );
            // As for the store servers: under CI an absent server fails.
            assert!(
                std::env::var_os("CI").is_none(),
                "s3rver is missing and CI is set (scripts/backends install aws installs it)"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = servers::free_port();
        const SCRIPT: &str = r#"
const S3rver = require(process.env.S3RVER_PKG);
new S3rver({address: "127.0.0.1", port: +process.env.S3RVER_PORT,
  directory: process.env.S3RVER_DIR, silent: true,
  configureBuckets: [{name: process.env.S3RVER_BUCKET}]}).run();
"#;
        let child = Command::new("node")
            .args(["-e", SCRIPT])
            .env("S3RVER_PKG", &pkg)
            .env("S3RVER_PORT", port.to_string())
            .env("S3RVER_DIR", dir.path())
            .env("S3RVER_BUCKET", bucket)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut s = Self {
            child,
            bucket: bucket.to_owned(),
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(s);
            }
            assert!(s.child.try_wait().unwrap().is_none(), "s3rver exited");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("s3rver did not listen on {port}");
    }

    /// Whether some stored file holds exactly `data`.
    pub fn holds(&self, data: &[u8]) -> bool {
        fn walk(p: &Path, data: &[u8]) -> bool {
            std::fs::read_dir(p).unwrap().any(|e| {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, data)
                } else {
                    std::fs::read(&p).is_ok_and(|b| b == data)
                }
            })
        }
        walk(self.dir.path(), data)
    }

    /// The stored bytes of `object` in [`BUCKET`], if it exists (s3rver
    /// keeps `{dir}/{bucket}/{key dirs}/{name}._S3rver_object`).
    pub fn object(&self, object: &str) -> Option<Vec<u8>> {
        let (dirs, name) = object.rsplit_once('/').unwrap_or(("", object));
        let path = self
            .dir
            .path()
            .join(&self.bucket)
            .join(dirs)
            .join(format!("{name}._S3rver_object"));
        std::fs::read(path).ok()
    }
}

impl Drop for S3rver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto (`.backends/bin/moto_server`, or `$SB_MOTO_BIN`) with [`BUCKET`]
/// made; a loud skip when missing, a failure under CI.
pub struct Moto {
    _server: Server,
    /// `http://127.0.0.1:PORT`, or `https://` with TLS.
    pub url: String,
    /// With TLS: the CA file that signed its certificate.
    ca: Option<std::path::PathBuf>,
}

/// A server's TLS files: certificate chain, key, and the CA that signed it.
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
}

impl Moto {
    pub fn start(test: &str) -> Option<Self> {
        Self::start_with(test, None)
    }

    /// Serving `https://` with `tls`'s certificate.
    pub fn start_tls(test: &str, tls: &TlsFiles) -> Option<Self> {
        Self::start_with(test, Some(tls))
    }

    fn start_with(test: &str, tls: Option<&TlsFiles>) -> Option<Self> {
        let bin = server_bin("SB_MOTO_BIN", "moto_server", test)?;
        let port = servers::free_port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}");
        let mut args = vec![
            "-H".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            port.to_string(),
        ];
        if let Some(t) = tls {
            args.extend(["-c".to_owned(), t.cert.display().to_string()]);
            args.extend(["-k".to_owned(), t.key.display().to_string()]);
        }
        let server = Server::launch(
            Box::new(move || {
                Command::new(&bin)
                    .args(&args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            }),
            format!("{url}/moto-api/"),
        );
        let moto = Self {
            _server: server,
            url,
            ca: tls.map(|t| t.ca.clone()),
        };
        let mut args: Vec<String> = Vec::new();
        if let Some(ca) = &moto.ca {
            args.extend(["--cacert".to_owned(), ca.display().to_string()]);
        }
        args.extend([
            "-X".to_owned(),
            "PUT".to_owned(),
            format!("{}/{BUCKET}", moto.url),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, body) = servers::curl(&refs);
        assert_eq!(status, 200, "moto did not make the bucket: {body}");
        Some(moto)
    }

    /// The object's bytes.
    pub fn object(&self, object: &str) -> Option<Vec<u8>> {
        // moto answers an anonymous GET 403, and checks no signature.
        let auth = "Authorization: AWS4-HMAC-SHA256 Credential=AKIAMOTOREADER000001/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-f", "-H", auth]);
        if let Some(ca) = &self.ca {
            cmd.arg("--cacert").arg(ca);
        }
        let out = cmd
            .arg(format!("{}/{BUCKET}/{object}", self.url))
            .output()
            .unwrap();
        out.status.success().then_some(out.stdout)
    }
}
