//! The vault store's Kubernetes auth against the shared OpenBao dev server,
//! whose kubernetes auth method asks our TokenReview test server
//! (tests/k8s_tokenreview_server.py, started and stopped here by PID) in
//! place of a cluster's API server: a service-account JWT the "cluster"
//! authenticates logs in (and in again when its Vault token dies); one it
//! does not, or one for a service account the role is not bound to, stops
//! the broker at start with what to check.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde_json::{Value, json};

use crate::backends::{
    VAULT_ROOT, serve_expecting_refusal, server_up, unique, vault_addr, vault_api,
    write_secret_file,
};
use crate::common::{Broker, PLATFORM_TOKEN as P, TASK_TOKEN as T, default_principals};
use crate::vault_only::{api_ok, read_write_policy, revoke_tokens_where};

/// The TokenReview test server, killed (by its PID) when dropped.
struct TokenReviewServer {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl TokenReviewServer {
    /// Starts the server knowing `accounts` (token, namespace, name, uid)
    /// and requiring `reviewer` as the reviewer's bearer token.
    fn start(accounts: &[(&str, &str, &str, &str)], reviewer: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tokens: Vec<Value> = accounts
            .iter()
            .map(|(token, ns, name, uid)| {
                json!({"token": token, "namespace": ns, "name": name, "uid": uid, "audiences": ["vault"]})
            })
            .collect();
        let accounts_file = dir.path().join("accounts.json");
        std::fs::write(&accounts_file, json!({ "tokens": tokens }).to_string()).unwrap();
        let reviewer_file = dir.path().join("reviewer");
        std::fs::write(&reviewer_file, reviewer).unwrap();
        let (port_file, log) = (dir.path().join("port"), dir.path().join("reviews.jsonl"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/k8s_tokenreview_server.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("--port-file")
            .arg(&port_file)
            .arg("--accounts")
            .arg(&accounts_file)
            .arg("--reviewer-token-file")
            .arg(&reviewer_file)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the TokenReview test server");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().to_owned();
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the TokenReview test server exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the TokenReview test server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    /// The reviews so far: (username or null, authenticated).
    fn reviews(&self) -> Vec<(Option<String>, bool)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["username"].as_str().map(str::to_owned),
                    v["authenticated"].as_bool().unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for TokenReviewServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service-account JWT shaped like a projected token of `namespace`'s
/// `name`, for audience `vault`. Vault does not check its signature (no
/// `pem_keys` configured: the TokenReview vouches for it), so the
/// signature is random bytes of an RS256 signature's length.
fn service_account_jwt(namespace: &str, name: &str, uid: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"alg": "RS256", "kid": "sb-test", "typ": "JWT"});
    let claims = json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "aud": ["vault"],
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "kubernetes.io": {
            "namespace": namespace,
            "pod": {"name": format!("{name}-0"), "uid": unique("pod")},
            "serviceaccount": {"name": name, "uid": uid},
        },
    });
    let mut sig = [0u8; 256];
    getrandom::fill(&mut sig).unwrap();
    format!(
        "{}.{}.{}",
        B64URL.encode(header.to_string()),
        B64URL.encode(claims.to_string()),
        B64URL.encode(sig)
    )
}

/// A CA certificate (PEM). OpenBao wants `kubernetes_ca_cert` whenever
/// `disable_local_ca_jwt` is set, even for an `http://` host.
fn some_ca() -> String {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap())
        .unwrap()
        .pem()
}

/// A `[store]` body logging in with Kubernetes auth as `role` with the JWT
/// in `dir/jwt`.
fn store(dir: &tempfile::TempDir, role: &str, jwt: &str, prefix: &str) -> String {
    let file = write_secret_file(dir, "jwt", jwt);
    format!(
        "backend = \"vault\"\naddress = \"{}\"\nprefix = \"{prefix}\"\ntimeout = \"5s\"\nauth = \"kubernetes\"\nrole = \"{role}\"\njwt_file = \"{file}\"",
        vault_addr()
    )
}

