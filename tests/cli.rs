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

    // The platform cannot read: exit 4 (forbidden) with the contract's message.
    let out = b.cli(&["get", "acme/tasks/t-42/db"], &plat, None);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("forbidden"), "{err}");
    assert!(out.stdout.is_empty());

    let out = ok(&b.cli(&["ls", "acme/tasks/t-42/"], &task, None));
    assert!(
        out.contains("acme/tasks/t-42/db\tv2") && out.contains("team=core"),
        "{out}"
    );
    // A PUT replaces the labels with its own (none here), and a line
    // without labels has no labels column (no stray tab).
    let db = out
        .lines()
        .find(|l| l.starts_with("acme/tasks/t-42/db\tv2"))
        .unwrap();
    assert_eq!(db.split('\t').count(), 3, "{db:?}");
    assert!(!out.lines().any(|l| l.ends_with('\t')), "{out:?}");
    let bin = out
        .lines()
        .find(|l| l.starts_with("acme/tasks/t-42/bin\t"))
        .unwrap();
    assert!(bin.ends_with("\tteam=core"), "{bin:?}");
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
        .env("PATH", "/usr/bin:/bin")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (mut socket, mut token, mut banner_cmd) = (None, None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    while banner_cmd.is_none() && Instant::now() < deadline {
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
        if line.contains("# the task reads") {
            banner_cmd = line.split_whitespace().next().map(str::to_owned);
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
    // The banner's commands work as printed: the test's PATH does not hold
    // the binary (as after `cargo run`), so they name it by its path.
    let cmd = banner_cmd.expect("the banner shows the task's read");
    assert_eq!(
        std::fs::canonicalize(&cmd).unwrap(),
        std::fs::canonicalize(common::BIN).unwrap(),
        "{cmd}"
    );
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

fn json_line(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with('\n') && text.matches('\n').count() == 1,
        "one JSON line: {text:?}"
    );
    serde_json::from_str(&text).unwrap()
}

/// Scripts tell outcomes apart by exit code alone, and `--json` gives one
/// JSON line on stdout whatever happened (the API's error envelope on
/// failure).
#[test]
fn exit_codes_and_json_for_scripts() {
    let b = Broker::start(&default_principals());
    let plat = [("SECRET_BROKER_TOKEN", P)];
    let task = [("SECRET_BROKER_TOKEN", T)];
    let wrong = [("SECRET_BROKER_TOKEN", "CANARY-not-a-token")];

    // Success: every --json output is one line ending in a newline.
    let v = json_line(&b.cli(
        &["put", "--json", "acme/tasks/t-42/db", "--value", "v1"],
        &plat,
        None,
    ));
    assert_eq!(
        (v["path"].as_str(), v["version"].as_u64()),
        (Some("acme/tasks/t-42/db"), Some(1))
    );
    let v = json_line(&b.cli(&["get", "--json", "acme/tasks/t-42/db"], &task, None));
    assert_eq!(v["value"], "v1");
    let v = json_line(&b.cli(&["ls", "--json", "acme/tasks/t-42/"], &task, None));
    assert_eq!(v["secrets"][0]["path"], "acme/tasks/t-42/db");
    let v = json_line(&b.cli(&["whoami", "--json"], &task, None));
    assert_eq!(v["principal"], "task-42");
    let out = b.cli(&["health", "--json"], &[], None);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json_line(&out), serde_json::json!({"status": "ready"}));
    assert_eq!(ok(&b.cli(&["health"], &[], None)), "ready\n");

    // Failures: a distinct exit code each, the envelope on stdout, the
    // prose on stderr.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32, &'a str);
    let cases: [Case<'_>; 5] = [
        (&["whoami", "--json"], &wrong, 3, "unauthenticated"),
        (
            &["get", "--json", "acme/tasks/t-42/db"],
            &plat,
            4,
            "forbidden",
        ),
        (
            &["get", "--json", "acme/tasks/t-42/nope"],
            &task,
            5,
            "not_found",
        ),
        (
            &["rm", "--json", "acme/tasks/t-42/nope"],
            &plat,
            5,
            "not_found",
        ),
        (
            &[
                "put",
                "--json",
                "acme/tasks/t-42/db",
                "--value",
                "v2",
                "--create-only",
            ],
            &plat,
            6,
            "precondition_failed",
        ),
    ];
    for (args, env, code, error) in cases {
        let out = b.cli(args, env, None);
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        let v = json_line(&out);
        assert_eq!(v["error"]["code"], error, "{args:?}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(
            v["error"]["request_id"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: ") && err.contains(error), "{err}");
        // Without --json: the same exit code, nothing on stdout.
        let plain: Vec<&str> = args.iter().copied().filter(|a| *a != "--json").collect();
        let out = b.cli(&plain, env, None);
        assert_eq!(out.status.code(), Some(code), "{plain:?}");
        assert!(out.stdout.is_empty());
    }
    // A 401 says what the broker saw; never the token.
    let out = b.cli(&["whoami", "--json"], &wrong, None);
    let msg = json_line(&out)["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        msg.contains("uid ") && msg.contains("and a bearer token"),
        "{msg}"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("CANARY"));

    // Failures before any request: the CLI's own codes, same envelope.
    let out = b.cli(
        &["whoami", "--json", "--socket", "/nonexistent/s.sock"],
        &task,
        None,
    );
    assert_eq!(out.status.code(), Some(69));
    let v = json_line(&out);
    assert_eq!(v["error"]["code"], "unreachable");
    assert!(v["error"]["request_id"].is_null());
    let out = b.cli(&["get", "--json", "../etc/passwd"], &task, None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json_line(&out)["error"]["code"], "usage");

    // The secret was never changed by any of it.
    assert_eq!(
        b.cli(&["get", "acme/tasks/t-42/db"], &task, None).stdout,
        b"v1"
    );
}

/// An empty value is refused before anything is sent, whatever its source.
#[test]
fn put_refuses_an_empty_value_before_sending() {
    let b = Broker::start(&default_principals());
    let plat = [("SECRET_BROKER_TOKEN", P)];
    ok(&b.cli(
        &["put", "acme/tasks/t-42/db", "--value", "kept"],
        &plat,
        None,
    ));
    let empty = b.dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let before = b.audit_text().lines().count();
    for (args, stdin, source) in [
        (
            vec!["put", "acme/tasks/t-42/db", "--stdin"],
            Some(&b""[..]),
            "standard input",
        ),
        (
            vec!["put", "acme/tasks/t-42/db", "--stdin"],
            None,
            "standard input",
        ),
        (
            vec![
                "put",
                "acme/tasks/t-42/db",
                "--from-file",
                empty.to_str().unwrap(),
            ],
            None,
            "the file",
        ),
        (
            vec!["put", "acme/tasks/t-42/db", "--value", ""],
            None,
            "`--value`",
        ),
    ] {
        let out = b.cli(&args, &plat, stdin);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("the value from {source}"))
                && err.contains("is empty")
                && err.contains("nothing was sent"),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
    // Nothing reached the broker.
    assert_eq!(b.audit_text().lines().count(), before);
    assert_eq!(
        b.cli(
            &["get", "acme/tasks/t-42/db"],
            &[("SECRET_BROKER_TOKEN", T)],
            None
        )
        .stdout,
        b"kept"
    );
}

/// `$SECRET_BROKER_TOKEN` is the token, `$SECRET_BROKER_TOKEN_FILE` (or
/// `--token-file`) a file holding it; a token that looks like a path gets a
/// hint with its 401.
#[test]
fn token_variables_say_what_they_hold() {
    let b = Broker::start(&default_principals());
    let tf = b.dir.path().join("platform-token");
    std::fs::write(&tf, format!("{P}\n")).unwrap();
    let tf = tf.to_str().unwrap();
    let who = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["whoami", "--json"];
        args.extend_from_slice(extra);
        b.cli(&args, env, None)
    };
    let v = json_line(&who(&[("SECRET_BROKER_TOKEN_FILE", tf)], &[]));
    assert_eq!(v["principal"], "provisioner");
    let v = json_line(&who(&[("SECRET_BROKER_TOKEN", T)], &[]));
    assert_eq!(v["principal"], "task-42");
    // --token-file wins over both variables.
    let v = json_line(&who(
        &[
            ("SECRET_BROKER_TOKEN", T),
            ("SECRET_BROKER_TOKEN_FILE", "/nonexistent"),
        ],
        &["--token-file", tf],
    ));
    assert_eq!(v["principal"], "provisioner");
    // Both variables: which one was meant? Refused, naming both.
    let out = who(
        &[("SECRET_BROKER_TOKEN", T), ("SECRET_BROKER_TOKEN_FILE", tf)],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("$SECRET_BROKER_TOKEN") && err.contains("$SECRET_BROKER_TOKEN_FILE"),
        "{err}"
    );
    // A path in $SECRET_BROKER_TOKEN: sent as a token (401), with a hint.
    let out = who(&[("SECRET_BROKER_TOKEN", tf)], &[]);
    assert_eq!(out.status.code(), Some(3));
    let v = json_line(&out);
    assert!(
        v["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("SECRET_BROKER_TOKEN_FILE")
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hint:") && err.contains("looks like a file path"),
        "{err}"
    );
    // A token that does not look like a path gets no hint.
    let out = who(&[("SECRET_BROKER_TOKEN", "not-a-path-token")], &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(json_line(&out)["error"].get("hint").is_none());
    // An empty token file is an error, not an anonymous request.
    let empty = b.dir.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let out = who(
        &[("SECRET_BROKER_TOKEN_FILE", empty.to_str().unwrap())],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    // The help says what each holds.
    let help = ok(&b.cli(&["get", "--help"], &[], None));
    assert!(
        help.contains("$SECRET_BROKER_TOKEN_FILE") && help.contains("$SECRET_BROKER_TOKEN itself"),
        "{help}"
    );
}

/// `ls` without a scope: a task lists its own scope (the one it may
/// list), a component everything.
#[test]
fn ls_without_a_scope_lists_a_tasks_own_scope() {
    let b = Broker::start(&default_principals());
    let plat = [("SECRET_BROKER_TOKEN", P)];
    for p in ["acme/tasks/t-42/db", "acme/tasks/t-43/db"] {
        ok(&b.cli(&["put", p, "--value", "x"], &plat, None));
    }
    let out = ok(&b.cli(&["ls"], &[("SECRET_BROKER_TOKEN", T)], None));
    assert!(
        out.starts_with("acme/tasks/t-42/db\tv1\t") && out.lines().count() == 1,
        "{out}"
    );
    let out = ok(&b.cli(&["ls"], &plat, None));
    assert_eq!(out.lines().count(), 2, "{out}");
}

/// A socket the caller may not open: the error names the group it lacks,
/// not "is it running?".
#[test]
fn permission_denied_on_the_socket_names_the_group() {
    if !common::is_root() {
        eprintln!("SKIP permission_denied_on_the_socket_names_the_group: needs root");
        return;
    }
    use std::os::unix::process::CommandExt as _;
    let b = Broker::start(&default_principals());
    std::os::unix::fs::chown(&b.socket, None, Some(3100)).unwrap();
    std::fs::set_permissions(
        &b.socket,
        std::os::unix::fs::PermissionsExt::from_mode(0o660),
    )
    .unwrap();
    let run = |uid: u32, gid: u32| {
        Command::new(common::BIN)
            .args(["whoami", "--socket"])
            .arg(&b.socket)
            .env_remove("SECRET_BROKER_TOKEN")
            .env_remove("SECRET_BROKER_TOKEN_FILE")
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap()
    };
    let out = run(3999, 3999);
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("permission denied")
            && err.contains("gid 3100")
            && err.contains("uid 3999")
            && err.contains("not in it"),
        "{err}"
    );
    assert!(!err.contains("is it running"), "{err}");
    // A member of the group gets through (and is then judged by the broker).
    let out = run(3999, 3100);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Completion scripts for bash, zsh and fish and the man page come from the
/// parser's own definitions: every verb is in them; a bad shell is usage.
#[test]
fn completions_and_man_page() {
    let run = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .args(args)
            .output()
            .unwrap()
    };
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef secret-broker"),
        ("fish", "complete -c secret-broker"),
    ] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(marker), "{shell}: {text}");
        for verb in ["serve", "put", "get", "policy", "inject"] {
            assert!(text.contains(verb), "{shell} lacks {verb}");
        }
    }
    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["man"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(".ie") || text.contains(".TH secret-broker 1"),
        "{text}"
    );
    for page in [
        "secret-broker-serve",
        "secret-broker-put",
        "secret-broker-policy",
    ] {
        assert!(text.contains(&format!(".TH {page} 1")), "no page {page}");
    }
}
