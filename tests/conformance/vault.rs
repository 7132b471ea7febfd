//! Vault-only checks on the shared OpenBao dev server: the shipped writer
//! policy for real, AppRole login with re-login past the token's max TTL,
//! token renewal, and a revoked token reported as the store's refusal.

use std::time::Duration;

use serde_json::{Value, json};

use crate::backends::{
    VAULT_ROOT, server_up, unique, vault_addr, vault_api, vault_with, write_secret_file,
};
use crate::common::{Broker, PLATFORM_TOKEN as P, TASK_TOKEN as T, default_principals};

const WRITER_HCL: &str = include_str!("../../deploy/backend-policies/vault/writer.hcl");

fn api_ok(method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, text) = vault_api(
        VAULT_ROOT,
        method,
        path,
        body.map(|b| b.to_string()).as_deref(),
    );
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {text}"
    );
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Installs a policy and returns its name.
fn policy(hcl: &str) -> String {
    let name = unique("sb-policy");
    api_ok(
        "PUT",
        &format!("sys/policies/acl/{name}"),
        Some(json!({ "policy": hcl })),
    );
    name
}

/// The writer policy plus `read` on values, for a broker that serves tasks.
fn read_write_policy() -> String {
    policy(&format!(
        "{WRITER_HCL}\npath \"secret/data/*\" {{\n  capabilities = [\"create\", \"update\", \"read\"]\n}}\n"
    ))
}

fn token(policies: &[String], extra: Value) -> String {
    let mut body = json!({ "policies": policies, "ttl": "1h" });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let v = api_ok("POST", "auth/token/create", Some(body));
    v["auth"]["client_token"].as_str().unwrap().to_owned()
}

