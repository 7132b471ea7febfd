//! The HTTP API of the contract: route, identify, authorize, then touch the
//! store; one audit line per request whatever happens.

pub mod answer;
pub mod body;
pub mod error;
pub mod request;
pub mod routes;
pub mod upload;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use http::{Method, StatusCode};
use serde::Serialize;

use crate::audit::{AuditLog, AuditRecord, bounded_path, now_rfc3339};
use crate::authz::{Denied, PolicyIds, RequestContext, Transport};
use crate::broker::{Broker, ReadError};
use crate::config::{AuditOnFailure, Limits};
use crate::identity::{PeerCred, Principal, Resolver, TlsPeer};
use crate::metrics::Metrics;
use crate::secret::{ScopePath, SecretPath};
use crate::shard::Sharded;
use crate::store::PutRequest;

pub use answer::Answer;
pub use body::{Body, ZeroizingBuf};
pub use error::ApiError;
pub use request::ApiRequest;
use routes::Route;

/// The least a drain after an early answer reads before it gives up and
/// closes (Go's `net/http` reads up to 256 KiB).
const DRAIN_MIN_BYTES: usize = 256 * 1024;

/// Everything a request handler needs, shared by all connections.
#[derive(Debug)]
pub struct AppState {
    /// Authorizer and store.
    pub broker: Broker,
    /// Caller identification.
    pub resolver: Resolver,
    /// Where audit lines go.
    pub audit: Arc<AuditLog>,
    /// Request limits.
    pub limits: Limits,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// What a request gets when its audit line cannot be written.
    pub audit_on_failure: AuditOnFailure,
    /// Mints upload URLs (`[uploads]`); `None` when not configured.
    pub uploader: Option<Arc<crate::upload::Uploader>>,
    in_flight: InFlight,
    /// Each principal's requests in flight, by its index in the resolver.
    principal_in_flight: Vec<InFlight>,
    ids: RequestIds,
}

impl AppState {
    /// Assembles the shared state.
    pub fn new(broker: Broker, resolver: Resolver, audit: Arc<AuditLog>, limits: Limits) -> Self {
        let principal_in_flight = (0..resolver.specs().len())
            .map(|_| InFlight::new(limits.max_in_flight_per_principal))
            .collect();
        Self {
            principal_in_flight,
            broker,
            resolver,
            audit,
            in_flight: InFlight::new(limits.max_in_flight),
            limits,
            metrics: Arc::new(Metrics::default()),
            audit_on_failure: AuditOnFailure::default(),
            uploader: None,
            ids: RequestIds::new(),
        }
    }

    /// Sets what a request gets when its audit line cannot be written.
    pub fn with_audit_on_failure(mut self, on_failure: AuditOnFailure) -> Self {
        self.audit_on_failure = on_failure;
        self
    }

    /// Mints upload URLs with `uploader` (`[uploads]`).
    pub fn with_uploader(mut self, uploader: Option<Arc<crate::upload::Uploader>>) -> Self {
        self.uploader = uploader;
        self
    }

    /// Uses `metrics` (shared with the store wrapper and the listener).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// A fresh request id.
    pub fn next_request_id(&self) -> RequestId {
        self.ids.next()
    }
}

/// Requests being handled, capped at `[limits] max_in_flight`. Never
/// waited for (over the cap is `429`), so a counter does: a semaphore's
/// release takes a lock shared by every worker.
#[derive(Debug)]
struct InFlight {
    now: AtomicUsize,
    max: usize,
}

/// One request's place under the cap, given back on drop.
#[derive(Debug)]
struct InFlightSlot<'a>(&'a InFlight);

impl InFlight {
    fn new(max: usize) -> Self {
        Self {
            now: AtomicUsize::new(0),
            max,
        }
    }

    fn try_enter(&self) -> Option<InFlightSlot<'_>> {
        if self.now.fetch_add(1, Ordering::Acquire) >= self.max {
            self.now.fetch_sub(1, Ordering::Release);
            return None;
        }
        Some(InFlightSlot(self))
    }
}

impl Drop for InFlightSlot<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Release);
    }
}

