//! One whole request, in memory: the broker's cached, authorized, audited
//! read (`server::serve_io`: hyper, identity, the decision cache, the read
//! cache, the JSON body, the audit line appended to a real file) against a
//! bare hyper service answering a fixed 64-byte body, both over a tokio
//! in-memory duplex on one current-thread runtime, one keep-alive
//! connection, one request in flight.
//!
//! No socket, so no system call but the audit line's `write(2)`: what this
//! measures is the user-space work per request, steadily enough (one
//! thread, no scheduler, no other process) to judge changes of a few
//! percent that the load bench cannot resolve on a shared host (see
//! docs/performance.md, "Where the broker's CPU per request goes"). The
//! `audit_devnull` variant audits to `/dev/null`, to tell the line's
//! formatting from its append; `bare_handrolled` answers the bare body
//! with no HTTP library (`httparse` and one write), the floor under
//! `bare_hyper`.
//!
//! `cargo bench --bench request` (release).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use secret_broker::api::{AppState, ConnInfo};
use secret_broker::audit::AuditLog;
use secret_broker::authz::{Authorizer, Transport};
use secret_broker::broker::Broker;
use secret_broker::config::{AuditSink, Config};
use secret_broker::identity::{PeerCred, Resolver};
use secret_broker::secret::{SecretBytes, SecretPath};
use secret_broker::store::cache::CachedStore;
use secret_broker::store::embedded::EmbeddedStore;
use secret_broker::store::{PutRequest, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// The load bench's request: a task reading a secret of its own scope.
const REQUEST: &[u8] =
    b"GET /v1/secrets/acme/tasks/t-42/db-password HTTP/1.1\r\nhost: localhost\r\n\r\n";

/// The load bench's bare servers, hyper's and the hand-rolled one (a
/// bench cannot import an example).
#[path = "../examples/baseline_server.rs"]
#[allow(dead_code)]
mod baseline;

/// The broker's state: the embedded store holding the secret, the shipped
/// policies, one task principal by uid, audit to `audit`.
fn broker_state(rt: &tokio::runtime::Runtime, dir: &Path, audit: &Path) -> Arc<AppState> {
    let key = dir.join("k");
    EmbeddedStore::generate_key_file(&key).unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.join("db"), &key).unwrap());
    let path = SecretPath::parse("acme/tasks/t-42/db-password").unwrap();
    rt.block_on(store.put(
        &path,
        PutRequest {
            value: SecretBytes::copy_from(b"0123456789abcdef0123456789abcdef"),
            labels: Default::default(),
            create_only: false,
        },
    ))
    .unwrap();
    let config = Config::from_toml(
        "[[principal]]\nname = \"task-42\"\ntype = \"Task\"\nscope = \"acme/tasks/t-42\"\nuid = 2000\n",
        "bench.toml",
        dir,
    )
    .unwrap();
    let (schema, policies) = secret_broker::authz::shipped_sources();
    let authz = Arc::new(Authorizer::from_sources(schema, policies).unwrap());
    let cache = Arc::new(CachedStore::new(
        store,
        Duration::from_secs(300),
        Duration::ZERO,
    ));
    let audit = Arc::new(AuditLog::open(&AuditSink::File(audit.to_path_buf()), false).unwrap());
    Arc::new(AppState::new(
        Broker::new(authz, cache),
        Resolver::new(config.principals.clone()),
        audit,
        config.limits,
    ))
}

/// Sends one request and reads its whole answer (head, then
/// `content-length` bytes of body) into `buf`.
async fn round_trip(client: &mut DuplexStream, buf: &mut Vec<u8>) {
    client.write_all(REQUEST).await.unwrap();
    buf.clear();
    loop {
        let mut chunk = [0u8; 1024];
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .unwrap();
            if buf.len() >= end + 4 + len {
                return;
            }
        }
    }
}

/// Times `iters` round trips on one connection served by `serve`.
fn timed<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, serve: F) -> Duration
where
    F: FnOnce(DuplexStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn(serve(server));
        let mut buf = Vec::with_capacity(1024);
        // One unmeasured request: the connection's set-up is not the
        // request's cost.
        round_trip(&mut client, &mut buf).await;
        let started = Instant::now();
        for _ in 0..iters {
            round_trip(&mut client, &mut buf).await;
        }
        let elapsed = started.elapsed();
        drop(client);
        let _ = serving.await;
        elapsed
    })
}

fn request(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = broker_state(&rt, dir.path(), &dir.path().join("audit.log"));
    let devnull = {
        let sub = dir.path().join("b");
        std::fs::create_dir(&sub).unwrap();
        broker_state(&rt, &sub, Path::new("/dev/null"))
    };
    let info = ConnInfo {
        peer: Some(PeerCred {
            uid: 2000,
            gid: 2000,
            pid: Some(77),
        }),
        transport: Transport::Unix,
        tls: None,
    };
    let mut g = c.benchmark_group("request");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("bare_hyper", |b| {
        b.iter_custom(|n| timed(&rt, n, baseline::connection))
    });
    g.bench_function("bare_handrolled", |b| {
        b.iter_custom(|n| timed(&rt, n, baseline::handrolled_connection))
    });
    g.bench_function("broker_cached_read", |b| {
        b.iter_custom(|n| {
            let (state, info) = (Arc::clone(&file), info.clone());
            timed(&rt, n, move |io| {
                secret_broker::server::serve_io(io, state, info)
            })
        })
    });
    g.bench_function("broker_cached_read_audit_devnull", |b| {
        b.iter_custom(|n| {
            let (state, info) = (Arc::clone(&devnull), info.clone());
            timed(&rt, n, move |io| {
                secret_broker::server::serve_io(io, state, info)
            })
        })
    });
    g.finish();
}

criterion_group!(benches, request);
criterion_main!(benches);
