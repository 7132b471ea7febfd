//! The audit log: exactly one JSON line per request, to stdout or a file.
//!
//! Lines are built in memory and written with one `write_all` under a lock,
//! so concurrent requests never interleave. A record has no field that can
//! hold a value or a token: the type makes the leak unrepresentable.

mod line;

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Mutex;

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
    pub peer: Option<AuditPeer>,
    /// `read`, `write`, `list`, `delete`, `whoami`, `health`, `ready`,
    /// `reload`, or `null` for a request that was not understood.
    pub action: Option<&'a str>,
    /// The requested path (as sent, bounded), or `null`.
    pub path: Option<&'a str>,
    /// `allow`, `deny`, or `null` when no decision was reached.
    pub decision: Option<&'static str>,
    /// Ids of the policies that decided.
    pub policies: &'a [String],
    /// The HTTP status returned.
    pub status: u16,
    /// Time from request start to response, in microseconds.
    pub latency_us: u64,
}

/// Peer credentials as audited.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct AuditPeer {
    /// Peer uid.
    pub uid: u32,
    /// Peer gid.
    pub gid: u32,
    /// Peer pid, where known.
    pub pid: Option<i32>,
}

impl From<PeerCred> for AuditPeer {
    fn from(p: PeerCred) -> Self {
        Self {
            uid: p.uid,
            gid: p.gid,
            pid: p.pid,
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
}

/// Where lines go. A file is written without a lock: it is opened with
/// `O_APPEND`, so each line's one `write(2)` lands whole at the end even
/// when requests on other threads write at the same time (the kernel
/// serializes appends to a regular file), and no request waits for another
/// request's write. It is opened once per thread shard: threads writing
/// through one open file would share its reference count and position lock
/// in the kernel on every line. Any other writer (stdout, tests) is
/// serialized here.
enum Sink {
    File(Sharded<std::fs::File>),
    Writer(Mutex<Box<dyn Write + Send>>),
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the configured sink (a file is created if missing, mode 0600,
    /// and appended to).
    pub fn open(sink: &AuditSink) -> std::io::Result<Self> {
        match sink {
            AuditSink::Stdout => Ok(Self::to_writer(Box::new(std::io::stdout()))),
            AuditSink::File(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                let files = Sharded::try_new(|| {
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o600)
                        .open(path)
                })?;
                Ok(Self {
                    out: Sink::File(files),
                })
            }
        }
    }

    /// An audit log writing to any writer (tests, benches).
    pub fn to_writer(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Sink::Writer(Mutex::new(out)),
        }
    }

    /// Writes one line. A failing sink is reported on stderr via tracing,
    /// never silently dropped.
    pub fn record(&self, rec: &AuditRecord<'_>) {
        LINE.with(|buf| match buf.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                self.write(rec, &mut line);
                // A rare long line (paths are bounded) does not pin its
                // buffer for the thread's life.
                if line.capacity() > LINE_KEEP {
                    *line = Vec::with_capacity(LINE_CAPACITY);
                }
            }
            // Only if a sink's writer itself audited: never the case, but
            // a fresh buffer is always correct.
            Err(_) => self.write(rec, &mut Vec::with_capacity(LINE_CAPACITY)),
        });
    }

    fn write(&self, rec: &AuditRecord<'_>, line: &mut Vec<u8>) {
        line::write_line(rec, line);
        let line = line.as_slice();
        let written = match &self.out {
            // INVARIANT: one `write_all` of a whole line on an O_APPEND file.
            Sink::File(files) => files.local().write_all(line),
            Sink::Writer(out) => {
                let mut out = out
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                out.write_all(line).and_then(|()| out.flush())
            }
        };
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot write audit record");
        }
    }
}

/// The current time for an audit line.
pub fn now_rfc3339() -> Rfc3339 {
    Timestamp::now().rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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

    #[test]
    fn one_line_with_contract_keys() {
        let buf = Buf::default();
        let log = AuditLog::to_writer(Box::new(buf.clone()));
        let policies = vec!["platform-never-reads".to_owned()];
        log.record(&AuditRecord {
            ts: now_rfc3339(),
            request_id: "r-1",
            principal: Some("provisioner"),
            peer: Some(AuditPeer {
                uid: 1,
                gid: 2,
                pid: Some(3),
            }),
            action: Some("read"),
            path: Some("acme/x"),
            decision: Some("deny"),
            policies: &policies,
            status: 403,
            latency_us: 12,
        });
        log.record(&AuditRecord {
            ts: now_rfc3339(),
            request_id: "r-2",
            principal: None,
            peer: None,
            action: None,
            path: None,
            decision: None,
            policies: &[],
            status: 400,
            latency_us: 1,
        });
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
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = Arc::new(AuditLog::open(&AuditSink::File(path.clone())).unwrap());
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
                            decision: Some("allow"),
                            policies: &[],
                            status: 200,
                            latency_us: 1,
                        });
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

    #[test]
    fn bounded_path_cuts_on_char_boundary() {
        let long = "é".repeat(400);
        let cut = bounded_path(&long);
        assert!(cut.len() <= MAX_AUDIT_PATH);
        assert!(long.starts_with(cut));
    }
}
