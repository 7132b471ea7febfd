//! Config parsing and validation tests, including deliberately bad configs.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, "test.toml", Path::new("/etc/sb"))
}

#[test]
fn contract_example_parses_with_defaults() {
    let c = parse(
        r#"
[listen]
socket = "/run/secret-broker/api.sock"
mode = "0660"

[store]
backend = "embedded"
path = "store.redb"
key_file = "/etc/secret-broker/store.key"

[cache]
ttl = "5m"
stale_if_error = "0s"

[policy]
dir = "policies"

[audit]
sink = "stdout"

[[principal]]
name = "provisioner"
type = "Component"
roles = ["platform"]
uid = 1001

[[principal]]
name = "task"
type = "Task"
scope = "acme/tasks/t-42"
uid = 2000
"#,
    )
    .unwrap();
    assert_eq!(c.listen.mode, 0o660);
    assert_eq!(c.policy_dir, Path::new("/etc/sb/policies"));
    let StoreConfig::Embedded { path, .. } = &c.store else {
        panic!("not embedded: {:?}", c.store);
    };
    assert_eq!(path, Path::new("/etc/sb/store.redb"));
    assert_eq!(c.cache.ttl, Duration::from_secs(300));
    assert_eq!(c.principals.len(), 2);
    assert_eq!(
        c.principals[1].principal.scope.as_ref().unwrap().as_str(),
        "acme/tasks/t-42"
    );
    assert_eq!(c.limits.max_value_bytes, 65536);
}

#[test]
fn empty_config_has_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.listen.socket, Path::new(DEFAULT_SOCKET));
    assert_eq!(c.audit, AuditSink::Stdout);
    assert!(!c.audit_spool);
    assert!(c.principals.is_empty());
    // The revocation bound across brokers, and the fail-closed audit.
    assert_eq!(c.cache.ttl, Duration::from_secs(30));
    assert_eq!(c.cache.stale_if_error, Duration::ZERO);
    assert_eq!(c.audit_on_failure, AuditOnFailure::Refuse);
    assert_eq!(c.limits.max_connections_per_uid, 512);
    assert_eq!(c.limits.max_in_flight_per_principal, 128);
}

#[test]
fn audit_on_failure_and_per_caller_limits_are_read() {
    let c = parse(
        "[audit]\non_failure = \"serve\"\n[limits]\nmax_connections = 10\nmax_in_flight = 5\n",
    )
    .unwrap();
    assert_eq!(c.audit_on_failure, AuditOnFailure::Serve);
    assert_eq!(c.limits.max_connections_per_uid, 5);
    assert_eq!(c.limits.max_in_flight_per_principal, 3);
    let e = parse("[audit]\non_failure = \"ignore\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("audit.on_failure"), "{e}");
    let e = parse("[limits]\nmax_in_flight_per_principal = 0")
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_in_flight_per_principal"), "{e}");
}

#[test]
fn audit_spool_is_read() {
    let c = parse("[audit]\nsink = \"file:/var/log/a.log\"\nspool = true").unwrap();
    assert_eq!(c.audit, AuditSink::File("/var/log/a.log".into()));
    assert!(c.audit_spool);
    let e = parse("[audit]\nspool = \"yes\"").unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("boolean"), "{e}");
}

