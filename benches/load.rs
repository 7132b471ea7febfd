//! End-to-end load benchmark over real Unix sockets: the broker serving a
//! cached, authorized, audited read versus the bare hyper baseline
//! (`examples/baseline_server.rs`), interleaved in one run, as ratios.
//! Also: idle RSS, RSS growth under load, time to the first `/healthz`,
//! and the binary's size. No assertions: the table is the result.
//!
//! Two clients drive the servers, in the same rounds: a blocking one (one
//! thread per keep-alive connection) and a single-threaded async one (one
//! tokio current-thread runtime driving every connection, the way wrk and
//! the async clients of most languages do). Neither pipelines: one request
//! in flight per connection. `LOAD_CLIENTS` (`both`, the default;
//! `blocking`; `async`) picks them. Each ratio is the median of the
//! same-round ratios, with their spread (min-max) beside it.
//!
//! `LOAD_RUNTIME_EXTRA` adds lines to the brokers' `[runtime]` section
//! (e.g. `idle_spin = "0s"`).
//!
//! `LOAD_BROKER_B=/path/to/secret-broker` runs a second broker binary (e.g.
//! a copy of an earlier release build) in the same rounds, for A/B figures.
//! `LOAD_PROFILE=broker|baseline|b` instead starts only that server, prints
//! its pid, waits `LOAD_PROFILE_WAIT` seconds (default 2; attach `perf` or
//! `strace` meanwhile), then drives it with the chosen client
//! (`LOAD_CLIENTS`, default async) over `LOAD_CONNS` (default 16)
//! connections for `LOAD_SECONDS`, and prints CPU, context switches and
//! wake-ups per request.
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
/// The header that frames each response the clients read.
const CONTENT_LENGTH: &str = "content-length:";
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
    start_broker_bin(BROKER, dir, extra)
}

/// [`start_broker`] with another broker binary.
fn start_broker_bin(bin: &str, dir: &Path, extra: &str) -> (Server, Duration, u64) {
    std::fs::create_dir_all(dir).unwrap();
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
    let child = Command::new(bin)
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

/// The status of the one HTTP response (content-length framed) in `buf`,
/// once it is all there.
fn complete_status(buf: &[u8]) -> Option<u16> {
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head_text = std::str::from_utf8(&buf[..head])
        .unwrap()
        .to_ascii_lowercase();
    let len: usize = head_text
        .lines()
        .find_map(|l| l.strip_prefix(CONTENT_LENGTH))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    (buf.len() >= head + 4 + len).then(|| head_text[9..12].parse().unwrap())
}

/// Reads one HTTP response (content-length framed) from `s`; returns its status.
fn read_status(s: &mut UnixStream, buf: &mut Vec<u8>) -> u16 {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(status) = complete_status(buf) {
            return status;
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
    /// The server's voluntary context switches (each a sleep, so a wake-up
    /// after it), all threads.
    wakeups: u64,
    /// Its involuntary ones (preempted).
    preempted: u64,
}

/// Which client drives the connections.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Client {
    /// One thread per connection, blocking reads and writes.
    Blocking,
    /// One thread, one tokio current-thread runtime, every connection.
    Async,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Blocking => "blocking client (one thread per connection)",
            Client::Async => "async client (one thread, one event loop, every connection)",
        }
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Voluntary and involuntary context switches of every thread of `pid`.
fn ctx_switches(pid: u32) -> (u64, u64) {
    let (mut vol, mut invol) = (0, 0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            let field =
                |prefix: &str| -> Option<u64> { line.strip_prefix(prefix)?.trim().parse().ok() };
            if let Some(n) = field("voluntary_ctxt_switches:") {
                vol += n;
            } else if let Some(n) = field("nonvoluntary_ctxt_switches:") {
                invol += n;
            }
        }
    }
    (vol, invol)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap())
        .unwrap_or(0)
}

/// Drives `server` over `conns` keep-alive connections for `secs` seconds
/// with `client`, one request in flight per connection.
fn load(server: &Server, conns: usize, secs: f64, client: Client) -> Run {
    let pid = server.child.id();
    let before = cpu_ticks(pid);
    let (vol, invol) = ctx_switches(pid);
    let start = Instant::now();
    let latencies_ns = match client {
        Client::Blocking => load_blocking(server, conns, secs),
        Client::Async => load_async(server, conns, secs),
    };
    let elapsed = start.elapsed();
    let (vol2, invol2) = ctx_switches(pid);
    Run {
        latencies_ns,
        elapsed,
        cpu_ticks: cpu_ticks(pid) - before,
        wakeups: vol2.saturating_sub(vol),
        preempted: invol2.saturating_sub(invol),
    }
}

