//! Cedar authorization: every request becomes one Cedar request, decided
//! before the store is touched; anything not permitted is denied.
//!
//! The [`Authorizer`] holds the current validated policy set in an
//! [`ArcSwap`], so decisions never block on a reload and a bad reload leaves
//! the last good set in force. An allow is handed back as a [`Permitted`]
//! proof that only this module can construct; the store is reached only
//! with one. Entity and context building live in [`entities`] and
//! [`context`] so that the server and the `policy` CLI decide alike.

mod cache;
pub mod context;
mod context_use;
pub mod entities;
pub mod policies;
mod slice;
pub mod testfile;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use cedar_policy::{Entities, Request};

use crate::identity::{PeerCred, Principal};
use crate::secret::{ScopePath, SecretPath};
use crate::store::Labels;

pub use context::ContextError;
pub use entities::EntityError;
use policies::PolicySnapshot;
pub use policies::{Diagnostic, Diagnostics, PolicySource};

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read a secret's value.
    Read,
    /// Create a secret or add a version.
    Write,
    /// List the secrets under a scope.
    List,
    /// Delete a secret (all versions).
    Delete,
    /// Mint a signed, create-only URL for task output (resource: an
    /// [`Resource::Output`]).
    Upload,
}

impl Action {
    /// Every action, in schema order.
    pub const ALL: [Action; 5] = [
        Action::Read,
        Action::Write,
        Action::List,
        Action::Delete,
        Action::Upload,
    ];

    /// The Cedar action id (`read`, `write`, `list`, `delete`, `upload`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::List => "list",
            Self::Delete => "delete",
            Self::Upload => "upload",
        }
    }

    /// The action named `s` (as [`Action::as_str`] spells it).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// How the caller reached the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The local Unix socket.
    Unix,
    /// The optional mTLS listener.
    Tls,
}

impl Transport {
    /// The value of `context.transport` (`unix`, `tls`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unix => "unix",
            Self::Tls => "tls",
        }
    }
}

/// Facts about the request that policies may use besides who, what and which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestContext<'a> {
    /// How the caller connected.
    pub transport: Transport,
    /// Peer credentials, where the transport reports them.
    pub peer: Option<PeerCred>,
    /// The request id, as in the audit log.
    pub request_id: &'a str,
    /// The client certificate's SPIFFE id (TLS callers whose certificate
    /// has one).
    pub spiffe_id: Option<&'a str>,
}

/// What a request acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// A secret (for `read`, `write`, `delete`); labels become Cedar tags
    /// where known (e.g. the labels being written).
    Secret {
        /// The secret's path.
        path: &'a SecretPath,
        /// Its labels, if known before the store is asked.
        labels: Option<&'a Labels>,
    },
    /// A scope (for `list`); the root scope lists everything.
    Scope(&'a ScopePath),
    /// A task output object (for `upload`), named by a path like a secret's
    /// and in the same scope tree.
    Output(&'a SecretPath),
}

/// Ids of the policies behind a decision, sorted.
pub type PolicyIds = Arc<[String]>;

/// The outcome of one decision, for audit and for `policy explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is permitted.
    pub allowed: bool,
    /// Ids of the policies that determined the decision (sorted): the
    /// permits that allowed it, or the forbids that denied it; empty when
    /// nothing applied (default deny). Shared: a cached decision hands
    /// out the same list to every request it decides.
    pub policies: PolicyIds,
    /// Errors met while deciding (a policy that errored is skipped; a
    /// request that could not be built is denied).
    pub errors: Vec<String>,
}

/// Proof that the authorizer permitted an action on `T`. It has no public
/// constructor: holding one means a decision allowed it.
#[derive(Debug)]
pub struct Permitted<T> {
    inner: T,
    policies: PolicyIds,
}

impl<T> Permitted<T> {
    /// The permitted subject.
    pub fn get(&self) -> &T {
        &self.inner
    }

    /// Gives up the proof and returns the subject.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// Ids of the policies that permitted it.
    pub fn policies(&self) -> &PolicyIds {
        &self.policies
    }
}