#[test]
fn bad_configs_are_refused_with_the_key() {
    let cases = [
        ("[listen]\nsokcet = \"x\"", "sokcet"),
        ("[listen]\nmode = \"999\"", "listen.mode"),
        ("[store]\nbackend = \"s3\"", "store.backend"),
        ("[cache]\nttl = \"5 minutes\"", "cache.ttl"),
        ("[audit]\nsink = \"syslog\"", "audit.sink"),
        (
            "[[principal]]\nname = \"a\"\ntype = \"Task\"\nuid = 1",
            "scope",
        ),
        (
            "[[principal]]\nname = \"a\"\ntype = \"Robot\"\nuid = 1",
            "type",
        ),
        ("[[principal]]\nname = \"a\"\ntype = \"Component\"", "uid"),
        (
            "[[principal]]\nname = \"a\"\ntype = \"Task\"\nscope = \"../x\"\nuid = 1",
            "scope",
        ),
        (
            "[[principal]]\nname = \"a\"\ntype = \"Component\"\ntoken_sha256 = \"abc\"",
            "token_sha256",
        ),
        (
            "[[principal]]\nname = \"a\"\ntype = \"Component\"\nuid = 1\n[[principal]]\nname = \"a\"\ntype = \"Component\"\nuid = 2",
            "used twice",
        ),
        (
            "[[principal]]\nname = \"a\"\ntype = \"Component\"\nuid = 1\n[[principal]]\nname = \"b\"\ntype = \"Component\"\nuid = 1",
            "same uid",
        ),
        ("[limits]\nmax_connections = 0", "max_connections"),
        (
            "[listen]\ntls = { addr = \"0.0.0.0:1\" }",
            "listen.tls.cert",
        ),
        ("[runtime]\nflavor = \"green\"", "runtime.flavor"),
        ("[runtime]\nworker_threads = 0", "runtime.worker_threads"),
        ("[runtime]\nsocket_workers = 0", "runtime.socket_workers"),
        (
            "[runtime]\nspread_preempted = -0.5",
            "runtime.spread_preempted",
        ),
        (
            "[runtime]\nspread_preempted = nan",
            "runtime.spread_preempted",
        ),
        (
            "[runtime]\nworker_threads = 2\nsocket_workers = 3",
            "runtime.socket_workers",
        ),
        ("[runtime]\nidle_spin = \"2ms\"", "runtime.idle_spin"),
        ("[runtime]\nidle_spin = \"20\"", "runtime.idle_spin"),
        ("[metrics]\naddr = \"localhost\"", "metrics.addr"),
    ];
    for (text, needle) in cases {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text:?} -> {err}");
    }
}

#[test]
fn token_digest_never_echoed() {
    let digest = "ab".repeat(32);
    let c = parse(&format!(
        "[[principal]]\nname = \"p\"\ntype = \"Component\"\ntoken_sha256 = \"{digest}\""
    ))
    .unwrap();
    assert!(!format!("{c:?}").contains(&digest));
}

fn store(text: &str) -> Result<StoreConfig, ConfigError> {
    parse(&format!("[store]\n{text}")).map(|c| c.store)
}

#[test]
fn vault_defaults_and_token_auth() {
    let c = store("backend = \"vault\"\naddress = \"https://vault.example:8200/\"").unwrap();
    let StoreConfig::Vault(v) = c else {
        panic!("{c:?}")
    };
    assert_eq!(v.address, "https://vault.example:8200");
    assert_eq!(v.mount, "secret");
    assert_eq!(v.namespace, None);
    assert_eq!(v.ca_file, None);
    assert_eq!(v.auth, VaultAuth::Token { token_file: None });
    assert_eq!(v.remote.prefix, "");
    assert_eq!(v.remote.timeout, Duration::from_secs(5));
}

#[test]
fn vault_every_key() {
    let c = store(
        r#"backend = "vault"
address = "http://127.0.0.1:8200"
mount = "/kv/"
namespace = "team-a/"
ca_file = "ca.pem"
prefix = "broker/prod/"
timeout = "750ms"
auth = "approle"
role_id = "db-writer"
secret_id_file = "/run/secrets/secret-id""#,
    )
    .unwrap();
    let StoreConfig::Vault(v) = c else {
        panic!("{c:?}")
    };
    assert_eq!(v.mount, "kv");
    assert_eq!(v.namespace.as_deref(), Some("team-a"));
    assert_eq!(v.ca_file.as_deref(), Some(Path::new("/etc/sb/ca.pem")));
    assert_eq!(v.remote.prefix, "broker/prod/");
    assert_eq!(v.remote.timeout, Duration::from_millis(750));
    assert_eq!(
        v.auth,
        VaultAuth::AppRole {
            role_id: "db-writer".into(),
            secret_id_file: "/run/secrets/secret-id".into()
        }
    );
}

#[test]
fn vault_kubernetes_defaults_to_the_pod_token() {
    let c = store(
        "backend = \"vault\"\naddress = \"https://v\"\nauth = \"kubernetes\"\nrole = \"broker\"",
    )
    .unwrap();
    let StoreConfig::Vault(v) = c else {
        panic!("{c:?}")
    };
    assert_eq!(
        v.auth,
        VaultAuth::Kubernetes {
            role: "broker".into(),
            jwt_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".into()
        }
    );
}

