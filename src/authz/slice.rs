//! Policy slicing: the policies that can apply to a request, found through
//! an index of their heads, so that a cold decision costs what the
//! applicable policies cost rather than what the whole set costs.
//!
//! A policy's head is its `principal`, `action` and `resource` constraint
//! (`==`, `in`, `is`, `is … in`, or none). The index, built once per policy
//! set (per generation), files each policy under one key: the entity of its
//! resource head (`resource == E`, `in E`, `is T in E`), else the entity of
//! its principal head, else each action its action head names, else (no
//! action head) under "always". A request looks up the keys it can meet:
//! its resource and the resource's ancestors, its principal and the
//! principal's ancestors, its action and the action's ancestors (its
//! groups), each taken from the very entity store Cedar will decide with.
//! Every policy found is then checked against all three heads exactly as
//! Cedar reads them; those that pass are the candidates, handed to Cedar in
//! the set's order.
//!
//! SECURITY: the sliced decision is the unsliced one. Cedar evaluates a
//! policy as `principal_head && (action_head && (resource_head && body))`,
//! left to right with short-circuit (`cedar_policy_core`'s
//! `TemplateBody::condition` and its evaluator's `And`). A head is `==`,
//! `in` or `is` between the request's uid and literals: it never errors,
//! and `uid in E` is `uid == E || E ∈ ancestors(uid)` read from the entity
//! store (`eval_in`, `Entity::is_descendant_of`) — the same ancestors this
//! module reads through [`Entities::ancestors`]. So a policy left out has a
//! false head: Cedar would find it unsatisfied without evaluating its body,
//! so it could neither permit, forbid nor error, and the response (decision,
//! reasons, errors) does not depend on it. Candidates keep the set's order
//! (Cedar's `PolicySet` iterates in insertion order), so errors come in the
//! same order as well. The property test `slice/tests.rs`
//! (`sliced_decisions_equal_unsliced`) checks this over random sets.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use cedar_policy::{
    ActionConstraint, Entities, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet,
    PrincipalConstraint, Request, ResourceConstraint,
};

/// Policies the sliced sets in the cache may hold in all (each set holds
/// clones of its candidates, text included); past it the cache starts over.
const MAX_HELD_POLICIES: usize = 16 * 1024;

/// Sliced sets the cache may hold.
const MAX_SETS: usize = 512;

/// A principal or resource head.
#[derive(Debug)]
enum EntityHead {
    Any,
    Is(EntityTypeName),
    Eq(EntityUid),
    In(EntityUid),
    IsIn(EntityTypeName, EntityUid),
}

impl EntityHead {
    fn principal(c: PrincipalConstraint) -> Self {
        match c {
            PrincipalConstraint::Any => Self::Any,
            PrincipalConstraint::Is(t) => Self::Is(t),
            PrincipalConstraint::Eq(e) => Self::Eq(e),
            PrincipalConstraint::In(e) => Self::In(e),
            PrincipalConstraint::IsIn(t, e) => Self::IsIn(t, e),
        }
    }

    fn resource(c: ResourceConstraint) -> Self {
        match c {
            ResourceConstraint::Any => Self::Any,
            ResourceConstraint::Is(t) => Self::Is(t),
            ResourceConstraint::Eq(e) => Self::Eq(e),
            ResourceConstraint::In(e) => Self::In(e),
            ResourceConstraint::IsIn(t, e) => Self::IsIn(t, e),
        }
    }

    /// The entity the head names: a request can meet it only if this is
    /// its uid or one of its ancestors.
    fn key(&self) -> Option<&EntityUid> {
        match self {
            Self::Eq(e) | Self::In(e) | Self::IsIn(_, e) => Some(e),
            Self::Any | Self::Is(_) => None,
        }
    }

    /// Whether `uid`, whose lineage (itself, then its ancestors in the
    /// request's entity store) is `lineage`, satisfies the head, as Cedar's
    /// `==`, `in` and `is` decide it.
    fn admits(&self, uid: &EntityUid, lineage: &[&EntityUid]) -> bool {
        match self {
            Self::Any => true,
            Self::Is(t) => uid.type_name() == t,
            Self::Eq(e) => uid == e,
            Self::In(e) => lineage.contains(&e),
            Self::IsIn(t, e) => uid.type_name() == t && lineage.contains(&e),
        }
    }
}

