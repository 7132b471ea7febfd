//! Drives whole HTTP requests through the real service (identity, Cedar,
//! embedded store, audit) over an in-memory duplex stream.
//!
//! Invariant: the canary stored at `fz/b/x` is readable by nobody (the
//! caller is a task of scope `fz/a`; the platform token's holder may write
//! but never read), so no response may ever carry it, unless the request
//! itself carried those bytes.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use secret_broker::api::{AppState, ConnInfo};
use secret_broker::audit::AuditLog;
use secret_broker::authz::{Authorizer, Transport};
use secret_broker::broker::Broker;
use secret_broker::config::Config;
use secret_broker::identity::{PeerCred, Resolver};
use secret_broker::store::cache::CachedStore;
use secret_broker::store::embedded::EmbeddedStore;
use secret_broker::store::{PutRequest, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CANARY: &[u8] = b"FUZZ-CANARY-e3b0c44298fc1c14";
const PLATFORM_TOKEN: &str = "fuzz-platform-token";

struct World {
    rt: tokio::runtime::Runtime,
    state: Arc<AppState>,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let key = dir.path().join("k");
        EmbeddedStore::generate_key_file(&key).expect("key");
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("db"), &key).expect("store"));
        let digest = secret_broker::identity::TokenDigest::of_token(PLATFORM_TOKEN.as_bytes()).to_hex();
        let config = Config::from_toml(
            &format!(
                "[[principal]]\nname = \"task\"\ntype = \"Task\"\nscope = \"fz/a\"\nuid = 1000\n\
                 [[principal]]\nname = \"plat\"\ntype = \"Component\"\nroles = [\"platform\"]\ntoken_sha256 = \"{digest}\"\n\
                 [limits]\nheader_timeout = \"1s\"\nbody_timeout = \"1s\"\n"
            ),
            "fuzz.toml",
            dir.path(),
        )
        .expect("config");
        rt.block_on(async {
            for (path, value) in [("fz/b/x", CANARY), ("fz/a/y", b"allowed".as_slice())] {
                let p = secret_broker::secret::SecretPath::parse(path).expect("path");
                store
                    .put(&p, PutRequest { value: secret_broker::secret::SecretBytes::copy_from(value), labels: Default::default(), create_only: false })
                    .await
                    .expect("seed");
            }
        });
        let (schema, policies) = secret_broker::authz::shipped_sources();
        let authz = Arc::new(Authorizer::from_sources(schema, policies).expect("policies"));
        let cache = Arc::new(CachedStore::new(store, Duration::from_secs(60), Duration::ZERO));
        let audit = Arc::new(AuditLog::to_writer(Box::new(std::io::sink())));
        let state = Arc::new(AppState::new(
            Broker::new(authz, cache),
            Resolver::new(config.principals.clone()),
            audit,
            config.limits,
        ));
        World { rt, state, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let response = w.rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        let info = ConnInfo {
            peer: Some(PeerCred { uid: 1000, gid: 1000, pid: None }),
            transport: Transport::Unix,
            tls: None,
        };
        let serving = tokio::spawn(secret_broker::server::serve_io(server, Arc::clone(&w.state), info));
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut out)).await;
        serving.abort();
        out
    });
    let carried = data.windows(CANARY.len()).any(|w| w == CANARY);
    if !carried {
        assert!(
            !response.windows(CANARY.len()).any(|w| w == CANARY),
            "an unauthorized response carried the canary"
        );
    }
});
