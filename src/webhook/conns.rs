//! The webhook's connection table: a fixed number of slots and, when all
//! are taken, load shedding instead of a queue.
//!
//! A connection is *waiting* while the server waits on its client (the TLS
//! handshake, a request head or body, or idle between requests) and *busy*
//! while a review it sent is being answered. When a new connection finds
//! every slot taken, the connection that has been waiting the longest is
//! closed and gives up its slot; if every connection is busy, the new one is
//! closed at once. The API server sends each review in one go and is busy
//! for milliseconds, so slow or idle clients are the ones shed, and an
//! attacker holding connections open cannot keep a real review out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;

/// Marks a busy connection in [`ConnState`].
const BUSY: u64 = u64::MAX;

/// How long a new connection waits for the slot of the one it evicted
/// (its task only has to be dropped).
const EVICT_WAIT: Duration = Duration::from_secs(1);

/// One connection's progress, shared with its request handler.
#[derive(Debug)]
pub(super) struct ConnState {
    /// Milliseconds since [`Conns`]' epoch at which it began to wait on
    /// its client, or [`BUSY`].
    waiting_since: AtomicU64,
    epoch: Instant,
}

impl ConnState {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(BUSY - 1)
    }

    /// The client sent something new (a request head): it waits from now.
    pub(super) fn progressed(&self) {
        self.waiting_since.store(self.now(), Ordering::Relaxed);
    }

    /// The request is complete and being answered: not to be evicted until
    /// the returned guard is dropped (then it waits again, from then).
    pub(super) fn busy(self: &Arc<Self>) -> BusyGuard {
        self.waiting_since.store(BUSY, Ordering::Relaxed);
        BusyGuard(Arc::clone(self))
    }
}

/// Keeps a connection busy; see [`ConnState::busy`].
#[derive(Debug)]
pub(super) struct BusyGuard(Arc<ConnState>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.progressed();
    }
}

#[derive(Debug)]
struct Entry {
    id: u64,
    state: Arc<ConnState>,
    abort: Option<AbortHandle>,
}

/// The table; see the module docs.
#[derive(Debug)]
pub(super) struct Conns {
    slots: Arc<Semaphore>,
    capacity: usize,
    table: Mutex<Vec<Entry>>,
    next_id: AtomicU64,
    epoch: Instant,
}

/// A slot held by one connection; dropping it frees the slot.
#[derive(Debug)]
pub(super) struct Slot {
    conns: Arc<Conns>,
    id: u64,
    /// The connection's progress, for its handler.
    pub(super) state: Arc<ConnState>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut t) = self.conns.table.lock() {
            t.retain(|e| e.id != self.id);
        }
    }
}

/// What became of a new connection.
#[derive(Debug)]
pub(super) enum Admission {
    /// A free slot.
    Admitted(Slot),
    /// The slot of the longest-waiting connection, which was closed.
    Evicted(Slot),
    /// Every connection is busy: refuse this one.
    Full,
}

impl Conns {
    /// A table of `capacity` slots.
    pub(super) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(capacity)),
            capacity,
            table: Mutex::new(Vec::with_capacity(capacity)),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// A slot for a connection accepted just now.
    pub(super) async fn admit(self: &Arc<Self>) -> Admission {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Admission::Admitted(self.slot(permit));
        }
        if !self.evict_longest_waiting() {
            return Admission::Full;
        }
        match tokio::time::timeout(EVICT_WAIT, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(permit)) => Admission::Evicted(self.slot(permit)),
            _ => Admission::Full,
        }
    }

    fn slot(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Slot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            waiting_since: AtomicU64::new(0),
            epoch: self.epoch,
        });
        state.progressed();
        if let Ok(mut t) = self.table.lock() {
            t.push(Entry {
                id,
                state: Arc::clone(&state),
                abort: None,
            });
        }
        Slot {
            conns: Arc::clone(self),
            id,
            state,
            _permit: permit,
        }
    }

    /// Records the task serving `slot`, so that it can be evicted.
    pub(super) fn serving(&self, slot_id: u64, abort: AbortHandle) {
        if let Ok(mut t) = self.table.lock() {
            if let Some(e) = t.iter_mut().find(|e| e.id == slot_id) {
                e.abort = Some(abort);
            }
        }
    }

    /// Closes the connection that has waited longest on its client; false
    /// when every connection is busy.
    fn evict_longest_waiting(&self) -> bool {
        let Ok(mut t) = self.table.lock() else {
            return false;
        };
        let victim = t
            .iter()
            .enumerate()
            .filter(|(_, e)| e.abort.is_some())
            .map(|(i, e)| (i, e.state.waiting_since.load(Ordering::Relaxed)))
            .filter(|(_, since)| *since != BUSY)
            .min_by_key(|(_, since)| *since)
            .map(|(i, _)| i);
        let Some(i) = victim else {
            return false;
        };
        let e = t.swap_remove(i);
        if let Some(abort) = e.abort {
            // Dropping the task drops its socket and its slot.
            abort.abort();
        }
        true
    }

    /// Waits (up to `within`) until every connection has ended.
    pub(super) async fn drain(&self, within: Duration) {
        let n = u32::try_from(self.capacity).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(within, self.slots.acquire_many(n)).await;
    }
}

impl Slot {
    /// This slot's id, for [`Conns::serving`].
    pub(super) fn id(&self) -> u64 {
        self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_longest_waiting_connection_is_evicted_and_busy_ones_never() {
        let conns = Conns::new(2);
        let mut tasks = Vec::new();
        let mut states = Vec::new();
        for _ in 0..2 {
            let Admission::Admitted(slot) = conns.admit().await else {
                panic!("a free slot was not given");
            };
            states.push(Arc::clone(&slot.state));
            let id = slot.id();
            let task = tokio::spawn(async move {
                let _slot = slot;
                std::future::pending::<()>().await;
            });
            conns.serving(id, task.abort_handle());
            tasks.push(task);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The first is busy: the second, though younger, is the one evicted.
        let busy = states[0].busy();
        let Admission::Evicted(_third) = conns.admit().await else {
            panic!("no eviction");
        };
        tokio::task::yield_now().await;
        assert!(tasks[1].is_finished());
        assert!(!tasks[0].is_finished());
        // One busy, one not yet serving: nothing to evict, the new one is refused.
        assert!(matches!(conns.admit().await, Admission::Full));
        // Once the first waits again, it is the one to go.
        drop(busy);
        assert!(matches!(conns.admit().await, Admission::Evicted(_)));
        tokio::task::yield_now().await;
        assert!(tasks[0].is_finished());
    }
}
