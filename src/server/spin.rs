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
//! It only spins where it pays: if the last idle stretch (from deciding to
//! park to waking again) was longer than the budget, the next park sleeps
//! straight away. An idle broker spins at most once, for at most the
//! budget, after its last request; under a steady stream of requests that
//! each find the worker idle for longer than the budget, at most every
//! other park spins in vain.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use tokio::runtime::Handle;

/// One worker's spin-before-park state. The hooks run on the worker's own
/// thread; [`Spinner::watch`] runs on the listener's.
#[derive(Debug)]
pub struct Spinner {
    /// The worker's connections, level-triggered for input or hang-up.
    set: OwnedFd,
    budget: Duration,
    /// When the current idle stretch began, in nanoseconds since `epoch`.
    idle_since: AtomicU64,
    epoch: Instant,
    /// Whether the next park spins first (the last idle stretch was short).
    spin_next: AtomicBool,
}

impl Spinner {
    /// A spinner that polls for at most `budget` before each park.
    pub fn new(budget: Duration) -> io::Result<Self> {
        Ok(Self {
            set: epoll::create(epoll::CreateFlags::CLOEXEC)?,
            budget,
            idle_since: AtomicU64::new(0),
            epoch: Instant::now(),
            spin_next: AtomicBool::new(true),
        })
    }

    /// Adds a connection's socket to the set polled before parking. The
    /// kernel drops it from the set when the socket is closed.
    pub fn watch(&self, socket: impl AsFd) -> io::Result<()> {
        epoll::add(
            &self.set,
            socket,
            epoll::EventData::new_u64(0),
            epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
        )?;
        Ok(())
    }

    /// The runtime's `on_thread_park` hook: spins if the last idle stretch
    /// was short, until a watched socket is readable, a task is queued for
    /// this runtime from another thread, or the budget is spent. Says
    /// whether it spun.
    pub fn before_park(&self) -> bool {
        let start = Instant::now();
        self.idle_since.store(self.nanos(start), Ordering::Relaxed);
        let spin = self.spin_next.load(Ordering::Relaxed);
        if spin {
            self.spin(start + self.budget);
        }
        spin
    }

    /// The runtime's `on_thread_unpark` hook: the next park spins only if
    /// this idle stretch was within the budget (so spinning would have
    /// caught what woke the worker).
    pub fn after_unpark(&self) {
        let idle = self
            .nanos(Instant::now())
            .saturating_sub(self.idle_since.load(Ordering::Relaxed));
        let short = u128::from(idle) <= self.budget.as_nanos();
        self.spin_next.store(short, Ordering::Relaxed);
    }

    fn spin(&self, deadline: Instant) {
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
                _ => return,
            }
            if runtime.as_ref().is_some_and(|m| m.global_queue_depth() > 0)
                || Instant::now() >= deadline
            {
                return;
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

    #[test]
    fn ends_when_a_watched_socket_becomes_readable() {
        let spinner = Spinner::new(FOREVER).unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        spinner.watch(&ours).unwrap();
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
        let spinner = Spinner::new(FOREVER).unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        spinner.watch(&ours).unwrap();
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
        let spinner = Spinner::new(FOREVER).unwrap();
        let _entered = rt.enter();
        let started = Instant::now();
        spinner.before_park();
        assert!(started.elapsed() < FOREVER / 2);
    }

    #[test]
    fn spends_the_budget_when_nothing_arrives() {
        let budget = Duration::from_millis(20);
        let spinner = Spinner::new(budget).unwrap();
        let (ours, _theirs) = UnixStream::pair().unwrap();
        spinner.watch(&ours).unwrap();
        let started = Instant::now();
        spinner.before_park();
        assert!(started.elapsed() >= budget);
    }

    #[test]
    fn a_closed_socket_leaves_the_set() {
        let budget = Duration::from_millis(20);
        let spinner = Spinner::new(budget).unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        spinner.watch(&ours).unwrap();
        // Closing our end removes it; its peer's hang-up is not reported.
        drop(ours);
        let started = Instant::now();
        spinner.before_park();
        assert!(started.elapsed() >= budget);
        drop(theirs);
    }

    #[test]
    fn spins_again_only_after_a_short_idle_stretch() {
        let budget = Duration::from_millis(200);
        let spinner = Spinner::new(budget).unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        spinner.watch(&ours).unwrap();
        // Always readable from here on: a spin ends at once.
        theirs.write_all(b"GET").unwrap();
        assert!(spinner.spin_next.load(Ordering::Relaxed));
        assert!(spinner.before_park());
        // Woken within the budget: keep spinning.
        spinner.after_unpark();
        assert!(spinner.spin_next.load(Ordering::Relaxed));
        // Slept past the budget: the next park sleeps at once...
        assert!(spinner.before_park());
        std::thread::sleep(budget * 2);
        spinner.after_unpark();
        assert!(!spinner.spin_next.load(Ordering::Relaxed));
        assert!(!spinner.before_park());
        // ...and a short stretch after it turns spinning back on.
        spinner.after_unpark();
        assert!(spinner.spin_next.load(Ordering::Relaxed));
    }
}
