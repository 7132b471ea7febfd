//! `secret-broker upload` end to end, with the real binary against real S3
//! servers on loopback: the bytes arrive byte-exact from a file and from
//! stdin (s3rver, which checks the signature); with `encrypt_to` the bucket
//! holds age ciphertext that Debian's `age -d` turns back into the file;
//! create-only is enforced by the bucket (moto answers a second `PUT` with
//! `412`); an expired URL, a bucket's `403`, another status and an
//! unreachable bucket are clear errors with their documented exit codes;
//! a refused mint exits with the contract's code; and nothing of the URL
//! reaches any output of the CLI or the broker, at `RUST_LOG=trace`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

#[path = "common/servers.rs"]
mod servers;

#[path = "common/proxy.rs"]
mod proxy;

#[path = "common/buckets.rs"]
mod buckets;

use std::process::Output;

use buckets::{BUCKET, Moto, S3rver, uploads_broker};
use common::{Broker, PLATFORM_TOKEN, TASK_TOKEN};

const TASK: (&str, &str) = ("SECRET_BROKER_TOKEN", TASK_TOKEN);
const TRACE: (&str, &str) = ("RUST_LOG", "trace");

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

/// Bytes that are not text and not a repeated pattern.
fn output_bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[1]
        })
        .collect()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// SECURITY: what of a signed URL could show up in a text. `endpoint`'s
/// bucket path is the start of every URL the broker mints.
fn assert_no_url(name: &str, text: &str, endpoint: &str) {
    for canary in [
        "X-Amz-Signature",
        "X-Amz-Credential",
        "X-Amz-Date",
        "Signature=",
        &format!("{endpoint}/{BUCKET}"),
        &format!("/{BUCKET}/tenant-a/"),
    ] {
        assert!(!text.contains(canary), "{name} holds `{canary}`:\n{text}");
    }
}

/// The mint answers the broker gave (status 201), from its audit file.
fn minted(b: &Broker) -> Vec<serde_json::Value> {
    b.audit_lines()
        .into_iter()
        .filter(|l| l["action"] == "upload" && l["status"] == 201)
        .collect()
}

