//! Task output uploads end to end with the real binary: `POST
//! /v1/uploads/{path}` mints a signed S3 URL for a task inside its scope
//! only, the signature is recomputed independently by botocore from the
//! same credentials and clock, and the URL (a credential) never reaches the
//! audit file or the broker's own output, even at `RUST_LOG=trace`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

#[path = "common/servers.rs"]
mod servers;

/// `@20minutes/s3rver` (4.0.4, from npm), which checks SigV4 query
/// signatures, their expiry, the method and the signed headers; moto
/// accepts any presigned URL, even one with a zeroed signature, so it could
/// not fail these tests.
#[path = "common/buckets.rs"]
mod buckets;

use buckets::S3rver;
use common::{Broker, PLATFORM_TOKEN, Resp, TASK_TOKEN, default_principals};

const KEY_ID: &str = "AKIAUPLOADTESTKEY01";
const SECRET_KEY: &str = "uPl0adS3cretCANARYkeyDoNotLeak0123456789";
const SESSION_TOKEN: &str = "FQoGZXIvYXdzUPLOADSESSIONCANARY";
const ENDPOINT: &str = "http://127.0.0.1:4568";

fn start_with_uploads() -> Broker {
    start_signing_for(
        ENDPOINT,
        "eu-west-1",
        KEY_ID,
        SECRET_KEY,
        Some(SESSION_TOKEN),
        "5m",
    )
}

fn start_signing_for(
    endpoint: &str,
    region: &str,
    key_id: &str,
    secret: &str,
    token: Option<&str>,
    expiry: &str,
) -> Broker {
    buckets::uploads_broker_sized(
        endpoint,
        region,
        (key_id, secret, token),
        expiry,
        "1MiB",
        "",
    )
}

fn mint(b: &Broker, path: &str, token: &str, body: &str) -> Resp {
    b.mint_upload(path, token, body)
}

