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
    let StoreConfig::Embedded { path, .. } = &c.store;
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
    assert!(c.principals.is_empty());
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
        ("[listen]\ntls = { addr = \"0.0.0.0:1\" }", "listen.tls"),
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