fn load_blocking(server: &Server, conns: usize, secs: f64) -> Vec<u64> {
    let deadline = Duration::from_secs_f64(secs);
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
    latencies_ns
}

/// One thread, one current-thread tokio runtime, a task per connection.
fn load_async(server: &Server, conns: usize, secs: f64) -> Vec<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut streams = Vec::with_capacity(conns);
        for _ in 0..conns {
            streams.push(
                tokio::net::UnixStream::connect(&server.socket)
                    .await
                    .unwrap(),
            );
        }
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let mut set = tokio::task::JoinSet::new();
        for mut s in streams {
            let request = server.request.clone();
            set.spawn(async move {
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 4096];
                let mut lat = Vec::with_capacity(200_000);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    s.write_all(&request).await.unwrap();
                    buf.clear();
                    let status = loop {
                        let n = s.read(&mut chunk).await.unwrap();
                        assert!(n > 0, "server closed the connection");
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(status) = complete_status(&buf) {
                            break status;
                        }
                    };
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&buf));
                    lat.push(t.elapsed().as_nanos() as u64);
                }
                lat
            });
        }
        let mut latencies_ns = Vec::new();
        while let Some(lat) = set.join_next().await {
            latencies_ns.extend(lat.unwrap());
        }
        latencies_ns
    })
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
    wakeups_per_req: f64,
    preempted_per_req: f64,
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
        wakeups_per_req: r.wakeups as f64 / n,
        preempted_per_req: r.preempted as f64 / n,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn med(runs: &[Summary], f: impl Fn(&Summary) -> f64) -> f64 {
    median(runs.iter().map(f).collect())
}

/// The median of the same-round ratios `other / base` of `f`, and their
/// smallest and largest.
fn ratio(base: &[Summary], other: &[Summary], f: impl Fn(&Summary) -> f64) -> (f64, f64, f64) {
    let r: Vec<f64> = base.iter().zip(other).map(|(b, o)| f(o) / f(b)).collect();
    let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(r), lo, hi)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn clients() -> Vec<Client> {
    match std::env::var("LOAD_CLIENTS").as_deref() {
        Ok("blocking") => vec![Client::Blocking],
        Ok("async") => vec![Client::Async],
        _ => vec![Client::Blocking, Client::Async],
    }
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
    let secs: f64 = env_or("LOAD_SECONDS", 3.0);
    let rounds: usize = env_or("LOAD_ROUNDS", 3);
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
    let runtime_section = format!(
        "[runtime]\nflavor = \"{flavor}\"\n{}\n",
        std::env::var("LOAD_RUNTIME_EXTRA").unwrap_or_default()
    );
    let broker_b = std::env::var("LOAD_BROKER_B").ok();

    if let Ok(which) = std::env::var("LOAD_PROFILE") {
        let server = match which.as_str() {
            "baseline" => start_baseline(dir.path(), &reference),
            "b" => {
                let bin = broker_b
                    .as_deref()
                    .expect("LOAD_PROFILE=b needs LOAD_BROKER_B");
                start_broker_bin(bin, &dir.path().join("b"), &runtime_section).0
            }
            _ => start_broker(dir.path(), &runtime_section).0,
        };
        profile(&server, secs);
        return;
    }

    // Startup: median time to the first /healthz over 5 spawns; idle RSS.
    let mut firsts = Vec::new();
    let (mut idle_rss, mut written_rss) = (0, 0);
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
    let b = broker_b
        .as_deref()
        .map(|bin| start_broker_bin(bin, &dir.path().join("b"), &runtime_section).0);
    // The servers, in the order each round runs them.
    let mut servers: Vec<&Server> = vec![&baseline, &broker];
    if let Some(b) = &b {
        servers.push(b);
    }
    if let Some(s) = &same_shape {
        servers.push(s);
    }
    let clients = clients();
    // Warm up (and the broker's read cache and decision cache).
    for s in &servers {
        for &c in &clients {
            load(s, 1, 0.5, c);
        }
    }
    let rss_before = rss_kib(broker.child.id());

    // runs[client][conns][server] = one Summary per round.
    let conn_counts = [1usize, 16];
    let mut runs = vec![vec![vec![Vec::new(); servers.len()]; conn_counts.len()]; clients.len()];
    let mut total_requests = 0usize;
    for (ci, &conns) in conn_counts.iter().enumerate() {
        for _ in 0..rounds {
            for (k, &client) in clients.iter().enumerate() {
                for (si, s) in servers.iter().enumerate() {
                    let r = load(s, conns, secs, client);
                    if si == 1 {
                        total_requests += r.latencies_ns.len();
                    }
                    runs[k][ci][si].push(summarize(r));
                }
            }
        }
    }
    let rss_after = rss_kib(broker.child.id());

    println!();
    println!(
        "secret-broker load bench: {rounds} interleaved rounds x {secs}s; medians of same-round ratios (min-max); broker runtime={runtime}, baseline runtime={reference}; {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let b_index = b.as_ref().map(|_| 2);
    let shape_index = same_shape.as_ref().map(|_| servers.len() - 1);
    for (k, client) in clients.iter().enumerate() {
        let table = |base: usize, other: usize| -> Vec<(usize, Vec<Summary>, Vec<Summary>)> {
            conn_counts
                .iter()
                .enumerate()
                .map(|(ci, &c)| (c, runs[k][ci][base].clone(), runs[k][ci][other].clone()))
                .collect()
        };
        println!();
        println!("{}: broker vs bare server ({reference})", client.name());
        print_table(&table(0, 1));
        if let Some(bi) = b_index {
            println!(
                "{}: broker B ({}) vs bare server ({reference})",
                client.name(),
                broker_b.as_deref().unwrap_or("")
            );
            print_table(&table(0, bi));
            println!("{}: broker vs broker B (A/B, same rounds)", client.name());
            print_table(&table(bi, 1));
        }
        if let Some(si) = shape_index {
            println!(
                "{}: broker vs a bare server of its own runtime shape ({shape})",
                client.name()
            );
            print_table(&table(si, 1));
        }
    }
    let size = std::fs::metadata(BROKER).map(|m| m.len()).unwrap_or(0);
    println!();
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
        "targets: 1 conn p50 <= 1.3x, p99 <= 1.4x; 16 conns rps >= 0.80x, p99 <= 1.5x, cpu/req <= 1.5x (under both clients); idle RSS <= 10 MiB; /healthz <= 10 ms; binary <= 30 MB"
    );
}

