//! The raw TOML shape: every key optional with a documented default,
//! unknown keys refused. `validate` turns it into the typed `Config`.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{
    AuditOnFailure, AuditSink, AwsConfig, CacheConfig, Config, ConfigError, DEFAULT_SOCKET, Limits,
    ListenConfig, LogConfig, LogFormat, RemoteConfig, RuntimeConfig, RuntimeFlavor, StoreConfig,
    TlsListenConfig, TlsMinVersion, VaultAuth, VaultConfig, cert_rule, invalid, parse_duration,
    parse_mode, principal_kind, resolve, resolve_group, scope, token_digest, valid_id,
};
use crate::identity::{Principal, PrincipalKind, PrincipalSpec};

mod cloud;
mod uploads;

#[cfg(test)]
pub(super) use uploads::parse_size;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    /// Files whose tables join this file's; resolved by `Config`, not here.
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default)]
    memory: RawMemory,
    #[serde(default, rename = "principal")]
    principals: Vec<RawPrincipal>,
    uploads: Option<uploads::RawUploads>,
}

/// The runtime `serve` uses unless `[runtime] flavor` says otherwise
/// (chosen by measurement: see docs/performance.md).
const DEFAULT_RUNTIME: &str = "per_core";

/// How long a `per_core` worker polls its connections before it sleeps
/// (also chosen by measurement), and the most it may be set to.
const DEFAULT_IDLE_SPIN: &str = "50us";
const MAX_IDLE_SPIN: std::time::Duration = std::time::Duration::from_millis(1);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    flavor: Option<String>,
    worker_threads: Option<usize>,
    socket_workers: Option<usize>,
    spread_preempted: Option<f64>,
    idle_spin: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMemory {
    lock: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    addr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    socket: Option<String>,
    mode: Option<String>,
    group: Option<toml::Value>,
    tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    addr: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    #[serde(default)]
    crl: Vec<String>,
    min_version: Option<String>,
    max_connection_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    backend: Option<String>,
    // embedded
    path: Option<String>,
    key_file: Option<String>,
    // every remote store
    prefix: Option<String>,
    timeout: Option<String>,
    // vault
    address: Option<String>,
    mount: Option<String>,
    namespace: Option<String>,
    ca_file: Option<String>,
    auth: Option<String>,
    token_file: Option<String>,
    role_id: Option<String>,
    secret_id_file: Option<String>,
    role: Option<String>,
    jwt_file: Option<String>,
    // aws
    region: Option<String>,
    endpoint_url: Option<String>,
    // gcp
    project: Option<String>,
    endpoint: Option<String>,
    credentials: Option<String>,
    // azure
    vault_url: Option<String>,
    tenant_id: Option<String>,
    client_id: Option<String>,
    client_secret_file: Option<String>,
    // SECURITY: inline credentials are named here only to be refused with a
    // useful message. Left to `deny_unknown_fields`, TOML's error would quote
    // the offending line, credential and all; `IgnoredAny` keeps no value.
    token: Option<IgnoredAny>,
    secret_id: Option<IgnoredAny>,
    jwt: Option<IgnoredAny>,
    access_key_id: Option<IgnoredAny>,
    secret_access_key: Option<IgnoredAny>,
    session_token: Option<IgnoredAny>,
    client_secret: Option<IgnoredAny>,
    private_key: Option<IgnoredAny>,
    credentials_json: Option<IgnoredAny>,
    api_key: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    ttl: Option<String>,
    stale_if_error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    sink: Option<String>,
    spool: Option<bool>,
    on_failure: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<usize>,
    max_in_flight: Option<usize>,
    max_connections_per_uid: Option<usize>,
    max_in_flight_per_principal: Option<usize>,
    max_value_bytes: Option<usize>,
    max_body_bytes: Option<usize>,
    max_header_bytes: Option<usize>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    drain_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrincipal {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    roles: Vec<String>,
    scope: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    token_sha256: Option<String>,
    spiffe_id: Option<String>,
    cert_dns_name: Option<String>,
    cert_spki_sha256: Option<String>,
}

fn duration(key: &str, v: Option<&str>, default: &str) -> Result<std::time::Duration, ConfigError> {
    parse_duration(v.unwrap_or(default)).map_err(|m| invalid(key, m))
}

fn positive(key: &str, v: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match v.unwrap_or(default) {
        0 => Err(invalid(key, "must be at least 1")),
        n => Ok(n),
    }
}

impl RawConfig {
    /// Takes out the `include` list, which `Config` resolves.
    pub(super) fn take_include(&mut self) -> Vec<String> {
        std::mem::take(&mut self.include)
    }
}

impl RawConfig {
    pub(super) fn validate(self, base: &Path) -> Result<Config, ConfigError> {
        let listen = self.listen.validate(base)?;
        let store = self.store.validate(base)?;
        let cache = CacheConfig {
            // The revocation bound: how long another broker may serve a
            // deleted or rotated value (measured cost: benches/store_reads).
            ttl: duration("cache.ttl", self.cache.ttl.as_deref(), "30s")?,
            stale_if_error: duration(
                "cache.stale_if_error",
                self.cache.stale_if_error.as_deref(),
                "0s",
            )?,
        };
        let policy_dir = resolve(base, self.policy.dir.as_deref().unwrap_or("policies"));
        let audit = match self.audit.sink.as_deref().unwrap_or("stdout") {
            "stdout" => AuditSink::Stdout,
            s => match s.strip_prefix("file:") {
                Some(p) if !p.is_empty() => AuditSink::File(resolve(base, p)),
                _ => {
                    return Err(invalid(
                        "audit.sink",
                        format!("`{s}` is not \"stdout\" or \"file:/path\""),
                    ));
                }
            },
        };
        let log = LogConfig {
            format: match self.log.format.as_deref().unwrap_or("json") {
                "json" => LogFormat::Json,
                "pretty" => LogFormat::Pretty,
                s => {
                    return Err(invalid(
                        "log.format",
                        format!("`{s}` is not \"json\" or \"pretty\""),
                    ));
                }
            },
            level: self.log.level.unwrap_or_else(|| "info".to_owned()),
        };
        let limits = self.limits.validate()?;
        let runtime = RuntimeConfig {
            flavor: match self.runtime.flavor.as_deref().unwrap_or(DEFAULT_RUNTIME) {
                "current_thread" => RuntimeFlavor::CurrentThread,
                "multi_thread" => RuntimeFlavor::MultiThread,
                "per_core" => RuntimeFlavor::PerCore,
                f => {
                    return Err(invalid(
                        "runtime.flavor",
                        format!(
                            "`{f}` is not \"per_core\", \"multi_thread\" or \"current_thread\""
                        ),
                    ));
                }
            },
            worker_threads: match self.runtime.worker_threads {
                Some(0) => return Err(invalid("runtime.worker_threads", "must be at least 1")),
                n => n,
            },
            socket_workers: match (self.runtime.socket_workers, self.runtime.worker_threads) {
                (Some(0), _) => {
                    return Err(invalid("runtime.socket_workers", "must be at least 1"));
                }
                (Some(s), Some(n)) if s > n => {
                    return Err(invalid(
                        "runtime.socket_workers",
                        format!("must be at most runtime.worker_threads ({n})"),
                    ));
                }
                (s, _) => s,
            },
            // Off unless set: measured, the signal also fires for an
            // event-loop client that shares the worker's core (see
            // docs/performance.md, session 15).
            spread_preempted: match self.runtime.spread_preempted {
                None => None,
                Some(x) if x.is_finite() && x >= 0.0 => Some(x),
                Some(_) => {
                    return Err(invalid(
                        "runtime.spread_preempted",
                        "must be a number of at least 0 (preemptions per request, e.g. 0.1)",
                    ));
                }
            },
            idle_spin: match duration(
                "runtime.idle_spin",
                self.runtime.idle_spin.as_deref(),
                DEFAULT_IDLE_SPIN,
            )? {
                d if d > MAX_IDLE_SPIN => {
                    return Err(invalid(
                        "runtime.idle_spin",
                        "must be at most 1ms (a few tens of microseconds is plenty; \"0s\" turns it off)",
                    ));
                }
                d => d,
            },
        };
        let metrics_addr = self
            .metrics
            .addr
            .map(|a| {
                a.parse::<std::net::SocketAddr>().map_err(|_| {
                    invalid(
                        "metrics.addr",
                        format!("`{a}` is not an address such as \"127.0.0.1:9464\""),
                    )
                })
            })
            .transpose()?;
        let principals = validate_principals(self.principals)?;
        let uploads = self.uploads.map(|u| u.validate(base)).transpose()?;
        Ok(Config {
            listen,
            store,
            cache,
            policy_dir,
            audit,
            audit_spool: self.audit.spool.unwrap_or(false),
            audit_on_failure: match self.audit.on_failure.as_deref().unwrap_or("refuse") {
                "refuse" => AuditOnFailure::Refuse,
                "serve" => AuditOnFailure::Serve,
                s => {
                    return Err(invalid(
                        "audit.on_failure",
                        format!("`{s}` is not \"refuse\" or \"serve\""),
                    ));
                }
            },
            log,
            limits,
            runtime,
            memory_lock: self.memory.lock.unwrap_or(false),
            metrics_addr,
            principals,
            uploads,
        })
    }
}

impl RawListen {
    fn validate(self, base: &Path) -> Result<ListenConfig, ConfigError> {
        let tls = self.tls.map(|t| t.validate(base)).transpose()?;
        let group = match self.group {
            None => None,
            Some(toml::Value::Integer(g)) => {
                Some(u32::try_from(g).map_err(|_| invalid("listen.group", "gid out of range"))?)
            }
            Some(toml::Value::String(s)) => Some(resolve_group(&s)?),
            Some(_) => return Err(invalid("listen.group", "must be a group name or a gid")),
        };
        Ok(ListenConfig {
            socket: resolve(base, self.socket.as_deref().unwrap_or(DEFAULT_SOCKET)),
            mode: parse_mode(self.mode.as_deref().unwrap_or("0660"))?,
            group,
            tls,
        })
    }
}

impl RawTls {
    fn validate(self, base: &Path) -> Result<TlsListenConfig, ConfigError> {
        let file = |name: &str, v: Option<String>| {
            v.filter(|s| !s.is_empty())
                .map(|s| resolve(base, &s))
                .ok_or_else(|| invalid(format!("listen.tls.{name}"), "is required (a PEM file)"))
        };
        let addr = self
            .addr
            .ok_or_else(|| invalid("listen.tls.addr", "is required, e.g. \"0.0.0.0:8443\""))?;
        let addr = addr.parse().map_err(|_| {
            invalid(
                "listen.tls.addr",
                format!("`{addr}` is not an address such as \"0.0.0.0:8443\""),
            )
        })?;
        let min_version = match self.min_version.as_deref().unwrap_or("1.3") {
            "1.3" => TlsMinVersion::Tls13,
            "1.2" => TlsMinVersion::Tls12,
            v => {
                return Err(invalid(
                    "listen.tls.min_version",
                    format!("`{v}` is not \"1.3\" or \"1.2\""),
                ));
            }
        };
        let max_connection_age = duration(
            "listen.tls.max_connection_age",
            self.max_connection_age.as_deref(),
            "30m",
        )?;
        if max_connection_age.is_zero() {
            return Err(invalid(
                "listen.tls.max_connection_age",
                "must be more than 0s",
            ));
        }
        Ok(TlsListenConfig {
            addr,
            cert: file("cert", self.cert)?,
            key: file("key", self.key)?,
            client_ca: file("client_ca", self.client_ca)?,
            crl: self.crl.iter().map(|c| resolve(base, c)).collect(),
            min_version,
            max_connection_age,
        })
    }
}

/// The default service-account token of a Kubernetes pod.
const K8S_JWT: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

impl RawStore {
    fn validate(self, base: &Path) -> Result<StoreConfig, ConfigError> {
        self.refuse_inline_credentials()?;
        let backend = self.backend.as_deref().unwrap_or("embedded");
        match backend {
            "embedded" => {
                self.only(backend, &["path", "key_file"])?;
                Ok(StoreConfig::Embedded {
                    path: resolve(
                        base,
                        self.path
                            .as_deref()
                            .unwrap_or("/var/lib/secret-broker/store.redb"),
                    ),
                    key_file: resolve(
                        base,
                        self.key_file
                            .as_deref()
                            .unwrap_or("/etc/secret-broker/store.key"),
                    ),
                })
            }
            "vault" => {
                self.only(
                    backend,
                    &[
                        "prefix",
                        "timeout",
                        "address",
                        "mount",
                        "namespace",
                        "ca_file",
                        "auth",
                        "token_file",
                        "role_id",
                        "secret_id_file",
                        "role",
                        "jwt_file",
                    ],
                )?;
                self.vault(base).map(StoreConfig::Vault)
            }
            "aws" => {
                self.only(backend, &["prefix", "timeout", "region", "endpoint_url"])?;
                let remote = self.remote()?;
                let endpoint_url = self
                    .endpoint_url
                    .map(|u| url("store.endpoint_url", u))
                    .transpose()?;
                if let Some(r) = &self.region {
                    aws_region("store.region", r)?;
                }
                Ok(StoreConfig::Aws(AwsConfig {
                    region: self.region,
                    endpoint_url,
                    remote,
                }))
            }
            "gcp" => {
                self.only(
                    backend,
                    &["prefix", "timeout", "project", "endpoint", "credentials"],
                )?;
                self.gcp().map(StoreConfig::Gcp)
            }
            "azure" => {
                self.only(
                    backend,
                    &[
                        "prefix",
                        "timeout",
                        "vault_url",
                        "credentials",
                        "tenant_id",
                        "client_id",
                        "client_secret_file",
                    ],
                )?;
                self.azure(base).map(StoreConfig::Azure)
            }
            b => Err(invalid(
                "store.backend",
                format!("`{b}` is not one of embedded, vault, aws, azure, gcp"),
            )),
        }
    }

    fn refuse_inline_credentials(&self) -> Result<(), ConfigError> {
        let inline = [
            ("token", self.token.is_some(), "token_file or $VAULT_TOKEN"),
            ("secret_id", self.secret_id.is_some(), "secret_id_file"),
            ("jwt", self.jwt.is_some(), "jwt_file"),
            (
                "access_key_id",
                self.access_key_id.is_some(),
                "the AWS default credential chain",
            ),
            (
                "secret_access_key",
                self.secret_access_key.is_some(),
                "the AWS default credential chain",
            ),
            (
                "session_token",
                self.session_token.is_some(),
                "the AWS default credential chain",
            ),
            (
                "client_secret",
                self.client_secret.is_some(),
                "client_secret_file",
            ),
            (
                "private_key",
                self.private_key.is_some(),
                "$GOOGLE_APPLICATION_CREDENTIALS or workload identity",
            ),
            (
                "credentials_json",
                self.credentials_json.is_some(),
                "$GOOGLE_APPLICATION_CREDENTIALS or workload identity",
            ),
            (
                "api_key",
                self.api_key.is_some(),
                "the store's credential chain",
            ),
        ];
        match inline.iter().find(|(_, set, _)| *set) {
            Some((key, _, instead)) => Err(invalid(
                format!("store.{key}"),
                format!("store credentials are never inline in the config; use {instead}"),
            )),
            None => Ok(()),
        }
    }

    /// Refuses keys that belong to another backend than `backend`.
    fn only(&self, backend: &str, allowed: &[&str]) -> Result<(), ConfigError> {
        let set = [
            ("path", self.path.is_some()),
            ("key_file", self.key_file.is_some()),
            ("prefix", self.prefix.is_some()),
            ("timeout", self.timeout.is_some()),
            ("address", self.address.is_some()),
            ("mount", self.mount.is_some()),
            ("namespace", self.namespace.is_some()),
            ("ca_file", self.ca_file.is_some()),
            ("auth", self.auth.is_some()),
            ("token_file", self.token_file.is_some()),
            ("role_id", self.role_id.is_some()),
            ("secret_id_file", self.secret_id_file.is_some()),
            ("role", self.role.is_some()),
            ("jwt_file", self.jwt_file.is_some()),
            ("region", self.region.is_some()),
            ("endpoint_url", self.endpoint_url.is_some()),
            ("project", self.project.is_some()),
            ("endpoint", self.endpoint.is_some()),
            ("credentials", self.credentials.is_some()),
            ("vault_url", self.vault_url.is_some()),
            ("tenant_id", self.tenant_id.is_some()),
            ("client_id", self.client_id.is_some()),
            ("client_secret_file", self.client_secret_file.is_some()),
        ];
        match set.iter().find(|(k, s)| *s && !allowed.contains(k)) {
            Some((key, _)) => Err(invalid(
                format!("store.{key}"),
                format!("does not apply to backend `{backend}`; remove it"),
            )),
            None => Ok(()),
        }
    }

    fn remote(&self) -> Result<RemoteConfig, ConfigError> {
        let timeout = duration("store.timeout", self.timeout.as_deref(), "5s")?;
        if timeout.is_zero() {
            return Err(invalid("store.timeout", "must be more than 0"));
        }
        Ok(RemoteConfig {
            prefix: prefix("store.prefix", self.prefix.as_deref().unwrap_or(""))?,
            timeout,
        })
    }

    fn vault(self, base: &Path) -> Result<VaultConfig, ConfigError> {
        let remote = self.remote()?;
        let address = url(
            "store.address",
            self.address.ok_or_else(|| {
                invalid(
                    "store.address",
                    "the vault store needs the server's URL, e.g. \"https://vault.example:8200\"",
                )
            })?,
        )?;
        let mount = self.mount.unwrap_or_else(|| "secret".to_owned());
        let mount = mount.trim_matches('/').to_owned();
        if !vault_path(&mount) {
            return Err(invalid(
                "store.mount",
                format!("`{mount}` is not a mount path such as \"secret\""),
            ));
        }
        if let Some(ns) = &self.namespace {
            if !vault_path(ns.trim_matches('/')) {
                return Err(invalid(
                    "store.namespace",
                    format!("`{ns}` is not a namespace path such as \"team-a\""),
                ));
            }
        }
        let file = |v: Option<String>| v.map(|p| resolve(base, &p));
        let method = self.auth.as_deref().unwrap_or("token");
        let not_for = |key: &str, set: bool| -> Result<(), ConfigError> {
            if set {
                Err(invalid(
                    format!("store.{key}"),
                    format!("does not apply to auth = \"{method}\"; remove it"),
                ))
            } else {
                Ok(())
            }
        };
        let auth = match method {
            "token" => {
                not_for("role_id", self.role_id.is_some())?;
                not_for("secret_id_file", self.secret_id_file.is_some())?;
                not_for("role", self.role.is_some())?;
                not_for("jwt_file", self.jwt_file.is_some())?;
                VaultAuth::Token {
                    token_file: file(self.token_file),
                }
            }
            "approle" => {
                not_for("token_file", self.token_file.is_some())?;
                not_for("role", self.role.is_some())?;
                not_for("jwt_file", self.jwt_file.is_some())?;
                VaultAuth::AppRole {
                    role_id: self.role_id.filter(|r| !r.is_empty()).ok_or_else(|| {
                        invalid("store.role_id", "auth = \"approle\" needs a role_id")
                    })?,
                    secret_id_file: file(self.secret_id_file).ok_or_else(|| {
                        invalid(
                            "store.secret_id_file",
                            "auth = \"approle\" needs the file holding the secret id",
                        )
                    })?,
                }
            }
            "kubernetes" => {
                not_for("token_file", self.token_file.is_some())?;
                not_for("role_id", self.role_id.is_some())?;
                not_for("secret_id_file", self.secret_id_file.is_some())?;
                VaultAuth::Kubernetes {
                    role: self.role.filter(|r| !r.is_empty()).ok_or_else(|| {
                        invalid("store.role", "auth = \"kubernetes\" needs the Vault role")
                    })?,
                    jwt_file: resolve(base, self.jwt_file.as_deref().unwrap_or(K8S_JWT)),
                }
            }
            other => {
                return Err(invalid(
                    "store.auth",
                    format!("`{other}` is not one of token, approle, kubernetes"),
                ));
            }
        };
        Ok(VaultConfig {
            address,
            mount,
            namespace: self.namespace.map(|n| n.trim_matches('/').to_owned()),
            ca_file: file(self.ca_file),
            auth,
            remote,
        })
    }
}

/// Normalises a store prefix to `""` or `seg/…/seg/`; segments follow the
/// path grammar so that a prefixed path is still a valid store name.
fn prefix(key: &str, raw: &str) -> Result<String, ConfigError> {
    let trimmed = raw.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    scope(key, trimmed)?;
    Ok(format!("{trimmed}/"))
}

/// Checks an `http(s)` URL. Plain `http` is allowed only to loopback.
/// Checks that `r` can be an AWS region name (`eu-west-1`).
fn aws_region(key: &str, r: &str) -> Result<(), ConfigError> {
    let ok =
        !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("`{r}` is not an AWS region such as \"eu-west-1\""),
        ))
    }
}

