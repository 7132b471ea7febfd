//! The GCS signer against Google's published V4 signing conformance vectors
//! (`tests/fixtures/gcs-v4-signing`, vendored with their licence), what the
//! broker's signature pins, object names, and that no key leaks.

use proptest::prelude::*;

use super::*;
use crate::upload::MAX_EXPIRY;

const VECTORS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/gcs-v4-signing/v4_signatures.json"
));
const SERVICE_ACCOUNT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/gcs-v4-signing/test_service_account.not-a-test.json"
));

/// The vectors' (inactive, public) service account key.
fn key() -> GcsKey {
    GcsKey::from_json(SERVICE_ACCOUNT.as_bytes()).unwrap()
}

/// 2019-02-01T09:00:00Z, the vectors' usual clock.
const NOW: i64 = 1_549_011_600;

/// The endpoint a vector's client settings come to: Google's clients take
/// a hostname, a client endpoint, an emulator host or a universe domain (in
/// that precedence); the broker takes one `endpoint`, so each case maps to
/// the endpoint its expected URL is on.
fn endpoint_of(case: &serde_json::Value) -> String {
    let scheme = case["scheme"].as_str().unwrap_or("https");
    if let Some(h) = case["hostname"].as_str() {
        format!("{scheme}://{h}")
    } else if let Some(e) = case["clientEndpoint"].as_str() {
        if e.contains("://") {
            e.to_owned()
        } else {
            format!("{scheme}://{e}")
        }
    } else if let Some(e) = case["emulatorHostname"].as_str() {
        e.to_owned()
    } else if let Some(d) = case["universeDomain"].as_str() {
        format!("https://storage.{d}")
    } else {
        format!("{scheme}://storage.googleapis.com")
    }
}

fn pairs(v: &serde_json::Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn reproduces_every_path_style_signed_url_vector_exactly() {
    let all: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
    let key = key();
    let cases = all["signingV4Tests"].as_array().unwrap();
    let (mut ran, mut skipped) = (Vec::new(), Vec::new());
    for case in cases {
        let name = case["description"].as_str().unwrap();
        // The broker's URLs are path-style only: the virtual-hosted and
        // bucket-bound-hostname styles are not something it can make.
        if matches!(
            case["urlStyle"].as_str(),
            Some("VIRTUAL_HOSTED_STYLE" | "BUCKET_BOUND_HOSTNAME")
        ) {
            skipped.push(name);
            continue;
        }
        let headers = pairs(&case["headers"]);
        let query = pairs(&case["queryParameters"]);
        let endpoint = endpoint_of(case);
        let req = Request {
            method: case["method"].as_str().unwrap(),
            endpoint: &endpoint,
            bucket: case["bucket"].as_str().unwrap(),
            object: case["object"].as_str(),
            headers: &headers,
            query: &query,
        };
        let now: jiff::Timestamp = case["timestamp"].as_str().unwrap().parse().unwrap();
        let got = presign(
            &key,
            &req,
            case["expiration"].as_u64().unwrap(),
            now.as_second(),
        )
        .unwrap();
        assert_eq!(
            got.canonical_request, case["expectedCanonicalRequest"],
            "canonical request of `{name}`"
        );
        assert_eq!(
            got.string_to_sign, case["expectedStringToSign"],
            "string to sign of `{name}`"
        );
        assert_eq!(got.url, case["expectedUrl"], "url of `{name}`");
        ran.push(name);
    }
    // Every case but the four URL styles the broker does not make; the
    // eleven POST policy cases (`postPolicyV4Tests`) are a form upload the
    // broker does not make either.
    assert_eq!(ran.len(), 25, "ran {ran:?}");
    assert_eq!(
        skipped,
        [
            "Virtual Hosted Style",
            "HTTP Bucket Bound Hostname Support",
            "HTTPS Bucket Bound Hostname Support",
            "Universe domain with virtual hosted style",
        ]
    );
    assert_eq!(all["postPolicyV4Tests"].as_array().unwrap().len(), 11);
    // The vectors a PUT URL rests on are among those run.
    for needed in [
        "Simple PUT",
        "Simple headers",
        "Headers should be trimmed",
        "Slashes in object name should not be URL encoded",
        "Simple GET with non-default hostname",
    ] {
        assert!(ran.contains(&needed), "{needed}");
    }
}

fn constraints(size: u64, content_type: Option<&str>) -> Constraints<'_> {
    Constraints {
        size,
        sha256: None,
        content_type,
    }
}