// One test, not several: `auth/kubernetes/config` (the TokenReview
// server's address) is one per mount on the shared server.
#[test]
fn kubernetes_auth_logs_in_with_a_reviewed_service_account_and_refuses_others() {
    let test = "vault_k8s::kubernetes_auth";
    if !server_up("vault", &vault_addr(), test) {
        return;
    }
    let sa_ns = unique("sb-k8s");
    let (good_uid, intruder_uid) = (unique("uid"), unique("uid"));
    let good = service_account_jwt(&sa_ns, "secret-broker", &good_uid);
    let intruder = service_account_jwt(&sa_ns, "intruder", &intruder_uid);
    // Well-formed, for the right account, but not a token the cluster issued.
    let forged = service_account_jwt(&sa_ns, "secret-broker", &good_uid);
    let reviewer = unique("reviewer-token");
    let cluster = TokenReviewServer::start(
        &[
            (
                good.as_str(),
                sa_ns.as_str(),
                "secret-broker",
                good_uid.as_str(),
            ),
            (
                intruder.as_str(),
                sa_ns.as_str(),
                "intruder",
                intruder_uid.as_str(),
            ),
        ],
        &reviewer,
    );

    // As README's walkthrough: a role per service account, audience `vault`.
    let _ = vault_api(
        VAULT_ROOT,
        "POST",
        "sys/auth/kubernetes",
        Some(r#"{"type":"kubernetes"}"#),
    );
    api_ok(
        "POST",
        "auth/kubernetes/config",
        Some(json!({
            "kubernetes_host": cluster.url,
            "token_reviewer_jwt": reviewer,
            "disable_local_ca_jwt": true,
            "kubernetes_ca_cert": some_ca(),
        })),
    );
    let role = unique("broker");
    api_ok(
        "POST",
        &format!("auth/kubernetes/role/{role}"),
        Some(json!({
            "bound_service_account_names": ["secret-broker"],
            "bound_service_account_namespaces": [sa_ns],
            "audience": "vault",
            "token_policies": [read_write_policy()],
            "token_ttl": "1h",
        })),
    );
    let username = format!("system:serviceaccount:{sa_ns}:secret-broker");

    // The bound service account logs in, vouched for by the TokenReview.
    let dir = Broker::temp_dir();
    let store_body = store(&dir, &role, &good, &unique("k8s"));
    let b = Broker::start_with_store(dir, &store_body, &default_principals());
    assert_eq!(cluster.reviews(), vec![(Some(username.clone()), true)]);
    assert_eq!(b.req("GET", "/readyz", None, None).status, 200);
    let path = "acme/tasks/t-42/k8s";
    assert_eq!(b.put(path, P, "via-k8s").status, 201);
    assert_eq!(b.get(path, T).json()["value"], "via-k8s");
    let r = b.req("GET", "/v1/secrets/acme/", Some(P), None);
    assert_eq!(r.json()["secrets"][0]["path"], path, "{}", r.text());

    // Its Vault token dies: the next request logs in again with the JWT
    // (a second review) and is answered.
    assert_eq!(revoke_tokens_where("role", &role), 1);
    let r = b.put(path, P, "via-k8s-2");
    assert_eq!(
        (r.status, r.json()["version"].as_u64()),
        (200, Some(2)),
        "{}",
        r.text()
    );
    assert_eq!(cluster.reviews().len(), 2);
    assert_eq!(
        b.req("DELETE", &format!("/v1/secrets/{path}"), Some(P), None)
            .status,
        204
    );
    let logs = b.stderr_text();
    assert!(!logs.contains(&good), "the JWT leaked into the logs");

    // A JWT the cluster does not authenticate: refused at start, naming
    // the store, the role and the token to check; the review said no.
    let dir = Broker::temp_dir();
    let err = serve_expecting_refusal(
        &dir,
        &store(&dir, &role, &forged, &unique("k8s")),
        &[],
        Duration::from_secs(20),
    );
    assert!(
        err.contains("`vault`")
            && err.contains(&format!("Kubernetes role `{role}`"))
            && err.contains("service-account token"),
        "{err}"
    );
    assert!(!err.contains(&forged), "the JWT leaked: {err}");
    assert_eq!(cluster.reviews().last(), Some(&(None, false)));

    // A service account the cluster vouches for but the role is not bound
    // to: refused the same way.
    let dir = Broker::temp_dir();
    let err = serve_expecting_refusal(
        &dir,
        &store(&dir, &role, &intruder, &unique("k8s")),
        &[],
        Duration::from_secs(20),
    );
    assert!(
        err.contains("`vault`") && err.contains(&format!("Kubernetes role `{role}`")),
        "{err}"
    );
    assert!(!err.contains(&intruder), "the JWT leaked: {err}");
}
