//! The read-through cache in front of any store: fresh reads come from
//! memory, writes and deletes invalidate, evicted values are dropped (and so
//! zeroized), and an expired value may be served while the store is down.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::secret::{ScopePath, SecretBytes, SecretPath};
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

/// One cached value.
struct Entry {
    version: u64,
    value: SecretBytes,
    /// When the read that produced it started (so age is never understated).
    fetched_at: Instant,
}

/// A read-through cache in front of another store.
pub struct CachedStore {
    inner: Arc<dyn Store>,
    ttl: Duration,
    stale_if_error: Duration,
    entries: Mutex<HashMap<SecretPath, Entry>>,
    // INVARIANT: bumped, under the `entries` lock, after every write or
    // delete reached the inner store. A read inserts its value only if the
    // counter did not move since before it asked the inner store, so a value
    // read before a write can never land in the cache after it. One global
    // counter (rather than one per path) costs a skipped fill when any write
    // races a read, which is rare: tasks read, the platform writes.
    generation: AtomicU64,
    hits: AtomicU64,
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
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Hit and miss counts since start.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// How many values are held (fresh or within the stale window).
    pub fn entry_count(&self) -> usize {
        self.lock().len()
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
        self.lock()
            .retain(|_, e| now.saturating_duration_since(e.fetched_at) < keep);
    }

    /// How long an entry is of any use: fresh, then possibly stale-served.
    fn keep_for(&self) -> Duration {
        self.ttl.saturating_add(self.stale_if_error)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SecretPath, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every critical section is a single map operation), so a poisoned
        // lock is still sound to use.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops the cached value of `path` and fences off reads in flight.
    fn invalidate(&self, path: &SecretPath) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.remove(path);
    }

    /// A fresh cached value, evicting the entry if it is past all use.
    fn fresh(&self, path: &SecretPath, now: Instant) -> Option<StoredSecret> {
        let mut entries = self.lock();
        let age = now.saturating_duration_since(entries.get(path)?.fetched_at);
        if age < self.ttl {
            return entries.get(path).map(|e| StoredSecret {
                version: e.version,
                value: e.value.duplicate(),
            });
        }
        if age >= self.keep_for() {
            entries.remove(path);
        }
        None
    }

    /// An expired value still inside the stale window.
    fn stale(&self, path: &SecretPath, now: Instant) -> Option<StoredSecret> {
        let entries = self.lock();
        let entry = entries.get(path)?;
        (now.saturating_duration_since(entry.fetched_at) < self.keep_for()).then(|| StoredSecret {
            version: entry.version,
            value: entry.value.duplicate(),
        })
    }
}

#[async_trait]
impl Store for CachedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn put(&self, path: &SecretPath, req: PutRequest) -> Result<PutOutcome, StoreError> {
        let result = self.inner.put(path, req).await;
        // Also on error: a failed or timed-out write may still have landed.
        self.invalidate(path);
        result
    }

    async fn get(&self, path: &SecretPath) -> Result<StoredSecret, StoreError> {
        if self.ttl.is_zero() {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return self.inner.get(path).await;
        }
        let started = Instant::now();
        if let Some(hit) = self.fresh(path, started) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let generation = self.generation.load(Ordering::SeqCst);
        match self.inner.get(path).await {
            Ok(secret) => {
                let mut entries = self.lock();
                if self.generation.load(Ordering::SeqCst) == generation {
                    entries.insert(
                        path.clone(),
                        Entry {
                            version: secret.version,
                            value: secret.value.duplicate(),
                            fetched_at: started,
                        },
                    );
                }
                Ok(secret)
            }
            Err(e) => match e.kind() {
                StoreErrorKind::Unavailable | StoreErrorKind::Timeout => {
                    self.stale(path, Instant::now()).ok_or(e)
                }
                StoreErrorKind::NotFound => {
                    // Gone from the store (perhaps behind our back): forget it.
                    self.lock().remove(path);
                    Err(e)
                }
                _ => Err(e),
            },
        }
    }

    async fn list(&self, scope: &ScopePath) -> Result<Vec<SecretMeta>, StoreError> {
        self.inner.list(scope).await
    }

    async fn delete(&self, path: &SecretPath) -> Result<(), StoreError> {
        let result = self.inner.delete(path).await;
        self.invalidate(path);
        result
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.inner.health().await
    }
}