fn bucket(endpoint: Option<&str>) -> GcsBucket {
    GcsBucket {
        bucket: "task-output".into(),
        endpoint: endpoint.map(str::to_owned),
    }
}

fn query(url: &str) -> std::collections::BTreeMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[test]
fn a_put_url_signs_create_only_and_the_exact_size() {
    let c = constraints(1_048_576, Some("application/x-tar"));
    let s = sign(
        &key(),
        &bucket(None),
        "tenant-a/acme/t-42/out.tar",
        Duration::from_secs(300),
        NOW,
        &c,
    )
    .unwrap();
    let url = s.expose_url();
    assert!(
        url.starts_with("https://storage.googleapis.com/task-output/tenant-a/acme/t-42/out.tar?"),
        "{url}"
    );
    assert_eq!(
        s.headers,
        [
            ("x-goog-if-generation-match".to_owned(), "0".to_owned()),
            (
                "x-goog-content-length-range".to_owned(),
                "1048576,1048576".to_owned()
            ),
            ("content-type".to_owned(), "application/x-tar".to_owned()),
        ]
    );
    let q = query(url);
    assert_eq!(
        q["X-Goog-SignedHeaders"],
        "content-type;host;x-goog-content-length-range;x-goog-if-generation-match"
    );
    assert_eq!(q["X-Goog-Expires"], "300");
    assert_eq!(q["X-Goog-Date"], "20190201T090000Z");
    assert_eq!(q["X-Goog-Algorithm"], "GOOG4-RSA-SHA256");
    assert_eq!(
        q["X-Goog-Credential"],
        "test-iam-credentials@dummy-project-id.iam.gserviceaccount.com/20190201/auto/storage/goog4_request"
    );
    // The signature verifies with the account's public key over the string
    // to sign of exactly this request.
    let req = Request {
        method: "PUT",
        endpoint: DEFAULT_ENDPOINT,
        bucket: "task-output",
        object: Some("tenant-a/acme/t-42/out.tar"),
        headers: &s.headers,
        query: &[],
    };
    let k = key();
    let again = presign(&k, &req, 300, NOW).unwrap();
    assert_eq!(again.url, url, "PKCS#1 v1.5 signing is deterministic");
    // The URL is a credential: not in the Debug of what carries it.
    let shown = format!("{again:?}");
    assert!(
        !shown.contains("X-Goog-Signature") && !shown.contains(url),
        "{shown}"
    );
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        k.key.public().as_ref(),
    );
    public
        .verify(
            again.string_to_sign.as_bytes(),
            &hex::decode(&q["X-Goog-Signature"]).unwrap(),
        )
        .unwrap();

    // With an endpoint: the same path-style URL on it; no content type, no
    // content-type header.
    let s = sign(
        &key(),
        &bucket(Some("http://127.0.0.1:4443")),
        "a/b",
        Duration::from_secs(60),
        NOW,
        &constraints(0, None),
    )
    .unwrap();
    assert!(
        s.expose_url()
            .starts_with("http://127.0.0.1:4443/task-output/a/b?X-Goog-Algorithm="),
        "{}",
        s.expose_url()
    );
    assert_eq!(s.headers.len(), 2);
    assert_eq!(s.headers[1].1, "0,0");
}

