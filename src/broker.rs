//! The broker core: the authorizer and the store, joined so that the store
//! is reachable only with a [`Permitted`] proof of the matching action.
//!
//! Each operation has its own subject type (`ReadSecret`, `WriteSecret`, …)
//! that only this module can construct, always together with the Cedar
//! action it stands for; so a proof obtained for `write` can never be
//! spent on a `read`.

use std::sync::Arc;

use crate::authz::{Action, Authorizer, Denied, Permitted, PolicyIds, RequestContext, Resource};
use crate::identity::Principal;
use crate::secret::{ScopePath, SecretPath};
use crate::store::{Labels, PutOutcome, PutRequest, SecretMeta, Store, StoreError, StoredSecret};

/// Subject of a permitted read.
#[derive(Debug)]
pub struct ReadSecret(SecretPath);
/// Subject of a permitted upload: the output object's path. Spent only by
/// [`crate::upload::Uploader::mint`]; no store call is made for it.
#[derive(Debug)]
pub struct UploadOutput(SecretPath);

impl UploadOutput {
    /// The output path the upload was permitted for.
    pub fn path(&self) -> &SecretPath {
        &self.0
    }
}

/// Subject of a permitted write.
#[derive(Debug)]
pub struct WriteSecret(SecretPath);
/// Subject of a permitted delete.
#[derive(Debug)]
pub struct DeleteSecret(SecretPath);
/// Subject of a permitted list.
#[derive(Debug)]
pub struct ListScope(ScopePath);

/// Why a permitted read did not release a value.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The policy denies once the secret's labels are known.
    #[error("the policy denies reading this secret given its labels")]
    Denied(Denied),
}

/// Authorizer plus store.
#[derive(Debug)]
pub struct Broker {
    authz: Arc<Authorizer>,
    // SECURITY: private; every path to it below takes a `Permitted` proof.
    store: Arc<dyn Store>,
}

impl Broker {
    /// Joins an authorizer and a store.
    pub fn new(authz: Arc<Authorizer>, store: Arc<dyn Store>) -> Self {
        Self { authz, store }
    }

    /// The authorizer (for reloads and explain).
    pub fn authorizer(&self) -> &Arc<Authorizer> {
        &self.authz
    }

    /// The configured backend's name.
    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// Decides a read of `path`.
    pub fn authorize_read(
        &self,
        who: &Principal,
        path: &SecretPath,
        ctx: &RequestContext<'_>,
    ) -> Result<Permitted<ReadSecret>, Denied> {
        let resource = Resource::Secret { path, labels: None };
        self.authz
            .authorize(who, Action::Read, resource, ctx, ReadSecret(path.clone()))
    }

    /// Decides a write of `path` with the labels the write would set.
    pub fn authorize_write(
        &self,
        who: &Principal,
        path: &SecretPath,
        labels: &Labels,
        ctx: &RequestContext<'_>,
    ) -> Result<Permitted<WriteSecret>, Denied> {
        let resource = Resource::Secret {
            path,
            labels: Some(labels),
        };
        self.authz
            .authorize(who, Action::Write, resource, ctx, WriteSecret(path.clone()))
    }

    /// Decides a delete of `path`.
    pub fn authorize_delete(
        &self,
        who: &Principal,
        path: &SecretPath,
        ctx: &RequestContext<'_>,
    ) -> Result<Permitted<DeleteSecret>, Denied> {
        let resource = Resource::Secret { path, labels: None };
        self.authz.authorize(
            who,
            Action::Delete,
            resource,
            ctx,
            DeleteSecret(path.clone()),
        )
    }

    /// Decides an upload of task output to `path` (Cedar action `upload` on
    /// `SecretBroker::Output::"{path}"`).
    pub fn authorize_upload(
        &self,
        who: &Principal,
        path: &SecretPath,
        ctx: &RequestContext<'_>,
    ) -> Result<Permitted<UploadOutput>, Denied> {
        self.authz.authorize(
            who,
            Action::Upload,
            Resource::Output(path),
            ctx,
            UploadOutput(path.clone()),
        )
    }

    /// Decides a list of `scope`.
    pub fn authorize_list(
        &self,
        who: &Principal,
        scope: &ScopePath,
        ctx: &RequestContext<'_>,
    ) -> Result<Permitted<ListScope>, Denied> {
        self.authz.authorize(
            who,
            Action::List,
            Resource::Scope(scope),
            ctx,
            ListScope(scope.clone()),
        )
    }

    /// Reads the current value, then decides again with the secret's labels
    /// before releasing it, so label-based read policies (e.g. a `forbid`
    /// on `classification=restricted`) hold. The first decision, made
    /// without labels before the store was asked, already allowed this
    /// caller in this scope, so the second one reveals nothing new to it.
    /// Returns the policies of the second decision when there was one
    /// (`None`: the permit's policies stand). `fresh` (the caller's
    /// `Cache-Control: no-cache`) reads past the read cache; it is the same
    /// authorized read, so it needs no other permission.
    pub async fn read(
        &self,
        p: &Permitted<ReadSecret>,
        who: &Principal,
        ctx: &RequestContext<'_>,
        fresh: bool,
    ) -> Result<(StoredSecret, Option<PolicyIds>), ReadError> {
        let path = &p.get().0;
        let secret = if fresh {
            self.store.get_fresh(path).await?
        } else {
            match self.store.get_ready(path) {
                Some(secret) => secret,
                None => self.store.get(path).await?,
            }
        };
        let Some(decision) = self.authz.recheck_read(who, path, &secret.labels, ctx) else {
            return Ok((secret, None));
        };
        if decision.allowed {
            Ok((secret, Some(decision.policies)))
        } else {
            // SECURITY: `secret` is dropped (and zeroized) here, unreleased.
            Err(ReadError::Denied(Denied {
                policies: decision.policies,
                errors: decision.errors,
            }))
        }
    }

    /// Writes a new version.
    pub async fn write(
        &self,
        p: &Permitted<WriteSecret>,
        req: PutRequest,
    ) -> Result<PutOutcome, StoreError> {
        self.store.put(&p.get().0, req).await
    }

    /// Deletes every version.
    pub async fn delete(&self, p: &Permitted<DeleteSecret>) -> Result<(), StoreError> {
        self.store.delete(&p.get().0).await
    }

    /// Lists metadata under the scope.
    pub async fn list(&self, p: &Permitted<ListScope>) -> Result<Vec<SecretMeta>, StoreError> {
        self.store.list(&p.get().0).await
    }

    /// Store health, for `/readyz` (no secret is touched).
    pub async fn health(&self) -> Result<(), StoreError> {
        self.store.health().await
    }
}
