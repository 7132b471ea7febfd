//! Tests of the embedded store: semantics, persistence, encryption binding,
//! key-file handling, concurrency and leaks.

use std::collections::BTreeSet;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use tempfile::TempDir;

use super::*;
use crate::secret::SecretBytes;
use crate::store::StoreErrorKind;

const CANARY: &[u8] = b"canary-9d41e7-value";

struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        EmbeddedStore::generate_key_file(&dir.path().join("store.key")).unwrap();
        Self { dir }
    }

    fn db_path(&self) -> PathBuf {
        self.dir.path().join("store.redb")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("store.key")
    }

    fn open(&self) -> EmbeddedStore {
        EmbeddedStore::open(&self.db_path(), &self.key_path()).unwrap()
    }
}

fn sp(raw: &str) -> SecretPath {
    SecretPath::parse(raw).unwrap()
}

fn scope(raw: &str) -> ScopePath {
    if raw.is_empty() {
        ScopePath::root()
    } else {
        ScopePath::parse(raw).unwrap()
    }
}

fn req(value: &[u8]) -> PutRequest {
    PutRequest {
        value: SecretBytes::copy_from(value),
        labels: Labels::new(),
        create_only: false,
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn paths_in(store: &EmbeddedStore, s: &str) -> Vec<String> {
    store
        .list(&scope(s))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.path.as_str().to_owned())
        .collect()
}

fn assert_no_canary(e: &StoreError) {
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains(std::str::from_utf8(CANARY).unwrap()),
        "canary leaked: {shown}"
    );
}

#[tokio::test]
async fn versions_count_up_and_created_flag() {
    let fx = Fixture::new();
    let store = fx.open();
    let p = sp("acme/db");
    let first = store.put(&p, req(b"one")).await.unwrap();
    assert_eq!((first.version, first.created), (1, true));
    let second = store.put(&p, req(b"two")).await.unwrap();
    assert_eq!((second.version, second.created), (2, false));
    assert!(second.created_at >= first.created_at);
    let got = store.get(&p).await.unwrap();
    assert_eq!(got.version, 2);
    assert_eq!(got.value.expose_secret(), b"two");
    assert_eq!(store.backend(), "embedded");
}

#[tokio::test]
async fn create_only_refuses_existing() {
    let fx = Fixture::new();
    let store = fx.open();
    let p = sp("acme/db");
    let mut r = req(b"one");
    r.create_only = true;
    assert_eq!(store.put(&p, r).await.unwrap().version, 1);
    let mut r = req(b"two");
    r.create_only = true;
    let e = store.put(&p, r).await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Exists);
    assert_eq!(store.get(&p).await.unwrap().value.expose_secret(), b"one");
}

#[tokio::test]
async fn labels_are_replaced() {
    let fx = Fixture::new();
    let store = fx.open();
    let p = sp("acme/db");
    let mut r = req(b"one");
    r.labels = labels(&[("team", "a"), ("env", "prod")]);
    store.put(&p, r).await.unwrap();
    let mut r = req(b"two");
    r.labels = labels(&[("owner", "b")]);
    store.put(&p, r).await.unwrap();
    let listed = store.list(&scope("acme")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].labels, labels(&[("owner", "b")]));
    assert_eq!(listed[0].version, 2);
}

#[tokio::test]
async fn list_is_segment_wise_sorted_and_recursive() {
    let fx = Fixture::new();
    let store = fx.open();
    for p in [
        "acme/t-42/x",
        "acme/t-4/y",
        "acme/t-4/db/z",
        "acme/t-4a/w",
        "acme/t-4.b/v",
        "acme/top",
        "other/a",
    ] {
        store.put(&sp(p), req(b"v")).await.unwrap();
    }
    assert_eq!(
        paths_in(&store, "acme/t-4").await,
        ["acme/t-4/db/z", "acme/t-4/y"]
    );
    assert_eq!(paths_in(&store, "acme/t-42").await, ["acme/t-42/x"]);
    assert_eq!(paths_in(&store, "acme/t-4/db").await, ["acme/t-4/db/z"]);
    assert!(paths_in(&store, "acme/t").await.is_empty());
    assert!(paths_in(&store, "nope").await.is_empty());
    let all = paths_in(&store, "").await;
    assert_eq!(all.len(), 7);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    assert_eq!(paths_in(&store, "acme").await.len(), 6);
}

