//! The `gcp` store: Google Secret Manager, one secret per broker path, with
//! the secret id encoded reversibly from `{prefix}{path}` (see
//! [`encode`](super::encode): ids allow only `[A-Za-z0-9_-]`, at most 255;
//! longer paths get a digest id).
//!
//! - Values are the payload bytes of secret versions.
//! - Versions: Secret Manager numbers a secret's versions 1, 2, 3… itself,
//!   and a deleted secret is gone with its versions, so a re-created path
//!   starts at 1 again: the broker's version *is* the version number. The
//!   current version is `latest` (the newest enabled one).
//! - Write-only: `put` decides create-or-update from the secret's metadata
//!   (`GetSecret`), adds a version (`AddSecretVersion`) and updates the
//!   annotations; `list` reads secret metadata and `versions/latest`
//!   metadata (`GetSecretVersion`, not `AccessSecretVersion`); `delete` is
//!   `DeleteSecret`. Only `get` accesses a payload.
//! - The full path is kept in the annotation `secret-broker-path` and the
//!   labels, as JSON, in `secret-broker-labels` (GCP *labels* allow only
//!   lowercase `[a-z0-9_-]`, 63 characters; annotations take any text, 16
//!   KiB in all). Each secret also gets the GCP label
//!   `managed-by=secret-broker`, so IAM conditions and filters can find them.
//!   Annotations belong to the secret and payloads to its versions, and no
//!   call sets both, so the annotation `secret-broker-labels-of` seals the
//!   labels to the version written with them (see
//!   [`label_seal`](super::label_seal)): a write sets the new labels sealed
//!   `pending` (one `UpdateSecret`, or the `CreateSecret`), adds the
//!   version, then seals; a read serves a value only under its own seal,
//!   and otherwise reads again and then fails closed.
//! - Retries: only idempotent calls (reads, `DeleteSecret`, `UpdateSecret`)
//!   are retried, by the client's AIP-194 policy, within `timeout`;
//!   `CreateSecret` and `AddSecretVersion` never are, so a write is never
//!   applied twice.

mod errors;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt};
use google_cloud_secretmanager_v1::client::SecretManagerService;
use google_cloud_secretmanager_v1::model::{
    Replication, Secret, SecretPayload, SecretVersion, replication,
};

use self::errors::IAM_HINT;
use super::encode::{self, Alphabet};
use crate::config::{GcpConfig, GcpCredentials};
use crate::secret::{ScopePath, SecretBytes, SecretPath};
use crate::store::{
    Labels, PutOutcome, PutRequest, SecretMeta, Store, StoreError, StoreErrorKind, StoredSecret,
    Timestamp,
};

/// The backend name, as in config and errors.
const STORE: &str = "gcp";
/// The annotation holding the full path (prefix and path).
const PATH_ANNOTATION: &str = "secret-broker-path";
/// The annotation holding the labels as a JSON object.
const LABELS_ANNOTATION: &str = "secret-broker-labels";
/// The annotation sealing the labels to the version written with them.
const SEAL_ANNOTATION: &str = "secret-broker-labels-of";
/// The GCP label marking the broker's secrets.
const MANAGED_LABEL: (&str, &str) = ("managed-by", "secret-broker");
/// How often a write starts over after losing a race with a delete.
const MAX_ATTEMPTS: usize = 8;
/// Secrets whose version metadata a listing asks for at once.
const LIST_CONCURRENCY: usize = 16;

/// The Google Secret Manager store (backend `gcp`).
pub struct GcpStore {
    client: SecretManagerService,
    project: String,
    prefix: String,
    timeout: Duration,
    /// Serializes this broker's writes of one path (see `WriteLocks`).
    write_locks: super::WriteLocks,
}

impl fmt::Debug for GcpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SECURITY: the client holds the credentials; not printed.
        f.debug_struct("GcpStore")
            .field("project", &self.project)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The version number at the end of a version name (`…/versions/7`).
fn version_number(name: &str) -> Option<u64> {
    name.rsplit_once("/versions/")?.1.parse().ok()
}

fn millis(t: Option<&google_cloud_wkt::Timestamp>) -> Timestamp {
    t.and_then(|t| {
        let ms = t
            .seconds()
            .checked_mul(1000)?
            .checked_add(i64::from(t.nanos()) / 1_000_000)?;
        u64::try_from(ms).ok()
    })
    .map_or(Timestamp(0), Timestamp)
}

/// The broker labels kept in a secret's annotations.
fn labels_of(secret: &Secret) -> Labels {
    secret
        .annotations
        .get(LABELS_ANNOTATION)
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default()
}

