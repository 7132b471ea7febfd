//! Micro benchmarks (criterion): path parsing, authorization cold and warm,
//! the cache hit path, and embedded-store put/get.
//!
//! `cargo bench --bench micro`; `scripts/bench` prints the summary table.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use secret_broker::authz::{Action, Authorizer, RequestContext, Resource, Transport};
use secret_broker::identity::{PeerCred, Principal, PrincipalKind};
use secret_broker::secret::{ScopePath, SecretBytes, SecretPath};
use secret_broker::store::cache::CachedStore;
use secret_broker::store::embedded::EmbeddedStore;
use secret_broker::store::{PutRequest, Store};

fn task() -> Principal {
    Principal {
        name: "task-42".into(),
        kind: PrincipalKind::Task,
        roles: vec![],
        scope: Some(ScopePath::parse("acme/tasks/t-42").unwrap()),
    }
}

fn paths(c: &mut Criterion) {
    c.bench_function("path_parse", |b| {
        b.iter(|| SecretPath::parse(black_box("acme/tasks/t-42/db-password")).unwrap())
    });
}

fn authz(c: &mut Criterion) {
    let (schema, policies) = secret_broker::authz::shipped_sources();
    let a = Authorizer::from_sources(schema, policies).unwrap();
    let who = task();
    let path = SecretPath::parse("acme/tasks/t-42/db-password").unwrap();
    let ctx = RequestContext {
        transport: Transport::Unix,
        peer: Some(PeerCred {
            uid: 2000,
            gid: 2000,
            pid: Some(77),
        }),
        request_id: "bench-1",
        spiffe_id: None,
    };
    let resource = Resource::Secret {
        path: &path,
        labels: None,
    };
    c.bench_function("authz_cold", |b| {
        b.iter(|| {
            assert!(
                a.decide_uncached(&who, Action::Read, resource, &ctx)
                    .allowed
            )
        })
    });
    c.bench_function("authz_warm", |b| {
        b.iter(|| assert!(a.decide(&who, Action::Read, resource, &ctx).allowed))
    });
}

fn store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    EmbeddedStore::generate_key_file(&key).unwrap();
    let embedded: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("db"), &key).unwrap());
    let path = SecretPath::parse("acme/tasks/t-42/db-password").unwrap();
    let put = |store: &Arc<dyn Store>| {
        rt.block_on(store.put(
            &path,
            PutRequest {
                value: SecretBytes::copy_from(&[7u8; 64]),
                labels: Default::default(),
                create_only: false,
            },
        ))
        .unwrap()
    };
    put(&embedded);
    let mut g = c.benchmark_group("store");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.bench_function("embedded_put_durable", |b| b.iter(|| put(&embedded)));
    g.bench_function("embedded_get", |b| {
        b.iter(|| rt.block_on(embedded.get(&path)).unwrap())
    });
    let cache = CachedStore::new(
        Arc::clone(&embedded),
        Duration::from_secs(300),
        Duration::ZERO,
    );
    rt.block_on(cache.get(&path)).unwrap();
    g.bench_function("cache_hit", |b| {
        b.iter(|| rt.block_on(cache.get(&path)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, paths, authz, store);
criterion_main!(benches);
