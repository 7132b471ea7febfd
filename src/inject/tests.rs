//! Unit tests for injection: annotations, idempotence, and the generated
//! config passing the real config parser.

use serde_json::{Value, json};

use super::*;
use crate::config::Config;

fn job(annotations: Value) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": "t42" },
        "spec": { "template": {
            "metadata": { "annotations": annotations },
            "spec": {
                "restartPolicy": "Never",
                "containers": [{ "name": "main", "image": "busybox" }],
            },
        } },
    })
}

fn task_annotations() -> Value {
    json!({
        "secret-broker.io/inject": "true",
        "secret-broker.io/role": "task",
        "secret-broker.io/scope": "acme/tasks/t-42",
        "secret-broker.io/store-secret": "broker-store",
    })
}

fn error_of(v: Value) -> String {
    inject_value(&v).unwrap_err().to_string()
}

#[test]
fn injected_config_validates_and_maps_the_app_uid() {
    let out = inject_value(&job(task_annotations())).unwrap().unwrap();
    let tpl = &out["spec"]["template"];
    let config = tpl["metadata"]["annotations"][CONFIG_ANNOTATION]
        .as_str()
        .unwrap();
    let cfg = Config::from_toml(config, "generated", std::path::Path::new("/")).unwrap();
    assert_eq!(cfg.listen.mode, 0o660);
    assert_eq!(cfg.listen.group, Some(DEFAULT_SHARED_GID as u32));
    assert_eq!(cfg.principals.len(), 1);
    let p = &cfg.principals[0];
    assert_eq!(p.uid, Some(DEFAULT_APP_UID as u32));
    assert_eq!(
        p.principal.scope.as_ref().unwrap().as_str(),
        "acme/tasks/t-42"
    );
    let main = &tpl["spec"]["containers"][0];
    assert_eq!(main["securityContext"]["runAsUser"], DEFAULT_APP_UID);
    assert_eq!(tpl["spec"]["initContainers"][0]["restartPolicy"], "Always");
    assert_eq!(
        tpl["spec"]["initContainers"][0]["securityContext"]["runAsUser"],
        BROKER_UID
    );
}

#[test]
fn injection_is_idempotent() {
    let once = inject_value(&job(task_annotations())).unwrap().unwrap();
    assert!(inject_value(&once).unwrap().is_none());
}

#[test]
fn unannotated_and_opted_out_pass_through() {
    assert!(inject_value(&job(json!({}))).unwrap().is_none());
    assert!(
        inject_value(&job(
            json!({"secret-broker.io/inject": "false", "secret-broker.io/role": "x"})
        ))
        .unwrap()
        .is_none()
    );
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    assert!(inject_value(&cm).unwrap().is_none());
}

#[test]
fn contradictions_and_unknowns_are_errors() {
    let mut a = task_annotations();
    a["secret-broker.io/role"] = json!("platform");
    assert!(error_of(job(a)).contains("only a task has a scope"));

    let mut a = task_annotations();
    a.as_object_mut().unwrap().remove("secret-broker.io/scope");
    assert!(error_of(job(a)).contains("a task needs a scope"));

    let mut a = task_annotations();
    a["secret-broker.io/scope"] = json!("acme/../x");
    assert!(error_of(job(a)).contains("not a valid scope"));

    let mut a = task_annotations();
    a["secret-broker.io/colour"] = json!("blue");
    assert!(error_of(job(a)).contains("unknown annotation"));

    let mut a = task_annotations();
    a["secret-broker.io/inject"] = json!("yes");
    assert!(error_of(job(a)).contains("is not \"true\" or \"false\""));

    let a = json!({"secret-broker.io/role": "task"});
    assert!(error_of(job(a)).contains("`secret-broker.io/inject` is not \"true\""));

    let mut a = task_annotations();
    a.as_object_mut()
        .unwrap()
        .remove("secret-broker.io/store-secret");
    assert!(error_of(job(a)).contains("store-secret"));
}

#[test]
fn unsafe_app_identities_are_errors() {
    let mut j = job(task_annotations());
    j["spec"]["template"]["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": 0});
    assert!(error_of(j).contains("runs as root"));

    let mut j = job(task_annotations());
    j["spec"]["template"]["spec"]["securityContext"] = json!({"runAsUser": BROKER_UID});
    assert!(error_of(j).contains("is the broker's"));

    let mut j = job(task_annotations());
    j["spec"]["template"]["spec"]["containers"] = json!([
        {"name": "a", "image": "x", "securityContext": {"runAsUser": 2000}},
        {"name": "b", "image": "x", "securityContext": {"runAsUser": 2001}},
    ]);
    assert!(error_of(j.clone()).contains("different uid:gid"));
    j["spec"]["template"]["metadata"]["annotations"]["secret-broker.io/containers"] = json!("a");
    let out = inject_value(&j).unwrap().unwrap();
    let b = &out["spec"]["template"]["spec"]["containers"][1];
    assert!(b.get("volumeMounts").is_none() && b.get("env").is_none());
}

