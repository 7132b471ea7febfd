//! The real broker on the real store servers, behind a loopback proxy that
//! refuses or redirects one kind of call:
//!
//! - Labels and values are separate calls in some stores. Whichever one
//!   fails, a read must never release a value with labels that were not
//!   written with it (a label-based `forbid` on read must hold): it sees the
//!   old value with its own labels, the new one with its own, or a 502.
//! - A store that answers a redirect gets a 502 naming it, and nothing (no
//!   token, no value) reaches the redirect's target.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

#[path = "conformance/backends.rs"]
mod backends;

#[path = "common/proxy.rs"]
mod proxy;

use common::{Broker, PLATFORM_TOKEN as P, TASK_TOKEN as T, default_principals};
use proxy::{Answer, Proxy, Request, Sink};
use serde_json::json;

/// The read `forbid` the label tests rely on.
const RESTRICTED: &str = r#"@id("restricted-never-read")
forbid (principal is SecretBroker::Task, action == SecretBroker::Action::"read", resource)
when { resource.hasTag("classification") && resource.getTag("classification") == "restricted" };
"#;

/// The canary value written under `classification=restricted`.
const CANARY: &str = "canary-restricted-7c1e";

/// A broker in `dir` on `store` (its `[store]` body) with the restricted
/// forbid and no read cache, so every read asks the store.
fn broker_in(dir: tempfile::TempDir, store: &str, env: &[(&str, &str)]) -> Broker {
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/restricted.cedar"), RESTRICTED).unwrap();
    let extra = format!("[cache]\nttl = \"0\"\n{}", default_principals());
    Broker::start_with_store_env(dir, store, &extra, env)
}

fn broker(store: &str, env: &[(&str, &str)]) -> Broker {
    broker_in(Broker::temp_dir(), store, env)
}

fn put(b: &Broker, path: &str, value: &str, restricted: bool) -> u16 {
    let labels = if restricted {
        json!({"classification": "restricted"})
    } else {
        json!({})
    };
    b.put_json(path, P, &json!({"value": value, "labels": labels}), &[])
        .status
}

/// A task's read of `path`: never the canary. Returns the status.
fn read(b: &Broker, path: &str) -> u16 {
    let r = b.get(path, T);
    assert!(
        !r.text().contains(CANARY),
        "a restricted value was released: {} {}",
        r.status,
        r.text()
    );
    r.status
}

/// The shared scenario. `label_call` and `value_call` tell the store's
/// label write(s) and value write apart; `seal_call` (stores that seal
/// after the value) the last label write.
fn scenario(
    b: &Broker,
    proxy: &Proxy,
    label_call: fn(&Request) -> bool,
    value_call: fn(&Request) -> bool,
    seal_call: Option<fn(&Request) -> bool>,
) {
    let path = "acme/tasks/t-42/rotated";
    assert_eq!(put(b, path, "open-1", false), 201);
    assert_eq!(b.get(path, T).json()["value"], "open-1");

    // 1. A restricted value whose label write is refused: the old value
    // stays, or the new one is refused by its labels; never released.
    proxy.set(move |r| {
        if label_call(r) {
            Answer::Refuse(503)
        } else {
            Answer::Forward
        }
    });
    let s = put(b, path, CANARY, true);
    assert!(s >= 500, "a write whose labels were refused answered {s}");
    assert!(!proxy.intercepted().is_empty(), "no label call was refused");
    let s = read(b, path);
    assert!(matches!(s, 200 | 403 | 502), "{s}");
    proxy.forward_all();

    // 2. Restricted for real, then a relabel (to no labels) whose value
    // write is refused: the restricted old value must not become readable
    // under the new labels.
    assert!(matches!(put(b, path, CANARY, true), 200 | 201));
    assert_eq!(read(b, path), 403);
    proxy.set(move |r| {
        if value_call(r) {
            Answer::Refuse(503)
        } else {
            Answer::Forward
        }
    });
    let s = put(b, path, "open-2", false);
    assert!(s >= 500, "a write whose value was refused answered {s}");
    let s = read(b, path);
    assert!(matches!(s, 403 | 502), "{s}");
    proxy.forward_all();

    // 3. Sealing refused (the call after the value): the value is not served.
    if let Some(seal_call) = seal_call {
        assert!(matches!(put(b, path, "open-3", false), 200 | 201));
        assert_eq!(b.get(path, T).json()["value"], "open-3");
        proxy.set(move |r| {
            if seal_call(r) {
                Answer::Refuse(503)
            } else {
                Answer::Forward
            }
        });
        let s = put(b, path, CANARY, true);
        assert!(s >= 500, "a write whose seal was refused answered {s}");
        let r = b.get(path, T);
        assert_eq!(
            (r.status, r.code()),
            (502, "backend_error".to_owned()),
            "{}",
            r.text()
        );
        assert!(!r.text().contains(CANARY));
        proxy.forward_all();
    }

    // Once written whole again, it reads normally.
    assert!(matches!(put(b, path, "open-4", false), 200 | 201));
    assert_eq!(b.get(path, T).json()["value"], "open-4");
    assert!(matches!(put(b, path, CANARY, true), 200 | 201));
    assert_eq!(read(b, path), 403);
}

