//! A decision cache: the same inputs always get the same Cedar decision, so
//! a decision is kept under a key made of every input that can affect it.
//!
//! The key is the policy generation, the whole principal, the action, the
//! resource (path and labels) and the context (transport, peer uid/gid/pid).
//! The request id is not in it: it differs on every request, so when a
//! policy can read it (`context_use`) the authorizer does not use the cache
//! at all. Entities are derived from principal and resource alone, so
//! nothing else reaches Cedar. Equivalence with the plain call is a
//! property test (`tests.rs`), over generated policies too.
//!
//! SECURITY: the cache is bounded in bytes, not entries: keys are made of
//! what callers send (paths, labels), and a bound on entries alone let
//! denied writes with large labels grow a broker by hundreds of megabytes.
//! Each shard counts the heap bytes of its keys and decisions plus its
//! table, and starts over when an insert would pass its share of
//! [`BUDGET_BYTES`]; an entry over [`MAX_ENTRY_BYTES`] is never kept, and
//! decisions on label maps a caller sends (writes) are not cached at all
//! (see [`DecisionInputs::worth_caching`]).

use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use hashbrown::{Equivalent, HashMap};

use super::{Action, Decision, RequestContext, Resource, Transport};
use crate::identity::{Principal, PrincipalKind};
use crate::shard::Sharded;
use crate::store::Labels;

/// Bytes the whole cache may hold (keys, decisions and hash tables), split
/// evenly between the shards. A sidecar sees few distinct principals and
/// paths: a few thousand decisions fit.
pub(crate) const BUDGET_BYTES: usize = 4 * 1024 * 1024;

/// The largest entry (key and decision, heap bytes) worth keeping: bigger
/// ones (long label maps) are decided afresh, so that no entry takes a
/// large share of a shard's budget.
pub(crate) const MAX_ENTRY_BYTES: usize = 2048;

/// What one heap allocation costs beyond its bytes (the allocator's header
/// and rounding), charged per allocation so that many small strings are
/// not undercounted.
const ALLOC_OVERHEAD: usize = 16;

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
    spiffe_id: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ResourceRef<'a> {
    Secret(&'a str, Option<&'a Labels>),
    Scope(&'a str),
    Output(&'a str),
}

impl<'a> DecisionInputs<'a> {
    pub(crate) fn new(
        generation: u64,
        principal: &'a Principal,
        action: Action,
        resource: Resource<'a>,
        ctx: &RequestContext<'a>,
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
                Resource::Output(p) => ResourceRef::Output(p.as_str()),
            },
            transport: ctx.transport,
            peer: ctx.peer.map(|p| (p.uid, p.gid, p.pid)),
            spiffe_id: ctx.spiffe_id,
        }
    }

    /// Whether a decision on these inputs is worth keeping. A write's
    /// labels are whatever its caller sends, new on each write (bounded by
    /// the API, but a caller who may not write can still send a fresh map
    /// every time): deciding such a write afresh costs microseconds, while
    /// keeping it would let a caller fill the cache with its label maps.
    /// Labels on a read come from the store, the same on every read of that
    /// secret, and are kept when the entry is small enough.
    pub(crate) fn worth_caching(&self) -> bool {
        // An upload names a fresh output object each time: keeping its
        // decision would only push out the reads that repeat.
        self.action != Action::Upload
            && !matches!(
                (self.action, self.resource),
                (Action::Write, ResourceRef::Secret(_, Some(labels))) if !labels.is_empty()
            )
            && self.heap_bytes() <= MAX_ENTRY_BYTES
    }

    /// Heap bytes an owned key made from these inputs holds (what
    /// [`DecisionInputs::to_key`] allocates), allocator overhead included.
    fn heap_bytes(&self) -> usize {
        let text = |s: &str| s.len() + ALLOC_OVERHEAD;
        let roles = std::mem::size_of_val(self.roles)
            + ALLOC_OVERHEAD
            + self.roles.iter().map(|r| text(r)).sum::<usize>();
        let resource = match self.resource {
            ResourceRef::Secret(path, labels) => text(path) + labels.map_or(0, labels_heap_bytes),
            ResourceRef::Scope(s) | ResourceRef::Output(s) => text(s),
        };
        text(self.name)
            + roles
            + self.scope.map_or(0, text)
            + resource
            + self.spiffe_id.map_or(0, text)
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
                ResourceRef::Output(p) => ResourceKey::Output(p.to_owned()),
            },
            transport: self.transport,
            peer: self.peer,
            spiffe_id: self.spiffe_id.map(str::to_owned),
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
    spiffe_id: Option<String>,
}

