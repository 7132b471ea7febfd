//! `secret-broker inject` end to end: golden manifests for every kind,
//! idempotence, refused input, offline schema validation, and the injected
//! pod played on this machine (broker and apps under the uids it assigned).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, PLATFORM_TOKEN, is_root, sha256_hex};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inject")
}

fn inject(input: &[u8], args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .arg("inject")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn cases() -> Vec<(String, PathBuf)> {
    let mut v: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let name = p
                .file_name()?
                .to_str()?
                .strip_suffix(".in.yaml")?
                .to_owned();
            Some((name, p))
        })
        .collect();
    v.sort();
    v
}

/// Every `<case>.in.yaml` gives exactly `<case>.out.yaml` (set
/// `UPDATE_GOLDEN=1` to rewrite them), and injecting the output again
/// changes nothing.
#[test]
fn golden_outputs_and_idempotence() {
    let cases = cases();
    let names: Vec<&str> = cases.iter().map(|(n, _)| n.as_str()).collect();
    for kind in [
        "pod",
        "deployment",
        "statefulset",
        "daemonset",
        "job",
        "cronjob",
        "list",
        "passthrough",
        "external-job",
        "external-deployment",
    ] {
        assert!(names.contains(&kind), "missing golden case `{kind}`");
    }
    for (name, input) in &cases {
        let path = input.to_str().unwrap();
        let out = Command::new(BIN)
            .args(["inject", "-f", path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected_path = fixtures().join(format!("{name}.out.yaml"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&expected_path, &out.stdout).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            expected,
            "{name}: output differs from {}",
            expected_path.display()
        );
        // Stdin (`-` and no flag) gives the same.
        let via_stdin = inject(&std::fs::read(input).unwrap(), &["-f", "-"]);
        assert_eq!(via_stdin.stdout, out.stdout, "{name} via stdin");
        // Idempotence: inject(out) == out.
        let again = inject(expected.as_bytes(), &[]);
        assert!(again.status.success());
        assert_eq!(
            String::from_utf8_lossy(&again.stdout),
            expected,
            "{name}: not idempotent"
        );
    }
    let input = std::fs::read_to_string(fixtures().join("passthrough.in.yaml")).unwrap();
    let output = std::fs::read_to_string(fixtures().join("passthrough.out.yaml")).unwrap();
    assert_eq!(input, output, "pass-through must be byte for byte");
}

/// Each `bad/<case>.yaml` is refused with exit 1 and the message in
/// `bad/<case>.err`, and nothing on stdout.
#[test]
fn malformed_and_unsupported_input_is_refused() {
    let dir = fixtures().join("bad");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("yaml") {
            continue;
        }
        n += 1;
        let want = std::fs::read_to_string(p.with_extension("err")).unwrap();
        let out = Command::new(BIN)
            .args(["inject", "-f"])
            .arg(&p)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", p.display());
        assert!(out.stdout.is_empty(), "{}", p.display());
        assert!(
            stderr.contains(want.trim()),
            "{}: expected `{}` in `{stderr}`",
            p.display(),
            want.trim()
        );
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
    assert!(n >= 8, "bad fixtures not found");
    let out = Command::new(BIN)
        .args(["inject", "-f", "/nonexistent/pod.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(74));
}

/// The `kubernetes-validate` CLI, installed by `scripts/test`.
pub fn kubernetes_validate() -> Option<PathBuf> {
    let local = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".backends/k8s-validate/bin/kubernetes-validate");
    if local.exists() {
        return Some(local);
    }
    Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("kubernetes-validate"))
}

/// Runs `kubernetes-validate --strict` (unknown fields are errors) against
/// a Kubernetes version with native sidecars.
pub fn validate_schema(tool: &Path, files: &[PathBuf]) {
    let out = Command::new(tool)
        .args(["--strict", "--kubernetes-version", "1.30"])
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "schema validation failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn injected_output_validates_against_the_kubernetes_schema() {
    let Some(tool) = kubernetes_validate() else {
        if std::env::var_os("CI").is_some() {
            panic!("kubernetes-validate is missing; scripts/test installs it");
        }
        eprintln!("skipped: kubernetes-validate not installed (scripts/test installs it)");
        return;
    };
    let files: Vec<PathBuf> = cases()
        .into_iter()
        .map(|(n, _)| fixtures().join(format!("{n}.out.yaml")))
        .collect();
    validate_schema(&tool, &files);
}

// ---------------------------------------------------------------------------
// The injected pod, played on one machine.

/// The generated config and the app identity of an injected fixture.
fn generated(case: &str) -> (String, serde_json::Value) {
    let text = std::fs::read_to_string(fixtures().join(format!("{case}.out.yaml"))).unwrap();
    let doc: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    let tpl = match doc["kind"].as_str().unwrap() {
        "Pod" => doc.clone(),
        "CronJob" => doc["spec"]["jobTemplate"]["spec"]["template"].clone(),
        _ => doc["spec"]["template"].clone(),
    };
    let config = tpl["metadata"]["annotations"]["secret-broker.io/config"]
        .as_str()
        .unwrap()
        .to_owned();
    (config, tpl)
}

fn uid_of(tpl: &serde_json::Value, container: &str, field: &str) -> u32 {
    let spec = &tpl["spec"];
    let c = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(spec["initContainers"].as_array().unwrap())
        .find(|c| c["name"] == container)
        .unwrap();
    c["securityContext"][field]
        .as_u64()
        .or(spec["securityContext"][field].as_u64())
        .unwrap() as u32
}

/// A pod's worth of directories: the generated config with only its pod
/// paths moved under a temp dir (identity, mode and group untouched), the
/// shipped policies, a store key readable through the shared group.
struct PlayedPod {
    dir: tempfile::TempDir,
    broker: Child,
    socket: PathBuf,
    shared_gid: u32,
}

impl PlayedPod {
    /// The pod of an embedded-store fixture, its store Secret a `store.key`.
    fn start(case: &str) -> (Self, serde_json::Value) {
        Self::start_with(case, &[("store.key", &[7u8; 32])])
    }

    /// The pod of a fixture with these files in its store Secret's mount
    /// (root-owned, group the fsGroup, 0440: as the kubelet mounts it).
    fn start_with(case: &str, store_files: &[(&str, &[u8])]) -> (Self, serde_json::Value) {
        let (config, tpl) = generated(case);
        let broker_uid = uid_of(&tpl, "secret-broker", "runAsUser");
        let broker_gid = uid_of(&tpl, "secret-broker", "runAsGroup");
        let shared_gid = tpl["spec"]["securityContext"]["fsGroup"].as_u64().unwrap() as u32;
        let dir = tempfile::Builder::new()
            .prefix("sb-pod.")
            .tempdir()
            .unwrap();
        let root = dir.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mk = |sub: &str, mode: u32, owner: Option<u32>| {
            let p = root.join(sub.trim_start_matches('/'));
            std::fs::create_dir_all(&p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            std::os::unix::fs::chown(&p, owner, Some(shared_gid)).unwrap();
            p
        };
        // As kubelet makes them: emptyDirs group-owned by fsGroup, mode
        // 0777; the broker makes its socket directory inside.
        let socket_volume = mk("/run/secret-broker-volume", 0o2777, None);
        mk("/var/lib/secret-broker", 0o2777, None);
        let store = mk("/etc/secret-broker/store", 0o755, None);
        let policies = mk("/etc/secret-broker/policies", 0o755, None);
        for f in ["schema.cedarschema", "broker.cedar"] {
            std::fs::copy(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("policies")
                    .join(f),
                policies.join(f),
            )
            .unwrap();
        }
        for (name, bytes) in store_files {
            let f = store.join(name);
            std::fs::write(&f, bytes).unwrap();
            std::os::unix::fs::chown(&f, Some(0), Some(shared_gid)).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o440)).unwrap();
        }
        // Only the pod paths move; the rest of the generated text is as is.
        let root_s = root.to_str().unwrap();
        let mut config = config
            .replace("\"/run/", &format!("\"{root_s}/run/"))
            .replace("\"/var/", &format!("\"{root_s}/var/"))
            .replace("\"/etc/", &format!("\"{root_s}/etc/"));
        // A platform token principal to provision with, appended.
        config.push_str(&format!(
            "\n[[principal]]\nname = \"test-provisioner\"\ntype = \"Component\"\nroles = [\"platform\"]\ntoken_sha256 = \"{}\"\n",
            sha256_hex(PLATFORM_TOKEN)
        ));
        let config_dir = mk("/etc/secret-broker/config", 0o755, None);
        std::fs::write(config_dir.join("config.toml"), &config).unwrap();
        let broker = setpriv(broker_uid, broker_gid, &[shared_gid])
            .arg(BIN)
            .args(["serve", "--config"])
            .arg(config_dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let mut pod = Self {
            socket: socket_volume.join("socket/api.sock"),
            dir,
            broker,
            shared_gid,
        };
        pod.wait_ready();
        (pod, tpl)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.broker.try_wait().unwrap() {
                panic!("broker exited ({s}): {}", self.stderr());
            }
            // The probe the sidecar's startupProbe runs.
            let probe = Command::new(BIN)
                .arg("health")
                .env("SECRET_BROKER_SOCKET", &self.socket)
                .output()
                .unwrap();
            if probe.status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "not ready: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// `curl` on the socket as uid/gid with these supplementary groups;
    /// status 0 means the connection itself was refused.
    fn curl(
        &self,
        who: (u32, u32, &[u32]),
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, String) {
        let mut cmd = setpriv(who.0, who.1, who.2);
        cmd.args([
            "curl",
            "-s",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
        ])
        .arg(&self.socket)
        .args(["-X", method]);
        if let Some(b) = body {
            cmd.args(["-H", "content-type: application/json", "--data-binary", b]);
        }
        if let Some(t) = token {
            cmd.args(["-H", &format!("authorization: Bearer {t}")]);
        }
        let out = cmd.arg(format!("http://sb{path}")).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }
}

impl Drop for PlayedPod {
    fn drop(&mut self) {
        let _ = self.broker.kill();
        let _ = self.broker.wait();
    }
}

/// `setpriv` (util-linux) to run as a uid/gid with exact supplementary
/// groups, as the kubelet runs a container with `fsGroup`.
fn setpriv(uid: u32, gid: u32, groups: &[u32]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let g: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", g.join(",")));
    }
    cmd.arg("--");
    cmd
}

fn can_play() -> bool {
    if !is_root() {
        eprintln!("skipped: needs root to run the broker and apps under the injected uids");
        return false;
    }
    for tool in ["setpriv", "curl"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("skipped: `{tool}` not found");
            return false;
        }
    }
    true
}

#[test]
fn injected_task_pod_serves_only_its_app_and_only_its_scope() {
    if !can_play() {
        return;
    }
    let (pod, tpl) = PlayedPod::start("job");
    let app_uid = uid_of(&tpl, "main", "runAsUser");
    let app_gid = uid_of(&tpl, "main", "runAsGroup");
    let g = pod.shared_gid;
    let put = |path: &str| {
        let (s, b) = pod.curl(
            (0, 0, &[]),
            "PUT",
            &format!("/v1/secrets/{path}"),
            Some(r#"{"value":"s3cret"}"#),
            Some(PLATFORM_TOKEN),
        );
        assert_eq!(s, 201, "{b}");
    };
    put("acme/tasks/t-42/db");
    put("acme/tasks/t-43/db");

    // The app, as the injection made it: its uid/gid, in the fsGroup.
    let app = (app_uid, app_gid, &[g][..]);
    let (s, b) = pod.curl(app, "GET", "/v1/whoami", None, None);
    assert_eq!(s, 200, "{b}");
    let who: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(who["principal"], "task-42");
    assert_eq!(who["type"], "Task");
    assert_eq!(who["scope"], "acme/tasks/t-42");
    let (s, b) = pod.curl(app, "GET", "/v1/secrets/acme/tasks/t-42/db", None, None);
    assert_eq!((s, b.contains("s3cret")), (200, true), "{b}");
    let (s, b) = pod.curl(app, "GET", "/v1/secrets/acme/tasks/t-43/db", None, None);
    assert_eq!(s, 403, "{b}");
    let (s, _) = pod.curl(app, "GET", "/v1/secrets/acme/tasks/t-42/", None, None);
    assert_eq!(s, 200);
    let (s, _) = pod.curl(
        app,
        "PUT",
        "/v1/secrets/acme/tasks/t-42/x",
        Some(r#"{"value":"v"}"#),
        None,
    );
    assert_eq!(s, 403);

    // Another container of the pod (in the fsGroup, another uid): 401.
    let (s, b) = pod.curl(
        (app_uid + 1, app_gid, &[g]),
        "GET",
        "/v1/secrets/acme/tasks/t-42/db",
        None,
        None,
    );
    assert_eq!(s, 401, "{b}");
    // Outside the shared group, the 0660 socket cannot even be opened.
    let (s, _) = pod.curl(
        (app_uid + 1, app_gid + 1, &[]),
        "GET",
        "/healthz",
        None,
        None,
    );
    assert_eq!(s, 0, "a foreign uid outside the group must not connect");
    // Even the app's uid needs the group (as in the pod, via fsGroup).
    let (s, _) = pod.curl((app_uid, app_gid, &[]), "GET", "/healthz", None, None);
    assert_eq!(s, 0);
    // Root is nobody to the broker.
    let (s, _) = pod.curl(
        (0, 0, &[]),
        "GET",
        "/v1/secrets/acme/tasks/t-42/db",
        None,
        None,
    );
    assert_eq!(s, 401);

    // The app mounts the socket volume read-only: connecting still works.
    let ro = pod.dir.path().join("app-view");
    std::fs::create_dir(&ro).unwrap();
    let sock_dir = pod.socket.parent().unwrap();
    let mounted = Command::new("mount")
        .args(["--bind", sock_dir.to_str().unwrap(), ro.to_str().unwrap()])
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("mount")
            .args(["-o", "remount,bind,ro", ro.to_str().unwrap()])
            .status()
            .is_ok_and(|s| s.success());
    if mounted {
        let mut cmd = setpriv(app_uid, app_gid, &[g]);
        let out = cmd
            .args([
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--unix-socket",
            ])
            .arg(ro.join("api.sock"))
            .arg("http://sb/v1/secrets/acme/tasks/t-42/db")
            .output()
            .unwrap();
        let _ = Command::new("umount").arg(&ro).status();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200",
            "through a read-only mount"
        );
    } else {
        eprintln!("skipped the read-only mount check: cannot bind-mount here");
    }

    // The directory the apps mount (the volume's subPath) is the broker's
    // own: nobody else can write it, so nobody can swap the socket.
    let dir_meta = std::fs::metadata(pod.socket.parent().unwrap()).unwrap();
    assert_eq!(dir_meta.permissions().mode() & 0o022, 0, "socket dir mode");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&dir_meta),
        uid_of(&tpl, "secret-broker", "runAsUser")
    );

    // The socket is as the config says: 0660, group = fsGroup.
    let meta = std::fs::metadata(&pod.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), g);
}

