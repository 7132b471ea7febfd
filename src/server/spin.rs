//! `[runtime] idle_spin`: a `per_core` worker about to sleep first watches
//! its own connections for a few microseconds.
//!
//! A client that sends its next request right after reading an answer
//! finds the worker asleep in `epoll_wait`, and waking a sleeping thread
//! (on a virtual machine, a halted vCPU) costs more than answering a
//! cached read. So before parking, the worker polls the sockets it serves
//! (its own epoll set, without blocking) until one is readable, work is
//! queued for it from another thread, or the budget runs out; then it
//! parks as usual, and tokio's own `epoll_wait` returns at once for what
//! arrived meanwhile.
//!
//! It only spins where it pays: when the worker's last two requests
//! arrived at most the budget apart (a client that asks again as soon as it
//! has its answer). Each such request buys at most one spin, of at most the
//! budget: a spin that runs out turns spinning off until two requests come
//! close together again. So an idle broker spins at most once, for at most
//! the budget, after its last request; requests that steadily come further
//! apart than the budget never make it spin; and the worst case (close and
//! far gaps alternating) costs one budget per close pair. Wake-ups that
//! bring no request (a timer, a socket turning writable) change nothing.
//!
//! And only while the broker serves few connections: at most one per two
//! workers (so at least one, on any machine). A spin pays when the client
//! it waits for runs on another core; with more connections, their clients
//! and the workers outnumber the cores, and the time a worker spends
//! spinning is time a client waits for the CPU to send the very request
//! the worker waits for (measured: 16 connections on 2 cores, the p99
//! about 1.5-2x that of workers that do not spin; docs/performance.md).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use tokio::runtime::Handle;

/// `last_request` before the first request.
const NO_REQUEST: u64 = u64::MAX;

/// One worker's spin-before-park state. The hooks run on the worker's own
/// thread; [`Spinner::watch`] runs on the listener's.
#[derive(Debug)]
pub struct Spinner {
    /// The worker's connections, level-triggered for input or hang-up.
    set: OwnedFd,
    budget: Duration,
    /// When the latest request arrived, in nanoseconds since `epoch`, or
    /// [`NO_REQUEST`].
    last_request: AtomicU64,
    epoch: Instant,
    /// Whether the next park spins first: the last two requests came
    /// within the budget, and no spin has run out since.
    spin_next: AtomicBool,
    /// The connections watched by every worker's spinner, open now.
    open: Arc<AtomicUsize>,
    /// No spin while more than this many are open.
    max_open: usize,
}

impl Spinner {
    /// A spinner that polls for at most `budget` before each park, while
    /// at most `max_open` of the connections counted in `open` (shared by
    /// the spinners of all workers) are open.
    pub fn new(budget: Duration, open: Arc<AtomicUsize>, max_open: usize) -> io::Result<Self> {
        Ok(Self {
            set: epoll::create(epoll::CreateFlags::CLOEXEC)?,
            budget,
            last_request: AtomicU64::new(NO_REQUEST),
            epoch: Instant::now(),
            spin_next: AtomicBool::new(false),
            open,
            max_open,
        })
    }

    /// Adds a connection's socket to the set polled before parking and
    /// counts it as open until [`Spinner::closed`]. The kernel drops it
    /// from the set when the socket is closed.
    pub fn watch(&self, socket: impl AsFd) -> io::Result<()> {
        epoll::add(
            &self.set,
            socket,
            epoll::EventData::new_u64(0),
            epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
        )?;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A connection [`Spinner::watch`] took is over.
    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Called as each request on a watched connection arrives: the next
    /// park spins only if this request came within the budget of the one
    /// before it on this worker.
    pub fn request_arrived(&self) {
        if self.open.load(Ordering::Relaxed) > self.max_open {
            // No spin while this many are open: no clock read either (one
            // per request, at the loads where requests are most).
            self.spin_next.store(false, Ordering::Relaxed);
            return;
        }
        let now = self.nanos(Instant::now());
        let close = match self.last_request.swap(now, Ordering::Relaxed) {
            NO_REQUEST => false,
            before => u128::from(now.saturating_sub(before)) <= self.budget.as_nanos(),
        };
        self.spin_next.store(close, Ordering::Relaxed);
    }

    /// The runtime's `on_thread_park` hook: if requests have been coming
    /// close together and few connections are open, spins until a watched
    /// socket is readable, a task is queued for this runtime from another
    /// thread, or the budget is spent (which turns spinning off until the
    /// next close pair of requests). Says whether it spun.
    pub fn before_park(&self) -> bool {
        if !self.spin_next.load(Ordering::Relaxed)
            || self.open.load(Ordering::Relaxed) > self.max_open
        {
            return false;
        }
        if !self.spin(Instant::now() + self.budget) {
            self.spin_next.store(false, Ordering::Relaxed);
        }
        true
    }

    /// Polls until something needs the worker (true) or `deadline` passes
    /// (false).
    fn spin(&self, deadline: Instant) -> bool {
        // Tasks woken or spawned from another thread wait in the runtime's
        // injection queue; the worker must not sit on them.
        let runtime = Handle::try_current().ok().map(|h| h.metrics());
        let now = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut events = [MaybeUninit::<epoll::Event>::uninit(); 1];
        loop {
            match epoll::wait(&self.set, &mut events, Some(&now)) {
                Ok(([], _)) => {}
                // Readable, or a failing set: park now either way.
                _ => return true,
            }
            if runtime.as_ref().is_some_and(|m| m.global_queue_depth() > 0) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::hint::spin_loop();
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    /// Long enough that returning before it proves the spin ended early.
    const FOREVER: Duration = Duration::from_secs(60);

    /// The only worker's spinner, spinning with one connection open.
    fn alone(budget: Duration) -> Spinner {
        Spinner::new(budget, Arc::default(), 1).unwrap()
    }

    /// A spinner whose next park spins: two requests just arrived back to
    /// back.
    fn spinning(budget: Duration) -> Spinner {
        let spinner = alone(budget);
        spinner.request_arrived();
        spinner.request_arrived();
        spinner
    }

    /// [`spinning`], watching our end of a fresh socket pair.
    fn spinning_on_a_socket(budget: Duration) -> (Spinner, UnixStream, UnixStream) {
        let spinner = spinning(budget);
        let (ours, theirs) = UnixStream::pair().unwrap();
        spinner.watch(&ours).unwrap();
        (spinner, ours, theirs)
    }

    #[test]
    fn ends_when_a_watched_socket_becomes_readable() {
        let (spinner, _ours, mut theirs) = spinning_on_a_socket(FOREVER);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            theirs.write_all(b"GET").unwrap();
            theirs
        });
        let started = Instant::now();
        spinner.before_park();
        assert!(started.elapsed() < FOREVER / 2);
        drop(writer.join().unwrap());
    }

    #[test]
    fn ends_when_a_watched_peer_hangs_up() {
        let (spinner, _ours, theirs) = spinning_on_a_socket(FOREVER);
        drop(theirs);
        let started = Instant::now();
        spinner.before_park();
        assert!(started.elapsed() < FOREVER / 2);
    }

    #[test]
    fn ends_when_another_thread_queues_work_for_the_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        // Spawned from another thread while the runtime is not running:
        // the task waits in the injection queue.
        std::thread::spawn(move || drop(handle.spawn(async {})))
            .join()
            .unwrap();
        let spinner = spinning(FOREVER);
        let _entered = rt.enter();
        let started = Instant::now();
        spinner.before_park();
        assert!(started.elapsed() < FOREVER / 2);
    }

