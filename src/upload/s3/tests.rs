//! The S3 signer against botocore's SigV4 query signer (an independent
//! implementation, run as a subprocess with the same fixed clock), and what
//! the signature must pin.

use super::*;
use crate::upload::MAX_EXPIRY;

/// AWS's documented example credentials and clock (SigV4 presign example,
/// "Authenticating Requests: Using Query Parameters"): 2013-05-24T00:00:00Z.
const NOW: i64 = 1_369_353_600;

fn cred(token: Option<&str>) -> S3Credential {
    S3Credential::new(
        "AKIAIOSFODNN7EXAMPLE".into(),
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        token.map(str::to_owned),
    )
}

fn aws() -> S3Bucket {
    S3Bucket {
        bucket: "examplebucket".into(),
        region: "us-east-1".into(),
        endpoint_url: None,
    }
}

fn local() -> S3Bucket {
    S3Bucket {
        bucket: "task-output".into(),
        region: "eu-west-1".into(),
        endpoint_url: Some("http://127.0.0.1:4568".into()),
    }
}

fn query(url: &str) -> std::collections::BTreeMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// botocore's presigned URL for the same request, clock fixed at `now`.
fn botocore(
    unsigned_url: &str,
    region: &str,
    cred: &S3Credential,
    headers: &[(String, String)],
    expires: u64,
    now: i64,
) -> String {
    const SCRIPT: &str = r#"
import sys, json, datetime
from unittest import mock
import botocore.auth, botocore.credentials
from botocore.awsrequest import AWSRequest
a = json.load(sys.stdin)
creds = botocore.credentials.Credentials(a["key"], a["secret"], a["token"])
req = AWSRequest(method="PUT", url=a["url"], headers=dict(a["headers"]))
now = datetime.datetime.fromtimestamp(a["now"], datetime.timezone.utc).replace(tzinfo=None)
with mock.patch("botocore.auth.get_current_datetime", return_value=now):
    botocore.auth.S3SigV4QueryAuth(creds, "s3", a["region"], expires=a["expires"]).add_auth(req)
print(req.url)
"#;
    let input = serde_json::json!({
        "key": cred.access_key_id,
        "secret": cred.secret_access_key.as_str(),
        "token": cred.session_token.as_ref().map(|t| t.as_str()),
        "url": unsigned_url,
        "headers": headers,
        "region": region,
        "expires": expires,
        "now": now,
    });
    // botocore comes with moto, which `scripts/backends install aws` puts
    // in `.backends/aws`; `SB_BOTOCORE_PYTHON` names another interpreter.
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
        .expect("a python with botocore (scripts/backends install aws) checks the S3 signer");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "botocore failed: is it installed? (scripts/backends install aws, or SB_BOTOCORE_PYTHON)"
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn matches_botocore_for_every_constraint_combination() {
    let sum = [7u8; 32];
    let cases = [
        (aws(), None, None, None),
        (aws(), Some(&sum), None, None),
        (aws(), Some(&sum), Some("application/gzip"), None),
        (
            local(),
            None,
            Some("text/plain"),
            Some("FQoGZXIvYXdzEXAMPLETOKEN"),
        ),
    ];
    for (at, sha256, content_type, token) in cases {
        let cred = cred(token);
        let c = Constraints {
            size: 1_048_576,
            sha256,
            content_type,
        };
        let ours = sign(
            &cred,
            &at,
            "acme/tasks/t-42/out.tar",
            Duration::from_secs(300),
            NOW,
            &c,
        )
        .unwrap();
        let url = ours.expose_url();
        let unsigned = url.split_once('?').unwrap().0;
        let theirs = botocore(unsigned, &at.region, &cred, &ours.headers, 300, NOW);
        assert_eq!(unsigned, theirs.split_once('?').unwrap().0);
        assert_eq!(query(url), query(&theirs), "{at:?} {c:?}");
    }
}

#[test]
fn urls_are_virtual_host_on_aws_and_path_style_on_an_endpoint() {
    let c = Constraints {
        size: 3,
        sha256: None,
        content_type: None,
    };
    let s = sign(&cred(None), &aws(), "a/b", Duration::from_secs(60), NOW, &c).unwrap();
    assert!(
        s.expose_url()
            .starts_with("https://examplebucket.s3.us-east-1.amazonaws.com/a/b?"),
        "{}",
        s.expose_url()
    );
    let s = sign(
        &cred(None),
        &local(),
        "a/b",
        Duration::from_secs(60),
        NOW,
        &c,
    )
    .unwrap();
    assert!(
        s.expose_url()
            .starts_with("http://127.0.0.1:4568/task-output/a/b?"),
        "{}",
        s.expose_url()
    );
    let q = query(s.expose_url());
    assert_eq!(
        q["X-Amz-SignedHeaders"],
        "content-length;host;if-none-match"
    );
    assert_eq!(q["X-Amz-Expires"], "60");
    assert_eq!(q["X-Amz-Date"], "20130524T000000Z");
    assert_eq!(
        s.headers,
        [
            ("content-length".to_owned(), "3".to_owned()),
            ("if-none-match".to_owned(), "*".to_owned())
        ]
    );
}

#[test]
fn the_signature_pins_object_size_checksum_and_expiry() {
    let sum = [1u8; 32];
    let other = [2u8; 32];
    let c = |size, sha256| Constraints {
        size,
        sha256,
        content_type: None,
    };
    let sig = |object: &str, expiry: u64, c: Constraints<'_>| {
        let s = sign(
            &cred(None),
            &aws(),
            object,
            Duration::from_secs(expiry),
            NOW,
            &c,
        )
        .unwrap();
        query(s.expose_url())["X-Amz-Signature"].clone()
    };
    let base = sig("a/b", 300, c(10, Some(&sum)));
    for changed in [
        sig("a/c", 300, c(10, Some(&sum))),
        sig("a/b", 301, c(10, Some(&sum))),
        sig("a/b", 300, c(11, Some(&sum))),
        sig("a/b", 300, c(10, Some(&other))),
        sig("a/b", 300, c(10, None)),
    ] {
        assert_ne!(base, changed);
    }
}

