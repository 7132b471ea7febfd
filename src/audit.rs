//! The audit log: exactly one JSON line per request, to stdout or a file.
//!
//! Lines are built in memory and written with one `write_all`, so
//! concurrent requests never interleave. A record has no field that can
//! hold a value or a token: the type makes the leak unrepresentable. A
//! request's line is written before its answer leaves; with a spooled file
//! sink (`[audit] spool = true`) it is kept crash-safe in the [`spool`]
//! before the answer instead, and appended to the file right after.

mod append;
mod line;
mod spool;

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use serde::Serialize;

use crate::config::AuditSink;
use crate::identity::PeerCred;
use crate::shard::Sharded;
use crate::store::{Rfc3339, Timestamp};

/// One audited request (or broker event such as a policy reload).
#[derive(Debug, Serialize)]
pub struct AuditRecord<'a> {
    /// When the request finished, RFC 3339.
    pub ts: Rfc3339,
    /// The request id also returned in the response.
    pub request_id: &'a str,
    /// The resolved principal's name, or `null`.
    pub principal: Option<&'a str>,
    /// Peer credentials, or `null` where unknown.
    pub peer: Option<AuditPeer<'a>>,
    /// `read`, `write`, `list`, `delete`, `upload`, `whoami`, `health`,
    /// `ready`, `reload`, or `null` for a request that was not understood.
    pub action: Option<&'a str>,
    /// The requested path (as sent, bounded), or `null`.
    pub path: Option<&'a str>,
    /// What a minted upload URL allows (never the URL): only on an
    /// `upload` that minted one, and absent from every other line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<AuditUpload<'a>>,
    /// `allow`, `deny`, or `null` when no decision was reached.
    pub decision: Option<&'static str>,
    /// Ids of the policies that decided.
    pub policies: &'a [String],
    /// The HTTP status returned.
    pub status: u16,
    /// Time from request start to response, in microseconds.
    pub latency_us: u64,
}

/// A minted upload as audited: what the URL allows, never the URL.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct AuditUpload<'a> {
    /// The object name in the bucket.
    pub object: &'a str,
    /// The exact size the URL is signed for.
    pub size: u64,
    /// The SHA-256 (hex) it is signed for, if the task gave one.
    pub sha256: Option<&'a str>,
    /// When the URL stops working, RFC 3339.
    pub expires_at: &'a str,
}

/// The peer as audited: `{uid, gid, pid}` on the socket, `{addr,
/// spiffe_id}` or `{addr, dns_name}` over TLS.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum AuditPeer<'a> {
    /// A Unix-socket peer.
    Unix {
        /// Peer uid.
        uid: u32,
        /// Peer gid.
        gid: u32,
        /// Peer pid, where known.
        pid: Option<i32>,
    },
    /// A TLS client.
    Tls {
        /// `ip:port`.
        addr: &'a str,
        /// Its certificate's SPIFFE id, if it has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        spiffe_id: Option<&'a str>,
        /// Else its certificate's first DNS SAN, if it has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        dns_name: Option<&'a str>,
    },
}

impl From<PeerCred> for AuditPeer<'_> {
    fn from(p: PeerCred) -> Self {
        Self::Unix {
            uid: p.uid,
            gid: p.gid,
            pid: p.pid,
        }
    }
}

impl<'a> From<&'a crate::identity::TlsPeer> for AuditPeer<'a> {
    fn from(p: &'a crate::identity::TlsPeer) -> Self {
        let cert = p.cert.as_ref().ok();
        let spiffe_id = cert.and_then(crate::identity::PeerCert::spiffe_id);
        Self::Tls {
            addr: &p.addr,
            spiffe_id,
            dns_name: if spiffe_id.is_some() {
                None
            } else {
                cert.and_then(crate::identity::PeerCert::dns_name)
            },
        }
    }
}

/// Longest path recorded; longer ones are cut (on a char boundary).
const MAX_AUDIT_PATH: usize = 600;

/// Cuts `path` to at most [`MAX_AUDIT_PATH`] bytes.
pub fn bounded_path(path: &str) -> &str {
    if path.len() <= MAX_AUDIT_PATH {
        return path;
    }
    let mut end = MAX_AUDIT_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

/// Room for a typical line, so building it does not reallocate.
const LINE_CAPACITY: usize = 512;
/// A line buffer that grew past this is not kept.
const LINE_KEEP: usize = 4096;

thread_local! {
    /// Each thread builds its lines in one reused buffer: a line is written
    /// out before `record` returns, so the buffer is free again, and a
    /// request saves an allocation and the allocator's clearing free. It
    /// holds no value or token (an audit line has no field for one).
    static LINE: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(LINE_CAPACITY));
}

