//! How the conformance suite reaches each store: a broker per test, on the
//! shared loopback servers `scripts/backends` starts, isolated by a random
//! store `prefix`. An absent server skips loudly, or fails when `CI` is set.
#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::process::Command;
use std::time::Duration;

use crate::common::{Broker, default_principals};

/// The Vault (OpenBao) dev server's address.
pub fn vault_addr() -> String {
    std::env::var("SB_VAULT_ADDR").unwrap_or_else(|_| "http://127.0.0.1:8200".to_owned())
}

/// The Vault (OpenBao) dev server over https (`scripts/backends start
/// vault-tls`).
pub fn vault_tls_addr() -> String {
    std::env::var("SB_VAULT_TLS_ADDR").unwrap_or_else(|_| "https://127.0.0.1:8202".to_owned())
}

/// The CA that signed the https dev server's certificate (OpenBao makes it
/// at start).
pub fn vault_tls_ca() -> String {
    std::env::var("SB_VAULT_TLS_CA").unwrap_or_else(|_| {
        format!(
            "{}/.backends/vault-tls/vault-ca.pem",
            env!("CARGO_MANIFEST_DIR")
        )
    })
}

/// The moto server's address.
pub fn aws_endpoint() -> String {
    std::env::var("SB_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned())
}

/// The dev server's root token (`scripts/backends` starts it with `root`).
pub const VAULT_ROOT: &str = "root";

/// A random lowercase tag for prefixes and names.
pub fn unique(tag: &str) -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    format!("{tag}-{}", hex::encode(b))
}

fn reachable(url: &str) -> bool {
    let hostport = url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or("");
    hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

/// Whether the server at `url` is up; if not, skips loudly (straight to
/// the terminal, past libtest's capture) or, under CI, fails.
pub fn server_up(name: &str, url: &str, test: &str) -> bool {
    if reachable(url) {
        return true;
    }
    let msg = format!(
        "the {name} server is not reachable at {url}; start it with `scripts/backends start {name}`"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg} (CI is set, so an absent server is a failure)");
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {test} on {name}: {msg} ***\n"
    );
    false
}

/// A running broker and the store section it was started with.
pub struct Started {
    pub broker: Broker,
    /// The store prefix this broker's secrets live under.
    pub prefix: String,
}

pub fn embedded(_test: &str) -> Option<Started> {
    Some(Started {
        broker: Broker::start(&default_principals()),
        prefix: String::new(),
    })
}

/// Writes `token` to `dir/name` (mode 0600) and returns the file name.
pub fn write_secret_file(dir: &tempfile::TempDir, name: &str, token: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, token).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    name.to_owned()
}

/// A broker on the shared Vault with the root token, or `None` (skipped).
pub fn vault(test: &str) -> Option<Started> {
    vault_with(test, VAULT_ROOT, "")
}

/// A broker on the shared Vault with `token`; `extra_store` is added to the
/// `[store]` section.
pub fn vault_with(test: &str, token: &str, extra_store: &str) -> Option<Started> {
    let addr = vault_addr();
    if !server_up("vault", &addr, test) {
        return None;
    }
    let dir = Broker::temp_dir();
    let token_file = write_secret_file(&dir, "vault-token", token);
    let prefix = unique("conf");
    let store = format!(
        "backend = \"vault\"\naddress = \"{addr}\"\nprefix = \"{prefix}\"\ntimeout = \"5s\"\ntoken_file = \"{token_file}\"\n{extra_store}"
    );
    Some(Started {
        broker: Broker::start_with_store(dir, &store, &default_principals()),
        prefix,
    })
}

/// A broker on the shared moto server, or `None` (skipped).
pub fn aws(test: &str) -> Option<Started> {
    let endpoint = aws_endpoint();
    if !server_up("aws", &endpoint, test) {
        return None;
    }
    let prefix = unique("conf");
    let store = format!(
        "backend = \"aws\"\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\nprefix = \"{prefix}\"\ntimeout = \"5s\""
    );
    Some(Started {
        broker: start_aws(Broker::temp_dir(), &store),
        prefix,
    })
}

/// moto accepts any credentials; the broker finds these through the AWS
/// default chain, as it would find real ones.
pub const AWS_TEST_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// Starts an aws broker with moto's test credentials in its environment.
pub fn start_aws(dir: tempfile::TempDir, store: &str) -> Broker {
    Broker::start_with_store_env(dir, store, &default_principals(), AWS_TEST_ENV)
}

/// `curl` against Vault as `token`; returns (status, body).
pub fn vault_api(token: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    vault_call(&VaultAt::shared(), token, method, path, body)
}

/// Which Vault a [`vault_call`] goes to.
pub struct VaultAt {
    /// `http(s)://host:port`.
    pub addr: String,
    /// The CA to trust (for https).
    pub ca: Option<String>,
    /// Sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
}

impl VaultAt {
    /// The shared plain-http dev server, root namespace.
    pub fn shared() -> Self {
        Self {
            addr: vault_addr(),
            ca: None,
            namespace: None,
        }
    }

    /// The shared dev server, inside namespace `ns`.
    pub fn namespace(ns: &str) -> Self {
        Self {
            namespace: Some(ns.to_owned()),
            ..Self::shared()
        }
    }

    /// The shared https dev server, trusting its CA.
    pub fn tls() -> Self {
        Self {
            addr: vault_tls_addr(),
            ca: Some(vault_tls_ca()),
            namespace: None,
        }
    }
}

