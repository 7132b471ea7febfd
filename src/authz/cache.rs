//! A decision cache: the same inputs always get the same Cedar decision, so
//! a decision is kept under a key made of every input that can affect it.
//!
//! The key is the policy generation, the whole principal, the action, the
//! resource (path and labels) and the context (transport, peer uid/gid/pid,
//! and the request id unless no policy text mentions it). Entities are
//! derived from principal and resource alone, so nothing else reaches
//! Cedar. Equivalence with the plain call is a property test (`tests.rs`).

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Action, Decision, RequestContext, Resource, Transport};
use crate::identity::{Principal, PrincipalKind};
use crate::store::Labels;

/// Most decisions kept; past that the cache starts over (cheap, and a
/// sidecar sees few distinct principals and paths).
const CAPACITY: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ResourceKey {
    Secret(String, Option<Labels>),
    Scope(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DecisionKey {
    generation: u64,
    name: String,
    kind: PrincipalKind,
    roles: Vec<String>,
    scope: Option<String>,
    action: Action,
    resource: ResourceKey,
    transport: Transport,
    peer: Option<(u32, u32, Option<i32>)>,
    request_id: Option<String>,
}

impl DecisionKey {
    pub(crate) fn new(
        generation: u64,
        principal: &Principal,
        action: Action,
        resource: Resource<'_>,
        ctx: &RequestContext<'_>,
        with_request_id: bool,
    ) -> Self {
        Self {
            generation,
            name: principal.name.clone(),
            kind: principal.kind,
            roles: principal.roles.clone(),
            scope: principal.scope.as_ref().map(|s| s.as_str().to_owned()),
            action,
            resource: match resource {
                Resource::Secret { path, labels } => {
                    ResourceKey::Secret(path.as_str().to_owned(), labels.cloned())
                }
                Resource::Scope(s) => ResourceKey::Scope(s.as_str().to_owned()),
            },
            transport: ctx.transport,
            peer: ctx.peer.map(|p| (p.uid, p.gid, p.pid)),
            request_id: with_request_id.then(|| ctx.request_id.to_owned()),
        }
    }
}

/// Decisions by key, for the current generation. Hashed with foldhash
/// (randomly seeded per process): the key is hashed on every request, and
/// SipHash's extra strength buys nothing for a map that is bounded and
/// emptied at [`CAPACITY`].
#[derive(Debug, Default)]
pub(crate) struct DecisionCache {
    map: Mutex<HashMap<DecisionKey, Decision, foldhash::fast::RandomState>>,
}

impl DecisionCache {
    pub(crate) fn get(&self, key: &DecisionKey) -> Option<Decision> {
        self.lock().get(key).cloned()
    }

    pub(crate) fn insert(&self, key: DecisionKey, decision: Decision) {
        let mut map = self.lock();
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(key, decision);
    }

    /// Drops every decision (on reload; old keys could not hit anyway, since
    /// the generation is part of the key, but their memory is freed).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<DecisionKey, Decision, foldhash::fast::RandomState>>
    {
        // The map is only ever left consistent; a panic elsewhere cannot
        // corrupt it, so a poisoned lock is still usable.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
