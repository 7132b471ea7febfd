//! The read-through cache in front of any store: fresh reads come from
//! memory, writes and deletes invalidate, evicted values are dropped (and so
//! zeroized), and an expired value may be served while the store is down.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::secret::{ScopePath, SecretPath};
use crate::shard::Sharded;
use crate::store::{
    PutOutcome, PutRequest, SecretMeta, Store, StoreError, StoreErrorKind, StoredSecret,
};

/// Longest pause between two sweeps.
const MAX_SWEEP_PERIOD: Duration = Duration::from_secs(1);
/// Shortest pause between two sweeps, so a tiny TTL cannot spin the sweeper.
const MIN_SWEEP_PERIOD: Duration = Duration::from_millis(10);

/// Cache counters, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Reads answered from a fresh entry.
    pub hits: u64,
    /// Reads that went to the inner store.
    pub misses: u64,
}

/// Entries by path. foldhash (randomly seeded per process) rather than
/// SipHash: a path is hashed on every read.
type Entries = HashMap<SecretPath, Entry, foldhash::fast::RandomState>;

/// One cached value.
struct Entry {
    /// A hit gets a copy: an `Arc` shared with readers would put one
    /// reference count, written twice per read, on a cache line that every
    /// worker thread contends for; a copy touches only the reader's core.
    secret: StoredSecret,
    /// When the read that produced it started (so age is never understated).
    fetched_at: Instant,
}

/// A read-through cache in front of another store.
pub struct CachedStore {
    inner: Arc<dyn Store>,
    ttl: Duration,
    stale_if_error: Duration,
    /// One map per thread shard (see `shard`): a hit locks only its own
    /// thread's map, so two workers reading never move one lock's cache
    /// line between their cores. A value read on two workers is held
    /// twice; invalidation, sweeping and counting visit every shard.
    entries: Sharded<Mutex<Entries>>,
    // INVARIANT: bumped after every write or delete reached the inner
    // store, *before* that path is removed from the shards (each under its
    // lock). A read inserts its value, under its shard's lock, only if the
    // counter did not move since before it asked the inner store. So a
    // value read before a write can never land in the cache after it: its
    // insert either comes before the removal from that shard (and is
    // removed) or after it (and sees the bump). One global counter (rather
    // than one per path) costs a skipped fill when any write races a read,
    // which is rare: tasks read, the platform writes.
    generation: AtomicU64,
    /// Counted on every hit: per thread shard (see `shard`).
    hits: Sharded<AtomicU64>,
    misses: AtomicU64,
}

impl fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SECURITY: counts and settings only, never an entry.
        f.debug_struct("CachedStore")
            .field("inner", &self.inner)
            .field("ttl", &self.ttl)
            .field("stale_if_error", &self.stale_if_error)
            .field("entries", &self.entry_count())
            .finish_non_exhaustive()
    }
}

impl CachedStore {
    /// A cache in front of `inner`, keeping values `ttl` (zero disables
    /// caching) and serving them up to `stale_if_error` longer while the
    /// inner store is unavailable or timing out.
    pub fn new(inner: Arc<dyn Store>, ttl: Duration, stale_if_error: Duration) -> Self {
        Self {
            inner,
            ttl,
            stale_if_error,
            entries: Sharded::default(),
            generation: AtomicU64::new(0),
            hits: Sharded::default(),
            misses: AtomicU64::new(0),
        }
    }

    /// Hit and miss counts since start.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.all().map(|h| h.load(Ordering::Relaxed)).sum(),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// How many values are held (fresh or within the stale window), a
    /// value held by two threads' shards counting twice.
    pub fn entry_count(&self) -> usize {
        self.entries.all().map(|e| lock(e).len()).sum()
    }

