//! End-to-end API tests against the real binary over its Unix socket: the
//! authorization matrix, versions, listing, and every error of the contract.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

use common::{Broker, PLATFORM_TOKEN as P, TASK_TOKEN as T, default_principals};

fn broker() -> Broker {
    Broker::start(&default_principals())
}

#[test]
fn platform_writes_lists_deletes_but_never_reads() {
    let b = broker();
    let r = b.put("acme/tasks/t-42/db", P, "hunter2");
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["path"], "acme/tasks/t-42/db");
    assert_eq!(v["version"], 1);
    assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(v.get("value").is_none());

    // Not even what it just wrote.
    let r = b.get("acme/tasks/t-42/db", P);
    assert_eq!((r.status, r.code()), (403, "forbidden".into()));
    assert!(!r.text().contains("hunter2"));

    let r = b.put("acme/tasks/t-42/db", P, "hunter3");
    assert_eq!((r.status, r.json()["version"].as_i64()), (200, Some(2)));

    let r = b.req("GET", "/v1/secrets/acme/", Some(P), None);
    assert_eq!(r.status, 200);
    let list = r.json();
    assert_eq!(list["secrets"][0]["path"], "acme/tasks/t-42/db");
    assert_eq!(list["secrets"][0]["version"], 2);
    assert!(!r.text().contains("hunter"));
    assert_eq!(b.req("GET", "/v1/secrets/", Some(P), None).status, 200);

    let r = b.req("DELETE", "/v1/secrets/acme/tasks/t-42/db", Some(P), None);
    assert_eq!(r.status, 204);
    assert_eq!(b.get("acme/tasks/t-42/db", T).status, 404);
    assert_eq!(
        b.req("DELETE", "/v1/secrets/acme/tasks/t-42/db", Some(P), None)
            .status,
        404
    );
    // After delete, versions restart.
    assert_eq!(b.put("acme/tasks/t-42/db", P, "x").json()["version"], 1);
}

#[test]
fn task_reads_only_inside_its_scope() {
    let b = broker();
    for p in [
        "acme/tasks/t-42/db",
        "acme/tasks/t-42/nested/deep/x",
        "acme/tasks/t-43/db",
        "acme/tasks/t-4/db",
        "acme/tasks/t-420/db",
        "acme/x",
    ] {
        assert_eq!(b.put(p, P, &format!("v-{p}")).status, 201);
    }
    let r = b.get("acme/tasks/t-42/db", T);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["value"], "v-acme/tasks/t-42/db");
    assert_eq!(r.json()["version"], 1);
    assert_eq!(b.get("acme/tasks/t-42/nested/deep/x", T).status, 200);
    for outside in [
        "acme/tasks/t-43/db",
        "acme/tasks/t-4/db",
        "acme/tasks/t-420/db",
        "acme/x",
    ] {
        let r = b.get(outside, T);
        assert_eq!((r.status, r.code()), (403, "forbidden".into()), "{outside}");
    }
    // Same 403 for a missing secret outside the scope: existence is not revealed.
    let missing = b.get("acme/tasks/t-43/nope", T);
    let existing = b.get("acme/tasks/t-43/db", T);
    assert_eq!(missing.status, existing.status);
    assert_eq!(missing.code(), existing.code());
    // Inside the scope, a missing secret is 404.
    assert_eq!(b.get("acme/tasks/t-42/nope", T).code(), "not_found");

    // Listing: own scope and nested yes; parent, sibling, root no.
    let r = b.req("GET", "/v1/secrets/acme/tasks/t-42/", Some(T), None);
    assert_eq!(r.status, 200);
    let paths: Vec<String> = r.json()["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        paths,
        ["acme/tasks/t-42/db", "acme/tasks/t-42/nested/deep/x"]
    );
    assert_eq!(
        b.req("GET", "/v1/secrets/acme/tasks/t-42/nested/", Some(T), None)
            .status,
        200
    );
    for denied in [
        "/v1/secrets/acme/tasks/",
        "/v1/secrets/acme/tasks/t-4/",
        "/v1/secrets/",
        "/v1/secrets/acme/",
    ] {
        assert_eq!(b.req("GET", denied, Some(T), None).status, 403, "{denied}");
    }
    // Platform listing of t-4 does not include t-42 or t-420.
    let r = b.req("GET", "/v1/secrets/acme/tasks/t-4/", Some(P), None);
    assert_eq!(r.json()["secrets"].as_array().unwrap().len(), 1);

    // Tasks never write or delete, even in scope.
    assert_eq!(b.put("acme/tasks/t-42/db", T, "evil").status, 403);
    assert_eq!(
        b.req("DELETE", "/v1/secrets/acme/tasks/t-42/db", Some(T), None)
            .status,
        403
    );
    assert_eq!(
        b.get("acme/tasks/t-42/db", T).json()["value"],
        "v-acme/tasks/t-42/db"
    );
}