#[test]
fn uploads_from_a_file_and_stdin_arrive_byte_exact_and_nothing_of_the_url_leaks() {
    let Some(s3) = S3rver::start() else { return };
    let b = uploads_broker(&s3.url, "us-east-1", S3rver::CREDENTIAL, "5m", "");
    let dir = tempfile::tempdir().unwrap();
    // Over several of the client's 64 KiB frames, and not a multiple of one.
    let data = output_bytes(300_001, 1);
    let file = dir.path().join("out.tar");
    std::fs::write(&file, &data).unwrap();
    let sum = sha256_hex(&data);

    let o = b.cli(
        &[
            "upload",
            "acme/tasks/t-42/out.tar",
            "--from-file",
            file.to_str().unwrap(),
            "--content-type",
            "application/x-tar",
        ],
        &[TASK, TRACE],
        None,
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert_eq!(
        out,
        format!(
            "uploaded acme/tasks/t-42/out.tar to tenant-a/acme/tasks/t-42/out.tar: 300001 bytes, sha256 {sum}\n"
        )
    );
    // Not a terminal: no progress bar, nothing on stderr at all.
    assert_eq!(err, "");
    assert_eq!(
        s3.object("tenant-a/acme/tasks/t-42/out.tar").as_deref(),
        Some(data.as_slice())
    );
    // Two asks: the probe that learns the recipient (the size, no
    // checksum; its URL unused), then the URL for exactly these bytes.
    let m = minted(&b);
    assert_eq!(m.len(), 2);
    assert_eq!(m[0]["upload"]["size"], 300_001);
    assert!(m[0]["upload"]["sha256"].is_null(), "{}", m[0]);
    assert_eq!(m[1]["upload"]["size"], 300_001);
    assert_eq!(m[1]["upload"]["sha256"], sum.as_str());

    // Standard input, with --json: the object, size and SHA-256, no URL.
    let piped = output_bytes(70_000, 2);
    let o = b.cli(
        &[
            "upload",
            "acme/tasks/t-42/logs/stdin.bin",
            "--stdin",
            "--json",
        ],
        &[TASK, TRACE],
        Some(&piped),
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        j,
        serde_json::json!({
            "path": "acme/tasks/t-42/logs/stdin.bin",
            "object": "tenant-a/acme/tasks/t-42/logs/stdin.bin",
            "size": 70_000,
            "sha256": sha256_hex(&piped),
            "recipient": null,
        })
    );
    assert_eq!(
        s3.object("tenant-a/acme/tasks/t-42/logs/stdin.bin")
            .as_deref(),
        Some(piped.as_slice())
    );
    // An empty output is an output too.
    let o = b.cli(
        &["upload", "acme/tasks/t-42/empty", "--stdin"],
        &[TASK, TRACE],
        Some(b""),
    );
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(
        s3.object("tenant-a/acme/tasks/t-42/empty").as_deref(),
        Some(&b""[..])
    );

    // SECURITY: the broker's own output (at trace level: it did log) and
    // its audit file hold nothing of the URLs it minted.
    let stderr = b.stderr_text();
    assert!(stderr.contains("\"level\":\"TRACE\""), "{stderr}");
    assert_no_url("the broker's stderr", &stderr, &s3.url);
    assert_no_url("the audit file", &b.audit_text(), &s3.url);
}

/// On a terminal (a pty from util-linux's `script`), a progress bar is
/// drawn on stderr; it never shows the URL. (Piped, nothing is drawn: the
/// first test asserts an empty stderr.)
#[test]
fn a_terminal_gets_a_progress_bar() {
    let Some(s3) = S3rver::start() else { return };
    let b = uploads_broker(&s3.url, "us-east-1", S3rver::CREDENTIAL, "5m", "");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big");
    let data = output_bytes(4 << 20, 6);
    std::fs::write(&file, &data).unwrap();
    let command = format!(
        "{} upload acme/tasks/t-42/tty --from-file {}",
        common::BIN,
        file.display()
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("SECRET_BROKER_SOCKET", &b.socket)
        .env("SECRET_BROKER_TOKEN", TASK_TOKEN)
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains("uploading"),
        "no progress bar on a terminal: {out:?}"
    );
    assert!(out.contains("uploaded acme/tasks/t-42/tty to "), "{out:?}");
    assert_no_url("the terminal", &out, &s3.url);
    assert!(s3.holds(&data));
}

/// A process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The body is streamed from the file: a 48 MiB upload makes the client's
/// peak resident set grow by far less than that over a 1 KiB one. A proxy
/// in front of s3rver holds each request once it has the whole body, so
/// the client's peak is read while it is alive and has sent everything.
#[test]
fn a_large_file_is_streamed_not_held_in_memory() {
    use std::sync::Mutex;
    use std::sync::mpsc;
    let Some(s3) = S3rver::start() else { return };
    let front = proxy::Proxy::start(&s3.url);
    let b = uploads_broker(&front.url, "us-east-1", S3rver::CREDENTIAL, "5m", "");
    let (got_tx, got_rx) = mpsc::channel::<usize>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (got_tx, go_rx) = (Mutex::new(got_tx), Mutex::new(go_rx));
    front.set(move |req| {
        got_tx.lock().unwrap().send(req.body.len()).unwrap();
        go_rx.lock().unwrap().recv().unwrap();
        proxy::Answer::Forward
    });
    let dir = tempfile::tempdir().unwrap();
    let peak_for = |name: &str, data: &[u8]| {
        let file = dir.path().join(name);
        std::fs::write(&file, data).unwrap();
        let mut child = std::process::Command::new(common::BIN)
            .args(["upload", &format!("acme/tasks/t-42/{name}"), "--from-file"])
            .arg(&file)
            .env("SECRET_BROKER_SOCKET", &b.socket)
            .env("SECRET_BROKER_TOKEN", TASK_TOKEN)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let received = got_rx
            .recv_timeout(std::time::Duration::from_secs(300))
            .unwrap();
        assert_eq!(received, data.len());
        let peak = peak_rss_kib(child.id());
        go_tx.send(()).unwrap();
        assert!(child.wait().unwrap().success());
        assert!(s3.holds(data));
        peak
    };
    let small = peak_for("small", &output_bytes(1024, 3));
    let big = peak_for("big", &output_bytes(48 << 20, 3));
    assert!(
        big < small + 8 * 1024,
        "the client's peak RSS was {big} KiB for a 48 MiB upload, {small} KiB for 1 KiB"
    );
}

/// Debian's `age` (and `age-keygen`), or a loud skip; a failure under CI.
fn debian_age() -> bool {
    let ok = std::process::Command::new("age")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("\n*** SKIPPED upload encryption: `age` is missing; apt-get install age ***\n");
        assert!(
            std::env::var_os("CI").is_none(),
            "age is missing and CI is set (scripts/test installs it)"
        );
    }
    ok
}

