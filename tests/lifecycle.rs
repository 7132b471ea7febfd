//! Process lifecycle against the real binary: socket creation and cleanup,
//! signals (drain, reload), crash safety under `kill -9`, and the store file
//! never holding a plaintext value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use common::{Broker, PLATFORM_TOKEN as P, TASK_TOKEN as T, default_principals};

/// Runs `serve --config config` to its end: for starts that must fail.
fn serve_once(config: impl AsRef<std::path::Path>) -> std::process::Output {
    std::process::Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(config.as_ref())
        .output()
        .unwrap()
}

#[test]
fn socket_mode_is_applied_and_removed_on_sigterm() {
    let mut b = Broker::start(&default_principals());
    let meta = std::fs::metadata(&b.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o666);
    b.signal("TERM");
    assert_eq!(b.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(!b.socket.exists(), "socket removed on shutdown");
}

/// A clean stop closes the embedded store's file: redb opens it again
/// without a repair (which walks the whole file: start-up time that grew
/// with the store, 0.3 s at 1M secrets). Before the fix a reference cycle
/// (metrics → read cache → store → metrics) kept the store alive to the
/// process's end, so every start after a stop repaired the file.
#[test]
fn sigterm_closes_the_store_file_cleanly() {
    let mut b = Broker::start(&default_principals());
    assert_eq!(b.put("acme/tasks/t-42/db", P, "v1").status, 201);
    assert_eq!(b.get("acme/tasks/t-42/db", T).status, 200);
    b.signal("TERM");
    assert_eq!(b.wait_exit(Duration::from_secs(15)), Some(0));
    let repaired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&repaired);
    let db = redb::Database::builder()
        .set_repair_callback(move |_| flag.store(true, std::sync::atomic::Ordering::SeqCst))
        .open(b.dir.path().join("store.redb"))
        .unwrap();
    drop(db);
    assert!(
        !repaired.load(std::sync::atomic::Ordering::SeqCst),
        "the store file was left unclosed: redb had to repair it"
    );
}

#[test]
fn default_mode_is_0660_and_group_applies() {
    let mut b = Broker::start(&default_principals());
    b.signal("INT");
    assert_eq!(b.wait_exit(Duration::from_secs(15)), Some(0));
    let text = std::fs::read_to_string(&b.config)
        .unwrap()
        .replace("mode = \"0666\"", "group = 0");
    std::fs::write(&b.config, text).unwrap();
    b.spawn();
    let mode = std::fs::metadata(&b.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
}

#[test]
fn refuses_a_live_socket_and_replaces_a_stale_one() {
    let mut b = Broker::start(&default_principals());
    // A second broker on the same config must refuse to start.
    let out = serve_once(&b.config);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already serving"));
    assert_eq!(
        b.req("GET", "/healthz", None, None).status,
        200,
        "first broker unharmed"
    );

    // After kill -9 the socket file is stale; a restart replaces it.
    b.kill9();
    assert!(b.socket.exists());
    b.spawn();
    assert_eq!(b.req("GET", "/healthz", None, None).status, 200);

    // A regular file at the socket path is never deleted.
    b.kill9();
    std::fs::remove_file(&b.socket).unwrap();
    std::fs::write(&b.socket, b"not a socket").unwrap();
    let out = serve_once(&b.config);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read(&b.socket).unwrap(), b"not a socket");
}

/// SECURITY: whoever can write the socket directory could swap the socket
/// (or a temp name) for a symlink and have the broker's chmod/chown land on
/// a file of their choice, or capture what callers send: such a directory
/// is refused, and nothing in it is touched. A stale socket of another user
/// is never removed.
#[test]
fn a_socket_directory_others_can_write_is_refused() {
    let mut b = Broker::start(&default_principals());
    b.kill9();
    let dir = b.socket.parent().unwrap().to_path_buf();
    let victim = dir.join("victim");
    std::fs::write(&victim, b"x").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    for mode in [0o777, 0o1777, 0o775] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        // A planted symlink where the socket goes.
        let _ = std::fs::remove_file(&b.socket);
        std::os::unix::fs::symlink(&victim, &b.socket).unwrap();
        let out = serve_once(&b.config);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{mode:o}: started");
        assert!(err.contains("writable by others"), "{mode:o}: {err}");
        let m = std::fs::symlink_metadata(&victim).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o600);
        assert!(std::fs::symlink_metadata(&b.socket).unwrap().is_symlink());
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(&b.socket).unwrap();
    b.spawn();
    assert_eq!(b.req("GET", "/healthz", None, None).status, 200);
    b.kill9();
    if common::is_root() {
        // A stale socket that is not ours is left alone.
        std::os::unix::fs::chown(&b.socket, Some(54321), None).unwrap();
        let out = serve_once(&b.config);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("owned by uid 54321"));
        assert!(b.socket.exists());
    }
}

