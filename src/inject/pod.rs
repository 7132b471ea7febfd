//! The mutation of one pod template: strip an earlier injection, give the
//! app containers their identity and the socket, add the broker as a native
//! sidecar, and record the generated config in an annotation.

use serde_json::{Map, Value, json};

use super::annotations::ALLOW_SHARED_PROCESS_NAMESPACE;
use super::broker_config::AppIdentity;
use super::{
    BINARY, BROKER_GID, BROKER_SOCKET_PATH, BROKER_SOCKET_VOLUME, BROKER_UID, CONFIG_ANNOTATION,
    CONFIG_DIR, CONTAINER_NAME, DATA_DIR, DEFAULT_APP_GID, DEFAULT_APP_UID, DEFAULT_SHARED_GID,
    INSTALL_CONTAINER_NAME, InjectError, POLICY_DIR, RUN_BIN_DIR, RUN_BINARY, Role, SECRETS_DIR,
    SOCKET_DIR, SOCKET_PATH, SOCKET_SUBDIR, STORE_SECRET_DIR, STORE_TOKEN_DIR, STORE_TOKEN_PATH,
    STORE_TOKEN_SECONDS, Settings, StoreMode, generate_config, spec_err,
};

const VOL_SOCKET: &str = "secret-broker-socket";
const VOL_CONFIG: &str = "secret-broker-config";
const VOL_STORE: &str = "secret-broker-store";
const VOL_POLICIES: &str = "secret-broker-policies";
const VOL_DATA: &str = "secret-broker-data";
const VOL_TOKEN: &str = "secret-broker-store-token";
const VOL_BIN: &str = "secret-broker-bin";
const VOL_SECRETS: &str = "secret-broker-secrets";
const VOLUMES: &[&str] = &[
    VOL_SOCKET,
    VOL_CONFIG,
    VOL_STORE,
    VOL_POLICIES,
    VOL_DATA,
    VOL_TOKEN,
    VOL_BIN,
    VOL_SECRETS,
];
const SOCKET_ENV: &str = "SECRET_BROKER_SOCKET";

/// Injects the broker into a pod template (`{metadata, spec}`); returns
/// the warnings (one line each) about a pod that works, but maybe not as
/// its author meant.
pub(super) fn inject(
    template: &mut Map<String, Value>,
    s: &Settings,
) -> Result<Vec<String>, InjectError> {
    let spec = object(template, "spec")?;
    check_process_isolation(spec, s)?;
    strip(spec);
    let mut warnings = Vec::new();
    if matches!(s.role, Role::Task(_)) && s.store == StoreMode::Embedded {
        warnings.push(
            "the task's store is `embedded`: a database in this pod that no platform component can write to, so its reads find nothing; set `secret-broker.io/store: external` to read the shared store".to_owned(),
        );
    }
    let app = wire_apps(spec, s, &mut warnings)?;
    add_broker(spec, s)?;
    if s.run.is_some() {
        add_install(spec, s)?;
    }
    add_volumes(spec, s)?;
    let config = generate_config(s, app);
    let meta = object(template, "metadata")?;
    let annotations = object(meta, "annotations")?;
    annotations.insert(CONFIG_ANNOTATION.into(), Value::String(config));
    Ok(warnings)
}

/// Refuses a pod whose processes other containers (or the node) can see,
/// unless the opt-in annotation says so.
///
/// SECURITY: the socket is mounted only into the containers that use the
/// broker, but with a shared process namespace any container can open
/// `/proc/<app pid>/root/run/secret-broker/api.sock`, and one running under
/// the app's uid is then taken for the app. `hostPID` opens the same path to
/// every process of the node under that uid.
fn check_process_isolation(spec: &Map<String, Value>, s: &Settings) -> Result<(), InjectError> {
    if s.allow_shared_process_namespace {
        return Ok(());
    }
    for field in ["hostPID", "shareProcessNamespace"] {
        if spec.get(field).and_then(Value::as_bool) == Some(true) {
            return Err(spec_err(
                format!("spec.{field}"),
                format!(
                    "must not be true in a pod that uses the broker: other processes could reach its socket through /proc/<pid>/root and act as the app; remove it, or set `{ALLOW_SHARED_PROCESS_NAMESPACE}: \"true\"` to give up that isolation"
                ),
            ));
        }
    }
    Ok(())
}

