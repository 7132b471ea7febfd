//! A decision cache: the same inputs always get the same Cedar decision, so
//! a decision is kept under a key made of every input that can affect it.
//!
//! The key is the policy generation, the whole principal, the action, the
//! resource (path and labels) and the context (transport, peer uid/gid/pid,
//! and the request id unless no policy text mentions it). Entities are
//! derived from principal and resource alone, so nothing else reaches
//! Cedar. Equivalence with the plain call is a property test (`tests.rs`).

use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use hashbrown::{Equivalent, HashMap};

use super::{Action, Decision, RequestContext, Resource, Transport};
use crate::identity::{Principal, PrincipalKind};
use crate::shard::Sharded;
use crate::store::Labels;

/// Most decisions kept per shard; past that the shard starts over (cheap,
/// and a sidecar sees few distinct principals and paths).
const CAPACITY: usize = 4096;

/// The inputs of one decision, borrowed from the request: what a lookup
/// hashes and compares, so a cache hit copies nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct DecisionInputs<'a> {
    generation: u64,
    name: &'a str,
    kind: PrincipalKind,
    roles: &'a [String],
    scope: Option<&'a str>,
    action: Action,
    resource: ResourceRef<'a>,
    transport: Transport,
    peer: Option<(u32, u32, Option<i32>)>,
    request_id: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ResourceRef<'a> {
    Secret(&'a str, Option<&'a Labels>),
    Scope(&'a str),
}

impl<'a> DecisionInputs<'a> {
    pub(crate) fn new(
        generation: u64,
        principal: &'a Principal,
        action: Action,
        resource: Resource<'a>,
        ctx: &'a RequestContext<'a>,
        with_request_id: bool,
    ) -> Self {
        Self {
            generation,
            name: &principal.name,
            kind: principal.kind,
            roles: &principal.roles,
            scope: principal.scope.as_ref().map(|s| s.as_str()),
            action,
            resource: match resource {
                Resource::Secret { path, labels } => ResourceRef::Secret(path.as_str(), labels),
                Resource::Scope(s) => ResourceRef::Scope(s.as_str()),
            },
            transport: ctx.transport,
            peer: ctx.peer.map(|p| (p.uid, p.gid, p.pid)),
            request_id: with_request_id.then_some(ctx.request_id),
        }
    }

    fn to_key(self) -> DecisionKey {
        DecisionKey {
            generation: self.generation,
            name: self.name.to_owned(),
            kind: self.kind,
            roles: self.roles.to_vec(),
            scope: self.scope.map(str::to_owned),
            action: self.action,
            resource: match self.resource {
                ResourceRef::Secret(path, labels) => {
                    ResourceKey::Secret(path.to_owned(), labels.cloned())
                }
                ResourceRef::Scope(s) => ResourceKey::Scope(s.to_owned()),
            },
            transport: self.transport,
            peer: self.peer,
            request_id: self.request_id.map(str::to_owned),
        }
    }
}

/// The same inputs, owned: what the cache stores. Hashed and compared
/// through [`DecisionKey::inputs`], so an owned key and the borrowed inputs
/// it was made from hash and compare alike.
#[derive(Debug)]
struct DecisionKey {
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

#[derive(Debug)]
enum ResourceKey {
    Secret(String, Option<Labels>),
    Scope(String),
}

impl DecisionKey {
    fn inputs(&self) -> DecisionInputs<'_> {
        DecisionInputs {
            generation: self.generation,
            name: &self.name,
            kind: self.kind,
            roles: &self.roles,
            scope: self.scope.as_deref(),
            action: self.action,
            resource: match &self.resource {
                ResourceKey::Secret(path, labels) => ResourceRef::Secret(path, labels.as_ref()),
                ResourceKey::Scope(s) => ResourceRef::Scope(s),
            },
            transport: self.transport,
            peer: self.peer,
            request_id: self.request_id.as_deref(),
        }
    }
}

impl Hash for DecisionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inputs().hash(state);
    }
}

impl PartialEq for DecisionKey {
    fn eq(&self, other: &Self) -> bool {
        self.inputs() == other.inputs()
    }
}

impl Eq for DecisionKey {}

impl Equivalent<DecisionKey> for DecisionInputs<'_> {
    fn equivalent(&self, key: &DecisionKey) -> bool {
        *self == key.inputs()
    }
}

type DecisionMap = HashMap<DecisionKey, Decision, foldhash::fast::RandomState>;

/// Decisions by key, for the current generation. Hashed with foldhash
/// (randomly seeded per process): the key is hashed on every request, and
/// SipHash's extra strength buys nothing for a map that is bounded and
/// emptied at [`CAPACITY`]. One map per thread shard, so worker threads do
/// not contend for one lock on every request; each shard decides the same
/// way, since a decision depends only on its key.
#[derive(Debug, Default)]
pub(crate) struct DecisionCache {
    maps: Sharded<Mutex<DecisionMap>>,
}

impl DecisionCache {
    pub(crate) fn get(&self, inputs: &DecisionInputs<'_>) -> Option<Decision> {
        lock(self.maps.local()).get(inputs).cloned()
    }

    pub(crate) fn insert(&self, inputs: &DecisionInputs<'_>, decision: Decision) {
        let mut map = lock(self.maps.local());
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(inputs.to_key(), decision);
    }

    /// Drops every decision (on reload; old keys could not hit anyway, since
    /// the generation is part of the key, but their memory is freed).
    pub(crate) fn clear(&self) {
        for map in self.maps.all() {
            lock(map).clear();
        }
    }

    /// Decisions held, over all shards.
    pub(crate) fn len(&self) -> usize {
        self.maps.all().map(|m| lock(m).len()).sum()
    }
}

fn lock(map: &Mutex<DecisionMap>) -> std::sync::MutexGuard<'_, DecisionMap> {
    // The map is only ever left consistent; a panic elsewhere cannot
    // corrupt it, so a poisoned lock is still usable.
    map.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
