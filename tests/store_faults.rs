//! Store faults, each on a private server on its own loopback port so the
//! shared ones are untouched: a frozen server (SIGSTOP) gives 504, a dead
//! one (killed by PID) 503, the broker stays up throughout, and it recovers
//! when the server is back. A write the store did not confirm is never
//! acknowledged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

#[path = "conformance/backends.rs"]
mod backends;

#[path = "common/servers.rs"]
mod servers;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Broker, PLATFORM_TOKEN as P, TASK_TOKEN as T, default_principals};
use servers::{PrivateAzure, Server, free_port, server_bin};

fn ready_status(b: &Broker) -> u16 {
    b.req("GET", "/readyz", None, None).status
}

fn wait_ready(b: &Broker, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready_status(b) != want {
        assert!(Instant::now() < deadline, "/readyz never answered {want}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The shared scenario: freeze, thaw, kill, restart.
fn faults(b: &Broker, server: &mut Server, timeout: Duration) {
    let path = "acme/tasks/t-42/db";
    assert_eq!(b.put(path, P, "v1").status, 201);
    assert_eq!(b.get(path, T).json()["value"], "v1");
    assert_eq!(ready_status(b), 200);

    // Frozen: connections are accepted but never answered.
    server.signal("STOP");
    let started = Instant::now();
    let r = b.put(path, P, "value-unconfirmed");
    assert_eq!(
        (r.status, r.code()),
        (504, "backend_timeout".into()),
        "{}",
        r.text()
    );
    assert!(
        started.elapsed() < timeout * 4,
        "took {:?}",
        started.elapsed()
    );
    let r = b.get(path, T);
    assert_eq!(
        (r.status, r.code()),
        (504, "backend_timeout".into()),
        "{}",
        r.text()
    );
    assert_eq!(ready_status(b), 503);
    assert_eq!(b.req("GET", "/healthz", None, None).status, 200);
    server.signal("CONT");
    wait_ready(b, 200);

    // The unconfirmed write was not acknowledged; whether the server applied
    // it once thawed is its business, and the versions stay consistent.
    let listed = b
        .req("GET", "/v1/secrets/acme/tasks/t-42/", Some(P), None)
        .json();
    let v = listed["secrets"][0]["version"].as_u64().unwrap();
    assert!(v == 1 || v == 2, "{listed}");
    let r = b.put(path, P, "v3");
    assert_eq!(
        (r.status, r.json()["version"].as_u64()),
        (200, Some(v + 1)),
        "{}",
        r.text()
    );
    assert_eq!(b.get(path, T).json()["value"], "v3");

    // Dead: connections are refused.
    server.kill();
    let r = b.put(path, P, "value-lost");
    assert_eq!(
        (r.status, r.code()),
        (503, "unavailable".into()),
        "{}",
        r.text()
    );
    let r = b.get(path, T);
    assert_eq!(
        (r.status, r.code()),
        (503, "unavailable".into()),
        "{}",
        r.text()
    );
    let r = b.req("GET", "/v1/secrets/acme/", Some(P), None);
    assert_eq!(r.status, 503, "{}", r.text());
    wait_ready(b, 503);
    assert_eq!(b.req("GET", "/healthz", None, None).status, 200);

    // Back (a dev server starts empty): the same broker works again.
    server.restart();
    wait_ready(b, 200);
    let r = b.put(path, P, "value-after-restart");
    assert_eq!(
        (r.status, r.json()["version"].as_u64()),
        (201, Some(1)),
        "{}",
        r.text()
    );
    assert_eq!(b.get(path, T).json()["value"], "value-after-restart");
    let log = b.stderr_text();
    for leaked in ["value-unconfirmed", "value-lost", "value-after-restart"] {
        assert!(!log.contains(leaked), "`{leaked}` in the logs");
    }
}

fn no_cache() -> String {
    format!("[cache]\nttl = \"0\"\n{}", default_principals())
}

#[test]
fn vault_frozen_dead_and_back() {
    let Some((mut server, dir, store)) = private_vault("store_faults::vault") else {
        return;
    };
    let b = Broker::start_with_store(dir, &store, &no_cache());
    faults(&b, &mut server, Duration::from_secs(1));
}

/// A private OpenBao dev server on a free port, and its store config.
fn private_vault(test: &str) -> Option<(Server, tempfile::TempDir, String)> {
    let bin = server_bin("SB_BAO_BIN", "bao", test)?;
    let port = free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let server = Server::launch(
        Box::new(move || {
            Command::new(&bin)
                .args(["server", "-dev", "-dev-root-token-id=root"])
                .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        }),
        format!("{addr}/v1/sys/health"),
    );
    let dir = Broker::temp_dir();
    let token = backends::write_secret_file(&dir, "token", "root");
    let store = format!(
        "backend = \"vault\"\naddress = \"{addr}\"\ntimeout = \"1s\"\ntoken_file = \"{token}\""
    );
    Some((server, dir, store))
}

/// `stale_if_error`: past its TTL a cached value is served only while the
/// store fails, and only within the window; without a window the failure
/// shows. Both brokers front the same frozen server.
#[test]
fn stale_if_error_serves_cached_reads_only_while_the_store_fails() {
    let Some((server, dir, store)) = private_vault("store_faults::stale") else {
        return;
    };
    let stale = Broker::start_with_store(
        dir,
        &store,
        &format!(
            "{}\n[cache]\nttl = \"1s\"\nstale_if_error = \"1h\"\n",
            default_principals()
        ),
    );
    let dir2 = Broker::temp_dir();
    let token2 = backends::write_secret_file(&dir2, "token", "root");
    let store2 = store.replace(
        &store[store.find("token_file").unwrap()..],
        &format!("token_file = \"{token2}\""),
    );
    let strict = Broker::start_with_store(
        dir2,
        &store2,
        &format!("{}\n[cache]\nttl = \"1s\"\n", default_principals()),
    );
    let path = "acme/tasks/t-42/stale";
    assert_eq!(stale.put(path, P, "cached-value").status, 201);
    assert_eq!(stale.get(path, T).json()["value"], "cached-value");
    assert_eq!(strict.get(path, T).json()["value"], "cached-value");

    server.signal("STOP");
    std::thread::sleep(Duration::from_millis(1500));
    // Past the TTL, store frozen: the stale window serves the cached value...
    let r = stale.get(path, T);
    assert_eq!(
        (r.status, r.json()["value"].as_str()),
        (200, Some("cached-value"))
    );
    // ...without one, the failure shows (and nothing cached is served).
    let r = strict.get(path, T);
    assert_eq!((r.status, r.code()), (504, "backend_timeout".into()));
    // Authorization still comes first: a denied caller gets 403, not a stale value.
    assert_eq!(stale.get(path, P).status, 403);
    // Writes are never acknowledged from the cache.
    assert_eq!(stale.put(path, P, "new").status, 504);

    server.signal("CONT");
    // Back to normal: fresh reads from the store, new writes acknowledged.
    wait_ready(&stale, 200);
    assert_eq!(stale.put(path, P, "after").status, 200);
    assert_eq!(stale.get(path, T).json()["value"], "after");
}

#[test]
fn aws_frozen_dead_and_back() {
    let test = "store_faults::aws";
    let Some(bin) = server_bin("SB_MOTO_BIN", "moto_server", test) else {
        return;
    };
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut server = Server::launch(
        Box::new(move || {
            Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        }),
        format!("{endpoint}/moto-api/"),
    );
    let store = format!(
        "backend = \"aws\"\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\ntimeout = \"2s\""
    );
    let b = Broker::start_with_store_env(
        Broker::temp_dir(),
        &store,
        &no_cache(),
        backends::AWS_TEST_ENV,
    );
    faults(&b, &mut server, Duration::from_secs(2));
}

#[test]
fn aws_without_credentials_is_refused_at_start_naming_what_to_check() {
    let test = "store_faults::aws_no_credentials";
    if !backends::server_up("aws", &backends::aws_endpoint(), test) {
        return;
    }
    let dir = Broker::temp_dir();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nbackend = \"aws\"\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[listen]\nsocket = \"api.sock\"\n[policy]\ndir = \"{}/policies\"\n",
            backends::aws_endpoint(),
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    let out = Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", dir.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("`aws`") && err.contains("credential"), "{err}");
}

#[test]
fn gcp_frozen_dead_and_back() {
    let test = "store_faults::gcp";
    let Some(bin) = server_bin("SB_CLOUDBOX_BIN", "cloudbox-secretmanager", test) else {
        return;
    };
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut server = Server::launch(
        Box::new(move || {
            // The launcher `exec`s the server, so this PID is the server's.
            Command::new(&bin)
                .args(["127.0.0.1", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        }),
        format!("{endpoint}/v1/projects/ready/secrets"),
    );
    let store = format!(
        "backend = \"gcp\"\nproject = \"faults\"\nendpoint = \"{endpoint}\"\ncredentials = \"anonymous\"\ntimeout = \"2s\""
    );
    let b = Broker::start_with_store(Broker::temp_dir(), &store, &no_cache());
    faults(&b, &mut server, Duration::from_secs(2));
}

#[test]
fn gcp_without_credentials_is_refused_at_start_naming_what_to_check() {
    // Default credentials, with no ADC file, no gcloud config and the
    // metadata server pointed at a closed port: a clear start-up error.
    let test = "store_faults::gcp_no_credentials";
    if !backends::server_up("gcp", &backends::gcp_endpoint(), test) {
        return;
    }
    let dir = Broker::temp_dir();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nbackend = \"gcp\"\nproject = \"p-1\"\nendpoint = \"{}\"\ntimeout = \"3s\"\n[listen]\nsocket = \"api.sock\"\n[policy]\ndir = \"{}/policies\"\n",
            backends::gcp_endpoint(),
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    let out = Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", dir.path())
        .env("GCE_METADATA_HOST", "127.0.0.1:9")
        .env("NO_GCE_CHECK", "True")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("`gcp`") && err.contains("credentials"),
        "{err}"
    );
}

#[test]
fn azure_frozen_dead_and_back() {
    let Some(mut az) = PrivateAzure::start("store_faults::azure") else {
        return;
    };
    let dir = Broker::temp_dir();
    let (store, env) = backends::azure_store(&dir, &az.url, &az.ca, "timeout = \"2s\"");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let b = Broker::start_with_store_env(dir, &store, &no_cache(), &env);
    faults(&b, &mut az.server, Duration::from_secs(2));
}

#[test]
fn azure_with_a_wrong_client_secret_is_refused_at_start_naming_what_to_check() {
    let test = "store_faults::azure_bad_secret";
    if !backends::server_up("azure", &backends::azure_url(), test) {
        return;
    }
    let dir = Broker::temp_dir();
    let canary = "CANARY-wrong-client-secret";
    let secret = backends::write_secret_file(&dir, "sp", canary);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nbackend = \"azure\"\nvault_url = \"{}\"\ncredentials = \"client_secret\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\nclient_secret_file = \"{secret}\"\n[listen]\nsocket = \"api.sock\"\n[policy]\ndir = \"{}/policies\"\n",
            backends::azure_url(),
            backends::AZURE_TENANT,
            backends::AZURE_CLIENT,
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    let out = Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SSL_CERT_FILE", backends::azure_ca())
        .env("AZURE_AUTHORITY_HOST", backends::azure_url())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("`azure`") && err.contains("credentials"),
        "{err}"
    );
    assert!(!err.contains(canary), "{err}");
}

#[test]
fn azure_behind_a_certificate_the_roots_do_not_trust_is_refused_at_start() {
    let test = "store_faults::azure_untrusted";
    if !backends::server_up("azure", &backends::azure_url(), test) {
        return;
    }
    // The system roots, which do not hold the test CA.
    let roots = "/etc/ssl/certs/ca-certificates.crt";
    if !std::path::Path::new(roots).exists() {
        panic!("{test}: {roots} is missing (ca-certificates)");
    }
    let dir = Broker::temp_dir();
    let (store, env) = backends::azure_store(&dir, &backends::azure_url(), roots, "");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // Not "unavailable" (started unready, retrying forever): a certificate
    // that does not verify is a configuration error, named as such.
    let err = backends::serve_expecting_refusal(&dir, &store, &env, Duration::from_secs(20));
    assert!(
        err.contains("`azure`") && err.contains("cannot verify the TLS certificate"),
        "{err}"
    );
}