#[test]
fn aws_keys() {
    let c = store("backend = \"aws\"").unwrap();
    assert_eq!(c.backend(), "aws");
    let c = store(
        "backend = \"aws\"\nregion = \"eu-west-1\"\nendpoint_url = \"http://localhost:5000\"\nprefix = \"sb\"",
    )
    .unwrap();
    let StoreConfig::Aws(a) = c else {
        panic!("{c:?}")
    };
    assert_eq!(a.region.as_deref(), Some("eu-west-1"));
    assert_eq!(a.endpoint_url.as_deref(), Some("http://localhost:5000"));
    assert_eq!(a.remote.prefix, "sb/");
}

#[test]
fn bad_store_configs_are_refused_with_the_key() {
    let v = "backend = \"vault\"\naddress = \"https://v:8200\"\n";
    let cases = [
        ("backend = \"vault\"".to_owned(), "store.address"),
        (
            "backend = \"vault\"\naddress = \"vault:8200\"".to_owned(),
            "store.address",
        ),
        // Cleartext only to loopback.
        (
            "backend = \"vault\"\naddress = \"http://vault.example:8200\"".to_owned(),
            "plain http",
        ),
        (format!("{v}auth = \"ldap\""), "store.auth"),
        (format!("{v}auth = \"approle\""), "store.role_id"),
        (
            format!("{v}auth = \"approle\"\nrole_id = \"r\""),
            "store.secret_id_file",
        ),
        (format!("{v}auth = \"kubernetes\""), "store.role"),
        (
            format!(
                "{v}auth = \"approle\"\nrole_id = \"r\"\nsecret_id_file = \"f\"\ntoken_file = \"t\""
            ),
            "store.token_file",
        ),
        (format!("{v}role = \"r\""), "store.role"),
        (format!("{v}mount = \"../x\""), "store.mount"),
        (format!("{v}namespace = \"a//b\""), "store.namespace"),
        (format!("{v}prefix = \"a/../b\""), "store.prefix"),
        (format!("{v}timeout = \"0s\""), "store.timeout"),
        (format!("{v}timeout = \"soon\""), "store.timeout"),
        (format!("{v}region = \"eu-west-1\""), "store.region"),
        (format!("{v}key_file = \"k\""), "store.key_file"),
        (
            "backend = \"aws\"\nregion = \"eu west\"".to_owned(),
            "store.region",
        ),
        (
            "backend = \"aws\"\nendpoint_url = \"ftp://x\"".to_owned(),
            "store.endpoint_url",
        ),
        (
            "backend = \"aws\"\nmount = \"kv\"".to_owned(),
            "store.mount",
        ),
        (
            "backend = \"embedded\"\nprefix = \"p\"".to_owned(),
            "store.prefix",
        ),
        ("backend = \"gcp\"".to_owned(), "store.project"),
        (
            "backend = \"gcp\"\nproject = \"My Project\"".to_owned(),
            "store.project",
        ),
        (
            "backend = \"gcp\"\nproject = \"p-1\"\ncredentials = \"anonymous\"".to_owned(),
            "only for a local test server",
        ),
        (
            "backend = \"gcp\"\nproject = \"p-1\"\ncredentials = \"key\"".to_owned(),
            "store.credentials",
        ),
        (
            "backend = \"gcp\"\nproject = \"p-1\"\nendpoint = \"http://gcp.example\"".to_owned(),
            "plain http",
        ),
        (
            "backend = \"gcp\"\nproject = \"p-1\"\nregion = \"x\"".to_owned(),
            "store.region",
        ),
        ("backend = \"azure\"".to_owned(), "store.vault_url"),
        (
            "backend = \"azure\"\nvault_url = \"http://127.0.0.1:1\"".to_owned(),
            "https only",
        ),
        (
            "backend = \"azure\"\nvault_url = \"https://v.vault.azure.net\"\ncredentials = \"client_secret\"".to_owned(),
            "store.tenant_id",
        ),
        (
            "backend = \"azure\"\nvault_url = \"https://v.vault.azure.net\"\ncredentials = \"client_secret\"\ntenant_id = \"t\"\nclient_id = \"c\"".to_owned(),
            "store.client_secret_file",
        ),
        (
            "backend = \"azure\"\nvault_url = \"https://v.vault.azure.net\"\ntenant_id = \"t\"".to_owned(),
            "store.tenant_id",
        ),
        (
            "backend = \"azure\"\nvault_url = \"https://v.vault.azure.net\"\ncredentials = \"password\"".to_owned(),
            "store.credentials",
        ),
        (
            "backend = \"azure\"\nvault_url = \"https://v.vault.azure.net\"\nproject = \"p\"".to_owned(),
            "store.project",
        ),
        ("backend = \"vaults\"".to_owned(), "store.backend"),
        (
            "backend = \"vault\"\nadress = \"https://v\"".to_owned(),
            "adress",
        ),
    ];
    for (text, needle) in cases {
        let err = store(&text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text:?} -> {err}");
    }
}

