//! `secret-broker run` end to end: the real binary against a real broker.
//! COMMAND is `sh`; a marker file shows whether it ever started.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{BIN, Broker, PLATFORM_TOKEN as P, TASK_TOKEN as T, default_principals};

const CANARY: &str = "canary-run-5b1e";

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn put(b: &Broker, path: &str, value: &[u8]) {
    let r = b.put_json(
        path,
        P,
        &serde_json::json!({ "value_base64": b64(value) }),
        &[],
    );
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
}

/// `run` as the task (bearer token) with `args`, then `--`, then `sh -c script`.
fn run(b: &Broker, args: &[&str], script: &str) -> Output {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", "sh", "-c", script]);
    b.cli(
        &all,
        &[("SECRET_BROKER_TOKEN", T), ("RUST_LOG", "trace")],
        None,
    )
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts `run` failed with `code` before COMMAND started, and returns stderr.
fn refused(out: &Output, code: i32, marker: &Path) -> String {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout {stdout} stderr {stderr}"
    );
    assert!(!marker.exists(), "COMMAND started: {stderr}");
    assert!(stderr.contains("COMMAND was not started"), "{stderr}");
    assert!(
        !stderr.contains(CANARY) && !stdout.contains(CANARY),
        "{stderr}"
    );
    stderr
}

#[test]
fn env_env_from_and_files_reach_command() {
    let b = Broker::start(&default_principals());
    put(
        &b,
        "acme/tasks/t-42/app/db/pass",
        format!("{CANARY}-db").as_bytes(),
    );
    put(
        &b,
        "acme/tasks/t-42/app/api.key",
        format!("{CANARY}-api").as_bytes(),
    );
    put(
        &b,
        "acme/tasks/t-42/files/cert",
        b"\x00\x01\xfe\xffbinary\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("cert.der");
    let dest2 = dir.path().join("pass.txt");
    let out = run(
        &b,
        &[
            "--env",
            "EXPLICIT=acme/tasks/t-42/app/db/pass",
            "--env-from",
            "acme/tasks/t-42/app/db/",
            "--env-from",
            "acme/tasks/t-42/app",
            "--file",
            &format!("{}=acme/tasks/t-42/files/cert", dest.display()),
            "--file",
            &format!("{}=acme/tasks/t-42/app/db/pass:0440", dest2.display()),
        ],
        "printf '%s|%s|%s|%s' \"$EXPLICIT\" \"$PASS\" \"$DB_PASS\" \"$API_KEY\"",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout,
        format!("{CANARY}-db|{CANARY}-db|{CANARY}-db|{CANARY}-api")
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"\x00\x01\xfe\xffbinary\n");
    let md = std::fs::metadata(&dest).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o400);
    assert_eq!(md.uid(), rustix::process::geteuid().as_raw());
    assert_eq!(std::fs::metadata(&dest2).unwrap().mode() & 0o7777, 0o440);
    assert_eq!(
        std::fs::read_to_string(&dest2).unwrap(),
        format!("{CANARY}-db")
    );
    // No temp file left in DEST's directory.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // Leak: no value in run's output, the broker's log or the audit.
    assert!(!stderr.contains(CANARY), "{stderr}");
    assert!(!b.stderr_text().contains(CANARY));
    assert!(!b.audit_text().contains(CANARY));
    // Every read was audited as the task.
    let reads: Vec<_> = b
        .audit_lines()
        .into_iter()
        .filter(|l| l["action"] == "read")
        .collect();
    assert!(reads.len() >= 3, "{reads:?}");
    assert!(
        reads.iter().all(|l| l["principal"] == "task-42"),
        "{reads:?}"
    );
}

