//! Scale curves: how the broker's costs grow with the work it holds.
//!
//! - **Secrets** (1k, 100k, 1M in the embedded store; `SCALE_SECRETS`):
//!   the real binary over its socket, one broker per size, all up at once
//!   and measured in turn in each round: cached read p50 (one keep-alive
//!   connection), uncached read p50 (`Cache-Control: no-cache`, a random
//!   secret of the store each time), durable writes per second with 1 and
//!   16 writers (one keep-alive connection each), listing a scope of
//!   `min(N, 10k)` secrets (time, and the broker's peak RSS over its RSS
//!   just before, from `/proc/PID/status` after resetting `VmHWM` through
//!   `/proc/PID/clear_refs`), the store file's size and the start-up time
//!   (spawn → first `200` from `/healthz`, after a clean `SIGTERM` stop).
//!   The stores are filled through the library (`EmbeddedStore::put`, the
//!   path the broker's own writes take, 4096 in flight so that each of the
//!   writer's group commits carries its full batch of 256), not over the
//!   socket: one HTTP request per secret would take minutes for 1M.
//! - **Policies** (10, 1,000, 10,000 operator policies on top of the
//!   shipped five; `SCALE_POLICIES`): the library's [`Authorizer`], a
//!   task's read decided cold (Cedar evaluates the request: what every
//!   decision-cache miss costs) and warm (a decision-cache hit: what a
//!   repeated read costs), and the set's compile time.
//! - **Principals** (10 and 10,000; `SCALE_PRINCIPALS`): the library's
//!   [`Resolver`], one lookup by bearer token and one by peer uid, and one
//!   by client certificate among as many certificate principals (the TLS
//!   listener's lookup).
//!
//! Every row is a median over `SCALE_ROUNDS` rounds (default 7) with the
//! min-max spread; growth factors are the median of the same-round ratios
//! to the smallest size. No assertions: the tables are the result.
//!
//! Run: `scripts/bench scale` (release; `cargo bench --bench scale`), or
//! `cargo test --bench scale -- --bench` for a quick debug pass with small
//! sizes (e.g. `SCALE_SECRETS=1000,20000`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/common/broker.rs"]
mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secret_broker::authz::{Action, Authorizer, PolicySource, RequestContext, Resource, Transport};
use secret_broker::identity::cert::CertSubject;
use secret_broker::identity::{
    CertRule, PeerCert, PeerCred, Principal, PrincipalKind, PrincipalSpec, Resolver, TlsPeer,
    TokenDigest,
};
use secret_broker::secret::{ScopePath, SecretBytes, SecretPath};
use secret_broker::store::embedded::EmbeddedStore;
use secret_broker::store::{Labels, PutRequest, Store};

const BROKER: &str = env!("CARGO_BIN_EXE_secret-broker");
const TOKEN: &str = "bench-platform-token";
/// Secrets per list scope (`acme/tasks/t-42/s000/` holds the first ones).
const LIST: usize = 10_000;

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|s| s.split(',').map(|v| v.trim().parse().unwrap()).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// A table's head: one column per size of `what`, then the growth from the
/// smallest size to the largest.
fn table_head(sizes: &[usize], what: &str) {
    let mut head = "| row |".to_owned();
    let mut rule = "|---|".to_owned();
    for &n in sizes {
        head += &format!(" {} {what} |", count(n));
        rule += "---|";
    }
    head += &format!(
        " growth {}/{} |",
        count(sizes[sizes.len() - 1]),
        count(sizes[0])
    );
    rule += "---|";
    println!("{head}\n{rule}");
}

/// A row of per-size samples (one per round), with the median of the
/// same-round ratios of the largest size to the smallest.
fn growth_row(name: &str, per_size: &[Vec<f64>]) {
    let mut line = format!("| {name} |");
    for s in per_size {
        line += &format!(" {} |", show(s, 0));
    }
    let (first, last) = (&per_size[0], &per_size[per_size.len() - 1]);
    let ratios: Vec<f64> = last.iter().zip(first).map(|(l, f)| l / f).collect();
    println!("{line} {}x |", show(&ratios, 2));
}

