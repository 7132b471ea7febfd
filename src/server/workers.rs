//! `[runtime] flavor = "per_core"`: one single-threaded tokio runtime per
//! worker thread, each serving the connections handed to it, in turn, by
//! the listeners: the Unix socket's to the first `socket_workers` of them
//! (by default half, [`default_socket_count`]), the TLS listener's to all.
//!
//! With tokio's work-stealing runtime both workers take wake-ups for any
//! connection, steal each other's tasks and search for work before parking;
//! a connection here lives on one thread from accept to close, its socket
//! registered with that thread's own epoll. The listener, signals, the
//! metrics listener and background work (cache sweeping, store sessions)
//! stay on the main runtime. Before parking, a worker may spin on its own
//! connections for a moment ([`super::spin`]). See docs/performance.md for
//! the measurements.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::spin::Spinner;
use super::spread::Spread;

/// Of `workers` workers, how many serve the Unix socket's connections when
/// `[runtime] socket_workers` does not say: half of them, rounded up. The
/// TLS listener's connections go to all of them.
///
/// The socket's clients run on the same machine (the same pod), and a
/// request costs its client about as much CPU as it costs the broker
/// (docs/performance.md, sessions 14 and 15). Socket connections spread
/// over a worker per core leave the clients no core of their own: workers
/// and clients take turns on every core, each worker drains its few
/// connections and sleeps, and is woken again by the next request (on a
/// virtual machine, a halted vCPU woken by an interrupt, which costs more
/// than answering a cached read). On half the cores the workers stay busy
/// while the clients use the rest. Measured on 2 cores, one socket worker
/// against two, 16 connections: 0.79x the CPU per request and 1.14-1.17x
/// the requests per second under a single-threaded async client; under
/// one client thread per connection, 0.65-0.76x the requests per second
/// (the lone worker gets one thread's share of the cores against sixteen
/// client threads). For such clients `[runtime] spread_preempted` (off by
/// default, [`super::spread`]) has a socket worker preempted that often
/// move connections to the other workers until the counts are level.
/// Remote TLS callers bring no load to this machine but the broker's, so
/// their connections use every worker.
pub fn default_socket_count(workers: usize) -> usize {
    workers.div_ceil(2).max(1)
}

/// One worker: its runtime, and what it spins on before parking.
#[derive(Debug)]
pub struct Worker {
    handle: Handle,
    spinner: Option<Arc<Spinner>>,
    /// Its connection count and, on a socket worker, its spreading state
    /// (when some workers do not serve the socket, so there is somewhere
    /// to spread to; otherwise `None` on every worker).
    spread: Option<Arc<Spread>>,
}

impl Worker {
    /// The worker's runtime.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Moves `socket` from the runtime it was accepted on to this worker's
    /// reactor; the connection's tasks must then be spawned on
    /// [`Worker::handle`].
    pub fn adopt<S: Movable>(&self, socket: S) -> io::Result<S> {
        let _entered = self.handle.enter();
        socket.reregister()
    }

    /// The spreading state a connection on this worker tells of its
    /// requests, counted as open until the connection drops it
    /// ([`Spread::closed`]).
    pub fn spread(&self) -> Option<Arc<Spread>> {
        let spread = self.spread.as_ref()?;
        spread.opened();
        Some(Arc::clone(spread))
    }

    /// Has the worker spin on `socket` before parking (with `idle_spin`).
    /// Returns the spinner to tell of each request on it, if it is watched.
    pub fn watch(&self, socket: impl AsFd) -> Option<Arc<Spinner>> {
        let spinner = self.spinner.as_ref()?;
        match spinner.watch(socket) {
            Ok(()) => Some(Arc::clone(spinner)),
            Err(e) => {
                // The connection is served all the same; the worker just
                // does not spin for it.
                tracing::debug!(error = %e, "cannot add a connection to the worker's spin set");
                None
            }
        }
    }
}

/// A tokio socket that can leave its reactor for the current runtime's.
pub trait Movable: Sized {
    /// The same socket, registered with the reactor of the runtime entered.
    fn reregister(self) -> io::Result<Self>;
}

impl Movable for tokio::net::UnixStream {
    fn reregister(self) -> io::Result<Self> {
        Self::from_std(self.into_std()?)
    }
}

