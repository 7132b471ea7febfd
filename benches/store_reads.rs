//! What the read cache saves against each store, to choose `[cache] ttl`:
//! the latency of a cached read and of an uncached one (every read asks the
//! store) through the real binary, on the loopback store servers that
//! `scripts/backends` starts. The TTL is the revocation bound (how long
//! another broker may serve a deleted or rotated value), and its cost is one
//! store call per secret per broker per TTL, each at the uncached latency.
//!
//! Run: `scripts/backends start vault aws gcp azure`, then
//! `eval "$(scripts/backends env)"; cargo test --bench store_reads -- --bench`
//! (the store's time dominates, so the debug binary is fine). `STORE_READS`
//! sets the reads per round, `STORE_ROUNDS` the rounds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/broker.rs"]
mod common;

#[path = "../tests/conformance/backends.rs"]
mod backends;

use std::time::{Duration, Instant};

use backends::Started;
use common::{PLATFORM_TOKEN as P, TASK_TOKEN as T};

/// A broker on `store` ("vault", "aws", "gcp", "azure") with `[cache] ttl`.
fn start(store: &str, ttl: &str) -> Option<Started> {
    let test = "store_reads";
    let started = match store {
        "vault" => backends::vault(test),
        "aws" => backends::aws(test),
        "gcp" => backends::gcp(test),
        "azure" => backends::azure(test),
        _ => None,
    }?;
    let mut b = started.broker;
    b.kill9();
    let text = std::fs::read_to_string(&b.config).unwrap();
    std::fs::write(&b.config, format!("{text}\n[cache]\nttl = \"{ttl}\"\n")).unwrap();
    b.spawn();
    Some(Started {
        broker: b,
        prefix: started.prefix,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Reads `path` `n` times; the latencies, sorted.
fn reads(s: &Started, path: &str, n: usize) -> Vec<Duration> {
    let mut out: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let r = s.broker.get(path, T);
            let d = t.elapsed();
            assert_eq!(r.status, 200, "{}", r.text());
            d
        })
        .collect();
    out.sort();
    out
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("store_reads bench: skipped (run `cargo test --bench store_reads -- --bench`)");
        return;
    }
    let n: usize = std::env::var("STORE_READS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let rounds: usize = std::env::var("STORE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    println!(
        "| store | cached p50 | uncached p50 | uncached p99 | uncached/cached (median of {rounds} rounds, min-max) |"
    );
    println!("|---|---|---|---|---|");
    for store in ["vault", "aws", "gcp", "azure"] {
        let (Some(cached), Some(uncached)) = (start(store, "30s"), start(store, "0s")) else {
            println!("| {store} | not reachable | | | |");
            continue;
        };
        for s in [&cached, &uncached] {
            let r = s.broker.put("acme/tasks/t-42/db", P, "v");
            assert!(r.status == 201 || r.status == 200, "{}", r.text());
        }
        let path = "acme/tasks/t-42/db";
        let mut ratios = Vec::new();
        let (mut c50, mut u50, mut u99) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            // Interleaved in each round: the same machine load for both.
            let c = reads(&cached, path, n);
            let u = reads(&uncached, path, n);
            let (cp, up) = (percentile(&c, 0.5), percentile(&u, 0.5));
            ratios.push(up.as_secs_f64() / cp.as_secs_f64());
            c50.push(cp);
            u50.push(up);
            u99.push(percentile(&u, 0.99));
        }
        ratios.sort_by(f64::total_cmp);
        for v in [&mut c50, &mut u50, &mut u99] {
            v.sort();
        }
        let med = |v: &[Duration]| v[v.len() / 2].as_micros();
        println!(
            "| {store} | {} µs | {} µs | {} µs | {:.1}x ({:.1}-{:.1}) |",
            med(&c50),
            med(&u50),
            med(&u99),
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
}
