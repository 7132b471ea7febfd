//! The `secret-broker.io/*` annotations on a pod template, parsed into
//! [`Settings`]. Unknown keys, missing keys and contradictions are errors,
//! never silent defaults.

use serde_json::Value;

use super::{CONFIG_ANNOTATION, DEFAULT_IMAGE, InjectError, SECRETS_DIR};
use crate::run::spec::{EnvSpec, FileSpec, SpecError};
use crate::secret::{ScopePath, SecretPath};

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
    (
        "secret-broker.io/env",
        "`NAME=PATH,...`: wrap the containers' command in `secret-broker run --env` (task only)",
    ),
    (
        "secret-broker.io/env-from",
        "a scope: every secret under it becomes a variable (`secret-broker run --env-from`)",
    ),
    (
        "secret-broker.io/files",
        "`DEST=PATH[:MODE],...`: files in `/run/secrets/secret-broker` (`secret-broker run --file`)",
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

/// What `secret-broker.io/env`, `env-from` and `files` ask for: the flags
/// of the `secret-broker run` that wraps each selected container's command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunWiring {
    /// `--env NAME=PATH`, in annotation order.
    pub env: Vec<EnvSpec>,
    /// `--env-from SCOPE/`.
    pub env_from: Option<ScopePath>,
    /// `--file DEST=PATH[:MODE]`, DEST directly in [`SECRETS_DIR`].
    pub files: Vec<FileSpec>,
}

impl RunWiring {
    /// The flags of `secret-broker run`, in a fixed order.
    pub fn flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.env {
            out.push("--env".to_owned());
            out.push(format!("{}={}", e.name, e.path));
        }
        if let Some(scope) = &self.env_from {
            out.push("--env-from".to_owned());
            out.push(format!("{scope}/"));
        }
        for f in &self.files {
            out.push("--file".to_owned());
            out.push(format!("{}={}:{:04o}", f.dest.display(), f.path, f.mode));
        }
        out
    }

    /// Every secret path read (for the scope check).
    fn paths(&self) -> impl Iterator<Item = &SecretPath> {
        self.env
            .iter()
            .map(|e| &e.path)
            .chain(self.files.iter().map(|f| &f.path))
    }
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
    /// `secret-broker run` wiring, when `env`, `env-from` or `files` asks
    /// for it.
    pub run: Option<RunWiring>,
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
        Self::from_annotations_with(annotations, DEFAULT_IMAGE)
    }

    /// As [`Settings::from_annotations`], with the image used when
    /// `secret-broker.io/image` is not set (`--image`).
    pub fn from_annotations_with(
        annotations: Option<&Value>,
        default_image: &str,
    ) -> Result<Option<Self>, InjectError> {
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
        let run = run_wiring(
            take("secret-broker.io/env"),
            take("secret-broker.io/env-from"),
            take("secret-broker.io/files"),
        )?;
        if let Some(run) = &run {
            check_run(run, &role, &store)?;
        }
        let image = take("secret-broker.io/image").unwrap_or(default_image);
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
            run,
            allow_shared_process_namespace,
            log_level: log_level.to_owned(),
            requests,
            limits,
        }))
    }
}

/// The items of a comma-separated annotation, trimmed, empty ones dropped.
fn items(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A flag parser's refusal, in the annotation's words.
fn spec_message(item: &str, e: SpecError, shape: &str) -> String {
    match e {
        SpecError::Shape { .. } | SpecError::EmptyFile(_) => {
            format!("`{item}` must be `{shape}`")
        }
        other => other.to_string(),
    }
}

/// Parses `env`, `env-from` and `files`; `None` when none is set.
fn run_wiring(
    env: Option<&str>,
    env_from: Option<&str>,
    files: Option<&str>,
) -> Result<Option<RunWiring>, InjectError> {
    if env.is_none() && env_from.is_none() && files.is_none() {
        return Ok(None);
    }
    let mut w = RunWiring::default();
    const ENV: &str = "secret-broker.io/env";
    const FILES: &str = "secret-broker.io/files";
    for item in items(env.unwrap_or_default()) {
        let spec = crate::run::spec::env(item)
            .map_err(|e| err(ENV, spec_message(item, e, "NAME=PATH")))?;
        if w.env.iter().any(|e| e.name == spec.name) {
            return Err(err(ENV, format!("names `{}` twice", spec.name)));
        }
        w.env.push(spec);
    }
    if let Some(scope) = env_from {
        w.env_from = Some(
            crate::run::spec::env_from(scope.trim())
                .map_err(|e| err("secret-broker.io/env-from", e.to_string()))?,
        );
    }
    for item in items(files.unwrap_or_default()) {
        let spec = crate::run::spec::file(item)
            .map_err(|e| err(FILES, spec_message(item, e, "DEST=PATH[:MODE]")))?;
        // SECURITY: files go only to the pod's memory volume, never to a
        // disk or an arbitrary path of the image. `run` needs DEST's
        // directory to exist, and only the volume's root surely does.
        let dest = spec.dest.to_str().unwrap_or_default();
        let in_dir = dest
            .strip_prefix(SECRETS_DIR)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|name| !name.is_empty() && !name.contains('/') && name != "..");
        if !in_dir || name_is_dots(dest) {
            return Err(err(
                FILES,
                format!(
                    "`{dest}` must be a file directly in `{SECRETS_DIR}/` (the pod's memory volume), e.g. `{SECRETS_DIR}/db-password`"
                ),
            ));
        }
        if w.files.iter().any(|f| f.dest == spec.dest) {
            return Err(err(FILES, format!("writes `{dest}` twice")));
        }
        w.files.push(spec);
    }
    if w == RunWiring::default() {
        return Err(err(
            if env.is_some() { ENV } else { FILES },
            "lists nothing; remove it, or name at least one secret",
        ));
    }
    Ok(Some(w))
}

fn name_is_dots(dest: &str) -> bool {
    dest.rsplit('/')
        .next()
        .is_some_and(|n| n == "." || n == "..")
}

/// Refuses wiring that could never start the program: a platform component
/// may not read, a task reads only its own scope, and a task's per-pod
/// embedded store never holds a secret (nobody can write to it).
fn check_run(run: &RunWiring, role: &Role, store: &StoreMode) -> Result<(), InjectError> {
    let key = if run.env.is_empty() && run.env_from.is_none() {
        "secret-broker.io/files"
    } else if run.env.is_empty() {
        "secret-broker.io/env-from"
    } else {
        "secret-broker.io/env"
    };
    let scope = match role {
        Role::Platform => {
            return Err(err(
                key,
                "a platform component may never read a secret, so `secret-broker run` could not start; use it with `secret-broker.io/role: task`",
            ));
        }
        Role::Task(scope) => scope,
    };
    if *store == StoreMode::Embedded {
        return Err(err(
            key,
            "the task's store is `embedded`, a database in this pod that nothing can write to, so every read would fail and the program would never start; set `secret-broker.io/store: external` (the shared store of `secret-broker.io/store-secret`)",
        ));
    }
    if let Some(path) = run.paths().find(|p| !p.is_within(scope)) {
        return Err(err(
            key,
            format!(
                "`{path}` is outside the task's scope `{scope}`: the broker would refuse the read and the program would never start"
            ),
        ));
    }
    if let Some(from) = run.env_from.as_ref().filter(|f| !scope.contains_scope(f)) {
        return Err(err(
            "secret-broker.io/env-from",
            format!(
                "`{from}` is not inside the task's scope `{scope}`: the broker would refuse the list and the program would never start"
            ),
        ));
    }
    Ok(())
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
