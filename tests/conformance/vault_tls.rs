//! The vault store over https, against the OpenBao dev server that
//! `scripts/backends start vault-tls` runs with a CA of its own making:
//! with that CA as `ca_file` the broker works; without it, or pinned to
//! another CA while the system roots trust the server, it refuses to start
//! and says what to check.

use std::time::Duration;

use serde_json::json;

use crate::backends::{
    VAULT_ROOT, VaultAt, serve_expecting_refusal, server_up, unique, vault_call, vault_tls_addr,
    vault_tls_ca, write_secret_file,
};
use crate::common::{Broker, PLATFORM_TOKEN as P, TASK_TOKEN as T, default_principals};

/// A CA that signed nothing the server holds (PEM).
fn unrelated_ca() -> String {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap())
        .unwrap()
        .pem()
}

/// The https server is up, or a loud skip (a failure under CI).
fn up(test: &str) -> bool {
    server_up("vault-tls", &vault_tls_addr(), test)
}

/// A `[store]` body for the https server with the root token, in `dir`.
fn store(dir: &tempfile::TempDir, prefix: &str, extra: &str) -> String {
    let token = write_secret_file(dir, "vault-token", VAULT_ROOT);
    format!(
        "backend = \"vault\"\naddress = \"{}\"\nprefix = \"{prefix}\"\ntimeout = \"5s\"\ntoken_file = \"{token}\"\n{extra}",
        vault_tls_addr()
    )
}

#[test]
fn with_the_ca_file_it_writes_reads_lists_and_deletes_over_https() {
    if !up("vault_tls::with_ca_file") {
        return;
    }
    let dir = Broker::temp_dir();
    // A relative ca_file is found beside the config.
    std::fs::copy(vault_tls_ca(), dir.path().join("vault-ca.pem")).unwrap();
    let prefix = unique("tls");
    let store = store(&dir, &prefix, "ca_file = \"vault-ca.pem\"");
    // The system roots do not trust the dev CA: only ca_file can.
    let roots = dir.path().join("unrelated-roots.pem");
    std::fs::write(&roots, unrelated_ca()).unwrap();
    let b = Broker::start_with_store_env(
        dir,
        &store,
        &default_principals(),
        &[("SSL_CERT_FILE", roots.to_str().unwrap())],
    );
    assert_eq!(b.req("GET", "/readyz", None, None).status, 200);
    let path = "acme/tasks/t-42/tls";
    assert_eq!(b.put(path, P, "over-tls").status, 201);
    let r = b.put_json(
        path,
        P,
        &json!({"value": "over-tls-2", "labels": {"via": "https"}}),
        &[],
    );
    assert_eq!((r.status, r.json()["version"].as_u64()), (200, Some(2)));
    let r = b.get(path, T);
    assert_eq!(
        (r.status, r.json()["value"].as_str()),
        (200, Some("over-tls-2")),
        "{}",
        r.text()
    );
    let r = b.req("GET", "/v1/secrets/acme/", Some(P), None);
    assert_eq!(r.json()["secrets"][0]["labels"], json!({"via": "https"}));
    // The value really is on the https server.
    let (status, body) = vault_call(
        &VaultAt::tls(),
        VAULT_ROOT,
        "GET",
        &format!("secret/data/{prefix}/{path}"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["data"]["value"], "over-tls-2");
    assert_eq!(
        b.req("DELETE", &format!("/v1/secrets/{path}"), Some(P), None)
            .status,
        204
    );
    assert_eq!(b.get(path, T).status, 404);
}

#[test]
fn without_the_ca_it_refuses_to_start_naming_the_store_and_ca_file() {
    if !up("vault_tls::without_ca") {
        return;
    }
    let dir = Broker::temp_dir();
    let roots = dir.path().join("unrelated-roots.pem");
    std::fs::write(&roots, unrelated_ca()).unwrap();
    let store = store(&dir, &unique("tls"), "");
    let err = serve_expecting_refusal(
        &dir,
        &store,
        &[("SSL_CERT_FILE", roots.to_str().unwrap())],
        Duration::from_secs(20),
    );
    assert!(
        err.contains("`vault`")
            && err.contains(&format!("`{}`", vault_tls_addr()))
            && err.contains("store.ca_file")
            && err.contains("UnknownIssuer"),
        "{err}"
    );
}

#[test]
fn the_system_roots_are_used_without_a_ca_file() {
    // The counterpart of the pinning test below: trusted through the
    // standard SSL_CERT_FILE, the same server is accepted.
    if !up("vault_tls::system_roots") {
        return;
    }
    let dir = Broker::temp_dir();
    let store = store(&dir, &unique("tls"), "");
    let ca = vault_tls_ca();
    let b = Broker::start_with_store_env(
        dir,
        &store,
        &default_principals(),
        &[("SSL_CERT_FILE", ca.as_str())],
    );
    assert_eq!(b.req("GET", "/readyz", None, None).status, 200);
    assert_eq!(b.put("acme/tasks/t-42/roots", P, "v").status, 201);
    assert_eq!(b.get("acme/tasks/t-42/roots", T).json()["value"], "v");
}

#[test]
fn pinned_to_another_ca_it_refuses_even_when_the_system_roots_trust_the_server() {
    if !up("vault_tls::pinned") {
        return;
    }
    let dir = Broker::temp_dir();
    std::fs::write(dir.path().join("pinned-ca.pem"), unrelated_ca()).unwrap();
    let store = store(&dir, &unique("tls"), "ca_file = \"pinned-ca.pem\"");
    let ca = vault_tls_ca();
    let err = serve_expecting_refusal(
        &dir,
        &store,
        &[("SSL_CERT_FILE", ca.as_str())],
        Duration::from_secs(20),
    );
    assert!(
        err.contains("`vault`") && err.contains("store.ca_file") && err.contains("UnknownIssuer"),
        "{err}"
    );
}