#[tokio::test]
async fn delete_removes_all_versions_and_recreate_starts_at_one() {
    let fx = Fixture::new();
    let store = fx.open();
    let p = sp("acme/db");
    for v in [b"1", b"2", b"3"] {
        store.put(&p, req(v)).await.unwrap();
    }
    store.delete(&p).await.unwrap();
    assert_eq!(
        store.get(&p).await.unwrap_err().kind(),
        StoreErrorKind::NotFound
    );
    assert!(paths_in(&store, "").await.is_empty());
    let again = store.put(&p, req(b"new")).await.unwrap();
    assert_eq!((again.version, again.created), (1, true));
    drop(store);
    // No version row of the old life is left behind.
    let db = Database::open(fx.db_path()).unwrap();
    let txn = db.begin_read().unwrap();
    let versions = txn.open_table(VERSIONS).unwrap();
    assert_eq!(versions.len().unwrap(), 1);
}

#[tokio::test]
async fn missing_secret_is_not_found() {
    let fx = Fixture::new();
    let store = fx.open();
    let p = sp("acme/none");
    let e = store.get(&p).await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::NotFound);
    assert_eq!(
        e.to_string(),
        "secret `acme/none` not found in store `embedded`"
    );
    assert_eq!(
        store.delete(&p).await.unwrap_err().kind(),
        StoreErrorKind::NotFound
    );
}

#[tokio::test]
async fn persists_across_reopen() {
    let fx = Fixture::new();
    {
        let store = fx.open();
        store.put(&sp("acme/a"), req(b"one")).await.unwrap();
        store.put(&sp("acme/a"), req(b"two")).await.unwrap();
    }
    let store = fx.open();
    let got = store.get(&sp("acme/a")).await.unwrap();
    assert_eq!((got.version, got.value.expose_secret()), (2, &b"two"[..]));
    assert_eq!(
        store.put(&sp("acme/a"), req(b"3")).await.unwrap().version,
        3
    );
    store.health().await.unwrap();
}

#[tokio::test]
async fn binary_and_large_values_round_trip() {
    let fx = Fixture::new();
    let store = fx.open();
    let binary: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    store.put(&sp("acme/bin"), req(&binary)).await.unwrap();
    let big: Vec<u8> = (0..64 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    store.put(&sp("acme/big"), req(&big)).await.unwrap();
    store.put(&sp("acme/empty"), req(b"")).await.unwrap();
    assert_eq!(
        store
            .get(&sp("acme/bin"))
            .await
            .unwrap()
            .value
            .expose_secret(),
        binary
    );
    assert_eq!(
        store
            .get(&sp("acme/big"))
            .await
            .unwrap()
            .value
            .expose_secret(),
        big
    );
    assert!(store.get(&sp("acme/empty")).await.unwrap().value.is_empty());
}

#[tokio::test]
async fn wrong_key_is_a_decrypt_error() {
    let fx = Fixture::new();
    {
        let store = fx.open();
        store.put(&sp("acme/a"), req(CANARY)).await.unwrap();
    }
    let other_key = fx.dir.path().join("other.key");
    EmbeddedStore::generate_key_file(&other_key).unwrap();
    let e = EmbeddedStore::open(&fx.db_path(), &other_key).unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Backend);
    assert!(e.to_string().contains("failed to decrypt"), "{e}");
    assert_no_canary(&e);
}

#[tokio::test]
async fn wrong_key_past_the_key_check_still_fails_per_record() {
    let fx = Fixture::new();
    {
        let store = fx.open();
        store.put(&sp("acme/a"), req(CANARY)).await.unwrap();
    }
    // Replace the key check so the open passes with another key: each
    // record must still refuse to decrypt.
    let other_key = fx.dir.path().join("other.key");
    EmbeddedStore::generate_key_file(&other_key).unwrap();
    {
        let db = Database::open(fx.db_path()).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(INFO).unwrap().remove(KEY_CHECK).unwrap();
        txn.commit().unwrap();
    }
    let store = EmbeddedStore::open(&fx.db_path(), &other_key).unwrap();
    let e = store.get(&sp("acme/a")).await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Backend);
    assert!(e.to_string().contains("failed to decrypt"), "{e}");
    assert_no_canary(&e);
}

