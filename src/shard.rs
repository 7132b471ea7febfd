//! Per-thread shards of shared state on the request path.
//!
//! Every worker thread touching the same lock or counter for every request
//! moves its cache line from core to core on each request (a cache miss
//! each, several per request; docs/performance.md, session 4, has the
//! measurement). A [`Sharded`] value
//! keeps one copy per shard, each on its own cache lines; a thread always
//! uses the same shard, so a worker's lock and counters stay in its core's
//! cache. Whole-value operations (invalidation, counts) visit every shard.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Shards per value: comfortably more than the worker threads of a
/// sidecar, so two workers rarely share one.
const SHARDS: usize = 8;

/// One shard, alone on its cache lines (128 bytes: adjacent-line
/// prefetching pairs 64-byte lines).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// `SHARDS` copies of a `T`; each thread uses one of them.
#[derive(Debug)]
pub struct Sharded<T> {
    shards: Box<[Padded<T>]>,
}

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Self::new(|| T::default())
    }
}

/// Threads get shard indices in turn, the first time they touch a shard,
/// so the first `SHARDS` threads on the request path (the worker threads,
/// which serve the first requests) each have their own.
static NEXT_INDEX: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// This thread's shard index.
fn index() -> usize {
    INDEX.with(|i| {
        i.get().unwrap_or_else(|| {
            let n = NEXT_INDEX.fetch_add(1, Ordering::Relaxed) % SHARDS;
            i.set(Some(n));
            n
        })
    })
}

impl<T> Sharded<T> {
    /// Shards made by `make`.
    pub fn new(mut make: impl FnMut() -> T) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Padded(make())).collect(),
        }
    }

    /// Shards made by `make`, or its first error.
    pub fn try_new<E>(mut make: impl FnMut() -> Result<T, E>) -> Result<Self, E> {
        Ok(Self {
            shards: (0..SHARDS)
                .map(|_| make().map(Padded))
                .collect::<Result<_, E>>()?,
        })
    }

    /// The calling thread's shard.
    pub fn local(&self) -> &T {
        self.local_indexed().1
    }

    /// The calling thread's shard and its index (below [`Sharded::count`]).
    pub fn local_indexed(&self) -> (usize, &T) {
        let i = index();
        // INVARIANT: `index()` is below `SHARDS`, the length of `shards`.
        (i, &self.shards[i].0)
    }

    /// The number of shards.
    pub const fn count() -> usize {
        SHARDS
    }

    /// Every shard, in a fixed order (lock them in this order).
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().map(|p| &p.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_thread_keeps_its_shard_and_threads_spread_out() {
        let s: Sharded<AtomicU64> = Sharded::default();
        let mine = s.local() as *const AtomicU64;
        assert_eq!(mine, s.local() as *const AtomicU64);
        let others: std::collections::HashSet<usize> = (0..SHARDS - 1)
            .map(|_| {
                let s = &s;
                std::thread::scope(|sc| sc.spawn(move || s.local() as *const _ as usize).join())
                    .unwrap()
            })
            .collect();
        // Consecutive threads get consecutive shards (tests running in
        // parallel may take some indices in between, never all of them).
        assert!(others.len() > 1);
        for shard in s.all() {
            shard.fetch_add(1, Ordering::Relaxed);
        }
        assert_eq!(
            s.all().map(|c| c.load(Ordering::Relaxed)).sum::<u64>(),
            SHARDS as u64
        );
    }

    #[test]
    fn shards_do_not_share_cache_lines() {
        let s: Sharded<AtomicU64> = Sharded::default();
        let addrs: Vec<usize> = s.all().map(|c| c as *const _ as usize).collect();
        for w in addrs.windows(2) {
            assert!(w[1] - w[0] >= 128);
        }
    }
}
