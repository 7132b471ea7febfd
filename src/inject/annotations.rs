//! The `secret-broker.io/*` annotations on a pod template, parsed into
//! [`Settings`]. Unknown keys, missing keys and contradictions are errors,
//! never silent defaults.

use serde_json::Value;

use super::{CONFIG_ANNOTATION, DEFAULT_IMAGE, InjectError};
use crate::secret::ScopePath;

/// The prefix every annotation of ours starts with.
pub const PREFIX: &str = "secret-broker.io/";

/// The opt-in to inject into a pod whose containers share process
/// namespaces with each other (`shareProcessNamespace`) or with the node
/// (`hostPID`).
pub const ALLOW_SHARED_PROCESS_NAMESPACE: &str = "secret-broker.io/allow-shared-process-namespace";

/// Every annotation this tool reads, with its meaning (for errors and docs).
pub const ANNOTATIONS: &[(&str, &str)] = &[
    (
        "secret-broker.io/inject",
        "\"true\" to inject, \"false\" to opt out",
    ),
    ("secret-broker.io/role", "`task` or `platform`"),
    ("secret-broker.io/scope", "the task's scope (task only)"),
    (
        "secret-broker.io/store",
        "`embedded` (default: a database in the pod) or `external` (the store Secret's `store.toml`)",
    ),
    (
        "secret-broker.io/store-secret",
        "the Secret with `store.key` (embedded) or `store.toml` and its credential files (external)",
    ),
    (
        "secret-broker.io/store-token-audience",
        "external only: mount a service-account token with this audience for the broker alone",
    ),
    (
        "secret-broker.io/policies",
        "the ConfigMap with the Cedar policies (default `secret-broker-policies`)",
    ),
    (
        "secret-broker.io/principal",
        "the principal's name (default `app`)",
    ),
    (
        "secret-broker.io/containers",
        "comma-separated containers that use the broker (default: all)",
    ),
    (
        ALLOW_SHARED_PROCESS_NAMESPACE,
        "\"true\" to inject into a pod with `hostPID` or `shareProcessNamespace` (gives up the socket's isolation)",
    ),
    ("secret-broker.io/image", "the broker image"),
    (
        "secret-broker.io/log-level",
        "error, warn, info (default), debug or trace",
    ),
    ("secret-broker.io/requests-cpu", "default `10m`"),
    ("secret-broker.io/requests-memory", "default `32Mi`"),
    ("secret-broker.io/limits-cpu", "default `500m`"),
    ("secret-broker.io/limits-memory", "default `128Mi`"),
    (
        CONFIG_ANNOTATION,
        "written by injection: the generated broker config",
    ),
];

/// Whose identity the app containers get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A task: reads (and lists) only inside its scope.
    Task(ScopePath),
    /// A platform component: writes, lists and deletes; never reads.
    Platform,
}

/// Where the injected broker keeps values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreMode {
    /// A database in the pod (an `emptyDir`), keyed by the store Secret's
    /// `store.key`: private to the pod.
    Embedded,
    /// A shared backend: the generated config includes the store Secret's
    /// `store.toml`, which sets `[store]` (and may set `[cache]`, `[limits]`).
    External {
        /// When set, a projected service-account token with this audience
        /// is mounted into the broker alone (for Vault Kubernetes auth).
        token_audience: Option<String>,
    },
}

/// What the annotations ask for, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Task or platform.
    pub role: Role,
    /// The principal's name in the generated config (its Cedar entity id).
    pub principal: String,
    /// Embedded or external store.
    pub store: StoreMode,
    /// The Secret holding the store key, or the store config and credentials.
    pub store_secret: String,
    /// The ConfigMap holding the policies.
    pub policies: String,
    /// The containers that use the broker; `None` means all of them.
    pub containers: Option<Vec<String>>,
    /// The broker image.
    pub image: String,
    /// Injection into a pod with `hostPID` or `shareProcessNamespace` was
    /// asked for explicitly, isolation given up.
    pub allow_shared_process_namespace: bool,
    /// The broker's log level.
    pub log_level: String,
    /// CPU and memory requests.
    pub requests: (String, String),
    /// CPU and memory limits.
    pub limits: (String, String),
}

