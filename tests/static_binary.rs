//! The static build (`scripts/static-build`, whose path `scripts/test`
//! passes as `$SB_STATIC_BIN`) is the image's binary and the one injection
//! copies into app containers; it needs nothing of either image. Here it
//! runs in two roots that hold only what a pod gives each container:
//!
//! - the broker's: the `FROM scratch` image (the binary, the policies) and
//!   the pod's mounts (config, store key, data and socket volumes, and
//!   `/proc`, which every container has). No libc, no shell, no `/dev`.
//! - an app's: the binary, installed by `install-self` as the init
//!   container does, the broker's socket and the secrets volume. Nothing
//!   else, not even `/proc`.
//!
//! Chrooted to the app's uid, `run` reads secrets from that broker and
//! hands them to a program. The ordinary (dynamic) test binary in the same
//! app root cannot even start, which shows the root is really empty.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{BIN, Broker, PLATFORM_TOKEN as P, TASK_TOKEN, default_principals};

/// The app's uid and gid: the principal `task-uid` (scope `acme/tasks/t-42`).
const APP_UID: u32 = 2000;
/// Where injection puts the binary, the socket and the secrets volume.
const RUN_BINARY: &str = "/run/secret-broker-bin/secret-broker";
const SOCKET: &str = "/run/secret-broker/api.sock";
const SECRETS: &str = "/run/secrets/secret-broker";
/// The dynamic test binary's copy, beside the static one.
const DYNAMIC: &str = "/run/secret-broker-bin/dynamic";
/// The broker's uid and gid in an injected pod (`inject::BROKER_UID`).
const BROKER_UID: u32 = 65532;
/// The broker's paths in its image and pod (`src/inject.rs`).
const BROKER_BINARY: &str = "/usr/local/bin/secret-broker";
const BROKER_SOCKET: &str = "/run/secret-broker-volume/socket/api.sock";
const BROKER_CONFIG: &str = "/etc/secret-broker/config/config.toml";

/// Skips loudly, or fails when CI is set.
fn skip(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{why} (CI is set, so this is a failure)");
    }
    // Past the test harness's capture: a skip is loud.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED (static binary): {why} ***\n"
    );
}

/// `$SB_STATIC_BIN`, which `scripts/test` sets; else a skip.
fn static_bin() -> Option<PathBuf> {
    let Some(bin) = std::env::var_os("SB_STATIC_BIN").map(PathBuf::from) else {
        skip("$SB_STATIC_BIN is not set: scripts/test sets it to what scripts/static-build prints");
        return None;
    };
    assert!(
        bin.is_file(),
        "$SB_STATIC_BIN `{}` is missing",
        bin.display()
    );
    Some(bin)
}

/// Whether this process may chroot, change uid and make a mount namespace
/// (root, or the capabilities).
fn can_chroot() -> bool {
    let works = |cmd: &mut Command| cmd.stdin(Stdio::null()).status().is_ok_and(|s| s.success());
    let ok = works(Command::new("chroot").args([
        &format!("--userspec={APP_UID}:{APP_UID}"),
        "/",
        "true",
    ])) && works(Command::new("unshare").args(["--mount", "true"]));
    if !ok {
        skip("`chroot --userspec` or `unshare --mount` does not work here (run the tests as root)");
    }
    ok
}

/// `chroot`, found on the test's PATH (the commands run with no PATH).
fn chroot_bin() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("chroot"))
        .find(|p| p.is_file())
        .expect("chroot is on PATH")
}

/// Makes each `(dir, mode, owner)` under `root`; the owner is uid and gid.
fn make_dirs(root: &Path, dirs: &[(&str, u32, u32)]) {
    for &(dir, mode, owner) in dirs {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
        chown(&d, owner);
    }
}

fn chown(p: &Path, owner: u32) {
    let uid = Some(rustix::process::Uid::from_raw(owner));
    let gid = Some(rustix::process::Gid::from_raw(owner));
    rustix::fs::chown(p, uid, gid).unwrap();
}