/// A broker on the shared Vault through `addr` (the proxy).
fn vault_broker(addr: &str, test: &str) -> Option<Broker> {
    if !backends::server_up("vault", &backends::vault_addr(), test) {
        return None;
    }
    let dir = Broker::temp_dir();
    let token = backends::write_secret_file(&dir, "vault-token", backends::VAULT_ROOT);
    let prefix = backends::unique("refusals");
    let store = format!(
        "backend = \"vault\"\naddress = \"{addr}\"\nprefix = \"{prefix}\"\ntimeout = \"5s\"\ntoken_file = \"{token}\""
    );
    Some(broker_in(dir, &store, &[]))
}

fn is_vault_metadata_write(r: &Request) -> bool {
    matches!(r.method.as_str(), "POST" | "PUT" | "PATCH") && r.target.contains("/metadata/")
}

fn is_vault_data_write(r: &Request) -> bool {
    r.method == "POST" && r.target.contains("/data/")
}

#[test]
fn vault_labels_and_values_never_part() {
    let proxy = Proxy::start(&backends::vault_addr());
    let Some(b) = vault_broker(&proxy.url, "store_refusals::vault_labels") else {
        return;
    };
    scenario(
        &b,
        &proxy,
        is_vault_metadata_write,
        is_vault_data_write,
        None,
    );
}

fn aws_target(r: &Request) -> &str {
    r.header("x-amz-target").unwrap_or("")
}

fn is_aws_label_call(r: &Request) -> bool {
    matches!(
        aws_target(r),
        "secretsmanager.TagResource" | "secretsmanager.UntagResource"
    )
}

fn is_aws_value_call(r: &Request) -> bool {
    aws_target(r) == "secretsmanager.PutSecretValue"
}

/// The tagging that seals (the only one without the path tag).
fn is_aws_seal_call(r: &Request) -> bool {
    aws_target(r) == "secretsmanager.TagResource" && !r.body_has("secret-broker:path")
}

fn aws_broker(proxy: &Proxy, test: &str) -> Option<Broker> {
    if !backends::server_up("aws", &backends::aws_endpoint(), test) {
        return None;
    }
    let prefix = backends::unique("refusals");
    let store = format!(
        "backend = \"aws\"\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\nprefix = \"{prefix}\"\ntimeout = \"5s\"",
        proxy.url
    );
    Some(broker(&store, backends::AWS_TEST_ENV))
}

#[test]
fn aws_labels_and_values_never_part() {
    let proxy = Proxy::start(&backends::aws_endpoint());
    let Some(b) = aws_broker(&proxy, "store_refusals::aws_labels") else {
        return;
    };
    scenario(
        &b,
        &proxy,
        is_aws_label_call,
        is_aws_value_call,
        Some(is_aws_seal_call),
    );
}

fn is_gcp_label_call(r: &Request) -> bool {
    r.method == "PATCH" && r.target.contains("/secrets/")
}

fn is_gcp_value_call(r: &Request) -> bool {
    r.method == "POST" && r.target.contains(":addVersion")
}