#[test]
fn unknown_callers_are_401_and_audited() {
    let b = broker();
    // As root (or any uid not configured) without a token: no principal.
    let r = b.req("GET", "/v1/secrets/acme/tasks/t-42/db", None, None);
    assert_eq!((r.status, r.code()), (401, "unauthenticated".into()));
    let r = b.req(
        "GET",
        "/v1/secrets/acme/tasks/t-42/db",
        Some("wrong-token"),
        None,
    );
    assert_eq!(r.status, 401);
    let r = b
        .try_request("GET", "/v1/whoami", &[("authorization", "Basic abc")], None)
        .unwrap();
    assert_eq!(r.status, 401);
    let audit = b.audit_lines();
    let unauth: Vec<_> = audit.iter().filter(|l| l["status"] == 401).collect();
    assert_eq!(unauth.len(), 3);
    assert!(
        unauth
            .iter()
            .all(|l| l["principal"].is_null() && l["decision"].is_null())
    );
}

#[test]
fn whoami_health_ready() {
    let b = broker();
    let r = b.req("GET", "/v1/whoami", Some(T), None);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["principal"], "task-42");
    assert_eq!(v["type"], "Task");
    assert_eq!(v["scope"], "acme/tasks/t-42");
    let v = b.req("GET", "/v1/whoami", Some(P), None).json();
    assert_eq!(
        (v["type"].as_str(), v["roles"][0].as_str()),
        (Some("Component"), Some("platform"))
    );
    assert_eq!(b.req("GET", "/healthz", None, None).status, 200);
    assert_eq!(b.req("GET", "/readyz", None, None).status, 200);
}