#[test]
fn expiry_is_bounded_and_errors_carry_no_key() {
    let c = Constraints {
        size: 1,
        sha256: None,
        content_type: None,
    };
    for bad in [Duration::ZERO, MAX_EXPIRY + Duration::from_secs(1)] {
        assert_eq!(
            sign(&cred(None), &aws(), "a/b", bad, NOW, &c).unwrap_err(),
            SignError::Expiry
        );
    }
    let mut at = local();
    at.endpoint_url = Some("ftp://x".into());
    let e = sign(&cred(None), &at, "a/b", MAX_EXPIRY, NOW, &c).unwrap_err();
    assert_eq!(e, SignError::Endpoint("ftp://x".into()));
    let signed = sign(
        &cred(Some("TOKEN-CANARY")),
        &aws(),
        "a/b",
        MAX_EXPIRY,
        NOW,
        &c,
    )
    .unwrap();
    let shown = format!("{signed:?} {:?} {e}", cred(Some("TOKEN-CANARY")));
    assert!(!shown.contains("EXAMPLEKEY"), "{shown}");
    assert!(!shown.contains("TOKEN-CANARY"), "{shown}");
    assert!(!shown.contains("X-Amz-Signature"), "{shown}");
}

/// AWS's published SigV4 query-presign example ("Authenticating Requests:
/// Using Query Parameters": `GET /test.txt` on `examplebucket`, 24 hours),
/// through the same SigV4 core and credential type the PUT signer uses.
/// The contract's PUT-only, at-most-1h URLs cannot be the example itself;
/// botocore checks those above.
#[test]
fn the_sigv4_core_reproduces_aws_published_presign_example() {
    let bucket = Bucket::new(
        "https://s3.amazonaws.com".parse().unwrap(),
        UrlStyle::VirtualHost,
        "examplebucket",
        "us-east-1",
    )
    .unwrap();
    let c = cred(None);
    let creds = Credentials::new(
        c.access_key_id.clone(),
        c.secret_access_key.as_str().to_owned(),
    );
    let url = bucket.get_object(Some(&creds), "test.txt").sign_with_time(
        Duration::from_secs(86_400),
        &jiff::Timestamp::from_second(NOW).unwrap(),
    );
    assert_eq!(
        url.as_str(),
        "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
         &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
         &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    );
}
