//! The Azure signer against the string-to-sign that Azure documents for a
//! service SAS (versions 2020-12-06 and later), with Azurite's well-known
//! account key and a fixed clock, and what the SAS must and must not say.

use proptest::prelude::*;

use super::*;
use crate::upload::MAX_EXPIRY;

/// Azurite's (and the old storage emulator's) published development
/// account and key.
const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// 2013-05-24T00:00:00Z.
const NOW: i64 = 1_369_353_600;
const BLOB: &str = "tenant-a/acme/tasks/t-42/out.tar";

fn key() -> AzureKey {
    AzureKey::from_base64(KEY).unwrap()
}

fn azure() -> AzureContainer {
    AzureContainer {
        account: ACCOUNT.into(),
        container: "task-output".into(),
        endpoint: None,
    }
}

fn azurite() -> AzureContainer {
    AzureContainer {
        endpoint: Some("http://127.0.0.1:10000/devstoreaccount1".into()),
        ..azure()
    }
}

const C: Constraints<'static> = Constraints {
    size: 10,
    sha256: None,
    content_type: None,
};

fn query(url: &str) -> std::collections::BTreeMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The string-to-sign exactly as "Create a service SAS" lays it out for
/// version 2020-12-06 and later, one documented field a line.
fn documented(protocols: &str) -> String {
    [
        "c\n",                                                                   // signedPermissions
        "\n",                                                                    // signedStart
        "2013-05-24T00:05:00Z\n",                                                // signedExpiry
        "/blob/devstoreaccount1/task-output/tenant-a/acme/tasks/t-42/out.tar\n", // canonicalizedResource
        "\n",                                                                    // signedIdentifier
        "\n",                                                                    // signedIP
        protocols,
        "\n",           // signedProtocol
        "2022-11-02\n", // signedVersion
        "b\n",          // signedResource
        "\n",           // signedSnapshotTime
        "\n",           // signedEncryptionScope
        "\n",           // rscc
        "\n",           // rscd
        "\n",           // rsce
        "\n",           // rscl
        "",             // rsct
    ]
    .concat()
}

#[test]
fn the_string_to_sign_and_signature_are_azures_for_a_known_key() {
    for (at, protocols) in [(azure(), "https"), (azurite(), "https,http")] {
        assert_eq!(
            string_to_sign(&at, BLOB, "2013-05-24T00:05:00Z", protocols),
            documented(protocols)
        );
    }
    // The signatures, computed independently (`openssl dgst -sha256 -mac
    // HMAC` and Python's `hmac`) over the documented strings above.
    let s = sign(&key(), &azure(), BLOB, Duration::from_secs(300), NOW, &C).unwrap();
    assert_eq!(
        s.expose_url(),
        "https://devstoreaccount1.blob.core.windows.net/task-output/tenant-a/acme/tasks/t-42/out.tar\
         ?sv=2022-11-02&spr=https&se=2013-05-24T00%3A05%3A00Z&sr=b&sp=c\
         &sig=oPFDGpQD%2F30qvQm%2BABpv21gCLO30T%2FxzpaP3sXgJ5pc%3D"
    );
    let s = sign(&key(), &azurite(), BLOB, Duration::from_secs(300), NOW, &C).unwrap();
    assert_eq!(
        s.expose_url(),
        "http://127.0.0.1:10000/devstoreaccount1/task-output/tenant-a/acme/tasks/t-42/out.tar\
         ?sv=2022-11-02&spr=https%2Chttp&se=2013-05-24T00%3A05%3A00Z&sr=b&sp=c\
         &sig=woNtDPwWtiLRk7dyIl4gLiuUBSW1KOoiGlsdO5yOj8w%3D"
    );
}