#[test]
fn inline_credentials_are_refused_without_echoing_them() {
    let canary = "s.CANARY-7f3a9e";
    for key in [
        "token",
        "secret_id",
        "jwt",
        "access_key_id",
        "secret_access_key",
        "session_token",
        "client_secret",
        "private_key",
        "credentials_json",
        "api_key",
    ] {
        let text = format!("backend = \"vault\"\naddress = \"https://v\"\n{key} = \"{canary}\"");
        let err = store(&text).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("never inline"), "{key}: {shown}");
        assert!(!shown.contains(canary), "{key}: {shown}");
    }
}

#[test]
fn parse_errors_never_quote_the_offending_line() {
    let canary = "CANARY-CREDENTIAL-0f9e";
    for text in [
        format!("[cache]\ntoken = \"{canary}\"\n"),
        format!("[store]\nbackend = \"vault\"\nsecret = {canary}\n"),
        format!("[[principal]]\nname = \"{canary}\n"),
    ] {
        let err = parse(&text).unwrap_err().to_string();
        assert!(!err.contains(canary), "{err}");
        assert!(err.contains("line "), "{err}");
    }
}

#[test]
fn gcp_keys() {
    let StoreConfig::Gcp(g) = store(
        "backend = \"gcp\"\nproject = \"my-project\"\nendpoint = \"http://127.0.0.1:8090/\"\ncredentials = \"anonymous\"\nprefix = \"sb\"\ntimeout = \"2s\"",
    )
    .unwrap() else {
        panic!("not gcp")
    };
    assert_eq!(g.project, "my-project");
    assert_eq!(g.endpoint.as_deref(), Some("http://127.0.0.1:8090"));
    assert_eq!(g.credentials, GcpCredentials::Anonymous);
    assert_eq!(g.remote.prefix, "sb/");
    assert_eq!(g.remote.timeout, Duration::from_secs(2));
    let StoreConfig::Gcp(g) =
        store("backend = \"gcp\"\nproject = \"example.com:legacy-1\"").unwrap()
    else {
        panic!("not gcp")
    };
    assert_eq!((g.credentials, g.endpoint), (GcpCredentials::Default, None));
}

#[test]
fn azure_keys() {
    let v = "backend = \"azure\"\nvault_url = \"https://team.vault.azure.net/\"\n";
    let StoreConfig::Azure(a) = store(v).unwrap() else {
        panic!("not azure")
    };
    assert_eq!(a.vault_url, "https://team.vault.azure.net");
    assert_eq!(a.credentials, AzureCredentials::Default);
    let StoreConfig::Azure(a) = store(&format!("{v}credentials = \"workload\"")).unwrap() else {
        panic!("not azure")
    };
    assert_eq!(a.credentials, AzureCredentials::Workload);
    let StoreConfig::Azure(a) = store(&format!(
        "{v}credentials = \"client_secret\"\ntenant_id = \"0000-1\"\nclient_id = \"app-2\"\nclient_secret_file = \"sp.secret\""
    ))
    .unwrap() else {
        panic!("not azure")
    };
    assert_eq!(
        a.credentials,
        AzureCredentials::ClientSecret {
            tenant_id: "0000-1".to_owned(),
            client_id: "app-2".to_owned(),
            client_secret_file: PathBuf::from("/etc/sb/sp.secret"),
        }
    );
}