/// Each `worker-N` thread of a process and the CPU time it has used, in
/// clock ticks (`/proc/PID/task/*/stat`: utime + stime).
fn worker_ticks(pid: i32) -> std::collections::BTreeMap<String, u64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| t.unwrap().path())
        .filter_map(|t| {
            let name = std::fs::read_to_string(t.join("comm")).unwrap();
            let name = name.trim();
            let stat = std::fs::read_to_string(t.join("stat")).unwrap();
            // Fields after the `(comm)`: state is the 3rd, utime the 14th.
            let rest: Vec<&str> = stat
                .rsplit_once(')')
                .unwrap()
                .1
                .split_whitespace()
                .collect();
            let ticks = rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap();
            name.starts_with("worker-")
                .then(|| (name.to_owned(), ticks))
        })
        .collect()
}

/// `per_core` starts a worker per core, and serves the Unix socket with
/// the first half of them (rounded up) unless `socket_workers` says
/// otherwise: the socket's clients run on the same machine and need
/// cores too (docs/performance.md). Which worker serves a connection is
/// seen from outside by the CPU time each worker thread uses. (Spreading
/// is off here: a loaded machine could preempt the workers.)
#[test]
fn per_core_serves_the_socket_on_half_the_workers_unless_told() {
    use std::io::Write;
    for (extra, serving) in [("", 2), ("socket_workers = 4\n", 4)] {
        let b = Broker::start(&format!(
            "{}\n[runtime]\nflavor = \"per_core\"\nworker_threads = 4\nspread_preempted = 1e9\n{extra}",
            default_principals()
        ));
        // A thread names itself once it runs: give them a moment.
        let mut before = worker_ticks(b.pid());
        let named_by = std::time::Instant::now() + Duration::from_secs(5);
        while before.len() < 4 && std::time::Instant::now() < named_by {
            std::thread::sleep(Duration::from_millis(20));
            before = worker_ticks(b.pid());
        }
        let names: Vec<&String> = before.keys().collect();
        assert_eq!(names, ["worker-0", "worker-1", "worker-2", "worker-3"]);
        // Eight connections, so each socket worker takes two; enough
        // requests on each for every serving worker to use CPU time.
        let mut conns: Vec<_> = (0..8)
            .map(|_| std::os::unix::net::UnixStream::connect(&b.socket).unwrap())
            .collect();
        let mut buf = [0u8; 4096];
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(1500) {
            for c in &mut conns {
                c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                    .unwrap();
                let n = std::io::Read::read(c, &mut buf).unwrap();
                assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            }
        }
        let after = worker_ticks(b.pid());
        let busy: Vec<&String> = after
            .iter()
            .filter(|(name, ticks)| **ticks > before[*name])
            .map(|(name, _)| name)
            .collect();
        let expected: Vec<String> = (0..serving).map(|i| format!("worker-{i}")).collect();
        assert_eq!(
            busy,
            expected.iter().collect::<Vec<_>>(),
            "{extra:?}: {after:?}"
        );
    }
}