#[test]
fn binary_values_cannot_be_variables() {
    let b = Broker::start(&default_principals());
    put(
        &b,
        "acme/tasks/t-42/bin",
        format!("{CANARY}\u{0}x").as_bytes(),
    );
    put(&b, "acme/tasks/t-42/latin1", b"canary-run-5b1e\xe9");
    let marker = tempfile::tempdir().unwrap().keep().join("started");
    let script = format!("touch {}", marker.display());
    for (path, why) in [
        ("acme/tasks/t-42/bin", "NUL"),
        ("acme/tasks/t-42/latin1", "UTF-8"),
    ] {
        let out = run(&b, &["--env", &format!("X={path}")], &script);
        let err = refused(&out, 65, &marker);
        assert!(
            err.contains(path) && err.contains("`X`") && err.contains(why),
            "{err}"
        );
    }
    // The same through --env-from, naming the mapped variable.
    let out = run(&b, &["--env-from", "acme/tasks/t-42/"], &script);
    let err = refused(&out, 65, &marker);
    assert!(err.contains("`BIN`") || err.contains("`LATIN1`"), "{err}");
}

#[test]
fn collisions_name_both_paths_and_env_wins() {
    let b = Broker::start(&default_principals());
    put(&b, "acme/tasks/t-42/db-pass", b"canary-run-5b1e-a");
    put(&b, "acme/tasks/t-42/db.pass", b"canary-run-5b1e-b");
    let marker = tempfile::tempdir().unwrap().keep().join("started");
    let script = format!("touch {}; printf %s \"$DB_PASS\"", marker.display());
    let out = run(&b, &["--env-from", "acme/tasks/t-42/"], &script);
    let err = refused(&out, 65, &marker);
    assert!(
        err.contains("acme/tasks/t-42/db-pass") && err.contains("acme/tasks/t-42/db.pass"),
        "{err}"
    );
    let out = run(
        &b,
        &[
            "--env-from",
            "acme/tasks/t-42/",
            "--env",
            "DB_PASS=acme/tasks/t-42/db.pass",
        ],
        &script,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "canary-run-5b1e-b");
}

#[test]
fn failed_reads_never_start_command() {
    let b = Broker::start(&default_principals());
    put(&b, "acme/tasks/t-43/other", b"canary-run-5b1e");
    put(&b, "acme/tasks/t-42/ok", b"canary-run-5b1e");
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("started");
    let script = format!("touch {}", marker.display());
    // 404
    let out = run(&b, &["--env", "X=acme/tasks/t-42/missing"], &script);
    let err = refused(&out, 5, &marker);
    assert!(
        err.contains("acme/tasks/t-42/missing") && err.contains("not_found"),
        "{err}"
    );
    // 403, also for a listing
    let out = run(&b, &["--env", "X=acme/tasks/t-43/other"], &script);
    let err = refused(&out, 4, &marker);
    assert!(
        err.contains("acme/tasks/t-43/other") && err.contains("forbidden"),
        "{err}"
    );
    let out = run(&b, &["--env-from", "acme/tasks/t-43/"], &script);
    let err = refused(&out, 4, &marker);
    assert!(err.contains("forbidden"), "{err}");
    // 401: no token, and this uid is nobody's (unless it is 2000/2001).
    let uid = rustix::process::geteuid().as_raw();
    if uid != 2000 && uid != 2001 {
        let out = b.cli(
            &[
                "run",
                "--env",
                "X=acme/tasks/t-42/ok",
                "--",
                "sh",
                "-c",
                &script,
            ],
            &[],
            None,
        );
        let err = refused(&out, 3, &marker);
        assert!(err.contains("unauthenticated"), "{err}");
    }
    // One bad read among good ones is enough.
    let dest = tmp.path().join("f");
    let out = run(
        &b,
        &[
            "--file",
            &format!("{}=acme/tasks/t-42/ok", dest.display()),
            "--env",
            "X=acme/tasks/t-42/missing",
        ],
        &script,
    );
    refused(&out, 5, &marker);
    assert!(!dest.exists(), "a file was written although a read failed");
    // Unreachable broker: 69.
    let out = Command::new(BIN)
        .args(["run", "--socket"])
        .arg(tmp.path().join("no.sock"))
        .args(["--env", "X=acme/tasks/t-42/ok", "--", "sh", "-c", &script])
        .env_remove("SECRET_BROKER_TOKEN")
        .output()
        .unwrap();
    let err = refused(&out, 69, &marker);
    assert!(err.contains("unreachable"), "{err}");
    // DEST's directory missing: 74, before any read.
    let out = run(
        &b,
        &[
            "--file",
            &format!("{}/nodir/f=acme/tasks/t-42/ok", tmp.path().display()),
        ],
        &script,
    );
    let err = refused(&out, 74, &marker);
    assert!(err.contains("nodir"), "{err}");
    // Bad flags: 2.
    let out = run(&b, &["--env", "1BAD=acme/tasks/t-42/ok"], &script);
    refused(&out, 2, &marker);
    // Nothing leaked anywhere.
    assert!(!b.stderr_text().contains(CANARY));
    assert!(!b.audit_text().contains(CANARY));
}

