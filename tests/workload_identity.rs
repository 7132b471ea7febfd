//! Workload identities of the cloud stores, through the real broker binary
//! on private loopback servers, with the broker's environment isolated
//! (nothing of the machine running the tests reaches it):
//!
//! - aws: web identity (IRSA) through STS `AssumeRoleWithWebIdentity` on a
//!   moto that enforces IAM, so a call not signed with the assumed role's
//!   key, or not allowed by the role's policy, is refused;
//! - azure: workload identity (a federated token) and managed identity (App
//!   Service's `IDENTITY_ENDPOINT`, and IMDS) on our Key Vault test server;
//! - gcp: Application Default Credentials from a metadata server, and from
//!   an `external_account` file (workload identity federation), on our
//!   metadata test server, which also fronts cloudbox and refuses any call
//!   without a token it issued.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

#[path = "conformance/backends.rs"]
mod backends;

#[path = "common/servers.rs"]
mod servers;

use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use common::{Broker, PLATFORM_TOKEN as P, TASK_TOKEN as T, default_principals};
use serde_json::json;
use servers::{PrivateAzure, Server, curl, free_port, server_bin};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWT shaped like a projected service-account token (unsigned: the test
/// servers check its claims, as the real issuers' consumers do after the
/// signature).
fn jwt(claims: &serde_json::Value) -> String {
    let part = |v: &serde_json::Value| B64URL.encode(v.to_string());
    format!(
        "{}.{}.{}",
        part(&json!({"alg": "RS256", "typ": "JWT", "kid": "test"})),
        part(claims),
        B64URL.encode(format!("signature-{}", backends::unique("sig")))
    )
}

/// Asserts that none of `secrets` is in the broker's logs or audit.
fn assert_not_logged(b: &Broker, secrets: &[&str]) {
    let logs = format!(
        "{}{}",
        b.stderr_text(),
        std::fs::read_to_string(&b.audit).unwrap_or_default()
    );
    for s in secrets {
        assert!(!logs.contains(s), "a credential is in the logs: {logs}");
    }
}

/// The round trip every test makes once its credentials work.
fn round_trip(b: &Broker, value: &str) {
    let path = "acme/tasks/t-42/db";
    let r = b.put(path, P, value);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = b.get(path, T);
    assert_eq!(
        (r.status, r.json()["value"].as_str()),
        (200, Some(value)),
        "{}",
        r.text()
    );
    let r = b.req("GET", "/v1/secrets/acme/tasks/t-42/", Some(P), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["secrets"][0]["path"], path, "{}", r.text());
}

// ---------------------------------------------------------------- aws

/// moto's account: roles live there.
const AWS_ACCOUNT: &str = "123456789012";
/// A well-formed SigV4 header for the set-up calls moto takes unchecked.
const SETUP_AUTH: &str = "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=00";

/// A private moto that enforces IAM from its fourth request on: the first
/// three are the two set-up calls made here (role `role` with an inline
/// policy allowing `actions`) and the broker's unsigned
/// `AssumeRoleWithWebIdentity`. Every later call must be signed with a key
/// moto issued (the assumed role's, with its session token) and be allowed
/// by the role's policy.
fn moto_with_role(test: &str, role: &str, actions: &[&str]) -> Option<(Server, String)> {
    let bin = server_bin("SB_MOTO_BIN", "moto_server", test)?;
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let server = Server::launch(
        Box::new(move || {
            Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        }),
        // Not an AWS action: moto does not count it.
        format!("{endpoint}/moto-api/"),
    );
    let iam = |params: &[(&str, String)]| {
        let mut args: Vec<String> = vec!["-H".into(), SETUP_AUTH.into()];
        for (k, v) in params {
            args.push("--data-urlencode".into());
            args.push(format!("{k}={v}"));
        }
        args.push(format!("{endpoint}/"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, body) = curl(&args);
        assert_eq!(status, 200, "moto set-up: {body}");
    };
    let trust = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Federated": format!("arn:aws:iam::{AWS_ACCOUNT}:oidc-provider/oidc.test")},
        "Action": "sts:AssumeRoleWithWebIdentity"
    }]});
    iam(&[
        ("Action", "CreateRole".into()),
        ("Version", "2010-05-08".into()),
        ("RoleName", role.into()),
        ("AssumeRolePolicyDocument", trust.to_string()),
    ]);
    let policy = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": actions, "Resource": "*"
    }]});
    iam(&[
        ("Action", "PutRolePolicy".into()),
        ("Version", "2010-05-08".into()),
        ("RoleName", role.into()),
        ("PolicyName", "secret-broker".into()),
        ("PolicyDocument", policy.to_string()),
    ]);
    Some((server, endpoint))
}