/// A socket worker preempted at `spread_preempted` or more per request
/// (0 here: at its third check) moves half its connections, each between
/// two of its requests, to the worker that does not serve the socket: the
/// other worker starts using CPU, and no request or audit line is lost or
/// answered out of order on the way.
#[test]
fn a_preempted_socket_worker_moves_half_its_connections_without_losing_a_request() {
    use std::io::{Read, Write};
    let b = Broker::start(&format!(
        "{}\n[runtime]\nflavor = \"per_core\"\nworker_threads = 2\nsocket_workers = 1\nspread_preempted = 0.0\nidle_spin = \"0s\"\n",
        default_principals()
    ));
    assert_eq!(b.put("acme/tasks/t-42/db", P, "moved-value").status, 201);
    let lines_before = b.audit_lines().len();
    let before = worker_ticks(b.pid());
    let mut conns: Vec<_> = (0..8)
        .map(|_| std::os::unix::net::UnixStream::connect(&b.socket).unwrap())
        .collect();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = format!(
        "GET /v1/secrets/acme/tasks/t-42/db HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {T}\r\n\r\n"
    );
    let whoami = format!("GET /v1/whoami HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {T}\r\n\r\n");
    let rounds = 2500;
    for round in 0..rounds {
        for c in &mut conns {
            // Whoami and the read alternate, so an answer out of order or
            // from another request would show.
            let (req, want): (&str, &[u8]) = if round % 2 == 0 {
                (&read, b"moved-value")
            } else {
                (&whoami, b"\"principal\"")
            };
            c.write_all(req.as_bytes()).unwrap();
            buf.clear();
            let resp = loop {
                let n = c.read(&mut chunk).unwrap();
                assert!(n > 0, "connection closed at round {round}");
                buf.extend_from_slice(&chunk[..n]);
                if !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    continue;
                }
                let r = common::parse_response(&buf);
                let len: usize = r.header("content-length").map_or(0, |l| l.parse().unwrap());
                if r.body.len() >= len {
                    break r;
                }
            };
            assert_eq!(resp.status, 200, "round {round}");
            assert!(
                resp.body.windows(want.len()).any(|w| w == want),
                "round {round}: {}",
                resp.text()
            );
        }
    }
    let after = worker_ticks(b.pid());
    assert!(
        after["worker-1"] > before["worker-1"],
        "nothing moved: {after:?}"
    );
    // One audit line per request, every one of them there.
    let wait_until = std::time::Instant::now() + Duration::from_secs(5);
    while b.audit_lines().len() < lines_before + rounds * 8
        && std::time::Instant::now() < wait_until
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(b.audit_lines().len(), lines_before + rounds * 8);
}

