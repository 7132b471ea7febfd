//! Leak tests: a canary value and a canary token never appear in audit
//! lines, operational logs, error bodies or the store file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

use common::{Broker, PLATFORM_TOKEN as P, TASK_TOKEN as T, default_principals};

#[test]
fn canary_value_and_token_never_leak() {
    let b = Broker::start(&default_principals());
    let value = "VALUE-CANARY-9d8c7b6a";
    let bad_token = "TOKEN-CANARY-1a2b3c4d";
    // Happy paths; a denied read by the platform; wrong tokens.
    let mut bodies = vec![
        b.put("acme/tasks/t-42/c", P, value).text(),
        b.req("GET", "/v1/secrets/acme/", Some(P), None).text(),
        b.get("acme/tasks/t-42/c", P).text(),
        b.get("acme/tasks/t-42/c", bad_token).text(),
        b.req("GET", "/v1/whoami", Some(bad_token), None).text(),
    ];
    // Malformed bodies that carry the value.
    for body in [
        format!(r#"{{"value":"{value}","value_base64":"{value}"}}"#),
        format!(r#"{{"value_base64":"{value}"}}"#),
        format!(r#"{{"value":["{value}"]}}"#),
        format!(r#"{{"value":"{value}","extra":"{value}"}}"#),
        format!(r#"{{"value":"{value}""#),
        format!(r#"{{"value":"{value}","labels":{{"k":["{value}"]}}}}"#),
    ] {
        bodies.push(
            b.req("PUT", "/v1/secrets/acme/tasks/t-42/c", Some(P), Some(&body))
                .text(),
        );
    }
    let r = b
        .try_request(
            "PUT",
            "/v1/secrets/acme/tasks/t-42/c",
            &[
                ("authorization", &format!("Bearer {P}")),
                ("content-type", value),
            ],
            Some(value.as_bytes()),
        )
        .unwrap();
    bodies.push(r.text());
    // Reading it (allowed) does carry the value, in the response only.
    assert!(b.get("acme/tasks/t-42/c", T).text().contains(value));

    for body in &bodies {
        assert!(!body.contains(value), "value in error body: {body}");
        assert!(
            !body.contains(bad_token) && !body.contains(P),
            "token in body: {body}"
        );
    }
    let audit = std::fs::read_to_string(&b.audit).unwrap();
    assert!(!audit.is_empty());
    assert!(
        !audit.contains(value)
            && !audit.contains(bad_token)
            && !audit.contains(P)
            && !audit.contains(T)
    );
    let logs = b.stderr_text();
    assert!(
        !logs.contains(value)
            && !logs.contains(bad_token)
            && !logs.contains(P)
            && !logs.contains(T)
    );
    assert!(
        !logs.contains(&common::sha256_hex(P)),
        "token digest in logs"
    );
}

#[test]
fn one_audit_line_per_request_with_contract_keys() {
    let b = Broker::start(&default_principals());
    let mut n = 0;
    for _ in 0..5 {
        b.put("acme/tasks/t-42/a", P, "v");
        b.get("acme/tasks/t-42/a", T);
        b.get("acme/tasks/t-42/a", P);
        b.req("GET", "/v1/secrets/../x", None, None);
        b.req("GET", "/healthz", None, None);
        n += 5;
    }
    // wait_ready's health probes are audited too: count from the end.
    let audit = b.audit_lines();
    let tail = &audit[audit.len() - n..];
    for line in tail {
        for key in [
            "ts",
            "request_id",
            "principal",
            "peer",
            "action",
            "path",
            "decision",
            "policies",
            "status",
            "latency_us",
        ] {
            assert!(line.get(key).is_some(), "missing {key} in {line}");
        }
    }
    let ids: std::collections::HashSet<_> = audit
        .iter()
        .map(|l| l["request_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), audit.len(), "request ids are unique");
    assert_eq!(
        tail.iter()
            .filter(|l| l["action"] == "write" && l["decision"] == "allow")
            .count(),
        5
    );
    assert_eq!(
        tail.iter()
            .filter(|l| l["action"] == "read" && l["decision"] == "deny")
            .count(),
        5
    );
    assert_eq!(
        tail.iter()
            .filter(|l| l["status"] == 400 && l["decision"].is_null())
            .count(),
        5
    );
    let deny = tail.iter().find(|l| l["decision"] == "deny").unwrap();
    assert!(
        !deny["policies"].as_array().unwrap().is_empty(),
        "a deny names the forbid that decided"
    );
}
