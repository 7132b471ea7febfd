//! `[runtime] spread_preempted` (off by default): a socket worker that is
//! being preempted hands connections to the workers that do not serve the
//! socket, until they hold as many as it.
//!
//! The socket's connections start on half the `per_core` workers
//! ([`super::workers::default_socket_count`]): their clients share the
//! machine, and a worker per core would leave them no core of their own.
//! That holds for a client that drives its connections from one thread (an
//! event loop). A client that drives each connection from a thread of its
//! own puts many threads against the one worker, and the scheduler gives
//! the worker one thread's share: each answer wakes a client thread that
//! takes the worker's core (preemptions, about one every two requests, on
//! 2 cores with 16 client threads; under an event loop, one every few
//! hundred). So every `CHECK_EVERY` requests a socket worker reads how
//! often it was preempted (`/proc/thread-self/status`); at or above
//! `[runtime] spread_preempted` preemptions per request in two checks in a
//! row (one could straddle the end of another client's load, or of a
//! single connection's, whose spinning worker its client preempts), with
//! at least two connections open throughout, it marks half the
//! difference between its open connections and those of the least loaded
//! other worker to move, and each moves at its next point between two
//! requests (the plain-GET lane's wait for a head) to the least loaded
//! worker that does not serve the socket. Connections only ever move
//! from a socket worker to the others, so nothing moves back and forth,
//! and once the counts are level nothing more moves.
//! docs/performance.md (session 15) has the measurements, and why it is
//! off by default: an event-loop client that the scheduler puts on the
//! socket worker's core preempts it as often, and spreading its
//! connections costs it the sleeps one socket worker avoids.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Requests between two reads of the worker's preemption count.
const CHECK_EVERY: u64 = 4096;

/// One worker's connection count and, on a socket worker with others to
/// spread to, its spreading state. The counters but the open counts are
/// touched by that worker's thread only (atomics so the connections'
/// shared context can hold it).
#[derive(Debug)]
pub struct Spread {
    /// This worker's index in `open`.
    index: usize,
    /// Connections open on each worker, shared by every worker's state.
    open: Arc<[AtomicUsize]>,
    /// The workers a socket worker spreads to; empty: it does not spread.
    spares: Range<usize>,
    /// Preemptions per request at or above which the worker spreads.
    threshold: f64,
    /// Requests served since start.
    served: AtomicU64,
    /// `served` and the thread's preemption count at the last check
    /// (`u64::MAX` before the first).
    checked_served: AtomicU64,
    checked_preempted: AtomicU64,
    /// Whether the last check found the worker preempted often.
    high: AtomicBool,
    /// Connections still to move.
    to_move: AtomicUsize,
}

impl Spread {
    /// One state per worker: `socket_workers` of `n` serve the socket and
    /// spread, at `threshold` preemptions per request, to the others.
    pub fn for_workers(n: usize, socket_workers: usize, threshold: f64) -> Vec<Arc<Self>> {
        let open: Arc<[AtomicUsize]> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        (0..n)
            .map(|index| {
                Arc::new(Self {
                    index,
                    open: Arc::clone(&open),
                    spares: if index < socket_workers {
                        socket_workers..n
                    } else {
                        n..n
                    },
                    threshold,
                    served: AtomicU64::new(0),
                    checked_served: AtomicU64::new(0),
                    checked_preempted: AtomicU64::new(u64::MAX),
                    high: AtomicBool::new(false),
                    to_move: AtomicUsize::new(0),
                })
            })
            .collect()
    }