/// A denial: the policies that forbade it (empty for a default deny) and
/// any errors met while deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Ids of the forbids that denied it, if any.
    pub policies: PolicyIds,
    /// Errors met while deciding.
    pub errors: Vec<String>,
}

/// Why a policy set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    /// A file or the directory could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The policy directory has no schema.
    #[error("no `schema.cedarschema` in `{dir}`")]
    MissingSchema {
        /// The policy directory.
        dir: String,
    },
    /// The schema does not parse or is inconsistent.
    #[error("invalid schema:{0}")]
    InvalidSchema(Diagnostics),
    /// A policy does not parse, is a duplicate, or fails strict validation.
    #[error("invalid policy set:{0}")]
    InvalidPolicySet(Diagnostics),
    /// `reload` on an authorizer that was not loaded from a directory.
    #[error("the policies were not loaded from a directory, so there is nothing to reload")]
    NotReloadable,
    /// Something that should not happen in Cedar's hands.
    #[error("internal: {0}")]
    Internal(String),
}

impl AuthzError {
    /// The located diagnostics, for errors that have them.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Self::InvalidSchema(d) | Self::InvalidPolicySet(d) => &d.0,
            _ => &[],
        }
    }
}

/// The shipped schema and default policy, for `serve --dev` and tests.
pub fn shipped_sources() -> (PolicySource, Vec<PolicySource>) {
    (
        PolicySource {
            name: "policies/schema.cedarschema".to_owned(),
            text: include_str!("../policies/schema.cedarschema").to_owned(),
        },
        vec![PolicySource {
            name: "policies/broker.cedar".to_owned(),
            text: include_str!("../policies/broker.cedar").to_owned(),
        }],
    )
}

/// Decides requests against the current policy set; reloadable.
pub struct Authorizer {
    current: ArcSwap<PolicySnapshot>,
    dir: Option<PathBuf>,
    cedar: cedar_policy::Authorizer,
    // Serializes reloads so generations are handed out one at a time.
    reloading: Mutex<()>,
    decisions: cache::DecisionCache,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snap = self.current.load();
        f.debug_struct("Authorizer")
            .field("dir", &self.dir)
            .field("generation", &snap.generation)
            .field("policies", &snap.policies.num_of_policies())
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    /// Loads `dir/schema.cedarschema` and `dir/*.cedar`; [`reload`](Self::reload)
    /// re-reads the same directory.
    pub fn load_dir(dir: &Path) -> Result<Self, AuthzError> {
        let (schema, policies) = policies::read_dir(dir)?;
        let snap = policies::compile(&schema, &policies, 1)?;
        Ok(Self::with_snapshot(snap, Some(dir.to_path_buf())))
    }

    /// Builds an authorizer from in-memory sources (not reloadable).
    pub fn from_sources(
        schema: PolicySource,
        policies: Vec<PolicySource>,
    ) -> Result<Self, AuthzError> {
        let snap = policies::compile(&schema, &policies, 1)?;
        Ok(Self::with_snapshot(snap, None))
    }

    fn with_snapshot(snap: PolicySnapshot, dir: Option<PathBuf>) -> Self {
        Self {
            current: ArcSwap::from_pointee(snap),
            dir,
            cedar: cedar_policy::Authorizer::new(),
            reloading: Mutex::new(()),
            decisions: cache::DecisionCache::default(),
        }
    }

    /// Re-reads the directory the policies came from. On any error the
    /// current set stays in force and the error is returned.
    pub fn reload(&self) -> Result<(), AuthzError> {
        let dir = self.dir.as_deref().ok_or(AuthzError::NotReloadable)?;
        // A poisoned lock only means an earlier reload panicked; the guard
        // protects no data, so carry on.
        let _guard = self
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (schema, policies) = policies::read_dir(dir)?;
        let next = self.current.load().generation + 1;
        let snap = policies::compile(&schema, &policies, next)?;
        self.current.store(Arc::new(snap));
        self.decisions.clear();
        Ok(())
    }

    /// The generation of the set in force: 1 at load, +1 per successful reload.
    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// Where policy `id` is defined: file and 1-based line.
    pub fn policy_location(&self, id: &str) -> Option<(String, u32)> {
        self.current.load().locations.get(id).cloned()
    }