#[test]
fn exec_keeps_the_pid_and_the_exit_code() {
    let b = Broker::start(&default_principals());
    put(&b, "acme/tasks/t-42/v", b"x");
    let child = Command::new(BIN)
        .args([
            "run",
            "--env",
            "V=acme/tasks/t-42/v",
            "--",
            "sh",
            "-c",
            "echo $$; exit 3",
        ])
        .env("SECRET_BROKER_SOCKET", &b.socket)
        .env("SECRET_BROKER_TOKEN", T)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pid.to_string());
    // Killed by a signal: the status is the signal's, as for COMMAND itself.
    let out = run(&b, &["--env", "V=acme/tasks/t-42/v"], "kill -TERM $$");
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(out.status.signal(), Some(15));
    // COMMAND not found: 127.
    let out = b.cli(
        &[
            "run",
            "--env",
            "V=acme/tasks/t-42/v",
            "--",
            "/nonexistent/cmd",
        ],
        &[("SECRET_BROKER_TOKEN", T)],
        None,
    );
    assert_eq!(out.status.code(), Some(127));
}

#[test]
fn a_concurrent_reader_never_sees_a_partial_file() {
    let b = Broker::start(&default_principals());
    let n = 60_000;
    put(&b, "acme/tasks/t-42/a", &vec![b'a'; n]);
    put(&b, "acme/tasks/t-42/b", &vec![b'b'; n]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    std::fs::write(&dest, vec![b'a'; n]).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (dest, stop) = (dest.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let got = std::fs::read(&dest).unwrap();
                assert_eq!(got.len(), n, "a partial file was seen");
                assert!(got.iter().all(|&c| c == got[0]), "a mixed file was seen");
                seen += 1;
            }
            seen
        })
    };
    for i in 0..20 {
        let which = if i % 2 == 0 { "b" } else { "a" };
        let out = run(
            &b,
            &[
                "--file",
                &format!("{}=acme/tasks/t-42/{which}:0644", dest.display()),
            ],
            "true",
        );
        assert!(out.status.success(), "{}", text(&out).1);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_task_by_uid_reads_its_scope_and_owns_its_files() {
    if !common::is_root() {
        eprintln!("skipped: needs root to run as uid 2000");
        return;
    }
    use std::os::unix::process::CommandExt as _;
    let b = Broker::start(&default_principals());
    put(&b, "acme/tasks/t-42/v", format!("{CANARY}-uid").as_bytes());
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(2000), Some(2000)).unwrap();
    let dest = dir.path().join("v");
    let out = Command::new(BIN)
        .args(["run", "--env", "V=acme/tasks/t-42/v", "--file"])
        .arg(format!("{}=acme/tasks/t-42/v", dest.display()))
        .args(["--", "sh", "-c", "printf %s \"$V\""])
        .env("SECRET_BROKER_SOCKET", &b.socket)
        .env_remove("SECRET_BROKER_TOKEN")
        .uid(2000)
        .gid(2000)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, format!("{CANARY}-uid"));
    let md = std::fs::metadata(&dest).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (2000, 2000, 0o400)
    );
    let reads: Vec<_> = b
        .audit_lines()
        .into_iter()
        .filter(|l| l["action"] == "read")
        .collect();
    assert!(
        reads.iter().all(|l| l["principal"] == "task-uid"),
        "{reads:?}"
    );
}

