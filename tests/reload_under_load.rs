//! Hot reload under load: SIGHUP with changed valid policy sets and broken
//! ones while mixed requests run. No request fails, every decision is the
//! one of a whole policy set (never a half-loaded one), and the audit log
//! records each reload and its outcome.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Broker, PLATFORM_TOKEN as P, TASK_TOKEN as T, default_principals};

/// The changed valid set: the shipped set plus a forbid on task reads of
/// secrets named `x` (everything else decides as before).
const FORBID_X: &str = "@id(\"forbid-x\")\nforbid (principal is SecretBroker::Task, action == SecretBroker::Action::\"read\", resource) when { resource.name == \"x\" };\n";

#[test]
fn sighup_under_load_never_half_applies_a_policy_set() {
    let b = Broker::start(&default_principals());
    let pdir = b.dir.path().join("policies");
    assert_eq!(b.put("acme/tasks/t-42/x", P, "vx").status, 201);
    assert_eq!(b.put("acme/tasks/t-42/y", P, "vy").status, 201);

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let stop = Arc::clone(&stop);
            let sock = b.socket.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let (method, path, token, body): (&str, &str, &str, Option<&str>) =
                        match (w + i) % 5 {
                            0 => ("GET", "/v1/secrets/acme/tasks/t-42/x", T, None),
                            1 => ("GET", "/v1/secrets/acme/tasks/t-42/y", T, None),
                            2 => ("GET", "/v1/secrets/acme/tasks/t-42/x", P, None),
                            3 => (
                                "PUT",
                                "/v1/secrets/acme/tasks/t-42/y",
                                P,
                                Some(r#"{"value":"vy"}"#),
                            ),
                            _ => ("GET", "/v1/secrets/acme/tasks/t-42/", T, None),
                        };
                    let auth = format!("Bearer {token}");
                    let mut headers = vec![("authorization", auth.as_str())];
                    if body.is_some() {
                        headers.push(("content-type", "application/json"));
                    }
                    let r =
                        common::request_on(&sock, method, path, &headers, body.map(str::as_bytes))
                            .unwrap();
                    seen.push((method, path, token, r.status));
                }
                seen
            })
        })
        .collect();

    // Alternate: valid set with forbid-x, broken set, back to shipped.
    for round in 0..6 {
        std::thread::sleep(Duration::from_millis(150));
        match round % 3 {
            0 => std::fs::write(pdir.join("zz.cedar"), FORBID_X).unwrap(),
            1 => std::fs::write(
                pdir.join("zz.cedar"),
                "forbid (principal, action, resource) when {",
            )
            .unwrap(),
            _ => std::fs::remove_file(pdir.join("zz.cedar")).unwrap(),
        }
        b.signal("HUP");
        // Signals are not queued: two SIGHUPs that arrive while the broker
        // is still busy with a reload are one. Wait for this round's audit
        // line, so that each set is really applied under load.
        let deadline = Instant::now() + Duration::from_secs(20);
        while reload_count(&b) < round + 1 {
            assert!(Instant::now() < deadline, "reload {round} was not audited");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        for (method, path, token, status) in w.join().unwrap() {
            total += 1;
            let ok = match (method, path, token) {
                // x is readable under the shipped set, forbidden under the
                // forbid-x set: either whole-set answer is fine.
                ("GET", "/v1/secrets/acme/tasks/t-42/x", t) if t == T => {
                    status == 200 || status == 403
                }
                // Identical under every set that was ever in force.
                ("GET", "/v1/secrets/acme/tasks/t-42/y", _) => status == 200,
                ("GET", "/v1/secrets/acme/tasks/t-42/x", _) => status == 403,
                ("PUT", _, _) => status == 200,
                ("GET", "/v1/secrets/acme/tasks/t-42/", _) => status == 200,
                _ => false,
            };
            assert!(ok, "{method} {path}: {status}");
        }
    }
    assert!(total > 50, "load ran ({total} requests)");
    // The broken set never took effect: after the last round the shipped set is in force.
    assert_eq!(b.get("acme/tasks/t-42/x", T).status, 200);
    let audit = b.audit_lines();
    let reloads: Vec<u64> = audit
        .iter()
        .filter(|l| l["action"] == "reload")
        .map(|l| l["status"].as_u64().unwrap())
        .collect();
    assert_eq!(reloads, [200, 500, 200, 200, 500, 200]);
    // Every request was audited exactly once (plus readiness probes and setup).
    let requests = audit.iter().filter(|l| l["action"] != "reload").count();
    assert!(
        requests >= total + 2,
        "{requests} audit lines for {total} requests"
    );
}

/// Policy reloads audited so far (read as text: the broker is writing
/// other lines meanwhile, and the last one may not be whole yet).
fn reload_count(b: &Broker) -> usize {
    std::fs::read_to_string(&b.audit)
        .unwrap_or_default()
        .matches(r#""action":"reload""#)
        .count()
}