/// Request ids: a random per-process prefix and a counter, unique and cheap.
/// Each thread shard counts on its own (of `n` shards, shard `k` issues
/// `k + 1`, `k + 1 + n`, `k + 1 + 2n`, …), so no counter is shared between
/// cores.
#[derive(Debug)]
struct RequestIds {
    prefix: [u8; 8],
    counters: Sharded<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        let mut b = [0u8; 4];
        // A failing RNG only weakens id uniqueness across restarts.
        let _ = getrandom::fill(&mut b);
        let mut prefix = [0u8; 8];
        // Cannot fail: 8 hex digits for 4 bytes.
        let _ = hex::encode_to_slice(b, &mut prefix);
        Self {
            prefix,
            counters: Sharded::default(),
        }
    }

    fn next(&self) -> RequestId {
        let (shard, counter) = self.counters.local_indexed();
        let n = counter.fetch_add(1, Ordering::Relaxed);
        // Distinct shards never issue the same number: `n * count + shard + 1`
        // is unique for `shard < count` (wrapping only after 2^61 ids).
        let id = n
            .wrapping_mul(Sharded::<AtomicU64>::count() as u64)
            .wrapping_add(shard as u64 + 1);
        RequestId::new(&self.prefix, id)
    }
}

/// A request id, `<8 hex digits>-<counter in hex>`, kept on the stack.
#[derive(Clone, Copy)]
pub struct RequestId {
    buf: [u8; 25],
    len: u8,
}

impl RequestId {
    fn new(prefix: &[u8; 8], n: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 25];
        buf[..8].copy_from_slice(prefix);
        buf[8] = b'-';
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
        for i in 0..digits {
            buf[9 + digits - 1 - i] = HEX[((n >> (4 * i)) & 0xf) as usize];
        }
        Self {
            buf,
            len: 9 + digits as u8,
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // INVARIANT: only ASCII hex digits and `-` are ever written.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Peer credentials (Unix socket).
    pub peer: Option<PeerCred>,
    /// How the caller connected.
    pub transport: Transport,
    /// The TLS client and its certificate (TLS listener only).
    pub tls: Option<Arc<TlsPeer>>,
}

impl ConnInfo {
    /// The peer as the audit line records it.
    fn audit_peer(&self) -> Option<crate::audit::AuditPeer<'_>> {
        match &self.tls {
            Some(tls) => Some(tls.as_ref().into()),
            None => self.peer.map(Into::into),
        }
    }
}

/// The audit fields a request fills in as it goes.
#[derive(Debug, Default)]
struct Trail<'s> {
    /// Borrowed from the resolver's principals, which outlive the request.
    principal: Option<&'s str>,
    /// The principal's place under its in-flight cap, held to the end.
    slot: Option<InFlightSlot<'s>>,
    action: Option<&'static str>,
    /// What routing made of the path; `None` audits the path as sent.
    path: Option<Cow<'s, str>>,
    decision: Option<&'static str>,
    /// `None` until a decision: a default `Arc<[String]>` is one static
    /// shared by every thread, and its reference count, written twice per
    /// request, moved between cores on every request.
    policies: Option<PolicyIds>,
    /// What a minted upload URL allows, for the audit line (never the URL).
    upload: Option<Box<upload::UploadTrail>>,
}

