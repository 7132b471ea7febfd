//! `secret-broker webhook` over real HTTPS: AdmissionReviews for every kind
//! patch their object into exactly the `inject` output; malformed reviews
//! are refused; TLS below 1.2 is refused; a rotated certificate is served
//! without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

use common::{BIN, Resp, parse_response};

struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Self {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A leaf for `localhost` (PEM cert, PEM key, DER cert).
    fn leaf(&self) -> (String, String, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }
}

struct Webhook {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
    pki: Pki,
}

impl Webhook {
    fn start() -> Self {
        Self::start_with_env(&[])
    }

    fn start_with_env(env: &[(&str, &str)]) -> Self {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _) = pki.leaf();
        std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), key).unwrap();
        let log = dir.path().join("stderr.log");
        let child = Command::new(BIN)
            .arg("webhook")
            .arg("--tls-cert")
            .arg(dir.path().join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.path().join("tls.key"))
            .args(["--addr", "127.0.0.1:0", "--reload-interval", "100ms"])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("listening")) {
                let v: Value = serde_json::from_str(line).unwrap();
                break v["fields"]["addr"].as_str().unwrap().to_owned();
            }
            assert!(Instant::now() < deadline, "webhook did not start: {text}");
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            child,
            addr,
            dir,
            pki,
        }
    }

    fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.pki.ca.der().clone()).unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    }

    /// One HTTPS request; returns the response and the server's leaf cert.
    fn request_with(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        method: &str,
        path: &str,
        body: &[u8],
    ) -> (Resp, CertificateDer<'static>, rustls::ProtocolVersion) {
        let conn = rustls::ClientConnection::new(
            self.client_config(versions),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let tcp = TcpStream::connect(&self.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        tls.write_all(head.as_bytes()).unwrap();
        tls.write_all(body).unwrap();
        let mut out = Vec::new();
        // The server closes after the response (connection: close).
        let _ = tls.read_to_end(&mut out);
        let cert = tls.conn.peer_certificates().unwrap()[0]
            .clone()
            .into_owned();
        let version = tls.conn.protocol_version().unwrap();
        (parse_response(&out), cert, version)
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> Resp {
        self.request_with(&[&rustls::version::TLS13], method, path, body)
            .0
    }

    fn review(&self, review: &Value) -> (u16, Value) {
        let r = self.request("POST", "/mutate", review.to_string().as_bytes());
        (r.status, r.json())
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fixture(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/inject")
        .join(name);
    serde_yaml_ng::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn admission_review(uid: &str, object: &Value) -> Value {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": { "group": group, "version": version, "kind": object["kind"] },
            "resource": { "group": group, "version": version, "resource": "x" },
            "namespace": "tasks",
            "operation": "CREATE",
            "userInfo": { "username": "test" },
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": { "apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions" },
        }
    })
}

#[test]
fn every_kind_is_patched_into_the_inject_output() {
    let w = Webhook::start();
    for case in [
        "pod",
        "deployment",
        "statefulset",
        "daemonset",
        "job",
        "cronjob",
        "list",
        "external-job",
        "external-deployment",
    ] {
        let input = fixture(&format!("{case}.in.yaml"));
        let expected = fixture(&format!("{case}.out.yaml"));
        let uid = format!("uid-{case}");
        let (status, review) = w.review(&admission_review(&uid, &input));
        assert_eq!(status, 200, "{case}: {review}");
        let resp = &review["response"];
        assert_eq!(review["kind"], "AdmissionReview");
        assert_eq!(resp["uid"], uid.as_str());
        assert_eq!(resp["allowed"], true, "{case}: {review}");
        assert_eq!(resp["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(resp["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let mut patched = input.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(patched, expected, "{case}: patched object != inject output");

        // An already-injected object is allowed with no patch.
        let (_, review) = w.review(&admission_review("again", &expected));
        assert_eq!(review["response"]["allowed"], true);
        assert!(
            review["response"].get("patch").is_none(),
            "{case}: {review}"
        );
    }
    // Unannotated objects pass with no patch.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    let (status, review) = w.review(&admission_review("cm", &cm));
    assert_eq!(
        (status, &review["response"]["allowed"]),
        (200, &json!(true))
    );
    assert!(review["response"].get("patch").is_none());
}

#[test]
fn malformed_reviews_are_refused_with_the_reason() {
    let w = Webhook::start();
    let refused = |status: u16, review: &Value, want: &str| {
        assert_eq!(review["response"]["allowed"], false, "{review}");
        let msg = review["response"]["status"]["message"].as_str().unwrap();
        assert!(msg.contains(want), "`{want}` not in `{msg}` ({status})");
    };
    let r = w.request("POST", "/mutate", b"{not json");
    assert_eq!(r.status, 400);
    refused(r.status, &r.json(), "not JSON");

    let (s, review) = w.review(&json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "u"}}));
    assert_eq!(s, 400);
    refused(s, &review, "admission.k8s.io/v1");

    let (s, review) =
        w.review(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}));
    refused(s, &review, "no `request`");

    let (s, review) = w.review(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u", "operation": "CREATE"}}));
    refused(s, &review, "`request.object` is missing");

    // A well-formed review of a badly annotated pod: 200, refused, with why.
    let mut pod = fixture("pod.in.yaml");
    pod["metadata"]["annotations"]["secret-broker.io/role"] = json!("platform");
    let (s, review) = w.review(&admission_review("bad-pod", &pod));
    assert_eq!(s, 200);
    assert_eq!(review["response"]["uid"], "bad-pod");
    refused(s, &review, "only a task has a scope");

    // A pod whose containers share process namespaces: refused, with why
    // and the opt-in.
    for field in ["shareProcessNamespace", "hostPID"] {
        let mut pod = fixture("pod.in.yaml");
        pod["spec"][field] = json!(true);
        let (s, review) = w.review(&admission_review("shared", &pod));
        assert_eq!(s, 200);
        refused(s, &review, &format!("`spec.{field}`: must not be true"));
        refused(
            s,
            &review,
            "secret-broker.io/allow-shared-process-namespace",
        );
    }

    let r = w.request("GET", "/healthz", b"");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert_eq!(w.request("GET", "/mutate", b"").status, 405);
    assert_eq!(w.request("GET", "/nope", b"").status, 404);
}

