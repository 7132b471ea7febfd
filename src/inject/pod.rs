//! The mutation of one pod template: strip an earlier injection, give the
//! app containers their identity and the socket, add the broker as a native
//! sidecar, and record the generated config in an annotation.

use serde_json::{Map, Value, json};

use super::annotations::ALLOW_SHARED_PROCESS_NAMESPACE;
use super::broker_config::AppIdentity;
use super::{
    BINARY, BROKER_GID, BROKER_SOCKET_PATH, BROKER_SOCKET_VOLUME, BROKER_UID, CONFIG_ANNOTATION,
    CONFIG_DIR, CONTAINER_NAME, DATA_DIR, DEFAULT_APP_GID, DEFAULT_APP_UID, DEFAULT_SHARED_GID,
    InjectError, POLICY_DIR, SOCKET_DIR, SOCKET_PATH, SOCKET_SUBDIR, STORE_SECRET_DIR,
    STORE_TOKEN_DIR, STORE_TOKEN_PATH, STORE_TOKEN_SECONDS, Settings, StoreMode, generate_config,
    spec_err,
};

const VOL_SOCKET: &str = "secret-broker-socket";
const VOL_CONFIG: &str = "secret-broker-config";
const VOL_STORE: &str = "secret-broker-store";
const VOL_POLICIES: &str = "secret-broker-policies";
const VOL_DATA: &str = "secret-broker-data";
const VOL_TOKEN: &str = "secret-broker-store-token";
const VOLUMES: &[&str] = &[
    VOL_SOCKET,
    VOL_CONFIG,
    VOL_STORE,
    VOL_POLICIES,
    VOL_DATA,
    VOL_TOKEN,
];
const SOCKET_ENV: &str = "SECRET_BROKER_SOCKET";

/// Injects the broker into a pod template (`{metadata, spec}`).
pub(super) fn inject(template: &mut Map<String, Value>, s: &Settings) -> Result<(), InjectError> {
    let spec = object(template, "spec")?;
    check_process_isolation(spec, s)?;
    strip(spec);
    let app = wire_apps(spec, s)?;
    add_broker(spec, s)?;
    add_volumes(spec, s)?;
    let config = generate_config(s, app);
    let meta = object(template, "metadata")?;
    let annotations = object(meta, "annotations")?;
    annotations.insert(CONFIG_ANNOTATION.into(), Value::String(config));
    Ok(())
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
            list.retain(|c| !named(c, &[CONTAINER_NAME]) && !named(c, VOLUMES));
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

fn uint(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_u64)
}

/// Gives the selected app containers a non-root uid/gid distinct from the
/// broker's, the socket mount and `$SECRET_BROKER_SOCKET`; returns the
/// identity the generated config maps to the principal.
fn wire_apps(spec: &mut Map<String, Value>, s: &Settings) -> Result<AppIdentity, InjectError> {
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

    let containers = array(spec, "containers")?;
    if containers.is_empty() {
        return Err(spec_err("spec.containers", "the pod has no containers"));
    }
    let names: Vec<String> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    if names.iter().any(|n| n == CONTAINER_NAME) {
        return Err(spec_err(
            "spec.containers",
            format!("the container name `{CONTAINER_NAME}` is reserved for the broker"),
        ));
    }
    if let Some(wanted) = &s.containers {
        if let Some(missing) = wanted.iter().find(|w| !names.contains(w)) {
            return Err(InjectError::Annotation {
                key: "secret-broker.io/containers".into(),
                message: format!(
                    "names `{missing}`, which is not a container of this pod ({})",
                    names.join(", ")
                ),
            });
        }
    }
    let mut identity: Option<(u64, u64, String)> = None;
    for (c, name) in containers.iter_mut().zip(&names) {
        if s.containers.as_ref().is_some_and(|w| !w.contains(name)) {
            continue;
        }
        let c = c
            .as_object_mut()
            .ok_or_else(|| spec_err("spec.containers", "each container must be a mapping"))?;
        let field = |f: &str| format!("spec.containers[{name}].securityContext.{f}");
        let sc = object(c, "securityContext")?;
        let uid = match uint(sc.get("runAsUser")).or(pod_uid) {
            Some(u) => u,
            None => {
                sc.insert("runAsUser".into(), json!(DEFAULT_APP_UID));
                DEFAULT_APP_UID
            }
        };
        let gid = match uint(sc.get("runAsGroup")).or(pod_gid) {
            Some(g) => g,
            None => {
                sc.insert("runAsGroup".into(), json!(DEFAULT_APP_GID));
                DEFAULT_APP_GID
            }
        };
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
        match &identity {
            None => identity = Some((uid, gid, name.clone())),
            Some((u, g, first)) if (*u, *g) != (uid, gid) => {
                return Err(spec_err(
                    field("runAsUser"),
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
    }
    let (uid, gid, _) =
        identity.ok_or_else(|| spec_err("spec.containers", "no container selected"))?;
    Ok(AppIdentity {
        uid,
        gid,
        shared_gid,
    })
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
        "resources": {
            "requests": { "cpu": s.requests.0, "memory": s.requests.1 },
            "limits": { "cpu": s.limits.0, "memory": s.limits.1 },
        },
        "securityContext": {
            "runAsUser": BROKER_UID,
            "runAsGroup": BROKER_GID,
            "runAsNonRoot": true,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "volumeMounts": broker_mounts(&s.store),
    });
    array(spec, "initContainers")?.insert(0, broker);
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
    array(spec, "volumes")?.extend(volumes);
    Ok(())
}