/// botocore's SigV4 query signature of the same `PUT`, with the clock set
/// to the URL's own `X-Amz-Date`: an implementation independent of the
/// broker's, fed only what the test knows (the credential, the URL without
/// its signature, and the headers the answer says to send).
fn botocore_url(url: &str, headers: &serde_json::Map<String, serde_json::Value>) -> String {
    const SCRIPT: &str = r#"
import sys, json, datetime
from unittest import mock
import botocore.auth, botocore.credentials
from botocore.awsrequest import AWSRequest
a = json.load(sys.stdin)
creds = botocore.credentials.Credentials(a["key"], a["secret"], a["token"])
req = AWSRequest(method="PUT", url=a["url"], headers=a["headers"])
now = datetime.datetime.strptime(a["date"], "%Y%m%dT%H%M%SZ")
with mock.patch("botocore.auth.get_current_datetime", return_value=now):
    botocore.auth.S3SigV4QueryAuth(creds, "s3", a["region"], expires=a["expires"]).add_auth(req)
print(req.url)
"#;
    let parsed = url::Url::parse(url).unwrap();
    let q: std::collections::BTreeMap<String, String> = parsed
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let unsigned = url.split_once('?').unwrap().0;
    let input = serde_json::json!({
        "key": KEY_ID,
        "secret": SECRET_KEY,
        "token": SESSION_TOKEN,
        "url": unsigned,
        "headers": headers,
        "region": "eu-west-1",
        "expires": q["X-Amz-Expires"].parse::<u64>().unwrap(),
        "date": q["X-Amz-Date"],
    });
    let moto = concat!(env!("CARGO_MANIFEST_DIR"), "/.backends/aws/bin/python");
    let python = std::env::var("SB_BOTOCORE_PYTHON").unwrap_or_else(|_| {
        if std::path::Path::new(moto).exists() {
            moto.to_owned()
        } else {
            "python3".to_owned()
        }
    });
    let mut child = std::process::Command::new(python)
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("a python with botocore (scripts/backends install aws) checks the signature");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "botocore failed: is it installed?");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn a_task_mints_a_signed_url_in_its_scope_only_and_it_never_leaks() {
    let b = start_with_uploads();
    let data = b"task output bytes";
    let sum = common::sha256_hex(std::str::from_utf8(data).unwrap());
    let body = format!(
        r#"{{"size": {}, "sha256": "{sum}", "content_type": "application/x-tar"}}"#,
        data.len()
    );

    // A task in its own scope: 201 with the URL and exactly what to send.
    let r = mint(&b, "acme/tasks/t-42/out.tar", TASK_TOKEN, &body);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let j = r.json();
    assert_eq!(j["path"], "acme/tasks/t-42/out.tar");
    assert_eq!(j["object"], "tenant-a/acme/tasks/t-42/out.tar");
    assert_eq!(j["method"], "PUT");
    assert!(j["recipient"].is_null());
    let url = j["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!(
            "{ENDPOINT}/task-output/tenant-a/acme/tasks/t-42/out.tar?"
        )),
        "{url}"
    );
    let headers = j["headers"].as_object().unwrap().clone();
    assert_eq!(headers["content-length"], data.len().to_string());
    assert_eq!(headers["if-none-match"], "*");
    assert_eq!(headers["content-type"], "application/x-tar");
    use base64::Engine as _;
    let sum_b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(&sum).unwrap());
    assert_eq!(headers["x-amz-checksum-sha256"], sum_b64.as_str());
    let q = servers::url_query(&url);
    assert_eq!(q["X-Amz-Expires"], "300");
    assert_eq!(q["X-Amz-Security-Token"], SESSION_TOKEN);
    assert!(q["X-Amz-Credential"].starts_with(&format!("{KEY_ID}/")));
    // Every signed header is in the signature, and `expires_at` is the
    // signing time plus the expiry.
    let signed = &q["X-Amz-SignedHeaders"];
    for h in [
        "content-length",
        "if-none-match",
        "x-amz-checksum-sha256",
        "content-type",
        "host",
    ] {
        assert!(signed.split(';').any(|s| s == h), "{h} not in {signed}");
    }
    let d = &q["X-Amz-Date"]; // 20261207T133645Z
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

    // The signature, recomputed by botocore, is the same: S3 would accept
    // this URL with these headers (and, as every header is signed, refuse
    // it with any of them changed or dropped).
    let theirs = botocore_url(&url, &headers);
    assert_eq!(
        url.split_once('?').unwrap().0,
        theirs.split_once('?').unwrap().0
    );
    assert_eq!(q, servers::url_query(&theirs));

    // Outside its scope, or its scope's parent: 403, and no URL.
    for path in ["acme/tasks/t-43/out.tar", "acme/tasks/out.tar", "other/x/y"] {
        let r = mint(&b, path, TASK_TOKEN, &body);
        assert_eq!((r.status, r.code().as_str()), (403, "forbidden"), "{path}");
        assert!(!r.text().contains("X-Amz"), "{}", r.text());
    }
    // The platform never mints, not even in the task's scope.
    let r = mint(&b, "acme/tasks/t-42/out.tar", PLATFORM_TOKEN, &body);
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));
    // Over max_size (1 MiB): 413.
    let r = mint(
        &b,
        "acme/tasks/t-42/big",
        TASK_TOKEN,
        r#"{"size": 1048577}"#,
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (413, "too_large"),
        "{}",
        r.text()
    );
    let r = mint(
        &b,
        "acme/tasks/t-42/max",
        TASK_TOKEN,
        r#"{"size": 1048576}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // Bad paths, bodies and methods.
    for path in [
        "acme/tasks/t-42/",
        "acme//t-42/x",
        "acme/tasks/../t-43/x",
        "acme/%2e%2e/x",
    ] {
        let r = mint(&b, path, TASK_TOKEN, &body);
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_path"),
            "{path}"
        );
    }
    let r = mint(
        &b,
        "acme/tasks/t-42/x",
        TASK_TOKEN,
        r#"{"size": "CANARY-size"}"#,
    );
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_body"));
    assert!(
        r.text().contains("`size`") && !r.text().contains("CANARY"),
        "{}",
        r.text()
    );
    let r = b.req(
        "GET",
        "/v1/uploads/acme/tasks/t-42/x",
        Some(TASK_TOKEN),
        None,
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    // No token at all: 401.
    let r = b
        .try_request(
            "POST",
            "/v1/uploads/acme/tasks/t-42/x",
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
        )
        .unwrap();
    assert_eq!(r.status, 401);

    // The audit line records the upload by path, never the URL.
    let lines = b.audit_lines();
    let minted: Vec<_> = lines
        .iter()
        .filter(|l| l["action"] == "upload" && l["status"] == 201)
        .collect();
    assert_eq!(minted.len(), 2, "{lines:?}");
    assert_eq!(minted[0]["path"], "acme/tasks/t-42/out.tar");
    assert_eq!(minted[0]["principal"], "task-42");
    assert_eq!(minted[0]["decision"], "allow");
    assert_eq!(
        minted[0]["upload"],
        serde_json::json!({
            "object": "tenant-a/acme/tasks/t-42/out.tar",
            "size": data.len(),
            "sha256": sum,
            "expires_at": j["expires_at"],
        })
    );
    assert!(minted[1]["upload"]["sha256"].is_null());
    // Only a minted upload's line has the field.
    assert!(
        lines
            .iter()
            .filter(|l| l["status"] != 201)
            .all(|l| l.get("upload").is_none()),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l["action"] == "upload"
            && l["status"] == 403
            && l["principal"] == "provisioner")
    );

    // SECURITY: nothing of the URL or the key reaches the audit file or
    // the broker's own output (at trace level).
    let signature = q["X-Amz-Signature"].clone();
    let audit = b.audit_text();
    let stderr = b.stderr_text();
    // The broker did log at trace level, so the check below means something.
    assert!(stderr.contains("\"level\":\"TRACE\""), "{stderr}");
    for (name, text) in [("audit", &audit), ("stderr", &stderr)] {
        for canary in [
            signature.as_str(),
            SECRET_KEY,
            SESSION_TOKEN,
            "X-Amz-Signature",
            "X-Amz-Credential",
            url.as_str(),
        ] {
            assert!(!text.contains(canary), "{name} holds `{canary}`");
        }
    }
}