#[test]
fn tls_1_2_is_accepted_and_older_versions_are_refused() {
    let w = Webhook::start();
    let (r, _, v) = w.request_with(&[&rustls::version::TLS12], "GET", "/healthz", b"");
    assert_eq!((r.status, v), (200, rustls::ProtocolVersion::TLSv1_2));
    let (_, _, v) = w.request_with(&[&rustls::version::TLS13], "GET", "/healthz", b"");
    assert_eq!(v, rustls::ProtocolVersion::TLSv1_3);

    // rustls cannot speak TLS 1.1, so send a real TLS 1.1 ClientHello by
    // hand (legacy suites, no supported_versions extension) and read the
    // server's answer: a fatal protocol_version alert.
    for (version, name) in [([3u8, 2u8], "1.1"), ([3, 1], "1.0")] {
        let mut hello = vec![version[0], version[1]];
        hello.extend([0x42; 32]); // random
        hello.push(0); // session id
        // Suites the server has for TLS 1.2 (so only the version is wrong),
        // plus a legacy one.
        hello.extend([0, 6, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x13]);
        hello.extend([1, 0]); // null compression
        let extensions: &[u8] = &[
            0x00, 0x0a, 0, 6, 0, 4, 0x00, 0x1d, 0x00, 0x17, // groups: x25519, P-256
            0x00, 0x0b, 0, 2, 1, 0, // point formats: uncompressed
            0x00, 0x0d, 0, 8, 0, 6, 0x04, 0x03, 0x08, 0x04, 0x04,
            0x01, // signature algorithms
        ];
        hello.extend([0, extensions.len() as u8]);
        hello.extend(extensions);
        let mut hs = vec![1, 0, 0, hello.len() as u8];
        hs.extend(hello);
        let mut record = vec![0x16, 3, 1, 0, hs.len() as u8];
        record.extend(hs);
        let mut tcp = TcpStream::connect(&w.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.write_all(&record).unwrap();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer);
        assert!(answer.len() >= 7, "TLS {name}: no answer");
        assert_eq!(
            answer[0], 0x15,
            "TLS {name}: expected an alert, got {answer:02x?}"
        );
        assert_eq!(
            &answer[5..7],
            &[2, 70],
            "TLS {name}: expected fatal protocol_version"
        );
    }

    // And a stock client limited to TLS 1.1, where the local OpenSSL has one.
    let openssl = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &w.addr,
            "-tls1_1",
            "-servername",
            "localhost",
        ])
        .stdin(Stdio::null())
        .output();
    if let Ok(out) = openssl {
        assert!(!out.status.success(), "openssl -tls1_1 connected");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("BEGIN CERTIFICATE"),
            "a TLS 1.1 handshake completed"
        );
    }
}