#[derive(Debug)]
enum ResourceKey {
    Secret(String, Option<Labels>),
    Scope(String),
    Output(String),
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
                ResourceKey::Output(p) => ResourceRef::Output(p),
            },
            transport: self.transport,
            peer: self.peer,
            spiffe_id: self.spiffe_id.as_deref(),
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

/// Heap bytes of a cloned label map: a B-tree node per up to 11 entries
/// (charged as one per entry, generously) and each key's and value's text.
fn labels_heap_bytes(labels: &Labels) -> usize {
    /// A B-tree leaf's share per entry (its keys, values and header; a
    /// leaf of 11 entries is about 544 bytes) rounded up.
    const NODE_SHARE: usize = 64;
    labels
        .iter()
        .map(|(k, v)| NODE_SHARE + k.len() + v.len() + 2 * ALLOC_OVERHEAD)
        .sum()
}

/// Heap bytes a cached decision holds.
fn decision_heap_bytes(d: &Decision) -> usize {
    let strings = |v: &[String]| {
        std::mem::size_of_val(v)
            + ALLOC_OVERHEAD
            + v.iter().map(|s| s.len() + ALLOC_OVERHEAD).sum::<usize>()
    };
    // The policy id list is an `Arc`: two counters before the slice.
    2 * std::mem::size_of::<usize>() + strings(&d.policies) + strings(&d.errors)
}

type DecisionMap = HashMap<DecisionKey, Decision, foldhash::fast::RandomState>;

/// One shard's decisions and the heap bytes their keys and values hold.
#[derive(Debug, Default)]
struct Shard {
    map: DecisionMap,
    heap: usize,
}

impl Shard {
    /// Bytes the shard holds: its entries' heap bytes and its table.
    fn bytes(&self) -> usize {
        self.heap + self.map.allocation_size()
    }
}

/// Decisions by key, for the current generation. Hashed with foldhash
/// (randomly seeded per process): the key is hashed on every request, and
/// SipHash's extra strength buys nothing for a map that is bounded and
/// emptied when full. One map per thread shard, so worker threads do not
/// contend for one lock on every request; each shard decides the same way,
/// since a decision depends only on its key.
#[derive(Debug)]
pub(crate) struct DecisionCache {
    shards: Sharded<Mutex<Shard>>,
    /// Each shard's share of the budget, in bytes.
    shard_budget: usize,
}

impl Default for DecisionCache {
    fn default() -> Self {
        Self::with_budget(BUDGET_BYTES)
    }
}

impl DecisionCache {
    /// A cache that holds at most `budget` bytes over all its shards.
    pub(crate) fn with_budget(budget: usize) -> Self {
        Self {
            shards: Sharded::default(),
            shard_budget: budget / Sharded::<()>::count(),
        }
    }

    pub(crate) fn get(&self, inputs: &DecisionInputs<'_>) -> Option<Decision> {
        lock(self.shards.local()).map.get(inputs).cloned()
    }

    /// Keeps `decision` under `inputs`, unless the entry is too large (see
    /// [`DecisionInputs::worth_caching`]; the caller asks first).
    pub(crate) fn insert(&self, inputs: &DecisionInputs<'_>, decision: Decision) {
        let cost = inputs.heap_bytes() + decision_heap_bytes(&decision);
        if cost > MAX_ENTRY_BYTES {
            return;
        }
        let mut shard = lock(self.shards.local());
        if shard.map.contains_key(inputs) {
            return;
        }
        shard.map.insert(inputs.to_key(), decision);
        shard.heap += cost;
        // INVARIANT: a shard never holds more than its budget between
        // calls. Over it (the new entry, or the table growing for it), the
        // shard starts over with this entry alone; dropping the old map
        // also frees its table, which `clear` would keep.
        if shard.bytes() > self.shard_budget {
            let Some(decision) = shard.map.remove(inputs) else {
                return;
            };
            *shard = Shard::default();
            shard.map.insert(inputs.to_key(), decision);
            shard.heap = cost;
            if shard.bytes() > self.shard_budget {
                *shard = Shard::default();
            }
        }
    }

    /// Drops every decision (on reload; old keys could not hit anyway, since
    /// the generation is part of the key, but their memory is freed).
    pub(crate) fn clear(&self) {
        for shard in self.shards.all() {
            *lock(shard) = Shard::default();
        }
    }