/// `curl` against the Vault `at` as `token`; returns (status, body).
pub fn vault_call(
    at: &VaultAt,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .args(["-H", &format!("X-Vault-Token: {token}")]);
    if let Some(ca) = &at.ca {
        cmd.args(["--cacert", ca]);
    }
    if let Some(ns) = &at.namespace {
        cmd.args(["-H", &format!("X-Vault-Namespace: {ns}")]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    cmd.arg(format!("{}/v1/{path}", at.addr));
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Runs `serve` on a config with `store` as its `[store]` body in `dir`,
/// with only `env` (and PATH) in its environment, expecting it to refuse
/// to start; returns its stderr. Fails if it is still up after `within`.
pub fn serve_expecting_refusal(
    dir: &tempfile::TempDir,
    store: &str,
    env: &[(&str, &str)],
    within: Duration,
) -> String {
    let config = dir.path().join("refused.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\n{store}\n[listen]\nsocket = \"refused.sock\"\n[policy]\ndir = \"{}/policies\"\n",
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    let stderr = dir.path().join("refused.stderr");
    let mut child = Command::new(crate::common::BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the broker started although it should have refused: {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    // EX_UNAVAILABLE: the store could not be opened.
    assert_eq!(status.code(), Some(69), "{err}");
    err
}

/// The cloudbox (Google Secret Manager) server's endpoint.
pub fn gcp_endpoint() -> String {
    std::env::var("SB_GCP_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8090".to_owned())
}

/// The project the gcp tests use (cloudbox takes any).
pub const GCP_PROJECT: &str = "sb-conformance";

/// A broker on the shared cloudbox server with anonymous credentials, or
/// `None` (skipped).
pub fn gcp(test: &str) -> Option<Started> {
    let endpoint = gcp_endpoint();
    if !server_up("gcp", &endpoint, test) {
        return None;
    }
    let prefix = unique("conf");
    let store = format!(
        "backend = \"gcp\"\nproject = \"{GCP_PROJECT}\"\nendpoint = \"{endpoint}\"\ncredentials = \"anonymous\"\nprefix = \"{prefix}\"\ntimeout = \"5s\""
    );
    Some(Started {
        broker: Broker::start_with_store(Broker::temp_dir(), &store, &default_principals()),
        prefix,
    })
}

/// Our Key Vault test server's URL (tests/azure_kv_server.py).
pub fn azure_url() -> String {
    std::env::var("SB_AZURE_URL").unwrap_or_else(|_| "https://127.0.0.1:8443".to_owned())
}

/// The test server's CA, which the broker trusts through `SSL_CERT_FILE`
/// (the standard variable rustls-native-certs reads) and nothing else.
pub fn azure_ca() -> String {
    std::env::var("SB_AZURE_CA")
        .unwrap_or_else(|_| format!("{}/.backends/azure-tls/ca.pem", env!("CARGO_MANIFEST_DIR")))
}

/// The test server's fixed tenant and client (see tests/azure_kv_server.py).
pub const AZURE_TENANT: &str = "00000000-0000-0000-0000-00000000cafe";
pub const AZURE_CLIENT: &str = "secret-broker-test";
pub const AZURE_CLIENT_SECRET: &str = "test-client-secret";

/// The `[store]` body and broker environment for a Key Vault test server
/// at `url` with CA `ca`: client-secret credentials, the token endpoint
/// through `AZURE_AUTHORITY_HOST`, the CA through `SSL_CERT_FILE`.
pub fn azure_store(
    dir: &tempfile::TempDir,
    url: &str,
    ca: &str,
    extra: &str,
) -> (String, Vec<(String, String)>) {
    let secret = write_secret_file(dir, "sp-secret", AZURE_CLIENT_SECRET);
    let store = format!(
        "backend = \"azure\"\nvault_url = \"{url}\"\ncredentials = \"client_secret\"\ntenant_id = \"{AZURE_TENANT}\"\nclient_id = \"{AZURE_CLIENT}\"\nclient_secret_file = \"{secret}\"\n{extra}"
    );
    let env = vec![
        ("SSL_CERT_FILE".to_owned(), ca.to_owned()),
        ("AZURE_AUTHORITY_HOST".to_owned(), url.to_owned()),
    ];
    (store, env)
}

/// A broker on a real vault when `AZURE_KEYVAULT_URL` is set (credentials
/// from the environment, `credentials = "default"`), else on the shared
/// test server, or `None` (skipped).
pub fn azure(test: &str) -> Option<Started> {
    let prefix = unique("conf");
    let dir = Broker::temp_dir();
    if let Ok(real) = std::env::var("AZURE_KEYVAULT_URL") {
        let store = format!(
            "backend = \"azure\"\nvault_url = \"{real}\"\nprefix = \"{prefix}\"\ntimeout = \"30s\""
        );
        return Some(Started {
            broker: Broker::start_with_store(dir, &store, &default_principals()),
            prefix,
        });
    }
    let url = azure_url();
    if !server_up("azure", &url, test) {
        return None;
    }
    let (store, env) = azure_store(
        &dir,
        &url,
        &azure_ca(),
        &format!("prefix = \"{prefix}\"\ntimeout = \"5s\""),
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Some(Started {
        broker: Broker::start_with_store_env(dir, &store, &default_principals(), &env),
        prefix,
    })
}