    #[test]
    fn spends_the_budget_when_nothing_arrives() {
        let budget = Duration::from_millis(20);
        let (spinner, _ours, _theirs) = spinning_on_a_socket(budget);
        let started = Instant::now();
        spinner.before_park();
        assert!(started.elapsed() >= budget);
    }

    #[test]
    fn a_closed_socket_leaves_the_set() {
        let budget = Duration::from_millis(20);
        let (spinner, ours, theirs) = spinning_on_a_socket(budget);
        // Closing our end removes it; its peer's hang-up is not reported.
        drop(ours);
        let started = Instant::now();
        spinner.before_park();
        assert!(started.elapsed() >= budget);
        drop(theirs);
    }

    #[test]
    fn spins_only_after_two_requests_close_together() {
        let budget = Duration::from_millis(200);
        let spinner = alone(budget);
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        spinner.watch(&ours).unwrap();
        // Always readable from here on: a spin ends at once.
        theirs.write_all(b"GET").unwrap();
        // Nothing to go by yet, nor after a lone request.
        assert!(!spinner.before_park());
        spinner.request_arrived();
        assert!(!spinner.before_park());
        // A second request within the budget: every park spins...
        spinner.request_arrived();
        assert!(spinner.before_park());
        assert!(spinner.before_park());
        // ...until requests come further apart than the budget.
        std::thread::sleep(budget * 2);
        spinner.request_arrived();
        assert!(!spinner.before_park());
    }

    #[test]
    fn spins_only_while_few_connections_are_open() {
        let open = Arc::new(AtomicUsize::new(0));
        // Two workers, at most one connection between them.
        let budget = Duration::from_millis(200);
        let spinners: Vec<Spinner> = (0..2)
            .map(|_| Spinner::new(budget, Arc::clone(&open), 1).unwrap())
            .collect();
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (b, _b_peer) = UnixStream::pair().unwrap();
        // Always readable: a spin ends at once.
        a_peer.write_all(b"GET").unwrap();
        spinners[0].watch(&a).unwrap();
        spinners[0].request_arrived();
        spinners[0].request_arrived();
        assert!(spinners[0].before_park());
        // A second connection, on the other worker: nobody spins.
        spinners[1].watch(&b).unwrap();
        assert_eq!(open.load(Ordering::Relaxed), 2);
        assert!(!spinners[0].before_park());
        // It closes: the first worker spins again.
        spinners[1].closed();
        assert!(spinners[0].before_park());
    }

    #[test]
    fn a_spin_that_runs_out_turns_spinning_off() {
        let budget = Duration::from_millis(20);
        let (spinner, _ours, _theirs) = spinning_on_a_socket(budget);
        // Nothing arrives: one spin spends the budget...
        assert!(spinner.before_park());
        // ...and the parks after it (a timer, a socket turning writable:
        // wake-ups that bring no request) sleep at once.
        assert!(!spinner.before_park());
        assert!(!spinner.before_park());
        // Two close requests turn it back on.
        spinner.request_arrived();
        spinner.request_arrived();
        assert!(spinner.spin_next.load(Ordering::Relaxed));
    }
}