#[test]
fn runtime_flavors_parse_and_per_core_is_the_default() {
    let base = "[[principal]]\nname = \"p\"\ntype = \"Component\"\nuid = 1\n";
    assert_eq!(parse(base).unwrap().runtime.flavor, RuntimeFlavor::PerCore);
    for (name, flavor) in [
        ("per_core", RuntimeFlavor::PerCore),
        ("multi_thread", RuntimeFlavor::MultiThread),
        ("current_thread", RuntimeFlavor::CurrentThread),
    ] {
        let c = parse(&format!(
            "{base}[runtime]\nflavor = \"{name}\"\nworker_threads = 3\n"
        ))
        .unwrap();
        assert_eq!(c.runtime.flavor, flavor);
        assert_eq!(c.runtime.worker_threads, Some(3));
    }
    assert_eq!(parse(base).unwrap().runtime.socket_workers, None);
    assert_eq!(parse(base).unwrap().runtime.spread_preempted, None);
    let c = parse(&format!("{base}[runtime]\nspread_preempted = 0.0\n")).unwrap();
    assert_eq!(c.runtime.spread_preempted, Some(0.0));
    let c = parse(&format!(
        "{base}[runtime]\nworker_threads = 4\nsocket_workers = 4\n"
    ))
    .unwrap();
    assert_eq!(c.runtime.socket_workers, Some(4));
    // Against the default worker count (the machine's cores), it is
    // capped when the workers start, not refused.
    let c = parse(&format!("{base}[runtime]\nsocket_workers = 64\n")).unwrap();
    assert_eq!(c.runtime.socket_workers, Some(64));
    assert_eq!(
        parse(base).unwrap().runtime.idle_spin,
        std::time::Duration::from_micros(50)
    );
    for (text, spin) in [("50us", 50), ("0s", 0), ("1ms", 1000)] {
        let c = parse(&format!("{base}[runtime]\nidle_spin = \"{text}\"\n")).unwrap();
        assert_eq!(c.runtime.idle_spin, std::time::Duration::from_micros(spin));
    }
    let err = parse(&format!("{base}[runtime]\nflavor = \"per-core\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("per_core") && err.contains("multi_thread"),
        "{err}"
    );
}

#[test]
fn tls_listener_and_certificate_principals() {
    let tls = "[listen.tls]\naddr = \"127.0.0.1:8443\"\ncert = \"tls.crt\"\nkey = \"tls.key\"\nclient_ca = \"ca.crt\"\n";
    let c = parse(tls).unwrap();
    let t = c.listen.tls.unwrap();
    assert_eq!(t.min_version, super::TlsMinVersion::Tls13);
    assert_eq!(t.max_connection_age, Duration::from_secs(30 * 60));
    assert!(t.crl.is_empty());
    let pin = "A".repeat(43) + "=";
    let c = parse(&format!(
        "[[principal]]\nname = \"w\"\ntype = \"Component\"\nroles = [\"platform\"]\nspiffe_id = \"spiffe://td/ns/p/sa/w\"\ncert_spki_sha256 = \"{pin}\"\n[[principal]]\nname = \"d\"\ntype = \"Component\"\ncert_dns_name = \"Writer.example\"\n"
    ))
    .unwrap();
    assert!(c.principals.iter().all(|p| p.cert.is_some()));
    let bad = [
        (format!("{tls}min_version = \"1.1\""), "listen.tls.min_version"),
        (format!("{tls}max_connection_age = \"0s\""), "max_connection_age"),
        (format!("{tls}ciphers = []"), "ciphers"),
        ("[listen.tls]\naddr = \"127.0.0.1:1\"".into(), "listen.tls.cert"),
        ("[listen.tls]\ncert = \"a\"".into(), "listen.tls.addr"),
        (
            "[[principal]]\nname = \"a\"\ntype = \"Component\"\nspiffe_id = \"spiffe://td/\"".into(),
            "principal[0].spiffe_id",
        ),
        (
            "[[principal]]\nname = \"a\"\ntype = \"Component\"\ncert_dns_name = \"*.example\"".into(),
            "principal[0].cert_dns_name",
        ),
        (
            "[[principal]]\nname = \"a\"\ntype = \"Component\"\nspiffe_id = \"spiffe://td/a\"\ncert_spki_sha256 = \"abc\"".into(),
            "cert_spki_sha256",
        ),
        (
            "[[principal]]\nname = \"a\"\ntype = \"Component\"\ncert_spki_sha256 = \"abc\"".into(),
            "name the certificate too",
        ),
        (
            "[[principal]]\nname = \"a\"\ntype = \"Component\"\nspiffe_id = \"spiffe://td/a\"\nuid = 5".into(),
            "cannot also have uid",
        ),
        (
            "[[principal]]\nname = \"a\"\ntype = \"Component\"\nspiffe_id = \"spiffe://td/a\"\ncert_dns_name = \"a.b\"".into(),
            "not both",
        ),
        (
            "[[principal]]\nname = \"a\"\ntype = \"Component\"\nspiffe_id = \"spiffe://td/a\"\n[[principal]]\nname = \"b\"\ntype = \"Component\"\nspiffe_id = \"spiffe://td/a\"".into(),
            "same certificate rule",
        ),
    ];
    for (text, needle) in bad {
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text:?} -> {err}");
    }
}