/// The `[store]` body and the broker's whole environment for web identity:
/// a token file, the role, STS at `sts` (the SDK's service-specific
/// endpoint variable), no static keys, no AWS config files, no IMDS.
fn irsa(
    dir: &tempfile::TempDir,
    endpoint: &str,
    sts: &str,
    role: &str,
    token_file: &str,
) -> (String, Vec<(String, String)>) {
    let store = format!(
        "backend = \"aws\"\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\nprefix = \"{}/\"\ntimeout = \"5s\"",
        backends::unique("irsa")
    );
    let none = dir.path().join("no-such-aws-file");
    let env = vec![
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_owned()),
        (
            "AWS_ROLE_ARN",
            format!("arn:aws:iam::{AWS_ACCOUNT}:role/{role}"),
        ),
        ("AWS_ROLE_SESSION_NAME", "secret-broker-test".to_owned()),
        ("AWS_ENDPOINT_URL_STS", sts.to_owned()),
        ("AWS_CONFIG_FILE", none.display().to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", none.display().to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ];
    (
        store,
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    )
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A service-account token as EKS projects it for IRSA.
fn eks_token() -> String {
    jwt(&json!({
        "iss": "https://oidc.test",
        "sub": "system:serviceaccount:acme:secret-broker",
        "aud": ["sts.amazonaws.com"],
        "iat": now(), "exp": now() + 3600,
    }))
}

#[test]
fn aws_web_identity_credentials_come_from_sts_and_sign_every_call() {
    let test = "workload_identity::aws_web_identity";
    let Some((_moto, endpoint)) = moto_with_role(test, "broker-writer", &["secretsmanager:*"])
    else {
        return;
    };
    let dir = Broker::temp_dir();
    let token = eks_token();
    let token_file = backends::write_secret_file(&dir, "eks-token", &token);
    let token_path = dir.path().join(&token_file).display().to_string();
    let (store, env) = irsa(&dir, &endpoint, &endpoint, "broker-writer", &token_path);
    let b = Broker::start_isolated(dir, &store, &default_principals(), &env_refs(&env));
    round_trip(&b, "from-the-assumed-role");
    let r = b.req("DELETE", "/v1/secrets/acme/tasks/t-42/db", Some(P), None);
    assert_eq!(r.status, 204, "{}", r.text());

    // The same moto refuses a call signed with any other key: the broker's
    // calls passed only because they carried the assumed role's.
    let (status, body) = curl(&[
        "-H",
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=00",
        "-H",
        "X-Amz-Target: secretsmanager.ListSecrets",
        "-H",
        "Content-Type: application/x-amz-json-1.1",
        "--data",
        "{}",
        &format!("{endpoint}/"),
    ]);
    assert!(
        status == 403 && body.contains("InvalidClientTokenId"),
        "moto did not enforce IAM: {status} {body}"
    );
    assert_not_logged(&b, &[&token]);
}

#[test]
fn aws_web_identity_role_policy_is_what_allows_a_write() {
    let test = "workload_identity::aws_web_identity_reader";
    let readonly = [
        "secretsmanager:ListSecrets",
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
    ];
    let Some((_moto, endpoint)) = moto_with_role(test, "broker-reader", &readonly) else {
        return;
    };
    let dir = Broker::temp_dir();
    let token = eks_token();
    let token_file = backends::write_secret_file(&dir, "eks-token", &token);
    let token_path = dir.path().join(&token_file).display().to_string();
    let (store, env) = irsa(&dir, &endpoint, &endpoint, "broker-reader", &token_path);
    let b = Broker::start_isolated(dir, &store, &default_principals(), &env_refs(&env));
    // Reads are allowed (nothing there yet), writes are not.
    assert_eq!(b.get("acme/tasks/t-42/db", T).status, 404);
    let r = b.put("acme/tasks/t-42/db", P, "not-allowed");
    assert_eq!(
        (r.status, r.code()),
        (502, "backend_error".into()),
        "{}",
        r.text()
    );
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("`aws` denied the broker")
            && msg.contains("403")
            && msg.contains("IAM policy"),
        "{msg}"
    );
    assert_not_logged(&b, &[&token, "not-allowed"]);
}

#[test]
fn aws_web_identity_with_a_missing_token_file_is_refused_at_start_naming_it() {
    // No server: the credentials fail before any call is made (were they
    // found elsewhere, the closed port would start the broker unready).
    let endpoint = "http://127.0.0.1:9";
    let dir = Broker::temp_dir();
    let missing = dir.path().join("no-such-token").display().to_string();
    let (store, env) = irsa(&dir, endpoint, endpoint, "broker-writer", &missing);
    let err = Broker::start_refused_isolated(&dir, &store, &env_refs(&env));
    assert!(
        err.contains("`aws`")
            && err.contains("AWS_WEB_IDENTITY_TOKEN_FILE")
            && err.contains(&missing),
        "{err}"
    );
}

// ---------------------------------------------------------------- azure

/// The test server's federated credential and managed identities (see
/// tests/azure_kv_server.py).
const FEDERATED_ISSUER: &str = "https://oidc.test";
const FEDERATED_SUBJECT: &str = "system:serviceaccount:acme:secret-broker";
const IDENTITY_HEADER: &str = "test-identity-header";
const USER_ASSIGNED: &str = "secret-broker-user-assigned";

/// A private Key Vault test server, with the test-only calls these tests use.
struct Azure(PrivateAzure);

impl std::ops::Deref for Azure {
    type Target = PrivateAzure;
    fn deref(&self) -> &PrivateAzure {
        &self.0
    }
}

impl Azure {
    fn start(test: &str) -> Option<Self> {
        PrivateAzure::start(test).map(Self)
    }

    /// How the server issued tokens so far.
    fn stats(&self) -> serde_json::Value {
        let (status, body) = curl(&["--cacert", &self.ca, &format!("{}/_test/stats", self.url)]);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Makes the vault refuse every token issued so far (`401`), so the
    /// broker's next call fetches a new one.
    fn forget_tokens(&self) {
        let url = format!("{}/_test/forget-tokens", self.url);
        let (status, body) = curl(&["--cacert", &self.ca, "-X", "POST", &url]);
        assert_eq!(status, 204, "{body}");
    }

    fn store(&self, credentials: &str) -> String {
        format!(
            "backend = \"azure\"\nvault_url = \"{}\"\ncredentials = \"{credentials}\"\nprefix = \"{}\"\ntimeout = \"5s\"",
            self.url,
            backends::unique("wi")
        )
    }
}

/// A service-account token as AKS projects it for workload identity.
fn aks_token(sub: &str, jti: &str, exp: u64) -> String {
    jwt(&json!({
        "iss": FEDERATED_ISSUER,
        "sub": sub,
        "aud": ["api://AzureADTokenExchange"],
        "jti": jti,
        "iat": now(), "nbf": now(), "exp": exp,
    }))
}

/// Replaces the token file as the kubelet does: a new file renamed over.
fn rotate(path: &std::path::Path, token: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, token).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn workload_env(az: &Azure, token_file: &str) -> Vec<(String, String)> {
    [
        ("SSL_CERT_FILE", az.ca.as_str()),
        ("AZURE_AUTHORITY_HOST", az.url.as_str()),
        ("AZURE_TENANT_ID", backends::AZURE_TENANT),
        ("AZURE_CLIENT_ID", backends::AZURE_CLIENT),
        ("AZURE_FEDERATED_TOKEN_FILE", token_file),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

#[test]
fn azure_workload_identity_works_and_rereads_a_rotated_token() {
    let Some(az) = Azure::start("workload_identity::azure_workload") else {
        return;
    };
    let dir = Broker::temp_dir();
    let token_a = aks_token(FEDERATED_SUBJECT, "jti-a", now() + 3600);
    let file = backends::write_secret_file(&dir, "azure-identity-token", &token_a);
    let path = dir.path().join(&file);
    let env = workload_env(&az, path.to_str().unwrap());
    // No read cache: every read below reaches the vault.
    let b = Broker::start_isolated(
        dir,
        &az.store("workload"),
        &format!("[cache]\nttl = \"0\"\n{}", default_principals()),
        &env_refs(&env),
    );
    round_trip(&b, "through-workload-identity");
    let s = az.stats();
    assert_eq!(s["client_secret"], 0, "{s}");
    assert_eq!(s["workload_jti"], json!(["jti-a"]), "{s}");

    // The kubelet rotates the token; the next token request reads the new one.
    let token_b = aks_token(FEDERATED_SUBJECT, "jti-b", now() + 3600);
    rotate(&path, &token_b);
    az.forget_tokens();
    let r = b.get("acme/tasks/t-42/db", T);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(az.stats()["workload_jti"], json!(["jti-a", "jti-b"]));

    // An expired token in the file: Entra's refusal, named, on one line.
    let token_c = aks_token(FEDERATED_SUBJECT, "jti-c", now() - 60);
    rotate(&path, &token_c);
    az.forget_tokens();
    let r = b.get("acme/tasks/t-42/db", T);
    assert_eq!(
        (r.status, r.code()),
        (502, "backend_error".into()),
        "{}",
        r.text()
    );
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("`azure` denied the broker")
            && msg.contains("Entra ID refused a token (400 invalid_client: AADSTS700024")
            && !msg.contains("Trace ID"),
        "{msg}"
    );
    assert_eq!(az.stats()["workload_jti"], json!(["jti-a", "jti-b"]));
    assert_not_logged(&b, &[&token_a, &token_b, &token_c]);
}

#[test]
fn azure_workload_identity_for_another_subject_is_refused_at_start() {
    let Some(az) = Azure::start("workload_identity::azure_workload_wrong") else {
        return;
    };
    let dir = Broker::temp_dir();
    let token = aks_token(
        "system:serviceaccount:other:intruder",
        "jti-x",
        now() + 3600,
    );
    let file = backends::write_secret_file(&dir, "azure-identity-token", &token);
    let path = dir.path().join(&file).display().to_string();
    let env = workload_env(&az, &path);
    let err = Broker::start_refused_isolated(&dir, &az.store("workload"), &env_refs(&env));
    assert!(
        err.contains("`azure`")
            && err.contains("invalid_request: AADSTS70021: No matching federated identity record")
            && err.contains("Assertion Subject: 'system:serviceaccount:other:intruder'"),
        "{err}"
    );
    assert!(!err.contains(&token), "{err}");
    assert_eq!(az.stats()["workload"], 0);
}

#[test]
fn azure_managed_identity_through_app_service_endpoint() {
    let Some(az) = Azure::start("workload_identity::azure_app_service") else {
        return;
    };
    let endpoint = format!("{}/MSI/token/", az.url);
    let env = [
        ("SSL_CERT_FILE", az.ca.as_str()),
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", IDENTITY_HEADER),
        // A user-assigned identity, chosen by client id.
        ("AZURE_CLIENT_ID", USER_ASSIGNED),
    ];
    let b = Broker::start_isolated(
        Broker::temp_dir(),
        &az.store("default"),
        &default_principals(),
        &env,
    );
    round_trip(&b, "through-app-service-identity");
    let s = az.stats();
    assert_eq!(
        (&s["app_service"], &s["imds"], &s["client_ids"]),
        (&json!(1), &json!(0), &json!([USER_ASSIGNED])),
        "{s}"
    );
    assert_not_logged(&b, &[IDENTITY_HEADER]);

    // A wrong header secret: refused at start, the secret not repeated.
    let wrong = "CANARY-wrong-identity-header";
    let env = [
        ("SSL_CERT_FILE", az.ca.as_str()),
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", wrong),
    ];
    let dir = Broker::temp_dir();
    let err = Broker::start_refused_isolated(&dir, &az.store("default"), &env);
    assert!(
        err.contains("`azure`")
            && err.contains(
                "the managed identity endpoint ($IDENTITY_ENDPOINT) refused a token (401"
            ),
        "{err}"
    );
    assert!(!err.contains(wrong), "{err}");
}

#[test]
fn azure_managed_identity_through_imds() {
    let Some(az) = Azure::start("workload_identity::azure_imds") else {
        return;
    };
    // IMDS at the test server, as Azure's SDKs allow for pod identity.
    let env = [
        ("SSL_CERT_FILE", az.ca.as_str()),
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST", az.url.as_str()),
    ];
    let b = Broker::start_isolated(
        Broker::temp_dir(),
        &az.store("default"),
        &default_principals(),
        &env,
    );
    round_trip(&b, "through-imds-identity");
    let s = az.stats();
    assert_eq!(
        (&s["imds"], &s["app_service"], &s["client_ids"]),
        (&json!(1), &json!(0), &json!([null])),
        "{s}"
    );

    // A user-assigned identity this machine does not have.
    let env = [
        ("SSL_CERT_FILE", az.ca.as_str()),
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST", az.url.as_str()),
        ("AZURE_CLIENT_ID", "not-assigned-here"),
    ];
    let dir = Broker::temp_dir();
    let err = Broker::start_refused_isolated(&dir, &az.store("default"), &env);
    assert!(
        err.contains("`azure`")
            && err.contains("the managed identity endpoint (IMDS) refused a token (400 invalid_request: Identity not found)"),
        "{err}"
    );
}

#[test]
fn azure_managed_identities_not_supported_are_refused_by_name() {
    // No server: the environment alone decides.
    let store =
        "backend = \"azure\"\nvault_url = \"https://127.0.0.1:9\"\ncredentials = \"default\"";
    let dir = Broker::temp_dir();
    let err = Broker::start_refused_isolated(
        &dir,
        store,
        &[
            (
                "IDENTITY_ENDPOINT",
                "https://127.0.0.1:2377/metadata/identity/oauth2/token",
            ),
            ("IDENTITY_HEADER", "CANARY-service-fabric"),
            ("IDENTITY_SERVER_THUMBPRINT", "0123456789abcdef"),
        ],
    );
    assert!(
        err.contains("`azure`") && err.contains("Service Fabric"),
        "{err}"
    );
    assert!(!err.contains("CANARY-service-fabric"), "{err}");
    let err = Broker::start_refused_isolated(
        &dir,
        store,
        &[
            (
                "IDENTITY_ENDPOINT",
                "http://localhost:40342/metadata/identity/oauth2/token",
            ),
            ("IMDS_ENDPOINT", "http://localhost:40342"),
        ],
    );
    assert!(
        err.contains("`azure`") && err.contains("Azure Arc"),
        "{err}"
    );
}

// ---------------------------------------------------------------- gcp

/// tests/gcp_metadata_server.py's workload identity pool provider and the
/// issuer it trusts.
const GCP_AUDIENCE: &str =
    "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/k8s";
const GCP_ISSUER: &str = "https://oidc.test";

/// A private credentials test server (metadata server, STS, and a
/// token-checking front for the shared cloudbox).
struct Gcp {
    _server: Server,
    url: String,
    host: String,
}

impl Gcp {
    fn start(test: &str) -> Option<Self> {
        let upstream = backends::gcp_endpoint();
        if !backends::server_up("gcp", &upstream, test) {
            return None;
        }
        let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/gcp_metadata_server.py");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let url = format!("http://{host}");
        let server = Server::launch(
            Box::new(move || {
                Command::new("python3")
                    .arg(&script)
                    .args(["--port", &port.to_string(), "--upstream", &upstream])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            }),
            format!("{url}/healthz"),
        );
        Some(Self {
            _server: server,
            url,
            host,
        })
    }

    fn stats(&self) -> serde_json::Value {
        let (status, body) = curl(&[&format!("{}/_test/stats", self.url)]);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Secret Manager through this server's token check.
    fn store(&self, credentials: &str) -> String {
        format!(
            "backend = \"gcp\"\nproject = \"{}\"\nendpoint = \"{}\"\ncredentials = \"{credentials}\"\nprefix = \"{}\"\ntimeout = \"5s\"",
            backends::GCP_PROJECT,
            self.url,
            backends::unique("wi")
        )
    }
}

#[test]
fn gcp_default_credentials_come_from_the_metadata_server() {
    let Some(gcp) = Gcp::start("workload_identity::gcp_metadata") else {
        return;
    };
    // No $GOOGLE_APPLICATION_CREDENTIALS, no gcloud file under HOME: ADC
    // falls back to the metadata server, here by $GCE_METADATA_HOST.
    let env = [("GCE_METADATA_HOST", gcp.host.as_str())];
    let b = Broker::start_isolated(
        Broker::temp_dir(),
        &gcp.store("default"),
        &default_principals(),
        &env,
    );
    round_trip(&b, "through-the-metadata-server");
    let s = gcp.stats();
    assert!(s["metadata_token"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["passed"].as_u64().unwrap() >= 3, "{s}");
    assert_eq!(
        (&s["sts_token"], &s["refused"]),
        (&json!(0), &json!(0)),
        "{s}"
    );
    assert_not_logged(&b, &["ya29.test-"]);
    // As the real one, the metadata server answers only with its header.
    let token_url = format!(
        "{}/computeMetadata/v1/instance/service-accounts/default/token",
        gcp.url
    );
    assert_eq!(curl(&[&token_url]).0, 403);

    // The front refuses a call without its token: anonymous is refused.
    let dir = Broker::temp_dir();
    let err = Broker::start_refused_isolated(&dir, &gcp.store("anonymous"), &[]);
    assert!(
        err.contains("`gcp`") && err.contains("UNAUTHENTICATED") || err.contains("credentials"),
        "{err}"
    );
    assert!(gcp.stats()["refused"].as_u64().unwrap() >= 1);
}

/// An `external_account` credential file (workload identity federation)
/// reading the subject token from `token_file`.
fn external_account(dir: &tempfile::TempDir, gcp: &Gcp, token_file: &str) -> String {
    let cred = json!({
        "type": "external_account",
        "audience": GCP_AUDIENCE,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": format!("{}/v1/token", gcp.url),
        "credential_source": {"file": token_file},
    });
    let p = dir.path().join("external-account.json");
    std::fs::write(&p, cred.to_string()).unwrap();
    p.display().to_string()
}

fn k8s_token(exp: u64) -> String {
    jwt(&json!({
        "iss": GCP_ISSUER,
        "sub": "system:serviceaccount:acme:secret-broker",
        "aud": [GCP_AUDIENCE],
        "iat": now(), "exp": exp,
    }))
}

#[test]
fn gcp_external_account_file_exchanges_a_workload_token_at_sts() {
    let Some(gcp) = Gcp::start("workload_identity::gcp_external_account") else {
        return;
    };
    let dir = Broker::temp_dir();
    let token = k8s_token(now() + 3600);
    let file = backends::write_secret_file(&dir, "k8s-token", &token);
    let token_path = dir.path().join(&file).display().to_string();
    let creds = external_account(&dir, &gcp, &token_path);
    // The metadata server is there too, and must not be what is used.
    let env = [
        ("GOOGLE_APPLICATION_CREDENTIALS", creds.as_str()),
        ("GCE_METADATA_HOST", gcp.host.as_str()),
    ];
    let b = Broker::start_isolated(dir, &gcp.store("default"), &default_principals(), &env);
    round_trip(&b, "through-workload-identity-federation");
    let s = gcp.stats();
    assert!(s["sts_token"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(
        (&s["metadata_token"], &s["refused"]),
        (&json!(0), &json!(0)),
        "{s}"
    );
    assert_not_logged(&b, &[&token, "ya29.test-"]);

    // An expired subject token: STS's refusal at start, the token unrepeated.
    let dir = Broker::temp_dir();
    let expired = k8s_token(now() - 60);
    let file = backends::write_secret_file(&dir, "k8s-token", &expired);
    let token_path = dir.path().join(&file).display().to_string();
    let creds = external_account(&dir, &gcp, &token_path);
    let err = Broker::start_refused_isolated(
        &dir,
        &gcp.store("default"),
        &[("GOOGLE_APPLICATION_CREDENTIALS", creds.as_str())],
    );
    assert!(err.contains("`gcp`") && err.contains("expired"), "{err}");
    assert!(!err.contains(&expired), "{err}");
}