    /// Ids of the policies in force, sorted.
    pub fn policy_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.current.load().locations.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Non-fatal findings of the schema parser and validator for the set in force.
    pub fn warnings(&self) -> Vec<Diagnostic> {
        self.current.load().warnings.clone()
    }

    /// Decides one request, from the decision cache when the same inputs
    /// were decided under the same policy generation. Never panics:
    /// anything that goes wrong is a deny with the reason in
    /// [`Decision::errors`].
    pub fn decide(
        &self,
        principal: &Principal,
        action: Action,
        resource: Resource<'_>,
        ctx: &RequestContext<'_>,
    ) -> Decision {
        let snap = self.current.load();
        // A policy that can read the request id makes every request's
        // decision its own (ids are unique): nothing to cache. Otherwise
        // the cache is asked, for inputs worth keeping.
        let inputs = (!snap.reads_request_id)
            .then(|| cache::DecisionInputs::new(snap.generation, principal, action, resource, ctx))
            .filter(cache::DecisionInputs::worth_caching);
        if let Some(hit) = inputs.as_ref().and_then(|i| self.decisions.get(i)) {
            return hit;
        }
        let decision = self.evaluate(&snap, principal, action, resource, ctx);
        if let Some(inputs) = &inputs {
            self.decisions.insert(inputs, decision.clone());
        }
        decision
    }

    /// The second phase of a read: once the store returned the secret, its
    /// labels are known and the read is decided again with them before the
    /// value is released (so label-based forbids hold). `None` when the
    /// secret has no labels: the first decision, made before the store was
    /// asked, stands. The broker and `policy test` both use this, so a test
    /// means what production means.
    pub fn recheck_read(
        &self,
        principal: &Principal,
        path: &SecretPath,
        labels: &Labels,
        ctx: &RequestContext<'_>,
    ) -> Option<Decision> {
        (!labels.is_empty()).then(|| {
            let resource = Resource::Secret {
                path,
                labels: Some(labels),
            };
            self.decide(principal, Action::Read, resource, ctx)
        })
    }

    /// Decisions currently cached (for metrics and tests).
    pub fn cached_decisions(&self) -> usize {
        self.decisions.len()
    }

    /// Bytes the decision cache holds (its entries and tables; at most
    /// its budget, 4 MiB).
    pub fn cached_decision_bytes(&self) -> usize {
        self.decisions.bytes()
    }

    /// Decides one request with Cedar, bypassing the cache: the reference
    /// the cache is proven against (and the cold path in benches).
    pub fn decide_uncached(
        &self,
        principal: &Principal,
        action: Action,
        resource: Resource<'_>,
        ctx: &RequestContext<'_>,
    ) -> Decision {
        self.evaluate(&self.current.load(), principal, action, resource, ctx)
    }

    fn evaluate(
        &self,
        snap: &PolicySnapshot,
        principal: &Principal,
        action: Action,
        resource: Resource<'_>,
        ctx: &RequestContext<'_>,
    ) -> Decision {
        self.evaluate_with(
            snap,
            principal,
            action,
            resource,
            ctx,
            |request, entities| {
                // Cedar sees only the policies whose heads the request meets:
                // the others could not change the decision (see `slice`).
                snap.slices.select(&snap.policies, request, entities)
            },
        )
    }