fn url(key: &str, raw: String) -> Result<String, ConfigError> {
    let raw = raw.trim_end_matches('/').to_owned();
    let rest = if let Some(r) = raw.strip_prefix("https://") {
        r
    } else if let Some(r) = raw.strip_prefix("http://") {
        // SECURITY: credentials and values cross this connection; cleartext
        // only where it never leaves the machine (tests, a local agent).
        let host = r.split(['/', '?']).next().unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            return Err(invalid(
                key,
                format!(
                    "`{raw}`: plain http is allowed only to 127.0.0.1, [::1] or localhost; use https"
                ),
            ));
        }
        r
    } else {
        return Err(invalid(
            key,
            format!("`{raw}` is not an http(s) URL such as \"https://host:8200\""),
        ));
    };
    if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
        return Err(invalid(key, format!("`{raw}` has no host")));
    }
    Ok(raw)
}

/// A Vault mount or namespace path: segments of `[A-Za-z0-9._-]`.
fn vault_path(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

impl RawLimits {
    fn validate(self) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let max_value_bytes = positive(
            "limits.max_value_bytes",
            self.max_value_bytes,
            d.max_value_bytes,
        )?;
        let max_body_bytes = positive(
            "limits.max_body_bytes",
            self.max_body_bytes,
            2 * max_value_bytes + 16 * 1024,
        )?;
        if max_body_bytes < max_value_bytes {
            return Err(invalid(
                "limits.max_body_bytes",
                "must be at least limits.max_value_bytes",
            ));
        }
        let max_header_bytes = positive(
            "limits.max_header_bytes",
            self.max_header_bytes,
            d.max_header_bytes,
        )?;
        if max_header_bytes < 1024 {
            return Err(invalid("limits.max_header_bytes", "must be at least 1024"));
        }
        let max_connections = positive(
            "limits.max_connections",
            self.max_connections,
            d.max_connections,
        )?;
        let max_in_flight = positive("limits.max_in_flight", self.max_in_flight, d.max_in_flight)?;
        Ok(Limits {
            max_connections,
            max_in_flight,
            // By default one caller may take half of each, so the others
            // always keep the other half.
            max_connections_per_uid: positive(
                "limits.max_connections_per_uid",
                self.max_connections_per_uid,
                max_connections.div_ceil(2),
            )?,
            max_in_flight_per_principal: positive(
                "limits.max_in_flight_per_principal",
                self.max_in_flight_per_principal,
                max_in_flight.div_ceil(2),
            )?,
            max_value_bytes,
            max_body_bytes,
            max_header_bytes,
            header_timeout: duration(
                "limits.header_timeout",
                self.header_timeout.as_deref(),
                "10s",
            )?,
            body_timeout: duration("limits.body_timeout", self.body_timeout.as_deref(), "10s")?,
            drain_timeout: duration("limits.drain_timeout", self.drain_timeout.as_deref(), "10s")?,
        })
    }
}

