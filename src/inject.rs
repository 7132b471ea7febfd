//! Sidecar injection: finds annotated pod templates in Kubernetes manifests
//! and adds the broker as a native sidecar with its identity wiring. The
//! `inject` CLI and the admission webhook share this code.
//!
//! Injection is a pure function of the annotations and the pod spec, and it
//! first strips whatever an earlier injection added, so running it twice
//! gives the same result as running it once.

mod annotations;
mod broker_config;
mod pod;

use serde_json::{Map, Value};

pub use annotations::{
    ALLOW_SHARED_PROCESS_NAMESPACE, ANNOTATIONS, PREFIX, Role, RunWiring, Settings, StoreMode,
};
pub use broker_config::{AppIdentity, generate as generate_config};

/// The annotation that carries the generated broker config; the broker reads
/// it through a downward-API volume.
pub const CONFIG_ANNOTATION: &str = "secret-broker.io/config";
/// The image used when `secret-broker.io/image` is not set.
pub const DEFAULT_IMAGE: &str = concat!(
    "ghcr.io/secret-broker/secret-broker:",
    env!("CARGO_PKG_VERSION")
);
/// Where the binary lives in the image (the exec probes call it).
pub const BINARY: &str = "/usr/local/bin/secret-broker";
/// The broker container's name (reserved).
pub const CONTAINER_NAME: &str = "secret-broker";
/// The uid the broker runs as.
pub const BROKER_UID: u64 = 65532;
/// The broker's primary gid.
pub const BROKER_GID: u64 = 65532;
/// The uid app containers get when neither they nor the pod set one.
pub const DEFAULT_APP_UID: u64 = 10001;
/// The gid app containers get when neither they nor the pod set one.
pub const DEFAULT_APP_GID: u64 = 10001;
/// The group shared by broker and apps (the pod's `fsGroup`) when the pod
/// sets none; it owns the socket, mode 0660.
pub const DEFAULT_SHARED_GID: u64 = 10100;
/// The socket directory in the app containers: the socket volume's
/// [`SOCKET_SUBDIR`], mounted read-only.
pub const SOCKET_DIR: &str = "/run/secret-broker";
/// The socket path, as `$SECRET_BROKER_SOCKET` in the app containers.
pub const SOCKET_PATH: &str = "/run/secret-broker/api.sock";
/// Where the broker container mounts the socket volume (an in-memory
/// `emptyDir`, which the kubelet makes writable by everyone).
pub const BROKER_SOCKET_VOLUME: &str = "/run/secret-broker-volume";
/// The directory the broker creates in the socket volume (its own, mode
/// 0755): the socket directory the app containers mount.
pub const SOCKET_SUBDIR: &str = "socket";
/// The socket path in the broker container.
pub const BROKER_SOCKET_PATH: &str = "/run/secret-broker-volume/socket/api.sock";
/// Where the generated config is mounted in the broker container.
pub const CONFIG_DIR: &str = "/etc/secret-broker/config";
/// Where the store Secret is mounted in the broker container.
pub const STORE_SECRET_DIR: &str = "/etc/secret-broker/store";
/// The store Secret's key an external store's settings are read from; the
/// generated config includes it.
pub const STORE_TOML: &str = "/etc/secret-broker/store/store.toml";
/// Where the projected service-account token is mounted in the broker
/// container (`secret-broker.io/store-token-audience`): point the included
/// `store.toml`'s `jwt_file` at it.
pub const STORE_TOKEN_PATH: &str = "/var/run/secrets/secret-broker/token";
/// The directory [`STORE_TOKEN_PATH`] is in (the projected volume's mount).
pub const STORE_TOKEN_DIR: &str = "/var/run/secrets/secret-broker";
/// How long the projected token lives; the kubelet renews it at 80%.
pub const STORE_TOKEN_SECONDS: u64 = 3600;
/// Where the policy ConfigMap is mounted in the broker container.
pub const POLICY_DIR: &str = "/etc/secret-broker/policies";
/// Where the embedded store's database lives (an `emptyDir`).
pub const DATA_DIR: &str = "/var/lib/secret-broker";
/// The init container that copies the broker's static binary into the
/// pod, for the `secret-broker run` that wraps the app's command.
pub const INSTALL_CONTAINER_NAME: &str = "secret-broker-install";
/// Where the copied binary's memory volume is mounted (read-only in the
/// app containers).
pub const RUN_BIN_DIR: &str = "/run/secret-broker-bin";
/// The copied binary, as the app containers run it.
pub const RUN_BINARY: &str = "/run/secret-broker-bin/secret-broker";
/// The memory volume `secret-broker.io/files` writes into.
pub const SECRETS_DIR: &str = "/run/secrets/secret-broker";

/// What the caller of injection sets for every pod.
#[derive(Debug, Clone)]
pub struct InjectOptions {
    /// The broker image when `secret-broker.io/image` is not set.
    pub image: String,
}