#[test]
fn the_sas_allows_create_alone_with_no_start_and_says_what_to_send() {
    let s = sign(
        &key(),
        &azure(),
        BLOB,
        Duration::from_secs(60),
        NOW,
        &Constraints {
            size: 3,
            sha256: Some(&[1; 32]),
            content_type: Some("application/x-tar"),
        },
    )
    .unwrap();
    let q = query(s.expose_url());
    // SECURITY: `c` alone (no read, write, delete, list); no `st`, so a
    // broker clock ahead of Azure's cannot make a fresh URL unusable.
    assert_eq!(
        q.keys().map(String::as_str).collect::<Vec<_>>(),
        ["se", "sig", "sp", "spr", "sr", "sv"]
    );
    assert_eq!((q["sp"].as_str(), q["sr"].as_str()), ("c", "b"));
    assert_eq!(q["spr"], "https");
    assert_eq!(q["se"], "2013-05-24T00:01:00Z");
    assert_eq!(
        s.headers,
        [
            ("x-ms-blob-type".to_owned(), "BlockBlob".to_owned()),
            ("content-type".to_owned(), "application/x-tar".to_owned()),
        ]
    );
}

#[test]
fn the_signature_pins_the_blob_the_expiry_and_the_protocol() {
    let sig = |at: &AzureContainer, blob: &str, expiry: u64| {
        let s = sign(&key(), at, blob, Duration::from_secs(expiry), NOW, &C).unwrap();
        query(s.expose_url())["sig"].clone()
    };
    let base = sig(&azure(), BLOB, 300);
    for changed in [
        sig(&azure(), "tenant-a/acme/tasks/t-42/out.tas", 300),
        sig(&azure(), BLOB, 301),
        sig(&azurite(), BLOB, 300),
        sig(
            &AzureContainer {
                container: "task-outputs".into(),
                ..azure()
            },
            BLOB,
            300,
        ),
    ] {
        assert_ne!(base, changed);
    }
    // And it is a function of its inputs alone.
    assert_eq!(base, sig(&azure(), BLOB, 300));
}

#[test]
fn plain_http_is_only_for_loopback_and_bad_names_are_refused() {
    let e = |endpoint: &str| {
        let at = AzureContainer {
            endpoint: Some(endpoint.into()),
            ..azure()
        };
        sign(&key(), &at, BLOB, Duration::from_secs(60), NOW, &C).map(|s| query(s.expose_url()))
    };
    for bad in [
        "http://blob.example.com",
        "http://10.0.0.1:10000/devstoreaccount1",
        "ftp://127.0.0.1",
        "https://x.example/?a=b",
        "not a url",
    ] {
        assert_eq!(
            e(bad).unwrap_err(),
            SignError::Endpoint(bad.into()),
            "{bad}"
        );
    }
    for ok in ["http://localhost:10000/a", "http://[::1]:10000/a"] {
        assert_eq!(e(ok).unwrap()["spr"], "https,http", "{ok}");
    }
    assert_eq!(
        e("https://acct.privatelink.blob.core.windows.net/").unwrap()["spr"],
        "https"
    );

    let with = |account: &str, container: &str, blob: &str| {
        let at = AzureContainer {
            account: account.into(),
            container: container.into(),
            endpoint: None,
        };
        sign(&key(), &at, blob, Duration::from_secs(60), NOW, &C).map(|_| ())
    };
    assert_eq!(
        with("Dev", "task-output", BLOB),
        Err(SignError::Account("Dev".into()))
    );
    for c in ["ab", "Task", "a--b", "-ab", "ab-", "a.b"] {
        assert_eq!(
            with(ACCOUNT, c, BLOB),
            Err(SignError::Bucket(c.into())),
            "{c}"
        );
    }
    for b in [
        "",
        "a//b",
        "a/./b",
        "a/..",
        "/a",
        "a/",
        "a\nb",
        &"x".repeat(1025),
    ] {
        assert_eq!(
            with(ACCOUNT, "task-output", b),
            Err(SignError::Object),
            "{b:?}"
        );
    }
    for bad in [Duration::ZERO, MAX_EXPIRY + Duration::from_secs(1)] {
        assert_eq!(
            sign(&key(), &azure(), BLOB, bad, NOW, &C).unwrap_err(),
            SignError::Expiry
        );
    }
}