/// Cuts user input to `max` chars and replaces anything unprintable.
pub(crate) fn printable(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Handles one request; never fails (errors become contract error bodies).
pub async fn handle(state: &AppState, conn: &ConnInfo, mut req: ApiRequest) -> Answer {
    let start = Instant::now();
    let request_id = state.next_request_id();
    // Kept here so the audit trail can borrow it instead of copying it.
    let sent = std::mem::take(&mut req.path);
    let mut trail = Trail::default();
    // SECURITY: while the audit log cannot be written, nothing is served
    // but liveness (which says only that the process is up); the refusal's
    // own line is the probe that ends it.
    let fail_closed = state.audit_on_failure == AuditOnFailure::Refuse && sent != "/healthz";
    let result = if fail_closed && state.audit.failing() {
        Err(audit_unavailable())
    } else {
        match state.in_flight.try_enter() {
            Some(_slot) => dispatch(state, conn, &sent, &mut req, &request_id, &mut trail).await,
            None => Err(ApiError::Overloaded),
        }
    };
    let mut response = match result {
        Ok(r) => r,
        Err(e) => error_response(&e, &request_id),
    };
    // An answer given before the body was read must still reach a client
    // that is writing it: drain the rest (bounded), and close if it could
    // not all be read.
    if !req
        .drain(
            state.limits.max_body_bytes.max(DRAIN_MIN_BYTES),
            state.limits.body_timeout,
        )
        .await
    {
        response.set_close();
    }
    let latency = start.elapsed();
    let status = response.status().as_u16();
    // SECURITY: written before the answer leaves; with `[audit] spool`,
    // kept crash-safe in the spool before it and appended to the file once
    // the answer is written (`audit::spool`).
    let audited = state.audit.record_deferred(&AuditRecord {
        ts: now_rfc3339(),
        request_id: &request_id,
        principal: trail.principal,
        peer: conn.audit_peer(),
        action: trail.action,
        path: Some(trail.path.as_deref().unwrap_or_else(|| bounded_path(&sent))),
        upload: trail.upload.as_deref().map(upload::UploadTrail::audited),
        decision: trail.decision,
        policies: trail.policies.as_deref().unwrap_or_default(),
        status,
        latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
    });
    if audited.is_err() {
        state.metrics.audit_failure();
        if fail_closed {
            // SECURITY: an answer that cannot be recorded is not given
            // (a value read is dropped, and zeroized, unsent).
            response = error_response(&audit_unavailable(), &request_id);
        }
    }
    response.set_request_id(request_id);
    // SECURITY: action, decision and status only: never a path.
    state.metrics.request(
        trail.action,
        trail.decision,
        response.status().as_u16(),
        latency,
    );
    response
}

/// The answer to a request whose audit line cannot be written.
fn audit_unavailable() -> ApiError {
    ApiError::Unavailable(
        "the audit log cannot be written, and the broker serves no request it cannot record; the broker's log says why (set [audit] on_failure = \"serve\" to favour availability)".into(),
    )
}

async fn dispatch<'s>(
    state: &'s AppState,
    conn: &ConnInfo,
    sent: &'s str,
    req: &mut ApiRequest,
    request_id: &str,
    trail: &mut Trail<'s>,
) -> Result<Answer, ApiError> {
    let route = Route::parse(sent)?;
    if let Some(name) = &req.query {
        return Err(request::query_refused(name));
    }
    let method = req.method.clone();
    route.check_method(&method)?;
    let ctx = RequestContext {
        transport: conn.transport,
        peer: conn.peer,
        request_id,
        spiffe_id: conn
            .tls
            .as_ref()
            .and_then(|t| t.cert.as_ref().ok())
            .and_then(crate::identity::PeerCert::spiffe_id),
    };
    // The store-calling routes other than a read are boxed: a future is
    // as large as its largest branch, and the read's (the hot path) is
    // moved and stored by value on every request.
    match route {
        Route::Healthz => {
            trail.action = Some("health");
            Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"})))
        }
        Route::Readyz => {
            trail.action = Some("ready");
            state
                .broker
                .health()
                .await
                .map_err(|e| ApiError::Unavailable(format!("not ready: {e}")))?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({"status": "ready"}),
            ))
        }
        Route::Whoami => {
            trail.action = Some("whoami");
            let who = identify(state, conn, req, trail)?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({
                    "principal": who.name,
                    "type": who.kind.as_str(),
                    "scope": who.scope.as_ref().map(ScopePath::as_str),
                    "roles": who.roles,
                }),
            ))
        }
        Route::List(scope) => {
            trail.action = Some("list");
            trail.path = Some(Cow::Owned(scope.key_prefix()));
            Box::pin(list(state, &ctx, req, conn, scope, trail)).await
        }
        Route::Upload(path) => {
            trail.action = Some("upload");
            // The output path is the sent path's tail, unchanged.
            trail.path = Some(Cow::Borrowed(routes::upload_part(sent)));
            Box::pin(upload::mint(state, &ctx, conn, req, path, trail)).await
        }
        Route::Secret(path) => {
            // The secret path is the sent path's tail, unchanged.
            trail.path = Some(Cow::Borrowed(routes::secret_part(sent)));
            match method {
                Method::PUT => {
                    trail.action = Some("write");
                    Box::pin(write(state, &ctx, conn, req, path, trail)).await
                }
                Method::DELETE => {
                    trail.action = Some("delete");
                    Box::pin(delete(state, &ctx, conn, req, path, trail)).await
                }
                _ => {
                    trail.action = Some("read");
                    read(state, &ctx, conn, req, path, trail).await
                }
            }
        }
    }
}

