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

/// Every way a `PUT` body can be refused, with a canary in the field at
/// fault (a string canary, or a number for the wrong-type cases).
fn refused_bodies(c: &str, n: &str) -> Vec<String> {
    let many: Vec<String> = (0..11).map(|i| format!(r#""{c}{i}":"{c}""#)).collect();
    let long_key = format!("{c}{}", "k".repeat(64));
    let long_value = format!("{c}{}", "v".repeat(256));
    vec![
        // Wrong types, in each field.
        format!(r#"{{"value":{n}}}"#),
        format!(r#"{{"value":-{n}.5e3}}"#),
        format!(r#"{{"value_base64":{n}}}"#),
        format!(r#"{{"value":["{c}"]}}"#),
        format!(r#"{{"value":{{"{c}":"{c}"}}}}"#),
        format!(r#"{{"value_base64":["{c}"]}}"#),
        format!(r#"{{"value_base64":{{"{c}":{n}}}}}"#),
        format!(r#"{{"value":"{c}","labels":"{c}"}}"#),
        format!(r#"{{"value":"{c}","labels":{n}}}"#),
        format!(r#"{{"value":"{c}","labels":["{c}"]}}"#),
        format!(r#"{{"value":"{c}","labels":{{"k":["{c}"]}}}}"#),
        format!(r#"{{"value":"{c}","labels":{{"k":{n}}}}}"#),
        format!(r#""{c}""#),
        format!(r#"["{c}",{n}]"#),
        n.to_owned(),
        // Bad base64.
        format!(r#"{{"value_base64":"{c}!"}}"#),
        format!(r#"{{"value_base64":"{c}"}}"#),
        // Unknown and duplicate fields; both or neither value field.
        format!(r#"{{"value":"{c}","{c}":"{c}"}}"#),
        format!(r#"{{"{c}":{n}}}"#),
        format!(r#"{{"value":"{c}","value":"{c}"}}"#),
        format!(r#"{{"value_base64":"{c}","value_base64":"{c}"}}"#),
        format!(r#"{{"value":"{c}","labels":{{}},"labels":{{"{c}":"{c}"}}}}"#),
        format!(r#"{{"value":"{c}","value_base64":"{c}"}}"#),
        format!(r#"{{"labels":{{"{c}":"{c}"}}}}"#),
        // Bad labels: too many, key too long or malformed, value too long
        // or with control characters, a key twice.
        format!(r#"{{"value":"{c}","labels":{{{}}}}}"#, many.join(",")),
        format!(r#"{{"value":"{c}","labels":{{"{long_key}":"{c}"}}}}"#),
        format!(r#"{{"value":"{c}","labels":{{"{c} x":"{c}"}}}}"#),
        format!(r#"{{"value":"{c}","labels":{{"{c}":"{long_value}"}}}}"#),
        format!(r#"{{"value":"{c}","labels":{{"{c}":"{c}\n"}}}}"#),
        format!(r#"{{"value":"{c}","labels":{{"{c}":"{c}","{c}":"{c}"}}}}"#),
        // Not JSON at all, or cut short.
        format!(r#"{{"value":"{c}""#),
        format!(r#"{{"value":"{c}"}} {c}"#),
        format!(r#"{{"value" "{c}"}}"#),
        c.to_owned(),
    ]
}

#[test]
fn invalid_bodies_never_echo_their_input() {
    let b = Broker::start(&default_principals());
    let (c, n) = ("BODY-CANARY-4f2a9c", "987654321");
    let bodies = refused_bodies(c, n);
    for body in &bodies {
        // As the platform (which may write) and as the task (which may not).
        for token in [P, T] {
            let r = b.req(
                "PUT",
                "/v1/secrets/acme/tasks/t-42/c",
                Some(token),
                Some(body),
            );
            assert_eq!(
                (r.status, r.code()),
                (400, "invalid_body".into()),
                "{body}: {}",
                r.text()
            );
            let text = r.text();
            assert!(
                !text.contains(c) && !text.contains(n) && !text.contains("CANARY"),
                "{body}: {text}"
            );
        }
    }
    let audit = b.audit_text();
    assert!(
        audit
            .lines()
            .filter(|l| l.contains("\"status\":400"))
            .count()
            >= 2 * bodies.len(),
        "every refusal is audited"
    );
    assert!(!audit.contains("CANARY") && !audit.contains(n));
    let logs = b.stderr_text();
    assert!(!logs.contains("CANARY") && !logs.contains(n));
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