/// The audit sink.
pub struct AuditLog {
    out: Sink,
    /// The last line could not be written (cleared by the next that is).
    failing: std::sync::atomic::AtomicBool,
    /// The spool file, held (with its `flock`) while the shards use it;
    /// declared after `out` so the shards flush before it is let go.
    spool_lock: Option<std::fs::File>,
}

/// Where lines go. A file is written without a lock: it is opened with
/// `O_APPEND`, so each line's one system call (`append`) lands whole at
/// the end even
/// when requests on other threads write at the same time (the kernel
/// serializes appends to a regular file), and no request waits for another
/// request's write. It is opened once per thread shard: threads writing
/// through one open file would share its reference count and position lock
/// in the kernel on every line. A spooled file is the same, each shard with
/// its spool region behind a lock that only its own thread normally takes.
/// Any other writer (stdout, tests) is serialized here.
enum Sink {
    File(Sharded<append::Appender>),
    Spooled(Sharded<Mutex<spool::SpooledFile>>),
    Writer(Mutex<Box<dyn Write + Send>>),
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the configured sink (a file is created if missing, mode 0600,
    /// and appended to; with `spool`, its spool too, after appending what a
    /// broker that stopped without flushing left there).
    pub fn open(sink: &AuditSink, spool: bool) -> std::io::Result<Self> {
        match sink {
            AuditSink::Stdout => Ok(Self::to_writer(Box::new(std::io::stdout()))),
            AuditSink::File(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                let open = || {
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o600)
                        .open(path)
                };
                let mut first = open()?;
                let held = if spool {
                    open_spool(path, &mut first)?
                } else {
                    None
                };
                let mut first = Some(first);
                let mut file = || match first.take() {
                    Some(f) => Ok(f),
                    None => open(),
                };
                Ok(match held {
                    Some(held) => {
                        let mut regions = held.regions.into_iter();
                        let shards = Sharded::try_new(|| {
                            let region = regions.next().ok_or_else(|| {
                                std::io::Error::other("fewer spool regions than shards")
                            })?;
                            Ok::<_, std::io::Error>(Mutex::new(spool::SpooledFile::new(
                                file()?,
                                region,
                            )))
                        })?;
                        Self {
                            out: Sink::Spooled(shards),
                            failing: Default::default(),
                            spool_lock: Some(held.lock),
                        }
                    }
                    None => Self {
                        out: Sink::File(Sharded::try_new(|| file().map(append::Appender::new))?),
                        failing: Default::default(),
                        spool_lock: None,
                    },
                })
            }
        }
    }

    /// An audit log writing to any writer (tests, benches).
    pub fn to_writer(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Sink::Writer(Mutex::new(out)),
            failing: Default::default(),
            spool_lock: None,
        }
    }

    /// Writes one line to the sink before returning. A failing sink is
    /// reported on stderr via tracing, never silently dropped, and to the
    /// caller, which decides what to serve (`[audit] on_failure`).
    pub fn record(&self, rec: &AuditRecord<'_>) -> Result<(), AuditError> {
        self.record_with(rec, false)
    }

    /// Whether the last line could not be written: requests are refused
    /// up front (fail closed) until a line can be written again.
    pub fn failing(&self) -> bool {
        self.failing.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records a line that must survive a crash of the broker once this
    /// returns, but may reach the sink a moment later: a request's line,
    /// recorded before its answer is sent. With a spooled file sink it
    /// waits in this thread's spool region until [`AuditLog::flush_local`]
    /// on this thread (the connection calls it once the answer is written)
    /// or [`AuditLog::flush_all`]; any other sink is written at once.
    pub fn record_deferred(&self, rec: &AuditRecord<'_>) -> Result<(), AuditError> {
        self.record_with(rec, true)
    }

    /// Appends the lines waiting in this thread's spool region to the file.
    pub fn flush_local(&self) {
        if let Sink::Spooled(files) = &self.out {
            Self::flush_shard(files.local());
        }
    }

    /// Appends every waiting line to the file (the periodic flusher, and
    /// lines recorded on a thread that then served no connection).
    pub fn flush_all(&self) {
        if let Sink::Spooled(files) = &self.out {
            files.all().for_each(Self::flush_shard);
        }
    }

    /// Flushes every shard every `period`, for the lines of a connection
    /// that moved to another thread before writing its answer (the
    /// multi-thread runtime) or was cut before writing it. Only a spooled
    /// sink has any; the task ends with the log.
    pub fn spawn_flusher(self: &Arc<Self>, period: Duration) -> Option<JoinHandle<()>> {
        self.spool_lock.as_ref()?;
        let weak = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(log) = weak.upgrade() else { break };
                log.flush_all();
            }
        }))
    }

    fn flush_shard(shard: &Mutex<spool::SpooledFile>) {
        let mut shard = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = shard.flush() {
            tracing::error!(error = %e, "cannot write audit records; they stay in the spool");
        }
    }

    fn record_with(&self, rec: &AuditRecord<'_>, deferred: bool) -> Result<(), AuditError> {
        let written = LINE.with(|buf| match buf.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                let written = self.write(rec, &mut line, deferred);
                // A rare long line (paths are bounded) does not pin its
                // buffer for the thread's life.
                if line.capacity() > LINE_KEEP {
                    *line = Vec::with_capacity(LINE_CAPACITY);
                }
                written
            }
            // Only if a sink's writer itself audited: never the case, but
            // a fresh buffer is always correct.
            Err(_) => self.write(rec, &mut Vec::with_capacity(LINE_CAPACITY), deferred),
        });
        let failed = written.is_err();
        // Only a change is stored: the flag's cache line stays shared
        // between cores while the sink is healthy.
        if self.failing() != failed {
            self.failing
                .store(failed, std::sync::atomic::Ordering::Relaxed);
        }
        written
    }

    fn write(
        &self,
        rec: &AuditRecord<'_>,
        line: &mut Vec<u8>,
        deferred: bool,
    ) -> Result<(), AuditError> {
        line::write_line(rec, line);
        let line = line.as_slice();
        let written = match &self.out {
            // INVARIANT: one `write_all` of a whole line on an O_APPEND file.
            Sink::File(files) => files.local().append(line),
            Sink::Spooled(files) => {
                let mut shard = files
                    .local()
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if deferred {
                    shard.write_deferred(line)
                } else {
                    shard.write_now(line)
                }
            }
            Sink::Writer(out) => {
                let mut out = out
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                out.write_all(line).and_then(|()| out.flush())
            }
        };
        written.map_err(|e| {
            tracing::error!(error = %e, request_id = rec.request_id, "cannot write audit record");
            AuditError(e)
        })
    }
}