fn identify<'s>(
    state: &'s AppState,
    conn: &ConnInfo,
    req: &ApiRequest,
    trail: &mut Trail<'s>,
) -> Result<&'s Principal, ApiError> {
    let token = req
        .bearer
        .as_ref()
        .map(|r| r.as_ref().map_err(Clone::clone))
        .transpose()?;
    // SECURITY: over TLS only the certificate identifies the caller (a
    // bearer token or the absent peer credentials play no part).
    let resolved = match &conn.tls {
        Some(tls) => state.resolver.resolve_cert(tls, unix_now()),
        None => state.resolver.resolve_indexed(conn.peer.as_ref(), token),
    };
    let (index, who) = match resolved {
        Ok(found) => found,
        Err(e) => {
            if let crate::identity::IdentityError::Ambiguous(names) = &e {
                // For the operator only: the caller's answer does not name them.
                tracing::warn!(principals = %names, peer = ?conn.peer, "a caller matches several principals; refused");
            }
            return Err(e.into());
        }
    };
    trail.principal = Some(&who.name);
    // SECURITY: one principal (a task with slow bodies, say) cannot hold
    // every in-flight slot; the others keep theirs.
    if trail.slot.is_none() {
        let slot = state
            .principal_in_flight
            .get(index)
            .and_then(InFlight::try_enter)
            .ok_or(ApiError::CallerOverloaded)?;
        trail.slot = Some(slot);
    }
    Ok(who)
}

/// Seconds since the epoch (a clock before 1970 reads as 0).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Records a decision in the trail; a denial becomes `403`.
fn decided<T>(
    result: Result<crate::authz::Permitted<T>, Denied>,
    trail: &mut Trail<'_>,
    action: &'static str,
    target: &str,
) -> Result<crate::authz::Permitted<T>, ApiError> {
    match result {
        Ok(p) => {
            trail.decision = Some("allow");
            trail.policies = Some(Arc::clone(p.policies()));
            Ok(p)
        }
        Err(d) => Err(denied(d, trail, action, target)),
    }
}

/// Records a denial in the trail and turns it into `403 forbidden`.
fn denied(d: Denied, trail: &mut Trail<'_>, action: &'static str, target: &str) -> ApiError {
    trail.decision = Some("deny");
    trail.policies = Some(d.policies);
    ApiError::Forbidden {
        action,
        target: target.to_owned(),
    }
}

async fn read<'s>(
    state: &'s AppState,
    ctx: &RequestContext<'_>,
    conn: &ConnInfo,
    req: &ApiRequest,
    path: SecretPath,
    trail: &mut Trail<'s>,
) -> Result<Answer, ApiError> {
    let who = identify(state, conn, req, trail)?;
    let permit = decided(
        state.broker.authorize_read(who, &path, ctx),
        trail,
        "read",
        path.as_str(),
    )?;
    let secret = match state.broker.read(&permit, who, ctx, req.fresh).await {
        Ok((secret, rechecked)) => {
            if let Some(policies) = rechecked {
                trail.policies = Some(policies);
            }
            secret
        }
        Err(ReadError::Store(e)) => return Err(e.into()),
        Err(ReadError::Denied(d)) => return Err(denied(d, trail, "read", path.as_str())),
    };
    let (body, content_type) = if req.wants_raw {
        let mut v = zeroize::Zeroizing::new(Vec::with_capacity(secret.value.len()));
        v.extend_from_slice(secret.value.expose_secret());
        (v, "application/octet-stream")
    } else {
        (
            body::secret_json(path.as_str(), secret.version, &secret.value),
            "application/json",
        )
    };
    let mut answer = Answer::new(StatusCode::OK, ZeroizingBuf::new(body), content_type);
    answer.set_secret_version(secret.version);
    Ok(answer)
}