#[test]
fn versions_binary_octet_stream_and_create_only() {
    let b = broker();
    let path = "/v1/secrets/acme/tasks/t-42/bin";
    let body = r#"{"value_base64":"AAECA/7/","labels":{"team":"core"}}"#;
    assert_eq!(b.req("PUT", path, Some(P), Some(body)).status, 201);
    let r = b.get("acme/tasks/t-42/bin", T);
    assert_eq!(r.json()["value_base64"], "AAECA/7/");
    assert!(r.json().get("value").is_none());
    let raw = b
        .try_request(
            "GET",
            path,
            &[
                ("authorization", &format!("Bearer {T}")),
                ("accept", "application/octet-stream"),
            ],
            None,
        )
        .unwrap();
    assert_eq!(raw.status, 200);
    assert_eq!(raw.body, [0, 1, 2, 3, 0xfe, 0xff]);
    assert_eq!(raw.header("content-type"), Some("application/octet-stream"));
    let list = b
        .req("GET", "/v1/secrets/acme/tasks/t-42/", Some(P), None)
        .json();
    assert_eq!(list["secrets"][0]["labels"]["team"], "core");

    let auth = format!("Bearer {P}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("if-none-match", "*"),
    ];
    let r = b
        .try_request("PUT", path, &h, Some(br#"{"value":"again"}"#))
        .unwrap();
    assert_eq!((r.status, r.code()), (412, "precondition_failed".into()));
    let r = b
        .try_request(
            "PUT",
            "/v1/secrets/acme/tasks/t-42/fresh",
            &h,
            Some(br#"{"value":"new"}"#),
        )
        .unwrap();
    assert_eq!(r.status, 201);
    for n in 2..=5 {
        assert_eq!(
            b.req("PUT", path, Some(P), Some(r#"{"value":"v"}"#)).json()["version"],
            n
        );
    }
    assert_eq!(b.get("acme/tasks/t-42/bin", T).json()["version"], 5);
}

#[test]
fn every_bad_input_gets_its_status_and_code() {
    let b = broker();
    let auth = format!("Bearer {P}");
    let a = auth.as_str();
    let json = ("content-type", "application/json");
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Option<&'a [u8]>,
        u16,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "GET",
            "/v1/secrets/a/../b",
            vec![("authorization", a)],
            None,
            400,
            "invalid_path",
        ),
        (
            "GET",
            "/v1/secrets/a/%2e%2e/b",
            vec![("authorization", a)],
            None,
            400,
            "invalid_path",
        ),
        (
            "GET",
            "/v1/secrets/a%2Fb/c",
            vec![("authorization", a)],
            None,
            400,
            "invalid_path",
        ),
        (
            "GET",
            "/v1/secrets//a/b",
            vec![("authorization", a)],
            None,
            400,
            "invalid_path",
        ),
        (
            "GET",
            "/v1/secrets/a/./b",
            vec![("authorization", a)],
            None,
            400,
            "invalid_path",
        ),
        (
            "GET",
            "/v1/secrets/onlyname",
            vec![("authorization", a)],
            None,
            400,
            "invalid_path",
        ),
        (
            "GET",
            "/v1/secrets/a/b%00",
            vec![("authorization", a)],
            None,
            400,
            "invalid_path",
        ),
        // invalid_path comes before authentication.
        (
            "GET",
            "/v1/secrets/a/../b",
            vec![],
            None,
            400,
            "invalid_path",
        ),
        (
            "PUT",
            "/v1/secrets/a/b",
            vec![("authorization", a), json],
            Some(b"{}"),
            400,
            "invalid_body",
        ),
        (
            "PUT",
            "/v1/secrets/a/b",
            vec![("authorization", a), json],
            Some(br#"{"value":"x","value_base64":"eA=="}"#),
            400,
            "invalid_body",
        ),
        (
            "PUT",
            "/v1/secrets/a/b",
            vec![("authorization", a), json],
            Some(br#"{"value":"x","bogus":1}"#),
            400,
            "invalid_body",
        ),
        (
            "PUT",
            "/v1/secrets/a/b",
            vec![("authorization", a), json],
            Some(br#"{"value_base64":"!!"}"#),
            400,
            "invalid_body",
        ),
        (
            "PUT",
            "/v1/secrets/a/b",
            vec![("authorization", a), json],
            Some(b"not json"),
            400,
            "invalid_body",
        ),
        (
            "PUT",
            "/v1/secrets/a/b",
            vec![("authorization", a), ("content-type", "text/plain")],
            Some(br#"{"value":"x"}"#),
            415,
            "unsupported_media_type",
        ),
        (
            "PUT",
            "/v1/secrets/a/b",
            vec![("authorization", a), json],
            None,
            411,
            "length_required",
        ),
        (
            "POST",
            "/v1/secrets/a/b",
            vec![("authorization", a)],
            None,
            405,
            "method_not_allowed",
        ),
        // A trailing `/` on a secret path is an invalid path, not a 405.
        (
            "DELETE",
            "/v1/secrets/a/",
            vec![("authorization", a)],
            None,
            400,
            "invalid_path",
        ),
        (
            "PUT",
            "/v1/secrets/a/b/",
            vec![("authorization", a), json],
            Some(br#"{"value":"x"}"#),
            400,
            "invalid_path",
        ),
        (
            "POST",
            "/v1/secrets/a/",
            vec![("authorization", a)],
            None,
            405,
            "method_not_allowed",
        ),
        ("GET", "/v2/nothing", vec![], None, 404, "not_found"),
    ];
    for (method, path, headers, body, status, code) in cases {
        let r = b.try_request(method, path, &headers, body).unwrap();
        assert_eq!(
            (r.status, r.code()),
            (status, code.to_owned()),
            "{method} {path} -> {}",
            r.text()
        );
        let e = &r.json()["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(e["request_id"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // 405 says what is allowed.
    let r = b
        .try_request("POST", "/v1/secrets/a/b", &[("authorization", a)], None)
        .unwrap();
    assert_eq!(r.header("allow"), Some("GET, PUT, DELETE"));

    // 413 from the declared length, before the body is read.
    let r = b
        .raw(format!("PUT /v1/secrets/a/b HTTP/1.1\r\nhost: x\r\nauthorization: {a}\r\ncontent-length: 99999999\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(common::parse_response(&r).status, 413);
    // 413 for a value over 64 KiB.
    let big = serde_json::json!({ "value": "x".repeat(64 * 1024 + 1) }).to_string();
    let r = b.req("PUT", "/v1/secrets/a/b", Some(P), Some(&big));
    assert_eq!((r.status, r.code()), (413, "too_large".into()));
    // Exactly 64 KiB is fine.
    let max = serde_json::json!({ "value": "x".repeat(64 * 1024) }).to_string();
    assert_eq!(
        b.req("PUT", "/v1/secrets/a/b", Some(P), Some(&max)).status,
        201
    );
    // 413 for a chunked body that grows past the limit while being read.
    let mut chunked = format!("PUT /v1/secrets/a/c HTTP/1.1\r\nhost: x\r\nauthorization: {a}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n").into_bytes();
    for _ in 0..20 {
        chunked.extend_from_slice(format!("{:x}\r\n{}\r\n", 8192, "y".repeat(8192)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    // The broker stops reading at the limit, so the kernel may reset the
    // connection before the client reads the 413; then the audit shows it.
    match b.raw(&chunked) {
        Ok(out) if !out.is_empty() => assert_eq!(common::parse_response(&out).status, 413),
        _ => assert!(
            b.audit_lines()
                .iter()
                .any(|l| l["status"] == 413 && l["path"] == "a/c"),
            "a 413 for the chunked body is audited"
        ),
    }

    // Still serving after all of it, and every request was audited.
    assert_eq!(b.req("GET", "/healthz", None, None).status, 200);
    assert!(b.audit_lines().len() >= 24);
}

#[test]
fn survives_garbage_and_a_connection_flood() {
    let b = Broker::start(&format!(
        "{}\n[limits]\nmax_connections = 8\nheader_timeout = \"2s\"\n",
        default_principals()
    ));
    for garbage in [
        &b"\x00\x01\x02\xff\xfe garbage\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /v1/secrets/a/b HTTP/1.1\r\nbad header line\r\n\r\n",
        b"\r\n\r\n\r\n",
        b"PUT /v1/secrets/a/b HTTP/1.1\r\ncontent-length: -5\r\n\r\n",
    ] {
        let _ = b.raw(garbage);
        assert_eq!(b.req("GET", "/healthz", None, None).status, 200);
    }
    // A burst of parallel requests all get answers.
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let sock = b.socket.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
                s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                    .unwrap();
                let mut out = Vec::new();
                s.read_to_end(&mut out).unwrap();
                common::parse_response(&out).status
            })
        })
        .collect();
    for t in threads {
        assert!(matches!(t.join().unwrap(), 200 | 429));
    }
    assert_eq!(b.req("GET", "/healthz", None, None).status, 200);
    let audit = b.audit_lines();
    assert!(
        audit
            .iter()
            .any(|l| l["status"] == 400 && l["action"].is_null()),
        "malformed requests are audited"
    );
}

#[test]
fn connections_over_the_cap_get_429_and_are_closed() {
    let b = Broker::start(&format!(
        "{}\n[limits]\nmax_connections = 8\n",
        default_principals()
    ));
    // A connection's slot is freed a moment after its client saw EOF: let
    // the readiness probes' slots settle so all 8 are free.
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Hold as many idle connections as the cap: one more gets 429 and is closed.
    let held: Vec<_> = (0..8)
        .map(|_| std::os::unix::net::UnixStream::connect(&b.socket).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let r = b.try_request("GET", "/healthz", &[], None).unwrap();
    assert_eq!((r.status, r.code()), (429, "overloaded".into()));
    drop(held);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(b.req("GET", "/healthz", None, None).status, 200);
}

#[test]
fn peer_credentials_identify_callers() {
    if !common::is_root() {
        eprintln!(
            "SKIP peer_credentials_identify_callers: needs root to run clients under other uids"
        );
        return;
    }
    let b = broker();
    // uid 2001 is the platform by peer credentials.
    let (s, _) = b.curl_as(
        2001,
        2001,
        "PUT",
        "/v1/secrets/acme/tasks/t-42/db",
        Some(r#"{"value":"by-uid"}"#),
    );
    assert_eq!(s, 201);
    let (s, body) = b.curl_as(2001, 2001, "GET", "/v1/secrets/acme/tasks/t-42/db", None);
    assert_eq!(s, 403);
    assert!(!body.contains("by-uid"));
    // uid 2000 is the task.
    let (s, body) = b.curl_as(2000, 2000, "GET", "/v1/secrets/acme/tasks/t-42/db", None);
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("by-uid"));
    let (s, body) = b.curl_as(2000, 2000, "GET", "/v1/whoami", None);
    assert_eq!(s, 200);
    assert!(body.contains("task-uid"));
    let (s, _) = b.curl_as(2000, 2000, "GET", "/v1/secrets/acme/tasks/t-43/db", None);
    assert_eq!(s, 403);
    // An unknown uid is 401.
    let (s, _) = b.curl_as(3999, 3999, "GET", "/v1/secrets/acme/tasks/t-42/db", None);
    assert_eq!(s, 401);
    // The audit line carries the peer uid.
    let audit = b.audit_lines();
    assert!(audit.iter().any(|l| l["peer"]["uid"] == 2000
        && l["principal"] == "task-uid"
        && l["decision"] == "allow"));
    assert!(
        audit
            .iter()
            .any(|l| l["peer"]["uid"] == 2001 && l["decision"] == "deny" && l["action"] == "read")
    );
}

#[test]
fn label_based_forbid_holds_on_reads_even_from_cache() {
    let pdir = tempfile::tempdir().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for f in ["schema.cedarschema", "broker.cedar"] {
        std::fs::copy(shipped.join(f), pdir.path().join(f)).unwrap();
    }
    std::fs::write(
        pdir.path().join("restricted.cedar"),
        r#"@id("restricted-never-read")
forbid (principal is SecretBroker::Task, action == SecretBroker::Action::"read", resource)
when { resource.hasTag("classification") && resource.getTag("classification") == "restricted" };
"#,
    )
    .unwrap();
    let b = Broker::start_with_policies(&default_principals(), pdir.path());
    let restricted = r#"{"value":"top","labels":{"classification":"restricted"}}"#;
    let path = "/v1/secrets/acme/tasks/t-42/r";
    assert_eq!(b.req("PUT", path, Some(P), Some(restricted)).status, 201);
    assert_eq!(b.put("acme/tasks/t-42/open", P, "fine").status, 201);
    assert_eq!(b.get("acme/tasks/t-42/open", T).status, 200);
    for _ in 0..2 {
        let r = b.get("acme/tasks/t-42/r", T);
        assert_eq!((r.status, r.code()), (403, "forbidden".into()));
        assert!(!r.text().contains("top"));
    }
    let audit = b.audit_lines();
    let last = audit.iter().rev().find(|l| l["action"] == "read").unwrap();
    assert_eq!(last["decision"], "deny");
    assert_eq!(last["policies"][0], "restricted-never-read");
    // Relabelled (a PUT replaces labels), it is readable again.
    assert_eq!(b.put("acme/tasks/t-42/r", P, "now-open").status, 200);
    assert_eq!(b.get("acme/tasks/t-42/r", T).json()["value"], "now-open");
}

#[test]
fn gid_principals_and_socket_permissions() {
    if !common::is_root() {
        eprintln!("SKIP gid_principals_and_socket_permissions: needs root");
        return;
    }
    let extra = format!(
        "{}\n[[principal]]\nname = \"by-group\"\ntype = \"Task\"\nscope = \"acme/g\"\ngid = 3000\n",
        default_principals()
    );
    let b = Broker::start(&extra);
    assert_eq!(b.put("acme/g/x", P, "for-the-group").status, 201);
    let (s, body) = b.curl_as(3999, 3000, "GET", "/v1/secrets/acme/g/x", None);
    assert_eq!(s, 200, "{body}");
    let (s, body) = b.curl_as(3999, 3000, "GET", "/v1/whoami", None);
    assert!(s == 200 && body.contains("by-group"), "{body}");
    // uid 2000 (task-uid) in gid 3000 matches two principals: refused, and
    // SECURITY: the unauthenticated caller is not told which ones (the
    // broker's log is).
    let (s, body) = b.curl_as(2000, 3000, "GET", "/v1/whoami", None);
    assert_eq!(s, 401);
    assert!(body.contains("several principals"), "{body}");
    assert!(
        !body.contains("by-group") && !body.contains("task-uid"),
        "{body}"
    );
    let log = b.stderr_text();
    assert!(
        log.contains("by-group") && log.contains("task-uid"),
        "the log names them: {log}"
    );
}

/// SECURITY: the kernel's overflow uid/gid (65534) is what every process of
/// an unmapped user namespace appears as: a peer carrying it is refused even
/// where its other id would match, and a principal naming it is a config
/// error.
#[test]
fn overflow_ids_identify_nobody() {
    if !common::is_root() {
        eprintln!("SKIP overflow_ids_identify_nobody: needs root");
        return;
    }
    let (ou, og) = (65534, 65534);
    let extra = format!(
        "{}\n[[principal]]\nname = \"by-group\"\ntype = \"Task\"\nscope = \"acme/g\"\ngid = 3000\n",
        default_principals()
    );
    let mut b = Broker::start(&extra);
    let (s, body) = b.curl_as(3999, 3000, "GET", "/v1/whoami", None);
    assert_eq!(s, 200, "{body}");
    let (s, body) = b.curl_as(ou, 3000, "GET", "/v1/whoami", None);
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("overflow id"), "{body}");
    let (s, _) = b.curl_as(2000, og, "GET", "/v1/secrets/acme/tasks/t-42/db", None);
    assert_eq!(s, 401);
    b.kill9();
    for field in ["uid", "gid"] {
        let text = std::fs::read_to_string(&b.config).unwrap();
        std::fs::write(
            &b.config,
            format!("{text}\n[[principal]]\nname = \"nobody\"\ntype = \"Task\"\nscope = \"acme/n\"\n{field} = 65534\n"),
        )
        .unwrap();
        let out = std::process::Command::new(common::BIN)
            .args(["serve", "--config"])
            .arg(&b.config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{err}");
        assert!(err.contains("overflow id"), "{err}");
        std::fs::write(&b.config, text).unwrap();
    }
}

#[test]
fn slow_request_heads_are_cut_off() {
    use std::io::{Read, Write};
    let b = Broker::start(&format!(
        "{}\n[limits]\nheader_timeout = \"1s\"\n",
        default_principals()
    ));
    let mut s = std::os::unix::net::UnixStream::connect(&b.socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    let mut out = Vec::new();
    // The server must end the connection (EOF); our own read timeout firing
    // first would be an error here.
    let closed = s.read_to_end(&mut out);
    assert!(
        closed.is_ok(),
        "the server kept a half-sent head open: {closed:?}"
    );
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
    // The cut-off is audited as a 408 with no action or path.
    assert!(
        b.audit_lines()
            .iter()
            .any(|l| l["status"] == 408 && l["action"].is_null() && l["path"].is_null()),
        "{:?}",
        b.audit_lines()
    );
    // A well-behaved client is unaffected.
    assert_eq!(b.req("GET", "/healthz", None, None).status, 200);

    // The deadline is per head, not per connection: a keep-alive
    // connection that sends a request every 300 ms stays open for three
    // times the timeout, every request answered on the same socket.
    let mut s = std::os::unix::net::UnixStream::connect(&b.socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let begun = std::time::Instant::now();
    let mut answered = 0;
    while begun.elapsed() < std::time::Duration::from_secs(3) {
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "request {answered}: {head}"
        );
        answered += 1;
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert!(answered >= 8, "{answered}");
    // ...and an idle one is closed once it has waited the timeout.
    let mut rest = Vec::new();
    assert!(s.read_to_end(&mut rest).is_ok_and(|n| n == 0));
}

/// An answer given before the body was read (401, 400, 405, 404 route)
/// reaches a client that writes its head and its body in two writes with a
/// pause between them (as Python's `http.client` does), and the connection
/// stays usable: the broker drains the unread body instead of closing on
/// it, which would reset the socket under the client.
#[test]
fn early_answers_reach_clients_still_writing_the_body() {
    use std::io::{Read, Write};
    let b = broker();
    let body = format!("{{\"value\":\"{}\"}}", "v".repeat(40_000));
    let cases: [(&str, &str, Option<&str>, u16); 4] = [
        (
            "PUT",
            "/v1/secrets/acme/tasks/t-42/db",
            Some("wrong-token"),
            401,
        ),
        ("PUT", "/v1/secrets/acme/../db", Some(P), 400),
        ("POST", "/v1/secrets/acme/tasks/t-42/db", Some(P), 405),
        ("PUT", "/v1/secrets/acme/tasks/t-42/db", None, 401),
    ];
    for (method, path, token, want) in cases {
        let mut s = std::os::unix::net::UnixStream::connect(&b.socket).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let auth = token
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: sb\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        // The answer may already be waiting; the body must still go through.
        s.write_all(body.as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: body write failed: {e}"));
        // A second request on the same connection.
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: sb\r\n\r\n")
            .unwrap_or_else(|e| panic!("{method} {path}: second request: {e}"));
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        while !String::from_utf8_lossy(&got).contains("\"status\":\"ok\"") {
            let n = s
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("{method} {path}: read: {e}"));
            assert!(
                n > 0,
                "{method} {path}: closed: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {want} ")),
            "{method} {path}: {text}"
        );
    }
    // A body over what a drain reads is not waited for: the answer says
    // the connection closes.
    let mut s = std::os::unix::net::UnixStream::connect(&b.socket).unwrap();
    s.write_all(b"PUT /v1/secrets/acme/x HTTP/1.1\r\nhost: sb\r\nauthorization: Bearer nope\r\ncontent-type: application/json\r\ncontent-length: 999999999\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_lowercase();
    assert!(text.starts_with("http/1.1 401"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
}

/// A `PUT` body with `labels` as given.
fn labelled(labels: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::json!({ "value": "v", "labels": labels }).to_string()
}

fn labels_of(
    pairs: impl IntoIterator<Item = (String, String)>,
) -> serde_json::Map<String, serde_json::Value> {
    pairs
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect()
}

#[test]
fn label_limits_are_checked_before_authorization_and_named() {
    let b = broker();
    let path = "/v1/secrets/acme/tasks/t-42/labelled";
    let key = |i: usize| format!("{i:0>63}");
    // At every limit at once: accepted, and listed back as sent.
    let full = labels_of((0..10).map(|i| (key(i), "v".repeat(256))));
    let r = b.req("PUT", path, Some(P), Some(&labelled(&full)));
    assert_eq!(r.status, 201, "{}", r.text());
    let list = b
        .req("GET", "/v1/secrets/acme/tasks/t-42/", Some(P), None)
        .json();
    assert_eq!(
        list["secrets"][0]["labels"],
        serde_json::Value::Object(full)
    );

    // One past each limit: 400 naming the limit, never the label. The
    // canary rides in the labels of every case.
    let c = "LABEL-CANARY-77e1";
    let cases = [
        (
            labels_of((0..11).map(|i| (format!("{c}{i}"), c.to_owned()))),
            "`labels` holds more than 10 labels",
        ),
        (
            labels_of([(format!("{c}{}", "k".repeat(64 - c.len())), c.to_owned())]),
            "a label key in `labels` is longer than 63 bytes",
        ),
        (
            labels_of([(c.to_owned(), format!("{c}{}", "v".repeat(257 - c.len())))]),
            "a label value in `labels` is longer than 256 bytes",
        ),
        (
            labels_of([(format!("{c} x"), c.to_owned())]),
            "a label key in `labels` is empty or has characters other than [A-Za-z0-9._/-]",
        ),
        (
            labels_of([(c.to_owned(), format!("{c}\u{7}"))]),
            "a label value in `labels` holds control characters",
        ),
    ];
    let before = b.audit_lines().len();
    for (labels, message) in &cases {
        // The platform may write; the task may not. Both get the 400: the
        // labels are refused before the policy is asked.
        for token in [P, T] {
            let r = b.req("PUT", path, Some(token), Some(&labelled(labels)));
            assert_eq!(
                (r.status, r.code()),
                (400, "invalid_body".into()),
                "{}",
                r.text()
            );
            assert_eq!(
                r.json()["error"]["message"],
                format!("invalid body: {message}")
            );
            assert!(!r.text().contains(c), "{}", r.text());
        }
    }
    let audit = b.audit_lines();
    let refused = &audit[before..];
    assert_eq!(refused.len(), 2 * cases.len());
    for line in refused {
        assert_eq!(line["status"], 400);
        assert!(line["decision"].is_null(), "no decision was made: {line}");
    }
    // The refused writes changed nothing.
    let list = b
        .req("GET", "/v1/secrets/acme/tasks/t-42/", Some(P), None)
        .json();
    assert_eq!(list["secrets"][0]["version"], 1);
}

/// One rule, whatever the store: a trailing `/` on a `PUT`/`DELETE` path,
/// an empty value and a query string are each a `400` before the caller is
/// identified, the policy or the store asked, and nothing is written.
#[test]
fn trailing_slashes_empty_values_and_query_strings_are_400() {
    let b = broker();
    assert_eq!(b.put("acme/tasks/t-42/db", P, "kept").status, 201);
    let auth = format!("Bearer {P}");
    let json = ("content-type", "application/json");
    for path in ["/v1/secrets/acme/tasks/t-42/", "/v1/secrets/"] {
        for method in ["PUT", "DELETE"] {
            // Without a token too: the path is judged first.
            for headers in [vec![("authorization", auth.as_str()), json], vec![json]] {
                let r = b
                    .try_request(method, path, &headers, Some(br#"{"value":"x"}"#))
                    .unwrap();
                assert_eq!(
                    (r.status, r.code()),
                    (400, "invalid_path".into()),
                    "{method} {path}: {}",
                    r.text()
                );
                assert!(
                    r.json()["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("does not end in `/`")
                );
            }
        }
    }

    // Empty values: `400 invalid_body` in either form, the secret unchanged.
    for body in [r#"{"value":""}"#, r#"{"value_base64":""}"#] {
        let r = b.req("PUT", "/v1/secrets/acme/tasks/t-42/db", Some(P), Some(body));
        assert_eq!((r.status, r.code()), (400, "invalid_body".into()), "{body}");
        assert!(r.text().contains("the value is empty"), "{}", r.text());
    }
    // Before authorization: a task (which may not write) gets the same 400.
    let r = b.req(
        "PUT",
        "/v1/secrets/acme/tasks/t-42/db",
        Some(T),
        Some(r#"{"value":""}"#),
    );
    assert_eq!(r.status, 400);
    let r = b.get("acme/tasks/t-42/db", T).json();
    assert_eq!(
        (r["value"].as_str(), r["version"].as_u64()),
        (Some("kept"), Some(1))
    );

    // Query strings: refused on every route, naming the first parameter
    // and nothing after it.
    let t_auth = format!("Bearer {T}");
    for (method, target, name) in [
        (
            "GET",
            "/v1/secrets/acme/tasks/t-42/db?version=1",
            Some("version"),
        ),
        (
            "GET",
            "/v1/secrets/acme/tasks/t-42/?recursive=false&x=y",
            Some("recursive"),
        ),
        ("GET", "/v1/whoami?as=provisioner", Some("as")),
        ("GET", "/readyz?verbose", Some("verbose")),
        (
            "DELETE",
            "/v1/secrets/acme/tasks/t-42/db?force=CANARY-q-value",
            Some("force"),
        ),
        ("GET", "/v1/secrets/acme/tasks/t-42/db?", None),
        (
            "GET",
            "/v1/secrets/acme/tasks/t-42/db?=CANARY-q-value",
            None,
        ),
    ] {
        let r = b
            .try_request(method, target, &[("authorization", t_auth.as_str())], None)
            .unwrap();
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_path".into()),
            "{method} {target}: {}",
            r.text()
        );
        let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains("takes no query parameters"), "{msg}");
        if let Some(n) = name {
            assert!(msg.contains(&format!("`{n}`")), "{msg}");
        }
        assert!(!msg.contains("CANARY") && !msg.contains("=1"), "{msg}");
    }
    let r = b.put_json(
        "acme/tasks/t-42/db?x=1",
        P,
        &serde_json::json!({"value": "changed"}),
        &[],
    );
    assert_eq!((r.status, r.code()), (400, "invalid_path".into()));
    let r = b.get("acme/tasks/t-42/db", T).json();
    assert_eq!(
        (r["value"].as_str(), r["version"].as_u64()),
        (Some("kept"), Some(1))
    );
    // The same paths without a query still work.
    assert_eq!(b.req("GET", "/readyz", None, None).status, 200);
    // Every one of them was audited, none with a query or a value.
    let audit = b.audit_text();
    assert!(!audit.contains("CANARY") && !audit.contains("version=1"));
    assert!(
        b.audit_lines()
            .iter()
            .filter(|l| l["status"] == 400)
            .count()
            >= 17
    );
}

/// A `401` tells the caller what the broker saw of it (its own uid/gid,
/// whether a token arrived), never which principals exist.
#[test]
fn unauthenticated_callers_are_told_what_the_broker_saw() {
    let b = broker();
    let (uid, gid) = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    if uid == 2000 || uid == 2001 {
        eprintln!("*** SKIPPED: the test user is a configured principal ***");
        return;
    }
    let r = b.req("GET", "/v1/whoami", None, None);
    assert_eq!((r.status, r.code()), (401, "unauthenticated".into()));
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains(&format!("uid {uid}, gid {gid}")) && msg.contains("no bearer token"),
        "{msg}"
    );
    let r = b.req("GET", "/v1/whoami", Some("CANARY-wrong-token"), None);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert_eq!(r.status, 401);
    assert!(
        msg.contains(&format!("uid {uid}, gid {gid}")) && msg.contains("and a bearer token"),
        "{msg}"
    );
    for secret in [
        "CANARY",
        "provisioner",
        "task-42",
        "task-uid",
        "platform-uid",
        "2000",
        "2001",
    ] {
        assert!(!msg.contains(secret), "{msg}");
    }
}