/// The mapping under `key`, created if absent.
fn object<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> Result<&'a mut Map<String, Value>, InjectError> {
    let v = m
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if v.is_null() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut()
        .ok_or_else(|| spec_err(key, "must be a mapping"))
}

/// The array under `key`, created if absent.
fn array<'a>(m: &'a mut Map<String, Value>, key: &str) -> Result<&'a mut Vec<Value>, InjectError> {
    let v = m
        .entry(key.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if v.is_null() {
        *v = Value::Array(Vec::new());
    }
    v.as_array_mut()
        .ok_or_else(|| spec_err(key, "must be a list"))
}

/// Removes what an earlier injection added, so injecting is idempotent.
fn strip(spec: &mut Map<String, Value>) {
    let named = |v: &Value, names: &[&str]| {
        v.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| names.contains(&n))
    };
    for key in ["initContainers", "volumes"] {
        if let Some(list) = spec.get_mut(key).and_then(Value::as_array_mut) {
            list.retain(|c| {
                !named(c, &[CONTAINER_NAME, INSTALL_CONTAINER_NAME]) && !named(c, VOLUMES)
            });
            if list.is_empty() {
                spec.remove(key);
            }
        }
    }
    for key in ["initContainers", "containers"] {
        let Some(list) = spec.get_mut(key).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in list.iter_mut().filter_map(Value::as_object_mut) {
            unwrap_command(c);
            for (field, names) in [("volumeMounts", VOLUMES), ("env", &[SOCKET_ENV][..])] {
                if let Some(l) = c.get_mut(field).and_then(Value::as_array_mut) {
                    l.retain(|v| !named(v, names));
                    if l.is_empty() {
                        c.remove(field);
                    }
                }
            }
        }
    }
}

/// Undoes [`wrap_command`]: `[RUN_BINARY, "run", flags..., "--", cmd...]`
/// becomes `cmd...` (the original `args` stay folded into `command`, which
/// wraps to the same output).
fn unwrap_command(c: &mut Map<String, Value>) {
    let Some(cmd) = c.get("command").and_then(Value::as_array) else {
        return;
    };
    if cmd.first().and_then(Value::as_str) != Some(RUN_BINARY)
        || cmd.get(1).and_then(Value::as_str) != Some("run")
    {
        return;
    }
    // INVARIANT: no flag value we write is `--` (names, paths and modes).
    if let Some(at) = cmd.iter().position(|v| v.as_str() == Some("--")) {
        let original = cmd[at + 1..].to_vec();
        c.insert("command".into(), Value::Array(original));
    }
}

/// Replaces the container's `command` and `args` with `secret-broker run
/// FLAGS -- command... args...`.
fn wrap_command(
    c: &mut Map<String, Value>,
    field: &str,
    flags: &[String],
) -> Result<(), InjectError> {
    let strings = |key: &str| -> Result<Vec<Value>, InjectError> {
        match c.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => Ok(a.clone()),
            Some(_) => Err(spec_err(
                format!("{field}.{key}"),
                "must be a list of strings",
            )),
        }
    };
    let command = strings("command")?;
    let args = strings("args")?;
    if command.is_empty() {
        return Err(spec_err(
            format!("{field}.command"),
            "is not set; injection wraps it in `secret-broker run` and cannot see the image's ENTRYPOINT: set `command` (and `args`) to what the image runs",
        ));
    }
    let mut new: Vec<Value> = vec![json!(RUN_BINARY), json!("run")];
    new.extend(flags.iter().map(|f| json!(f)));
    new.push(json!("--"));
    new.extend(command);
    new.extend(args);
    c.insert("command".into(), Value::Array(new));
    c.remove("args");
    Ok(())
}

fn uint(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_u64)
}