#[test]
fn uploads_default_and_s3_keys() {
    let c = parse("").unwrap();
    assert!(c.uploads.is_none());
    let c = parse(
        r#"
[uploads]
bucket = "task-output"
"#,
    )
    .unwrap();
    let u = c.uploads.unwrap();
    assert_eq!(u.bucket, "task-output");
    assert_eq!(u.prefix, "");
    assert_eq!(u.expiry, Duration::from_secs(300));
    assert_eq!(u.max_size, 1 << 30);
    assert_eq!(
        u.backend,
        UploadBackend::S3 {
            region: None,
            endpoint_url: None
        }
    );
    let c = parse(
        r#"
[uploads]
backend = "s3"
bucket = "task-output"
prefix = "tenant-a/out/"
expiry = "1h"
max_size = "512MiB"
region = "eu-west-1"
endpoint_url = "http://127.0.0.1:4568/"
"#,
    )
    .unwrap();
    let u = c.uploads.unwrap();
    assert_eq!(u.prefix, "tenant-a/out/");
    assert_eq!(u.expiry, Duration::from_secs(3600));
    assert_eq!(u.max_size, 512 << 20);
    assert_eq!(
        u.backend,
        UploadBackend::S3 {
            region: Some("eu-west-1".into()),
            endpoint_url: Some("http://127.0.0.1:4568".into())
        }
    );
    // A prefix without its final `/` still joins cleanly.
    let c = parse("[uploads]\nbucket = \"b-1\"\nprefix = \"out\"\nmax_size = 1000").unwrap();
    let u = c.uploads.unwrap();
    assert_eq!((u.prefix.as_str(), u.max_size), ("out/", 1000));
    assert_eq!(u.encrypt_to, None);
    // The recipient is kept in its canonical, lowercase form.
    let c = parse(
        "[uploads]\nbucket = \"b-1\"\nencrypt_to = \"AGE1T7RXYEV2Z3RW82STDLRREPYC39NVN86L5078ZQKF5UASDY86JP6SVPY7PA\"",
    )
    .unwrap();
    assert_eq!(
        c.uploads.unwrap().encrypt_to.as_deref(),
        Some("age1t7rxyev2z3rw82stdlrrepyc39nvn86l5078zqkf5uasdy86jp6svpy7pa")
    );
}