/// An audit line could not be written (the sink's I/O error; never a
/// field of the line).
#[derive(Debug, thiserror::Error)]
#[error("cannot write the audit log: {0}")]
pub struct AuditError(std::io::Error);

/// The spool of the audit file at `path` (`first` one of its descriptors),
/// if it can be had: only a regular file is spooled (not a FIFO or a device
/// such as /dev/stderr, whose directory is no place for one), and only by
/// one broker at a time. Without it, every line is written before its
/// answer, as with `spool = false`.
fn open_spool(
    path: &std::path::Path,
    first: &mut std::fs::File,
) -> std::io::Result<Option<spool::Spool>> {
    if !first.metadata()?.is_file() {
        return Ok(None);
    }
    Ok(
        match spool::open(path, first, Sharded::<std::fs::File>::count()) {
            Ok(Some(held)) => Some(held),
            Ok(None) => {
                tracing::warn!(
                    "another broker holds this audit file's spool; writing each line before its answer"
                );
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot use an audit spool beside the audit file; writing each line before its answer");
                None
            }
        },
    )
}

/// The current time for an audit line.
pub fn now_rfc3339() -> Rfc3339 {
    Timestamp::now().rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A writer that fails while its switch is on.
    #[derive(Clone, Default)]
    struct Flaky(Arc<std::sync::atomic::AtomicBool>);

    impl Write for Flaky {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.0.load(std::sync::atomic::Ordering::Relaxed) {
                Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
            } else {
                Ok(b.len())
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_sink_is_reported_until_a_line_is_written_again() {
        let flaky = Flaky::default();
        let log = AuditLog::to_writer(Box::new(flaky.clone()));
        let rec = |id| AuditRecord {
            ts: now_rfc3339(),
            request_id: id,
            principal: None,
            peer: None,
            action: None,
            path: None,
            upload: None,
            decision: None,
            policies: &[],
            status: 200,
            latency_us: 1,
        };
        assert!(log.record(&rec("a")).is_ok() && !log.failing());
        flaky.0.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(log.record_deferred(&rec("b")).is_err());
        assert!(log.failing());
        flaky.0.store(false, std::sync::atomic::Ordering::Relaxed);
        assert!(log.record(&rec("c")).is_ok());
        assert!(!log.failing());
    }

    #[test]
    fn one_line_with_contract_keys() {
        let buf = Buf::default();
        let log = AuditLog::to_writer(Box::new(buf.clone()));
        let policies = vec!["platform-never-reads".to_owned()];
        log.record(&AuditRecord {
            ts: now_rfc3339(),
            request_id: "r-1",
            principal: Some("provisioner"),
            peer: Some(AuditPeer::Unix {
                uid: 1,
                gid: 2,
                pid: Some(3),
            }),
            action: Some("read"),
            path: Some("acme/x"),
            upload: None,
            decision: Some("deny"),
            policies: &policies,
            status: 403,
            latency_us: 12,
        })
        .unwrap();
        log.record(&AuditRecord {
            ts: now_rfc3339(),
            request_id: "r-2",
            principal: None,
            peer: None,
            action: None,
            path: None,
            upload: None,
            decision: None,
            policies: &[],
            status: 400,
            latency_us: 1,
        })
        .unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        for key in [
            "ts",
            "request_id",
            "principal",
            "peer",
            "action",
            "path",
            "decision",
            "policies",
            "status",
            "latency_us",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["peer"]["pid"], 3);
        let v2: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert!(v2["principal"].is_null() && v2["decision"].is_null());
    }

    #[test]
    fn concurrent_lines_to_a_file_stay_whole() {
        concurrent_lines_stay_whole(false);
        concurrent_lines_stay_whole(true);
    }

    fn concurrent_lines_stay_whole(spool: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = Arc::new(AuditLog::open(&AuditSink::File(path.clone()), spool).unwrap());
        let long = "p/".repeat(290);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = Arc::clone(&log);
                let long = long.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let id = format!("t{t}-{i}");
                        log.record(&AuditRecord {
                            ts: now_rfc3339(),
                            request_id: &id,
                            principal: Some("task"),
                            peer: None,
                            action: Some("read"),
                            path: Some(&long),
                            upload: None,
                            decision: Some("allow"),
                            policies: &[],
                            status: 200,
                            latency_us: 1,
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut ids = std::collections::HashSet::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["path"], long.as_str());
            assert!(ids.insert(v["request_id"].as_str().unwrap().to_owned()));
        }
        assert_eq!(ids.len(), 8 * 500);
    }

    fn record_id(log: &AuditLog, id: &str, deferred: bool) {
        let rec = AuditRecord {
            ts: now_rfc3339(),
            request_id: id,
            principal: Some("task"),
            peer: None,
            action: Some("read"),
            path: Some("acme/x"),
            upload: None,
            decision: Some("allow"),
            policies: &[],
            status: 200,
            latency_us: 1,
        };
        if deferred {
            log.record_deferred(&rec).unwrap();
        } else {
            log.record(&rec).unwrap();
        }
    }

    #[test]
    fn deferred_lines_wait_in_the_spool_until_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let spool = dir.path().join(".audit.log.spool");
        let read = || std::fs::read_to_string(&path).unwrap();
        let log = AuditLog::open(&AuditSink::File(path.clone()), true).unwrap();
        record_id(&log, "d-1", true);
        assert_eq!(read(), "", "waits for the answer to be written");
        // ...crash-safe meanwhile: the line is in the spool file's pages.
        let spooled = std::fs::read(&spool).unwrap();
        assert!(spooled.windows(5).any(|w| w == b"\"d-1\""));
        log.flush_local();
        assert!(read().contains("\"d-1\""));
        // A line recorded at once goes out with any that wait before it.
        record_id(&log, "d-2", true);
        record_id(&log, "n-3", false);
        let text = read();
        assert!(text.find("\"d-2\"").unwrap() < text.find("\"n-3\"").unwrap());
        // Another thread's waiting line: `flush_all` (the periodic flusher),
        // or dropping the log.
        let log = Arc::new(log);
        let other = Arc::clone(&log);
        std::thread::spawn(move || record_id(&other, "t-4", true))
            .join()
            .unwrap();
        log.flush_all();
        assert!(read().contains("\"t-4\""));
        record_id(&log, "d-5", true);
        drop(log);
        let text = read();
        assert_eq!(text.lines().count(), 5, "{text}");
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    #[test]
    fn without_a_spool_lines_are_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let first = AuditLog::open(&AuditSink::File(path.clone()), true).unwrap();
        // The spool is held by `first`: a second log writes directly, as
        // does one with the spool turned off.
        let second = AuditLog::open(&AuditSink::File(path.clone()), true).unwrap();
        let off = AuditLog::open(&AuditSink::File(path.clone()), false).unwrap();
        record_id(&second, "s-1", true);
        record_id(&off, "o-2", true);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"s-1\"") && text.contains("\"o-2\""));
        drop(first);
    }

    #[test]
    fn a_line_larger_than_a_region_is_written_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&AuditSink::File(path.clone()), true).unwrap();
        record_id(&log, "before", true);
        let many: Vec<String> = (0..2000).map(|i| format!("policy-{i}")).collect();
        log.record_deferred(&AuditRecord {
            ts: now_rfc3339(),
            request_id: "huge",
            principal: None,
            peer: None,
            action: None,
            path: None,
            upload: None,
            decision: None,
            policies: &many,
            status: 200,
            latency_us: 1,
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.find("\"before\"").unwrap() < text.find("\"huge\"").unwrap());
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn bounded_path_cuts_on_char_boundary() {
        let long = "é".repeat(400);
        let cut = bounded_path(&long);
        assert!(cut.len() <= MAX_AUDIT_PATH);
        assert!(long.starts_with(cut));
    }
}