/// The annotation update that seals (not to `pending`).
fn is_gcp_seal_call(r: &Request) -> bool {
    is_gcp_label_call(r) && !r.body_has("\"pending\"")
}

fn gcp_broker(proxy: &Proxy, test: &str) -> Option<Broker> {
    if !backends::server_up("gcp", &backends::gcp_endpoint(), test) {
        return None;
    }
    let prefix = backends::unique("refusals");
    let store = format!(
        "backend = \"gcp\"\nproject = \"{}\"\nendpoint = \"{}\"\ncredentials = \"anonymous\"\nprefix = \"{prefix}\"\ntimeout = \"5s\"",
        backends::GCP_PROJECT,
        proxy.url
    );
    Some(broker(&store, &[]))
}

#[test]
fn gcp_labels_and_values_never_part() {
    let proxy = Proxy::start(&backends::gcp_endpoint());
    let Some(b) = gcp_broker(&proxy, "store_refusals::gcp_labels") else {
        return;
    };
    scenario(
        &b,
        &proxy,
        is_gcp_label_call,
        is_gcp_value_call,
        Some(is_gcp_seal_call),
    );
}

/// Redirects every call `which` picks to the sink (with a path and query
/// that must not show in the error), then writes and reads: both 502
/// naming the redirect, and nothing reaches the sink.
fn redirected(b: &Broker, proxy: &Proxy, which: fn(&Request) -> bool) {
    let sink = Sink::start();
    let target = format!("{}/v1/leak/acme-path?q=query-canary", sink.url);
    let origin = sink.url.clone();
    proxy.set(move |r| {
        if which(r) {
            Answer::Redirect(target.clone())
        } else {
            Answer::Forward
        }
    });
    let path = "acme/tasks/t-42/redirected";
    let r = b.put_json(path, P, &json!({"value": CANARY}), &[]);
    assert_eq!(
        (r.status, r.code()),
        (502, "backend_error".to_owned()),
        "{}",
        r.text()
    );
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("redirect") && msg.contains("307") && msg.contains(&origin),
        "{msg}"
    );
    assert!(
        !msg.contains("acme-path") && !msg.contains("query-canary") && !msg.contains(CANARY),
        "{msg}"
    );
    assert!(!proxy.intercepted().is_empty(), "nothing was redirected");
    assert_eq!(
        sink.connections(),
        0,
        "the redirect was followed: {}",
        sink.received()
    );
    assert!(sink.received().is_empty());
    proxy.forward_all();
}

#[test]
fn vault_redirects_are_refused_not_followed() {
    let proxy = Proxy::start(&backends::vault_addr());
    let Some(b) = vault_broker(&proxy.url, "store_refusals::vault_redirects") else {
        return;
    };
    redirected(&b, &proxy, is_vault_data_write);
    // A read redirected: the token must not follow it either.
    assert_eq!(put(&b, "acme/tasks/t-42/r", "open", false), 201);
    let sink = Sink::start();
    let target = format!("{}/v1/secret/data/x", sink.url);
    proxy.set(move |r| {
        if r.method == "GET" && r.target.contains("/data/") {
            Answer::Redirect(target.clone())
        } else {
            Answer::Forward
        }
    });
    let r = b.get("acme/tasks/t-42/r", T);
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(sink.connections(), 0, "{}", sink.received());
    assert!(!sink.received().contains("root"));
}

#[test]
fn aws_redirects_are_refused_not_followed() {
    let proxy = Proxy::start(&backends::aws_endpoint());
    let Some(b) = aws_broker(&proxy, "store_refusals::aws_redirects") else {
        return;
    };
    redirected(&b, &proxy, |r| {
        matches!(
            aws_target(r),
            "secretsmanager.CreateSecret" | "secretsmanager.PutSecretValue"
        )
    });
}

#[test]
fn gcp_redirects_are_refused_not_followed() {
    let proxy = Proxy::start(&backends::gcp_endpoint());
    let Some(b) = gcp_broker(&proxy, "store_refusals::gcp_redirects") else {
        return;
    };
    redirected(&b, &proxy, is_gcp_value_call);
}