#[test]
fn a_broker_without_uploads_answers_not_found() {
    let b = Broker::start(&default_principals());
    let r = mint(&b, "acme/tasks/t-42/out.tar", TASK_TOKEN, r#"{"size": 1}"#);
    assert_eq!(
        (r.status, r.code().as_str()),
        (404, "not_found"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("[uploads]"), "{}", r.text());
}

/// `[uploads]` that cannot sign does not start: without a credential from
/// the AWS chain the broker refuses naming the chain, and without a region
/// naming the key; neither quotes anything secret.
#[test]
fn a_broker_that_cannot_sign_uploads_does_not_start() {
    let dir = Broker::temp_dir();
    std::fs::write(dir.path().join("store.key"), [7u8; 32]).unwrap();
    let store = |uploads: &str| {
        format!(
            "backend = \"embedded\"\npath = \"{0}/store.redb\"\nkey_file = \"{0}/store.key\"\n\n[uploads]\nbucket = \"task-output\"\n{uploads}",
            dir.path().display()
        )
    };
    let no_imds = ("AWS_EC2_METADATA_DISABLED", "true");
    let err = Broker::start_refused_isolated(&dir, &store("region = \"eu-west-1\""), &[no_imds]);
    assert!(err.contains("AWS default credential chain"), "{err}");
    let err = Broker::start_refused_isolated(
        &dir,
        &store(""),
        &[
            no_imds,
            ("AWS_ACCESS_KEY_ID", KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ],
    );
    assert!(
        err.contains("no AWS region") && err.contains("[uploads] region"),
        "{err}"
    );
    assert!(!err.contains(SECRET_KEY), "{err}");
}

/// `curl -X method` of `file` to `url` with `headers`; the status.
fn send(method: &str, url: &str, headers: &[(String, String)], file: &std::path::Path) -> u16 {
    servers::curl_send(method, url, headers, Some(file))
}

#[test]
fn the_minted_url_uploads_to_a_signature_checking_s3_and_nothing_else() {
    let Some(s3) = S3rver::start() else { return };
    // s3rver's one account.
    let b = start_signing_for(&s3.url, "us-east-1", "S3RVER", "S3RVER", None, "5m");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.tar");
    let data = b"the output of task 42, uploaded straight to the bucket";
    std::fs::write(&file, data).unwrap();
    let r = mint(
        &b,
        "acme/tasks/t-42/out.tar",
        TASK_TOKEN,
        &format!(
            r#"{{"size": {}, "content_type": "application/x-tar"}}"#,
            data.len()
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let j = r.json();
    let url = j["url"].as_str().unwrap().to_owned();
    let headers: Vec<(String, String)> = servers::minted_headers(&j);

    // What the signature pins, each refused by the server: another method,
    // another object name, a signed header dropped or changed, another size.
    assert_eq!(send("GET", &url, &[], &file), 403, "GET with the PUT url");
    let renamed = url.replacen("/out.tar?", "/other.tar?", 1);
    assert_eq!(
        send("PUT", &renamed, &headers, &file),
        403,
        "edited object name"
    );
    let dropped: Vec<_> = headers
        .iter()
        .filter(|(k, _)| k != "if-none-match")
        .cloned()
        .collect();
    assert_eq!(
        send("PUT", &url, &dropped, &file),
        403,
        "dropped if-none-match"
    );
    let retyped: Vec<_> = headers
        .iter()
        .map(|(k, v)| match k.as_str() {
            "content-type" => (k.clone(), "text/html".to_owned()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    assert_eq!(
        send("PUT", &url, &retyped, &file),
        403,
        "changed content-type"
    );
    let bigger = dir.path().join("bigger");
    std::fs::write(&bigger, [data.as_slice(), b"!"].concat()).unwrap();
    let resized: Vec<_> = headers
        .iter()
        .filter(|(k, _)| k != "content-length")
        .cloned()
        .collect();
    assert_eq!(send("PUT", &url, &resized, &bigger), 403, "another size");
    assert!(!s3.holds(data), "nothing was stored by a refused request");

    // As minted, it uploads, and the bytes arrive.
    assert_eq!(send("PUT", &url, &headers, &file), 200);
    assert!(s3.holds(data), "the bytes are in the bucket");
}

#[test]
fn an_expired_url_is_refused() {
    let Some(s3) = S3rver::start() else { return };
    let b = start_signing_for(&s3.url, "us-east-1", "S3RVER", "S3RVER", None, "1s");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("late");
    let data = b"uploaded too late";
    std::fs::write(&file, data).unwrap();
    let r = mint(
        &b,
        "acme/tasks/t-42/late",
        TASK_TOKEN,
        &format!(r#"{{"size": {}}}"#, data.len()),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let j = r.json();
    let headers: Vec<(String, String)> = servers::minted_headers(&j);
    // Past `expires_at` (whole seconds; one more for the server's clock
    // reading), whatever the machine's load: time only moves on.
    let expires_at: jiff::Timestamp = j["expires_at"].as_str().unwrap().parse().unwrap();
    while jiff::Timestamp::now() <= expires_at + jiff::SignedDuration::from_secs(1) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        send("PUT", j["url"].as_str().unwrap(), &headers, &file),
        403
    );
    assert!(!s3.holds(data));
}