async fn write<'s>(
    state: &'s AppState,
    ctx: &RequestContext<'_>,
    conn: &ConnInfo,
    req: &mut ApiRequest,
    path: SecretPath,
    trail: &mut Trail<'s>,
) -> Result<Answer, ApiError> {
    let who = identify(state, conn, req, trail)?;
    let create_only = req.create_only;
    let raw = read_request_body(state, req).await?;
    let put = body::parse_put(&raw, state.limits.max_value_bytes)?;
    drop(raw);
    let permit = decided(
        state.broker.authorize_write(who, &path, &put.labels, ctx),
        trail,
        "write",
        path.as_str(),
    )?;
    let outcome = state
        .broker
        .write(
            &permit,
            PutRequest {
                value: put.value,
                labels: put.labels,
                create_only,
            },
        )
        .await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(
        status,
        &serde_json::json!({
            "path": path.as_str(),
            "version": outcome.version,
            "created_at": outcome.created_at.to_rfc3339(),
        }),
    ))
}

/// Reads the body of a `PUT` or `POST` within the body limits. It stays in
/// the request, so what an error left unread is drained before the answer.
pub(crate) async fn read_request_body(
    state: &AppState,
    req: &mut ApiRequest,
) -> Result<zeroize::Zeroizing<Vec<u8>>, ApiError> {
    // INVARIANT: `ApiRequest` keeps the headers and body of every `PUT` and
    // `POST`, and only those are routed to the handlers that call this.
    let Some((headers, incoming)) = req.body.as_deref_mut() else {
        return Err(ApiError::LengthRequired);
    };
    body::read_body(
        incoming,
        headers,
        state.limits.max_body_bytes,
        state.limits.body_timeout,
    )
    .await
}

async fn delete<'s>(
    state: &'s AppState,
    ctx: &RequestContext<'_>,
    conn: &ConnInfo,
    req: &ApiRequest,
    path: SecretPath,
    trail: &mut Trail<'s>,
) -> Result<Answer, ApiError> {
    let who = identify(state, conn, req, trail)?;
    let permit = decided(
        state.broker.authorize_delete(who, &path, ctx),
        trail,
        "delete",
        path.as_str(),
    )?;
    state.broker.delete(&permit).await?;
    Ok(Answer::new(
        StatusCode::NO_CONTENT,
        ZeroizingBuf::default(),
        "application/json",
    ))
}

/// One entry of a list answer.
#[derive(Serialize)]
struct ListItem<'a> {
    path: &'a str,
    version: u64,
    updated_at: crate::store::Rfc3339,
    labels: &'a crate::store::Labels,
}

/// A list answer, `{"secrets": [...]}`, serialized straight from the
/// store's entries. Building it as a `serde_json::Value` first held a tree
/// of small allocations per entry: about 20 MiB of extra peak RSS for a
/// 10k-secret scope (benches/scale.rs).
struct ListBody<'a>(&'a [crate::store::SecretMeta]);

impl Serialize for ListBody<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("secrets", &ListItems(self.0))?;
        map.end()
    }
}

/// The entries of a list answer, as a JSON array.
struct ListItems<'a>(&'a [crate::store::SecretMeta]);

impl Serialize for ListItems<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|m| ListItem {
            path: m.path.as_str(),
            version: m.version,
            updated_at: m.updated_at.rfc3339(),
            labels: &m.labels,
        }))
    }
}

/// The bytes of a list answer, in a buffer sized from the entries up
/// front (so it is not grown by doubling, which peaks at three times the
/// answer's size).
fn list_body(metas: &[crate::store::SecretMeta]) -> Vec<u8> {
    let estimate = metas.iter().fold(16, |n: usize, m| {
        let labels = m
            .labels
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum::<usize>();
        n.saturating_add(m.path.as_str().len() + labels + 96)
    });
    let mut out = Vec::with_capacity(estimate);
    // Serializing maps of strings and numbers into a Vec cannot fail.
    if serde_json::to_writer(&mut out, &ListBody(metas)).is_err() {
        out = b"{\"secrets\":[]}".to_vec();
    }
    out
}