impl GcpStore {
    /// Builds the client and checks it can list. An unreachable endpoint is
    /// not fatal (the broker starts unready); refused credentials are.
    pub async fn connect(config: &GcpConfig) -> Result<Self, StoreError> {
        // The client's HTTP stack (reqwest, rustls without a built-in
        // provider) uses the process default: make it *ring*, as the rest
        // of the broker. An error means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = config.remote.timeout;
        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_delay(Duration::from_millis(100))
            .with_maximum_delay(Duration::from_secs(1))
            .build()
            .map_err(|e| StoreError::Invalid {
                store: STORE,
                detail: format!("cannot configure retries: {e}"),
            })?;
        let mut builder = SecretManagerService::builder()
            .with_retry_policy(Aip194Strict.with_attempt_limit(3).with_time_limit(timeout))
            .with_backoff_policy(backoff);
        // SECURITY: Google's reqwest client follows redirects by default; a
        // 307/308 would send an `AddSecretVersion` body (a value) wherever
        // the answer points. This switch is `doc(hidden)` in gax (pinned by
        // Cargo.lock); `a_redirect_is_refused_not_followed` (tests/store_refusals.rs) holds it.
        builder = google_cloud_gax::client_builder::internal::with_follow_redirects(builder, false);
        if let Some(e) = &config.endpoint {
            builder = builder.with_endpoint(e.clone());
        }
        if config.credentials == GcpCredentials::Anonymous {
            builder = builder.with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            );
        }
        let client = builder.build().await.map_err(|e| StoreError::Denied {
            store: STORE,
            detail: format!("cannot set up the Google client ({e}); {IAM_HINT}"),
        })?;
        let store = Self {
            client,
            project: config.project.clone(),
            prefix: config.remote.prefix.clone(),
            timeout,
            write_locks: super::WriteLocks::default(),
        };
        super::start_unready_if_unreachable(STORE, store.health().await)?;
        Ok(store)
    }

    /// Runs one client call within the store timeout, mapping its failure.
    async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = google_cloud_secretmanager_v1::Result<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(errors::map(&e, what, self.timeout)),
            Err(_) => Err(StoreError::Timeout {
                store: STORE,
                after: self.timeout,
            }),
        }
    }

    fn full(&self, path: &SecretPath) -> String {
        format!("{}{}", self.prefix, path.as_str())
    }

    /// `projects/P/secrets/ID` for `path`.
    fn secret_name(&self, path: &SecretPath) -> Result<String, StoreError> {
        let id = encode::name_for(Alphabet::Gcp, &self.full(path)).ok_or_else(|| {
            StoreError::Invalid {
                store: STORE,
                detail: format!("`{}` cannot be a secret id", path.as_str()),
            }
        })?;
        Ok(format!("{}/secrets/{id}", self.parent()))
    }

    fn parent(&self) -> String {
        format!("projects/{}", self.project)
    }

    fn annotations(
        &self,
        path: &SecretPath,
        labels: &Labels,
        seal: &str,
    ) -> HashMap<String, String> {
        let mut a = HashMap::new();
        a.insert(PATH_ANNOTATION.to_owned(), self.full(path));
        a.insert(SEAL_ANNOTATION.to_owned(), seal.to_owned());
        if !labels.is_empty() {
            // A map of strings always serializes.
            if let Ok(j) = serde_json::to_string(labels) {
                a.insert(LABELS_ANNOTATION.to_owned(), j);
            }
        }
        a
    }

    /// Replaces the secret's annotations (labels, path and seal at once).
    async fn set_annotations(
        &self,
        name: &str,
        path: &SecretPath,
        annotations: HashMap<String, String>,
    ) -> Result<(), StoreError> {
        let update = Secret::new().set_name(name).set_annotations(annotations);
        self.call(
            path.as_str(),
            self.client
                .update_secret()
                .set_secret(update)
                .set_update_mask(google_cloud_wkt::FieldMask::default().set_paths(["annotations"]))
                .send(),
        )
        .await
        .map(|_| ())
    }

    /// One read: the latest value and the secret's metadata, and what the
    /// seal says.
    async fn read_once(
        &self,
        name: &str,
        path: &SecretPath,
    ) -> Result<(StoredSecret, super::Seal), StoreError> {
        let (value, meta) = tokio::join!(
            self.call(
                path.as_str(),
                self.client
                    .access_secret_version()
                    .set_name(format!("{name}/versions/latest"))
                    .send()
            ),
            self.call(
                path.as_str(),
                self.client.get_secret().set_name(name).send()
            )
        );
        let value = value?;
        let mut meta = meta?;
        if !meta.annotations.contains_key(SEAL_ANNOTATION) {
            // No seal: an unsealed (older) secret, or metadata read before a
            // first sealed write annotated it while the value is that
            // write's. Read it again, now strictly after the value: a write
            // seals `pending` before it adds, so still no seal means the
            // value predates any sealed write.
            meta = self
                .call(
                    path.as_str(),
                    self.client.get_secret().set_name(name).send(),
                )
                .await?;
        }
        let version = version_number(&value.name).ok_or_else(|| StoreError::Backend {
            store: STORE,
            detail: format!(
                "Google returned the version name `{}` without a number",
                value.name
            ),
        })?;
        let bytes = value.payload.map(|p| p.data).unwrap_or_default();
        let labels = labels_of(&meta);
        let seal = super::check_seal(
            meta.annotations.get(SEAL_ANNOTATION).map(String::as_str),
            version,
            &labels,
        );
        Ok((
            StoredSecret {
                version,
                value: SecretBytes::new(bytes.to_vec()),
                labels,
            },
            seal,
        ))
    }

    /// Adds a version; returns its number and creation time.
    async fn add_version(
        &self,
        name: &str,
        path: &SecretPath,
        value: &SecretBytes,
    ) -> Result<(u64, Timestamp), StoreError> {
        // The client serializes from `Bytes`; this copy is dropped (not
        // zeroized: the SDK owns its buffers) once the call returns.
        let payload = SecretPayload::new().set_data(value.expose_secret().to_vec());
        let v: SecretVersion = self
            .call(
                path.as_str(),
                self.client
                    .add_secret_version()
                    .set_parent(name)
                    .set_payload(payload)
                    .send(),
            )
            .await?;
        let n = version_number(&v.name).ok_or_else(|| StoreError::Backend {
            store: STORE,
            detail: format!(
                "Google returned the version name `{}` without a number",
                v.name
            ),
        })?;
        let at = match millis(v.create_time.as_ref()) {
            Timestamp(0) => Timestamp::now(),
            t => t,
        };
        Ok((n, at))
    }

    /// The `latest` version's metadata, or `None` if there is none.
    async fn latest(&self, name: &str, what: &str) -> Result<Option<SecretVersion>, StoreError> {
        let r = self
            .call(
                what,
                self.client
                    .get_secret_version()
                    .set_name(format!("{name}/versions/latest"))
                    .send(),
            )
            .await;
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == StoreErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn exists(path: &SecretPath) -> StoreError {
        StoreError::Exists {
            store: STORE,
            path: path.as_str().to_owned(),
        }
    }

    /// The broker path of a listed secret inside `scope`, if it is ours.
    fn path_of(&self, secret: &Secret, scope: &ScopePath) -> Option<SecretPath> {
        let id = secret.name.rsplit_once("/secrets/")?.1;
        let tagged = secret.annotations.get(PATH_ANNOTATION).map(String::as_str);
        let full = encode::full_path_of(Alphabet::Gcp, id, tagged)?;
        let path = SecretPath::parse(full.strip_prefix(&self.prefix)?).ok()?;
        path.is_within(scope).then_some(path)
    }
}