    /// A connection was handed to this worker.
    pub fn opened(&self) {
        self.open[self.index].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection of this worker is over (or moved away).
    pub fn closed(&self) {
        self.open[self.index].fetch_sub(1, Ordering::Relaxed);
    }

    /// The worker this one spreads to next: the one of its spares with the
    /// fewest open connections (`None`: it does not spread).
    pub fn least_loaded_spare(&self) -> Option<usize> {
        self.spares
            .clone()
            .min_by_key(|&j| self.open[j].load(Ordering::Relaxed))
    }

    /// Called on the worker's thread as each request arrives.
    pub fn request_arrived(&self) {
        if self.spares.is_empty() {
            return;
        }
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        if served % CHECK_EVERY != 0 {
            return;
        }
        if let Some(preempted) = thread_preemptions() {
            self.check(served, preempted);
        }
    }

    /// Decides from the thread's preemption count at `served` requests.
    fn check(&self, served: u64, preempted: u64) {
        let before = self.checked_preempted.swap(preempted, Ordering::Relaxed);
        let served_before = self.checked_served.swap(served, Ordering::Relaxed);
        if before == u64::MAX || served <= served_before {
            return;
        }
        let rate = preempted.saturating_sub(before) as f64 / (served - served_before) as f64;
        let mine = self.open[self.index].load(Ordering::Relaxed);
        let high = rate >= self.threshold && mine >= 2;
        if !(self.high.swap(high, Ordering::Relaxed) && high) {
            // What an earlier check left to move is void: those
            // connections may be gone, and the next ones not its to move.
            self.to_move.store(0, Ordering::Relaxed);
            return;
        }
        let least = self
            .least_loaded_spare()
            .map_or(mine, |j| self.open[j].load(Ordering::Relaxed));
        let moving = mine.saturating_sub(least) / 2;
        self.to_move.store(moving, Ordering::Relaxed);
        if moving > 0 {
            tracing::debug!(
                preemptions_per_request = rate,
                moving,
                "a socket worker is preempted often: moving connections to the other workers"
            );
        }
    }

    /// Whether the calling connection (between two requests) should move
    /// now; a `true` is counted against the connections to move. Only
    /// while this worker still holds more than one connection beyond the
    /// least loaded spare (its connections may have closed meanwhile).
    pub fn take_move(&self) -> bool {
        if self.to_move.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mine = self.open[self.index].load(Ordering::Relaxed);
        let least = self
            .least_loaded_spare()
            .map_or(mine, |j| self.open[j].load(Ordering::Relaxed));
        if mine <= least + 1 {
            self.to_move.store(0, Ordering::Relaxed);
            return false;
        }
        self.to_move
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// The calling thread's involuntary context switches since it started.
fn thread_preemptions() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two workers, the first serving the socket, with `open` connections
    /// on each.
    fn two(threshold: f64, open: [usize; 2]) -> Vec<Arc<Spread>> {
        let states = Spread::for_workers(2, 1, threshold);
        for (state, n) in states.iter().zip(open) {
            for _ in 0..n {
                state.opened();
            }
        }
        states
    }

    /// How many connections move from `w[0]` to `w[1]` now, each moving
    /// as it is told to.
    fn moves(w: &[Arc<Spread>]) -> usize {
        let mut n = 0;
        while w[0].take_move() {
            w[0].closed();
            w[1].opened();
            n += 1;
        }
        n
    }

    #[test]
    fn a_preempted_socket_worker_levels_its_connections_with_the_others() {
        let w = two(0.1, [16, 0]);
        w[0].check(4096, 100);
        assert_eq!(moves(&w), 0, "the first check only sets a baseline");
        // 2048 preemptions in 4096 requests: 0.5 per request, twice.
        w[0].check(8192, 2148);
        assert_eq!(moves(&w), 0, "one window alone moves nothing");
        w[0].check(12288, 4196);
        assert_eq!(moves(&w), 8);
        // Level now (8 and 8), so the next check moves nothing.
        w[0].check(16384, 6244);
        assert_eq!(moves(&w), 0);
        // Sixteen new connections on the socket worker (24 against 8):
        // spread again, to level.
        for _ in 0..16 {
            w[0].opened();
        }
        w[0].check(20480, 8292);
        assert_eq!(moves(&w), 8);
    }

    #[test]
    fn one_window_of_preemptions_between_quiet_ones_moves_nothing() {
        let w = two(0.1, [16, 0]);
        w[0].check(4096, 0);
        for (served, preempted) in [(8192, 2048), (12288, 2060), (16384, 4108), (20480, 4110)] {
            w[0].check(served, preempted);
            assert_eq!(moves(&w), 0, "at {served}");
        }
        // A window with a single connection open breaks a run too.
        w[0].check(24576, 6158);
        let w2 = two(0.1, [1, 0]);
        w2[0].check(4096, 0);
        w2[0].check(8192, 2048);
        for _ in 0..15 {
            w2[0].opened();
        }
        w2[0].check(12288, 4096);
        assert_eq!(moves(&w2), 0);
        w2[0].check(16384, 6144);
        assert_eq!(moves(&w2), 8);
    }

    #[test]
    fn what_is_left_to_move_is_void_once_those_connections_are_gone() {
        let w = two(0.1, [16, 0]);
        w[0].check(4096, 0);
        w[0].check(8192, 2048);
        w[0].check(12288, 4096);
        // Told to move 8; all 16 close before any moves.
        for _ in 0..16 {
            w[0].closed();
        }
        // The next client's connections (an event loop: quiet) stay.
        for _ in 0..16 {
            w[0].opened();
        }
        assert_eq!(moves(&w), 8, "still owed at once: the counts are 16/0");
        let w = two(0.1, [16, 0]);
        w[0].check(4096, 0);
        w[0].check(8192, 2048);
        w[0].check(12288, 4096);
        // A quiet check between: nothing is owed any more.
        w[0].check(16384, 4100);
        assert_eq!(moves(&w), 0);
    }

    #[test]
    fn a_worker_preempted_rarely_keeps_its_connections() {
        let w = two(0.1, [16, 0]);
        w[0].check(4096, 10);
        // 20 preemptions in 4096 requests (an event-loop client).
        w[0].check(8192, 30);
        assert_eq!(moves(&w), 0);
    }

    #[test]
    fn one_connection_is_never_moved_and_spares_never_spread() {
        let w = two(0.1, [1, 0]);
        w[0].check(4096, 0);
        w[0].check(8192, 4096);
        w[0].check(12288, 8192);
        assert_eq!(moves(&w), 0);
        assert_eq!(w[1].least_loaded_spare(), None);
        assert_eq!(w[0].least_loaded_spare(), Some(1));
    }

    #[test]
    fn the_least_loaded_spare_is_chosen() {
        let w = Spread::for_workers(4, 2, 0.1);
        for _ in 0..3 {
            w[2].opened();
        }
        w[3].opened();
        assert_eq!(w[0].least_loaded_spare(), Some(3));
        assert_eq!(w[1].least_loaded_spare(), Some(3));
    }

    #[test]
    fn reads_this_threads_preemption_count() {
        assert!(thread_preemptions().is_some());
    }
}