async fn list<'s>(
    state: &'s AppState,
    ctx: &RequestContext<'_>,
    req: &ApiRequest,
    conn: &ConnInfo,
    scope: ScopePath,
    trail: &mut Trail<'s>,
) -> Result<Answer, ApiError> {
    let who = identify(state, conn, req, trail)?;
    let target = scope.key_prefix();
    let permit = decided(
        state.broker.authorize_list(who, &scope, ctx),
        trail,
        "list",
        &target,
    )?;
    let metas = state.broker.list(&permit).await?;
    let body = list_body(&metas);
    drop(metas);
    Ok(Answer::new(
        StatusCode::OK,
        ZeroizingBuf::public(body),
        "application/json",
    ))
}

/// A JSON answer (`X-Request-Id` is added by [`handle`]).
fn json(status: StatusCode, value: &impl Serialize) -> Answer {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    Answer::new(status, ZeroizingBuf::public(bytes), "application/json")
}

/// The contract's error body for `e`.
pub fn error_response(e: &ApiError, request_id: &str) -> Answer {
    let body = serde_json::json!({
        "error": {"code": e.code(), "message": e.to_string(), "request_id": request_id}
    });
    let mut answer = json(e.status(), &body);
    if let ApiError::MethodNotAllowed { allow, .. } = e {
        answer.set_allow(allow);
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn request_ids_are_prefix_dash_hex_counter(n in any::<u64>()) {
            let id = RequestId::new(b"0a1b2c3d", n);
            prop_assert_eq!(id.as_str(), format!("0a1b2c3d-{n:x}"));
        }
    }

    proptest! {
        /// The list answer is serialized straight from the entries; its
        /// bytes are those of the `serde_json::Value` it used to be built as.
        #[test]
        fn list_answers_are_the_bytes_the_value_tree_gave(
            entries in proptest::collection::vec(
                (
                    "[a-z0-9]{1,8}(/[a-z][a-z0-9]{0,7}){1,3}",
                    any::<u64>(),
                    0u64..=253_402_300_799_999,
                    proptest::collection::btree_map("[a-z]{1,5}", "\\PC{0,6}", 0..3),
                ),
                0..6,
            )
        ) {
            let metas: Vec<crate::store::SecretMeta> = entries
                .into_iter()
                .map(|(path, version, ms, labels)| crate::store::SecretMeta {
                    path: SecretPath::parse(&path).unwrap(),
                    version,
                    updated_at: crate::store::Timestamp(ms),
                    labels,
                })
                .collect();
            let items: Vec<serde_json::Value> = metas
                .iter()
                .map(|m| serde_json::json!({
                    "path": m.path.as_str(),
                    "version": m.version,
                    "updated_at": m.updated_at.to_rfc3339(),
                    "labels": &m.labels,
                }))
                .collect();
            let old = serde_json::to_vec(&serde_json::json!({ "secrets": items })).unwrap();
            prop_assert_eq!(list_body(&metas), old);
        }
    }

    #[test]
    fn in_flight_is_capped_and_slots_come_back() {
        let cap = InFlight::new(2);
        let a = cap.try_enter();
        let b = cap.try_enter();
        assert!(a.is_some() && b.is_some());
        assert!(cap.try_enter().is_none());
        drop(a);
        let c = cap.try_enter();
        assert!(c.is_some());
        assert!(cap.try_enter().is_none());
        drop((b, c));
        assert_eq!(cap.now.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn request_ids_are_unique_across_threads() {
        let ids = RequestIds::new();
        let a = ids.next();
        assert!(a.starts_with(std::str::from_utf8(&ids.prefix).unwrap()));
        assert_eq!(a.as_bytes()[8], b'-');
        let all: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..12)
                .map(|_| s.spawn(|| (0..500).map(|_| ids.next().to_string()).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let unique: std::collections::HashSet<&String> = all.iter().collect();
        assert_eq!(unique.len(), 12 * 500);
        assert!(!unique.contains(&a.to_string()));
    }
}