#[test]
fn with_encrypt_to_the_bucket_holds_ciphertext_that_age_decrypts() {
    if !debian_age() {
        return;
    }
    let Some(s3) = S3rver::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    let o = std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let o = std::process::Command::new("age-keygen")
        .arg("-y")
        .arg(&key)
        .output()
        .unwrap();
    let recipient = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    assert!(recipient.starts_with("age1"), "{recipient}");
    let b = uploads_broker(
        &s3.url,
        "us-east-1",
        S3rver::CREDENTIAL,
        "5m",
        &format!("encrypt_to = \"{recipient}\""),
    );
    let data = output_bytes(200_000, 4);
    let file = dir.path().join("result.bin");
    std::fs::write(&file, &data).unwrap();

    let o = b.cli(
        &[
            "upload",
            "acme/tasks/t-42/result.bin",
            "--from-file",
            file.to_str().unwrap(),
        ],
        &[TASK, TRACE],
        None,
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let stored = s3.object("tenant-a/acme/tasks/t-42/result.bin").unwrap();
    assert!(stored.starts_with(b"age-encryption.org/v1\n-> X25519 "));
    assert!(!s3.holds(&data), "the plaintext is not in the bucket");
    // What is reported, and what the URL was minted for, is the ciphertext.
    assert_eq!(
        out,
        format!(
            "uploaded acme/tasks/t-42/result.bin to tenant-a/acme/tasks/t-42/result.bin: {} bytes, sha256 {} (age-encrypted to {recipient})\n",
            stored.len(),
            sha256_hex(&stored)
        )
    );
    let m = minted(&b);
    let last = &m.last().unwrap()["upload"];
    assert_eq!(last["size"], stored.len());
    assert_eq!(last["sha256"], sha256_hex(&stored).as_str());
    // SECURITY: no audit line (the probe's included) holds the plaintext's
    // SHA-256: a platform reading the audit cannot confirm a guessed output.
    let plain_sum = sha256_hex(&data);
    assert!(
        b.audit_lines()
            .iter()
            .all(|l| !l.to_string().contains(&plain_sum)),
        "the plaintext's sha256 is in the audit"
    );
    // Debian's age gives the file back.
    let enc = dir.path().join("stored.age");
    std::fs::write(&enc, &stored).unwrap();
    let o = std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&key)
        .arg(&enc)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(o.stdout == data, "age -d did not give the file back");

    // From stdin too.
    let piped = output_bytes(1_000, 5);
    let o = b.cli(
        &["upload", "acme/tasks/t-42/piped.bin", "--stdin", "--json"],
        &[TASK, TRACE],
        Some(&piped),
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["recipient"], recipient.as_str());
    let stored = s3.object("tenant-a/acme/tasks/t-42/piped.bin").unwrap();
    std::fs::write(&enc, &stored).unwrap();
    let o = std::process::Command::new("age")
        .args(["-d", "-i"])
        .arg(&key)
        .arg(&enc)
        .output()
        .unwrap();
    assert!(o.status.success() && o.stdout == piped, "{o:?}");
    assert_no_url("the broker's stderr", &b.stderr_text(), &s3.url);
}