/// A broker from the static binary in a root laid out as its image and
/// pod give it, as the broker's uid, with `/proc` mounted in a mount
/// namespace of its own, and nothing else.
fn image_broker(bin: &Path) -> Broker {
    let dir = Broker::temp_dir();
    let root = dir.path().join("broker-root");
    make_dirs(
        &root,
        &[
            ("", 0o755, 0),
            ("usr/local/bin", 0o755, 0),
            ("etc/secret-broker/policies", 0o755, 0),
            ("etc/secret-broker/config", 0o755, 0),
            ("etc/secret-broker/store", 0o755, 0),
            ("var/lib/secret-broker", 0o700, BROKER_UID),
            ("run/secret-broker-volume/socket", 0o755, BROKER_UID),
            ("proc", 0o555, 0),
        ],
    );
    std::fs::copy(bin, root.join(&BROKER_BINARY[1..])).unwrap();
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for e in std::fs::read_dir(policies).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            let to = root.join("etc/secret-broker/policies").join(e.file_name());
            std::fs::copy(e.path(), to).unwrap();
        }
    }
    let key = root.join("etc/secret-broker/store/store.key");
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    std::fs::write(&key, bytes).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
    chown(&key, BROKER_UID);
    // As injection writes it: the socket's group a number (the image has
    // no /etc/group). The audit goes to the data volume, for the test.
    let config = root.join(&BROKER_CONFIG[1..]);
    std::fs::write(
        &config,
        format!(
            r#"
[listen]
socket = "{BROKER_SOCKET}"
mode = "0660"
group = {APP_UID}

[store]
backend = "embedded"
path = "/var/lib/secret-broker/store.redb"
key_file = "/etc/secret-broker/store/store.key"

[policy]
dir = "/etc/secret-broker/policies"

[audit]
sink = "file:/var/lib/secret-broker/audit.log"

[log]
format = "json"
level = "debug"
{}"#,
            default_principals()
        ),
    )
    .unwrap();
    let stderr = dir.path().join("broker-stderr.log");
    // unshare execs chroot, which execs the broker: one process, which
    // `Broker` kills when dropped.
    let child = Command::new("unshare")
        .arg(format!("--mount-proc={}", root.join("proc").display()))
        .arg(chroot_bin())
        .arg(format!("--userspec={BROKER_UID}:{BROKER_UID}"))
        // The pod's shared group, which the socket gets.
        .arg(format!("--groups={APP_UID}"))
        .arg(&root)
        .args([BROKER_BINARY, "serve", "--config", BROKER_CONFIG])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut b = Broker {
        child: Some(child),
        socket: root.join(&BROKER_SOCKET[1..]),
        audit: root.join("var/lib/secret-broker/audit.log"),
        stderr,
        config,
        env: Vec::new(),
        isolated: true,
        dir,
    };
    b.wait_ready();
    b
}