#[tokio::test]
async fn moved_ciphertext_fails_to_decrypt() {
    let fx = Fixture::new();
    {
        let store = fx.open();
        store.put(&sp("acme/a"), req(CANARY)).await.unwrap();
        store.put(&sp("acme/b"), req(b"b1")).await.unwrap();
        store.put(&sp("acme/c"), req(b"c1")).await.unwrap();
        store.put(&sp("acme/c"), req(b"c2")).await.unwrap();
    }
    {
        let db = Database::open(fx.db_path()).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut versions = txn.open_table(VERSIONS).unwrap();
            let a1 = versions
                .get(("acme/a", 1))
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            let c1 = versions
                .get(("acme/c", 1))
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            // Another path, same version.
            versions.insert(("acme/b", 1), a1.as_slice()).unwrap();
            // Same path, another version.
            versions.insert(("acme/c", 2), c1.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = fx.open();
    for p in ["acme/b", "acme/c"] {
        let e = store.get(&sp(p)).await.unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Backend);
        assert!(e.to_string().contains("failed to decrypt"), "{e}");
        assert_no_canary(&e);
    }
    assert_eq!(
        store
            .get(&sp("acme/a"))
            .await
            .unwrap()
            .value
            .expose_secret(),
        CANARY
    );
}

#[tokio::test]
async fn database_file_holds_no_plaintext() {
    let fx = Fixture::new();
    {
        let store = fx.open();
        for i in 0..20 {
            let mut v = CANARY.to_vec();
            v.extend_from_slice(format!("-{i}").as_bytes());
            store.put(&sp("acme/a"), req(&v)).await.unwrap();
            store
                .put(&sp(&format!("acme/n{i}")), req(CANARY))
                .await
                .unwrap();
        }
    }
    let raw = std::fs::read(fx.db_path()).unwrap();
    assert!(
        !raw.windows(CANARY.len()).any(|w| w == CANARY),
        "plaintext canary found in the database file"
    );
    // The paths are there (they are not secret), so the search was real.
    assert!(raw.windows(6).any(|w| w == b"acme/a"));
}

#[test]
fn bad_key_files_get_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.redb");
    for len in [0usize, 16, 31, 33, 64] {
        let key = dir.path().join(format!("k{len}"));
        std::fs::write(&key, vec![7u8; len]).unwrap();
        let e = EmbeddedStore::open(&db, &key).unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Invalid);
        let msg = e.to_string();
        assert!(msg.contains(&format!("`{}`", key.display())), "{msg}");
        assert!(msg.contains("exactly 32 raw bytes"), "{msg}");
        assert!(msg.contains(&format!("it holds {len}")), "{msg}");
        assert!(msg.contains("head -c 32 /dev/urandom"), "{msg}");
        assert!(!msg.contains('\n'));
    }
    let missing = dir.path().join("missing.key");
    let e = EmbeddedStore::open(&db, &missing).unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Invalid);
    assert!(e.to_string().contains("missing.key"), "{e}");
    assert!(e.to_string().contains("head -c 32"), "{e}");
    // No store file is created when the key is refused.
    assert!(!db.exists());
}

#[test]
fn key_file_is_new_and_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    EmbeddedStore::generate_key_file(&key).unwrap();
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.len(), 32);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let e = EmbeddedStore::generate_key_file(&key).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
    let other = dir.path().join("k2");
    EmbeddedStore::generate_key_file(&other).unwrap();
    assert_ne!(std::fs::read(&key).unwrap(), std::fs::read(&other).unwrap());
}

#[test]
fn missing_directory_is_a_clear_error() {
    let fx = Fixture::new();
    let db = fx.dir.path().join("no-such-dir").join("store.redb");
    let e = EmbeddedStore::open(&db, &fx.key_path()).unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Invalid);
    assert!(e.to_string().contains("no-such-dir"), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
}

#[test]
fn garbage_store_file_is_refused() {
    let fx = Fixture::new();
    std::fs::write(fx.db_path(), vec![0x5a; 8192]).unwrap();
    let e = EmbeddedStore::open(&fx.db_path(), &fx.key_path()).unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Backend);
    assert!(e.to_string().contains("cannot open store file"), "{e}");
}