#[test]
fn the_signature_pins_object_size_type_and_expiry() {
    let k = key();
    let sig = |object: &str, expiry: u64, size: u64, ct: Option<&str>| {
        let s = sign(
            &k,
            &bucket(None),
            object,
            Duration::from_secs(expiry),
            NOW,
            &constraints(size, ct),
        )
        .unwrap();
        query(s.expose_url())["X-Goog-Signature"].clone()
    };
    let base = sig("a/b", 300, 10, Some("text/plain"));
    for changed in [
        sig("a/c", 300, 10, Some("text/plain")),
        sig("a/b", 301, 10, Some("text/plain")),
        sig("a/b", 300, 11, Some("text/plain")),
        sig("a/b", 300, 10, Some("text/html")),
        sig("a/b", 300, 10, None),
    ] {
        assert_ne!(base, changed);
    }
    // A sha256 is not pinned on GCS (no header GCS checks it against).
    let sum = [3u8; 32];
    let with_sum = sign(
        &k,
        &bucket(None),
        "a/b",
        Duration::from_secs(300),
        NOW,
        &Constraints {
            size: 10,
            sha256: Some(&sum),
            content_type: Some("text/plain"),
        },
    )
    .unwrap();
    assert_eq!(query(with_sum.expose_url())["X-Goog-Signature"], base);
}

#[test]
fn expiry_bucket_and_endpoint_are_checked() {
    let k = key();
    let c = constraints(1, None);
    for bad in [Duration::ZERO, MAX_EXPIRY + Duration::from_secs(1)] {
        assert_eq!(
            sign(&k, &bucket(None), "a/b", bad, NOW, &c).unwrap_err(),
            SignError::Expiry
        );
    }
    assert!(sign(&k, &bucket(None), "a/b", MAX_EXPIRY, NOW, &c).is_ok());
    for endpoint in [
        "ftp://x",
        "storage.googleapis.com",
        "https://x/path",
        "https://user@x",
        "https://x?q=1",
    ] {
        let e = sign(&k, &bucket(Some(endpoint)), "a/b", MAX_EXPIRY, NOW, &c).unwrap_err();
        assert_eq!(e, SignError::Endpoint(endpoint.into()), "{endpoint}");
    }
    // A trailing `/` is fine.
    assert!(sign(&k, &bucket(Some("https://x/")), "a/b", MAX_EXPIRY, NOW, &c).is_ok());
    for name in ["ab", "Upper", "-edge", "a/b", "sp ace", ""] {
        let at = GcsBucket {
            bucket: name.into(),
            endpoint: None,
        };
        assert_eq!(
            sign(&k, &at, "a/b", MAX_EXPIRY, NOW, &c).unwrap_err(),
            SignError::Bucket(name.into())
        );
    }
    for name in ["task-output", "a_b.c-9", "abc"] {
        assert!(valid_bucket(name), "{name}");
    }
}

/// A PKCS#8 key that is not RSA (P-256), from rcgen.
fn ec_pem() -> String {
    rcgen::KeyPair::generate().unwrap().serialize_pem()
}