/// `LOAD_PROFILE`: one server, its pid printed first so that a profiler
/// can attach, then one load run and its figures per request.
fn profile(server: &Server, secs: f64) {
    let client = *clients().last().unwrap();
    let conns: usize = env_or("LOAD_CONNS", 16);
    let wait: f64 = env_or("LOAD_PROFILE_WAIT", 2.0);
    load(server, conns, 0.5, client);
    println!("pid {}", server.child.id());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs_f64(wait));
    let s = summarize(load(server, conns, secs, client));
    println!(
        "{conns} conns, {}: {:.0} requests/s, p50 {:.1}us, p99 {:.1}us, server CPU {:.2}us/request, {:.3} wake-ups (voluntary switches)/request, {:.3} preemptions/request",
        client.name(),
        s.rps,
        s.p50_us,
        s.p99_us,
        s.cpu_us_per_req,
        s.wakeups_per_req,
        s.preempted_per_req
    );
}

/// One table: per connection count, `other`'s figures against `base`'s
/// (medians of each), and the median of the same-round ratios with their
/// spread.
fn print_table(rows: &[(usize, Vec<Summary>, Vec<Summary>)]) {
    println!(
        "{:<5} | {:>8} {:>8} {:>18} | {:>8} {:>8} {:>18} | {:>7} {:>7} {:>18} | {:>6} {:>6} {:>18} | {:>5} {:>5}",
        "conns",
        "base p50",
        "other",
        "ratio (spread)",
        "base p99",
        "other",
        "ratio (spread)",
        "base rps",
        "other",
        "ratio (spread)",
        "b cpu",
        "other",
        "cpu/req ratio",
        "b wk",
        "wk"
    );
    let cell = |(m, lo, hi): (f64, f64, f64)| format!("{m:.2}x ({lo:.2}-{hi:.2})");
    for (conns, b, k) in rows {
        println!(
            "{:<5} | {:>6.1}us {:>6.1}us {:>18} | {:>6.1}us {:>6.1}us {:>18} | {:>7.0} {:>7.0} {:>18} | {:>4.1}us {:>4.1}us {:>18} | {:>5.2} {:>5.2}",
            conns,
            med(b, |s| s.p50_us),
            med(k, |s| s.p50_us),
            cell(ratio(b, k, |s| s.p50_us)),
            med(b, |s| s.p99_us),
            med(k, |s| s.p99_us),
            cell(ratio(b, k, |s| s.p99_us)),
            med(b, |s| s.rps),
            med(k, |s| s.rps),
            cell(ratio(b, k, |s| s.rps)),
            med(b, |s| s.cpu_us_per_req),
            med(k, |s| s.cpu_us_per_req),
            cell(ratio(b, k, |s| s.cpu_us_per_req)),
            med(b, |s| s.wakeups_per_req),
            med(k, |s| s.wakeups_per_req),
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
