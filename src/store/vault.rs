//! The `vault` store: HashiCorp Vault (or OpenBao) KV v2 at `mount`, every
//! secret at `{mount}/data/{prefix}{path}`.
//!
//! - Versions are KV v2 versions. Delete removes the metadata (every
//!   version), so a re-created path starts again at 1, as the contract says.
//! - Writes never read a value: the current version comes from the metadata
//!   endpoint and the write carries it as `cas`, so Vault itself refuses a
//!   write that raced another (we then re-read the metadata and try again,
//!   giving concurrent writers distinct versions) and `cas=0` makes
//!   `If-None-Match: *` exact. A version's labels are written in its data,
//!   beside the value, in the same call (see `kv`), and a read takes them
//!   from there: value and labels land and are read together. The secret's
//!   `custom_metadata` holds a copy for listings (which read metadata,
//!   never data), set after the value; a failure there is reported (the
//!   listing would show the old labels), and reads are unaffected.
//! - Reads (`get`, metadata, lists, health) retry a refused connection with
//!   backoff; writes are never retried after they were sent, except once
//!   when Vault refused the token because it had died (expired or revoked):
//!   Vault checks the token before anything else, so that write changed
//!   nothing, and the broker logs in afresh and sends it again
//!   (`auth::Session::with_login`). A TLS certificate that does not verify
//!   is a configuration error, not an outage.

mod auth;
mod kv;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use vaultrs::error::ClientError;

use self::auth::Session;
use self::kv::WriteError;
use crate::config::VaultConfig;
use crate::secret::{ScopePath, SecretPath};
use crate::store::{
    Labels, PutOutcome, PutRequest, SecretMeta, Store, StoreError, StoreErrorKind, StoredSecret,
};

/// The backend name, as in config and errors.
const STORE: &str = "vault";
/// How often a write re-reads the metadata after losing a `cas` race.
const MAX_CAS_ATTEMPTS: usize = 32;
/// Attempts for a read whose connection was refused.
const READ_ATTEMPTS: u32 = 3;
/// Metadata reads a listing runs at once.
const LIST_CONCURRENCY: usize = 8;
/// What an operator should check when Vault refuses the broker.
const POLICY_HINT: &str = "check the broker's Vault policy (deploy/backend-policies/vault/writer.hcl) and that its token is valid";

/// The vault store (backend `vault`).
pub struct VaultStore {
    session: Arc<Session>,
    mount: String,
    prefix: String,
    upkeep: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for VaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SECURITY: the session prints its method, never a token.
        f.debug_struct("VaultStore")
            .field("session", &self.session)
            .field("mount", &self.mount)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for VaultStore {
    fn drop(&mut self) {
        self.upkeep.abort();
    }
}

impl VaultStore {
    /// Builds the client and logs in. A server that cannot be reached yet
    /// is not fatal (the broker starts unready and keeps trying); refused
    /// credentials and unreadable files are.
    pub async fn connect(config: &VaultConfig) -> Result<Self, StoreError> {
        let timeout = config.remote.timeout;
        let http = super::https::http_client(STORE, config.ca_file.as_deref(), timeout)?;
        let session = Arc::new(Session::new(
            http,
            config.address.clone(),
            config.namespace.clone(),
            timeout,
            config.auth.clone(),
        ));
        super::start_unready_if_unreachable(STORE, session.login().await)?;
        let upkeep = auth::spawn_upkeep(&session);
        Ok(Self {
            session,
            mount: config.mount.clone(),
            prefix: config.remote.prefix.clone(),
            upkeep,
        })
    }

    fn key(&self, path: &SecretPath) -> String {
        format!("{}{}", self.prefix, path.as_str())
    }