/// An action head: `action`, `action == A`, `action in [A, …]` (a single
/// `action in G` is a list of one).
#[derive(Debug)]
enum ActionHead {
    Any,
    Eq(EntityUid),
    In(Vec<EntityUid>),
}

impl ActionHead {
    fn admits(&self, uid: &EntityUid, lineage: &[&EntityUid]) -> bool {
        match self {
            Self::Any => true,
            Self::Eq(a) => uid == a,
            Self::In(groups) => groups.iter().any(|g| lineage.contains(&g)),
        }
    }
}

/// The three heads of one policy.
#[derive(Debug)]
struct Heads {
    principal: EntityHead,
    action: ActionHead,
    resource: EntityHead,
}

impl Heads {
    fn of(policy: &Policy) -> Self {
        Self {
            principal: EntityHead::principal(policy.principal_constraint()),
            action: match policy.action_constraint() {
                ActionConstraint::Any => ActionHead::Any,
                ActionConstraint::Eq(a) => ActionHead::Eq(a),
                ActionConstraint::In(groups) => ActionHead::In(groups),
            },
            resource: EntityHead::resource(policy.resource_constraint()),
        }
    }
}

/// One request's uids and their lineages (the uid, then its ancestors).
struct Lineages<'a> {
    principal: (&'a EntityUid, Vec<&'a EntityUid>),
    action: (&'a EntityUid, Vec<&'a EntityUid>),
    resource: (&'a EntityUid, Vec<&'a EntityUid>),
}

fn lineage<'a>(uid: &'a EntityUid, entities: &'a Entities) -> (&'a EntityUid, Vec<&'a EntityUid>) {
    let mut out = vec![uid];
    // An entity missing from the store has no ancestors: Cedar's `in` is
    // then plain equality, as here.
    out.extend(entities.ancestors(uid).into_iter().flatten());
    (uid, out)
}

/// The policy set handed to Cedar for one request.
#[derive(Debug)]
pub(crate) enum Selected<'a> {
    /// Every policy can apply (or the request could not be sliced).
    Full(&'a PolicySet),
    /// The candidates only.
    Sliced(Arc<PolicySet>),
}

impl Selected<'_> {
    /// The set to decide with.
    pub(crate) fn set(&self) -> &PolicySet {
        match self {
            Self::Full(set) => set,
            Self::Sliced(set) => set,
        }
    }
}

/// Sliced sets already built, by their candidates (indexes, ascending).
#[derive(Default)]
struct Built {
    sets: HashMap<Box<[usize]>, Arc<PolicySet>>,
    /// Policies held by `sets`, all told.
    held: usize,
}

/// The index of one policy set's heads, and the sliced sets built from it.
pub(crate) struct PolicyIndex {
    /// Every policy's id, in the set's order (the policies themselves stay
    /// in the set, not copied here).
    ids: Vec<PolicyId>,
    heads: Vec<Heads>,
    /// Policies filed by the entity of their resource head.
    by_resource: HashMap<EntityUid, Vec<usize>>,
    /// Policies without a resource key, by the entity of their principal head.
    by_principal: HashMap<EntityUid, Vec<usize>>,
    /// Policies without an entity key, by each action their head names.
    by_action: HashMap<EntityUid, Vec<usize>>,
    /// Policies without any key: candidates whenever their `is` heads hold.
    always: Vec<usize>,
    built: Mutex<Built>,
}

impl fmt::Debug for PolicyIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyIndex")
            .field("policies", &self.ids.len())
            .field("by_resource", &self.by_resource.len())
            .field("by_principal", &self.by_principal.len())
            .field("by_action", &self.by_action.len())
            .field("always", &self.always.len())
            .finish_non_exhaustive()
    }
}

