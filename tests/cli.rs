//! The client verbs and `serve --dev` through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Broker, PLATFORM_TOKEN as P, TASK_TOKEN as T, default_principals};

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn put_get_ls_rm_whoami() {
    let b = Broker::start(&default_principals());
    let plat = [("SECRET_BROKER_TOKEN", P)];
    let task = [("SECRET_BROKER_TOKEN", T)];
    let out = ok(&b.cli(
        &[
            "put",
            "acme/tasks/t-42/db",
            "--value",
            "hunter2",
            "--label",
            "team=core",
        ],
        &plat,
        None,
    ));
    assert!(out.contains("version 1"), "{out}");
    let out = ok(&b.cli(
        &["put", "acme/tasks/t-42/db", "--stdin"],
        &plat,
        Some(b"line1\nline2\n"),
    ));
    assert!(out.contains("version 2"));
    let f = b.dir.path().join("bin.dat");
    std::fs::write(&f, [0u8, 159, 146, 150]).unwrap();
    ok(&b.cli(
        &[
            "put",
            "acme/tasks/t-42/bin",
            "--from-file",
            f.to_str().unwrap(),
            "--label",
            "team=core",
        ],
        &plat,
        None,
    ));

    // get prints exact bytes to a pipe.
    assert_eq!(
        b.cli(&["get", "acme/tasks/t-42/db"], &task, None).stdout,
        b"line1\nline2\n"
    );
    assert_eq!(
        b.cli(&["get", "acme/tasks/t-42/bin"], &task, None).stdout,
        [0u8, 159, 146, 150]
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&b.cli(
        &["get", "--json", "acme/tasks/t-42/db"],
        &task,
        None,
    )))
    .unwrap();
    assert_eq!(json["version"], 2);

    // The platform cannot read: non-zero exit with the contract's message.
    let out = b.cli(&["get", "acme/tasks/t-42/db"], &plat, None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("forbidden"), "{err}");
    assert!(out.stdout.is_empty());

    let out = ok(&b.cli(&["ls", "acme/tasks/t-42/"], &task, None));
    assert!(
        out.contains("acme/tasks/t-42/db\tv2") && out.contains("team=core"),
        "{out}"
    );
    // A PUT replaces the labels with its own (none here).
    assert!(
        out.lines()
            .any(|l| l.starts_with("acme/tasks/t-42/db\tv2") && l.ends_with('\t')),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&b.cli(&["ls", "--json"], &plat, None))).unwrap();
    assert_eq!(json["secrets"].as_array().unwrap().len(), 2);

    let out = ok(&b.cli(&["whoami"], &task, None));
    assert!(out.contains("task-42") && out.contains("acme/tasks/t-42"));
    let tf = b.dir.path().join("token");
    std::fs::write(&tf, format!("{P}\n")).unwrap();
    let out = ok(&b.cli(
        &["whoami", "--json", "--token-file", tf.to_str().unwrap()],
        &[],
        None,
    ));
    assert!(out.contains("\"Component\""));

    let out = b.cli(
        &["put", "acme/tasks/t-42/db", "--value", "x", "--create-only"],
        &plat,
        None,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("precondition_failed"));
    ok(&b.cli(&["rm", "acme/tasks/t-42/db"], &plat, None));
    let out = b.cli(&["get", "acme/tasks/t-42/db"], &task, None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));

    // Usage errors and an unreachable socket.
    assert_eq!(
        b.cli(&["put", "acme/x"], &plat, None).status.code(),
        Some(2)
    );
    assert_eq!(
        b.cli(&["get", "../etc/passwd"], &plat, None).status.code(),
        Some(2)
    );
    let out = b.cli(&["whoami", "--socket", "/nonexistent/s.sock"], &plat, None);
    assert_eq!(out.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the broker"));
}

#[test]
fn dev_mode_shows_the_write_only_rule() {
    let mut child = Command::new(common::BIN)
        .args(["serve", "--dev"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (mut socket, mut token) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    while (socket.is_none() || token.is_none()) && Instant::now() < deadline {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(s) = line.trim().strip_prefix("export SECRET_BROKER_SOCKET=") {
            socket = Some(s.to_owned());
        }
        if let Some(t) = line.trim().strip_prefix("export PLATFORM_TOKEN=") {
            token = Some(t.to_owned());
        }
    }
    let (socket, token) = (
        socket.expect("banner names the socket"),
        token.expect("banner prints a token"),
    );
    let run = |args: &[&str], tok: Option<&str>| {
        let mut c = Command::new(common::BIN);
        c.args(args)
            .env("SECRET_BROKER_SOCKET", &socket)
            .env_remove("SECRET_BROKER_TOKEN");
        if let Some(t) = tok {
            c.env("SECRET_BROKER_TOKEN", t);
        }
        c.output().unwrap()
    };
    assert!(
        run(&["put", "dev/db", "--value", "hunter2"], Some(&token))
            .status
            .success()
    );
    let denied = run(&["get", "dev/db"], Some(&token));
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("forbidden"));
    let read = run(&["get", "dev/db"], None);
    assert_eq!(read.stdout, b"hunter2");
    let who = String::from_utf8_lossy(&run(&["whoami"], None).stdout).into_owned();
    assert!(who.contains("Task") && who.contains("dev"));
    // SIGTERM: clean exit, temp dir removed.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(!std::path::Path::new(&socket).exists());
    assert!(
        !std::path::Path::new(&socket).parent().unwrap().exists(),
        "dev dir removed"
    );
}