/// Polls `cond` until it holds; panics with `what` after a generous bound
/// (a hang guard, not a timing assertion).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if cond() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("gave up waiting: {what}");
}

/// `run --watch` in the background as the task, its stderr in `err`.
fn spawn_watch(b: &Broker, args: &[&str], script: &str, err: &Path) -> std::process::Child {
    Command::new(BIN)
        .arg("run")
        .args(args)
        .args(["--", "sh", "-c", script])
        .env("SECRET_BROKER_SOCKET", &b.socket)
        .env("SECRET_BROKER_TOKEN", T)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(err).unwrap())
        .spawn()
        .unwrap()
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn kill(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn watch_restarts_on_rotation_and_exits_143_on_term() {
    let b = Broker::start(&default_principals());
    put(&b, "acme/tasks/t-42/v", b"canary-run-5b1e-v1");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let err = dir.path().join("err");
    let script = format!(
        "printf '%s\\n' \"$V\" >> {}; exec sleep 1000",
        log.display()
    );
    let mut child = spawn_watch(
        &b,
        &[
            "--watch",
            "100ms",
            "--env",
            "V=acme/tasks/t-42/v",
            "--stop-timeout",
            "5s",
        ],
        &script,
        &err,
    );
    wait_for("first start", || lines(&log).len() == 1);
    put(&b, "acme/tasks/t-42/v", b"canary-run-5b1e-v2");
    wait_for("restart", || lines(&log).len() == 2);
    assert_eq!(lines(&log), ["canary-run-5b1e-v1", "canary-run-5b1e-v2"]);
    kill(child.id(), "TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(!std::fs::read_to_string(&err).unwrap().contains(CANARY));
    // The re-reads asked past the cache and were audited as the task.
    assert!(
        b.audit_lines()
            .iter()
            .filter(|l| l["action"] == "read")
            .all(|l| l["principal"] == "task-42")
    );
}

#[test]
fn watch_rewrites_the_file_before_signalling() {
    let b = Broker::start(&default_principals());
    put(&b, "acme/tasks/t-42/conf", b"v1");
    let dir = tempfile::tempdir().unwrap();
    let (dest, log, ready, err) = (
        dir.path().join("conf"),
        dir.path().join("log"),
        dir.path().join("ready"),
        dir.path().join("err"),
    );
    // On HUP, COMMAND records what the file holds at that moment.
    let script = format!(
        "trap 'cat {dest} >> {log}; echo >> {log}' HUP; touch {ready}; while :; do sleep 0.05; done",
        dest = dest.display(),
        log = log.display(),
        ready = ready.display()
    );
    let mut child = spawn_watch(
        &b,
        &[
            "--watch",
            "100ms",
            "--on-change",
            "signal:HUP",
            "--file",
            &format!("{}=acme/tasks/t-42/conf:0600", dest.display()),
        ],
        &script,
        &err,
    );
    wait_for("COMMAND ready", || ready.exists());
    put(&b, "acme/tasks/t-42/conf", b"v2");
    wait_for("HUP handled", || !lines(&log).is_empty());
    assert_eq!(lines(&log)[0], "v2");
    assert_eq!(std::fs::read(&dest).unwrap(), b"v2");
    // Still the same COMMAND (signalled, not restarted); TERM ends it.
    kill(child.id(), "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(143));
}

#[test]
fn watch_forwards_signals_to_grandchildren_and_keeps_exit_codes() {
    let b = Broker::start(&default_principals());
    put(&b, "acme/tasks/t-42/v", b"x");
    let dir = tempfile::tempdir().unwrap();
    let (ready, got, err) = (
        dir.path().join("ready"),
        dir.path().join("got"),
        dir.path().join("err"),
    );
    // The grandchild traps USR1; the child (sh, which only notes USR1:
    // an ignored signal could not be trapped by its children) waits for
    // it and exits 3.
    let script = format!(
        "sh -c 'trap \"echo usr1 > {got}; exit 0\" USR1; touch {ready}; while :; do sleep 0.05; done' & \
         wait; wait; exit 3",
        got = got.display(),
        ready = ready.display()
    );
    let mut child = spawn_watch(
        &b,
        &["--watch", "1h", "--env", "V=acme/tasks/t-42/v"],
        &format!("trap : USR1; {script}"),
        &err,
    );
    wait_for("grandchild ready", || ready.exists());
    kill(child.id(), "USR1");
    wait_for("grandchild got USR1", || got.exists());
    assert_eq!(child.wait().unwrap().code(), Some(3));
}

#[test]
fn watch_keeps_command_running_while_the_broker_is_down() {
    let mut b = Broker::start(&default_principals());
    put(&b, "acme/tasks/t-42/v", b"canary-run-5b1e-v1");
    let dir = tempfile::tempdir().unwrap();
    let (log, err) = (dir.path().join("log"), dir.path().join("err"));
    let script = format!(
        "printf '%s\\n' \"$V\" >> {}; exec sleep 1000",
        log.display()
    );
    let mut child = spawn_watch(
        &b,
        &["--watch", "100ms", "--env", "V=acme/tasks/t-42/v"],
        &script,
        &err,
    );
    wait_for("first start", || lines(&log).len() == 1);
    b.kill9();
    wait_for("a failed re-read reported", || {
        std::fs::read_to_string(&err)
            .unwrap_or_default()
            .contains("keeps running")
    });
    assert!(child.try_wait().unwrap().is_none(), "run exited");
    assert_eq!(lines(&log).len(), 1, "COMMAND was restarted");
    b.spawn();
    put(&b, "acme/tasks/t-42/v", b"canary-run-5b1e-v2");
    wait_for("restart after recovery", || lines(&log).len() == 2);
    assert_eq!(lines(&log)[1], "canary-run-5b1e-v2");
    kill(child.id(), "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(143));
    let e = std::fs::read_to_string(&err).unwrap();
    assert!(e.contains("unreachable") && !e.contains(CANARY), "{e}");
}

#[test]
fn watch_as_pid_1_reaps_orphans() {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot make a PID namespace here");
        return;
    }
    let b = Broker::start(&default_principals());
    put(&b, "acme/tasks/t-42/v", b"x");
    // Orphans (double-forked) re-parent to PID 1, `run`. COMMAND counts
    // zombies until there are none (bounded), and prints the count.
    let script = "for i in 1 2 3 4 5; do (sh -c 'exit 0' &); done; \
                  n=0; while [ $n -lt 500 ]; do \
                    z=$(grep -l '^[0-9]* ([^)]*) Z' /proc/[0-9]*/stat 2>/dev/null | wc -l); \
                    [ \"$z\" -eq 0 ] && break; n=$((n+1)); sleep 0.02; done; \
                  echo \"zombies=$z pid1=$(cat /proc/1/comm)\"";
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(BIN)
        .args(["run", "--watch", "1h", "--env", "V=acme/tasks/t-42/v", "--"])
        .args(["sh", "-c", script])
        .env("SECRET_BROKER_SOCKET", &b.socket)
        .env("SECRET_BROKER_TOKEN", T)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "zombies=0 pid1=secret-broker", "{stdout}");
}

#[test]
fn no_cache_reads_reach_the_store() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b = Broker::start(&format!(
        "{}\n[metrics]\naddr = \"127.0.0.1:{port}\"\n[cache]\nttl = \"1h\"\n",
        default_principals()
    ));
    put(&b, "acme/tasks/t-42/v", b"x");
    let store_gets = || {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: m\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let series = "secret_broker_store_call_duration_seconds_count{op=\"get\"} ";
        out.lines()
            .find_map(|l| l.strip_prefix(series))
            .map(|v| v.trim().parse::<u64>().unwrap())
            .unwrap_or(0)
    };
    let auth = format!("Bearer {T}");
    let get = |extra: &[(&str, &str)]| {
        let mut h = vec![("authorization", auth.as_str())];
        h.extend_from_slice(extra);
        let r = b
            .try_request("GET", "/v1/secrets/acme/tasks/t-42/v", &h, None)
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    };
    get(&[]);
    let after_first = store_gets();
    get(&[]);
    assert_eq!(store_gets(), after_first, "a cached read went to the store");
    get(&[("cache-control", "no-cache")]);
    assert_eq!(store_gets(), after_first + 1);
    get(&[("Cache-Control", "max-age=0, No-Cache")]);
    assert_eq!(store_gets(), after_first + 2);
    // Still authorized: a forbidden path is 403 with or without it.
    let r = b
        .try_request(
            "GET",
            "/v1/secrets/acme/tasks/t-43/v",
            &[
                ("authorization", auth.as_str()),
                ("cache-control", "no-cache"),
            ],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 403);
    let reads = b
        .audit_lines()
        .into_iter()
        .filter(|l| l["action"] == "read")
        .count();
    assert_eq!(reads, 5);
}

#[test]
fn templates_render_secrets_and_cannot_escape() {
    let b = Broker::start(&default_principals());
    put(&b, "acme/tasks/t-42/db/user", b"app");
    put(
        &b,
        "acme/tasks/t-42/db/pass",
        format!("{CANARY}'\"x").as_bytes(),
    );
    let dir = tempfile::tempdir().unwrap();
    let tmpl = dir.path().join("db.conf.tmpl");
    let dest = dir.path().join("db.conf");
    std::fs::write(
        &tmpl,
        "user={{ secret(\"acme/tasks/t-42/db/user\") }}\n\
         json={{ secret(\"acme/tasks/t-42/db/pass\") | json }}\n\
         sh={{ secret(\"acme/tasks/t-42/db/pass\") | shell_quote }}\n\
         b64={{ secret(\"acme/tasks/t-42/db/user\") | b64encode }}\n",
    )
    .unwrap();
    let out = run(
        &b,
        &[
            "--template",
            &format!("{}={}:0440", tmpl.display(), dest.display()),
        ],
        &format!("cat {}", dest.display()),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout,
        format!("user=app\njson=\"{CANARY}'\\\"x\"\nsh='{CANARY}'\\''\"x'\nb64=YXBw\n")
    );
    assert_eq!(std::fs::metadata(&dest).unwrap().mode() & 0o7777, 0o440);

    let marker = dir.path().join("started");
    let script = format!("touch {}", marker.display());
    // Private file the template tries to pull in.
    let private = dir.path().join("private.txt");
    std::fs::write(&private, format!("{CANARY}-file")).unwrap();
    for (name, source) in [
        ("include", format!("{{% include \"{}\" %}}", private.display())),
        ("extends", format!("{{% extends \"{}\" %}}", private.display())),
        ("undefined", "{{ db_pass }}".to_owned()),
        (
            "forever",
            "{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}{% endfor %}{% endfor %}"
                .to_owned(),
        ),
        ("missing", "{{ secret(\"acme/tasks/t-42/nope\") }}".to_owned()),
        ("forbidden", "{{ secret(\"acme/tasks/t-43/x\") }}".to_owned()),
        (
            "value-in-error",
            "{{ secret(\"acme/tasks/t-42/db/pass\") | int + 1 }}".to_owned(),
        ),
    ] {
        let t = dir.path().join(format!("{name}.tmpl"));
        std::fs::write(&t, source).unwrap();
        let out = run(
            &b,
            &["--template", &format!("{}={}/{name}.out", t.display(), dir.path().display())],
            &script,
        );
        let want = match name {
            "missing" => 5,
            "forbidden" => 4,
            _ => 65,
        };
        let err = refused(&out, want, &marker);
        assert!(err.contains(&format!("{name}.tmpl")) || want < 65, "{name}: {err}");
        assert!(!dir.path().join(format!("{name}.out")).exists(), "{name}");
    }
    // A missing template source: 74.
    let out = run(
        &b,
        &[
            "--template",
            &format!(
                "{}/absent.tmpl={}/x",
                dir.path().display(),
                dir.path().display()
            ),
        ],
        &script,
    );
    refused(&out, 74, &marker);
    assert!(!b.stderr_text().contains(CANARY));
    assert!(!b.audit_text().contains(CANARY));
}

/// `sh -c inner` under `script`, which gives it a pseudo-terminal (as its
/// session's foreground job) fed from the returned child's stdin, as the
/// task of `b`.
fn in_a_terminal(b: &Broker, inner: &str) -> std::process::Child {
    Command::new("script")
        .args(["-qec", inner, "/dev/null"])
        .env("SECRET_BROKER_SOCKET", &b.socket)
        .env("SECRET_BROKER_TOKEN", T)
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// On a terminal, `run --watch` hands COMMAND (in its own process group)
/// the foreground, so COMMAND can read the terminal: a background group
/// that reads it is stopped by `SIGTTIN`, which would hang here. `script`
/// gives `run` a pseudo-terminal with `run` as its foreground job.
#[test]
fn watch_on_a_terminal_gives_command_the_foreground() {
    use std::io::{Read as _, Write as _};
    let b = Broker::start(&default_principals());
    put(&b, "acme/tasks/t-42/v", b"canary-run-5b1e");
    let inner = format!(
        "exec {BIN} run --watch 1h --env V=acme/tasks/t-42/v -- sh -c 'read line; echo \"got:$line\"'"
    );
    let mut child = in_a_terminal(&b, &inner);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    // Hang guard (not a timing assertion): a stopped COMMAND never ends.
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let guard = std::thread::spawn(move || {
        if done_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .is_err()
        {
            let _ = Command::new("pkill")
                .args(["-KILL", "-s", &pid.to_string()])
                .status();
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    let _ = done_tx.send(());
    guard.join().unwrap();
    assert!(
        out.contains("got:hello"),
        "COMMAND could not read the terminal: {out:?}"
    );
    assert_eq!(status.code(), Some(0), "{out:?}");
}

/// `Ctrl-Z` on the terminal stops COMMAND; `run` then takes the terminal
/// back and stops too (so a shell sees its job stopped), and when it is
/// continued (`fg`) it gives COMMAND the terminal again and continues it.
/// `script` itself stops when its child (`run`) stops and continues it
/// when continued, as a shell's `fg` would.
#[test]
fn watch_on_a_terminal_follows_job_control() {
    use std::io::{Read as _, Write as _};
    let b = Broker::start(&default_principals());
    put(&b, "acme/tasks/t-42/v", b"canary-run-5b1e");
    let inner = format!(
        "exec {BIN} run --watch 1h --env V=acme/tasks/t-42/v -- sh -c 'read a; echo \"first:$a\"; read b; echo \"second:$b\"'"
    );
    let mut child = in_a_terminal(&b, &inner);
    let script_pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let guard = std::thread::spawn(move || {
        if done_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .is_err()
        {
            let _ = Command::new("pkill")
                .args(["-KILL", "-s", &script_pid.to_string()])
                .status();
        }
    });
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let state = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.chars().next()))
            .flatten()
    };
    let children = |pid: u32| -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"one\n").unwrap();
    // `run` is the child of `script`, COMMAND (`sh`) the child of `run`.
    let mut run_pid = 0;
    wait_for("run and COMMAND to start", || {
        run_pid = children(script_pid).first().copied().unwrap_or(0);
        run_pid != 0 && !children(run_pid).is_empty()
    });
    let command_pid = children(run_pid)[0];
    stdin.write_all(&[0x1a]).unwrap(); // Ctrl-Z
    wait_for("COMMAND and run stopped", || {
        state(command_pid) == Some('T') && state(run_pid) == Some('T')
    });
    kill(script_pid, "CONT"); // `fg`: script continues `run`
    stdin.write_all(b"two\n").unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    let _ = done_tx.send(());
    guard.join().unwrap();
    let out = reader.join().unwrap();
    assert!(out.contains("first:one"), "{out:?}");
    assert!(out.contains("second:two"), "{out:?}");
    assert_eq!(status.code(), Some(0), "{out:?}");
}
