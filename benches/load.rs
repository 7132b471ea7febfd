//! End-to-end load benchmark over real Unix sockets: the broker serving a
//! cached, authorized, audited read versus the bare hyper baseline
//! (`examples/baseline_server.rs`), interleaved in one run, as ratios.
//! Also: idle RSS, RSS growth under load, time to the first `/healthz`,
//! and the binary's size. No assertions: the table is the result.
//!
//! Run through `scripts/bench` (builds the release binaries first).
//! `LOAD_SECONDS` (default 3) per run, `LOAD_ROUNDS` (default 3) rounds,
//! `LOAD_RUNTIME` the broker's runtime (`per_core`, the default; `multi`;
//! `current`), `LOAD_BASELINE` the reference baseline's (default `multi`,
//! tokio's default); a baseline of the broker's own shape runs too.
//! `LOAD_SPOOL=true` runs the broker with `[audit] spool = true` (each
//! audit line appended right after its answer instead of before it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BROKER: &str = env!("CARGO_BIN_EXE_secret-broker");
const TOKEN: &str = "bench-platform-token";

struct Server {
    child: Child,
    socket: PathBuf,
    request: Vec<u8>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(socket: &Path) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(mut s) = UnixStream::connect(socket) {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n");
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            if out.starts_with(b"HTTP/1.1 200") {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "server did not come up"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn baseline_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/baseline_server");
    assert!(
        bin.exists(),
        "build it first: cargo build --release --example baseline_server"
    );
    bin
}

fn start_baseline(dir: &Path, runtime: &str) -> Server {
    let socket = dir.join(format!("baseline-{runtime}.sock"));
    let child = Command::new(baseline_bin())
        .arg(&socket)
        .arg(runtime)
        .spawn()
        .unwrap();
    wait_for(&socket);
    Server {
        child,
        socket,
        request: b"GET /v1/secrets/acme/tasks/t-42/db HTTP/1.1\r\nhost: b\r\n\r\n".to_vec(),
    }
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Starts the broker with the shipped policies; returns it, the time to its
/// first `/healthz` answer, and its idle RSS (KiB) half a second later,
/// before the seed write.
fn start_broker(dir: &Path, extra: &str) -> (Server, Duration, u64) {
    let uid = rustix::process::geteuid().as_raw();
    let key = dir.join("store.key");
    if !key.exists() {
        std::fs::write(&key, [9u8; 32]).unwrap();
    }
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let socket = dir.join("broker.sock");
    let config = dir.join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\nsocket = {socket:?}\n[store]\npath = {db:?}\nkey_file = {key:?}\n[policy]\ndir = {policies:?}\n\
             [audit]\nsink = \"file:{audit}\"\nspool = {spool}\n[log]\nlevel = \"warn\"\n{extra}\n\
             [[principal]]\nname = \"task\"\ntype = \"Task\"\nscope = \"acme/tasks/t-42\"\nuid = {uid}\n\
             [[principal]]\nname = \"platform\"\ntype = \"Component\"\nroles = [\"platform\"]\ntoken_sha256 = \"{digest}\"\n",
            db = dir.join("store.redb"),
            audit = dir.join("audit.log").display(),
            spool = std::env::var("LOAD_SPOOL").as_deref() == Ok("true"),
            digest = sha256_hex(TOKEN),
        ),
    )
    .unwrap();
    let started = Instant::now();
    let child = Command::new(BROKER)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        socket,
        request: Vec::new(),
    };
    wait_for(&server.socket);
    let first_health = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = rss_kib(server.child.id());
    // Seed the secret as the platform; the bench reads it as the task.
    let body = br#"{"value":"0123456789ab"}"#;
    let put = format!(
        "PUT /v1/secrets/acme/tasks/t-42/db HTTP/1.1\r\nhost: b\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut s = UnixStream::connect(&server.socket).unwrap();
    s.write_all(put.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 20"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let mut server = server;
    server.request = b"GET /v1/secrets/acme/tasks/t-42/db HTTP/1.1\r\nhost: b\r\n\r\n".to_vec();
    (server, first_health, idle_rss)
}

/// Reads one HTTP response (content-length framed) from `s`; returns its status.
fn read_status(s: &mut UnixStream, buf: &mut Vec<u8>) -> u16 {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head_text = std::str::from_utf8(&buf[..head])
                .unwrap()
                .to_ascii_lowercase();
            let len: usize = head_text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= head + 4 + len {
                return head_text[9..12].parse().unwrap();
            }
        }
    }
}

