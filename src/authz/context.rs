//! The Cedar request context: transport, request id and peer credentials.
//!
//! Matches the schema's `RequestContext` type: `transport` and `request_id`
//! always, `peer_uid`/`peer_gid`/`peer_pid` only where the transport reports
//! them (policies must test `context has peer_uid` first), `spiffe_id` only
//! for a TLS caller whose certificate has one.

use cedar_policy::{Context, RestrictedExpression};

use super::RequestContext;

/// Why a context could not be built (Cedar's reason; never a value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot build request context: {0}")]
pub struct ContextError(String);

/// The Cedar context for `ctx`.
pub fn context(ctx: &RequestContext<'_>) -> Result<Context, ContextError> {
    let mut pairs = Vec::with_capacity(5);
    pairs.push((
        "transport".to_owned(),
        RestrictedExpression::new_string(ctx.transport.as_str().to_owned()),
    ));
    pairs.push((
        "request_id".to_owned(),
        RestrictedExpression::new_string(ctx.request_id.to_owned()),
    ));
    if let Some(id) = ctx.spiffe_id {
        pairs.push((
            "spiffe_id".to_owned(),
            RestrictedExpression::new_string(id.to_owned()),
        ));
    }
    if let Some(peer) = &ctx.peer {
        pairs.push((
            "peer_uid".to_owned(),
            RestrictedExpression::new_long(i64::from(peer.uid)),
        ));
        pairs.push((
            "peer_gid".to_owned(),
            RestrictedExpression::new_long(i64::from(peer.gid)),
        ));
        if let Some(pid) = peer.pid {
            pairs.push((
                "peer_pid".to_owned(),
                RestrictedExpression::new_long(i64::from(pid)),
            ));
        }
    }
    Context::from_pairs(pairs).map_err(|e| ContextError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::Transport;
    use crate::identity::PeerCred;

    #[test]
    fn carries_peer_credentials_where_known() {
        let ctx = RequestContext {
            transport: Transport::Unix,
            peer: Some(PeerCred {
                uid: 1000,
                gid: 100,
                pid: Some(42),
            }),
            request_id: "req-1",
            spiffe_id: None,
        };
        let json = context(&ctx).unwrap().to_json_value().unwrap();
        assert_eq!(json["transport"], "unix");
        assert_eq!(json["request_id"], "req-1");
        assert_eq!(json["peer_uid"], 1000);
        assert_eq!(json["peer_gid"], 100);
        assert_eq!(json["peer_pid"], 42);

        let tls = RequestContext {
            transport: Transport::Tls,
            peer: None,
            request_id: "req-2",
            spiffe_id: None,
        };
        let json = context(&tls).unwrap().to_json_value().unwrap();
        assert_eq!(json["transport"], "tls");
        assert!(json.get("peer_uid").is_none());
        assert!(json.get("peer_pid").is_none());
    }
}