/// The app container's root: exactly what an injected pod gives it.
fn app_root(b: &Broker, bin: &Path) -> PathBuf {
    let root = b.dir.path().join("app-root");
    make_dirs(
        &root,
        &[
            ("", 0o755, 0),
            ("run/secret-broker-bin", 0o755, 0),
            ("run/secret-broker", 0o755, 0),
            ("run/secrets/secret-broker", 0o700, APP_UID),
        ],
    );
    // The init container's step: the binary copies itself.
    let out = Command::new(bin)
        .arg("install-self")
        .arg(root.join(&RUN_BINARY[1..]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The pod's shared socket volume: a hard link to the broker's socket
    // (a socket is found by its inode, so this is the broker's listener).
    std::fs::hard_link(&b.socket, root.join(&SOCKET[1..])).unwrap();
    assert_eq!(
        tree(&root),
        [
            "run",
            "run/secret-broker",
            "run/secret-broker-bin",
            "run/secret-broker-bin/secret-broker",
            "run/secret-broker/api.sock",
            "run/secrets",
            "run/secrets/secret-broker",
        ],
        "the app root holds something else"
    );
    root
}

/// Every path under `root`, relative, sorted.
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// `args` in `root` as the app's uid, with the environment injection gives
/// an app container (the socket) and nothing else.
fn in_root(root: &Path, args: &[&str]) -> Output {
    Command::new(chroot_bin())
        .arg(format!("--userspec={APP_UID}:{APP_UID}"))
        .arg(root)
        .args(args)
        .env_clear()
        .env("SECRET_BROKER_SOCKET", SOCKET)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn static_broker_and_run_work_in_empty_roots_and_the_dynamic_binary_cannot() {
    let Some(bin) = static_bin() else { return };
    if !can_chroot() {
        return;
    }
    let b = image_broker(&bin);
    // A bearer token as the secret: `whoami` as the program shows whether
    // it reached the program (as `task-42`) or not (the peer uid's own
    // principal, `task-uid`).
    for path in [
        "acme/tasks/t-42/chroot/token",
        "acme/tasks/t-42/chroot/file",
    ] {
        let r = b.put(path, P, TASK_TOKEN);
        assert!(r.status == 200 || r.status == 201, "{}", r.text());
    }
    let root = app_root(&b, &bin);
    let whoami = [RUN_BINARY, "whoami"];

    // Without `run`, the program is the uid's principal.
    let out = in_root(&root, &whoami);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("principal: task-uid\n"), "{stdout}");

    // --env: `run` execs the program with the variable set.
    let env = "SECRET_BROKER_TOKEN=acme/tasks/t-42/chroot/token";
    let out = in_root(
        &root,
        &[&[RUN_BINARY, "run", "--env", env, "--"], &whoami[..]].concat(),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("principal: task-42\n"), "{stdout}");

    // The same under --watch: `run` stays as the supervisor and exits
    // with the program's code.
    let out = in_root(
        &root,
        &[
            &[RUN_BINARY, "run", "--watch", "1h", "--env", env, "--"],
            &whoami[..],
        ]
        .concat(),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("principal: task-42\n"), "{stdout}");

    // --file: written in the secrets volume, then read by the program.
    let dest = format!("{SECRETS}/token");
    let file = format!("{dest}=acme/tasks/t-42/chroot/file");
    let out = in_root(
        &root,
        &[
            &[RUN_BINARY, "run", "--file", &file, "--"],
            &whoami[..],
            &["--token-file", &dest],
        ]
        .concat(),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("principal: task-42\n"), "{stdout}");
    let written = root.join(&dest[1..]);
    assert_eq!(std::fs::read_to_string(&written).unwrap(), TASK_TOKEN);
    let md = std::fs::metadata(&written).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid()), (0o400, APP_UID));

    // A failed read: the program never starts, and the documented code.
    let out = in_root(
        &root,
        &[
            &[
                RUN_BINARY,
                "run",
                "--env",
                "X=acme/tasks/t-42/chroot/none",
                "--",
            ],
            &whoami[..],
        ]
        .concat(),
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stdout.is_empty() && stderr.contains("COMMAND was not started"));

    // Every read was the app's own, by its uid.
    let reads: Vec<_> = b
        .audit_lines()
        .into_iter()
        .filter(|l| l["action"] == "read")
        .collect();
    assert_eq!(reads.len(), 4, "{reads:?}");
    assert!(
        reads.iter().all(|l| l["principal"] == "task-uid"),
        "{reads:?}"
    );

    // The ordinary test binary (dynamically linked) in the same root: the
    // kernel finds no ELF interpreter, so chroot cannot run it (127).
    std::fs::copy(BIN, root.join(&DYNAMIC[1..])).unwrap();
    let out = in_root(&root, &[DYNAMIC, "whoami"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(127), "{stdout} {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
}