    /// Starts a task that drops expired entries every `min(ttl, 1s)`. It
    /// holds only a weak reference, so it ends once the cache is dropped.
    pub fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        let period = self.ttl.clamp(MIN_SWEEP_PERIOD, MAX_SWEEP_PERIOD);
        let enabled = !self.ttl.is_zero();
        tokio::spawn(async move {
            if !enabled {
                return;
            }
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(cache) = weak.upgrade() else { break };
                cache.sweep(Instant::now());
            }
        })
    }

    /// Drops every entry past its useful life (`ttl + stale_if_error`).
    fn sweep(&self, now: Instant) {
        let keep = self.keep_for();
        // SECURITY: removing the entry drops its `SecretBytes`, which zeroize.
        for entries in self.entries.all() {
            lock(entries).retain(|_, e| now.saturating_duration_since(e.fetched_at) < keep);
        }
    }

    /// How long an entry is of any use: fresh, then possibly stale-served.
    fn keep_for(&self) -> Duration {
        self.ttl.saturating_add(self.stale_if_error)
    }

    /// This thread's shard of the entries, locked.
    fn local(&self) -> MutexGuard<'_, Entries> {
        lock(self.entries.local())
    }

    /// Drops `path` from every shard.
    fn forget(&self, path: &SecretPath) {
        for entries in self.entries.all() {
            lock(entries).remove(path);
        }
    }

    /// Drops the cached value of `path` and fences off reads in flight:
    /// the bump comes first (see `generation`).
    fn invalidate(&self, path: &SecretPath) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.forget(path);
    }

    /// Caches `secret` for `path` in this thread's shard, read from the
    /// inner store at `fetched_at`, unless a write or delete moved
    /// `generation` since the read began (see `generation`).
    fn fill(&self, path: &SecretPath, secret: &StoredSecret, fetched_at: Instant, generation: u64) {
        let mut entries = self.local();
        if self.generation.load(Ordering::SeqCst) == generation {
            entries.insert(
                path.clone(),
                Entry {
                    secret: secret.duplicate(),
                    fetched_at,
                },
            );
        }
    }

    /// A fresh cached value, evicting the entry if it is past all use.
    /// A fresh entry, counted as a hit.
    fn hit(&self, path: &SecretPath, now: Instant) -> Option<StoredSecret> {
        let hit = self.fresh(path, now)?;
        self.hits.local().fetch_add(1, Ordering::Relaxed);
        Some(hit)
    }

    fn fresh(&self, path: &SecretPath, now: Instant) -> Option<StoredSecret> {
        let mut entries = self.local();
        let entry = entries.get(path)?;
        let age = now.saturating_duration_since(entry.fetched_at);
        if age < self.ttl {
            return Some(entry.secret.duplicate());
        }
        if age >= self.keep_for() {
            entries.remove(path);
        }
        None
    }

    /// An expired value still inside the stale window, from any shard
    /// (the newest one held).
    fn stale(&self, path: &SecretPath, now: Instant) -> Option<StoredSecret> {
        let keep = self.keep_for();
        let mut newest: Option<(Instant, StoredSecret)> = None;
        for entries in self.entries.all() {
            let entries = lock(entries);
            let Some(entry) = entries.get(path) else {
                continue;
            };
            let usable = now.saturating_duration_since(entry.fetched_at) < keep;
            if usable && newest.as_ref().is_none_or(|(at, _)| entry.fetched_at > *at) {
                newest = Some((entry.fetched_at, entry.secret.duplicate()));
            }
        }
        newest.map(|(_, secret)| secret)
    }
}

/// Locks one shard of the entries. A panic while holding the lock cannot
/// leave the map half-updated (every critical section is a single map
/// operation), so a poisoned lock is still sound to use.
fn lock(entries: &Mutex<Entries>) -> MutexGuard<'_, Entries> {
    entries.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Invalidates a path when dropped, so that a write's invalidation also
/// happens when its future is cancelled.
struct InvalidateOnDrop<'a> {
    cache: &'a CachedStore,
    path: &'a SecretPath,
}

impl Drop for InvalidateOnDrop<'_> {
    fn drop(&mut self) {
        self.cache.invalidate(self.path);
    }
}