#[test]
fn injected_platform_pod_writes_but_never_reads() {
    if !can_play() {
        return;
    }
    let (pod, tpl) = PlayedPod::start("deployment");
    let uid = uid_of(&tpl, "provisioner", "runAsUser");
    let gid = uid_of(&tpl, "provisioner", "runAsGroup");
    let me = (uid, gid, &[pod.shared_gid][..]);
    let (s, b) = pod.curl(
        me,
        "PUT",
        "/v1/secrets/acme/tasks/t-42/db",
        Some(r#"{"value":"s3cret"}"#),
        None,
    );
    assert_eq!(s, 201, "{b}");
    let (s, b) = pod.curl(me, "GET", "/v1/secrets/acme/tasks/t-42/db", None, None);
    assert_eq!(s, 403, "{b}");
    assert!(!b.contains("s3cret"));
    let (s, b) = pod.curl(me, "GET", "/v1/whoami", None, None);
    assert_eq!(s, 200);
    assert!(b.contains("\"provisioner\""), "{b}");
}

// ---------------------------------------------------------------------------
// Two injected pods on one shared store: a platform Deployment and a task
// Job, both `secret-broker.io/store: external`, whose store Secrets hold a
// `store.toml` for the same Vault (a private OpenBao dev server here) and
// each its own Vault token, scoped by the shipped backend policies.

/// The OpenBao binary `scripts/backends install vault` provides, or a loud
/// skip (a failure under CI).
fn bao_bin() -> Option<PathBuf> {
    let bin = std::env::var_os("SB_BAO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".backends/bin/bao"));
    if bin.exists() {
        return Some(bin);
    }
    let msg = format!(
        "`{}` is missing; install it with `scripts/backends install vault`",
        bin.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg} (CI is set, so a missing server is a failure)");
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED (shared vault): {msg} ***\n"
    );
    None
}

/// A private OpenBao dev server on a free loopback port, killed on drop.
struct Bao {
    child: Child,
    addr: String,
}

impl Bao {
    fn start(bin: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("http://127.0.0.1:{port}");
        let child = Command::new(bin)
            .args(["server", "-dev", "-dev-root-token-id=root"])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let bao = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while bao.api("GET", "sys/health", None).0 != 200 {
            assert!(Instant::now() < deadline, "openbao not ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        bao
    }

    /// A Vault API call with the root token: (status, body).
    fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .args(["-H", "X-Vault-Token: root"]);
        if let Some(b) = body {
            cmd.args(["--data-binary", b]);
        }
        let out = cmd
            .arg(format!("{}/v1/{path}", self.addr))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// A token with only the policy in `hcl`.
    fn token_with(&self, name: &str, hcl: &str) -> String {
        let body = serde_json::json!({ "policy": hcl }).to_string();
        let (s, b) = self.api("PUT", &format!("sys/policies/acl/{name}"), Some(&body));
        assert!((200..300).contains(&s), "policy {name}: {s} {b}");
        let body = serde_json::json!({ "policies": [name], "ttl": "1h" }).to_string();
        let (s, b) = self.api("POST", "auth/token/create", Some(&body));
        assert_eq!(s, 200, "token: {b}");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        v["auth"]["client_token"].as_str().unwrap().to_owned()
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn injected_platform_and_task_pods_share_one_vault() {
    if !can_play() {
        return;
    }
    let Some(bin) = bao_bin() else {
        return;
    };
    let bao = Bao::start(&bin);
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/backend-policies/vault");
    let hcl = |f: &str| std::fs::read_to_string(policies.join(f)).unwrap();
    // Least privilege in Vault as well: the platform's broker may write but
    // not read values; the task's may read its scope only.
    let writer = bao.token_with("sb-writer", &hcl("writer.hcl"));
    let reader = bao.token_with("sb-reader-t-42", &hcl("reader-scope.hcl"));
    // The store Secrets: one `store.toml` shape, a token file beside it
    // (relative paths resolve against the Secret's mount).
    let store_toml = format!(
        "[store]\nbackend = \"vault\"\naddress = \"{}\"\nauth = \"token\"\ntoken_file = \"vault-token\"\n\n[cache]\nttl = \"0\"\n",
        bao.addr
    );
    let (platform, ptpl) = PlayedPod::start_with(
        "external-deployment",
        &[
            ("store.toml", store_toml.as_bytes()),
            ("vault-token", writer.as_bytes()),
        ],
    );
    let (task, ttpl) = PlayedPod::start_with(
        "external-job",
        &[
            ("store.toml", store_toml.as_bytes()),
            ("vault-token", reader.as_bytes()),
        ],
    );
    let p_app = (
        uid_of(&ptpl, "provisioner", "runAsUser"),
        uid_of(&ptpl, "provisioner", "runAsGroup"),
        &[platform.shared_gid][..],
    );
    let t_app = (
        uid_of(&ttpl, "main", "runAsUser"),
        uid_of(&ttpl, "main", "runAsGroup"),
        &[task.shared_gid][..],
    );
    assert_ne!(p_app.0, t_app.0);
    let put = |path: &str| {
        platform.curl(
            p_app,
            "PUT",
            &format!("/v1/secrets/{path}"),
            Some(r#"{"value":"s3cret-shared"}"#),
            None,
        )
    };

    // The platform app provisions through its own broker, and cannot read.
    let (s, b) = put("acme/tasks/t-42/db");
    assert_eq!(s, 201, "{b}\n{}", platform.stderr());
    let (s, _) = put("acme/tasks/t-43/db");
    assert_eq!(s, 201);
    let (s, b) = platform.curl(p_app, "GET", "/v1/secrets/acme/tasks/t-42/db", None, None);
    assert_eq!(s, 403, "{b}");
    assert!(!b.contains("s3cret-shared"));

    // The value is in Vault, not in either pod.
    let (s, b) = bao.api("GET", "secret/data/acme/tasks/t-42/db", None);
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("s3cret-shared"));

    // The task app reads it through the other pod's broker…
    let (s, b) = task.curl(t_app, "GET", "/v1/secrets/acme/tasks/t-42/db", None, None);
    assert_eq!(
        (s, b.contains("s3cret-shared")),
        (200, true),
        "{b}\n{}",
        task.stderr()
    );
    let (s, b) = task.curl(t_app, "GET", "/v1/whoami", None, None);
    assert_eq!(s, 200);
    assert!(
        b.contains("\"task-42\"") && b.contains("acme/tasks/t-42"),
        "{b}"
    );
    // …and nothing outside its scope, though it exists in the same Vault.
    let (s, b) = task.curl(t_app, "GET", "/v1/secrets/acme/tasks/t-43/db", None, None);
    assert_eq!(s, 403, "{b}");
    assert!(!b.contains("s3cret-shared"));
    let (s, _) = task.curl(
        t_app,
        "PUT",
        "/v1/secrets/acme/tasks/t-42/db",
        Some(r#"{"value":"x"}"#),
        None,
    );
    assert_eq!(s, 403);

    // A foreign uid in the pod's group is nobody to either broker.
    for (pod, app) in [(&task, t_app), (&platform, p_app)] {
        let foreign = (app.0 + 1, app.1, app.2);
        let (s, b) = pod.curl(foreign, "GET", "/v1/secrets/acme/tasks/t-42/db", None, None);
        assert_eq!(s, 401, "{b}");
    }
    // The platform app's uid means nothing to the task's broker, and the
    // task's nothing to the platform's.
    let (s, _) = task.curl(
        (p_app.0, p_app.1, &[task.shared_gid]),
        "GET",
        "/v1/secrets/acme/tasks/t-42/db",
        None,
        None,
    );
    assert_eq!(s, 401);
    let (s, _) = platform.curl(
        (t_app.0, t_app.1, &[platform.shared_gid]),
        "PUT",
        "/v1/secrets/acme/tasks/t-42/db",
        Some(r#"{"value":"x"}"#),
        None,
    );
    assert_eq!(s, 401);
}

// ---------------------------------------------------------------------------
// deploy/: every manifest, rendered overlays, and the injected examples.

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every Kubernetes manifest under `dir`. `deploy/backend-policies/` and
/// `deploy/ci/` hold store IAM documents and CI workflows, not Kubernetes
/// objects, so they are not validated as such.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() && (name == "backend-policies" || name == "ci") {
            continue;
        }
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().and_then(|x| x.to_str()) == Some("yaml") {
            out.push(p);
        }
    }
}

/// `kubectl kustomize` with files allowed from `policies/` (outside deploy/).
fn kustomize(dir: &Path) -> Option<String> {
    let out = Command::new("kubectl")
        .args(["kustomize", "--load-restrictor", "LoadRestrictionsNone"])
        .arg(dir)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn deploy_manifests_validate_and_render() {
    let Some(tool) = kubernetes_validate() else {
        if std::env::var_os("CI").is_some() {
            panic!("kubernetes-validate is missing; scripts/test installs it");
        }
        eprintln!("skipped: kubernetes-validate not installed (scripts/test installs it)");
        return;
    };
    let mut files = Vec::new();
    yaml_files(&deploy_dir(), &mut files);
    files.retain(|p| p.file_name().unwrap() != "kustomization.yaml");
    assert!(files.len() >= 10, "deploy/ manifests not found");
    validate_schema(&tool, &files);

    let mut kustomizations = Vec::new();
    yaml_files(&deploy_dir(), &mut kustomizations);
    kustomizations.retain(|p| p.file_name().unwrap() == "kustomization.yaml");
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("skipped rendering: kubectl not found");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for k in &kustomizations {
        let dir = k.parent().unwrap();
        let rendered = kustomize(dir).unwrap();
        let name = dir
            .strip_prefix(deploy_dir())
            .unwrap()
            .to_str()
            .unwrap()
            .replace('/', "-");
        let raw = tmp.path().join(format!("{name}.yaml"));
        std::fs::write(&raw, &rendered).unwrap();
        // What the webhook would make of it, injected here by the CLI.
        let injected = inject(rendered.as_bytes(), &[]);
        assert!(
            injected.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&injected.stderr)
        );
        let out = tmp.path().join(format!("{name}.injected.yaml"));
        std::fs::write(&out, &injected.stdout).unwrap();
        validate_schema(&tool, &[raw, out]);
    }

    // The policy ConfigMap holds exactly the shipped policies.
    let rendered = kustomize(&deploy_dir().join("policies")).unwrap();
    let cm: serde_json::Value = serde_yaml_ng::from_str(&rendered).unwrap();
    assert_eq!(cm["metadata"]["name"], "secret-broker-policies");
    for f in ["schema.cedarschema", "broker.cedar"] {
        let want = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("policies")
                .join(f),
        )
        .unwrap();
        assert_eq!(cm["data"][f].as_str().unwrap(), want, "{f}");
    }
    // The examples are injected where annotated.
    let examples = kustomize(&deploy_dir().join("examples")).unwrap();
    let injected = String::from_utf8(inject(examples.as_bytes(), &[]).stdout).unwrap();
    assert_eq!(injected.matches("secret-broker.io/config:").count(), 3);
    assert_eq!(injected.matches("- install-self").count(), 1);
}

/// The image cannot be built here (no container engine); check that it
/// puts the binary where the injected probes call it and runs as the
/// broker's uid.
#[test]
fn containerfile_matches_what_injection_expects() {
    use secret_broker::inject::{BINARY, BROKER_GID, BROKER_UID};
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Containerfile"))
        .unwrap();
    assert!(
        text.contains(&format!("/secret-broker {BINARY}")),
        "binary path"
    );
    assert!(
        text.contains(&format!("USER {BROKER_UID}:{BROKER_GID}")),
        "user"
    );
    assert!(text.contains("FROM scratch"), "final stage is minimal");
}

/// The example store Secrets' `store.toml` files load as the injected
/// broker includes them: Vault Kubernetes auth with the token injection
/// mounts, and relative paths inside the Secret's mount.
#[test]
fn example_store_tomls_are_what_the_injected_config_includes() {
    use secret_broker::config::{Config, StoreConfig, VaultAuth};
    use secret_broker::inject::{STORE_TOKEN_PATH, STORE_TOML};
    let (config, _) = generated("external-job");
    let dir = deploy_dir().join("examples/vault");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("toml") {
            continue;
        }
        n += 1;
        let local = config.replace(STORE_TOML, p.to_str().unwrap());
        let cfg = Config::from_toml(&local, "generated", Path::new("/"))
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let StoreConfig::Vault(v) = &cfg.store else {
            panic!("{}: not vault", p.display());
        };
        let VaultAuth::Kubernetes { jwt_file, .. } = &v.auth else {
            panic!("{}: not kubernetes auth", p.display());
        };
        assert_eq!(jwt_file, Path::new(STORE_TOKEN_PATH), "{}", p.display());
        assert_eq!(
            v.ca_file.as_deref(),
            Some(dir.join("vault-ca.pem").as_path())
        );
    }
    assert_eq!(n, 2, "deploy/examples/vault/*.toml not found");
}

// ---------------------------------------------------------------------------
// Several inputs, every error at once, the default image, warnings.

/// `-f` repeats and takes directories (their `.yaml`/`.yml`/`.json`, sorted),
/// as `kubectl apply -f` does; the output is every input's, in order.
#[test]
fn several_files_and_directories_are_injected_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let copy = |case: &str, to: &str| {
        std::fs::copy(
            fixtures().join(format!("{case}.in.yaml")),
            dir.path().join(to),
        )
        .unwrap();
    };
    copy("pod", "b.yaml");
    copy("job", "a.yml");
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let out = Command::new(BIN)
        .args(["inject", "-f"])
        .arg(dir.path())
        .arg("-f")
        .arg(fixtures().join("deployment.in.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let golden =
        |case: &str| std::fs::read_to_string(fixtures().join(format!("{case}.out.yaml"))).unwrap();
    let want = [golden("job"), golden("pod"), golden("deployment")].join("---\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}

/// Every broken document of every file is reported in one run (one line
/// each), and nothing is written.
#[test]
fn every_error_of_a_file_is_reported_at_once() {
    let bad = |case: &str| {
        std::fs::read_to_string(fixtures().join("bad").join(format!("{case}.yaml"))).unwrap()
    };
    let good = std::fs::read_to_string(fixtures().join("pod.in.yaml")).unwrap();
    let stream = [
        bad("root-app"),
        good,
        bad("store-mode"),
        bad("run-without-command"),
    ]
    .join("---\n");
    let out = inject(stream.as_bytes(), &["-f", "-"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 3, "{stderr}");
    assert!(
        errors[0].contains("document 1 ") && errors[0].contains("runs as root"),
        "{stderr}"
    );
    assert!(
        errors[1].contains("document 3 ") && errors[1].contains("`vault` is not"),
        "{stderr}"
    );
    assert!(
        errors[2].contains("document 4 ") && errors[2].contains("set `command`"),
        "{stderr}"
    );
}

/// `--image` sets the image where the annotation does not; the annotation
/// still wins.
#[test]
fn inject_image_flag_sets_the_default_image() {
    let out = Command::new(BIN)
        .args(["inject", "--image", "mirror.local/sb:1", "-f"])
        .arg(fixtures().join("run-job.in.yaml"))
        .arg("-f")
        .arg(fixtures().join("run-deployment.in.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // The job's broker and install container take the flag's image...
    assert_eq!(
        text.matches("image: mirror.local/sb:1").count(),
        2,
        "{text}"
    );
    // ...the deployment keeps its annotation's.
    assert_eq!(
        text.matches(" image: mirror.example/secret-broker:pinned")
            .count(),
        2,
        "{text}"
    );
    assert!(!text.contains("ghcr.io/secret-broker"), "{text}");
    let bad = Command::new(BIN)
        .args(["inject", "--image", "has space"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// A task pod on its own embedded store (nothing can write to it) and a
/// container whose uid injection chose are warned about on stderr; the
/// output is still written.
#[test]
fn useless_stores_and_changed_uids_are_warned_about() {
    let out = Command::new(BIN)
        .args(["inject", "-f"])
        .arg(fixtures().join("job.in.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: ") && stderr.contains("the task's store is `embedded`"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "`spec.containers[main]`: injection sets runAsUser 10001 and runAsGroup 10001"
        ),
        "{stderr}"
    );
    // Injecting the output again: the uid is the pod's own now.
    let again = inject(&out.stdout, &[]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!stderr.contains("runAsUser"), "{stderr}");
    // An external store and uids of its own: nothing to say.
    let quiet = Command::new(BIN)
        .args(["inject", "-f"])
        .arg(fixtures().join("run-job.in.yaml"))
        .output()
        .unwrap();
    assert!(quiet.status.success());
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
}

// ---------------------------------------------------------------------------
// `secret-broker run`, wired by injection, played end to end.

/// A shared store for the played pod (`secret-broker.io/store: external`):
/// the included `store.toml` names a database in the pod's temp dir
/// (relative paths resolve against its own directory, the store Secret).
const PLAYED_STORE_TOML: &str = "[store]\nbackend = \"embedded\"\npath = \"../../../var/lib/secret-broker/shared.redb\"\nkey_file = \"../store/store.key\"\n";

/// The injected `run-job` pod: its install container copies the binary,
/// and the app container's argv and environment, taken from the injected
/// spec (paths moved under the pod's temp dir), run as the app's uid
/// against the broker started from the injected config: the program sees
/// its secrets as variables and as a file of the annotated mode.
#[test]
fn injected_run_wiring_gives_the_program_its_secrets() {
    if !can_play() {
        return;
    }
    let (pod, tpl) = PlayedPod::start_with(
        "run-job",
        &[
            ("store.toml", PLAYED_STORE_TOML.as_bytes()),
            ("store.key", &[7u8; 32]),
        ],
    );
    let root = pod.dir.path().to_path_buf();
    let at = |p: &str| format!("{}{p}", root.display());
    let g = pod.shared_gid;
    let put = |path: &str, value: &str| {
        let (s, b) = pod.curl(
            (0, 0, &[]),
            "PUT",
            &format!("/v1/secrets/{path}"),
            Some(&format!(r#"{{"value":"{value}"}}"#)),
            Some(PLATFORM_TOKEN),
        );
        assert_eq!(s, 201, "{b}");
    };
    put("acme/tasks/t-42/db/password", "pw-CANARY-1");
    put("acme/tasks/t-42/api-token", "tok-CANARY-2");
    put("acme/tasks/t-42/tls-key", "key-CANARY-3");

    // As kubelet makes the two memory emptyDirs: 0777, group the fsGroup.
    for d in ["/run/secret-broker-bin", "/run/secrets/secret-broker"] {
        let p = PathBuf::from(at(d));
        std::fs::create_dir_all(&p).unwrap();
        std::os::unix::fs::chown(&p, None, Some(g)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o2777)).unwrap();
    }
    let spec = &tpl["spec"];
    let inits = spec["initContainers"].as_array().unwrap();
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    // The install container, as the broker's uid: the image's binary is
    // this build's.
    let install = inits
        .iter()
        .find(|c| c["name"] == "secret-broker-install")
        .unwrap();
    let argv = strings(&install["command"]);
    assert_eq!(argv[0], "/usr/local/bin/secret-broker");
    let out = setpriv(
        uid_of(&tpl, "secret-broker-install", "runAsUser"),
        uid_of(&tpl, "secret-broker-install", "runAsGroup"),
        &[g],
    )
    .arg(BIN)
    .args(&argv[1..argv.len() - 1])
    .arg(at(&argv[argv.len() - 1]))
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copied = PathBuf::from(at("/run/secret-broker-bin/secret-broker"));
    let mode = std::fs::metadata(&copied).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o555);

    // The app container: its wrapped command, with the pod's paths moved.
    let main = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "main")
        .unwrap();
    let argv = strings(&main["command"]);
    assert!(main.get("args").is_none());
    let split = argv.iter().position(|a| a == "--").unwrap();
    assert_eq!(
        argv[split + 1..],
        ["/usr/bin/task", "--batch", "--input", "/work"],
        "the original command and args, folded"
    );
    let file = at("/run/secrets/secret-broker/tls.key");
    // The program the image would run is not here: a probe stands in.
    let probe = format!(
        "echo \"DB_PASSWORD=$DB_PASSWORD API_TOKEN=$API_TOKEN\"; cat {file}; echo; stat -c '%a %u' {file}"
    );
    let mut cmd = setpriv(
        uid_of(&tpl, "main", "runAsUser"),
        uid_of(&tpl, "main", "runAsGroup"),
        &[g],
    );
    cmd.arg(&copied);
    for a in &argv[1..=split] {
        cmd.arg(a.replace("/run/secrets/", &at("/run/secrets/")));
    }
    cmd.args(["sh", "-c", &probe]);
    cmd.env_clear().env("PATH", "/usr/bin:/bin");
    for e in main["env"].as_array().unwrap() {
        let (name, value) = (e["name"].as_str().unwrap(), e["value"].as_str().unwrap());
        let value = if name == "SECRET_BROKER_SOCKET" {
            pod.socket.to_str().unwrap().to_owned()
        } else {
            value.to_owned()
        };
        cmd.env(name, value);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}\n{}", pod.stderr());
    let app_uid = uid_of(&tpl, "main", "runAsUser");
    assert_eq!(
        stdout,
        format!("DB_PASSWORD=pw-CANARY-1 API_TOKEN=tok-CANARY-2\nkey-CANARY-3\n440 {app_uid}\n")
    );
    assert!(!stderr.contains("CANARY"), "{stderr}");
    // Every read was the app's own, audited as the task (stdout: audit).
    assert!(!pod.stderr().contains("CANARY"));
}

/// `install-self` copies this binary, runnable (0555), and on a missing
/// directory fails with 74 leaving nothing behind; it is hidden from help.
#[test]
fn install_self_copies_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("secret-broker");
    let out = Command::new(BIN)
        .arg("install-self")
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(BIN).unwrap());
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o555);
    let v = Command::new(&dest).arg("--version").output().unwrap();
    assert!(v.status.success());
    // Again over the existing copy (a restarted init container).
    let again = Command::new(BIN)
        .arg("install-self")
        .arg(&dest)
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp file left"
    );
    let missing = Command::new(BIN)
        .arg("install-self")
        .arg(dir.path().join("nope/secret-broker"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(74));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("install-self"));
}