/// Every runtime shape drains: a request whose body is still arriving
/// when SIGTERM lands is answered and its write is durable; idle
/// connections (the head deadline a minute away, one never used and one
/// served a plain GET) do not hold the exit up, which comes long before
/// the drain timeout. With
/// `per_core` the connections live on worker runtimes, not the one that
/// takes the signal.
#[test]
fn sigterm_drains_an_in_flight_request_on_every_runtime() {
    use std::io::{Read, Write};
    // `per_core` with and without its idle spin (on by default), with two
    // workers serving the socket whatever the machine (by default, half).
    for (flavor, spin) in [
        ("per_core", "50us"),
        ("per_core", "0s"),
        ("multi_thread", "0s"),
        ("current_thread", "0s"),
    ] {
        let mut b = Broker::start(&format!(
            "{}\n[limits]\nbody_timeout = \"10s\"\nheader_timeout = \"60s\"\ndrain_timeout = \"60s\"\n[runtime]\nflavor = \"{flavor}\"\nidle_spin = \"{spin}\"\nworker_threads = 2\nsocket_workers = 2\n",
            default_principals()
        ));
        // Three connections, so with two workers both take one: an idle
        // keep-alive one that has been served, and the PUT to drain.
        let idle = std::os::unix::net::UnixStream::connect(&b.socket).unwrap();
        let mut busy = std::os::unix::net::UnixStream::connect(&b.socket).unwrap();
        assert_eq!(b.get("acme/tasks/t-42/none", T).status, 404, "{flavor}");
        write!(busy, "GET /v1/whoami HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let mut s = std::os::unix::net::UnixStream::connect(&b.socket).unwrap();
        let body = br#"{"value":"drained"}"#;
        write!(
            s,
            "PUT /v1/secrets/acme/tasks/t-42/d HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {P}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(&body[..5]).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        b.signal("TERM");
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(&body[5..]).unwrap();
        // Answered and then closed by the drain, not by the broker's exit
        // at the drain timeout.
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert_eq!(common::parse_response(&out).status, 201, "{flavor}");
        // Once the PUT is answered: long before the drain timeout, which
        // idle connections holding the drain would wait for.
        assert_eq!(b.wait_exit(Duration::from_secs(15)), Some(0), "{flavor}");
        drop((idle, busy));
        // The drained write is durable.
        b.spawn();
        assert_eq!(
            b.get("acme/tasks/t-42/d", T).json()["value"],
            "drained",
            "{flavor}"
        );
    }
}

#[test]
fn sighup_reloads_good_policies_and_keeps_the_last_good_set() {
    let b = Broker::start(&default_principals());
    assert_eq!(b.put("acme/tasks/t-42/db", P, "v").status, 201);
    assert_eq!(b.get("acme/tasks/t-42/db", T).status, 200);
    let pdir = b.dir.path().join("policies");
    // A broken policy file: refused, old set stays.
    std::fs::write(
        pdir.join("zz-broken.cedar"),
        "permit(principal, action, resource) when { nonsense",
    )
    .unwrap();
    b.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.get("acme/tasks/t-42/db", T).status, 200);
    assert!(
        b.stderr_text().contains("zz-broken.cedar"),
        "error names the file: {}",
        b.stderr_text()
    );
    // A valid change: forbid tasks from reading `db`.
    std::fs::remove_file(pdir.join("zz-broken.cedar")).unwrap();
    std::fs::write(
        pdir.join("zz-extra.cedar"),
        "@id(\"no-db\")\nforbid(principal is SecretBroker::Task, action == SecretBroker::Action::\"read\", resource) when { resource.name == \"db\" };\n",
    )
    .unwrap();
    b.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    let r = b.get("acme/tasks/t-42/db", T);
    assert_eq!(r.status, 403);
    let audit = b.audit_lines();
    let reloads: Vec<_> = audit.iter().filter(|l| l["action"] == "reload").collect();
    assert_eq!(reloads.len(), 2);
    assert_eq!(reloads[0]["status"], 500);
    assert_eq!(reloads[1]["status"], 200);
    let denied = audit.iter().rev().find(|l| l["action"] == "read").unwrap();
    assert_eq!(denied["decision"], "deny");
    assert!(
        denied["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "no-db")
    );
}

#[test]
fn a_bad_policy_set_refuses_to_start_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    std::fs::copy(
        src.join("schema.cedarschema"),
        dir.path().join("schema.cedarschema"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.cedar"),
        "permit(principal, action, resource);\npermit(principal, action == SecretBroker::Action::\"read\", resource) when { resource.nope == 1 };\n",
    )
    .unwrap();
    let out = serve_once(write_min_config(dir.path()));
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.cedar:2:"), "{err}");
    // The store opens while the policies load; with both broken, the
    // policy error is still the one reported, and no socket is left.
    std::fs::write(dir.path().join("k"), b"short").unwrap();
    let out = serve_once(dir.path().join("c.toml"));
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.cedar:2:"), "{err}");
    assert!(!dir.path().join("s.sock").exists());
}

fn write_min_config(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::write(dir.join("k"), [7u8; 32]).unwrap();
    let p = dir.join("c.toml");
    std::fs::write(
        &p,
        "[listen]\nsocket = \"s.sock\"\n[store]\npath = \"db\"\nkey_file = \"k\"\n[policy]\ndir = \".\"\n",
    )
    .unwrap();
    p
}

#[test]
fn bad_config_exits_64_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "[listen]\nsokcet = \"x\"\n").unwrap();
    let out = serve_once(&p);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sokcet"));
    let missing = dir.path().join("missing.toml");
    let out = serve_once(&missing);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn kill9_loses_no_acknowledged_write_and_store_has_no_plaintext() {
    let mut b = Broker::start(&default_principals());
    let canary = "plaintext-canary-5f1d2c";
    let mut acked = Vec::new();
    for round in 0..3 {
        // Writers race a kill -9; every write that got a 2xx must survive.
        let sock = b.socket.clone();
        let writer = std::thread::spawn(move || {
            let mut ok = Vec::new();
            for i in 0..400 {
                let path = format!("acme/tasks/t-42/k{round}-{}", i % 7);
                let body =
                    serde_json::json!({ "value": format!("{canary}-{round}-{i}") }).to_string();
                let req = format!(
                    "PUT /v1/secrets/{path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {P}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let Ok(mut s) = std::os::unix::net::UnixStream::connect(&sock) else {
                    break;
                };
                use std::io::{Read, Write};
                if s.write_all(req.as_bytes()).is_err() {
                    break;
                }
                let mut out = Vec::new();
                if s.read_to_end(&mut out).is_err() || out.is_empty() {
                    break;
                }
                let r = common::parse_response(&out);
                if r.status >= 300 {
                    break;
                }
                ok.push((
                    path,
                    r.json()["version"].as_u64().unwrap(),
                    format!("{canary}-{round}-{i}"),
                ));
            }
            ok
        });
        std::thread::sleep(Duration::from_millis(150 + 100 * round));
        b.kill9();
        acked.extend(writer.join().unwrap());
        b.spawn();
    }
    assert!(!acked.is_empty());
    // The last acknowledged version of each path is readable, with its value.
    let mut last = std::collections::BTreeMap::new();
    for (path, version, value) in &acked {
        last.insert(path.clone(), (*version, value.clone()));
    }
    for (path, (version, value)) in &last {
        let r = b.get(path, T);
        assert_eq!(r.status, 200, "{path}");
        let v = r.json();
        assert!(
            v["version"].as_u64().unwrap() >= *version,
            "{path}: lost version {version}"
        );
        if v["version"].as_u64().unwrap() == *version {
            assert_eq!(v["value"].as_str().unwrap(), value);
        }
    }
    // The store file never holds a plaintext value.
    b.kill9();
    let db = std::fs::read(b.dir.path().join("store.redb")).unwrap();
    assert!(!db.is_empty());
    assert!(
        !db.windows(canary.len()).any(|w| w == canary.as_bytes()),
        "plaintext in store file"
    );
}

/// Turns `[audit] spool` on in a stopped broker's config.
fn with_audit_spool(b: &Broker) {
    let text = std::fs::read_to_string(&b.config).unwrap().replace(
        "sink = \"file:audit.log\"",
        "sink = \"file:audit.log\"\nspool = true",
    );
    std::fs::write(&b.config, text).unwrap();
}

/// With `[audit] spool = true` a request's audit line waits in the spool
/// (`.audit.log.spool`) from just before its answer until just after it.
/// Lines a killed broker left there are appended by the next start, each
/// once: a line already written out (the broker died between writing it
/// and clearing the spool) is not appended again. Then every answered
/// request of a broker killed with `kill -9` right after its answers is in
/// the file after a restart.
#[test]
fn audit_lines_left_in_the_spool_by_a_killed_broker_are_appended_on_restart() {
    let mut b = Broker::start(&default_principals());
    b.signal("TERM");
    assert_eq!(b.wait_exit(Duration::from_secs(15)), Some(0));
    with_audit_spool(&b);
    b.spawn();
    assert_eq!(b.put("acme/tasks/t-42/a", P, "v").status, 201);
    b.kill9();
    let spool = b.audit.with_file_name(".audit.log.spool");
    let mut bytes = std::fs::read(&spool).expect("the broker keeps a spool beside the file");
    assert_eq!(&bytes[..8], b"sbspool1");
    // What a broker killed between an answer and its flush leaves: two
    // lines in one region, the first of them already in the audit file.
    let written = "{\"request_id\":\"left-1\",\"status\":200}\n";
    let waiting = "{\"request_id\":\"left-2\",\"status\":403}\n";
    std::fs::OpenOptions::new()
        .append(true)
        .open(&b.audit)
        .unwrap()
        .write_all(written.as_bytes())
        .unwrap();
    let lines = format!("{written}{waiting}");
    bytes[8..16].copy_from_slice(&(lines.len() as u64).to_le_bytes());
    bytes[16..16 + lines.len()].copy_from_slice(lines.as_bytes());
    std::fs::write(&spool, &bytes).unwrap();

    b.spawn();
    let text = b.audit_text();
    assert_eq!(text.matches("\"left-1\"").count(), 1, "{text}");
    assert_eq!(text.matches("\"left-2\"").count(), 1, "{text}");
    assert!(b.stderr_text().contains("left in the spool"));

    // Killed straight after its answers: every answered request's line is
    // in the file once the next broker has started.
    let ids: Vec<String> = (0..20)
        .map(|i| {
            let name = if i % 2 == 0 { "a" } else { "nope" };
            let r = b.get(&format!("acme/tasks/t-42/{name}"), T);
            r.header("x-request-id").unwrap().to_owned()
        })
        .collect();
    b.kill9();
    b.spawn();
    let text = b.audit_text();
    for id in &ids {
        assert_eq!(
            text.matches(&format!("\"{id}\"")).count(),
            1,
            "{id} in {text}"
        );
    }
}

/// By default (`[audit] spool = false`) each line is appended before its
/// answer, and no spool file is made.
#[test]
fn audit_lines_are_written_before_the_answer_by_default() {
    let b = Broker::start(&default_principals());
    for _ in 0..20 {
        let r = b.req("GET", "/v1/whoami", Some(T), None);
        let id = r.header("x-request-id").unwrap().to_owned();
        // Read at once, without waiting for the file to settle.
        let text = std::fs::read_to_string(&b.audit).unwrap();
        assert!(
            text.contains(&format!("\"{id}\"")),
            "{id} not yet in {text}"
        );
    }
    assert!(!b.audit.with_file_name(".audit.log.spool").exists());
}

/// SECURITY: a broker whose audit log cannot be written serves nothing it
/// cannot record (`503 unavailable`, no value in the body) but liveness;
/// `[audit] on_failure = "serve"` chooses availability instead.
#[test]
fn an_unwritable_audit_log_fails_closed_by_default() {
    let mut b = Broker::start(&default_principals());
    assert_eq!(
        b.put("acme/tasks/t-42/db", P, "canary-fail-closed").status,
        201
    );
    b.kill9();
    let text = std::fs::read_to_string(&b.config).unwrap();
    // /dev/full: every write fails with ENOSPC, like a full disk.
    let full = text.replace("sink = \"file:audit.log\"", "sink = \"file:/dev/full\"");
    assert_ne!(full, text);
    std::fs::write(&b.config, &full).unwrap();
    b.spawn();
    let r = b.get("acme/tasks/t-42/db", T);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.code(), "unavailable");
    assert!(!r.text().contains("canary-fail-closed"));
    let r = b.put("acme/tasks/t-42/db2", P, "v");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(b.req("GET", "/healthz", None, None).status, 200);
    assert_eq!(b.req("GET", "/readyz", None, None).status, 503);
    assert!(b.stderr_text().contains("cannot write audit record"));

    b.kill9();
    std::fs::write(
        &b.config,
        full.replace("[audit]\n", "[audit]\non_failure = \"serve\"\n"),
    )
    .unwrap();
    b.spawn();
    let r = b.get("acme/tasks/t-42/db", T);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("canary-fail-closed"));
}