impl Movable for tokio::net::TcpStream {
    fn reregister(self) -> io::Result<Self> {
        Self::from_std(self.into_std()?)
    }
}

/// Worker threads, each running a current-thread runtime until shut down.
#[derive(Debug)]
pub struct Workers {
    pool: WorkerPool,
    threads: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
}

/// The workers' runtimes, handed out in turn: cheap to clone, for each
/// listener that gives its connections to the workers (the socket's and the
/// TLS listener's share one turn). Holding it does not keep the threads
/// alive: [`Workers`] owns them.
#[derive(Debug, Clone)]
pub struct WorkerPool(Arc<Pool>);

#[derive(Debug)]
struct Pool {
    handles: Vec<Worker>,
    /// The TLS listener's turn, over every worker.
    next: AtomicUsize,
    /// The socket's turn, over the first `socket_workers` workers.
    next_socket: AtomicUsize,
    /// How many workers serve the socket (at least one, at most all).
    socket_workers: usize,
}

impl WorkerPool {
    /// The runtime the next TLS connection goes to (every worker in turn).
    pub fn next(&self) -> &Worker {
        let i = self.0.next.fetch_add(1, Ordering::Relaxed) % self.0.handles.len();
        &self.0.handles[i]
    }

    /// The runtime the next socket connection goes to (each socket worker
    /// in turn).
    pub fn next_for_socket(&self) -> &Worker {
        let i = self.0.next_socket.fetch_add(1, Ordering::Relaxed) % self.0.socket_workers;
        &self.0.handles[i]
    }

    /// Worker `i` (as [`Spread::least_loaded_spare`] names it).
    pub fn worker(&self, i: usize) -> Option<&Worker> {
        self.0.handles.get(i)
    }
}

