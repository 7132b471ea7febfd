//! Vault-only checks on the shared OpenBao dev server: the shipped writer
//! policy for real, AppRole login with re-login past the token's max TTL
//! (every request across the rollovers answered), a dead token replaced by
//! a fresh login on the request that met it, token renewal, a revoked
//! token reported as the store's refusal, and namespaces.

use std::time::Duration;

use serde_json::{Value, json};

use crate::backends::{
    VAULT_ROOT, VaultAt, server_up, unique, vault_addr, vault_api, vault_call, vault_with,
    write_secret_file,
};
use crate::common::{Broker, PLATFORM_TOKEN as P, TASK_TOKEN as T, default_principals};

const WRITER_HCL: &str = include_str!("../../deploy/backend-policies/vault/writer.hcl");

pub fn api_ok(method: &str, path: &str, body: Option<Value>) -> Value {
    api_ok_at(&VaultAt::shared(), VAULT_ROOT, method, path, body)
}

/// A Vault call that must succeed, to the Vault `at` as `token`.
pub fn api_ok_at(
    at: &VaultAt,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Value {
    let (status, text) = vault_call(
        at,
        token,
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
pub fn read_write_policy() -> String {
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

/// An AppRole role with `policies` and token TTLs; returns (role, role_id,
/// secret_id).
fn approle(policies: &[String], ttl: &str, max_ttl: &str) -> (String, String, String) {
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
        Some(json!({"token_policies": policies, "token_ttl": ttl, "token_max_ttl": max_ttl})),
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
    (role, role_id, secret_id)
}

/// A broker logging in with AppRole; returns it and its store prefix.
fn approle_broker(role_id: &str, secret_id: &str) -> (Broker, String) {
    let dir = Broker::temp_dir();
    let file = write_secret_file(&dir, "secret-id", secret_id);
    let prefix = unique("approle");
    let store = format!(
        "backend = \"vault\"\naddress = \"{}\"\nprefix = \"{prefix}\"\nauth = \"approle\"\nrole_id = \"{role_id}\"\nsecret_id_file = \"{file}\"",
        vault_addr()
    );
    (
        Broker::start_with_store(dir, &store, &default_principals()),
        prefix,
    )
}

/// Revokes, behind the broker's back, every live token whose metadata has
/// `key` = `value` (e.g. AppRole's `role_name`); returns how many.
pub fn revoke_tokens_where(key: &str, value: &str) -> usize {
    let list = api_ok("LIST", "auth/token/accessors", None);
    let mut n = 0;
    for acc in list["data"]["keys"].as_array().unwrap() {
        let body = json!({ "accessor": acc }).to_string();
        let (status, text) = vault_api(
            VAULT_ROOT,
            "POST",
            "auth/token/lookup-accessor",
            Some(&body),
        );
        if status != 200 {
            continue; // expired meanwhile
        }
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["data"]["meta"][key] == value {
            api_ok(
                "POST",
                "auth/token/revoke-accessor",
                Some(json!({ "accessor": acc })),
            );
            n += 1;
        }
    }
    n
}

/// How often the broker logged in to Vault so far.
fn logins(b: &Broker) -> usize {
    b.stderr_text().matches("logged in to vault").count()
}

#[test]
fn approle_logs_in_and_logs_in_again_past_the_max_ttl() {
    let test = "vault_only::approle";
    if !server_up("vault", &vault_addr(), test) {
        return;
    }
    let (_, role_id, secret_id) = approle(&[read_write_policy()], "2s", "3s");
    let (b, _) = approle_broker(&role_id, &secret_id);
    let path = "acme/tasks/t-42/a";
    assert_eq!(b.put(path, P, "v0").status, 201);
    // Tokens live 3 s at most, so within 8 s the broker's token dies, and
    // is replaced, several times over. Every request across those
    // rollovers is answered: one that meets a token just expired (before
    // the upkeep task replaced it) logs in again and is retried, and
    // /readyz never reports the rollover as unready.
    let until = std::time::Instant::now() + Duration::from_secs(8);
    let mut i = 0;
    while std::time::Instant::now() < until {
        i += 1;
        let value = format!("v{i}");
        let r = b.put(path, P, &value);
        assert_eq!(r.status, 200, "put #{i}: {} {}", r.text(), b.stderr_text());
        let r = b.get(path, T);
        assert_eq!(
            (r.status, r.json()["value"].as_str()),
            (200, Some(value.as_str())),
            "get #{i}: {}",
            r.text()
        );
        let r = b.req("GET", "/v1/secrets/acme/", Some(P), None);
        assert_eq!(r.status, 200, "list #{i}: {}", r.text());
        assert_eq!(r.json()["secrets"][0]["version"].as_u64(), Some(i + 1));
        let r = b.req("GET", "/readyz", None, None);
        assert_eq!(r.status, 200, "readyz #{i}: {}", r.text());
    }
    // The loop did cross rollovers: past the first login, at least two more.
    assert!(logins(&b) >= 3, "{}", b.stderr_text());
    assert!(!b.stderr_text().contains(&secret_id));
}

#[test]
fn a_token_revoked_behind_the_brokers_back_is_replaced_on_the_request_that_meets_it() {
    let test = "vault_only::approle_revoked";
    if !server_up("vault", &vault_addr(), test) {
        return;
    }
    // A long TTL: the upkeep task would not replace the token for 40 min.
    let (role, role_id, secret_id) = approle(&[read_write_policy()], "1h", "2h");
    let (b, prefix) = approle_broker(&role_id, &secret_id);
    let path = "acme/tasks/t-42/revoked";
    assert_eq!(b.put(path, P, "v1").status, 201);
    assert_eq!(logins(&b), 1);

    // Each kind of call meets a dead token once: read, write, list, delete
    // and the health check all log in again and are answered.
    let mut expected_logins = 1;
    let mut revoke = || {
        assert_eq!(revoke_tokens_where("role_name", &role), 1);
        expected_logins += 1;
        expected_logins
    };
    let want = revoke();
    let r = b.get(path, T);
    assert_eq!(
        (r.status, r.json()["value"].as_str()),
        (200, Some("v1")),
        "{}",
        r.text()
    );
    assert_eq!(logins(&b), want);

    let want = revoke();
    let r = b.put(path, P, "v2");
    assert_eq!(
        (r.status, r.json()["version"].as_u64()),
        (200, Some(2)),
        "{}",
        r.text()
    );
    assert_eq!(logins(&b), want);
    // Written exactly once: version 2 is the current and only new version.
    let meta = api_ok("GET", &format!("secret/metadata/{prefix}/{path}"), None);
    assert_eq!(meta["data"]["current_version"], 2);

    let want = revoke();
    let r = b.req("GET", "/v1/secrets/acme/", Some(P), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(logins(&b), want);

    let want = revoke();
    assert_eq!(b.req("GET", "/readyz", None, None).status, 200);
    assert_eq!(logins(&b), want);

    let want = revoke();
    let r = b.req("DELETE", &format!("/v1/secrets/{path}"), Some(P), None);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(logins(&b), want);
    assert!(b.stderr_text().contains("logged in again"));
    assert!(!b.stderr_text().contains(&secret_id));
}

#[test]
fn a_policy_refusal_is_not_mistaken_for_a_dead_token() {
    let test = "vault_only::approle_policy_refusal";
    if !server_up("vault", &vault_addr(), test) {
        return;
    }
    // The writer policy cannot read values: Vault answers 403, as for a
    // dead token, but the token is alive, so no new login is made.
    let (_, role_id, secret_id) = approle(&[policy(WRITER_HCL)], "1h", "2h");
    let (b, _) = approle_broker(&role_id, &secret_id);
    let path = "acme/tasks/t-42/denied";
    assert_eq!(b.put(path, P, "v1").status, 201);
    for _ in 0..3 {
        let r = b.get(path, T);
        assert_eq!(
            (r.status, r.code()),
            (502, "backend_error".into()),
            "{}",
            r.text()
        );
    }
    assert_eq!(logins(&b), 1, "{}", b.stderr_text());
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

#[test]
fn a_rotated_token_file_is_used_when_vault_refuses_the_old_token() {
    let test = "vault_only::token_file_rotated";
    if !server_up("vault", &vault_addr(), test) {
        return;
    }
    let old = token(&[read_write_policy()], json!({}));
    let s = vault_with(test, &old, "").unwrap();
    let b = &s.broker;
    assert_eq!(b.put("acme/tasks/t-42/a", P, "v1").status, 201);
    // The token file is rotated and the old token revoked at once; the
    // upkeep task would notice only much later (the token has an hour).
    let new = token(&[read_write_policy()], json!({}));
    write_secret_file(&b.dir, "vault-token", &new);
    api_ok("POST", "auth/token/revoke", Some(json!({ "token": old })));
    let r = b.put("acme/tasks/t-42/a", P, "v2");
    assert_eq!(
        (r.status, r.json()["version"].as_u64()),
        (200, Some(2)),
        "{}",
        r.text()
    );
    assert_eq!(b.get("acme/tasks/t-42/a", T).json()["value"], "v2");
    assert_eq!(b.req("GET", "/readyz", None, None).status, 200);
    let logs = b.stderr_text();
    assert!(
        !logs.contains(&old) && !logs.contains(&new),
        "a token leaked into logs"
    );
}

#[test]
fn a_namespace_holds_the_brokers_secrets_and_the_root_mount_does_not() {
    let test = "vault_only::namespace";
    if !server_up("vault", &vault_addr(), test) {
        return;
    }
    // A nested namespace, with its own KV v2 mount at `secret/` (the same
    // name as the root's, so a broker ignoring the namespace would write
    // to the root mount instead) and a token of its own.
    let (parent, child) = (unique("sb-ns"), unique("team"));
    api_ok("POST", &format!("sys/namespaces/{parent}"), Some(json!({})));
    let at_parent = VaultAt::namespace(&parent);
    api_ok_at(
        &at_parent,
        VAULT_ROOT,
        "POST",
        &format!("sys/namespaces/{child}"),
        Some(json!({})),
    );
    let ns = format!("{parent}/{child}");
    let at = VaultAt::namespace(&ns);
    api_ok_at(
        &at,
        VAULT_ROOT,
        "POST",
        "sys/mounts/secret",
        Some(json!({"type": "kv", "options": {"version": "2"}})),
    );
    let rw = format!(
        "{WRITER_HCL}\npath \"secret/data/*\" {{\n  capabilities = [\"create\", \"update\", \"read\"]\n}}\n"
    );
    api_ok_at(
        &at,
        VAULT_ROOT,
        "PUT",
        "sys/policies/acl/broker",
        Some(json!({ "policy": rw })),
    );
    let ns_token = api_ok_at(
        &at,
        VAULT_ROOT,
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["broker"], "ttl": "1h"})),
    )["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let s = vault_with(test, &ns_token, &format!("namespace = \"/{ns}/\"")).unwrap();
    let (b, prefix) = (&s.broker, &s.prefix);
    assert_eq!(b.req("GET", "/readyz", None, None).status, 200);
    let path = "acme/tasks/t-42/ns";
    assert_eq!(b.put(path, P, "in-ns").status, 201);
    let r = b.put_json(
        path,
        P,
        &json!({"value": "in-ns-2", "labels": {"ns": "yes"}}),
        &[],
    );
    assert_eq!(
        (r.status, r.json()["version"].as_u64()),
        (200, Some(2)),
        "{}",
        r.text()
    );
    assert_eq!(b.get(path, T).json()["value"], "in-ns-2");
    let r = b.req("GET", "/v1/secrets/acme/", Some(P), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["secrets"][0]["path"], path);
    assert_eq!(r.json()["secrets"][0]["labels"], json!({"ns": "yes"}));

    // Vault's own view: inside the namespace, not at the root mount.
    let key = format!("secret/data/{prefix}/{path}");
    let inside = api_ok_at(&at, VAULT_ROOT, "GET", &key, None);
    assert_eq!(inside["data"]["data"]["value"], "in-ns-2");
    assert_eq!(inside["data"]["metadata"]["version"], 2);
    assert_eq!(vault_api(VAULT_ROOT, "GET", &key, None).0, 404);
    assert_eq!(
        vault_call(&at_parent, VAULT_ROOT, "GET", &key, None).0,
        404,
        "not in the parent namespace either"
    );

    assert_eq!(
        b.req("DELETE", &format!("/v1/secrets/{path}"), Some(P), None)
            .status,
        204
    );
    let (status, _) = vault_call(
        &at,
        VAULT_ROOT,
        "GET",
        &format!("secret/metadata/{prefix}/{path}"),
        None,
    );
    assert_eq!(status, 404, "deleted inside the namespace");
    assert_eq!(b.get(path, T).status, 404);
}