impl Default for InjectOptions {
    fn default() -> Self {
        Self {
            image: DEFAULT_IMAGE.to_owned(),
        }
    }
}

/// One object's injection: the new object (`None`: no change) and what the
/// user should know about it (a pod that works, but maybe not as meant).
#[derive(Debug, Clone, Default)]
pub struct Injected {
    /// The injected object, or `None` when it needs no change.
    pub value: Option<Value>,
    /// One line each, no values.
    pub warnings: Vec<String>,
}

/// A YAML stream's injection: the output text and the warnings, each
/// naming its document and object.
#[derive(Debug, Clone, Default)]
pub struct InjectedStream {
    /// The output stream.
    pub text: String,
    /// One line each.
    pub warnings: Vec<String>,
}

/// A manifest that cannot be injected. Messages name the document and the
/// object, never values.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// A document is not valid YAML (or JSON).
    #[error("document {doc}: not valid YAML: {message}")]
    Yaml {
        /// 1-based document number in the stream.
        doc: usize,
        /// The parser's message.
        message: String,
    },
    /// A document is not a Kubernetes object.
    #[error("not a Kubernetes object: {0}")]
    NotAnObject(String),
    /// Annotations ask for injection into a kind this tool does not handle.
    #[error(
        "kind `{0}` is not supported; annotate a Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob"
    )]
    Unsupported(String),
    /// An annotation is unknown, missing, malformed or contradicts another.
    #[error("annotation `{key}`: {message}")]
    Annotation {
        /// The annotation key.
        key: String,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// The object's shape is wrong (e.g. no containers).
    #[error("`{field}`: {message}")]
    Spec {
        /// The field, as a dotted path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// An error in a document that is not an object.
    #[error("document {doc}: {source}")]
    InDocument {
        /// 1-based document number.
        doc: usize,
        /// The error.
        source: Box<InjectError>,
    },
    /// An error inside one object of the stream.
    #[error("document {doc} (`{kind}/{name}`): {source}")]
    In {
        /// 1-based document number.
        doc: usize,
        /// The object's kind.
        kind: String,
        /// The object's name (or generateName, or `?`).
        name: String,
        /// The error.
        source: Box<InjectError>,
    },
    /// The output could not be written as YAML.
    #[error("cannot write YAML: {0}")]
    Emit(String),
}

fn spec_err(field: impl Into<String>, message: impl Into<String>) -> InjectError {
    InjectError::Spec {
        field: field.into(),
        message: message.into(),
    }
}

/// Injects every annotated pod template in a YAML stream of one or more
/// documents. Documents that need no change are written back verbatim.
pub fn inject_yaml(text: &str) -> Result<String, InjectError> {
    inject_stream(text, &InjectOptions::default())
        .map(|s| s.text)
        .map_err(|mut errors| errors.swap_remove(0))
}

/// As [`inject_yaml`], with options, the warnings, and every document's
/// error at once (never an empty list) rather than only the first.
pub fn inject_stream(text: &str, opts: &InjectOptions) -> Result<InjectedStream, Vec<InjectError>> {
    let mut out = InjectedStream::default();
    let mut errors = Vec::new();
    for (i, chunk) in split_documents(text).into_iter().enumerate() {
        let doc = i + 1;
        let value: Value = match serde_yaml_ng::from_str(&chunk) {
            Ok(v) => v,
            Err(e) => {
                errors.push(InjectError::Yaml {
                    doc,
                    message: e.to_string().replace('\n', " "),
                });
                continue;
            }
        };
        if !out.text.is_empty() {
            out.text.push_str("---\n");
        }
        if value.is_null() {
            // Comments only: keep them.
            push_line(&mut out.text, &chunk);
            continue;
        }
        match inject_value_with(&value, opts) {
            Err(e) => errors.push(locate(doc, &value, e)),
            Ok(injected) => {
                let here = where_(doc, &value);
                out.warnings.extend(
                    injected
                        .warnings
                        .into_iter()
                        .map(|w| format!("{here}: {w}")),
                );
                let Some(new) = injected.value else {
                    push_line(&mut out.text, &chunk);
                    continue;
                };
                match serde_yaml_ng::to_string(&new) {
                    Ok(text) => out.text.push_str(&text),
                    Err(e) => errors.push(InjectError::Emit(e.to_string())),
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// `document N (`Kind/name`)`, as errors name an object.
fn where_(doc: usize, v: &Value) -> String {
    let meta = &v["metadata"];
    let name = meta["name"]
        .as_str()
        .or_else(|| meta["generateName"].as_str())
        .unwrap_or("?");
    format!(
        "document {doc} (`{}/{name}`)",
        v["kind"].as_str().unwrap_or("?")
    )
}

fn push_line(out: &mut String, chunk: &str) {
    out.push_str(chunk);
    if !chunk.ends_with('\n') {
        out.push('\n');
    }
}

fn locate(doc: usize, v: &Value, e: InjectError) -> InjectError {
    if !v["kind"].is_string() {
        return InjectError::InDocument {
            doc,
            source: Box::new(e),
        };
    }
    let meta = &v["metadata"];
    let name = meta["name"]
        .as_str()
        .or_else(|| meta["generateName"].as_str())
        .unwrap_or("?");
    InjectError::In {
        doc,
        kind: v["kind"].as_str().unwrap_or("?").to_owned(),
        name: name.to_owned(),
        source: Box::new(e),
    }
}

/// Splits a YAML stream at `---` lines. Whitespace-only documents are
/// dropped; the rest keep their exact text so pass-through is byte-exact.
fn split_documents(text: &str) -> Vec<String> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        let marker = bare
            .strip_prefix("---")
            .filter(|rest| rest.is_empty() || rest.starts_with([' ', '\t']));
        if let Some(rest) = marker {
            docs.push(std::mem::take(&mut cur));
            let rest = rest.trim();
            if !rest.is_empty() {
                cur.push_str(rest);
                cur.push('\n');
            }
        } else if bare == "..." {
            docs.push(std::mem::take(&mut cur));
        } else {
            cur.push_str(line);
        }
    }
    docs.push(cur);
    docs.retain(|d| !d.trim().is_empty());
    docs
}

/// Where a kind keeps its pod template (a JSON pointer), or `None` for kinds
/// this tool does not inject.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicaSet" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Injects one object (or a `List` of them). `Ok(None)` means the object
/// needs no change: not annotated, opted out, or already injected.
pub fn inject_value(v: &Value) -> Result<Option<Value>, InjectError> {
    inject_value_with(v, &InjectOptions::default()).map(|i| i.value)
}

/// As [`inject_value`], with options and the warnings.
pub fn inject_value_with(v: &Value, opts: &InjectOptions) -> Result<Injected, InjectError> {
    let Some(obj) = v.as_object() else {
        return Err(InjectError::NotAnObject(
            "the document is not a mapping".into(),
        ));
    };
    let Some(kind) = obj.get("kind").and_then(Value::as_str) else {
        return Err(InjectError::NotAnObject("it has no `kind`".into()));
    };
    if kind == "List" || (kind.ends_with("List") && obj.contains_key("items")) {
        return inject_list(v, opts);
    }
    let own = own_annotations(v.pointer("/metadata/annotations"));
    let Some(ptr) = template_pointer(kind) else {
        if let Some(key) = own.first() {
            return Err(InjectError::Annotation {
                key: key.clone(),
                message: InjectError::Unsupported(kind.to_owned()).to_string(),
            });
        }
        return Ok(Injected::default());
    };
    if !ptr.is_empty() {
        if let Some(key) = own.first() {
            return Err(InjectError::Annotation {
                key: key.clone(),
                message: format!(
                    "belongs on the pod template (`{}.metadata.annotations`), not on the {kind}",
                    ptr.trim_start_matches('/').replace('/', ".")
                ),
            });
        }
    }
    let Some(template) = v.pointer(ptr) else {
        return Ok(Injected::default());
    };
    let Some(settings) =
        Settings::from_annotations_with(template.pointer("/metadata/annotations"), &opts.image)?
    else {
        return Ok(Injected::default());
    };
    let mut new = v.clone();
    let Some(template) = new.pointer_mut(ptr).and_then(Value::as_object_mut) else {
        return Err(spec_err(
            ptr.trim_start_matches('/').replace('/', "."),
            "must be a mapping",
        ));
    };
    let warnings = pod::inject(template, &settings)?;
    Ok(Injected {
        value: (new != *v).then_some(new),
        warnings,
    })
}

fn inject_list(v: &Value, opts: &InjectOptions) -> Result<Injected, InjectError> {
    let Some(items) = v.get("items").and_then(Value::as_array) else {
        return Err(spec_err("items", "a List needs an `items` array"));
    };
    let mut changed = false;
    let mut warnings = Vec::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let injected = inject_value_with(item, opts).map_err(|e| InjectError::Spec {
            field: format!("items[{i}]"),
            message: e.to_string(),
        })?;
        warnings.extend(
            injected
                .warnings
                .into_iter()
                .map(|w| format!("`items[{i}]`: {w}")),
        );
        match injected.value {
            Some(n) => {
                changed = true;
                out.push(n);
            }
            None => out.push(item.clone()),
        }
    }
    if !changed {
        return Ok(Injected {
            value: None,
            warnings,
        });
    }
    let mut new = v.clone();
    if let Some(obj) = new.as_object_mut() {
        obj.insert("items".into(), Value::Array(out));
    }
    Ok(Injected {
        value: Some(new),
        warnings,
    })
}

/// The `secret-broker.io/*` keys among some annotations.
fn own_annotations(annotations: Option<&Value>) -> Vec<String> {
    annotations
        .and_then(Value::as_object)
        .map(|m: &Map<String, Value>| {
            m.keys()
                .filter(|k| k.starts_with(PREFIX))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
