//! The conformance checks: the same API-level assertions for every store,
//! over the real binary and its socket. Each takes a started broker.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;

use crate::common::{Broker, PLATFORM_TOKEN as P, TASK_TOKEN as T};

const SCOPE: &str = "acme/tasks/t-42";

fn listed(b: &Broker, scope: &str) -> Vec<serde_json::Value> {
    let r = b.req("GET", &format!("/v1/secrets/{scope}"), Some(P), None);
    assert_eq!(r.status, 200, "list {scope}: {}", r.text());
    r.json()["secrets"].as_array().unwrap().clone()
}

fn paths(b: &Broker, scope: &str) -> Vec<String> {
    listed(b, scope)
        .iter()
        .map(|s| s["path"].as_str().unwrap().to_owned())
        .collect()
}

fn del(b: &Broker, path: &str) -> u16 {
    b.req("DELETE", &format!("/v1/secrets/{path}"), Some(P), None)
        .status
}

pub fn put_get_list_delete(b: &Broker) {
    let path = format!("{SCOPE}/db-password");
    let r = b.put(&path, P, "hunter2");
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["path"].as_str(), v["version"].as_u64()),
        (Some(path.as_str()), Some(1))
    );
    assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(v.get("value").is_none());

    let r = b.get(&path, T);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["value"], "hunter2");
    assert_eq!(r.json()["version"], 1);

    let r = b.put(&path, P, "hunter3");
    assert_eq!(
        (r.status, r.json()["version"].as_u64()),
        (200, Some(2)),
        "{}",
        r.text()
    );
    let r = b.get(&path, T);
    assert_eq!(
        (r.json()["value"].as_str(), r.json()["version"].as_u64()),
        (Some("hunter3"), Some(2))
    );

    let l = listed(b, &format!("{SCOPE}/"));
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0]["path"], path.as_str());
    assert_eq!(l[0]["version"], 2);
    assert!(l[0]["updated_at"].as_str().unwrap().ends_with('Z'));
    assert!(l[0].get("value").is_none());

    assert_eq!(del(b, &path), 204);
    let r = b.get(&path, T);
    assert_eq!((r.status, r.code()), (404, "not_found".into()));
    assert!(listed(b, &format!("{SCOPE}/")).is_empty());
    assert_eq!(del(b, &path), 404);

    // Versions restart at 1 after a delete.
    let r = b.put(&path, P, "again");
    assert_eq!(
        (r.status, r.json()["version"].as_u64()),
        (201, Some(1)),
        "{}",
        r.text()
    );
    assert_eq!(b.get(&path, T).json()["value"], "again");
}

pub fn versions_count_up(b: &Broker) {
    let path = format!("{SCOPE}/counter");
    for n in 1..=5u64 {
        let r = b.put(&path, P, &format!("v{n}"));
        assert_eq!(r.status, if n == 1 { 201 } else { 200 }, "{}", r.text());
        assert_eq!(r.json()["version"].as_u64(), Some(n));
        let g = b.get(&path, T).json();
        assert_eq!(
            (g["version"].as_u64(), g["value"].as_str()),
            (Some(n), Some(format!("v{n}").as_str()))
        );
    }
}

pub fn create_only(b: &Broker) {
    let path = format!("{SCOPE}/once");
    let body = json!({"value": "first"});
    let r = b.put_json(&path, P, &body, &[("if-none-match", "*")]);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = b.put_json(
        &path,
        P,
        &json!({"value": "second"}),
        &[("if-none-match", "*")],
    );
    assert_eq!(
        (r.status, r.code()),
        (412, "precondition_failed".into()),
        "{}",
        r.text()
    );
    let g = b.get(&path, T).json();
    assert_eq!(
        (g["value"].as_str(), g["version"].as_u64()),
        (Some("first"), Some(1))
    );
    // A plain write still adds a version.
    assert_eq!(b.put(&path, P, "third").status, 200);
    assert_eq!(del(b, &path), 204);
    let r = b.put_json(&path, P, &body, &[("if-none-match", "*")]);
    assert_eq!(
        (r.status, r.json()["version"].as_u64()),
        (201, Some(1)),
        "{}",
        r.text()
    );
}