#[async_trait]
impl Store for CachedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn get_ready(&self, path: &SecretPath) -> Option<StoredSecret> {
        if self.ttl.is_zero() {
            return None;
        }
        self.hit(path, Instant::now())
    }

    async fn put(&self, path: &SecretPath, req: PutRequest) -> Result<PutOutcome, StoreError> {
        // Invalidates however this ends: success, error (a failed or
        // timed-out write may still have landed) or the caller dropping us
        // mid-write (the inner store may finish the write anyway).
        let _invalidate = InvalidateOnDrop { cache: self, path };
        self.inner.put(path, req).await
    }

    async fn get(&self, path: &SecretPath) -> Result<StoredSecret, StoreError> {
        if self.ttl.is_zero() {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return self.inner.get(path).await;
        }
        let started = Instant::now();
        if let Some(hit) = self.hit(path, started) {
            return Ok(hit);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let generation = self.generation.load(Ordering::SeqCst);
        match self.inner.get(path).await {
            Ok(secret) => {
                self.fill(path, &secret, started, generation);
                Ok(secret)
            }
            Err(e) => match e.kind() {
                StoreErrorKind::Unavailable | StoreErrorKind::Timeout => {
                    self.stale(path, Instant::now()).ok_or(e)
                }
                StoreErrorKind::NotFound => {
                    // Gone from the store (perhaps behind our back): forget it.
                    self.forget(path);
                    Err(e)
                }
                _ => Err(e),
            },
        }
    }

    /// Past the cache to the store; the fresh value replaces the cached
    /// one, so other readers see the rotation too. No stale fallback: a
    /// caller asking for a fresh value must learn that the store is down.
    async fn get_fresh(&self, path: &SecretPath) -> Result<StoredSecret, StoreError> {
        self.misses.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let generation = self.generation.load(Ordering::SeqCst);
        let result = self.inner.get(path).await;
        match &result {
            Ok(secret) if !self.ttl.is_zero() => {
                // Other threads' shards may hold the value this read
                // replaces: dropped, so they read the fresh one too.
                self.forget(path);
                self.fill(path, secret, started, generation);
            }
            Err(e) if e.kind() == StoreErrorKind::NotFound => {
                self.forget(path);
            }
            _ => {}
        }
        result
    }

    async fn list(&self, scope: &ScopePath) -> Result<Vec<SecretMeta>, StoreError> {
        self.inner.list(scope).await
    }

    async fn delete(&self, path: &SecretPath) -> Result<(), StoreError> {
        let _invalidate = InvalidateOnDrop { cache: self, path };
        self.inner.delete(path).await
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.inner.health().await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use tokio::sync::Notify;

    use super::*;
    use crate::secret::SecretBytes;
    use crate::store::{Labels, Timestamp};

    const CANARY: &[u8] = b"canary-c4c4e-value";

    /// A pause point inside the inner `get`, after it read its value.
    struct Pause {
        reached: Arc<Notify>,
        release: Arc<Notify>,
    }

    /// An in-memory store that counts reads and fails on demand.
    #[derive(Default)]
    struct MemStore {
        values: Mutex<HashMap<String, (u64, Vec<u8>)>>,
        gets: AtomicU64,
        fail: Mutex<Option<StoreErrorKind>>,
        pause: Mutex<Option<Pause>>,
        hang_puts: Mutex<bool>,
    }

    impl fmt::Debug for MemStore {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("MemStore").finish_non_exhaustive()
        }
    }

    impl MemStore {
        fn gets(&self) -> u64 {
            self.gets.load(Ordering::SeqCst)
        }

        fn fail_with(&self, kind: Option<StoreErrorKind>) {
            *self.fail.lock().unwrap() = kind;
        }

        fn check(&self, path: &str) -> Result<(), StoreError> {
            let store = "mem";
            let detail = "injected".to_owned();
            match *self.fail.lock().unwrap() {
                None => Ok(()),
                Some(StoreErrorKind::Unavailable) => Err(StoreError::Unavailable { store, detail }),
                Some(StoreErrorKind::Timeout) => Err(StoreError::Timeout {
                    store,
                    after: Duration::from_secs(5),
                }),
                Some(StoreErrorKind::Denied) => Err(StoreError::Denied { store, detail }),
                Some(StoreErrorKind::NotFound) => Err(StoreError::NotFound {
                    store,
                    path: path.to_owned(),
                }),
                Some(_) => Err(StoreError::Backend { store, detail }),
            }
        }
    }

    #[async_trait]
    impl Store for MemStore {
        fn backend(&self) -> &'static str {
            "mem"
        }

        async fn put(&self, path: &SecretPath, req: PutRequest) -> Result<PutOutcome, StoreError> {
            self.check(path.as_str())?;
            if *self.hang_puts.lock().unwrap() {
                std::future::pending::<()>().await;
            }
            let mut values = self.values.lock().unwrap();
            let slot = values
                .entry(path.as_str().to_owned())
                .or_insert((0, Vec::new()));
            slot.0 += 1;
            slot.1 = req.value.expose_secret().to_vec();
            Ok(PutOutcome {
                version: slot.0,
                created: slot.0 == 1,
                created_at: Timestamp::now(),
            })
        }

        async fn get(&self, path: &SecretPath) -> Result<StoredSecret, StoreError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            self.check(path.as_str())?;
            let snapshot = self.values.lock().unwrap().get(path.as_str()).cloned();
            let pause = self.pause.lock().unwrap().take();
            if let Some(p) = pause {
                p.reached.notify_one();
                p.release.notified().await;
            }
            let (version, value) = snapshot.ok_or_else(|| StoreError::NotFound {
                store: "mem",
                path: path.as_str().to_owned(),
            })?;
            Ok(StoredSecret {
                version,
                value: SecretBytes::new(value),
                labels: Labels::new(),
            })
        }

        async fn list(&self, _scope: &ScopePath) -> Result<Vec<SecretMeta>, StoreError> {
            Ok(Vec::new())
        }

        async fn delete(&self, path: &SecretPath) -> Result<(), StoreError> {
            self.check(path.as_str())?;
            match self.values.lock().unwrap().remove(path.as_str()) {
                Some(_) => Ok(()),
                None => Err(StoreError::NotFound {
                    store: "mem",
                    path: path.as_str().to_owned(),
                }),
            }
        }

        async fn health(&self) -> Result<(), StoreError> {
            self.check("")
        }
    }

    fn sp(raw: &str) -> SecretPath {
        SecretPath::parse(raw).unwrap()
    }

    fn req(value: &[u8]) -> PutRequest {
        PutRequest {
            value: SecretBytes::copy_from(value),
            labels: Labels::new(),
            create_only: false,
        }
    }

    fn setup(ttl_ms: u64, stale_ms: u64) -> (Arc<MemStore>, Arc<CachedStore>) {
        let mem = Arc::new(MemStore::default());
        let inner: Arc<dyn Store> = mem.clone();
        let cache = CachedStore::new(
            inner,
            Duration::from_millis(ttl_ms),
            Duration::from_millis(stale_ms),
        );
        (mem, Arc::new(cache))
    }

    async fn value(cache: &CachedStore, p: &SecretPath) -> Vec<u8> {
        cache.get(p).await.unwrap().value.expose_secret().to_vec()
    }

    async fn sleep_ms(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    #[tokio::test]
    async fn hit_avoids_the_inner_store() {
        let (mem, cache) = setup(60_000, 0);
        let p = sp("acme/a");
        cache.put(&p, req(b"one")).await.unwrap();
        assert_eq!(value(&cache, &p).await, b"one");
        assert_eq!(value(&cache, &p).await, b"one");
        let got = cache.get(&p).await.unwrap();
        assert_eq!(got.version, 1);
        assert_eq!(mem.gets(), 1);
        assert_eq!(cache.stats(), CacheStats { hits: 2, misses: 1 });
        assert_eq!(cache.backend(), "mem");
        assert_eq!(cache.entry_count(), 1);
    }

    #[tokio::test]
    async fn fresh_reads_skip_the_cache_and_refresh_it() {
        let (mem, cache) = setup(60_000, 60_000);
        let p = sp("acme/a");
        cache.put(&p, req(b"one")).await.unwrap();
        assert_eq!(value(&cache, &p).await, b"one");
        // Rotated behind the cache's back (another broker wrote it).
        mem.put(&p, req(b"two")).await.unwrap();
        assert_eq!(value(&cache, &p).await, b"one");
        let fresh = cache.get_fresh(&p).await.unwrap();
        assert_eq!(
            (fresh.version, fresh.value.expose_secret()),
            (2, &b"two"[..])
        );
        assert_eq!(mem.gets(), 2);
        // The cache now holds the new value for everyone.
        assert_eq!(value(&cache, &p).await, b"two");
        assert_eq!(mem.gets(), 2);
        // A down store is an error for a fresh read, never a stale value.
        mem.fail_with(Some(StoreErrorKind::Unavailable));
        assert!(cache.get_fresh(&p).await.is_err());
        assert_eq!(value(&cache, &p).await, b"two");
    }

    /// What a [`Worker`] runs, on its thread, with its runtime.
    type Job = Box<dyn FnOnce(&tokio::runtime::Runtime) + Send>;

    /// A thread with a runtime of its own, so with its own shard of the
    /// cache, as a `per_core` worker has; it runs what it is given.
    struct Worker {
        jobs: std::sync::mpsc::Sender<Job>,
    }

    impl Worker {
        fn start() -> Self {
            let (jobs, rx) = std::sync::mpsc::channel::<Job>();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                for job in rx {
                    job(&rt);
                }
            });
            Self { jobs }
        }

        /// Reads `p` through `cache` on this worker's thread.
        fn read(&self, cache: &Arc<CachedStore>, p: &SecretPath) -> Vec<u8> {
            let (cache, p) = (Arc::clone(cache), p.clone());
            let (tx, rx) = std::sync::mpsc::channel();
            self.jobs
                .send(Box::new(move |rt| {
                    tx.send(rt.block_on(value(&cache, &p))).unwrap();
                }))
                .unwrap();
            rx.recv().unwrap()
        }
    }

    /// A cache whose value "one" two [`Worker`]s have read (one copy each).
    async fn cached_on_two_workers() -> (Arc<MemStore>, Arc<CachedStore>, SecretPath, [Worker; 2]) {
        let (mem, cache) = setup(60_000, 0);
        let p = sp("acme/a");
        cache.put(&p, req(b"one")).await.unwrap();
        let workers = [Worker::start(), Worker::start()];
        for w in &workers {
            assert_eq!(w.read(&cache, &p), b"one");
        }
        (mem, cache, p, workers)
    }

    #[tokio::test]
    async fn a_write_on_one_thread_drops_every_threads_copy() {
        let (mem, cache, p, workers) = cached_on_two_workers().await;
        assert_eq!((cache.entry_count(), mem.gets()), (2, 2));
        // Written from this thread, whose shard holds nothing.
        cache.put(&p, req(b"two")).await.unwrap();
        assert_eq!(cache.entry_count(), 0);
        for w in &workers {
            assert_eq!(w.read(&cache, &p), b"two");
        }
        assert_eq!(mem.gets(), 4);
        cache.delete(&p).await.unwrap();
        assert_eq!(cache.entry_count(), 0);
    }

    #[tokio::test]
    async fn a_fresh_read_on_one_thread_refreshes_every_thread() {
        let (mem, cache, p, workers) = cached_on_two_workers().await;
        // Rotated behind the cache's back, then read fresh on one worker.
        mem.put(&p, req(b"two")).await.unwrap();
        let (c, p2) = (Arc::clone(&cache), p.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        workers[0]
            .jobs
            .send(Box::new(move |rt| {
                let fresh = rt.block_on(c.get_fresh(&p2)).unwrap();
                tx.send(fresh.value.expose_secret().to_vec()).unwrap();
            }))
            .unwrap();
        assert_eq!(rx.recv().unwrap(), b"two");
        // The other worker's next ordinary read gets the new value.
        assert_eq!(workers[1].read(&cache, &p), b"two");
    }

    #[tokio::test]
    async fn a_stale_value_cached_by_another_thread_is_served() {
        let (mem, cache) = setup(50, 60_000);
        let p = sp("acme/a");
        cache.put(&p, req(b"one")).await.unwrap();
        assert_eq!(Worker::start().read(&cache, &p), b"one");
        sleep_ms(80).await;
        mem.fail_with(Some(StoreErrorKind::Unavailable));
        // This thread's shard never held it.
        assert_eq!(value(&cache, &p).await, b"one");
    }

    #[tokio::test]
    async fn ready_reads_are_fresh_hits_only() {
        let (mem, cache) = setup(60_000, 0);
        let p = sp("acme/a");
        cache.put(&p, req(b"one")).await.unwrap();
        // Not cached yet: the caller must call `get`.
        assert!(cache.get_ready(&p).is_none());
        assert_eq!(value(&cache, &p).await, b"one");
        let hit = cache.get_ready(&p).unwrap();
        assert_eq!((hit.version, hit.value.expose_secret()), (1, &b"one"[..]));
        assert_eq!(cache.stats(), CacheStats { hits: 1, misses: 1 });
        // A write invalidates it, as for `get`.
        cache.put(&p, req(b"two")).await.unwrap();
        assert!(cache.get_ready(&p).is_none());
        assert_eq!(mem.gets(), 1);
        // Expired entries and a disabled cache are never ready.
        let (_, short) = setup(1, 0);
        short.put(&p, req(b"one")).await.unwrap();
        let _ = short.get(&p).await.unwrap();
        sleep_ms(5).await;
        assert!(short.get_ready(&p).is_none());
        let (_, off) = setup(0, 0);
        off.put(&p, req(b"one")).await.unwrap();
        let _ = off.get(&p).await.unwrap();
        assert!(off.get_ready(&p).is_none());
    }

    #[tokio::test]
    async fn put_and_delete_invalidate() {
        let (mem, cache) = setup(60_000, 0);
        let p = sp("acme/a");
        cache.put(&p, req(b"one")).await.unwrap();
        assert_eq!(value(&cache, &p).await, b"one");
        cache.put(&p, req(b"two")).await.unwrap();
        let got = cache.get(&p).await.unwrap();
        assert_eq!((got.version, got.value.expose_secret()), (2, &b"two"[..]));
        assert_eq!(mem.gets(), 2);
        cache.delete(&p).await.unwrap();
        assert_eq!(cache.entry_count(), 0);
        assert_eq!(
            cache.get(&p).await.unwrap_err().kind(),
            StoreErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn failed_write_still_invalidates() {
        let (mem, cache) = setup(60_000, 0);
        let p = sp("acme/a");
        cache.put(&p, req(b"one")).await.unwrap();
        value(&cache, &p).await;
        mem.fail_with(Some(StoreErrorKind::Timeout));
        assert!(cache.put(&p, req(b"two")).await.is_err());
        assert!(cache.delete(&p).await.is_err());
        mem.fail_with(None);
        assert_eq!(cache.entry_count(), 0);
        value(&cache, &p).await;
        assert_eq!(mem.gets(), 2);
    }

    #[tokio::test]
    async fn cancelled_write_still_invalidates() {
        let (mem, cache) = setup(60_000, 0);
        let p = sp("acme/a");
        cache.put(&p, req(b"one")).await.unwrap();
        value(&cache, &p).await;
        *mem.hang_puts.lock().unwrap() = true;
        let put = cache.put(&p, req(b"two"));
        assert!(
            tokio::time::timeout(Duration::from_millis(20), put)
                .await
                .is_err()
        );
        assert_eq!(cache.entry_count(), 0);
    }

    #[tokio::test]
    async fn zero_ttl_disables_caching() {
        let (mem, cache) = setup(0, 60_000);
        let p = sp("acme/a");
        cache.put(&p, req(b"one")).await.unwrap();
        value(&cache, &p).await;
        value(&cache, &p).await;
        assert_eq!(mem.gets(), 2);
        assert_eq!(cache.entry_count(), 0);
        // The sweeper of a disabled cache ends at once.
        cache.spawn_sweeper().await.unwrap();
    }

    #[tokio::test]
    async fn expired_entries_are_read_again() {
        let (mem, cache) = setup(300, 0);
        let p = sp("acme/a");
        cache.put(&p, req(b"one")).await.unwrap();
        value(&cache, &p).await;
        value(&cache, &p).await;
        assert_eq!(mem.gets(), 1);
        sleep_ms(400).await;
        value(&cache, &p).await;
        assert_eq!(mem.gets(), 2);
    }

    #[tokio::test]
    async fn stale_is_served_only_on_unavailable_or_timeout() {
        let (mem, cache) = setup(50, 60_000);
        let p = sp("acme/a");
        cache.put(&p, req(b"one")).await.unwrap();
        value(&cache, &p).await;
        sleep_ms(80).await;
        for kind in [StoreErrorKind::Unavailable, StoreErrorKind::Timeout] {
            mem.fail_with(Some(kind));
            assert_eq!(value(&cache, &p).await, b"one", "{kind:?}");
        }
        for kind in [StoreErrorKind::Denied, StoreErrorKind::Backend] {
            mem.fail_with(Some(kind));
            assert_eq!(cache.get(&p).await.unwrap_err().kind(), kind);
        }
        // A store that says the secret is gone is believed.
        mem.fail_with(Some(StoreErrorKind::NotFound));
        assert!(cache.get(&p).await.is_err());
        assert_eq!(cache.entry_count(), 0);
    }

    #[tokio::test]
    async fn stale_is_served_only_within_the_window() {
        let (mem, cache) = setup(50, 100);
        let p = sp("acme/a");
        cache.put(&p, req(b"one")).await.unwrap();
        value(&cache, &p).await;
        sleep_ms(200).await;
        mem.fail_with(Some(StoreErrorKind::Unavailable));
        let e = cache.get(&p).await.unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Unavailable);
        // Past all use, the entry was dropped on access.
        assert_eq!(cache.entry_count(), 0);
    }

    #[tokio::test]
    async fn no_stale_window_means_errors_pass_through() {
        let (mem, cache) = setup(50, 0);
        let p = sp("acme/a");
        cache.put(&p, req(b"one")).await.unwrap();
        value(&cache, &p).await;
        sleep_ms(80).await;
        mem.fail_with(Some(StoreErrorKind::Unavailable));
        assert_eq!(
            cache.get(&p).await.unwrap_err().kind(),
            StoreErrorKind::Unavailable
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_racing_a_write_leaves_no_stale_value() {
        let (mem, cache) = setup(60_000, 0);
        let p = sp("acme/a");
        cache.put(&p, req(b"old")).await.unwrap();
        let reached = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        *mem.pause.lock().unwrap() = Some(Pause {
            reached: Arc::clone(&reached),
            release: Arc::clone(&release),
        });
        let reader = {
            let cache = Arc::clone(&cache);
            let p = p.clone();
            tokio::spawn(async move { value(&cache, &p).await })
        };
        // The reader has read `old` from the store and not yet returned.
        reached.notified().await;
        cache.put(&p, req(b"new")).await.unwrap();
        release.notify_one();
        assert_eq!(reader.await.unwrap(), b"old");
        // The late `old` must not have been cached over the write.
        assert_eq!(value(&cache, &p).await, b"new");
        assert_eq!(mem.gets(), 2);
        assert_eq!(value(&cache, &p).await, b"new");
        assert_eq!(mem.gets(), 2);
    }

    #[tokio::test]
    async fn sweeper_evicts_and_ends_with_the_cache() {
        let (_mem, cache) = setup(200, 0);
        let handle = cache.spawn_sweeper();
        for i in 0..5 {
            let p = sp(&format!("acme/s{i}"));
            cache.put(&p, req(b"v")).await.unwrap();
            value(&cache, &p).await;
        }
        assert_eq!(cache.entry_count(), 5);
        sleep_ms(700).await;
        assert_eq!(cache.entry_count(), 0);
        drop(cache);
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn sweeper_keeps_entries_inside_the_stale_window() {
        let (_mem, cache) = setup(30, 60_000);
        let _sweeper = cache.spawn_sweeper();
        let p = sp("acme/a");
        cache.put(&p, req(b"v")).await.unwrap();
        value(&cache, &p).await;
        sleep_ms(150).await;
        assert_eq!(cache.entry_count(), 1);
    }

    #[tokio::test]
    async fn debug_and_errors_show_no_values() {
        let (mem, cache) = setup(60_000, 0);
        let p = sp("acme/a");
        cache.put(&p, req(CANARY)).await.unwrap();
        let got = cache.get(&p).await.unwrap();
        let shown = format!("{cache:?} {:?} {got:?}", cache.get(&p).await.unwrap());
        assert!(!shown.contains("canary"), "{shown}");
        assert!(shown.contains("entries: 1"), "{shown}");
        mem.fail_with(Some(StoreErrorKind::Backend));
        let e = cache.get(&sp("acme/b")).await.unwrap_err();
        assert!(!format!("{e} {e:?}").contains("canary"));
    }
}
