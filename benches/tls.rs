//! A cached read over the mutual-TLS listener beside the same read over the
//! Unix socket, through the real binary: p50, p99 and throughput on one
//! keep-alive connection each (interleaved rounds, medians), and full
//! handshakes per second (a fresh connection per request: no resumption,
//! by design). No assertions: the table is the result.
//!
//! Then the same two with `TLS_BENCH_CLIENTS` client threads at once
//! (default 4): keep-alive reads, and handshakes, per second in all.
//!
//! `cargo bench --bench tls` (release); `TLS_BENCH_SECONDS` (default 3)
//! per run, `TLS_BENCH_ROUNDS` (default 3); `TLS_BENCH_BROKER` runs another
//! broker binary (an earlier build, for A/B figures).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/common/broker.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const BROKER: &str = env!("CARGO_BIN_EXE_secret-broker");
const TOKEN: &str = "bench-task-token";
const READER: &str = "spiffe://bench.example/reader";
const READ: &[u8] = b"GET /v1/secrets/acme/t/db HTTP/1.1\r\nhost: b\r\n\r\n";
const LIST: &[u8] = b"GET /v1/secrets/acme/t/many/ HTTP/1.1\r\nhost: b\r\n\r\n";
/// Secrets under the listed scope.
const LISTED: usize = 400;

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Setup {
    _broker: Broker,
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    addr: String,
    tls: Arc<rustls::ClientConfig>,
}