#[test]
fn a_rotated_certificate_is_served_without_a_restart() {
    let w = Webhook::start();
    let (_, first, _) = w.request_with(&[&rustls::version::TLS13], "GET", "/healthz", b"");
    let (cert, key, der) = w.pki.leaf();
    let dir: PathBuf = w.dir.path().to_owned();
    // As a Secret volume does: both files replaced.
    std::fs::write(dir.join("tls.key.new"), key).unwrap();
    std::fs::write(dir.join("tls.crt.new"), cert).unwrap();
    std::fs::rename(dir.join("tls.key.new"), dir.join("tls.key")).unwrap();
    std::fs::rename(dir.join("tls.crt.new"), dir.join("tls.crt")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (r, now, _) = w.request_with(&[&rustls::version::TLS13], "GET", "/healthz", b"");
        assert_eq!(r.status, 200);
        if now == der {
            assert_ne!(now, first);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A broken pair is ignored: the last good certificate stays in force.
    std::fs::write(dir.join("tls.crt"), "not a certificate").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let (r, now, _) = w.request_with(&[&rustls::version::TLS13], "GET", "/healthz", b"");
    assert_eq!((r.status, now), (200, der));
}

#[test]
fn unusable_certificates_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c"), "nope").unwrap();
    std::fs::write(dir.path().join("k"), "nope").unwrap();
    let out = Command::new(BIN)
        .arg("webhook")
        .arg("--tls-cert")
        .arg(dir.path().join("c"))
        .arg("--tls-key")
        .arg(dir.path().join("k"))
        .args(["--addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: tls:"), "{stderr}");
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A JSON list of `n` zeros: two bytes of text per value.
fn zeros(n: usize) -> String {
    let mut s = String::with_capacity(2 * n + 2);
    s.push('[');
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push('0');
    }
    s.push(']');
    s
}

fn review_with_object(object: &str) -> String {
    format!(
        r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{{"uid":"mem","operation":"CREATE","object":{object}}}}}"#
    )
}

#[test]
fn large_bodies_are_refused_without_building_them_and_memory_stays_bounded() {
    let w = Webhook::start();
    let pid = w.child.id();
    assert_eq!(w.request("GET", "/healthz", b"").status, 200);
    let (before, _) = memory_kib(pid);
    // Just under the 3 MiB cap: a bare list (the envelope's first field is
    // the wrong type), and a list inside an annotated pod (over the node
    // limit), each sent by several clients at once, three times over.
    let near_cap = 3 * 1024 * 1024 / 2 - 64;
    let bare = zeros(near_cap);
    let in_pod = review_with_object(&format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"annotations":{{"secret-broker.io/inject":"true"}}}},"spec":{{"x":{}}}}}"#,
        zeros(near_cap - 200)
    ));
    // And the largest object that is built: an injected pod just under the
    // node limit (its tree, the injected copy and the patch).
    let mut pod = fixture("pod.in.yaml");
    pod["spec"]["x"] = serde_json::from_str(&zeros(99_000)).unwrap();
    let largest_built = admission_review("big", &pod).to_string();
    let mut rounds = Vec::new();
    for _ in 0..3 {
        rounds.push(std::thread::scope(|s| {
            let threads: Vec<_> = [&bare, &bare, &in_pod, &in_pod, &largest_built]
                .into_iter()
                .map(|body| {
                    let w = &w;
                    s.spawn(move || w.request("POST", "/mutate", body.as_bytes()))
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect::<Vec<Resp>>()
        }));
    }
    let (after, peak) = memory_kib(pid);
    eprintln!("webhook VmRSS {before} KiB before, {after} KiB after, VmHWM {peak} KiB");
    // Before the fix one bare list of 4 MiB alone took the webhook from 25
    // to 180 MB. Now the peak stays well within the pod's 128Mi limit.
    assert!(
        peak < before + 64 * 1024,
        "peak {peak} KiB, from {before} KiB before"
    );
    for answers in rounds {
        for r in &answers[..4] {
            assert_eq!(r.status, 400, "{}", r.text());
            assert_eq!(r.json()["response"]["allowed"], false);
        }
        let msg = answers[0].json()["response"]["status"]["message"].to_string();
        assert!(msg.contains("not an AdmissionReview"), "{msg}");
        let msg = answers[2].json()["response"]["status"]["message"].to_string();
        assert!(msg.contains("JSON values"), "{msg}");
        assert_eq!(answers[4].status, 200, "{}", answers[4].text());
        assert_eq!(answers[4].json()["response"]["allowed"], true);
    }
    // Over the cap: refused from the declared length, nothing read.
    let config = w.client_config(&[&rustls::version::TLS13]);
    let mut tls = connect(&w, &config).unwrap();
    tls.write_all(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 4194304\r\n\r\n")
        .unwrap();
    let out = read_until_closed(&mut tls, Duration::from_secs(15)).unwrap();
    let r = parse_response(&out);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("larger than 3 MiB"), "{}", r.text());
}

fn connect(
    w: &Webhook,
    config: &Arc<rustls::ClientConfig>,
) -> Option<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let conn = rustls::ClientConnection::new(
        Arc::clone(config),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(&w.addr).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    Some(rustls::StreamOwned::new(conn, tcp))
}

/// A connection that completed its handshake and sent a request head and
/// the start of a body, then stalls.
fn slow_body(
    w: &Webhook,
    config: &Arc<rustls::ClientConfig>,
) -> Option<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let mut tls = connect(w, config)?;
    tls.write_all(
        b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"apiVersion\":",
    )
    .ok()?;
    // Writing completes the handshake first; a refused one fails here.
    tls.flush().ok()?;
    Some(tls)
}