/// Create-only is the bucket's to enforce: moto 5.2.5 refuses a `PUT` with
/// `If-None-Match: *` over an existing object with `412` (s3rver ignores
/// the header, so it could not fail this test).
#[test]
fn a_second_upload_to_the_same_object_is_refused_by_the_bucket() {
    let test = "upload_cli::create_only";
    let Some(moto) = Moto::start(test) else {
        return;
    };
    let b = uploads_broker(
        &moto.url,
        "us-east-1",
        ("AKIAMOTOUPLOADTEST01", "moto-secret", None),
        "5m",
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    std::fs::write(&first, b"the first output").unwrap();
    std::fs::write(&second, b"a later overwrite").unwrap();
    let upload = |path: &str, file: &std::path::Path, json: bool| {
        let mut args = vec!["upload", path, "--from-file", file.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        b.cli(&args, &[TASK, TRACE], None)
    };

    // The same URL with the same headers, twice: the bucket takes the
    // first `PUT` and refuses the second.
    let sum = sha256_hex(b"the first output");
    let auth = format!("Bearer {TASK_TOKEN}");
    let r = b
        .try_request(
            "POST",
            "/v1/uploads/acme/tasks/t-42/twice",
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            Some(format!(r#"{{"size": 16, "sha256": "{sum}"}}"#).as_bytes()),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let j = r.json();
    let mut args: Vec<String> = vec!["-X".into(), "PUT".into()];
    for (k, v) in j["headers"].as_object().unwrap() {
        args.push("-H".into());
        args.push(format!("{k}: {}", v.as_str().unwrap()));
    }
    args.push("--data-binary".into());
    args.push(format!("@{}", first.display()));
    args.push(j["url"].as_str().unwrap().to_owned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(servers::curl(&refs).0, 200);
    assert_eq!(servers::curl(&refs).0, 412, "the same URL a second time");

    // The CLI: the first upload lands, the second is refused with exit 6
    // and a message that says why, and the object keeps its first bytes.
    let o = upload("acme/tasks/t-42/out.txt", &first, false);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = upload("acme/tasks/t-42/out.txt", &second, false);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(6), "{out}{err}");
    assert_eq!(out, "");
    assert!(
        err.contains("an object already exists at `tenant-a/acme/tasks/t-42/out.txt`")
            && err.contains("create-only"),
        "{err}"
    );
    assert_no_url("the CLI's stderr", &err, &moto.url);
    let o = upload("acme/tasks/t-42/out.txt", &second, true);
    assert_eq!(o.status.code(), Some(6));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["error"]["code"], "object_exists");
    assert!(j["error"]["request_id"].is_null());
    assert_eq!(
        moto.object("tenant-a/acme/tasks/t-42/out.txt").as_deref(),
        Some(&b"the first output"[..])
    );
    assert_no_url("the broker's stderr", &b.stderr_text(), &moto.url);
}

/// A CA and a server certificate for 127.0.0.1, as PEM files in `dir`.
fn tls_files(dir: &std::path::Path) -> buckets::TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "upload test ca");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let files = buckets::TlsFiles {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        ca: dir.join("ca.crt"),
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    std::fs::write(&files.ca, ca.pem()).unwrap();
    files
}

/// An `https` bucket: verified against the machine's CA store, which
/// `$SSL_CERT_FILE` replaces; without the bucket's CA there, the handshake
/// fails with a clear error (exit 69) and nothing is stored.
#[test]
fn an_https_bucket_is_verified_against_the_ca_store() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_files(dir.path());
    let Some(moto) = Moto::start_tls("upload_cli::https", &tls) else {
        return;
    };
    let b = uploads_broker(
        &moto.url,
        "us-east-1",
        ("AKIAMOTOUPLOADTEST01", "moto-secret", None),
        "5m",
        "",
    );
    let file = dir.path().join("out");
    std::fs::write(&file, b"output over https").unwrap();
    let f = file.to_str().unwrap();
    let ca = tls.ca.to_str().unwrap();

    // Not trusted (the machine's own roots only): refused, saying why.
    let o = b.cli(
        &["upload", "acme/tasks/t-42/tls", "--from-file", f, "--json"],
        &[TASK, TRACE],
        None,
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(69), "{out}{err}");
    assert!(out.contains("\"bucket_tls_failed\""), "{out}");
    assert!(err.contains("tls with the bucket at `127.0.0.1:"), "{err}");
    assert_no_url("the CLI's stderr", &err, &moto.url);
    assert_eq!(moto.object("tenant-a/acme/tasks/t-42/tls"), None);

    // Trusted through $SSL_CERT_FILE: uploaded.
    let o = b.cli(
        &["upload", "acme/tasks/t-42/tls", "--from-file", f],
        &[TASK, TRACE, ("SSL_CERT_FILE", ca)],
        None,
    );
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(
        moto.object("tenant-a/acme/tasks/t-42/tls").as_deref(),
        Some(&b"output over https"[..])
    );
}

/// The bucket's refusals, each with its exit code and `--json` code, and
/// none quoting the URL: an expired URL (s3rver checks the expiry; a proxy
/// holds the request until the URL has expired), another `403`, another
/// status, and a bucket that cannot be reached.
#[test]
fn bucket_refusals_are_clear_errors_with_their_exit_codes() {
    let Some(s3) = S3rver::start() else { return };
    let front = proxy::Proxy::start(&s3.url);
    // URLs that live 1s, for the expiry; 5m for the rest, so that a slow
    // machine cannot turn their refusals into expiries.
    let short = uploads_broker(&front.url, "us-east-1", S3rver::CREDENTIAL, "1s", "");
    let long = uploads_broker(&front.url, "us-east-1", S3rver::CREDENTIAL, "5m", "");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("late");
    std::fs::write(&file, b"uploaded too late").unwrap();
    let upload = |b: &Broker, path: &str| {
        b.cli(
            &[
                "upload",
                path,
                "--from-file",
                file.to_str().unwrap(),
                "--json",
            ],
            &[TASK, TRACE],
            None,
        )
    };
    let check = |o: &Output, exit: i32, code: &str, needle: &str| {
        let (out, err) = text(o);
        assert_eq!(o.status.code(), Some(exit), "{out}{err}");
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(j["error"]["code"], code, "{out}");
        assert!(err.contains(needle), "{err}");
        assert_no_url("the CLI's stdout", &out, &front.url);
        assert_no_url("the CLI's stderr", &err, &front.url);
    };

    // Held until past the URL's expiry (its X-Amz-Date plus X-Amz-Expires,
    // and a second for the server's clock), then passed on: s3rver says
    // the request has expired.
    front.set(|req| {
        let q: std::collections::BTreeMap<String, String> =
            url::Url::parse(&format!("http://x{}", req.target))
                .unwrap()
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        let d = &q["X-Amz-Date"];
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
        let until = signed_at
            + jiff::SignedDuration::from_secs(q["X-Amz-Expires"].parse::<i64>().unwrap() + 1);
        while jiff::Timestamp::now() <= until {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        proxy::Answer::Forward
    });
    let o = upload(&short, "acme/tasks/t-42/late");
    check(&o, 7, "url_expired", "the upload url expired");
    assert!(!s3.holds(b"uploaded too late"));

    // Another 403 (the proxy's own), another status, no bucket at all.
    front.set(|_| proxy::Answer::Refuse(403));
    let o = upload(&long, "acme/tasks/t-42/denied");
    check(
        &o,
        7,
        "bucket_forbidden",
        "the bucket refused the upload (403)",
    );
    front.set(|_| proxy::Answer::Refuse(503));
    let o = upload(&long, "acme/tasks/t-42/down");
    check(&o, 1, "bucket_error", "the bucket answered 503");
    drop(front);
    let nobody = format!("http://127.0.0.1:{}", servers::free_port());
    let b = uploads_broker(&nobody, "us-east-1", S3rver::CREDENTIAL, "5m", "");
    let o = b.cli(
        &[
            "upload",
            "acme/tasks/t-42/x",
            "--from-file",
            file.to_str().unwrap(),
            "--json",
        ],
        &[TASK],
        None,
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(69), "{out}{err}");
    assert!(
        err.contains("cannot reach the bucket at `127.0.0.1:"),
        "{err}"
    );
    assert!(out.contains("\"bucket_unreachable\""), "{out}");
    assert_no_url("the CLI's stderr", &err, &nobody);
}

/// A bucket that stops reading, or never answers once everything is sent,
/// is given up on after `--idle-timeout` (exit 69, `bucket_stalled`)
/// instead of hanging the task. The "bucket" is a listener that never
/// accepts: the kernel takes the first bytes, then nothing moves. Bounded
/// by `timeout`, so the old code (which waited forever) fails, not hangs.
#[test]
fn a_stalled_bucket_is_given_up_on_after_the_idle_timeout() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", dead.local_addr().unwrap().port());
    let b = uploads_broker(&url, "us-east-1", S3rver::CREDENTIAL, "5m", "");
    let dir = tempfile::tempdir().unwrap();
    // Small: all of it fits in the socket buffers, then no answer comes.
    // Large: the writes block once the buffers are full.
    for (name, size) in [("small", 1_000usize), ("large", 32 << 20)] {
        let file = dir.path().join(name);
        std::fs::write(&file, output_bytes(size, 9)).unwrap();
        let o = std::process::Command::new("timeout")
            .args(["60", common::BIN, "upload"])
            .arg(format!("acme/tasks/t-42/{name}"))
            .arg("--from-file")
            .arg(&file)
            .args(["--idle-timeout", "2s", "--json"])
            .env("SECRET_BROKER_SOCKET", &b.socket)
            .env(TASK.0, TASK.1)
            .output()
            .unwrap();
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(69), "{name}: {out}{err}");
        assert!(out.contains("\"bucket_stalled\""), "{name}: {out}");
        assert!(
            err.contains("the bucket took no data and gave no answer for 2s"),
            "{name}: {err}"
        );
        assert_no_url("the CLI's stderr", &err, &url);
    }
}

/// A mint the broker refuses exits with the contract's code (and its exit
/// code), and nothing reaches the bucket.
#[test]
fn a_refused_mint_exits_with_the_contract_code_and_uploads_nothing() {
    let Some(s3) = S3rver::start() else { return };
    let b = uploads_broker(&s3.url, "us-east-1", S3rver::CREDENTIAL, "5m", "");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out");
    let data = b"output that must not land";
    std::fs::write(&file, data).unwrap();
    let f = file.to_str().unwrap();
    type Env<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&str, Env, i32, &str); 4] = [
        // The platform never mints, not even in a task's scope.
        (
            "acme/tasks/t-42/out",
            &[("SECRET_BROKER_TOKEN", PLATFORM_TOKEN)],
            4,
            "forbidden",
        ),
        // A task outside its scope.
        ("acme/tasks/t-43/out", &[TASK], 4, "forbidden"),
        // Nobody the broker knows.
        (
            "acme/tasks/t-42/out",
            &[("SECRET_BROKER_TOKEN", "not-a-token")],
            3,
            "unauthenticated",
        ),
        // Not a path.
        ("acme/tasks/../t-43/out", &[TASK], 2, "usage"),
    ];
    for (path, env, exit, code) in cases {
        let o = b.cli(&["upload", path, "--from-file", f, "--json"], env, None);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(exit), "{path}: {out}{err}");
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(j["error"]["code"], code, "{path}: {out}");
    }
    // Over `max_size` (64 MiB here): the broker's `413 too_large`, exit 1.
    let big = dir.path().join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len((64 << 20) + 1)
        .unwrap();
    let o = b.cli(
        &[
            "upload",
            "acme/tasks/t-42/big",
            "--from-file",
            big.to_str().unwrap(),
        ],
        &[TASK],
        None,
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("too_large"), "{err}");
    // Neither source, or both: usage.
    let o = b.cli(&["upload", "acme/tasks/t-42/x"], &[TASK], None);
    assert_eq!(o.status.code(), Some(2));
    let o = b.cli(
        &["upload", "acme/tasks/t-42/x", "--stdin", "--from-file", f],
        &[TASK],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    // A missing file: exit 74, before anything is asked.
    let o = b.cli(
        &[
            "upload",
            "acme/tasks/t-42/x",
            "--from-file",
            "/nonexistent/out",
        ],
        &[TASK],
        None,
    );
    assert_eq!(o.status.code(), Some(74), "{:?}", text(&o));
    assert!(!s3.holds(data));
    assert!(minted(&b).is_empty());

    // A broker without [uploads]: 404 not_found, exit 5.
    let plain = Broker::start(&common::default_principals());
    let o = plain.cli(
        &["upload", "acme/tasks/t-42/out", "--from-file", f],
        &[TASK],
        None,
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(err.contains("[uploads]"), "{err}");
}

/// `serve --dev` with `$SECRET_BROKER_DEV_S3` naming a local S3 (bucket
/// `dev-output`): the banner says where uploads go, the current user (the
/// dev Task) uploads, the platform cannot. Without the variable, the
/// banner says how to turn uploads on.
#[test]
fn dev_mode_uploads_to_the_local_s3_its_variable_names() {
    use std::io::{BufRead as _, BufReader};
    let Some(s3) = S3rver::start_with_bucket("dev-output") else {
        return;
    };
    let banner = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.args(["serve", "--dev"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut lines = Vec::new();
        let mut line = String::new();
        // Up to the banner's last block (bounded by the child's output).
        while stderr.read_line(&mut line).unwrap() > 0 {
            lines.push(std::mem::take(&mut line));
            if lines
                .iter()
                .any(|l| l.contains("serve --dev") || l.contains("platform: 403"))
            {
                break;
            }
        }
        // The reader is kept: the broker logs to stderr until it exits.
        (child, lines.concat(), stderr)
    };
    // SIGTERM: the dev broker removes its temp dir.
    let stop = |c: &mut std::process::Child| {
        std::process::Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(c.wait().unwrap().success());
    };
    let (mut off, text, _off_err) = banner(&[]);
    stop(&mut off);
    assert!(text.contains("task output uploads are off"), "{text}");
    assert!(
        text.contains("SECRET_BROKER_DEV_S3=http://127.0.0.1:9000"),
        "{text}"
    );

    let (mut dev, text, _dev_err) = banner(&[
        ("SECRET_BROKER_DEV_S3", s3.url.as_str()),
        ("AWS_ACCESS_KEY_ID", "S3RVER"),
        ("AWS_SECRET_ACCESS_KEY", "S3RVER"),
    ]);
    assert!(
        text.contains(&format!("uploads go to bucket `dev-output` at {}", s3.url)),
        "{text}"
    );
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .unwrap()
            .to_owned()
    };
    let socket = field("export SECRET_BROKER_SOCKET=");
    let token = field("export PLATFORM_TOKEN=");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.txt");
    std::fs::write(&file, b"dev output 1f3a").unwrap();
    let upload = |tok: Option<&str>| {
        let mut c = std::process::Command::new(common::BIN);
        c.args(["upload", "dev/out.txt", "--from-file"])
            .arg(&file)
            .env("SECRET_BROKER_SOCKET", &socket)
            .env_remove("SECRET_BROKER_TOKEN");
        if let Some(t) = tok {
            c.env("SECRET_BROKER_TOKEN", t);
        }
        c.output().unwrap()
    };
    let o = upload(Some(&token));
    assert_eq!(
        o.status.code(),
        Some(4),
        "the platform cannot upload: {o:?}"
    );
    assert!(s3.object("dev/out.txt").is_none());
    let o = upload(None);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        s3.object("dev/out.txt").as_deref(),
        Some(&b"dev output 1f3a"[..])
    );
    stop(&mut dev);
}