fn start() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    client.subject_alt_names = vec![SanType::URI(READER.try_into().unwrap())];
    let client = client.signed_by(&client_key, &ca).unwrap();
    std::fs::write(d.join("tls.crt"), server.pem()).unwrap();
    std::fs::write(d.join("tls.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(d.join("ca.crt"), ca.pem()).unwrap();
    std::fs::write(d.join("store.key"), [7u8; 32]).unwrap();
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let socket = d.join("broker.sock");
    let config = format!(
        "[listen]\nsocket = {socket:?}\n[listen.tls]\naddr = \"127.0.0.1:0\"\ncert = \"tls.crt\"\nkey = \"tls.key\"\nclient_ca = \"ca.crt\"\n\
         [store]\npath = \"store.redb\"\nkey_file = \"store.key\"\n[policy]\ndir = {policies:?}\n\
         [audit]\nsink = \"file:{audit}\"\n[log]\nlevel = \"info\"\n\
         [[principal]]\nname = \"sock-reader\"\ntype = \"Task\"\nscope = \"acme/t\"\ntoken_sha256 = \"{digest}\"\n\
         [[principal]]\nname = \"tls-reader\"\ntype = \"Task\"\nscope = \"acme/t\"\nspiffe_id = \"{READER}\"\n\
         [[principal]]\nname = \"platform\"\ntype = \"Component\"\nroles = [\"platform\"]\nuid = {uid}\n",
        audit = d.join("audit.log").display(),
        digest = common::sha256_hex(TOKEN),
        uid = rustix::process::geteuid().as_raw(),
    );
    std::fs::write(d.join("broker.toml"), config).unwrap();
    let broker = std::env::var("TLS_BENCH_BROKER").unwrap_or_else(|_| BROKER.to_owned());
    let mut child = Command::new(broker)
        .args(["serve", "--config", "broker.toml"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The listener's address is in its "ready" log line (port 0).
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0,
            "the broker exited"
        );
        if line.contains("TLS listener ready") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            break v["fields"]["addr"].as_str().unwrap().to_owned();
        }
    };
    // Keep draining its log so the pipe never fills.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let broker = Broker(child);
    // Seed the secret as the platform (by uid, on the socket).
    let body = br#"{"value":"0123456789ab"}"#;
    let mut s = UnixStream::connect(&socket).unwrap();
    write!(
        s,
        "PUT /v1/secrets/acme/t/db HTTP/1.1\r\nhost: b\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    assert!((200..300).contains(&common::read_framed(&mut s, &mut buf)));
    // A scope to list whose answer spans several TLS records.
    let mut s = UnixStream::connect(&socket).unwrap();
    for i in 0..LISTED {
        write!(
            s,
            "PUT /v1/secrets/acme/t/many/secret-{i:04} HTTP/1.1\r\nhost: b\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        assert!((200..300).contains(&common::read_framed(&mut s, &mut buf)));
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from(client.der().to_vec())],
        PrivateKeyDer::try_from(client_key.serialize_der()).unwrap(),
    )
    .unwrap();
    Setup {
        _broker: broker,
        _dir: dir,
        socket,
        addr,
        tls: Arc::new(tls),
    }
}

fn tls_stream(s: &Setup) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let conn = rustls::ClientConnection::new(
        Arc::clone(&s.tls),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(&s.addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Sequential keep-alive reads for `secs`: per-request latencies (ns).
fn reads(conn: &mut (impl Read + Write), req: &[u8], secs: f64) -> Vec<u64> {
    let mut buf = Vec::new();
    let mut lat = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        let t = Instant::now();
        conn.write_all(req).unwrap();
        assert_eq!(common::read_framed(conn, &mut buf), 200);
        lat.push(u64::try_from(t.elapsed().as_nanos()).unwrap());
    }
    lat
}

/// (p50 µs, p99 µs, requests/s).
fn summary(mut lat: Vec<u64>, secs: f64) -> (f64, f64, f64) {
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    (p(0.5), p(0.99), lat.len() as f64 / secs)
}

/// Full handshakes for `secs`, each a fresh connection and one read.
fn handshakes(s: &Setup, secs: f64) -> u64 {
    let mut n = 0u64;
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let close = [&READ[..READ.len() - 2], b"connection: close\r\n\r\n"].concat();
    let mut buf = Vec::new();
    while Instant::now() < end {
        let mut t = tls_stream(s);
        t.write_all(&close).unwrap();
        assert_eq!(common::read_framed(&mut t, &mut buf), 200);
        n += 1;
    }
    n
}

/// `clients` threads at once, each running `work` for `secs`: what they
/// did in all, per second.
fn parallel(clients: usize, secs: f64, work: impl Fn() -> u64 + Sync) -> f64 {
    let total: u64 = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients).map(|_| scope.spawn(&work)).collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    total as f64 / secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not,
    // and a timed run has no place in the test suite.
    if !std::env::args().any(|a| a == "--bench") {
        println!("tls bench: skipped (run `cargo bench --bench tls`)");
        return;
    }
    let env = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let secs = env("TLS_BENCH_SECONDS", 3.0);
    let rounds = env("TLS_BENCH_ROUNDS", 3.0) as usize;
    let s = start();
    let sock_req = [
        &READ[..READ.len() - 2],
        format!("authorization: Bearer {TOKEN}\r\n\r\n").as_bytes(),
    ]
    .concat();
    let clients = env("TLS_BENCH_CLIENTS", 4.0) as usize;
    let (mut unix, mut tls, mut hs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut par_reads, mut par_hs) = (Vec::new(), Vec::new());
    let (mut unix_list, mut tls_list) = (Vec::new(), Vec::new());
    let sock_list = [
        &LIST[..LIST.len() - 2],
        format!("authorization: Bearer {TOKEN}\r\n\r\n").as_bytes(),
    ]
    .concat();
    for _ in 0..rounds.max(1) {
        let mut u = UnixStream::connect(&s.socket).unwrap();
        unix.push(summary(reads(&mut u, &sock_req, secs), secs));
        let mut t = tls_stream(&s);
        tls.push(summary(reads(&mut t, READ, secs), secs));
        // Full handshakes: a fresh connection per read.
        hs.push(handshakes(&s, secs) as f64 / secs);
        par_reads.push(parallel(clients, secs, || {
            reads(&mut tls_stream(&s), READ, secs).len() as u64
        }));
        par_hs.push(parallel(clients, secs, || handshakes(&s, secs)));
        let mut u = UnixStream::connect(&s.socket).unwrap();
        unix_list.push(summary(reads(&mut u, &sock_list, secs), secs));
        let mut t = tls_stream(&s);
        tls_list.push(summary(reads(&mut t, LIST, secs), secs));
    }
    let row = |name: &str, runs: &[(f64, f64, f64)]| {
        println!(
            "| {name} | {:.0} µs | {:.0} µs | {:.0}/s |",
            median(runs.iter().map(|r| r.0).collect()),
            median(runs.iter().map(|r| r.1).collect()),
            median(runs.iter().map(|r| r.2).collect()),
        );
    };
    println!("| cached read, one keep-alive connection | p50 | p99 | throughput |");
    println!("|---|---|---|---|");
    row("Unix socket (bearer token)", &unix);
    row("mutual TLS 1.3 (client certificate)", &tls);
    println!("\n| list of {LISTED} secrets, one keep-alive connection | p50 | p99 | throughput |");
    println!("|---|---|---|---|");
    row("Unix socket (bearer token)", &unix_list);
    row("mutual TLS 1.3 (client certificate)", &tls_list);
    println!(
        "\nfull TLS handshakes (fresh connection + read): {:.0}/s",
        median(hs)
    );
    println!(
        "{clients} TLS clients at once: {:.0} keep-alive reads/s, {:.0} full handshakes/s",
        median(par_reads),
        median(par_hs)
    );
}