    /// The secret's metadata, or `None` if Vault has no such key.
    async fn metadata(
        &self,
        key: &str,
    ) -> Result<Option<vaultrs::api::kv2::responses::ReadSecretMetadataResponse>, StoreError> {
        let r = retry_read(|| {
            self.session.with_login(|login| async move {
                vaultrs::kv2::read_metadata(&*login.client, &self.mount, key)
                    .await
                    .map_err(|e| map_client_error(e, self.session.timeout))
            })
        })
        .await;
        match r {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == StoreErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists a folder; a missing folder is empty.
    async fn list_folder(&self, folder: &str) -> Result<Vec<String>, StoreError> {
        let r = retry_read(|| {
            self.session.with_login(|login| async move {
                vaultrs::kv2::list(&*login.client, &self.mount, folder)
                    .await
                    .map_err(|e| map_client_error(e, self.session.timeout))
            })
        })
        .await;
        match r {
            Ok(keys) => Ok(keys),
            Err(e) if e.kind() == StoreErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Every leaf key under `folder` (which ends in `/` or is empty), as
    /// paths relative to the prefix. Depth is bounded by the path grammar.
    async fn walk(&self, folder: String) -> Result<Vec<String>, StoreError> {
        let mut leaves = Vec::new();
        let mut pending = vec![folder];
        while let Some(dir) = pending.pop() {
            let depth = dir.matches('/').count();
            for k in self.list_folder(&dir).await? {
                let full = format!("{dir}{k}");
                if k.ends_with('/') {
                    if depth < crate::secret::MAX_SEGMENTS + 4 {
                        pending.push(full);
                    }
                } else {
                    leaves.push(full);
                }
            }
        }
        Ok(leaves)
    }
}

#[async_trait]
impl Store for VaultStore {
    fn backend(&self) -> &'static str {
        STORE
    }

    async fn put(&self, path: &SecretPath, req: PutRequest) -> Result<PutOutcome, StoreError> {
        let key = self.key(path);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let meta = self.metadata(&key).await?;
            let current = meta.as_ref().map_or(0, |m| m.current_version);
            if req.create_only && current > 0 {
                return Err(exists(path));
            }
            match kv::write(
                &self.session,
                &self.mount,
                &key,
                &req.value,
                &req.labels,
                current,
            )
            .await
            {
                Ok(w) => {
                    let old_labels: Labels = meta
                        .and_then(|m| m.custom_metadata)
                        .unwrap_or_default()
                        .into_iter()
                        .collect();
                    if old_labels != req.labels {
                        self.set_labels(&key, &req.labels, w.version).await?;
                    }
                    return Ok(PutOutcome {
                        version: w.version,
                        created: current == 0,
                        created_at: w.created_at,
                    });
                }
                Err(WriteError::CasMismatch) if req.create_only => return Err(exists(path)),
                Err(WriteError::CasMismatch) => {
                    tokio::task::yield_now().await;
                }
                Err(WriteError::Store(e)) => return Err(e),
            }
        }
        Err(StoreError::Unavailable {
            store: STORE,
            detail: format!(
                "`{}` is being written too often to get a version in {MAX_CAS_ATTEMPTS} tries",
                path.as_str()
            ),
        })
    }

    async fn get(&self, path: &SecretPath) -> Result<StoredSecret, StoreError> {
        let key = self.key(path);
        let read = retry_read(|| kv::read(&self.session, &self.mount, &key)).await?;
        Ok(StoredSecret {
            version: read.version,
            value: read.value,
            labels: read.labels,
        })
    }

    async fn list(&self, scope: &ScopePath) -> Result<Vec<SecretMeta>, StoreError> {
        let folder = format!("{}{}", self.prefix, scope.key_prefix());
        let leaves = self.walk(folder).await?;
        let mut out = Vec::with_capacity(leaves.len());
        for chunk in leaves.chunks(LIST_CONCURRENCY) {
            let mut set = tokio::task::JoinSet::new();
            for (i, key) in chunk.iter().enumerate() {
                let session = Arc::clone(&self.session);
                let mount = self.mount.clone();
                let key = key.clone();
                set.spawn(async move {
                    let (session, mount, key_ref) = (&session, &mount, &key);
                    let r = retry_read(|| {
                        session.with_login(|login| async move {
                            vaultrs::kv2::read_metadata(&*login.client, mount, key_ref)
                                .await
                                .map_err(|e| map_client_error(e, session.timeout))
                        })
                    })
                    .await;
                    (i, key, r)
                });
            }
            let mut got = Vec::with_capacity(chunk.len());
            while let Some(joined) = set.join_next().await {
                got.push(joined.map_err(|e| backend(format!("a listing task failed: {e}")))?);
            }
            got.sort_by_key(|(i, _, _)| *i);
            for (_, key, r) in got {
                let meta = match r {
                    Ok(m) => m,
                    // Deleted while we listed.
                    Err(e) if e.kind() == StoreErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                let Some(rel) = key.strip_prefix(&self.prefix) else {
                    continue;
                };
                let Ok(path) = SecretPath::parse(rel) else {
                    tracing::debug!(store = STORE, key = %key, "skipping a key that is not a broker path");
                    continue;
                };
                let live = meta
                    .versions
                    .get(&meta.current_version.to_string())
                    .is_some_and(|v| !v.destroyed && v.deletion_time.is_empty());
                if !path.is_within(scope) || meta.current_version == 0 || !live {
                    continue;
                }
                let updated = meta
                    .versions
                    .get(&meta.current_version.to_string())
                    .and_then(|v| kv::parse_time(&v.created_time))
                    .or_else(|| kv::parse_time(&meta.updated_time))
                    .unwrap_or(crate::store::Timestamp(0));
                out.push(SecretMeta {
                    path,
                    version: meta.current_version,
                    updated_at: updated,
                    labels: meta
                        .custom_metadata
                        .unwrap_or_default()
                        .into_iter()
                        .collect(),
                });
            }
        }
        Ok(super::settle_listing(out))
    }

    async fn delete(&self, path: &SecretPath) -> Result<(), StoreError> {
        let key = self.key(path);
        if self.metadata(&key).await?.is_none() {
            return Err(StoreError::NotFound {
                store: STORE,
                path: path.as_str().to_owned(),
            });
        }
        // Idempotent, so safe to retry.
        let key = &key;
        retry_read(|| {
            self.session.with_login(|login| async move {
                vaultrs::kv2::delete_metadata(&*login.client, &self.mount, key)
                    .await
                    .map_err(|e| map_client_error(e, self.session.timeout))
            })
        })
        .await
    }

    /// The token looks itself up; a token that died since the last upkeep
    /// step is replaced first (see `Session::with_login`), so a rollover
    /// never reads as unready.
    async fn health(&self) -> Result<(), StoreError> {
        self.session
            .with_login(|login| async move {
                vaultrs::token::lookup_self(&*login.client)
                    .await
                    .map(|_| ())
                    .map_err(|e| map_client_error(e, self.session.timeout))
            })
            .await
    }
}

impl VaultStore {
    async fn set_labels(&self, key: &str, labels: &Labels, version: u64) -> Result<(), StoreError> {
        // Setting the same metadata twice is harmless, so a refused (dead
        // token) attempt may be repeated.
        self.session
            .with_login(|login| async move {
                let mut opts = vaultrs::api::kv2::requests::SetSecretMetadataRequest::builder();
                opts.custom_metadata(
                    labels
                        .clone()
                        .into_iter()
                        .collect::<std::collections::HashMap<_, _>>(),
                );
                vaultrs::kv2::set_metadata(&*login.client, &self.mount, key, Some(&mut opts))
                    .await
                    .map_err(|e| map_client_error(e, self.session.timeout))
            })
            .await
            .map_err(|e| {
                StoreError::Backend {
                    store: STORE,
                    detail: format!(
                        "version {version} of `{key}` was written with its labels, but the copy listings show was not updated ({e}); write it again"
                    ),
                }
            })
    }
}

fn exists(path: &SecretPath) -> StoreError {
    StoreError::Exists {
        store: STORE,
        path: path.as_str().to_owned(),
    }
}

fn backend(detail: impl Into<String>) -> StoreError {
    StoreError::Backend {
        store: STORE,
        detail: detail.into(),
    }
}

/// Runs a read, retrying with backoff while the connection is refused.
/// Only for calls that change nothing (or are idempotent).
async fn retry_read<T, F, Fut>(mut f: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut pause = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        match f().await {
            Err(e) if e.kind() == StoreErrorKind::Unavailable && attempt < READ_ATTEMPTS => {
                tokio::time::sleep(pause).await;
                pause *= 4;
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// Maps an HTTP status from Vault. `key` names the secret for 404s.
fn by_status(status: u16, msg: &str, key: &str) -> StoreError {
    let said = if msg.is_empty() {
        String::new()
    } else {
        format!(" ({msg})")
    };
    match status {
        404 => StoreError::NotFound {
            store: STORE,
            path: key.to_owned(),
        },
        401 | 403 => StoreError::Denied {
            store: STORE,
            detail: format!("vault answered {status}{said}; {POLICY_HINT}"),
        },
        400 | 413 | 422 => StoreError::Invalid {
            store: STORE,
            detail: format!("vault answered {status}{said}"),
        },
        // 429: rate limited; 412: a performance standby not yet caught up;
        // 502-504: sealed, standby, or a proxy in front of Vault.
        412 | 429 | 502..=504 => StoreError::Unavailable {
            store: STORE,
            detail: format!("vault answered {status}{said}"),
        },
        // vaultrs calls: the client followed nothing (see `https`), and the
        // location is not at hand here; the status says enough.
        300..=399 => super::redirected(STORE, status, None),
        _ => backend(format!("vault answered {status}{said}")),
    }
}

/// Maps a transport failure (shared with the other HTTP store).
fn map_reqwest(e: &reqwest::Error, after: Duration) -> StoreError {
    super::map_reqwest(STORE, "", e, after)
}

/// Maps a vaultrs failure. Only `Display` of vaultrs errors is used: some
/// variants carry response bodies in fields `Debug` would print.
fn map_client_error(e: ClientError, after: Duration) -> StoreError {
    match e {
        ClientError::APIError { code, errors } => by_status(code, &errors.join("; "), ""),
        ClientError::RestClientError { source } => match source {
            rustify::errors::ClientError::RequestError { source, .. } => {
                match source.downcast_ref::<reqwest::Error>() {
                    Some(r) => map_reqwest(r, after),
                    None => StoreError::Unavailable {
                        store: STORE,
                        detail: format!("request failed: {source}"),
                    },
                }
            }
            rustify::errors::ClientError::ServerResponseError { code, .. } => {
                by_status(code, "", "")
            }
            other => backend(format!("unexpected answer: {other}")),
        },
        other => backend(other.to_string()),
    }
}

#[cfg(test)]
mod tests;