#[test]
fn the_key_is_never_shown_and_a_bad_key_file_is_named_not_quoted() {
    let k = key();
    assert_eq!(format!("{k:?}"), "AzureKey([REDACTED])");
    assert_eq!(k.0.len(), 64);
    assert_eq!(AzureKey::from_base64(" \n").unwrap_err(), KeyError::Empty);
    assert_eq!(
        AzureKey::from_base64("CANARY-not*base64").unwrap_err(),
        KeyError::NotBase64
    );
    // Trailing newline (as `echo` writes it) is fine.
    assert!(AzureKey::from_base64(&format!("{KEY}\n")).is_ok());

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.key");
    let e = AzureKey::read(&missing).unwrap_err().to_string();
    assert!(
        e.contains("account_key_file") && e.contains("missing.key") && e.contains("No such file"),
        "{e}"
    );
    for (name, content) in [
        (
            "garbled.key",
            b"CANARY-secret-looking \xff bytes".as_slice(),
        ),
        ("text.key", b"CANARY-secret-looking text".as_slice()),
        ("empty.key", b"".as_slice()),
    ] {
        let f = dir.path().join(name);
        std::fs::write(&f, content).unwrap();
        let e = AzureKey::read(&f).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(shown.contains(name), "{shown}");
        assert!(!shown.contains("CANARY"), "{shown}");
    }
    let f = dir.path().join("ok.key");
    std::fs::write(&f, format!("{KEY}\n")).unwrap();
    AzureKey::read(&f).unwrap();

    let signed = sign(&k, &azure(), BLOB, Duration::from_secs(60), NOW, &C).unwrap();
    let shown = format!("{signed:?}");
    assert!(!shown.contains("sig=") && !shown.contains(KEY), "{shown}");
}

/// Decodes `%XX` escapes (the test's own, independent of the signer's).
fn unpct(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
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

fn segment() -> impl Strategy<Value = String> {
    // Any characters but controls; `.` and `..` are refused (clients
    // rewrite them), so they are left out here.
    "[^\\p{Cc}/]{1,12}".prop_filter("not a dot segment", |s| s != "." && s != "..")
}

proptest! {
    /// Any blob name round-trips: the URL is already in the form URL
    /// parsers keep (no client rewrites it), its path decodes to exactly
    /// the name that was signed, and the query holds only the SAS.
    #[test]
    fn blob_names_round_trip_through_the_url(
        segs in proptest::collection::vec(segment(), 1..5),
        local in any::<bool>(),
    ) {
        let blob = segs.join("/");
        prop_assume!(blob.len() <= 1024);
        let at = if local { azurite() } else { azure() };
        let s = sign(&key(), &at, &blob, Duration::from_secs(60), NOW, &C).unwrap();
        let u = url::Url::parse(s.expose_url()).unwrap();
        prop_assert_eq!(u.as_str(), s.expose_url());
        let prefix = if local { "/devstoreaccount1/task-output/" } else { "/task-output/" };
        let path = u.path().strip_prefix(prefix).unwrap();
        prop_assert_eq!(unpct(path), blob.as_bytes());
        // What a server does: rebuild the string-to-sign from the decoded
        // path and the query alone, and check the signature with the key.
        let q = query(s.expose_url());
        prop_assert_eq!(q.len(), 6);
        let name = String::from_utf8(unpct(path)).unwrap();
        let resource = format!("/blob/devstoreaccount1/task-output/{name}");
        let rebuilt = format!(
            "{}\n\n{}\n{resource}\n\n\n{}\n{}\n{}\n\n\n\n\n\n\n",
            q["sp"], q["se"], q["spr"], q["sv"], q["sr"]
        );
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key().0).unwrap();
        mac.update(rebuilt.as_bytes());
        let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        prop_assert_eq!(&q["sig"], &expected);
    }
}