fn err(key: &str, message: impl Into<String>) -> InjectError {
    InjectError::Annotation {
        key: key.to_owned(),
        message: message.into(),
    }
}

impl Settings {
    /// Reads the annotations of a pod template. `Ok(None)` when injection is
    /// not asked for (no annotations of ours, or `inject: "false"`).
    pub fn from_annotations(annotations: Option<&Value>) -> Result<Option<Self>, InjectError> {
        let Some(map) = annotations.and_then(Value::as_object) else {
            return Ok(None);
        };
        let mut ours = std::collections::BTreeMap::new();
        for (k, v) in map.iter().filter(|(k, _)| k.starts_with(PREFIX)) {
            if !ANNOTATIONS.iter().any(|(known, _)| known == k) {
                let known: Vec<&str> = ANNOTATIONS.iter().map(|(k, _)| *k).collect();
                return Err(err(
                    k,
                    format!("unknown annotation; known ones: {}", known.join(", ")),
                ));
            }
            let Some(s) = v.as_str() else {
                return Err(err(k, "must be a string (quote it)"));
            };
            ours.insert(k.as_str(), s);
        }
        // Our own output is not a request to inject.
        ours.remove(CONFIG_ANNOTATION);
        match ours.remove("secret-broker.io/inject") {
            Some("true") => {}
            Some("false") => return Ok(None),
            Some(other) => {
                return Err(err(
                    "secret-broker.io/inject",
                    format!("`{other}` is not \"true\" or \"false\""),
                ));
            }
            None => {
                return match ours.keys().next() {
                    None => Ok(None),
                    Some(k) => Err(err(
                        k,
                        "is set but `secret-broker.io/inject` is not \"true\"; add it, or remove this one",
                    )),
                };
            }
        }
        let mut take = |k: &str| ours.remove(k);
        let role = match (
            take("secret-broker.io/role"),
            take("secret-broker.io/scope"),
        ) {
            (Some("task"), Some(scope)) => Role::Task(ScopePath::parse(scope).map_err(|e| {
                err(
                    "secret-broker.io/scope",
                    format!("`{scope}` is not a valid scope: {e}"),
                )
            })?),
            (Some("task"), None) => {
                return Err(err(
                    "secret-broker.io/scope",
                    "a task needs a scope, e.g. `acme/tasks/t-42`",
                ));
            }
            (Some("platform"), None) => Role::Platform,
            (Some("platform"), Some(_)) => {
                return Err(err(
                    "secret-broker.io/scope",
                    "only a task has a scope; remove it or set `secret-broker.io/role: task`",
                ));
            }
            (Some(other), _) => {
                return Err(err(
                    "secret-broker.io/role",
                    format!("`{other}` is not `task` or `platform`"),
                ));
            }
            (None, _) => {
                return Err(err(
                    "secret-broker.io/role",
                    "is required: `task` (with `secret-broker.io/scope`) or `platform`",
                ));
            }
        };
        let audience = take("secret-broker.io/store-token-audience");
        let store = match (
            take("secret-broker.io/store").unwrap_or("embedded"),
            audience,
        ) {
            ("embedded", None) => StoreMode::Embedded,
            ("embedded", Some(_)) => {
                return Err(err(
                    "secret-broker.io/store-token-audience",
                    "applies only to `secret-broker.io/store: external`; remove it or set that",
                ));
            }
            ("external", audience) => StoreMode::External {
                token_audience: audience.map(token_audience).transpose()?,
            },
            (other, _) => {
                return Err(err(
                    "secret-broker.io/store",
                    format!("`{other}` is not `embedded` or `external`"),
                ));
            }
        };
        let store_secret = take("secret-broker.io/store-secret").ok_or_else(|| {
            let holds = match store {
                StoreMode::Embedded => "the store key (`store.key`)",
                StoreMode::External { .. } => "the store config (`store.toml`)",
            };
            err(
                "secret-broker.io/store-secret",
                format!("is required: the name of the Secret with {holds}"),
            )
        })?;
        let store_secret = k8s_name("secret-broker.io/store-secret", store_secret)?;
        let policies = k8s_name(
            "secret-broker.io/policies",
            take("secret-broker.io/policies").unwrap_or("secret-broker-policies"),
        )?;
        let principal = take("secret-broker.io/principal").unwrap_or("app");
        if !principal_name(principal) {
            return Err(err(
                "secret-broker.io/principal",
                format!("`{principal}` must be 1-128 of [A-Za-z0-9._:@-]"),
            ));
        }
        let containers = match take("secret-broker.io/containers") {
            None => None,
            Some(list) => {
                let names: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if names.is_empty() {
                    return Err(err(
                        "secret-broker.io/containers",
                        "lists no container; remove it to mean all containers",
                    ));
                }
                Some(names)
            }
        };
        let allow_shared_process_namespace = match take(ALLOW_SHARED_PROCESS_NAMESPACE) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(err(
                    ALLOW_SHARED_PROCESS_NAMESPACE,
                    format!("`{other}` is not \"true\" or \"false\""),
                ));
            }
        };
        let image = take("secret-broker.io/image").unwrap_or(DEFAULT_IMAGE);
        if image.is_empty() || image.chars().any(char::is_whitespace) {
            return Err(err(
                "secret-broker.io/image",
                format!("`{image}` is not an image reference"),
            ));
        }
        let log_level = take("secret-broker.io/log-level").unwrap_or("info");
        if !matches!(log_level, "error" | "warn" | "info" | "debug" | "trace") {
            return Err(err(
                "secret-broker.io/log-level",
                format!("`{log_level}` is not error, warn, info, debug or trace"),
            ));
        }
        let mut quantity = |k: &str, default: &str| -> Result<String, InjectError> {
            let q = take(k).unwrap_or(default);
            if is_quantity(q) {
                Ok(q.to_owned())
            } else {
                Err(err(
                    k,
                    format!("`{q}` is not a Kubernetes quantity such as `100m` or `64Mi`"),
                ))
            }
        };
        let requests = (
            quantity("secret-broker.io/requests-cpu", "10m")?,
            quantity("secret-broker.io/requests-memory", "32Mi")?,
        );
        let limits = (
            quantity("secret-broker.io/limits-cpu", "500m")?,
            quantity("secret-broker.io/limits-memory", "128Mi")?,
        );
        Ok(Some(Self {
            role,
            principal: principal.to_owned(),
            store,
            store_secret,
            policies,
            containers,
            image: image.to_owned(),
            allow_shared_process_namespace,
            log_level: log_level.to_owned(),
            requests,
            limits,
        }))
    }
}

/// A DNS-1123 subdomain, as Kubernetes requires of object names.
fn k8s_name(key: &str, s: &str) -> Result<String, InjectError> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(s.to_owned())
    } else {
        Err(err(
            key,
            format!("`{s}` is not a Kubernetes object name (lowercase letters, digits, `-`, `.`)"),
        ))
    }
}

/// A token audience: what the store (e.g. Vault's Kubernetes auth role)
/// expects in the token's `aud`.
fn token_audience(s: &str) -> Result<String, InjectError> {
    let ok = !s.is_empty() && s.len() <= 253 && s.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(s.to_owned())
    } else {
        Err(err(
            "secret-broker.io/store-token-audience",
            format!("`{s}` is not an audience such as `vault` (printable, no spaces)"),
        ))
    }
}

/// The rule the broker's config applies to principal names.
fn principal_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@'))
}

/// A plain Kubernetes quantity: digits, an optional fraction, an optional
/// suffix (no exponents; enough for requests and limits).
fn is_quantity(s: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    SUFFIXES.iter().any(|suf| {
        s.strip_suffix(suf).is_some_and(|num| {
            let (int, frac) = num.split_once('.').unwrap_or((num, "0"));
            !int.is_empty()
                && !frac.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
        })
    })
}