fn validate_principals(raw: Vec<RawPrincipal>) -> Result<Vec<PrincipalSpec>, ConfigError> {
    let mut names = HashSet::new();
    let mut criteria = HashSet::new();
    let mut certs = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("principal[{i}].{field}");
        if !valid_id(&p.name) {
            return Err(invalid(
                key("name"),
                format!("`{}` must be 1-128 of [A-Za-z0-9._:@-]", p.name),
            ));
        }
        if !names.insert(p.name.clone()) {
            return Err(invalid(key("name"), format!("`{}` is used twice", p.name)));
        }
        let kind = principal_kind(&key("type"), &p.kind)?;
        let scope = match (kind, p.scope.as_deref()) {
            (PrincipalKind::Task, Some(s)) => Some(scope(&key("scope"), s)?),
            (PrincipalKind::Task, None) => {
                return Err(invalid(key("scope"), "a Task needs a scope"));
            }
            (PrincipalKind::Component, Some(_)) => {
                return Err(invalid(
                    key("scope"),
                    "only a Task has a scope; remove it or make the principal a Task",
                ));
            }
            (PrincipalKind::Component, None) => None,
        };
        for r in &p.roles {
            if !valid_id(r) {
                return Err(invalid(
                    key("roles"),
                    format!("`{r}` must be 1-128 of [A-Za-z0-9._:@-]"),
                ));
            }
        }
        let token = p
            .token_sha256
            .as_deref()
            .map(|t| token_digest(&key("token_sha256"), t))
            .transpose()?;
        let cert = cert_rule(
            &key,
            p.spiffe_id.as_deref(),
            p.cert_dns_name.as_deref(),
            p.cert_spki_sha256.as_deref(),
        )?;
        // SECURITY: a certificate principal is reached over TLS only; one
        // that also named a uid or token would be two kinds of caller.
        if cert.is_some() && (p.uid.is_some() || p.gid.is_some() || token.is_some()) {
            return Err(invalid(
                key("spiffe_id"),
                format!(
                    "principal `{}` is a certificate principal and cannot also have uid, gid or token_sha256; make two principals",
                    p.name
                ),
            ));
        }
        if cert.is_some() {
            if !certs.insert(format!(
                "{:?}",
                cert.as_ref().map(|c| (&c.subject, c.spki_sha256))
            )) {
                return Err(invalid(
                    key("spiffe_id"),
                    format!(
                        "principal `{}` has the same certificate rule as an earlier one",
                        p.name
                    ),
                ));
            }
        } else if p.uid.is_none() && p.gid.is_none() && token.is_none() {
            return Err(invalid(
                key("uid"),
                format!(
                    "principal `{}` needs at least one of uid, gid or token_sha256",
                    p.name
                ),
            ));
        }
        // SECURITY: the kernel's overflow id is what every process whose id
        // is not mapped into the broker's user namespace appears as: a
        // principal at that id would be all of them.
        let (ou, og) = crate::identity::overflow_ids();
        if p.uid == Some(ou) || p.gid == Some(og) {
            return Err(invalid(
                key(if p.uid == Some(ou) { "uid" } else { "gid" }),
                format!(
                    "principal `{}` names the kernel's overflow id ({}), which every process of an unmapped user namespace appears as; give it a uid/gid of its own",
                    p.name,
                    if p.uid == Some(ou) { ou } else { og }
                ),
            ));
        }
        // SECURITY: two principals with the same proof would make every such
        // caller ambiguous (always 401); refuse the config instead.
        let sig = (p.uid, p.gid, token.as_ref().map(|t| t.to_hex()));
        if cert.is_none() && !criteria.insert(sig) {
            return Err(invalid(
                key("uid"),
                format!(
                    "principal `{}` has the same uid/gid/token as an earlier one",
                    p.name
                ),
            ));
        }
        out.push(PrincipalSpec {
            principal: Principal {
                name: p.name,
                kind,
                roles: p.roles,
                scope,
            },
            uid: p.uid,
            gid: p.gid,
            token,
            cert,
        });
    }
    Ok(out)
}
