//! The audit log: exactly one JSON line per request, to stdout or a file.
//!
//! Lines are built in memory and written with one `write_all` under a lock,
//! so concurrent requests never interleave. A record has no field that can
//! hold a value or a token: the type makes the leak unrepresentable.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

use crate::config::AuditSink;
use crate::identity::PeerCred;
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

/// The audit sink.
pub struct AuditLog {
    out: Mutex<Box<dyn Write + Send>>,
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
        let out: Box<dyn Write + Send> = match sink {
            AuditSink::Stdout => Box::new(std::io::stdout()),
            AuditSink::File(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                Box::new(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o600)
                        .open(path)?,
                )
            }
        };
        Ok(Self::to_writer(out))
    }

    /// An audit log writing to any writer (tests, benches).
    pub fn to_writer(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Mutex::new(out),
        }
    }

    /// Writes one line. A failing sink is reported on stderr via tracing,
    /// never silently dropped.
    pub fn record(&self, rec: &AuditRecord<'_>) {
        // Sized for a typical line, so serializing does not reallocate.
        let mut line = Vec::with_capacity(384);
        if let Err(e) = serde_json::to_writer(&mut line, rec) {
            tracing::error!(error = %e, "cannot serialize audit record");
            return;
        }
        line.push(b'\n');
        let mut out = match self.out.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
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
    fn bounded_path_cuts_on_char_boundary() {
        let long = "é".repeat(400);
        let cut = bounded_path(&long);
        assert!(cut.len() <= MAX_AUDIT_PATH);
        assert!(long.starts_with(cut));
    }
}