/// Reads until the server closes (or `within` passes); the bytes read.
fn read_until_closed(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    within: Duration,
) -> Option<Vec<u8>> {
    tls.sock.set_read_timeout(Some(within)).unwrap();
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => Some(out),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        // Reset or a TLS close without notify: closed all the same.
        Err(_) => Some(out),
    }
}

#[test]
fn slow_clients_do_not_keep_a_review_out() {
    let w = Webhook::start();
    let config = w.client_config(&[&rustls::version::TLS13]);
    // More stalled bodies than the webhook has connection slots (128; and
    // more than the 256 it used to queue behind).
    let mut slow = Vec::new();
    for _ in 0..300 {
        if let Some(s) = slow_body(&w, &config) {
            slow.push(s);
        }
    }
    // A stalled handshake, too.
    let silent = TcpStream::connect(&w.addr).unwrap();

    // A real review is answered at once: the longest-stalled connection
    // gives up its slot.
    let pod = fixture("pod.in.yaml");
    let (status, review) = w.review(&admission_review("real", &pod));
    assert_eq!(status, 200, "{review}");
    assert_eq!(review["response"]["allowed"], true);
    assert!(review["response"].get("patch").is_some());

    // The oldest stalled connections were closed to make room...
    let first = read_until_closed(&mut slow[0], Duration::from_secs(10));
    assert!(
        first.is_some(),
        "the oldest stalled connection is still open"
    );
    // ...and the newest, still open, is answered 408 when its body times
    // out, then closed.
    let last = slow.last_mut().unwrap();
    let out = read_until_closed(last, Duration::from_secs(60)).expect("never closed");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not arrive within"), "{text}");
    // The stalled handshake is closed too.
    silent
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0u8; 16];
    let n = (&silent).read(&mut buf);
    assert!(
        matches!(n, Ok(0))
            || n.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{n:?}"
    );
}

/// `$SECRET_BROKER_IMAGE` (as `--image`) is the image of pods that set
/// none, and what `inject` warns about comes back as the review's
/// `warnings`.
#[test]
fn the_default_image_and_warnings_reach_the_api_server() {
    let w = Webhook::start_with_env(&[("SECRET_BROKER_IMAGE", "mirror.local/sb:9")]);
    let job = r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"t"},"spec":{"template":{"metadata":{"annotations":{"secret-broker.io/inject":"true","secret-broker.io/role":"task","secret-broker.io/scope":"acme/t","secret-broker.io/store-secret":"s"}},"spec":{"containers":[{"name":"m","image":"i"}]}}}}"#;
    let review: Value = serde_json::from_str(&review_with_object(job)).unwrap();
    let (status, v) = w.review(&review);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["response"]["allowed"], true, "{v}");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(v["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch = String::from_utf8(patch).unwrap();
    assert!(patch.contains("\"mirror.local/sb:9\""), "{patch}");
    assert!(!patch.contains("ghcr.io"), "{patch}");
    let warnings = v["response"]["warnings"].to_string();
    assert!(warnings.contains("store is `embedded`"), "{v}");
    assert!(warnings.contains("injection sets runAsUser 10001"), "{v}");
}