#[test]
fn the_writer_policy_writes_lists_and_deletes_but_cannot_read() {
    let test = "vault_only::writer_policy";
    if !server_up("vault", &vault_addr(), test) {
        return;
    }
    let writer = token(&[policy(WRITER_HCL)], json!({}));
    let s = vault_with(test, &writer, "").unwrap();
    let b = &s.broker;
    let path = "acme/tasks/t-42/db";
    assert_eq!(b.put(path, P, "v1").status, 201);
    let r = b.put(path, P, "v2");
    assert_eq!(
        (r.status, r.json()["version"].as_u64()),
        (200, Some(2)),
        "{}",
        r.text()
    );
    let r = b.put_json(
        path,
        P,
        &json!({"value": "v3", "labels": {"team": "db"}}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = b.put_json(path, P, &json!({"value": "x"}), &[("if-none-match", "*")]);
    assert_eq!(r.status, 412, "{}", r.text());
    let r = b.req("GET", "/v1/secrets/acme/", Some(P), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["secrets"][0]["version"], 3);
    assert_eq!(r.json()["secrets"][0]["labels"], json!({"team": "db"}));
    assert_eq!(b.req("GET", "/readyz", None, None).status, 200);

    // The broker's own read is refused by Vault: 502 naming the store.
    let r = b.get(path, T);
    assert_eq!(
        (r.status, r.code()),
        (502, "backend_error".into()),
        "{}",
        r.text()
    );
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("vault") && msg.contains("policy"), "{msg}");
    // And so is a direct read with that token.
    let (status, _) = vault_api(
        &writer,
        "GET",
        &format!("secret/data/{}/{path}", s.prefix),
        None,
    );
    assert_eq!(status, 403);

    assert_eq!(
        b.req("DELETE", &format!("/v1/secrets/{path}"), Some(P), None)
            .status,
        204
    );
    let (status, _) = vault_api(
        VAULT_ROOT,
        "GET",
        &format!("secret/metadata/{}/{path}", s.prefix),
        None,
    );
    assert_eq!(status, 404, "delete removed every version");
}

#[test]
fn the_reader_policy_reads_its_scope_only() {
    let test = "vault_only::reader_policy";
    if !server_up("vault", &vault_addr(), test) {
        return;
    }
    let prefix = unique("reader");
    let hcl = include_str!("../../deploy/backend-policies/vault/reader-scope.hcl")
        .replace("secret/data/", &format!("secret/data/{prefix}/"))
        .replace("secret/metadata/", &format!("secret/metadata/{prefix}/"));
    let reader = token(&[policy(&hcl)], json!({}));
    for p in [
        "acme/tasks/t-42/a",
        "acme/tasks/t-42/n/b",
        "acme/tasks/t-420/c",
    ] {
        api_ok(
            "POST",
            &format!("secret/data/{prefix}/{p}"),
            Some(json!({"data": {"value": "v"}})),
        );
    }
    let get = |p: &str| vault_api(&reader, "GET", &format!("secret/data/{prefix}/{p}"), None).0;
    assert_eq!(get("acme/tasks/t-42/a"), 200);
    assert_eq!(get("acme/tasks/t-42/n/b"), 200);
    assert_eq!(get("acme/tasks/t-420/c"), 403);
    let (status, _) = vault_api(
        &reader,
        "POST",
        &format!("secret/data/{prefix}/acme/tasks/t-42/a"),
        Some(r#"{"data":{"value":"w"}}"#),
    );
    assert_eq!(status, 403);
}

#[test]
fn approle_logs_in_and_logs_in_again_past_the_max_ttl() {
    let test = "vault_only::approle";
    if !server_up("vault", &vault_addr(), test) {
        return;
    }
    // Enabling twice answers 400 "path is already in use": fine.
    let _ = vault_api(
        VAULT_ROOT,
        "POST",
        "sys/auth/approle",
        Some(r#"{"type":"approle"}"#),
    );
    let role = unique("broker");
    api_ok(
        "POST",
        &format!("auth/approle/role/{role}"),
        Some(
            json!({"token_policies": [read_write_policy()], "token_ttl": "2s", "token_max_ttl": "3s"}),
        ),
    );
    let role_id =
        api_ok("GET", &format!("auth/approle/role/{role}/role-id"), None)["data"]["role_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let secret_id =
        api_ok("POST", &format!("auth/approle/role/{role}/secret-id"), None)["data"]["secret_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let dir = Broker::temp_dir();
    let file = write_secret_file(&dir, "secret-id", &secret_id);
    let prefix = unique("approle");
    let store = format!(
        "backend = \"vault\"\naddress = \"{}\"\nprefix = \"{prefix}\"\nauth = \"approle\"\nrole_id = \"{role_id}\"\nsecret_id_file = \"{file}\"",
        vault_addr()
    );
    let b = Broker::start_with_store(dir, &store, &default_principals());
    assert_eq!(b.put("acme/tasks/t-42/a", P, "v1").status, 201);
    // Past the 3 s max TTL the first token is dead: only a new login works.
    std::thread::sleep(Duration::from_secs(5));
    let r = b.put("acme/tasks/t-42/a", P, "v2");
    assert_eq!(r.status, 200, "{} {}", r.text(), b.stderr_text());
    assert_eq!(b.get("acme/tasks/t-42/a", T).json()["value"], "v2");
    // With a 3 s max TTL, /readyz can land between a token's expiry and the
    // proactive re-login (a known gap, noted on the backends issue); it must
    // come back on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while b.req("GET", "/readyz", None, None).status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "not ready again after re-login"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!b.stderr_text().contains(&secret_id));
}

#[test]
fn a_short_token_is_renewed() {
    let test = "vault_only::renewal";
    if !server_up("vault", &vault_addr(), test) {
        return;
    }
    let short = token(
        &[read_write_policy()],
        json!({"ttl": "3s", "explicit_max_ttl": "1m"}),
    );
    let s = vault_with(test, &short, "").unwrap();
    assert_eq!(s.broker.put("acme/tasks/t-42/a", P, "v1").status, 201);
    std::thread::sleep(Duration::from_secs(5));
    let r = s.broker.put("acme/tasks/t-42/a", P, "v2");
    assert_eq!(r.status, 200, "{} {}", r.text(), s.broker.stderr_text());
    assert!(!s.broker.stderr_text().contains(&short));
}

#[test]
fn a_revoked_token_is_the_store_refusing_not_a_crash() {
    let test = "vault_only::revoked";
    if !server_up("vault", &vault_addr(), test) {
        return;
    }
    let t = token(&[read_write_policy()], json!({}));
    let s = vault_with(test, &t, "").unwrap();
    let b = &s.broker;
    assert_eq!(b.put("acme/tasks/t-42/a", P, "v1").status, 201);
    api_ok("POST", "auth/token/revoke", Some(json!({ "token": t })));
    let r = b.put("acme/tasks/t-42/a", P, "v2");
    assert_eq!(
        (r.status, r.code()),
        (502, "backend_error".into()),
        "{}",
        r.text()
    );
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("`vault`") && msg.contains("token"), "{msg}");
    assert_eq!(b.req("GET", "/readyz", None, None).status, 503);
    assert_eq!(b.req("GET", "/healthz", None, None).status, 200);
    let logs = format!(
        "{}{}",
        b.stderr_text(),
        std::fs::read_to_string(&b.audit).unwrap()
    );
    assert!(!logs.contains(&t), "the token leaked into logs");
}