/// The path of the `i`th filler secret: 10k per scope, so the scope
/// `acme/tasks/t-42/s000/` holds `min(N, 10k)` of them.
fn secret_path(i: usize) -> String {
    format!("acme/tasks/t-42/s{:03}/{:05}", i / LIST, i % LIST)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

/// `median (min-max)` of `v`, with `digits` decimals.
fn show(v: &[f64], digits: usize) -> String {
    let (lo, hi) = spread(v);
    format!(
        "{:.digits$} ({lo:.digits$}-{hi:.digits$})",
        median(v.to_vec())
    )
}

fn count(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

// ---------------------------------------------------------------- secrets

/// Fills a fresh store at `dir/store.redb` with `n` secrets (and the read
/// target `acme/tasks/t-42/db`) through the library.
fn fill(dir: &Path, n: usize) -> Duration {
    let key = dir.join("store.key");
    std::fs::write(&key, [9u8; 32]).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    rt.block_on(async {
        let store = Arc::new(EmbeddedStore::open(&dir.join("store.redb"), &key).unwrap());
        let put = |store: Arc<EmbeddedStore>, path: String, labels: Labels| async move {
            let path = SecretPath::parse(&path).unwrap();
            let req = PutRequest {
                value: SecretBytes::new(b"0123456789abcdef0123456789abcdef".to_vec()),
                labels,
                create_only: false,
            };
            store.put(&path, req).await.unwrap();
        };
        put(
            Arc::clone(&store),
            "acme/tasks/t-42/db".to_owned(),
            Labels::new(),
        )
        .await;
        let mut next = 0;
        while next < n {
            let end = (next + 4096).min(n);
            let tasks: Vec<_> = (next..end)
                .map(|i| {
                    // One label each, as an operator would tag secrets.
                    let labels = Labels::from([("team".to_owned(), format!("t{}", i % 50))]);
                    tokio::spawn(put(Arc::clone(&store), secret_path(i), labels))
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            next = end;
        }
    });
    started.elapsed()
}

struct Broker {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    config: PathBuf,
    n: usize,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Broker {
    /// A broker over the store in `dir`: the task reads by peer uid (no
    /// token hashing), the platform writes with a bearer token.
    fn new(dir: &Path, n: usize) -> Self {
        let uid = rustix::process::geteuid().as_raw();
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let socket = dir.join("broker.sock");
        let config = dir.join("broker.toml");
        std::fs::write(
            &config,
            format!(
                "[listen]\nsocket = {socket:?}\n[store]\npath = {db:?}\nkey_file = {key:?}\n[policy]\ndir = {policies:?}\n\
                 [audit]\nsink = \"file:{audit}\"\n[log]\nlevel = \"warn\"\n\
                 [[principal]]\nname = \"task\"\ntype = \"Task\"\nscope = \"acme/tasks/t-42\"\nuid = {uid}\n\
                 [[principal]]\nname = \"platform\"\ntype = \"Component\"\nroles = [\"platform\"]\ntoken_sha256 = \"{digest}\"\n",
                db = dir.join("store.redb"),
                key = dir.join("store.key"),
                audit = dir.join("audit.log").display(),
                digest = common::sha256_hex(TOKEN),
            ),
        )
        .unwrap();
        let mut b = Broker {
            child: None,
            dir: dir.to_owned(),
            socket,
            config,
            n,
        };
        b.start();
        b
    }

    /// Spawns the broker; the time to its first `200` from `/healthz`.
    fn start(&mut self) -> Duration {
        let _ = std::fs::remove_file(&self.socket);
        let started = Instant::now();
        let child = Command::new(BROKER)
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        loop {
            if let Ok(mut s) = UnixStream::connect(&self.socket) {
                let _ =
                    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n");
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out);
                if out.starts_with(b"HTTP/1.1 200") {
                    return started.elapsed();
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "broker did not come up"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Stops the broker cleanly (`SIGTERM`, so redb closes its file and
    /// the next start needs no repair) and starts it again.
    fn restart(&mut self) -> Duration {
        let mut child = self.child.take().unwrap();
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        child.wait().unwrap();
        self.start()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
}

/// p50 (µs) of `n` reads over one keep-alive connection; `fresh` reads a
/// random secret of the store past the cache each time.
fn reads(b: &Broker, n: usize, fresh: bool, seed: u64) -> f64 {
    let mut s = UnixStream::connect(&b.socket).unwrap();
    let mut buf = Vec::new();
    let mut x = seed | 1;
    let mut lat: Vec<f64> = (0..n)
        .map(|_| {
            let req = if fresh {
                // xorshift: a spread of keys over the whole store.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x % b.n as u64) as usize;
                format!(
                    "GET /v1/secrets/{} HTTP/1.1\r\nhost: b\r\ncache-control: no-cache\r\n\r\n",
                    secret_path(i)
                )
            } else {
                "GET /v1/secrets/acme/tasks/t-42/db HTTP/1.1\r\nhost: b\r\n\r\n".to_owned()
            };
            let t = Instant::now();
            s.write_all(req.as_bytes()).unwrap();
            let status = common::read_framed(&mut s, &mut buf);
            let d = t.elapsed();
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&buf));
            d.as_secs_f64() * 1e6
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    lat[lat.len() / 2]
}

/// Durable writes per second from `writers` connections over `secs`.
fn writes(b: &Broker, writers: usize, secs: f64, tag: &str) -> f64 {
    let deadline = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let socket = b.socket.clone();
            // 64 secrets per writer, overwritten in turn: the store's
            // secret count stays what the row says (versions accumulate).
            let tag = format!("{tag}{w}");
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).unwrap();
                let mut buf = Vec::new();
                let body = br#"{"value":"0123456789abcdef"}"#;
                let mut done = 0usize;
                while start.elapsed() < deadline {
                    let req = format!(
                        "PUT /v1/secrets/acme/tasks/t-42/w/{tag}-{} HTTP/1.1\r\nhost: b\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        done % 64,
                        body.len()
                    );
                    s.write_all(req.as_bytes()).unwrap();
                    s.write_all(body).unwrap();
                    let status = common::read_framed(&mut s, &mut buf);
                    assert!(status == 201 || status == 200, "{}", String::from_utf8_lossy(&buf));
                    done += 1;
                }
                done
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

fn status_kib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap())
        .unwrap()
}

/// Lists `acme/tasks/t-42/s000/`: (ms, entries, peak RSS over the RSS
/// just before, MiB).
fn list(b: &Broker) -> (f64, usize, f64) {
    let pid = b.pid();
    // "5" resets the peak RSS (VmHWM) to the current RSS.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = status_kib(pid, "VmRSS:");
    let t = Instant::now();
    let mut s = UnixStream::connect(&b.socket).unwrap();
    s.write_all(
        b"GET /v1/secrets/acme/tasks/t-42/s000/ HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out[..out.len().min(500)])
    );
    let peak = status_kib(pid, "VmHWM:");
    let entries = out.windows(8).filter(|w| w == b"\"path\":\"").count();
    (ms, entries, (peak - before) / 1024.0)
}

#[derive(Default)]
struct SecretRows {
    cached: Vec<f64>,
    uncached: Vec<f64>,
    w1: Vec<f64>,
    w16: Vec<f64>,
    list_ms: Vec<f64>,
    list_mib: Vec<f64>,
    startup_ms: Vec<f64>,
    entries: usize,
    file_mib: f64,
    open_ms: f64,
    repaired: bool,
    fill_s: f64,
}

fn secrets(rounds: usize) {
    let sizes = env_list("SCALE_SECRETS", &[1_000, 100_000, 1_000_000]);
    let dirs: Vec<tempfile::TempDir> = sizes
        .iter()
        .map(|_| {
            tempfile::Builder::new()
                .prefix("sb-scale.")
                .tempdir_in(std::env::var("SCALE_DIR").unwrap_or_else(|_| "/var/tmp".into()))
                .unwrap()
        })
        .collect();
    let mut rows: Vec<SecretRows> = sizes.iter().map(|_| SecretRows::default()).collect();
    for ((dir, &n), row) in dirs.iter().zip(&sizes).zip(&mut rows) {
        row.fill_s = fill(dir.path(), n).as_secs_f64();
        eprintln!("filled {} secrets in {:.1} s", count(n), row.fill_s);
    }
    let mut brokers: Vec<Broker> = dirs
        .iter()
        .zip(&sizes)
        .map(|(d, &n)| Broker::new(d.path(), n))
        .collect();
    for (b, row) in brokers.iter().zip(&mut rows) {
        row.file_mib =
            std::fs::metadata(b.dir.join("store.redb")).unwrap().len() as f64 / (1024.0 * 1024.0);
    }
    for round in 0..rounds {
        for (b, row) in brokers.iter_mut().zip(&mut rows) {
            // Warm-up (discarded): after the previous round's restart, the
            // first reads fault in the binary and the store's pages.
            reads(b, 500, false, 1);
            reads(b, 500, true, 2);
            row.cached.push(reads(b, 2000, false, 0));
            row.uncached.push(reads(b, 2000, true, 7 + round as u64));
            row.w1.push(writes(b, 1, 1.0, "a"));
            row.w16.push(writes(b, 16, 1.0, "b"));
            let (ms, entries, mib) = list(b);
            row.list_ms.push(ms);
            row.list_mib.push(mib);
            row.entries = entries;
            row.startup_ms.push(b.restart().as_secs_f64() * 1e3);
        }
        eprintln!("secrets: round {} of {rounds} done", round + 1);
    }
    // Where start-up time goes: stop each broker cleanly and open its
    // store file with redb alone, noting whether redb had to repair it
    // (a file not closed cleanly is walked whole on open).
    for (b, row) in brokers.iter_mut().zip(&mut rows) {
        let mut child = b.child.take().unwrap();
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        child.wait().unwrap();
        let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&repaired);
        let t = Instant::now();
        let db = redb::Database::builder()
            .set_repair_callback(move |_| flag.store(true, std::sync::atomic::Ordering::Relaxed))
            .create(b.dir.join("store.redb"))
            .unwrap();
        row.open_ms = t.elapsed().as_secs_f64() * 1e3;
        row.repaired = repaired.load(std::sync::atomic::Ordering::Relaxed);
        drop(db);
    }
    drop(brokers);

    println!(
        "\n### Secrets in the embedded store (real binary over the socket; median (min-max) of {rounds} rounds)\n"
    );
    table_head(&sizes, "secrets");
    let first = &rows[0];
    let last = &rows[rows.len() - 1];
    // List rows grow against the smallest store whose listed scope holds
    // as many entries as the largest one's (a 1k store lists only 1k).
    let same_list = rows
        .iter()
        .position(|r| r.entries == last.entries)
        .unwrap_or(0);
    let growth = |f: &dyn Fn(&SecretRows) -> &Vec<f64>, base: &SecretRows| -> String {
        let ratios: Vec<f64> = f(last).iter().zip(f(base)).map(|(l, f)| l / f).collect();
        format!("{}x", show(&ratios, 2))
    };
    type Field = dyn Fn(&SecretRows) -> &Vec<f64>;
    let table: [(&str, usize, &Field); 7] = [
        ("cached read p50 (µs)", 1, &|r| &r.cached),
        ("uncached read p50 (µs)", 1, &|r| &r.uncached),
        ("durable writes/s, 1 writer", 0, &|r| &r.w1),
        ("durable writes/s, 16 writers", 0, &|r| &r.w16),
        ("list one scope (ms)", 1, &|r| &r.list_ms),
        ("list: peak RSS over RSS before (MiB)", 1, &|r| &r.list_mib),
        ("start-up, spawn → /healthz (ms)", 1, &|r| &r.startup_ms),
    ];
    for (name, digits, f) in table {
        let mut line = format!("| {name} |");
        for r in &rows {
            line += &format!(" {} |", show(f(r), digits));
        }
        if name.starts_with("list") && same_list > 0 {
            line += &format!(
                " {} ({} vs {} secrets) |",
                growth(f, &rows[same_list]),
                count(sizes[sizes.len() - 1]),
                count(sizes[same_list])
            );
        } else {
            line += &format!(" {} |", growth(f, first));
        }
        println!("{line}");
    }
    let mut line = "| entries in the listed scope |".to_owned();
    for r in &rows {
        line += &format!(" {} |", r.entries);
    }
    println!("{line} |");
    let mut line = "| store file (MiB) |".to_owned();
    for r in &rows {
        line += &format!(" {:.1} |", r.file_mib);
    }
    println!(
        "{line} {:.0}x |",
        rows[rows.len() - 1].file_mib / rows[0].file_mib
    );
    let mut line = "| open the store file with redb alone, after a clean stop (ms) |".to_owned();
    for r in &rows {
        line += &format!(
            " {:.1}{} |",
            r.open_ms,
            if r.repaired { " (repaired)" } else { "" }
        );
    }
    println!("{line} {:.0}x |", last.open_ms / first.open_ms);
    let mut line = "| fill through the library (s, not a broker row) |".to_owned();
    for r in &rows {
        line += &format!(" {:.1} |", r.fill_s);
    }
    println!("{line} |");
}

// ---------------------------------------------------------------- policies

fn task() -> Principal {
    Principal {
        name: "task-42".into(),
        kind: PrincipalKind::Task,
        roles: vec![],
        scope: Some(ScopePath::parse("acme/tasks/t-42").unwrap()),
    }
}

fn ctx() -> RequestContext<'static> {
    RequestContext {
        transport: Transport::Unix,
        peer: Some(PeerCred {
            uid: 2000,
            gid: 2000,
            pid: Some(77),
        }),
        request_id: "bench-1",
        spiffe_id: None,
    }
}

/// `n` operator policies of two common shapes: a tenant's tasks may read
/// their tenant's tree, a tenant's service component may write it. None
/// applies to the benched request, but Cedar still has to look at each.
fn operator_policies(n: usize) -> PolicySource {
    let mut text = String::new();
    for i in 0..n {
        if i % 2 == 0 {
            text += &format!(
                "@id(\"tenant-read-{i}\")\npermit (principal is SecretBroker::Task, action == SecretBroker::Action::\"read\", resource in SecretBroker::Scope::\"tenants/t-{i}\")\nwhen {{ context.transport == \"unix\" }};\n"
            );
        } else {
            text += &format!(
                "@id(\"tenant-write-{i}\")\npermit (principal == SecretBroker::Component::\"svc-{i}\", action in [SecretBroker::Action::\"write\", SecretBroker::Action::\"delete\"], resource in SecretBroker::Scope::\"tenants/t-{i}\");\n"
            );
        }
    }
    PolicySource {
        name: "policies/operator.cedar".to_owned(),
        text,
    }
}

/// Median ns per call of `f` over batches of `batch` calls for about `secs`.
fn per_call(secs: f64, batch: usize, mut f: impl FnMut()) -> f64 {
    let mut per: Vec<f64> = Vec::new();
    let start = Instant::now();
    while per.len() < 5 || start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        per.push(t.elapsed().as_nanos() as f64 / batch as f64);
    }
    median(per)
}

fn policies(rounds: usize) {
    let sizes = env_list("SCALE_POLICIES", &[10, 1_000, 10_000]);
    let who = task();
    let path = SecretPath::parse("acme/tasks/t-42/db").unwrap();
    let ctx = ctx();
    let resource = Resource::Secret {
        path: &path,
        labels: None,
    };
    let mut compile_ms: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    let authorizers: Vec<Authorizer> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            let (schema, mut shipped) = secret_broker::authz::shipped_sources();
            shipped.push(operator_policies(n));
            let t = Instant::now();
            let a = Authorizer::from_sources(schema, shipped).unwrap();
            compile_ms[k].push(t.elapsed().as_secs_f64() * 1e3);
            a
        })
        .collect();
    let mut cold: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    let mut warm: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    for _ in 0..rounds {
        for (k, a) in authorizers.iter().enumerate() {
            cold[k].push(per_call(0.3, 5, || {
                assert!(
                    a.decide_uncached(&who, Action::Read, resource, &ctx)
                        .allowed
                );
            }));
            warm[k].push(per_call(0.2, 1000, || {
                assert!(a.decide(&who, Action::Read, resource, &ctx).allowed);
            }));
        }
    }
    println!(
        "\n### Policies (library `Authorizer`, a task's read of its own secret; ns per decision, median (min-max) of {rounds} rounds)\n"
    );
    table_head(&sizes, "operator policies");
    for (name, v) in [
        ("cold (Cedar evaluates; a cache miss)", &cold),
        ("warm (decision-cache hit)", &warm),
    ] {
        growth_row(name, v);
    }
    let mut line = "| compile the set (ms, once per load/reload) |".to_owned();
    for s in &compile_ms {
        line += &format!(" {:.1} |", s[0]);
    }
    let last = compile_ms.len() - 1;
    println!("{line} {:.0}x |", compile_ms[last][0] / compile_ms[0][0]);
}

// -------------------------------------------------------------- principals

/// A TLS client as the listener hands it over: its leaf certificate, for
/// client authentication, with `uri` as its one URI SAN.
fn client_cert(uri: &str) -> TlsPeer {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
    let cert = params
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    TlsPeer {
        addr: "127.0.0.1:1".into(),
        cert: PeerCert::parse(cert.der()),
    }
}

fn principals(rounds: usize) {
    let sizes = env_list("SCALE_PRINCIPALS", &[10, 10_000]);
    // Half token principals, half uid principals; the benched ones sit in
    // the middle of the list.
    let resolvers: Vec<Resolver> = sizes
        .iter()
        .map(|&n| {
            let specs = (0..n)
                .map(|i| {
                    let by_token = i % 2 == 0;
                    PrincipalSpec {
                        principal: Principal {
                            name: format!("p-{i}"),
                            kind: PrincipalKind::Task,
                            roles: vec![],
                            scope: Some(ScopePath::parse(&format!("tenants/t-{i}")).unwrap()),
                        },
                        uid: (!by_token).then_some(10_000 + i as u32),
                        gid: None,
                        token: by_token
                            .then(|| TokenDigest::of_token(format!("tok-{i}").as_bytes())),
                        cert: None,
                    }
                })
                .collect();
            Resolver::new(specs)
        })
        .collect();
    // As many certificate principals (the TLS listener's), each by its
    // SPIFFE id; the benched client is the one in the middle.
    let cert_resolvers: Vec<(Resolver, TlsPeer)> = sizes
        .iter()
        .map(|&n| {
            let specs = (0..n)
                .map(|i| PrincipalSpec {
                    principal: Principal {
                        name: format!("c-{i}"),
                        kind: PrincipalKind::Component,
                        roles: vec![],
                        scope: None,
                    },
                    uid: None,
                    gid: None,
                    token: None,
                    cert: Some(CertRule {
                        subject: CertSubject::SpiffeId(format!("spiffe://bench.example/c-{i}")),
                        spki_sha256: None,
                    }),
                })
                .collect();
            (
                Resolver::new(specs),
                client_cert(&format!("spiffe://bench.example/c-{}", n / 2)),
            )
        })
        .collect();
    let mut by_token: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    let mut by_uid: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    let mut by_cert: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    for _ in 0..rounds {
        for (k, ((r, peer), &n)) in cert_resolvers.iter().zip(&sizes).enumerate() {
            let want = format!("c-{}", n / 2);
            by_cert[k].push(per_call(0.2, 1000, || {
                assert_eq!(r.resolve_cert(peer, 0).unwrap().1.name, want);
            }));
        }
        for (k, (r, &n)) in resolvers.iter().zip(&sizes).enumerate() {
            let t = n / 2 / 2 * 2;
            let digest = TokenDigest::of_token(format!("tok-{t}").as_bytes());
            by_token[k].push(per_call(0.2, 1000, || {
                assert_eq!(
                    r.resolve(None, Some(&digest)).unwrap().name,
                    format!("p-{t}")
                );
            }));
            let u = t + 1;
            let peer = PeerCred {
                uid: 10_000 + u as u32,
                gid: 1,
                pid: Some(1),
            };
            by_uid[k].push(per_call(0.2, 1000, || {
                assert!(r.resolve(Some(&peer), None).is_ok());
            }));
        }
    }
    println!(
        "\n### Principals (library `Resolver`; ns per lookup, median (min-max) of {rounds} rounds)\n"
    );
    table_head(&sizes, "principals");
    for (name, v) in [
        ("by bearer token", &by_token),
        ("by peer uid", &by_uid),
        (
            "by client certificate (as many certificate principals)",
            &by_cert,
        ),
    ] {
        growth_row(name, v);
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale bench: skipped (run `scripts/bench scale` or `cargo bench --bench scale`)");
        return;
    }
    let rounds: usize = std::env::var("SCALE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let only = std::env::var("SCALE_ONLY").unwrap_or_default();
    let started = Instant::now();
    if only.is_empty() || only.contains("principals") {
        principals(rounds);
    }
    if only.is_empty() || only.contains("policies") {
        policies(rounds);
    }
    if only.is_empty() || only.contains("secrets") {
        secrets(rounds);
    }
    eprintln!("scale bench: {:.0} s", started.elapsed().as_secs_f64());
}
