//! Memory hygiene, measured: scan the live broker's memory for a canary
//! secret after it was deleted (or evicted by TTL) and its connections
//! closed. A positive control first proves the scanner finds the canary
//! while it is legitimately cached.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::{Broker, PLATFORM_TOKEN as P, TASK_TOKEN as T, default_principals};

/// Counts occurrences of `needle` in every readable mapping of `pid`.
fn count_in_memory(pid: i32, needle: &[u8]) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut hits = 0;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (range, perms) = (f.next().unwrap(), f.next().unwrap());
        let name = line.split_whitespace().nth(5).unwrap_or("");
        if !perms.starts_with('r')
            || name == "[vvar]"
            || name == "[vsyscall]"
            || name == "[vvar_vclock]"
        {
            continue;
        }
        let (lo, hi) = range.split_once('-').unwrap();
        let (lo, hi) = (
            u64::from_str_radix(lo, 16).unwrap(),
            u64::from_str_radix(hi, 16).unwrap(),
        );
        let mut buf = vec![0u8; (hi - lo) as usize];
        // Some special mappings refuse reads; they hold no heap data.
        if mem.read_exact_at(&mut buf, lo).is_err() {
            continue;
        }
        hits += buf.windows(needle.len()).filter(|w| *w == needle).count();
    }
    hits
}

fn can_scan(pid: i32) -> bool {
    std::fs::File::open(format!("/proc/{pid}/mem"))
        .and_then(|f| {
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
            let lo = u64::from_str_radix(maps.split('-').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, lo)
        })
        .is_ok()
}

fn canary(tag: &str) -> String {
    let mut r = [0u8; 12];
    getrandom::fill(&mut r).unwrap();
    format!("MEMCANARY-{tag}-{}", hex::encode(r))
}

#[test]
fn deleted_secret_leaves_no_copy_in_memory() {
    if !common::is_root() {
        eprintln!("SKIP deleted_secret_leaves_no_copy_in_memory: needs root to read /proc/PID/mem");
        return;
    }
    let b = Broker::start(&default_principals());
    if !can_scan(b.pid()) {
        panic!(
            "cannot read /proc/{}/mem as root: the memory scan cannot run here",
            b.pid()
        );
    }
    let secret = canary("del");
    let path = "acme/tasks/t-42/mem";
    // Write it (JSON body), read it (JSON and raw), several times, over fresh connections.
    for _ in 0..3 {
        assert!(b.put(path, P, &secret).status < 300);
        let r = b.get(path, T);
        assert_eq!(r.json()["value"], secret.as_str());
        let raw = b
            .try_request(
                "GET",
                &format!("/v1/secrets/{path}"),
                &[
                    ("authorization", &format!("Bearer {T}")),
                    ("accept", "application/octet-stream"),
                ],
                None,
            )
            .unwrap();
        assert_eq!(raw.body, secret.as_bytes());
    }
    // Positive control: while cached, the value is in memory, and the
    // scanner must see it (else this test could never fail).
    let cached = count_in_memory(b.pid(), secret.as_bytes());
    assert!(
        cached >= 1,
        "scanner did not find the cached canary: the scan is blind"
    );

    assert_eq!(
        b.req("DELETE", &format!("/v1/secrets/{path}"), Some(P), None)
            .status,
        204
    );
    // Connections are closed (connection: close); give their tasks a moment to end.
    std::thread::sleep(Duration::from_millis(300));
    let left = count_in_memory(b.pid(), secret.as_bytes());
    assert_eq!(
        left, 0,
        "{left} copies of a deleted secret remain in the broker's memory"
    );
}

#[test]
fn evicted_secret_leaves_no_copy_in_memory() {
    if !common::is_root() {
        eprintln!("SKIP evicted_secret_leaves_no_copy_in_memory: needs root to read /proc/PID/mem");
        return;
    }
    let b = Broker::start(&format!(
        "{}\n[cache]\nttl = \"5s\"\n",
        default_principals()
    ));
    let secret = canary("ttl");
    let path = "acme/tasks/t-42/ttl";
    assert!(b.put(path, P, &secret).status < 300);
    assert_eq!(b.get(path, T).json()["value"], secret.as_str());
    assert!(
        count_in_memory(b.pid(), secret.as_bytes()) >= 1,
        "scanner is blind"
    );
    // TTL 5s; the sweeper runs at least every second.
    std::thread::sleep(Duration::from_millis(7000));
    let left = count_in_memory(b.pid(), secret.as_bytes());
    assert_eq!(
        left, 0,
        "{left} copies of an evicted secret remain in the broker's memory"
    );
    // Still readable from the store afterwards.
    assert_eq!(b.get(path, T).json()["value"], secret.as_str());
}

#[test]
fn broker_is_not_dumpable_and_has_no_core_limit() {
    let b = Broker::start(&default_principals());
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", b.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<_> = core.split_whitespace().collect();
    assert_eq!((fields[4], fields[5]), ("0", "0"), "{core}");
    // A non-dumpable process's /proc files are owned by root.
    let meta = std::fs::metadata(format!("/proc/{}/environ", b.pid())).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
}

#[test]
fn memory_lock_locks_pages_and_refuses_a_small_limit_clearly() {
    // Locked: VmLck grows past zero once pages are touched.
    let b = Broker::start(&format!(
        "{}\n[memory]\nlock = true\n",
        default_principals()
    ));
    assert!(b.put("acme/tasks/t-42/l", P, "locked").status < 300);
    let status = std::fs::read_to_string(format!("/proc/{}/status", b.pid())).unwrap();
    let locked_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap())
        .unwrap();
    assert!(locked_kib > 0, "VmLck is 0 with memory.lock = true");

    // Unprivileged with a 64 KiB limit: a clear error naming what to raise.
    if !common::is_root()
        || std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_err()
    {
        eprintln!("SKIP the small-limit half: needs root and setpriv/prlimit (util-linux)");
        return;
    }
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=2000",
            "--regid=2000",
            "--clear-groups",
            "prlimit",
            "--memlock=65536:65536",
        ])
        .arg(common::BIN)
        .args(["serve", "--config"])
        .arg(&b.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(71), "{err}");
    assert!(
        err.contains("RLIMIT_MEMLOCK") && err.contains("memory.lock = false"),
        "{err}"
    );
}