/// Reads one response that must be `200`.
fn read_response(s: &mut UnixStream, buf: &mut Vec<u8>) {
    let status = read_status(s, buf);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(buf));
}

struct Run {
    latencies_ns: Vec<u64>,
    elapsed: Duration,
    cpu_ticks: u64,
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap())
        .unwrap_or(0)
}

fn load(server: &Server, conns: usize, secs: f64) -> Run {
    let deadline = Duration::from_secs_f64(secs);
    let before = cpu_ticks(server.child.id());
    let start = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let socket = server.socket.clone();
            let request = server.request.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).unwrap();
                let mut buf = Vec::with_capacity(1024);
                let mut lat = Vec::with_capacity(200_000);
                let begun = Instant::now();
                while begun.elapsed() < deadline {
                    let t = Instant::now();
                    s.write_all(&request).unwrap();
                    read_response(&mut s, &mut buf);
                    lat.push(t.elapsed().as_nanos() as u64);
                }
                lat
            })
        })
        .collect();
    let mut latencies_ns = Vec::new();
    for t in threads {
        latencies_ns.extend(t.join().unwrap());
    }
    let elapsed = start.elapsed();
    Run {
        latencies_ns,
        elapsed,
        cpu_ticks: cpu_ticks(server.child.id()) - before,
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

#[derive(Default, Clone, Copy)]
struct Summary {
    p50_us: f64,
    p99_us: f64,
    rps: f64,
    cpu_us_per_req: f64,
}

fn summarize(mut r: Run) -> Summary {
    r.latencies_ns.sort_unstable();
    let n = r.latencies_ns.len() as f64;
    let tick_us = 1_000_000.0 / rustix::param::clock_ticks_per_second() as f64;
    Summary {
        p50_us: pct(&r.latencies_ns, 0.50),
        p99_us: pct(&r.latencies_ns, 0.99),
        rps: n / r.elapsed.as_secs_f64(),
        cpu_us_per_req: r.cpu_ticks as f64 * tick_us / n,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn med(runs: &[Summary], f: impl Fn(&Summary) -> f64) -> f64 {
    median(runs.iter().map(f).collect())
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not,
    // and a load run has no place in the test suite.
    if !std::env::args().any(|a| a == "--bench") {
        println!("load bench: skipped (run `scripts/bench` or `cargo bench --bench load`)");
        return;
    }
    if std::env::args().any(|a| a == "--soak") {
        soak();
        return;
    }
    let secs: f64 = std::env::var("LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let rounds: usize = std::env::var("LOAD_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // The broker's runtime (`[runtime] flavor`); the reference baseline is
    // tokio's default multi-thread runtime (`LOAD_BASELINE` to change it).
    // A baseline of the broker's own shape runs interleaved too, so the
    // table also says how much of a ratio is the runtime's shape.
    let runtime = std::env::var("LOAD_RUNTIME").unwrap_or_else(|_| "per_core".into());
    let reference = std::env::var("LOAD_BASELINE").unwrap_or_else(|_| "multi".into());
    let (flavor, shape) = match runtime.as_str() {
        "current" => ("current_thread", "current"),
        "multi" => ("multi_thread", "multi"),
        _ => ("per_core", "per_core"),
    };
    let dir = tempfile::tempdir().unwrap();

    // Startup: median time to the first /healthz over 5 spawns; idle RSS.
    let mut firsts = Vec::new();
    let (mut idle_rss, mut written_rss) = (0, 0);
    let runtime_section = format!("[runtime]\nflavor = \"{flavor}\"\n");
    for _ in 0..5 {
        let (b, first, idle) = start_broker(dir.path(), &runtime_section);
        firsts.push(first.as_secs_f64() * 1000.0);
        idle_rss = idle;
        std::thread::sleep(Duration::from_millis(500));
        written_rss = rss_kib(b.child.id());
    }
    let first_ms = median(firsts);

    let baseline = start_baseline(dir.path(), &reference);
    let baseline_rss = rss_kib(baseline.child.id());
    let same_shape = (shape != reference).then(|| start_baseline(dir.path(), shape));
    let (broker, _, _) = start_broker(dir.path(), &runtime_section);
    // Warm up (and the broker's read cache and decision cache).
    load(&baseline, 1, 0.5);
    if let Some(s) = &same_shape {
        load(s, 1, 0.5);
    }
    load(&broker, 1, 0.5);
    let rss_before = rss_kib(broker.child.id());

    let mut rows = Vec::new();
    let mut shape_rows = Vec::new();
    let mut total_requests = 0usize;
    for conns in [1usize, 16] {
        let (mut base_runs, mut brok_runs, mut shape_runs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            base_runs.push(summarize(load(&baseline, conns, secs)));
            let r = load(&broker, conns, secs);
            total_requests += r.latencies_ns.len();
            brok_runs.push(summarize(r));
            if let Some(s) = &same_shape {
                shape_runs.push(summarize(load(s, conns, secs)));
            }
        }
        if !shape_runs.is_empty() {
            shape_rows.push((conns, shape_runs, brok_runs.clone()));
        }
        rows.push((conns, base_runs, brok_runs));
    }
    let rss_after = rss_kib(broker.child.id());

    println!();
    println!(
        "secret-broker load bench: {rounds} interleaved rounds x {secs}s, medians; broker runtime={runtime}, baseline runtime={reference}; {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    print_table(&rows);
    if !shape_rows.is_empty() {
        println!(
            "the same broker runs against a baseline of its own runtime shape ({shape}), same rounds:"
        );
        print_table(&shape_rows);
    }
    let size = std::fs::metadata(BROKER).map(|m| m.len()).unwrap_or(0);
    println!(
        "idle RSS {:.1} MiB (baseline {:.1} MiB) | after the first write {:.1} MiB | after warm-up {:.1} MiB | RSS growth over {} requests {:+.1} MiB | first /healthz {:.1} ms after spawn | binary {:.1} MB",
        idle_rss as f64 / 1024.0,
        baseline_rss as f64 / 1024.0,
        written_rss as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        total_requests,
        (rss_after as f64 - rss_before as f64) / 1024.0,
        first_ms,
        size as f64 / 1e6
    );
    println!(
        "targets: 1 conn p50 <= 1.3x, p99 <= 1.4x; 16 conns rps >= 0.75x, p99 <= 1.5x, cpu/req <= 1.8x; idle RSS <= 10 MiB; /healthz <= 10 ms; binary <= 30 MB"
    );
}

/// One table: per connection count, the broker's medians against the
/// baseline's, as ratios.
fn print_table(rows: &[(usize, Vec<Summary>, Vec<Summary>)]) {
    println!(
        "{:<6} {:<10} {:>10} {:>10} {:>7} | {:>10} {:>10} {:>7} | {:>10} {:>10} {:>7} | {:>9} {:>9} {:>7}",
        "conns",
        "",
        "base p50",
        "broker",
        "ratio",
        "base p99",
        "broker",
        "ratio",
        "base rps",
        "broker",
        "ratio",
        "base cpu",
        "broker",
        "ratio"
    );
    for (conns, b, k) in rows {
        let (bp50, kp50) = (med(b, |s| s.p50_us), med(k, |s| s.p50_us));
        let (bp99, kp99) = (med(b, |s| s.p99_us), med(k, |s| s.p99_us));
        let (brps, krps) = (med(b, |s| s.rps), med(k, |s| s.rps));
        let (bcpu, kcpu) = (med(b, |s| s.cpu_us_per_req), med(k, |s| s.cpu_us_per_req));
        println!(
            "{:<6} {:<10} {:>8.1}us {:>8.1}us {:>6.2}x | {:>8.1}us {:>8.1}us {:>6.2}x | {:>10.0} {:>10.0} {:>6.2}x | {:>7.1}us {:>7.1}us {:>6.2}x",
            conns,
            "",
            bp50,
            kp50,
            kp50 / bp50,
            bp99,
            kp99,
            kp99 / bp99,
            brps,
            krps,
            krps / brps,
            bcpu,
            kcpu,
            kcpu / bcpu
        );
    }
}

/// The soak: `SOAK_REQUESTS` (default 300000) mixed requests over 16
/// connections (authorized and denied reads, lists, whoami, 1 in 64 a
/// durable write); RSS sampled throughout. Fails (exit 1) if RSS grows by
/// more than 1 MiB after warm-up or if audit lines differ from requests.
fn soak() {
    let total: usize = std::env::var("SOAK_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300_000);
    let conns = 16;
    let dir = tempfile::tempdir().unwrap();
    let (broker, _, _) = start_broker(dir.path(), "");
    let audit_path = dir.path().join("audit.log");
    let audit_before = std::fs::read_to_string(&audit_path)
        .unwrap()
        .lines()
        .count();
    let auth = format!("authorization: Bearer {TOKEN}\r\n");
    let requests: Vec<(Vec<u8>, u16)> = vec![
        (
            b"GET /v1/secrets/acme/tasks/t-42/db HTTP/1.1\r\nhost: b\r\n\r\n".to_vec(),
            200,
        ),
        (
            b"GET /v1/secrets/acme/tasks/t-43/db HTTP/1.1\r\nhost: b\r\n\r\n".to_vec(),
            403,
        ),
        (
            b"GET /v1/secrets/acme/tasks/t-42/ HTTP/1.1\r\nhost: b\r\n\r\n".to_vec(),
            200,
        ),
        (b"GET /v1/whoami HTTP/1.1\r\nhost: b\r\n\r\n".to_vec(), 200),
        (
            b"GET /v1/secrets/acme/tasks/t-42/nope HTTP/1.1\r\nhost: b\r\n\r\n".to_vec(),
            404,
        ),
        (
            format!("GET /v1/secrets/acme/tasks/t-42/db HTTP/1.1\r\nhost: b\r\n{auth}\r\n")
                .into_bytes(),
            403,
        ),
    ];
    let write = format!(
        "PUT /v1/secrets/acme/tasks/t-42/db HTTP/1.1\r\nhost: b\r\n{auth}content-type: application/json\r\ncontent-length: 24\r\n\r\n{{\"value\":\"0123456789ab\"}}"
    )
    .into_bytes();
    let pid = broker.child.id();
    let per_conn = total / conns;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            let (socket, requests, write, done) = (
                broker.socket.clone(),
                requests.clone(),
                write.clone(),
                std::sync::Arc::clone(&done),
            );
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).unwrap();
                let mut buf = Vec::with_capacity(1024);
                for i in 0..per_conn {
                    let (req, want) = if (i + c) % 64 == 0 {
                        (&write, 200)
                    } else {
                        let (r, w) = &requests[(i + c) % requests.len()];
                        (r, *w)
                    };
                    s.write_all(req).unwrap();
                    let got = read_status(&mut s, &mut buf);
                    assert_eq!(got, want, "{}", String::from_utf8_lossy(req));
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut samples = Vec::new();
    while done.load(std::sync::atomic::Ordering::Relaxed) < per_conn * conns
        && threads.iter().any(|t| !t.is_finished())
    {
        samples.push((
            done.load(std::sync::atomic::Ordering::Relaxed),
            rss_kib(pid),
        ));
        std::thread::sleep(Duration::from_millis(250));
    }
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed();
    let sent = per_conn * conns;
    samples.push((sent, rss_kib(pid)));
    // Warm-up: the first 10% of requests fill caches and allocator pools.
    let warm = samples
        .iter()
        .find(|(n, _)| *n >= sent / 10)
        .map(|s| s.1)
        .unwrap_or(samples[0].1);
    let last = samples.last().map(|s| s.1).unwrap_or(0);
    let max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    std::thread::sleep(Duration::from_millis(300));
    let audit_lines = std::fs::read_to_string(&audit_path)
        .unwrap()
        .lines()
        .count()
        - audit_before;
    println!(
        "soak: {sent} requests in {:.1}s ({:.0}/s) over {conns} connections; RSS after warm-up {:.1} MiB, at end {:.1} MiB, max {:.1} MiB; audit lines {audit_lines}",
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64(),
        warm as f64 / 1024.0,
        last as f64 / 1024.0,
        max as f64 / 1024.0
    );
    let growth = last as i64 - warm as i64;
    let mut ok = true;
    if growth > 1024 {
        println!("soak: FAIL: RSS grew {growth} KiB after warm-up (limit 1024 KiB)");
        ok = false;
    }
    if audit_lines != sent {
        println!("soak: FAIL: {audit_lines} audit lines for {sent} requests");
        ok = false;
    }
    if !ok {
        std::process::exit(1);
    }
    println!("soak: ok (RSS flat within 1 MiB, one audit line per request)");
}