#[test]
fn annotations_on_the_workload_itself_are_refused() {
    let mut j = job(json!({}));
    j["metadata"]["annotations"] = task_annotations();
    assert!(error_of(j).contains("belongs on the pod template"));
}

#[test]
fn documents_split_on_markers_only() {
    let docs = split_documents("---\na: 1\n---\nb: |\n  ---\n  x\n...\n--- c: 2\n");
    assert_eq!(docs, vec!["a: 1\n", "b: |\n  ---\n  x\n", "c: 2\n"]);
}

fn external_annotations(audience: Option<&str>) -> Value {
    let mut a = task_annotations();
    a["secret-broker.io/store"] = json!("external");
    a["secret-broker.io/store-secret"] = json!("vault-store");
    if let Some(aud) = audience {
        a["secret-broker.io/store-token-audience"] = json!(aud);
    }
    a
}

fn volume_names(tpl: &Value) -> Vec<&str> {
    tpl["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect()
}

#[test]
fn external_store_config_includes_the_store_secret() {
    let out = inject_value(&job(external_annotations(None)))
        .unwrap()
        .unwrap();
    let tpl = &out["spec"]["template"];
    let config = tpl["metadata"]["annotations"][CONFIG_ANNOTATION]
        .as_str()
        .unwrap();
    assert!(config.contains(&format!("include = [\"{STORE_TOML}\"]")));
    assert!(!config.contains("[store]"), "{config}");
    // With the Secret's store.toml beside it, the broker's parser takes the
    // store from there, with paths relative to the Secret's mount.
    let dir = tempfile::tempdir().unwrap();
    let store_toml = dir.path().join("store.toml");
    std::fs::write(
        &store_toml,
        "[store]\nbackend = \"vault\"\naddress = \"https://vault.example:8200\"\ntoken_file = \"vault-token\"\n",
    )
    .unwrap();
    let local = config.replace(STORE_TOML, store_toml.to_str().unwrap());
    let cfg = Config::from_toml(&local, "generated", std::path::Path::new("/")).unwrap();
    let crate::config::StoreConfig::Vault(v) = &cfg.store else {
        panic!("not vault: {:?}", cfg.store);
    };
    assert_eq!(
        v.auth,
        crate::config::VaultAuth::Token {
            token_file: Some(dir.path().join("vault-token"))
        }
    );
    assert_eq!(cfg.principals.len(), 1);
    // The store Secret may not redefine the pod's own tables.
    std::fs::write(&store_toml, "[listen]\nmode = \"0666\"\n").unwrap();
    let e = Config::from_toml(&local, "generated", std::path::Path::new("/"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("config key `listen`: set in both"), "{e}");
    // No embedded database, no token unless asked for.
    let names = volume_names(tpl);
    assert!(!names.contains(&"secret-broker-data"), "{names:?}");
    assert!(!names.contains(&"secret-broker-store-token"), "{names:?}");
    assert!(inject_value(&out).unwrap().is_none(), "idempotent");
}

#[test]
fn a_token_audience_mounts_a_projected_token_in_the_broker_only() {
    let out = inject_value(&job(external_annotations(Some("vault"))))
        .unwrap()
        .unwrap();
    let spec = &out["spec"]["template"]["spec"];
    let vol = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "secret-broker-store-token")
        .unwrap();
    let src = &vol["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(src["audience"], "vault");
    assert_eq!(
        format!("{STORE_TOKEN_DIR}/{}", src["path"].as_str().unwrap()),
        STORE_TOKEN_PATH
    );
    let broker = &spec["initContainers"][0];
    assert!(
        broker["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "secret-broker-store-token" && m["mountPath"] == STORE_TOKEN_DIR)
    );
    let main = &spec["containers"][0];
    assert!(!main.to_string().contains("secret-broker-store-token"));
    assert!(inject_value(&out).unwrap().is_none(), "idempotent");
    // Switching back to embedded drops it on re-injection.
    let mut again = out.clone();
    let a = again["spec"]["template"]["metadata"]["annotations"]
        .as_object_mut()
        .unwrap();
    a.remove("secret-broker.io/store");
    a.remove("secret-broker.io/store-token-audience");
    let embedded = inject_value(&again).unwrap().unwrap();
    let names = volume_names(&embedded["spec"]["template"]);
    assert!(names.contains(&"secret-broker-data") && !names.contains(&"secret-broker-store-token"));
}

#[test]
fn store_mode_is_explicit_and_checked() {
    assert!(STORE_TOML.starts_with(&format!("{STORE_SECRET_DIR}/")));
    let mut a = external_annotations(None);
    a["secret-broker.io/store"] = json!("vault");
    assert!(error_of(job(a)).contains("`vault` is not `embedded` or `external`"));

    let mut a = task_annotations();
    a["secret-broker.io/store-token-audience"] = json!("vault");
    assert!(error_of(job(a)).contains("applies only to `secret-broker.io/store: external`"));

    let a = external_annotations(Some("two words"));
    assert!(error_of(job(a)).contains("is not an audience"));

    let mut a = external_annotations(None);
    a.as_object_mut()
        .unwrap()
        .remove("secret-broker.io/store-secret");
    assert!(error_of(job(a)).contains("the store config (`store.toml`)"));

    // `embedded` spelled out is the default.
    let mut a = task_annotations();
    a["secret-broker.io/store"] = json!("embedded");
    let spelled = inject_value(&job(a)).unwrap().unwrap();
    let default = inject_value(&job(task_annotations())).unwrap().unwrap();
    let tpl = |v: &Value| v["spec"]["template"].clone();
    assert_eq!(tpl(&spelled)["spec"], tpl(&default)["spec"]);
    assert_eq!(
        tpl(&spelled)["metadata"]["annotations"][CONFIG_ANNOTATION],
        tpl(&default)["metadata"]["annotations"][CONFIG_ANNOTATION]
    );
}

#[test]
fn shared_process_namespaces_are_refused_unless_opted_in() {
    for field in ["shareProcessNamespace", "hostPID"] {
        for annotations in [task_annotations(), {
            let mut a = task_annotations();
            a["secret-broker.io/role"] = json!("platform");
            a.as_object_mut().unwrap().remove("secret-broker.io/scope");
            a
        }] {
            let mut j = job(annotations.clone());
            j["spec"]["template"]["spec"][field] = json!(true);
            let e = error_of(j.clone());
            assert!(
                e.contains(&format!("`spec.{field}`: must not be true"))
                    && e.contains(ALLOW_SHARED_PROCESS_NAMESPACE),
                "{e}"
            );
            // `false` is the default and fine.
            j["spec"]["template"]["spec"][field] = json!(false);
            assert!(inject_value(&j).unwrap().is_some());
            // The explicit opt-in injects, and keeps the field.
            j["spec"]["template"]["spec"][field] = json!(true);
            j["spec"]["template"]["metadata"]["annotations"][ALLOW_SHARED_PROCESS_NAMESPACE] =
                json!("true");
            let out = inject_value(&j).unwrap().unwrap();
            assert_eq!(out["spec"]["template"]["spec"][field], true);
            assert!(inject_value(&out).unwrap().is_none(), "idempotent");
        }
    }
    let mut a = task_annotations();
    a[ALLOW_SHARED_PROCESS_NAMESPACE] = json!("yes");
    assert!(error_of(job(a)).contains("is not \"true\" or \"false\""));
    // Written `"false"`, it is the default: still refused.
    let mut a = task_annotations();
    a[ALLOW_SHARED_PROCESS_NAMESPACE] = json!("false");
    let mut j = job(a);
    j["spec"]["template"]["spec"]["shareProcessNamespace"] = json!(true);
    assert!(error_of(j).contains("must not be true"));
}

fn run_job(extra: Value, command: Value) -> Value {
    let mut a = task_annotations();
    a["secret-broker.io/store"] = json!("external");
    for (k, v) in extra.as_object().unwrap() {
        a[k] = v.clone();
    }
    let mut j = job(a);
    let c = &mut j["spec"]["template"]["spec"]["containers"][0];
    c["command"] = command;
    c["args"] = json!(["--flag", "x y"]);
    j
}

#[test]
fn run_wiring_wraps_the_command_and_is_idempotent() {
    let j = run_job(
        json!({
            "secret-broker.io/env": "DB=acme/tasks/t-42/db, B=acme/tasks/t-42/b",
            "secret-broker.io/env-from": "acme/tasks/t-42/env/",
            "secret-broker.io/files": "/run/secrets/secret-broker/key=acme/tasks/t-42/key",
        }),
        json!(["/app", "--"]),
    );
    let out = inject_value(&j).unwrap().unwrap();
    let spec = &out["spec"]["template"]["spec"];
    let main = &spec["containers"][0];
    assert_eq!(
        main["command"],
        json!([
            RUN_BINARY,
            "run",
            "--env",
            "DB=acme/tasks/t-42/db",
            "--env",
            "B=acme/tasks/t-42/b",
            "--env-from",
            "acme/tasks/t-42/env/",
            "--file",
            "/run/secrets/secret-broker/key=acme/tasks/t-42/key:0400",
            "--",
            "/app",
            "--",
            "--flag",
            "x y"
        ])
    );
    assert!(main.get("args").is_none());
    assert_eq!(spec["initContainers"][0]["name"], INSTALL_CONTAINER_NAME);
    assert_eq!(
        spec["initContainers"][0]["command"],
        json!([BINARY, "install-self", RUN_BINARY])
    );
    assert_eq!(spec["initContainers"][1]["name"], CONTAINER_NAME);
    // Injecting the output changes nothing (the original's own `--` too).
    assert!(inject_value(&out).unwrap().is_none(), "idempotent");
    // Removing the annotations and injecting again undoes the wrapping.
    let mut plain = out.clone();
    let a = plain["spec"]["template"]["metadata"]["annotations"]
        .as_object_mut()
        .unwrap();
    for k in [
        "secret-broker.io/env",
        "secret-broker.io/env-from",
        "secret-broker.io/files",
    ] {
        a.remove(k);
    }
    let plain = inject_value(&plain).unwrap().unwrap();
    let spec = &plain["spec"]["template"]["spec"];
    assert_eq!(
        spec["containers"][0]["command"],
        json!(["/app", "--", "--flag", "x y"])
    );
    assert_eq!(spec["initContainers"].as_array().unwrap().len(), 1);
    let text = plain.to_string();
    assert!(!text.contains("secret-broker-bin") && !text.contains("secret-broker-secrets"));
}

#[test]
fn run_wiring_refuses_pods_that_could_never_start() {
    let cmd = json!(["/app"]);
    for (extra, command, want) in [
        (
            json!({"secret-broker.io/env": "A=acme/tasks/t-42/a"}),
            Value::Null,
            "set `command`",
        ),
        (
            json!({"secret-broker.io/env": "A=acme/tasks/t-4/a"}),
            cmd.clone(),
            "outside the task's scope",
        ),
        (
            json!({"secret-broker.io/env": "A=acme/tasks/t-42/a,A=acme/tasks/t-42/b"}),
            cmd.clone(),
            "names `A` twice",
        ),
        (
            json!({"secret-broker.io/env": "A"}),
            cmd.clone(),
            "`A` must be `NAME=PATH`",
        ),
        (
            json!({"secret-broker.io/env": " , "}),
            cmd.clone(),
            "lists nothing",
        ),
        (
            json!({"secret-broker.io/env-from": "acme/tasks"}),
            cmd.clone(),
            "not inside the task's scope",
        ),
        (
            json!({"secret-broker.io/files": "/run/secrets/secret-broker/../x=acme/tasks/t-42/a"}),
            cmd.clone(),
            "must be a file directly in",
        ),
        (
            json!({"secret-broker.io/files": "/run/secrets/secret-broker/d/x=acme/tasks/t-42/a"}),
            cmd.clone(),
            "must be a file directly in",
        ),
        (
            json!({"secret-broker.io/files": "/run/secrets/secret-broker-x=acme/tasks/t-42/a"}),
            cmd.clone(),
            "must be a file directly in",
        ),
        (
            json!({"secret-broker.io/files": "/run/secrets/secret-broker/x=acme/tasks/t-42/a:999"}),
            cmd.clone(),
            "mode `999`",
        ),
        (
            json!({"secret-broker.io/store": "embedded", "secret-broker.io/env": "A=acme/tasks/t-42/a"}),
            cmd.clone(),
            "store is `embedded`",
        ),
    ] {
        let msg = error_of(run_job(extra.clone(), command));
        assert!(msg.contains(want), "{extra}: {msg}");
    }
}

#[test]
fn app_init_containers_may_be_named() {
    let mut a = task_annotations();
    a["secret-broker.io/containers"] = json!("prep");
    let mut j = job(a);
    j["spec"]["template"]["spec"]["initContainers"] = json!([{ "name": "prep", "image": "i" }]);
    let out = inject_value(&j).unwrap().unwrap();
    let spec = &out["spec"]["template"]["spec"];
    // The broker first, then the app's init container, wired.
    assert_eq!(spec["initContainers"][0]["name"], CONTAINER_NAME);
    let prep = &spec["initContainers"][1];
    assert_eq!(prep["name"], "prep");
    assert_eq!(prep["env"][0]["value"], SOCKET_PATH);
    assert_eq!(prep["securityContext"]["runAsUser"], DEFAULT_APP_UID);
    // The regular container was not named: untouched.
    assert!(spec["containers"][0].get("env").is_none());
    assert!(inject_value(&out).unwrap().is_none(), "idempotent");
    // A name that is neither is still refused.
    let mut a = task_annotations();
    a["secret-broker.io/containers"] = json!("nope");
    assert!(error_of(job(a)).contains("not a container or init container"));
}