#[test]
fn second_open_is_unavailable() {
    let fx = Fixture::new();
    let _store = fx.open();
    let e = EmbeddedStore::open(&fx.db_path(), &fx.key_path()).unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Unavailable);
    assert!(e.to_string().contains("another process holds"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_get_distinct_consecutive_versions() {
    let fx = Fixture::new();
    let store = Arc::new(fx.open());
    let p = sp("acme/hot");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = Arc::clone(&store);
            let p = p.clone();
            tokio::spawn(async move {
                let o = store
                    .put(&p, req(format!("v{i}").as_bytes()))
                    .await
                    .unwrap();
                (o.version, o.created)
            })
        })
        .collect();
    let mut versions = BTreeSet::new();
    let mut created = 0;
    for t in tasks {
        let (v, c) = t.await.unwrap();
        assert!(versions.insert(v), "version {v} handed out twice");
        created += usize::from(c);
    }
    assert_eq!(versions, (1..=16).collect::<BTreeSet<u64>>());
    assert_eq!(created, 1);
    assert_eq!(store.get(&p).await.unwrap().version, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_to_many_paths_all_land() {
    let fx = Fixture::new();
    let store = Arc::new(fx.open());
    let tasks: Vec<_> = (0..16)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..10 {
                    let p = sp(&format!("w{w}/s{i}"));
                    store.put(&p, req(b"x")).await.unwrap();
                    store.put(&p, req(b"y")).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let all = store.list(&ScopePath::root()).await.unwrap();
    assert_eq!(all.len(), 160);
    assert!(all.iter().all(|m| m.version == 2));
}

#[tokio::test]
async fn errors_and_debug_never_show_values() {
    let fx = Fixture::new();
    let store = fx.open();
    let p = sp("acme/a");
    store.put(&p, req(CANARY)).await.unwrap();
    let mut r = req(CANARY);
    r.create_only = true;
    assert_no_canary(&store.put(&p, r).await.unwrap_err());
    assert_no_canary(&store.get(&sp("acme/b")).await.unwrap_err());
    let shown = format!("{store:?} {:?}", store.get(&p).await.unwrap());
    assert!(!shown.contains("canary"), "{shown}");
    let key = StoreKey::load(&fx.key_path()).unwrap();
    let raw_key = std::fs::read(fx.key_path()).unwrap();
    let shown = format!("{key:?}");
    assert_eq!(shown, "StoreKey { .. }");
    assert!(!shown.contains(&hex::encode(&raw_key)));
}

/// Group-commit throughput: `STORE_BENCH_WRITERS` (default 16) concurrent
/// writers, 3200 durable puts in all. Measured on the dev VM (release):
/// 1 writer ≈ 900/s, 16 ≈ 11 700/s, 64 ≈ 45 000/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
#[ignore = "benchmark; run with `cargo test --release -- --ignored --nocapture`"]
async fn bench_group_commit_throughput() {
    let writers: usize = std::env::var("STORE_BENCH_WRITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let fx = Fixture::new();
    let store = Arc::new(fx.open());
    let start = std::time::Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..(3200 / writers) {
                    let p = sp(&format!("w{w}/s{}", i % 20));
                    store.put(&p, req(&[7u8; 256])).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let done = (3200 / writers) * writers;
    println!(
        "{writers} writers: {done} durable puts in {elapsed:?} ({:.0}/s)",
        done as f64 / elapsed.as_secs_f64()
    );
}

/// The child half of `kill_9_loses_no_acknowledged_write`: writes until
/// killed, printing each acknowledged version.
#[tokio::test]
#[ignore = "run only as the child of kill_9_loses_no_acknowledged_write"]
async fn crash_child_writes_until_killed() {
    use std::io::Write as _;
    let Ok(dir) = std::env::var("STORE_CRASH_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let store = EmbeddedStore::open(&dir.join("store.redb"), &dir.join("store.key")).unwrap();
    let mut out = std::io::stdout();
    for i in 0u64.. {
        let o = store
            .put(&sp("crash/a"), req(format!("v{i}").as_bytes()))
            .await
            .unwrap();
        writeln!(out, "acked {}", o.version).unwrap();
        out.flush().unwrap();
    }
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_write() {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};
    let fx = Fixture::new();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::embedded::tests::crash_child_writes_until_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("STORE_CRASH_DIR", fx.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut last_acked = 0;
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines {
        if let Some(v) = line.unwrap().strip_prefix("acked ") {
            last_acked = v.parse().unwrap();
            if last_acked >= 30 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(last_acked >= 30, "the child stopped early");
    let store = fx.open();
    let got = store.get(&sp("crash/a")).await.unwrap();
    assert!(
        got.version >= last_acked,
        "acknowledged version {last_acked} lost (store has {})",
        got.version
    );
    store.health().await.unwrap();
}