impl Workers {
    /// Starts `n` worker threads (at least one), each with its runtime
    /// built before this returns, so a runtime that cannot start is an
    /// error here rather than a dead thread; the first `socket_workers` of
    /// them (at least one, at most `n`) serve the socket, and spread their
    /// connections to the others while preempted `spread_preempted` times
    /// per request or more ([`super::spread`]; `None`: never). Each spins for up to
    /// `idle_spin` before parking (zero: never).
    pub fn start(
        n: usize,
        socket_workers: usize,
        spread_preempted: Option<f64>,
        idle_spin: Duration,
    ) -> io::Result<Self> {
        let n = n.max(1);
        let socket_workers = socket_workers.clamp(1, n);
        // Spinning pays only while the clients have cores of their own
        // (`spin`): at most one open connection per two workers.
        let open = Arc::new(AtomicUsize::new(0));
        let max_open = (n / 2).max(1);
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        let spreads: Vec<Option<Arc<Spread>>> = match spread_preempted {
            Some(threshold) if socket_workers < n => {
                Spread::for_workers(n, socket_workers, threshold)
                    .into_iter()
                    .map(Some)
                    .collect()
            }
            _ => vec![None; n],
        };
        for (i, spread) in spreads.into_iter().enumerate() {
            let mut builder = tokio::runtime::Builder::new_current_thread();
            // Sockets and timers only: signals and child processes are the
            // main runtime's. (`enable_all` would also have every park of
            // every worker try the process-wide lock of tokio's orphaned
            // child queue.)
            builder.enable_io().enable_time();
            let spinner = if idle_spin.is_zero() {
                None
            } else {
                let spinner = Arc::new(Spinner::new(idle_spin, Arc::clone(&open), max_open)?);
                let park = Arc::clone(&spinner);
                builder.on_thread_park(move || {
                    park.before_park();
                });
                Some(spinner)
            };
            let rt = builder.build()?;
            handles.push(Worker {
                handle: rt.handle().clone(),
                spinner,
                spread,
            });
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    // Runs the connections spawned onto this runtime until
                    // told to stop; dropping the runtime then cancels what
                    // is left and waits for its blocking-pool work.
                    let _ = rt.block_on(stopped);
                    drop(rt);
                })?;
            threads.push((stop, thread));
        }
        Ok(Self {
            pool: WorkerPool(Arc::new(Pool {
                handles,
                next: AtomicUsize::new(0),
                next_socket: AtomicUsize::new(0),
                socket_workers,
            })),
            threads,
        })
    }

    /// The runtime the next socket connection goes to (each socket
    /// worker in turn).
    pub fn next_for_socket(&self) -> &Worker {
        self.pool.next_for_socket()
    }

    /// The runtimes, for another listener to hand its connections to.
    pub fn pool(&self) -> WorkerPool {
        self.pool.clone()
    }

    /// Stops every worker runtime (cancelling the connections still on
    /// them) and waits for the threads. Blocks: call it off the async
    /// threads, e.g. in `spawn_blocking`.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Tell every worker first, then wait, so they stop together.
        let threads = std::mem::take(&mut self.threads);
        let mut joins = Vec::with_capacity(threads.len());
        for (stop, thread) in threads {
            let _ = stop.send(());
            joins.push(thread);
        }
        for thread in joins {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_to_each_worker_in_turn_and_run_on_its_thread() {
        let workers = Workers::start(3, 3, Some(0.1), Duration::ZERO).unwrap();
        assert_eq!(workers.pool.0.handles.len(), 3);
        let names = threads_of((0..6).map(|_| workers.next_for_socket().handle().clone()));
        assert_eq!(
            names,
            [
                "worker-0", "worker-1", "worker-2", "worker-0", "worker-1", "worker-2"
            ]
        );
        workers.shutdown();
    }

    #[test]
    fn shutdown_cancels_what_is_still_running_and_joins() {
        let workers = Workers::start(2, 2, Some(0.1), Duration::from_micros(20)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // A task that never finishes: holds the sender until cancelled.
        workers.next_for_socket().handle().spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        workers.shutdown();
        // The task was dropped with its runtime, so the channel closed.
        assert!(rx.recv().is_err());
    }

    #[test]
    fn by_default_half_the_workers_serve_the_socket_rounded_up() {
        let counts: Vec<usize> = [0, 1, 2, 3, 4, 8, 64].map(default_socket_count).to_vec();
        assert_eq!(counts, [1, 1, 1, 2, 2, 4, 32]);
    }

    /// The worker thread each of `picks` connections would run on.
    fn threads_of(picks: impl Iterator<Item = Handle>) -> Vec<String> {
        picks
            .map(|handle| {
                let (tx, rx) = std::sync::mpsc::channel();
                handle.spawn(async move {
                    let name = std::thread::current().name().map(str::to_owned);
                    tx.send(name).unwrap();
                });
                rx.recv().unwrap().unwrap()
            })
            .collect()
    }

    #[test]
    fn socket_connections_go_to_the_socket_workers_and_tls_ones_to_all() {
        let workers = Workers::start(3, 2, Some(0.1), Duration::ZERO).unwrap();
        let socket = threads_of((0..4).map(|_| workers.next_for_socket().handle().clone()));
        assert_eq!(socket, ["worker-0", "worker-1", "worker-0", "worker-1"]);
        let pool = workers.pool();
        let tls = threads_of((0..4).map(|_| pool.next().handle().clone()));
        assert_eq!(tls, ["worker-0", "worker-1", "worker-2", "worker-0"]);
        // Socket workers spread to the worker that does not serve the
        // socket, which spreads nowhere.
        let spares: Vec<Option<usize>> = (0..3)
            .map(|i| {
                pool.worker(i)
                    .unwrap()
                    .spread()
                    .unwrap()
                    .least_loaded_spare()
            })
            .collect();
        assert_eq!(spares, [Some(2), Some(2), None]);
        workers.shutdown();
        // Every worker serving the socket: nowhere to spread to; and
        // spreading off (the default): no worker spreads.
        for (socket, threshold) in [(2, Some(0.1)), (1, None)] {
            let all = Workers::start(2, socket, threshold, Duration::ZERO).unwrap();
            assert!(all.pool.0.handles.iter().all(|w| w.spread.is_none()));
            all.shutdown();
        }
        // At least one, at most all.
        for (asked, serving) in [(0, 1), (9, 3)] {
            let workers = Workers::start(3, asked, Some(0.1), Duration::ZERO).unwrap();
            assert_eq!(workers.pool.0.socket_workers, serving);
        }
    }

    #[test]
    fn at_least_one_worker() {
        let workers = Workers::start(0, 0, Some(0.1), Duration::ZERO).unwrap();
        assert_eq!(workers.pool.0.handles.len(), 1);
    }
}
