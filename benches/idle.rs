//! What a broker costs when there is little to do: CPU over a window with
//! no requests at all, and with one request every 100 ms (a task polling
//! slowly), each with `[runtime] idle_spin` at its default and off. CPU is
//! the process's own user+system time (`/proc/PID/stat`, all threads), so
//! other load on the machine does not count against it.
//!
//! Run: `cargo bench --bench idle` (release) or `cargo test --bench idle --
//! --bench`; `IDLE_SECONDS` sets the window (default 60).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/broker.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Broker, TASK_TOKEN as T, default_principals};

/// User + system CPU time of `pid`, all threads, from `/proc/PID/stat`.
fn cpu(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let hz = rustix::param::clock_ticks_per_second();
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// CPU the broker used over `window`, with a read every `every` if given,
/// as a percentage of one core.
fn measure(b: &Broker, window: Duration, every: Option<Duration>) -> (f64, usize) {
    let pid = b.pid();
    let before = cpu(pid);
    let start = Instant::now();
    let mut requests = 0;
    match every {
        None => std::thread::sleep(window),
        Some(gap) => {
            while start.elapsed() < window {
                let t = Instant::now();
                assert_eq!(b.get("acme/tasks/t-42/db", T).status, 200);
                requests += 1;
                std::thread::sleep(gap.saturating_sub(t.elapsed()));
            }
        }
    }
    let used = cpu(pid) - before;
    (
        100.0 * used.as_secs_f64() / start.elapsed().as_secs_f64(),
        requests,
    )
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("idle bench: skipped (run `cargo bench --bench idle`)");
        return;
    }
    let secs: u64 = std::env::var("IDLE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let window = Duration::from_secs(secs);
    println!("| idle_spin | load | broker CPU (% of a core) | requests |");
    println!("|---|---|---|---|");
    for (label, runtime) in [
        ("50us (default)", ""),
        ("0s (off)", "[runtime]\nidle_spin = \"0s\"\n"),
    ] {
        let b = Broker::start(&format!("{}\n{runtime}", default_principals()));
        assert_eq!(
            b.put("acme/tasks/t-42/db", common::PLATFORM_TOKEN, "v")
                .status,
            201
        );
        // Let start-up work (page release, first timers) finish.
        std::thread::sleep(Duration::from_secs(2));
        let (idle, _) = measure(&b, window, None);
        println!("| {label} | none for {secs} s | {idle:.3} % | 0 |");
        let (paced, n) = measure(&b, window, Some(Duration::from_millis(100)));
        println!("| {label} | one read per 100 ms for {secs} s | {paced:.3} % | {n} |");
    }
}