/// A `TERM` sent the moment the broker says it is ready is a graceful stop
/// (exit 0, socket and `--dev` temp dir removed): the handlers are in place
/// before "ready". Before, a short window after it still had the default
/// disposition, and such a `TERM` killed the broker, leaving its socket and
/// the dev store's key behind. Repeated, as the window was short.
#[test]
fn sigterm_right_after_ready_is_a_graceful_stop() {
    use std::io::BufRead as _;
    for round in 0..20 {
        let mut child = std::process::Command::new(common::BIN)
            .args(["serve", "--dev"])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = rustix::process::Pid::from_child(&child);
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let socket = loop {
            line.clear();
            assert!(err.read_line(&mut line).unwrap() > 0, "no ready line");
            if line.contains("secret-broker ready") {
                // At once: no fork of `kill` between "ready" and the signal.
                rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
                break line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("socket="))
                    .map(|s| std::path::PathBuf::from(s.trim_matches('"')));
            }
        };
        // Drain stderr so the broker never blocks on a full pipe.
        let rest = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        let status = child.wait().unwrap();
        let rest = rest.join().unwrap();
        assert!(status.success(), "round {round}: {status:?} {rest}");
        let socket = socket.expect("the ready line names the socket");
        assert!(!socket.exists(), "round {round}: socket left behind");
        assert!(
            !socket.parent().unwrap().exists(),
            "round {round}: dev dir left behind"
        );
    }
}