#[async_trait]
impl Store for GcpStore {
    fn backend(&self) -> &'static str {
        STORE
    }

    async fn put(&self, path: &SecretPath, req: PutRequest) -> Result<PutOutcome, StoreError> {
        let name = self.secret_name(path)?;
        let _serialized = self.write_locks.lock(path).await;
        // SECURITY: the labels go on first, sealed `pending`, and the value
        // is served only once they are sealed to its version below.
        let pending = self.annotations(path, &req.labels, super::PENDING_SEAL);
        for _ in 0..MAX_ATTEMPTS {
            let meta = self
                .call(
                    path.as_str(),
                    self.client.get_secret().set_name(&name).send(),
                )
                .await;
            match meta {
                Err(e) if e.kind() == StoreErrorKind::NotFound => {
                    let secret = Secret::new()
                        .set_replication(
                            Replication::new().set_automatic(replication::Automatic::new()),
                        )
                        .set_labels([MANAGED_LABEL])
                        .set_annotations(pending.clone());
                    let id = name.rsplit_once("/secrets/").map_or("", |(_, id)| id);
                    let created = self
                        .call(
                            path.as_str(),
                            self.client
                                .create_secret()
                                .set_parent(self.parent())
                                .set_secret_id(id)
                                .set_secret(secret)
                                .send(),
                        )
                        .await;
                    match created {
                        Ok(_) => {}
                        Err(e) if e.kind() == StoreErrorKind::Exists => {
                            if req.create_only {
                                return Err(e);
                            }
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
                Ok(secret) => {
                    if req.create_only && self.latest(&name, path.as_str()).await?.is_some() {
                        return Err(Self::exists(path));
                    }
                    // Labels kept (and sealed): the old version stays
                    // readable with them until the new one is sealed.
                    let unsealed = |a: &HashMap<String, String>| {
                        let mut a = a.clone();
                        a.remove(SEAL_ANNOTATION);
                        a
                    };
                    let kept = secret.annotations.contains_key(SEAL_ANNOTATION)
                        && unsealed(&secret.annotations) == unsealed(&pending);
                    if !kept {
                        match self.set_annotations(&name, path, pending.clone()).await {
                            Err(e) if e.kind() == StoreErrorKind::NotFound => continue,
                            r => r?,
                        }
                    }
                }
            }
            let (n, at) = match self.add_version(&name, path, &req.value).await {
                // Deleted between our look and our write: start over.
                Err(e) if e.kind() == StoreErrorKind::NotFound => continue,
                r => r?,
            };
            let sealed = self.annotations(path, &req.labels, &super::label_seal(n, &req.labels));
            self.set_annotations(&name, path, sealed)
                .await
                .map_err(|e| StoreError::Backend {
                    store: STORE,
                    detail: format!(
                        "version {n} of `{}` was written but not sealed to its labels ({e}); it is not served until it is written again",
                        path.as_str()
                    ),
                })?;
            return Ok(PutOutcome {
                version: n,
                created: n == 1,
                created_at: at,
            });
        }
        Err(StoreError::Unavailable {
            store: STORE,
            detail: format!(
                "`{}` is being deleted and written too often to write in {MAX_ATTEMPTS} tries",
                path.as_str()
            ),
        })
    }

    async fn get(&self, path: &SecretPath) -> Result<StoredSecret, StoreError> {
        let name = self.secret_name(path)?;
        super::read_sealed(STORE, path, || self.read_once(&name, path)).await
    }

    async fn list(&self, scope: &ScopePath) -> Result<Vec<SecretMeta>, StoreError> {
        let mut ours: Vec<(String, SecretPath, Labels)> = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .call(
                    scope.as_str(),
                    self.client
                        .list_secrets()
                        .set_parent(self.parent())
                        .set_page_size(250)
                        .set_page_token(token.clone())
                        .send(),
                )
                .await?;
            for s in &page.secrets {
                if let Some(path) = self.path_of(s, scope) {
                    ours.push((s.name.clone(), path, labels_of(s)));
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let mut out = Vec::with_capacity(ours.len());
        for chunk in ours.chunks(LIST_CONCURRENCY) {
            let latest = chunk
                .iter()
                .map(|(name, path, _)| self.latest(name, path.as_str()));
            let found = futures::future::join_all(latest).await;
            for ((_, path, labels), v) in chunk.iter().zip(found) {
                // No version yet (a write in progress), or deleted since.
                let Some(v) = v? else { continue };
                let Some(version) = version_number(&v.name) else {
                    continue;
                };
                out.push(SecretMeta {
                    path: path.clone(),
                    version,
                    updated_at: millis(v.create_time.as_ref()),
                    labels: labels.clone(),
                });
            }
        }
        Ok(super::settle_listing(out))
    }

    async fn delete(&self, path: &SecretPath) -> Result<(), StoreError> {
        let name = self.secret_name(path)?;
        self.call(
            path.as_str(),
            self.client.delete_secret().set_name(&name).send(),
        )
        .await
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.call(
            "",
            self.client
                .list_secrets()
                .set_parent(self.parent())
                .set_page_size(1)
                .send(),
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers_come_from_version_names() {
        assert_eq!(version_number("projects/p/secrets/s/versions/7"), Some(7));
        assert_eq!(version_number("projects/p/secrets/s/versions/latest"), None);
        assert_eq!(version_number("projects/p/secrets/s"), None);
    }

    #[test]
    fn labels_round_trip_through_annotations() {
        let labels: Labels = [
            ("owner/name".to_owned(), "a.b-c_d".to_owned()),
            ("Team".to_owned(), "Ünïcode ok".to_owned()),
        ]
        .into();
        let mut a = HashMap::new();
        a.insert(
            LABELS_ANNOTATION.to_owned(),
            serde_json::to_string(&labels).unwrap(),
        );
        let s = Secret::new().set_annotations(a);
        assert_eq!(labels_of(&s), labels);
        assert!(labels_of(&Secret::new()).is_empty());
    }

    #[test]
    fn timestamps_are_millis() {
        let t = google_cloud_wkt::Timestamp::new(1_795_309_323, 456_000_000).unwrap();
        assert_eq!(millis(Some(&t)), Timestamp(1_795_309_323_456));
        assert_eq!(millis(None), Timestamp(0));
    }
}