pub fn not_found(b: &Broker) {
    let r = b.get(&format!("{SCOPE}/missing"), T);
    assert_eq!(
        (r.status, r.code()),
        (404, "not_found".into()),
        "{}",
        r.text()
    );
    assert_eq!(del(b, &format!("{SCOPE}/missing")), 404);
    assert!(listed(b, "nothing/here/").is_empty());
    assert!(listed(b, "").is_empty() || listed(b, "").iter().all(|s| s["path"] != "x"));
}

/// Every byte value, and the largest value: 64 KiB, the API's limit, or
/// where the store holds less (Azure Key Vault: 25 KiB) a value just under
/// the store's limit works and a 64 KiB one is a clear store refusal.
pub fn binary_and_maximum_size(b: &Broker, store: &str) {
    // Every byte value, not UTF-8.
    let all: Vec<u8> = (0..=255u8).rev().collect();
    let path = format!("{SCOPE}/binary");
    let r = b.put_json(&path, P, &json!({"value_base64": B64.encode(&all)}), &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    let g = b.get(&path, T).json();
    assert!(g.get("value").is_none());
    assert_eq!(
        B64.decode(g["value_base64"].as_str().unwrap()).unwrap(),
        all
    );
    let raw = b
        .try_request(
            "GET",
            &format!("/v1/secrets/{path}"),
            &[
                ("authorization", &format!("Bearer {T}")),
                ("accept", "application/octet-stream"),
            ],
            None,
        )
        .unwrap();
    assert_eq!((raw.status, raw.body.clone()), (200, all));

    if store == "azure" {
        // Base64 of 18 KiB is 24 KiB: under Key Vault's 25 KiB.
        let mut big = vec![0u8; 18 * 1024];
        getrandom::fill(&mut big).unwrap();
        let path = format!("{SCOPE}/big-binary");
        let r = b.put_json(&path, P, &json!({"value_base64": B64.encode(&big)}), &[]);
        assert_eq!(r.status, 201, "{}", r.text());
        let g = b.get(&path, T).json();
        assert_eq!(
            B64.decode(g["value_base64"].as_str().unwrap()).unwrap(),
            big
        );
        let text = "\"\u{e9}".repeat(8 * 1024);
        let path = format!("{SCOPE}/big-text");
        let r = b.put_json(&path, P, &json!({"value": text}), &[]);
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(
            b.get(&path, T).json()["value"].as_str(),
            Some(text.as_str())
        );
        let r = b.put_json(&path, P, &json!({"value": "x".repeat(64 * 1024)}), &[]);
        assert_eq!(
            (r.status, r.code()),
            (502, "backend_error".into()),
            "{}",
            r.text()
        );
        assert_eq!(b.get(&path, T).json()["version"], 1);
        return;
    }
    // 64 KiB of random bytes, and 64 KiB of UTF-8 that needs escaping.
    let mut big = vec![0u8; 64 * 1024];
    getrandom::fill(&mut big).unwrap();
    let path = format!("{SCOPE}/big-binary");
    let r = b.put_json(&path, P, &json!({"value_base64": B64.encode(&big)}), &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    let g = b.get(&path, T).json();
    assert_eq!(
        B64.decode(g["value_base64"].as_str().unwrap()).unwrap(),
        big
    );

    let text: String = "\"quoted\"\\\n\u{e9}\u{1F600}\u{0}"
        .chars()
        .cycle()
        .scan(0usize, |n, c| {
            *n += c.len_utf8();
            (*n <= 64 * 1024).then_some(c)
        })
        .collect();
    let path = format!("{SCOPE}/big-text");
    let r = b.put_json(&path, P, &json!({"value": text}), &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        b.get(&path, T).json()["value"].as_str(),
        Some(text.as_str())
    );

    // One byte over is refused before any store call.
    let over = vec![b'x'; 64 * 1024 + 1];
    let r = b.put_json(&path, P, &json!({"value_base64": B64.encode(&over)}), &[]);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(b.get(&path, T).json()["version"], 1);
}

/// An empty value is refused the same way whatever the store (`400
/// invalid_body`, before the policy or the store is asked): some stores
/// cannot hold one (AWS Secrets Manager: 1 to 65536 bytes), and on the
/// others it would silently replace a secret with nothing.
pub fn empty_value(b: &Broker, _store: &str) {
    let path = format!("{SCOPE}/empty");
    for body in [json!({"value": ""}), json!({"value_base64": ""})] {
        let r = b.put_json(&path, P, &body, &[]);
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_body".into()),
            "{}",
            r.text()
        );
        assert!(r.text().contains("the value is empty"), "{}", r.text());
    }
    assert_eq!(b.get(&path, T).status, 404);
    // An existing secret keeps its value.
    assert_eq!(b.put(&path, P, "kept").status, 201);
    assert_eq!(b.put(&path, P, "").status, 400);
    let g = b.get(&path, T).json();
    assert_eq!(
        (g["value"].as_str(), g["version"].as_u64()),
        (Some("kept"), Some(1))
    );
}

pub fn prefix_listing(b: &Broker) {
    for p in [
        "acme/t-4/a",
        "acme/t-4/x/y",
        "acme/t-42/b",
        "acme/t-40",
        "acme/t-4x/c",
        "acme/t-3/d",
    ] {
        assert_eq!(b.put(p, P, "v").status, 201, "{p}");
    }
    assert_eq!(paths(b, "acme/t-4/"), ["acme/t-4/a", "acme/t-4/x/y"]);
    assert_eq!(paths(b, "acme/t-42/"), ["acme/t-42/b"]);
    assert_eq!(paths(b, "acme/t-4/x/"), ["acme/t-4/x/y"]);
    assert_eq!(
        paths(b, "acme/"),
        [
            "acme/t-3/d",
            "acme/t-4/a",
            "acme/t-4/x/y",
            "acme/t-40",
            "acme/t-42/b",
            "acme/t-4x/c"
        ]
    );
    assert_eq!(paths(b, "").len(), 6);
    // A secret and a scope may share a name.
    assert_eq!(b.put("acme/t-4", P, "v").status, 201);
    assert_eq!(paths(b, "acme/t-4/"), ["acme/t-4/a", "acme/t-4/x/y"]);
    assert!(paths(b, "acme/").contains(&"acme/t-4".to_owned()));
    // Tasks list their own scope only.
    let r = b.req("GET", "/v1/secrets/acme/", Some(T), None);
    assert_eq!(r.status, 403);
}

pub fn concurrent_writers(b: &Broker) {
    let path = format!("{SCOPE}/contended");
    let writers = 8;
    let results: Vec<(u16, u64, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|i| {
                let path = &path;
                s.spawn(move || {
                    let value = format!("writer-{i}");
                    let r = b.put(path, P, &value);
                    let v = r.json()["version"].as_u64().unwrap_or(0);
                    (r.status, v, value)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, _, _) in &results {
        assert!(matches!(status, 200 | 201), "{results:?}");
    }
    assert_eq!(
        results.iter().filter(|r| r.0 == 201).count(),
        1,
        "{results:?}"
    );
    let versions: BTreeSet<u64> = results.iter().map(|r| r.1).collect();
    assert_eq!(versions, (1..=writers).collect(), "{results:?}");
    // The current value is the one acknowledged with the highest version.
    let (_, top, value) = results.iter().max_by_key(|r| r.1).unwrap();
    let g = b.get(&path, T).json();
    assert_eq!(
        (g["version"].as_u64(), g["value"].as_str()),
        (Some(*top), Some(value.as_str()))
    );
}

pub fn path_encoding_round_trip(b: &Broker) {
    let long_seg = format!("A{}", "b.c_d-E9".repeat(15)); // 121 bytes
    let mut deep = vec!["acme"; 15];
    deep.push("n");
    let deep = deep.join("/");
    let cases = [
        "acme/tasks/t-42/Db.Pass_word-9".to_owned(),
        "acme/tasks/t-42/db.pass_word-9".to_owned(),
        "acme/tasks/t-42/DB.PASS_WORD-9".to_owned(),
        "a/b".to_owned(),
        "0/9".to_owned(),
        "acme/tasks/t-42/x.-_".to_owned(),
        "acme/tasks/t-42/x..y".to_owned(),
        format!("acme/tasks/t-42/{long_seg}"),
        deep,
    ];
    for p in &cases {
        let r = b.put(p, P, &format!("value of {p}"));
        assert_eq!(r.status, 201, "{p}: {}", r.text());
        assert_eq!(r.json()["path"], p.as_str());
    }
    let mut want: Vec<String> = cases.to_vec();
    want.sort();
    assert_eq!(paths(b, ""), want);
    for p in &cases {
        let r = b.get(p, P);
        assert_eq!(r.status, 403); // the platform never reads
        let scope = p.rsplit_once('/').unwrap().0;
        let l = paths(b, &format!("{scope}/"));
        assert!(l.contains(p), "{p} not in {l:?}");
    }
    for p in &cases[..3] {
        assert_eq!(b.get(p, T).json()["value"], format!("value of {p}"));
    }
    for p in &cases {
        assert_eq!(del(b, p), 204, "{p}");
    }
    assert!(paths(b, "").is_empty());
}

pub fn labels(b: &Broker) {
    let path = format!("{SCOPE}/labelled");
    let r = b.put_json(
        &path,
        P,
        &json!({"value": "v1", "labels": {"team": "db", "tier": "gold", "owner/name": "a.b-c_d"}}),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let l = listed(b, &format!("{SCOPE}/"));
    assert_eq!(
        l[0]["labels"],
        json!({"team": "db", "tier": "gold", "owner/name": "a.b-c_d"})
    );
    // Labels are replaced by the next write, not merged.
    let r = b.put_json(
        &path,
        P,
        &json!({"value": "v2", "labels": {"team": "db2"}}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let l = listed(b, &format!("{SCOPE}/"));
    assert_eq!(l[0]["labels"], json!({"team": "db2"}));
    assert_eq!(l[0]["version"], 2);
    let r = b.put(&path, P, "v3");
    assert_eq!(r.status, 200);
    let l = listed(b, &format!("{SCOPE}/"));
    assert_eq!(l[0]["labels"], json!({}));
    assert_eq!(b.get(&path, T).json()["value"], "v3");
}

pub fn ready_and_errors_as_embedded(b: &Broker) {
    let r = b.req("GET", "/readyz", None, None);
    assert_eq!(r.status, 200, "{}", r.text());
    // Denied before the store is asked: same answer whatever the store.
    let r = b.get("acme/tasks/t-43/x", T);
    assert_eq!((r.status, r.code()), (403, "forbidden".into()));
    let r = b.req("GET", "/v1/secrets/acme/../x", Some(P), None);
    assert_eq!((r.status, r.code()), (400, "invalid_path".into()));
    let r = b.get(&format!("{SCOPE}/x"), P);
    assert_eq!((r.status, r.code()), (403, "forbidden".into()));
}

/// A canary value written, read and deleted never shows in the broker's
/// logs (at debug level, SDK and HTTP client logs included) or audit.
pub fn no_value_in_logs(b: &Broker) {
    let canary = "CANARY-5e1f-do-not-log";
    let path = format!("{SCOPE}/canary");
    assert_eq!(b.put(&path, P, canary).status, 201);
    assert_eq!(b.get(&path, T).json()["value"], canary);
    let bin = format!("{canary}\u{0}");
    let r = b.put_json(&path, P, &json!({"value_base64": B64.encode(&bin)}), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(b.get(&path, T).status, 200);
    assert_eq!(del(b, &path), 204);
    let logs = format!(
        "{}\n{}",
        b.stderr_text(),
        std::fs::read_to_string(&b.audit).unwrap_or_default()
    );
    assert!(!logs.is_empty());
    for needle in [canary.to_owned(), B64.encode(canary), B64.encode(&bin)] {
        assert!(!logs.contains(&needle), "`{needle}` leaked into the logs");
    }
}