#[test]
fn bad_key_files_are_refused_by_fault_never_quoting_them() {
    let canary = "CANARY-4471";
    let sa = |fields: &str| format!(r#"{{"type": "service_account", {fields}}}"#);
    let email = r#""client_email": "sa@p.iam.gserviceaccount.com""#;
    let real: serde_json::Value = serde_json::from_str(SERVICE_ACCOUNT).unwrap();
    let pem = real["private_key"].as_str().unwrap();
    let cases = [
        (format!("{canary} not json"), "not a JSON object"),
        (format!(r#"["{canary}"]"#), "not a JSON object"),
        (
            format!(r#"{{"type": "{canary}", {email}, "private_key": "x"}}"#),
            "not a service account key",
        ),
        (
            format!(r#"{{"type": "authorized_user", "refresh_token": "{canary}"}}"#),
            "not a service account key",
        ),
        (sa(r#""private_key": "x""#), "`client_email`"),
        (
            sa(&format!(r#""client_email": 7, "private_key": "{canary}""#)),
            "`client_email`",
        ),
        (sa(email), "`private_key`"),
        (
            sa(&format!(
                r#""client_email": "{canary}", "private_key": "x""#
            )),
            "not an email",
        ),
        (
            sa(&format!(r#"{email}, "private_key": "{canary}""#)),
            "not a PEM PKCS#8 RSA",
        ),
        (
            sa(&format!(
                r#"{email}, "private_key": "-----BEGIN PRIVATE KEY-----\n{canary}\n-----END PRIVATE KEY-----\n""#
            )),
            "not a PEM PKCS#8 RSA",
        ),
        (
            sa(&format!(
                "{email}, \"private_key\": {}",
                serde_json::Value::String(ec_pem())
            )),
            "not a PEM PKCS#8 RSA",
        ),
        (
            // The real key, one base64 character changed: still PEM, not a key.
            sa(&format!(
                "{email}, \"private_key\": {}",
                serde_json::Value::String(pem.replacen("MIIE", "MIIF", 1))
            )),
            "not a PEM PKCS#8 RSA",
        ),
    ];
    for (json, needle) in cases {
        let e = GcsKey::from_json(json.as_bytes()).unwrap_err().to_string();
        assert!(e.contains(needle), "{json}: {e}");
        assert!(!e.contains(canary), "{e}");
        assert!(!e.contains("MII"), "{e}");
    }
    // The real one parses.
    let k = key();
    assert_eq!(
        k.client_email(),
        "test-iam-credentials@dummy-project-id.iam.gserviceaccount.com"
    );
}

#[test]
fn no_key_in_debug_output_or_errors() {
    let real: serde_json::Value = serde_json::from_str(SERVICE_ACCOUNT).unwrap();
    let pem = real["private_key"].as_str().unwrap();
    // A run of the key's base64 body, and the whole PEM.
    let body_line = pem.lines().nth(3).unwrap();
    let k = key();
    let s = sign(
        &k,
        &bucket(None),
        "a/b",
        MAX_EXPIRY,
        NOW,
        &constraints(1, None),
    )
    .unwrap();
    let e = sign(
        &k,
        &bucket(Some("ftp://x")),
        "a/b",
        MAX_EXPIRY,
        NOW,
        &constraints(1, None),
    )
    .unwrap_err();
    let shown = format!("{k:?} {s:?} {e} {e:?}");
    assert!(shown.contains("test-iam-credentials@"), "{shown}");
    for needle in [body_line, pem, "X-Goog-Signature", "PRIVATE KEY"] {
        assert!(!shown.contains(needle), "{shown}");
    }
}

/// Decodes `%XX` escapes (the inverse of [`encode`]).
fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// A secret path's segment: `[A-Za-z0-9][A-Za-z0-9._-]*`.
fn segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9._-]{0,20}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any prefix and valid secret path make a URL whose path, as an HTTP
    /// client parses and sends it, decodes back to `/{bucket}/{object}`.
    #[test]
    fn a_valid_path_survives_the_url(
        prefix in proptest::collection::vec(segment(), 0..3),
        path in proptest::collection::vec(segment(), 2..16),
    ) {
        let mut object: String = prefix.iter().map(|s| format!("{s}/")).collect();
        object.push_str(&path.join("/"));
        prop_assume!(crate::secret::SecretPath::parse(&path.join("/")).is_ok());
        let s = sign(
            &key(),
            &bucket(Some("http://127.0.0.1:4443")),
            &object,
            Duration::from_secs(60),
            NOW,
            &constraints(1, None),
        ).unwrap();
        let url = url::Url::parse(s.expose_url()).unwrap();
        let sent = String::from_utf8(decode(url.path())).unwrap();
        prop_assert_eq!(sent, format!("/task-output/{object}"));
    }

    /// Any object name at all is encoded so that the URL's path decodes
    /// back to it, and nothing of it reaches the query.
    #[test]
    fn any_object_name_round_trips(object in "\\PC{1,40}") {
        let s = sign(
            &key(),
            &bucket(None),
            &object,
            Duration::from_secs(60),
            NOW,
            &constraints(1, None),
        ).unwrap();
        let (path, q) = s.expose_url()
            .strip_prefix(DEFAULT_ENDPOINT).unwrap()
            .split_once('?').unwrap();
        prop_assert_eq!(decode(path), format!("/task-output/{object}").into_bytes());
        prop_assert!(q.starts_with("X-Goog-Algorithm=GOOG4-RSA-SHA256&"));
        prop_assert_eq!(q.matches('&').count(), 5);
    }
}