    /// Builds the request and decides it on the set `pick` chooses for it.
    fn evaluate_with<'s>(
        &self,
        snap: &'s PolicySnapshot,
        principal: &Principal,
        action: Action,
        resource: Resource<'_>,
        ctx: &RequestContext<'_>,
        pick: impl FnOnce(&Request, &Entities) -> slice::Selected<'s>,
    ) -> Decision {
        let (request, entities) = match build(snap, principal, action, resource, ctx) {
            Ok(built) => built,
            Err(error) => {
                // SECURITY: fail closed; a request we cannot express is denied.
                return Decision {
                    allowed: false,
                    policies: PolicyIds::default(),
                    errors: vec![error],
                };
            }
        };
        let selected = pick(&request, &entities);
        self.evaluate_request(selected.set(), &request, &entities)
    }

    /// The decision on the whole set, as before slicing: the reference
    /// slicing is proven against.
    #[cfg(test)]
    fn evaluate_unsliced(
        &self,
        principal: &Principal,
        action: Action,
        resource: Resource<'_>,
        ctx: &RequestContext<'_>,
    ) -> Decision {
        let snap = self.current.load();
        self.evaluate_with(&snap, principal, action, resource, ctx, |_, _| {
            slice::Selected::Full(&snap.policies)
        })
    }

    /// Decides a Cedar request against the given entities, with the set in
    /// force. For Cedar's own test format and `policy explain --entities`,
    /// whose entities do not come from [`entities`]; the server never
    /// calls it. It decides with the whole set, not a slice: it is not on
    /// the request path, and its entities are the user's.
    pub fn decide_request(&self, request: &Request, entities: &Entities) -> Decision {
        self.evaluate_request(&self.current.load().policies, request, entities)
    }

    /// The schema of the set in force.
    pub fn schema(&self) -> cedar_policy::Schema {
        self.current.load().schema.clone()
    }

    /// The policy set in force, with the ids decisions report (`@id`, else
    /// `<file>#<index>`).
    pub fn policy_set(&self) -> cedar_policy::PolicySet {
        self.current.load().policies.clone()
    }

    fn evaluate_request(
        &self,
        policies: &cedar_policy::PolicySet,
        request: &Request,
        entities: &Entities,
    ) -> Decision {
        let response = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.cedar.is_authorized(request, policies, entities)
        }));
        let Ok(response) = response else {
            // SECURITY: fail closed should the evaluator ever panic.
            return Decision {
                allowed: false,
                policies: PolicyIds::default(),
                errors: vec!["internal: the cedar evaluator panicked".to_owned()],
            };
        };
        let diagnostics = response.diagnostics();
        let mut policies: Vec<String> = diagnostics
            .reason()
            .map(|id| AsRef::<str>::as_ref(id).to_owned())
            .collect();
        policies.sort();
        Decision {
            allowed: response.decision() == cedar_policy::Decision::Allow,
            policies: policies.into(),
            errors: diagnostics.errors().map(|e| e.to_string()).collect(),
        }
    }

    /// Decides one request and, if allowed, wraps `subject` in a
    /// [`Permitted`] proof.
    pub fn authorize<T>(
        &self,
        principal: &Principal,
        action: Action,
        resource: Resource<'_>,
        ctx: &RequestContext<'_>,
        subject: T,
    ) -> Result<Permitted<T>, Denied> {
        let d = self.decide(principal, action, resource, ctx);
        if d.allowed {
            Ok(Permitted {
                inner: subject,
                policies: d.policies,
            })
        } else {
            Err(Denied {
                policies: d.policies,
                errors: d.errors,
            })
        }
    }
}

/// The Cedar request and entities for one decision.
fn build(
    snap: &PolicySnapshot,
    principal: &Principal,
    action: Action,
    resource: Resource<'_>,
    ctx: &RequestContext<'_>,
) -> Result<(Request, Entities), String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let action_uid = entities::action_uid(action).map_err(|e| s(&e))?;
    let mut list = entities::principal_entities(principal).map_err(|e| s(&e))?;
    list.extend(entities::resource_entities(resource).map_err(|e| s(&e))?);
    // The action's own entity carries its groups from the schema, so
    // operator policies on action groups work.
    if let Some(a) = snap.actions.get(&action_uid) {
        list.push(a.clone());
    }
    // INVARIANT: our entities list every ancestor directly, so the store
    // needs no closure pass (see `entities::request_store`).
    let entities = entities::request_store(list).map_err(|e| s(&e))?;
    let request = Request::new(
        entities::principal_uid(principal).map_err(|e| s(&e))?,
        action_uid,
        entities::resource_uid(resource).map_err(|e| s(&e))?,
        context::context(ctx).map_err(|e| s(&e))?,
        // SECURITY: checking the request against the schema refuses
        // combinations no policy was validated for (e.g. `list` on a secret).
        Some(&snap.schema),
    )
    .map_err(|e| s(&e))?;
    Ok((request, entities))
}