impl PolicyIndex {
    /// Indexes the policies of `set` (static and template-linked alike: a
    /// linked policy's heads come with its slots filled).
    pub(crate) fn new(set: &PolicySet) -> Self {
        let heads: Vec<Heads> = set.policies().map(Heads::of).collect();
        let mut index = Self {
            ids: set.policies().map(|p| p.id().clone()).collect(),
            heads: Vec::new(),
            by_resource: HashMap::new(),
            by_principal: HashMap::new(),
            by_action: HashMap::new(),
            always: Vec::new(),
            built: Mutex::default(),
        };
        for (i, h) in heads.iter().enumerate() {
            if let Some(e) = h.resource.key() {
                index.by_resource.entry(e.clone()).or_default().push(i);
            } else if let Some(e) = h.principal.key() {
                index.by_principal.entry(e.clone()).or_default().push(i);
            } else {
                match &h.action {
                    ActionHead::Any => index.always.push(i),
                    ActionHead::Eq(a) => index.by_action.entry(a.clone()).or_default().push(i),
                    ActionHead::In(groups) => {
                        for g in groups {
                            index.by_action.entry(g.clone()).or_default().push(i);
                        }
                    }
                }
            }
        }
        index.heads = heads;
        index
    }

    /// Indexes (in the set's order) of the policies whose heads the request
    /// meets: a superset of those Cedar would find satisfied, and exactly
    /// those it would evaluate past their heads.
    fn candidates(&self, l: &Lineages<'_>) -> Vec<usize> {
        let mut found = self.always.clone();
        let mut gather = |map: &HashMap<EntityUid, Vec<usize>>, keys: &[&EntityUid]| {
            for k in keys {
                if let Some(ids) = map.get(*k) {
                    found.extend_from_slice(ids);
                }
            }
        };
        gather(&self.by_resource, &l.resource.1);
        gather(&self.by_principal, &l.principal.1);
        gather(&self.by_action, &l.action.1);
        found.sort_unstable();
        found.dedup();
        found.retain(|&i| {
            self.heads.get(i).is_some_and(|h| {
                h.principal.admits(l.principal.0, &l.principal.1)
                    && h.action.admits(l.action.0, &l.action.1)
                    && h.resource.admits(l.resource.0, &l.resource.1)
            })
        });
        found
    }

    /// Ids of the candidates for `request` over `entities`, in the set's
    /// order; `None` when the request names an unknown uid (partial
    /// requests, which the broker never builds).
    #[cfg(test)]
    pub(crate) fn candidate_ids(
        &self,
        request: &Request,
        entities: &Entities,
    ) -> Option<Vec<String>> {
        let l = lineages(request, entities)?;
        Some(
            self.candidates(&l)
                .into_iter()
                .filter_map(|i| self.ids.get(i))
                .map(ToString::to_string)
                .collect(),
        )
    }

    /// The policies of `full` (the set this index was built from) that can
    /// apply to `request` decided over `entities`: see the module's
    /// SECURITY note for why Cedar decides the same on them as on `full`.
    pub(crate) fn select<'a>(
        &self,
        full: &'a PolicySet,
        request: &Request,
        entities: &Entities,
    ) -> Selected<'a> {
        let Some(l) = lineages(request, entities) else {
            return Selected::Full(full);
        };
        let candidates = self.candidates(&l);
        if candidates.len() == self.ids.len() {
            return Selected::Full(full);
        }
        let lock = || self.built.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(set) = lock().sets.get(candidates.as_slice()) {
            return Selected::Sliced(Arc::clone(set));
        }
        let mut set = PolicySet::new();
        for &i in &candidates {
            let added = match self.ids.get(i).and_then(|id| full.policy(id)) {
                Some(p) => set.add(p.clone()).is_ok(),
                None => false,
            };
            if !added {
                // SECURITY: cannot happen (the ids come from one valid
                // set); should it, the whole set decides, which is always
                // right.
                return Selected::Full(full);
            }
        }
        let set = Arc::new(set);
        let held = candidates.len();
        let mut built = lock();
        // Starting over is cheap: a set is rebuilt from the index on the
        // next miss.
        if built.sets.len() >= MAX_SETS || built.held + held > MAX_HELD_POLICIES {
            *built = Built::default();
        }
        if held <= MAX_HELD_POLICIES {
            // Another thread may have built the same set meanwhile.
            if built
                .sets
                .insert(candidates.into(), Arc::clone(&set))
                .is_none()
            {
                built.held += held;
            }
        }
        Selected::Sliced(set)
    }
}

fn lineages<'a>(request: &'a Request, entities: &'a Entities) -> Option<Lineages<'a>> {
    Some(Lineages {
        principal: lineage(request.principal()?, entities),
        action: lineage(request.action()?, entities),
        resource: lineage(request.resource()?, entities),
    })
}

#[cfg(test)]
mod tests;