#[test]
fn uploads_bad_values_are_refused_naming_the_key() {
    let cases = [
        ("backend = \"ftp\"", "uploads.backend", "not one of"),
        ("expiry = \"2h\"", "uploads.expiry", "between 1s and 1h"),
        ("expiry = \"0s\"", "uploads.expiry", "between 1s and 1h"),
        ("expiry = \"1500ms\"", "uploads.expiry", "whole seconds"),
        ("max_size = \"1XB\"", "uploads.max_size", "unknown unit"),
        ("max_size = \"lots\"", "uploads.max_size", "not a size"),
        ("max_size = \"6GiB\"", "uploads.max_size", "at most 5GiB"),
        ("max_size = 0", "uploads.max_size", "at least 1"),
        ("max_size = -5", "uploads.max_size", "at least 1"),
        (
            "max_size = \"99999999999999999TiB\"",
            "uploads.max_size",
            "too large",
        ),
        ("prefix = \"a//b/\"", "uploads.prefix", "not a valid scope"),
        ("prefix = \"../x/\"", "uploads.prefix", "not a valid scope"),
        ("prefix = \"a b/\"", "uploads.prefix", "not a valid scope"),
        (
            "encrypt_to = \"age1xyz\"",
            "uploads.encrypt_to",
            "not an age X25519 recipient",
        ),
        (
            "encrypt_to = \"AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33\"",
            "uploads.encrypt_to",
            "age identity (a secret key)",
        ),
        (
            // The all-zero key: a low-order point.
            "encrypt_to = \"age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq5cu47z\"",
            "uploads.encrypt_to",
            "low-order",
        ),
        ("region = \"eu west\"", "uploads.region", "AWS region"),
        (
            "endpoint_url = \"http://s3.example.com\"",
            "uploads.endpoint_url",
            "plain http",
        ),
        (
            "endpoint_url = \"ftp://x\"",
            "uploads.endpoint_url",
            "http(s)",
        ),
        (
            "account_key_file = \"k\"",
            "uploads.account_key_file",
            "does not apply",
        ),
    ];
    for (line, key, needle) in cases {
        let text = format!("[uploads]\nbucket = \"task-output\"\n{line}\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(needle), "{line}: {e}");
        // SECURITY: a recipient (or an identity pasted by mistake) is
        // never quoted.
        assert!(!e.contains("AGE-SECRET") && !e.contains("qqqqq"), "{e}");
    }
    for bucket in ["ab", "Task-Output", "-x-", "a..b", "a_b", ""] {
        let e = parse(&format!("[uploads]\nbucket = \"{bucket}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("uploads.bucket"), "{bucket}: {e}");
    }
    let e = parse("[uploads]\nprefix = \"x/\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("uploads.bucket") && e.contains("required"),
        "{e}"
    );
    let e = parse("[uploads]\nbucket = \"b-1\"\nkey = 1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field"), "{e}");
}

#[test]
fn uploads_azure_keys() {
    let c = parse(
        r#"
[uploads]
backend = "azure"
bucket = "task-output"
account = "devstoreaccount1"
account_key_file = "azure.key"
endpoint = "http://127.0.0.1:10000/devstoreaccount1/"
max_size = "5000MiB"
"#,
    )
    .unwrap();
    let u = c.uploads.unwrap();
    assert_eq!(u.max_size, 5000 << 20);
    assert_eq!(
        u.backend,
        UploadBackend::Azure {
            account: "devstoreaccount1".into(),
            // Relative to the config file's directory, like every path.
            account_key_file: PathBuf::from("/etc/sb/azure.key"),
            endpoint: Some("http://127.0.0.1:10000/devstoreaccount1".into()),
        }
    );
    let c = parse(
        "[uploads]\nbackend = \"azure\"\nbucket = \"out\"\naccount = \"acme1\"\naccount_key_file = \"/k\"\n",
    )
    .unwrap();
    assert_eq!(
        c.uploads.unwrap().backend,
        UploadBackend::Azure {
            account: "acme1".into(),
            account_key_file: PathBuf::from("/k"),
            endpoint: None,
        }
    );
}

#[test]
fn uploads_azure_bad_values_are_refused_naming_the_key() {
    let ok_key = "account = \"acme1\"\naccount_key_file = \"/k\"";
    let cases = [
        (
            "bucket = \"task-output\"\naccount_key_file = \"/k\"".to_owned(),
            "uploads.account",
            "required",
        ),
        (
            "bucket = \"task-output\"\naccount = \"acme1\"".to_owned(),
            "uploads.account_key_file",
            "required",
        ),
        (
            "bucket = \"task-output\"\naccount = \"Acme\"\naccount_key_file = \"/k\"".to_owned(),
            "uploads.account",
            "storage account name",
        ),
        (
            format!("bucket = \"a--b\"\n{ok_key}"),
            "uploads.bucket",
            "Azure container name",
        ),
        (
            format!("bucket = \"a.b.c\"\n{ok_key}"),
            "uploads.bucket",
            "Azure container name",
        ),
        (
            format!("bucket = \"out\"\n{ok_key}\nmax_size = \"5GiB\""),
            "uploads.max_size",
            "at most 5000MiB",
        ),
        (
            format!("bucket = \"out\"\n{ok_key}\nendpoint = \"http://blob.example.com\""),
            "uploads.endpoint",
            "plain http",
        ),
        (
            format!("bucket = \"out\"\n{ok_key}\nregion = \"eu-west-1\""),
            "uploads.region",
            "does not apply to backend `azure`",
        ),
        (
            format!("bucket = \"out\"\n{ok_key}\nendpoint_url = \"https://x\""),
            "uploads.endpoint_url",
            "azure takes account, account_key_file, endpoint",
        ),
    ];
    for (lines, key, needle) in cases {
        let text = format!("[uploads]\nbackend = \"azure\"\n{lines}\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(needle), "{lines}: {e}");
    }
    // An s3 config refuses azure's keys.
    let e = parse("[uploads]\nbucket = \"out-1\"\nendpoint = \"https://x\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("uploads.endpoint") && e.contains("does not apply to backend `s3`"),
        "{e}"
    );
}

#[test]
fn uploads_gcs_keys() {
    let c = parse(
        r#"
[uploads]
backend = "gcs"
bucket = "task_output.example"
service_account_file = "keys/sa.json"
max_size = "2TiB"
"#,
    )
    .unwrap();
    let u = c.uploads.unwrap();
    assert_eq!(u.max_size, 2 << 40);
    assert_eq!(
        u.backend,
        UploadBackend::Gcs {
            // Relative to the config file's directory, like every file.
            service_account_file: Path::new("/etc/sb/keys/sa.json").to_owned(),
            endpoint: None,
        }
    );
    let c = parse(
        "[uploads]\nbackend = \"gcs\"\nbucket = \"b-1\"\nservice_account_file = \"/k.json\"\nendpoint = \"http://127.0.0.1:4443/\"\n",
    )
    .unwrap();
    assert_eq!(
        c.uploads.unwrap().backend,
        UploadBackend::Gcs {
            service_account_file: Path::new("/k.json").to_owned(),
            endpoint: Some("http://127.0.0.1:4443".into()),
        }
    );
    let gcs = "backend = \"gcs\"\nservice_account_file = \"k.json\"";
    let cases = [
        (
            "region = \"eu-west-1\"",
            "uploads.region",
            "does not apply to backend `gcs`",
        ),
        (
            "endpoint_url = \"https://x\"",
            "uploads.endpoint_url",
            "gcs takes service_account_file, endpoint",
        ),
        ("account = \"a\"", "uploads.account", "does not apply"),
        (
            "endpoint = \"http://storage.example\"",
            "uploads.endpoint",
            "plain http",
        ),
        ("endpoint = \"ftp://x\"", "uploads.endpoint", "http(s)"),
        (
            "endpoint = \"https://x/storage\"",
            "uploads.endpoint",
            "and nothing more",
        ),
        (
            "endpoint = \"https://u@x\"",
            "uploads.endpoint",
            "and nothing more",
        ),
        ("max_size = \"6TiB\"", "uploads.max_size", "at most 5TiB"),
    ];
    for (line, key, needle) in cases {
        let text = format!("[uploads]\nbucket = \"task-output\"\n{gcs}\n{line}\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(needle), "{line}: {e}");
    }
    let e = parse("[uploads]\nbucket = \"task-output\"\nbackend = \"gcs\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("uploads.service_account_file") && e.contains("is required"),
        "{e}"
    );
    for bucket in ["Upper", "ab", "-x-", "a..b"] {
        let e = parse(&format!("[uploads]\n{gcs}\nbucket = \"{bucket}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("uploads.bucket") && e.contains("GCS bucket"),
            "{bucket}: {e}"
        );
    }
    // s3 refuses the gcs keys.
    let e = parse("[uploads]\nbucket = \"b-1\"\nservice_account_file = \"k.json\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("uploads.service_account_file") && e.contains("backend `s3`"),
        "{e}"
    );
}

#[test]
fn uploads_inline_credentials_are_refused_without_quoting_them() {
    for key in [
        "access_key_id",
        "secret_access_key",
        "session_token",
        "account_key",
        "private_key",
    ] {
        let e = parse(&format!(
            "[uploads]\nbucket = \"b-1\"\n{key} = \"CANARY-credential-123\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains(&format!("uploads.{key}")), "{e}");
        assert!(e.contains("never inline"), "{e}");
        assert!(!e.contains("CANARY"), "{e}");
    }
}

#[test]
fn sizes_parse_in_binary_and_decimal_units() {
    use super::raw::parse_size;
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert_eq!(parse_size("512MiB"), Ok(512 << 20));
    assert_eq!(parse_size("64KiB"), Ok(64 << 10));
    assert_eq!(parse_size("2TiB"), Ok(2 << 40));
    assert_eq!(parse_size("10MB"), Ok(10_000_000));
    assert_eq!(parse_size("7"), Ok(7));
    assert_eq!(parse_size("7B"), Ok(7));
    assert!(parse_size("GiB").is_err());
    assert!(parse_size("1.5GiB").is_err());
    assert!(parse_size("1gib").is_err());
}
