//! The request-head deadline (`[limits] header_timeout`), kept without a
//! timer per request.
//!
//! hyper's own `header_read_timeout` arms a timer for every request head and
//! drops it when the head is in: a boxed sleep, a timer-wheel insert and
//! remove, and often a wake-up of a parked worker, per request (about 6 % of
//! the broker's CPU at 16 connections, see docs/performance.md). Here each
//! connection has a [`HeadWatch`]: two relaxed atomic stores per request
//! record that the connection stopped waiting for a head (the head arrived
//! and went to the API) and began again (the answer went back to hyper),
//! read from the coarse monotonic clock. One sleeping [`watchdog`] task per
//! connection looks at the watch when a deadline passes and sleeps again
//! until the next possible one, so a busy connection costs one wake-up per
//! `header_timeout`, not one per request. A connection waiting longer than
//! that for a complete head (idle, trickling a head, or not reading its
//! answer) is closed.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;

/// A request is in the API.
const BUSY: u64 = 0;
/// The deadline passed; the connection is being closed.
const EXPIRED: u64 = u64::MAX;
/// The connection ended.
const CLOSED: u64 = u64::MAX - 1;

/// Milliseconds on the coarse monotonic clock (a few ms of resolution,
/// much cheaper to read than the precise one), never 0 or a marker.
fn coarse_now_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    let ms = u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0) / 1_000_000);
    ms.clamp(1, CLOSED - 1)
}

/// What the watchdog found.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// Waited too long for a head: now marked expired.
    Expired,
    /// The connection ended.
    Closed,
    /// Look again in this long.
    Later(Duration),
}

/// One connection's state: busy, waiting for a head since a time, expired
/// or closed.
#[derive(Debug)]
pub struct HeadWatch {
    /// `BUSY`, `EXPIRED`, `CLOSED`, or the coarse ms when waiting began.
    state: AtomicU64,
    /// The watchdog, aborted when the connection ends first.
    watchdog: OnceLock<AbortHandle>,
}

impl Default for HeadWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl HeadWatch {
    /// A connection that has just started waiting for its first head.
    pub fn new() -> Self {
        Self {
            state: AtomicU64::new(coarse_now_ms()),
            watchdog: OnceLock::new(),
        }
    }

    /// A complete head arrived. `false`: the deadline had already passed
    /// and the connection is being closed; the request must not be served.
    pub fn begin_request(&self) -> bool {
        let mut seen = self.state.load(Ordering::Relaxed);
        loop {
            if seen == EXPIRED || seen == CLOSED {
                return false;
            }
            match self
                .state
                .compare_exchange_weak(seen, BUSY, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => seen = now,
            }
        }
    }

    /// The answer went back to hyper: waiting for the next head from now.
    pub fn end_request(&self) {
        // Only a busy watch moves to waiting; expiry and close are final.
        let _ = self.state.compare_exchange(
            BUSY,
            coarse_now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The connection ended: stop its watchdog.
    pub fn close(&self) {
        self.state.store(CLOSED, Ordering::Relaxed);
        if let Some(w) = self.watchdog.get() {
            w.abort();
        }
    }

    /// Registers the watchdog so that [`close`](Self::close) can stop it.
    pub fn set_watchdog(&self, handle: AbortHandle) {
        let _ = self.watchdog.set(handle);
        // The connection may have ended before the handle was registered.
        if self.state.load(Ordering::Relaxed) == CLOSED {
            if let Some(w) = self.watchdog.get() {
                w.abort();
            }
        }
    }

    fn check(&self, timeout: Duration, now_ms: u64) -> Check {
        let limit = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let mut seen = self.state.load(Ordering::Relaxed);
        loop {
            match seen {
                CLOSED => return Check::Closed,
                EXPIRED => return Check::Expired,
                BUSY => return Check::Later(timeout),
                since => {
                    let waited = now_ms.saturating_sub(since);
                    if waited < limit {
                        return Check::Later(Duration::from_millis(limit - waited));
                    }
                    match self.state.compare_exchange(
                        since,
                        EXPIRED,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return Check::Expired,
                        Err(now) => seen = now,
                    }
                }
            }
        }
    }
}

/// Closes the connection task `conn` (calling `on_expiry` first) once it
/// has waited `timeout` for a complete request head; returns when the
/// connection ends first.
pub async fn watchdog(
    watch: &HeadWatch,
    conn: AbortHandle,
    timeout: Duration,
    on_expiry: impl FnOnce(),
) {
    let mut wait = timeout;
    loop {
        tokio::time::sleep_until(Instant::now() + wait).await;
        match watch.check(timeout, coarse_now_ms()) {
            Check::Closed => return,
            Check::Expired => {
                on_expiry();
                conn.abort();
                return;
            }
            Check::Later(d) => wait = d,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const T: Duration = Duration::from_secs(10);

    fn waiting_since(ms: u64) -> HeadWatch {
        let w = HeadWatch::new();
        w.state.store(ms, Ordering::Relaxed);
        w
    }

    #[test]
    fn a_waiting_connection_expires_only_after_the_timeout() {
        let w = waiting_since(1_000);
        assert_eq!(w.check(T, 1_000), Check::Later(T));
        assert_eq!(w.check(T, 10_999), Check::Later(Duration::from_millis(1)));
        assert_eq!(w.check(T, 11_000), Check::Expired);
        // Expiry is final: a head arriving now is refused.
        assert!(!w.begin_request());
        w.end_request();
        assert_eq!(w.check(T, 11_001), Check::Expired);
    }

    #[test]
    fn a_busy_connection_never_expires_and_waits_anew_after_its_answer() {
        let w = waiting_since(1_000);
        assert!(w.begin_request());
        assert_eq!(w.check(T, 1_000_000), Check::Later(T));
        w.end_request();
        let since = w.state.load(Ordering::Relaxed);
        assert!(since != BUSY && since < CLOSED);
        assert_eq!(
            w.check(T, since + 3_000),
            Check::Later(T - Duration::from_secs(3))
        );
    }

    #[test]
    fn a_closed_connection_stops_its_watchdog() {
        let w = waiting_since(1_000);
        w.close();
        assert_eq!(w.check(T, 1_000_000), Check::Closed);
        assert!(!w.begin_request());
    }

    #[test]
    fn the_coarse_clock_is_monotonic_and_never_a_marker() {
        let a = coarse_now_ms();
        let b = coarse_now_ms();
        assert!(a <= b && a != BUSY && b < CLOSED);
    }

    #[tokio::test]
    async fn the_watchdog_aborts_a_connection_that_waits_too_long() {
        let watch = Arc::new(HeadWatch::new());
        let conn = tokio::spawn(std::future::pending::<()>());
        let expired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&expired);
        // Waiting since the clock's first millisecond: long expired.
        watch.state.store(1, Ordering::Relaxed);
        watchdog(
            &watch,
            conn.abort_handle(),
            Duration::from_millis(50),
            move || flag.store(true, Ordering::Relaxed),
        )
        .await;
        assert!(expired.load(Ordering::Relaxed));
        assert!(conn.await.unwrap_err().is_cancelled());
    }

    #[tokio::test]
    async fn the_watchdog_ends_quietly_with_its_connection() {
        let watch = Arc::new(HeadWatch::new());
        let conn = tokio::spawn(async {});
        watch.close();
        watchdog(
            &watch,
            conn.abort_handle(),
            Duration::from_millis(20),
            || panic!("a closed connection must not expire"),
        )
        .await;
    }
}