/// Gives the selected app containers a non-root uid/gid distinct from the
/// broker's, the socket mount and `$SECRET_BROKER_SOCKET` (and, with
/// `run` wiring, the binary, the secrets volume and a wrapped command);
/// returns the identity the generated config maps to the principal.
fn wire_apps(
    spec: &mut Map<String, Value>,
    s: &Settings,
    warnings: &mut Vec<String>,
) -> Result<AppIdentity, InjectError> {
    let pod_sc = object(spec, "securityContext")?;
    let pod_uid = uint(pod_sc.get("runAsUser"));
    let pod_gid = uint(pod_sc.get("runAsGroup"));
    // SECURITY: the socket is 0660 and owned by this group; the pod's
    // fsGroup makes every container a member, but only the containers that
    // mount the socket volume can reach the socket at all.
    let shared_gid = match pod_sc.get("fsGroup") {
        None | Some(Value::Null) => {
            pod_sc.insert("fsGroup".into(), json!(DEFAULT_SHARED_GID));
            DEFAULT_SHARED_GID
        }
        v => uint(v).ok_or_else(|| spec_err("spec.securityContext.fsGroup", "must be a gid"))?,
    };
    if shared_gid == 0 {
        return Err(spec_err(
            "spec.securityContext.fsGroup",
            "must not be 0: the socket's group would be root's",
        ));
    }

    let names_of = |spec: &Map<String, Value>, key: &str| -> Vec<String> {
        spec.get(key)
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    if array(spec, "containers")?.is_empty() {
        return Err(spec_err("spec.containers", "the pod has no containers"));
    }
    let names = names_of(spec, "containers");
    // After `strip`: the app's own init containers, all of which run after
    // the broker (it is inserted first).
    let init_names = names_of(spec, "initContainers");
    if names
        .iter()
        .any(|n| n == CONTAINER_NAME || n == INSTALL_CONTAINER_NAME)
    {
        return Err(spec_err(
            "spec.containers",
            format!(
                "the container names `{CONTAINER_NAME}` and `{INSTALL_CONTAINER_NAME}` are reserved for the broker"
            ),
        ));
    }
    if let Some(wanted) = &s.containers {
        if let Some(missing) = wanted
            .iter()
            .find(|w| !names.contains(w) && !init_names.contains(w))
        {
            let all: Vec<&str> = names
                .iter()
                .chain(&init_names)
                .map(String::as_str)
                .collect();
            return Err(InjectError::Annotation {
                key: "secret-broker.io/containers".into(),
                message: format!(
                    "names `{missing}`, which is not a container or init container of this pod ({})",
                    all.join(", ")
                ),
            });
        }
    }
    let flags = s.run.as_ref().map(super::RunWiring::flags);
    let mut identity: Option<(u64, u64, String)> = None;
    for (key, list_names) in [("containers", &names), ("initContainers", &init_names)] {
        let Some(list) = spec.get_mut(key).and_then(Value::as_array_mut) else {
            continue;
        };
        for (c, name) in list.iter_mut().zip(list_names) {
            // Every regular container by default; an init container only
            // when named.
            let selected = match &s.containers {
                None => key == "containers",
                Some(w) => w.contains(name),
            };
            if !selected {
                continue;
            }
            let c = c.as_object_mut().ok_or_else(|| {
                spec_err(format!("spec.{key}"), "each container must be a mapping")
            })?;
            let at = format!("spec.{key}[{name}]");
            let (uid, gid) = wire_one(c, &at, pod_uid, pod_gid, warnings)?;
            match &identity {
                None => identity = Some((uid, gid, name.clone())),
                Some((u, g, first)) if (*u, *g) != (uid, gid) => {
                    return Err(spec_err(
                        format!("{at}.securityContext.runAsUser"),
                        format!(
                            "containers `{first}` ({u}:{g}) and `{name}` ({uid}:{gid}) use the broker with different uid:gid; give them the same, or list one in `secret-broker.io/containers`"
                        ),
                    ));
                }
                Some(_) => {}
            }
            array(c, "env")?.push(json!({ "name": SOCKET_ENV, "value": SOCKET_PATH }));
            // The app only needs to connect, which a read-only mount allows; it
            // cannot replace or remove the socket. SECURITY: it sees only the
            // broker's own directory (made by the broker, writable by it alone),
            // never the volume's root, which the kubelet makes mode 0777.
            array(c, "volumeMounts")?.push(json!({
                "name": VOL_SOCKET, "mountPath": SOCKET_DIR, "subPath": SOCKET_SUBDIR,
                "readOnly": true
            }));
            if let Some(flags) = &flags {
                wrap_command(c, &at, flags)?;
                let mounts = array(c, "volumeMounts")?;
                mounts.push(json!({ "name": VOL_BIN, "mountPath": RUN_BIN_DIR, "readOnly": true }));
                mounts.push(json!({ "name": VOL_SECRETS, "mountPath": SECRETS_DIR }));
            }
        }
    }
    let (uid, gid, _) =
        identity.ok_or_else(|| spec_err("spec.containers", "no container selected"))?;
    Ok(AppIdentity {
        uid,
        gid,
        shared_gid,
    })
}

/// Checks and completes one selected container's security context;
/// returns its uid and gid.
fn wire_one(
    c: &mut Map<String, Value>,
    at: &str,
    pod_uid: Option<u64>,
    pod_gid: Option<u64>,
    warnings: &mut Vec<String>,
) -> Result<(u64, u64), InjectError> {
    let field = |f: &str| format!("{at}.securityContext.{f}");
    let sc = object(c, "securityContext")?;
    let mut set = Vec::new();
    let uid = match uint(sc.get("runAsUser")).or(pod_uid) {
        Some(u) => u,
        None => {
            sc.insert("runAsUser".into(), json!(DEFAULT_APP_UID));
            set.push(format!("runAsUser {DEFAULT_APP_UID}"));
            DEFAULT_APP_UID
        }
    };
    let gid = match uint(sc.get("runAsGroup")).or(pod_gid) {
        Some(g) => g,
        None => {
            sc.insert("runAsGroup".into(), json!(DEFAULT_APP_GID));
            set.push(format!("runAsGroup {DEFAULT_APP_GID}"));
            DEFAULT_APP_GID
        }
    };
    if !set.is_empty() {
        warnings.push(format!(
            "`{at}`: injection sets {} (none was set, so the image's USER would have applied); set them in the pod spec to choose",
            set.join(" and ")
        ));
    }
    // SECURITY: the broker tells callers apart by uid; an app that is
    // root, shares the broker's uid, or may gain privileges could pose
    // as anyone.
    if uid == 0 || gid == 0 {
        return Err(spec_err(
            field("runAsUser"),
            "the app runs as root; the broker identifies callers by uid, so run it as a non-root uid and gid",
        ));
    }
    if uid == BROKER_UID {
        return Err(spec_err(
            field("runAsUser"),
            format!("uid {uid} is the broker's; give the app another uid"),
        ));
    }
    for (f, bad) in [("allowPrivilegeEscalation", true), ("privileged", true)] {
        if sc.get(f).and_then(Value::as_bool) == Some(bad) {
            return Err(spec_err(
                field(f),
                "must not be true in a container that uses the broker: it could change its uid",
            ));
        }
    }
    sc.entry("runAsNonRoot").or_insert(json!(true));
    sc.entry("allowPrivilegeEscalation").or_insert(json!(false));
    Ok((uid, gid))
}

fn health_probe(period: u32, failures: u32) -> Value {
    json!({
        "exec": { "command": [BINARY, "health"] },
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    })
}

/// Adds the broker first among the init containers: a native sidecar
/// (`restartPolicy: Always`) that starts before every other container and
/// whose startup probe holds them back until the socket answers.
fn add_broker(spec: &mut Map<String, Value>, s: &Settings) -> Result<(), InjectError> {
    let broker = json!({
        "name": CONTAINER_NAME,
        "image": s.image,
        "imagePullPolicy": "IfNotPresent",
        "restartPolicy": "Always",
        "command": [BINARY],
        "args": ["serve", "--config", format!("{CONFIG_DIR}/config.toml")],
        "env": [{ "name": SOCKET_ENV, "value": BROKER_SOCKET_PATH }],
        "startupProbe": health_probe(1, 30),
        "livenessProbe": health_probe(10, 3),
        "resources": broker_resources(s),
        "securityContext": broker_security_context(),
        "volumeMounts": broker_mounts(&s.store),
    });
    array(spec, "initContainers")?.insert(0, broker);
    Ok(())
}

/// The resources of the broker's containers.
fn broker_resources(s: &Settings) -> Value {
    json!({
        "requests": { "cpu": s.requests.0, "memory": s.requests.1 },
        "limits": { "cpu": s.limits.0, "memory": s.limits.1 },
    })
}

/// The locked-down security context of the broker's containers.
fn broker_security_context() -> Value {
    json!({
        "runAsUser": BROKER_UID,
        "runAsGroup": BROKER_GID,
        "runAsNonRoot": true,
        "readOnlyRootFilesystem": true,
        "allowPrivilegeEscalation": false,
        "privileged": false,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// Adds, first of all, the init container that copies the broker's static
/// binary into the memory volume the wrapped app commands run it from (the
/// image has no `cp`; the binary copies itself).
fn add_install(spec: &mut Map<String, Value>, s: &Settings) -> Result<(), InjectError> {
    let install = json!({
        "name": INSTALL_CONTAINER_NAME,
        "image": s.image,
        "imagePullPolicy": "IfNotPresent",
        "command": [BINARY, "install-self", RUN_BINARY],
        "resources": broker_resources(s),
        "securityContext": broker_security_context(),
        "volumeMounts": [{ "name": VOL_BIN, "mountPath": RUN_BIN_DIR }],
    });
    array(spec, "initContainers")?.insert(0, install);
    Ok(())
}

/// The broker's mounts: the embedded store's database, or the projected
/// token an external store may log in with.
fn broker_mounts(store: &StoreMode) -> Value {
    let mut mounts = vec![
        json!({ "name": VOL_SOCKET, "mountPath": BROKER_SOCKET_VOLUME }),
        json!({ "name": VOL_CONFIG, "mountPath": CONFIG_DIR, "readOnly": true }),
        json!({ "name": VOL_STORE, "mountPath": STORE_SECRET_DIR, "readOnly": true }),
        json!({ "name": VOL_POLICIES, "mountPath": POLICY_DIR, "readOnly": true }),
    ];
    match store {
        StoreMode::Embedded => mounts.push(json!({ "name": VOL_DATA, "mountPath": DATA_DIR })),
        StoreMode::External {
            token_audience: Some(_),
        } => mounts.push(json!({
            "name": VOL_TOKEN, "mountPath": STORE_TOKEN_DIR, "readOnly": true
        })),
        StoreMode::External {
            token_audience: None,
        } => {}
    }
    Value::Array(mounts)
}

fn add_volumes(spec: &mut Map<String, Value>, s: &Settings) -> Result<(), InjectError> {
    let mut volumes = vec![
        json!({ "name": VOL_SOCKET, "emptyDir": { "medium": "Memory", "sizeLimit": "1Mi" } }),
        json!({ "name": VOL_CONFIG, "downwardAPI": { "items": [{
            "path": "config.toml",
            "fieldRef": { "fieldPath": format!("metadata.annotations['{CONFIG_ANNOTATION}']") },
        }] } }),
        // 0440: readable by the broker through the shared group (fsGroup).
        json!({ "name": VOL_STORE, "secret": { "secretName": s.store_secret, "defaultMode": 0o440 } }),
        json!({ "name": VOL_POLICIES, "configMap": { "name": s.policies } }),
    ];
    match &s.store {
        StoreMode::Embedded => {
            volumes.push(json!({ "name": VOL_DATA, "emptyDir": { "sizeLimit": "64Mi" } }));
        }
        StoreMode::External {
            token_audience: Some(audience),
        } => {
            // SECURITY: a token of its own audience, in the broker alone: the
            // store accepts it, the API server does not, and the app
            // containers never see it (unlike the automounted token, which
            // every container gets unless the pod turns it off).
            let file = STORE_TOKEN_PATH
                .strip_prefix(STORE_TOKEN_DIR)
                .unwrap_or("/token")
                .trim_start_matches('/');
            volumes.push(json!({ "name": VOL_TOKEN, "projected": {
                "defaultMode": 0o440,
                "sources": [{ "serviceAccountToken": {
                    "audience": audience,
                    "expirationSeconds": STORE_TOKEN_SECONDS,
                    "path": file,
                } }],
            } }));
        }
        StoreMode::External {
            token_audience: None,
        } => {}
    }
    if s.run.is_some() {
        // The copied binary (a static build: tens of MiB at most), and the
        // files `run` writes: in memory, never on the node's disk.
        volumes.push(
            json!({ "name": VOL_BIN, "emptyDir": { "medium": "Memory", "sizeLimit": "64Mi" } }),
        );
        volumes.push(
            json!({ "name": VOL_SECRETS, "emptyDir": { "medium": "Memory", "sizeLimit": "4Mi" } }),
        );
    }
    array(spec, "volumes")?.extend(volumes);
    Ok(())
}
