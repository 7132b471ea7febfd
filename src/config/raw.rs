//! The raw TOML shape: every key optional with a documented default,
//! unknown keys refused. `validate` turns it into the typed `Config`.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use super::{
    AuditSink, CacheConfig, Config, ConfigError, DEFAULT_SOCKET, Limits, ListenConfig, LogConfig,
    LogFormat, StoreConfig, invalid, parse_duration, parse_mode, principal_kind, resolve,
    resolve_group, scope, token_digest, valid_id,
};
use crate::identity::{Principal, PrincipalKind, PrincipalSpec};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
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
    #[serde(default, rename = "principal")]
    principals: Vec<RawPrincipal>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    socket: Option<String>,
    mode: Option<String>,
    group: Option<toml::Value>,
    tls: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    backend: Option<String>,
    path: Option<String>,
    key_file: Option<String>,
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
    pub(super) fn validate(self, base: &Path) -> Result<Config, ConfigError> {
        let listen = self.listen.validate(base)?;
        let store = self.store.validate(base)?;
        let cache = CacheConfig {
            ttl: duration("cache.ttl", self.cache.ttl.as_deref(), "5m")?,
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
        let principals = validate_principals(self.principals)?;
        Ok(Config {
            listen,
            store,
            cache,
            policy_dir,
            audit,
            log,
            limits,
            principals,
        })
    }
}

impl RawListen {
    fn validate(self, base: &Path) -> Result<ListenConfig, ConfigError> {
        if self.tls.is_some() {
            return Err(invalid(
                "listen.tls",
                "the TLS listener is not available in this build; remove the key and use the Unix socket",
            ));
        }
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
        })
    }
}

impl RawStore {
    fn validate(self, base: &Path) -> Result<StoreConfig, ConfigError> {
        match self.backend.as_deref().unwrap_or("embedded") {
            "embedded" => Ok(StoreConfig::Embedded {
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
            }),
            b @ ("vault" | "aws" | "azure" | "gcp") => Err(invalid(
                "store.backend",
                format!("the `{b}` store is not available in this build; use \"embedded\""),
            )),
            b => Err(invalid(
                "store.backend",
                format!("`{b}` is not one of embedded, vault, aws, azure, gcp"),
            )),
        }
    }
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
        Ok(Limits {
            max_connections: positive(
                "limits.max_connections",
                self.max_connections,
                d.max_connections,
            )?,
            max_in_flight: positive("limits.max_in_flight", self.max_in_flight, d.max_in_flight)?,
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
        if p.uid.is_none() && p.gid.is_none() && token.is_none() {
            return Err(invalid(
                key("uid"),
                format!(
                    "principal `{}` needs at least one of uid, gid or token_sha256",
                    p.name
                ),
            ));
        }
        // SECURITY: two principals with the same proof would make every such
        // caller ambiguous (always 401); refuse the config instead.
        let sig = (p.uid, p.gid, token.as_ref().map(|t| t.to_hex()));
        if !criteria.insert(sig) {
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
        });
    }
    Ok(out)
}
