//! Prometheus metrics on the optional TCP listener, through the real binary:
//! counts by action, decision and status; cache, store and reload series;
//! and never a path or a value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

use std::io::{Read, Write};

use common::{Broker, PLATFORM_TOKEN as P, TASK_TOKEN as T, default_principals};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: m\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0.0)
}

#[test]
fn metrics_count_requests_and_never_carry_paths_or_values() {
    let port = free_port();
    let b = Broker::start(&format!(
        "{}\n[metrics]\naddr = \"127.0.0.1:{port}\"\n",
        default_principals()
    ));
    let canary_path = "acme/tasks/t-43/very-secret-name";
    assert_eq!(
        b.put("acme/tasks/t-42/db", P, "VALUE-CANARY-77").status,
        201
    );
    for _ in 0..3 {
        assert_eq!(b.get("acme/tasks/t-42/db", T).status, 200);
    }
    assert_eq!(b.get(canary_path, T).status, 403);
    assert_eq!(b.get("acme/tasks/t-42/db", P).status, 403);
    b.signal("HUP");
    std::thread::sleep(std::time::Duration::from_millis(300));

    let text = scrape(port);
    assert_eq!(
        value(
            &text,
            r#"secret_broker_requests_total{action="read",decision="allow",status="200"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            &text,
            r#"secret_broker_requests_total{action="read",decision="deny",status="403"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            r#"secret_broker_requests_total{action="write",decision="allow",status="201"}"#
        ),
        1.0
    );
    // First read missed and filled the cache; the next two hit.
    assert_eq!(value(&text, "secret_broker_cache_hits_total"), 2.0);
    assert_eq!(value(&text, "secret_broker_cache_misses_total"), 1.0);
    assert!(
        value(
            &text,
            r#"secret_broker_store_call_duration_seconds_count{op="put"}"#
        ) >= 1.0
    );
    assert_eq!(
        value(&text, r#"secret_broker_policy_reloads_total{outcome="ok"}"#),
        1.0
    );
    assert!(
        value(
            &text,
            r#"secret_broker_request_duration_seconds_count{action="read"}"#
        ) >= 5.0
    );
    // Privacy: no path, no name, no value, no token.
    for needle in ["acme", "very-secret-name", "VALUE-CANARY", P, T] {
        assert!(!text.contains(needle), "metrics carry `{needle}`");
    }
    // Anything but /metrics is 404.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /v1/secrets/acme/x HTTP/1.1\r\nhost: m\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 404"));
}

#[test]
fn metrics_are_off_by_default_and_a_bad_address_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "[metrics]\naddr = \"localhost\"\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("metrics.addr"));
}

/// Open descriptors of `pid`, where this user may count them.
fn open_fds(pid: i32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(Iterator::count)
}

#[test]
fn idle_metrics_connections_cannot_starve_the_api_and_are_closed() {
    let port = free_port();
    let b = Broker::start(&format!(
        "{}\n[metrics]\naddr = \"127.0.0.1:{port}\"\n",
        default_principals()
    ));
    assert_eq!(b.put("acme/tasks/t-42/db", P, "v").status, 201);
    // A low descriptor limit makes exhaustion cheap to reach: before the
    // fix, the metrics listener accepted until `accept` failed with EMFILE,
    // and then the Unix API could accept nothing either.
    let limit = 128;
    let set = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", b.pid()))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .unwrap();
    assert!(set.success());
    let mut idle = Vec::new();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..300 {
        // A full backlog (a listener that stopped accepting) times out.
        match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)) {
            Ok(s) => idle.push(s),
            Err(_) => break,
        }
    }
    // Let the listener take them all from the backlog: wait until the
    // broker's descriptor count stops moving (bounded).
    let mut last = None;
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = open_fds(b.pid());
        if now.is_some() && now == last {
            break;
        }
        last = now;
    }
    // The API still answers, reads included.
    for _ in 0..5 {
        let r = b.get("acme/tasks/t-42/db", T);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    if let Some(n) = last {
        assert!(
            n as u64 + 64 <= limit,
            "{n} descriptors open of {limit}: metrics took the API's reserve"
        );
    }
    // Every idle connection is closed: the excess at once, the served ones
    // when their head deadline passes.
    for s in &mut idle {
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("an idle metrics connection was not closed: {other:?}"),
        }
    }
    drop(idle);
    // And metrics serve again.
    assert!(scrape(port).contains("secret_broker_requests_total"));
}
