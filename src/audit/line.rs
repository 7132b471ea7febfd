//! Writes an [`AuditRecord`] as one JSON line, byte for byte what
//! `serde_json` writes for it (a property test holds the two together),
//! without going through serde: strings that need no escaping (nearly all)
//! are copied as they are, numbers are formatted with `itoa`. Every request
//! writes one line, so this is on the hot path.

use super::{AuditPeer, AuditRecord};

/// Appends `rec` and a newline to `out`.
pub(super) fn write_line(rec: &AuditRecord<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"ts\":");
    string(out, rec.ts.as_str());
    out.extend_from_slice(b",\"request_id\":");
    string(out, rec.request_id);
    out.extend_from_slice(b",\"principal\":");
    opt_string(out, rec.principal);
    out.extend_from_slice(b",\"peer\":");
    match rec.peer {
        Some(p) => peer(out, p),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"action\":");
    opt_string(out, rec.action);
    out.extend_from_slice(b",\"path\":");
    opt_string(out, rec.path);
    if let Some(u) = &rec.upload {
        out.extend_from_slice(b",\"upload\":{\"object\":");
        string(out, u.object);
        out.extend_from_slice(b",\"size\":");
        number(out, u.size);
        out.extend_from_slice(b",\"sha256\":");
        opt_string(out, u.sha256);
        out.extend_from_slice(b",\"expires_at\":");
        string(out, u.expires_at);
        out.push(b'}');
    }
    out.extend_from_slice(b",\"decision\":");
    opt_string(out, rec.decision);
    out.extend_from_slice(b",\"policies\":[");
    for (i, p) in rec.policies.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, p);
    }
    out.extend_from_slice(b"],\"status\":");
    number(out, rec.status);
    out.extend_from_slice(b",\"latency_us\":");
    number(out, rec.latency_us);
    out.extend_from_slice(b"}\n");
}

fn peer(out: &mut Vec<u8>, p: AuditPeer<'_>) {
    match p {
        AuditPeer::Unix { uid, gid, pid } => {
            out.extend_from_slice(b"{\"uid\":");
            number(out, uid);
            out.extend_from_slice(b",\"gid\":");
            number(out, gid);
            out.extend_from_slice(b",\"pid\":");
            match pid {
                Some(pid) => number(out, pid),
                None => out.extend_from_slice(b"null"),
            }
        }
        AuditPeer::Tls {
            addr,
            spiffe_id,
            dns_name,
        } => {
            out.extend_from_slice(b"{\"addr\":");
            string(out, addr);
            if let Some(id) = spiffe_id {
                out.extend_from_slice(b",\"spiffe_id\":");
                string(out, id);
            }
            if let Some(name) = dns_name {
                out.extend_from_slice(b",\"dns_name\":");
                string(out, name);
            }
        }
    }
    out.push(b'}');
}

fn number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string, escaped as `serde_json` does.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    crate::json::push_escaped(out, s);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditUpload, now_rfc3339};
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        // Plain text, JSON's special characters, control characters and
        // non-ASCII, in any mix.
        prop_oneof![
            "[a-z0-9/_.-]{0,40}",
            "[\\x00-\\x1f\"\\\\a-z\u{7f}é\u{2028}😀]{0,20}",
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn the_line_is_what_serde_json_writes(
            request_id in text(),
            principal in proptest::option::of(text()),
            peer in proptest::option::of((any::<u32>(), any::<u32>(), proptest::option::of(any::<i32>()))),
            tls in proptest::option::of((text(), proptest::option::of(text()), proptest::option::of(text()))),
            action in proptest::option::of(text()),
            path in proptest::option::of(text()),
            decision in proptest::option::of(prop_oneof![Just("allow"), Just("deny")]),
            policies in proptest::collection::vec(text(), 0..4),
            status in any::<u16>(),
            latency_us in any::<u64>(),
            upload in proptest::option::of((text(), any::<u64>(), proptest::option::of(text()), text())),
        ) {
            let rec = AuditRecord {
                ts: now_rfc3339(),
                request_id: &request_id,
                principal: principal.as_deref(),
                peer: match &tls {
                    Some((addr, spiffe_id, dns_name)) => Some(AuditPeer::Tls {
                        addr,
                        spiffe_id: spiffe_id.as_deref(),
                        dns_name: dns_name.as_deref(),
                    }),
                    None => peer.map(|(uid, gid, pid)| AuditPeer::Unix { uid, gid, pid }),
                },
                action: action.as_deref(),
                path: path.as_deref(),
                upload: upload.as_ref().map(|(object, size, sha256, expires_at)| AuditUpload {
                    object,
                    size: *size,
                    sha256: sha256.as_deref(),
                    expires_at,
                }),
                decision,
                policies: &policies,
                status,
                latency_us,
            };
            let mut ours = Vec::new();
            write_line(&rec, &mut ours);
            let mut theirs = serde_json::to_vec(&rec).unwrap();
            theirs.push(b'\n');
            prop_assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(theirs).unwrap());
        }
    }
}