    /// Decisions held, over all shards.
    pub(crate) fn len(&self) -> usize {
        self.shards.all().map(|s| lock(s).map.len()).sum()
    }

    /// Bytes held (entries' heap bytes and tables), over all shards.
    pub(crate) fn bytes(&self) -> usize {
        self.shards.all().map(|s| lock(s).bytes()).sum()
    }
}

fn lock(shard: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    // The shard is only ever left consistent; a panic elsewhere cannot
    // corrupt it, so a poisoned lock is still usable.
    shard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::PolicyIds;
    use crate::identity::PeerCred;
    use crate::secret::SecretPath;

    const CTX: RequestContext<'static> = RequestContext {
        transport: Transport::Unix,
        peer: Some(PeerCred {
            uid: 1,
            gid: 1,
            pid: None,
        }),
        request_id: "r",
        spiffe_id: None,
    };

    fn deny() -> Decision {
        Decision {
            allowed: false,
            policies: PolicyIds::from(vec!["platform-never-reads".to_owned()]),
            errors: Vec::new(),
        }
    }

    fn component(name: String, roles: Vec<String>) -> Principal {
        Principal {
            name,
            kind: PrincipalKind::Component,
            roles,
            scope: None,
        }
    }

    #[test]
    fn stays_under_its_byte_budget_with_large_keys() {
        let budget = 1024 * 1024;
        let cache = DecisionCache::with_budget(budget);
        // One thread: every insert lands in this thread's shard.
        let share = budget / Sharded::<()>::count();
        let labels: Labels = (0..2)
            .map(|k| (format!("{k}{}", "k".repeat(40)), "v".repeat(40)))
            .collect();
        let label_text: usize = labels.iter().map(|(k, v)| k.len() + v.len()).sum();
        let mut most = 0;
        for i in 0..5000 {
            let roles: Vec<String> = (0..4).map(|r| format!("{r}{}", "r".repeat(60))).collect();
            let p = component(format!("{i}{}", "p".repeat(200)), roles);
            let path = SecretPath::parse(&format!("{}/{}/s{i}", "a".repeat(120), "b".repeat(120)))
                .unwrap();
            let res = Resource::Secret {
                path: &path,
                labels: Some(&labels),
            };
            let inputs = DecisionInputs::new(1, &p, Action::Read, res, &CTX);
            assert!(inputs.worth_caching());
            cache.insert(&inputs, deny());
            assert_eq!(cache.get(&inputs), Some(deny()), "the newest entry is kept");
            assert!(cache.bytes() <= share, "{} > {share}", cache.bytes());
            // Independently of the cache's own accounting: the text the
            // test put into the keys it holds fits in the budget.
            let text = p.name.len()
                + p.roles.iter().map(String::len).sum::<usize>()
                + path.as_str().len()
                + label_text;
            assert!(cache.len() * text <= share, "{} entries", cache.len());
            most = most.max(cache.len());
        }
        // Still a cache: it held many entries at once.
        assert!(most >= 50, "at most {most} entries");
    }

    #[test]
    fn large_entries_and_labelled_writes_are_not_kept() {
        let cache = DecisionCache::default();
        let p = component("p".repeat(MAX_ENTRY_BYTES), Vec::new());
        let path = SecretPath::parse("a/b").unwrap();
        let res = Resource::Secret {
            path: &path,
            labels: None,
        };
        let inputs = DecisionInputs::new(1, &p, Action::Read, res, &CTX);
        assert!(!inputs.worth_caching());
        cache.insert(&inputs, deny());
        assert_eq!((cache.len(), cache.get(&inputs)), (0, None));

        let p = component("p".to_owned(), Vec::new());
        let labels: Labels = [("k".to_owned(), "v".to_owned())].into();
        let labelled = Resource::Secret {
            path: &path,
            labels: Some(&labels),
        };
        let write = DecisionInputs::new(1, &p, Action::Write, labelled, &CTX);
        assert!(!write.worth_caching());
        // A read of a labelled secret, or a write without labels, is kept.
        assert!(DecisionInputs::new(1, &p, Action::Read, labelled, &CTX).worth_caching());
        assert!(DecisionInputs::new(1, &p, Action::Write, res, &CTX).worth_caching());
        let empty = Labels::new();
        let unlabelled = Resource::Secret {
            path: &path,
            labels: Some(&empty),
        };
        assert!(DecisionInputs::new(1, &p, Action::Write, unlabelled, &CTX).worth_caching());
    }
}
