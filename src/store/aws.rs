//! The `aws` store: AWS Secrets Manager, one secret per broker path, named
//! `{prefix}{path}` (Secrets Manager names allow every path character).
//!
//! - Values are always `SecretBinary`: values are bytes, and one encoding
//!   keeps reads exact. Readers outside the broker see binary secrets.
//! - Versions: version `N` of a path is the Secrets Manager version whose
//!   id (the `ClientRequestToken` we send) is `sbv-` and `N` zero-padded to
//!   28 digits, e.g. `sbv-0000000000000000000000000003`. The current version
//!   is the one staged `AWSCURRENT`; older ones keep `AWSPREVIOUS` or no
//!   stage, as Secrets Manager does. A write reads the current version from
//!   `DescribeSecret` (metadata, never the value) and sends `N+1` as the
//!   token: Secrets Manager refuses a second, different value under the
//!   same token, so two racing writers get distinct versions (the loser
//!   describes again and takes the next number). A delete is
//!   `ForceDeleteWithoutRecovery`, so a re-created path starts at 1.
//! - The broker path is kept in the tag `secret-broker:path` and each label
//!   `k` in the tag `secret-broker:label:k`. Tags belong to the secret and
//!   values to its versions, and no call sets both on an existing secret,
//!   so the tag `secret-broker:labels-of` seals the labels to the version
//!   they were written with (see [`label_seal`](super::label_seal)): a write
//!   tags the new labels with the seal `pending`, puts the value, then
//!   seals; a read serves a value only under its own seal, and otherwise
//!   reads again and then fails closed. A new secret gets value, labels and
//!   seal in one `CreateSecret`.
//! - Retries are the SDK's standard mode. They are safe on every call we
//!   make: our writes carry a deterministic `ClientRequestToken`, so a
//!   replayed write is the same version, and tagging is idempotent.
//! - Limits of Secrets Manager apply: values of 1 to 65536 bytes (an empty
//!   value is refused), `prefix` + path at most 512 characters, at most 48
//!   labels (50 tags, less the path and the seal), tag values of letters, digits, spaces and `_.:/=+-@`.

mod errors;

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, Tag};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_types::Blob;

use self::errors::{Call, map_sdk};
use crate::config::AwsConfig;
use crate::secret::{ScopePath, SecretBytes, SecretPath};
use crate::store::{
    Labels, PutOutcome, PutRequest, SecretMeta, Store, StoreError, StoreErrorKind, StoredSecret,
    Timestamp,
};

/// The backend name, as in config and errors.
const STORE: &str = "aws";
/// The tag holding the broker path.
const PATH_TAG: &str = "secret-broker:path";
/// The prefix of the tags holding labels.
const LABEL_TAG: &str = "secret-broker:label:";
/// The tag sealing the labels to the version written with them.
const SEAL_TAG: &str = "secret-broker:labels-of";
/// How our version ids start.
const VERSION_ID: &str = "sbv-";
/// Longest Secrets Manager name.
const MAX_NAME: usize = 512;
/// How often a write describes again after losing a race.
const MAX_ATTEMPTS: usize = 32;

/// The version id (and `ClientRequestToken`) of version `n`: 32 characters,
/// the minimum Secrets Manager accepts.
fn version_id(n: u64) -> String {
    format!("{VERSION_ID}{n:028}")
}

/// The version number in one of our version ids.
fn parse_version_id(id: &str) -> Option<u64> {
    id.strip_prefix(VERSION_ID)?.parse().ok()
}

/// The current version among `versions` (id → stages): ours staged
/// `AWSCURRENT`, else the highest of ours, else how many there are.
fn current_version(versions: Option<&HashMap<String, Vec<String>>>) -> u64 {
    let Some(v) = versions else { return 0 };
    let current = v
        .iter()
        .find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT"))
        .and_then(|(id, _)| parse_version_id(id));
    current
        .or_else(|| v.keys().filter_map(|id| parse_version_id(id)).max())
        .unwrap_or(v.len() as u64)
}

/// The AWS Secrets Manager store (backend `aws`).
pub struct AwsStore {
    client: Client,
    prefix: String,
    timeout: Duration,
    region: Option<String>,
    /// Serializes this broker's writes of one path (see `WriteLocks`).
    write_locks: super::WriteLocks,
}

impl fmt::Debug for AwsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SECURITY: the SDK client holds the credential chain; not printed.
        f.debug_struct("AwsStore")
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AwsStore {
    /// Builds the client from the AWS default chain and checks it can list.
    /// An unreachable endpoint is not fatal (the broker starts unready);
    /// refused credentials are.
    pub async fn connect(config: &AwsConfig) -> Result<Self, StoreError> {
        let timeout = config.remote.timeout;
        let sdk = sdk_config(
            config.region.as_deref(),
            config.endpoint_url.as_deref(),
            timeout,
        )
        .await;
        if sdk.region().is_none() {
            return Err(StoreError::Invalid {
                store: STORE,
                detail: "no AWS region: set store.region or $AWS_REGION".to_owned(),
            });
        }
        let store = Self {
            client: Client::new(&sdk),
            prefix: config.remote.prefix.clone(),
            timeout,
            region: sdk.region().map(ToString::to_string),
            write_locks: super::WriteLocks::default(),
        };
        super::start_unready_if_unreachable(STORE, store.health().await)?;
        Ok(store)
    }

    fn name(&self, path: &SecretPath) -> Result<String, StoreError> {
        let name = format!("{}{}", self.prefix, path.as_str());
        if name.len() > MAX_NAME {
            return Err(StoreError::Invalid {
                store: STORE,
                detail: format!(
                    "`{}` with prefix `{}` is longer than the {MAX_NAME} characters a secret name may have",
                    path.as_str(),
                    self.prefix
                ),
            });
        }
        Ok(name)
    }

    fn tags(path: &SecretPath, labels: &Labels, seal: &str) -> Vec<Tag> {
        [tag(PATH_TAG, path.as_str()), tag(SEAL_TAG, seal)]
            .into_iter()
            .chain(
                labels
                    .iter()
                    .map(|(k, v)| tag(&format!("{LABEL_TAG}{k}"), v)),
            )
            .collect()
    }

    /// Before a new version is put: makes the label tags equal `labels`,
    /// sealed `pending`, unless they already are `labels` under a seal (a
    /// write that keeps the labels leaves them; the old version stays
    /// readable with them until the new one is sealed). `old` are the
    /// current tags. The new tags go on first and the stale ones come off
    /// after: every state in between is sealed `pending`, so unreadable.
    async fn prepare_labels(
        &self,
        name: &str,
        path: &SecretPath,
        old: &[Tag],
        labels: &Labels,
    ) -> Result<(), StoreError> {
        let old_labels = labels_of(old);
        let sealed = old.iter().any(|t| t.key() == Some(SEAL_TAG));
        if &old_labels == labels && sealed && old.iter().any(|t| t.key() == Some(PATH_TAG)) {
            return Ok(());
        }
        self.client
            .tag_resource()
            .secret_id(name)
            .set_tags(Some(Self::tags(path, labels, super::PENDING_SEAL)))
            .send()
            .await
            .map_err(|e| map_sdk(e, Call::Write, path, self.timeout))?;
        let stale: Vec<String> = old_labels
            .keys()
            .filter(|k| !labels.contains_key(*k))
            .map(|k| format!("{LABEL_TAG}{k}"))
            .collect();
        if !stale.is_empty() {
            self.client
                .untag_resource()
                .secret_id(name)
                .set_tag_keys(Some(stale))
                .send()
                .await
                .map_err(|e| map_sdk(e, Call::Write, path, self.timeout))?;
        }
        Ok(())
    }

    /// After version `version` was put: seals `labels` to it, which makes
    /// it readable.
    async fn seal(
        &self,
        name: &str,
        path: &SecretPath,
        labels: &Labels,
        version: u64,
    ) -> Result<(), StoreError> {
        self.client
            .tag_resource()
            .secret_id(name)
            .tags(tag(SEAL_TAG, &super::label_seal(version, labels)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Backend {
                store: STORE,
                detail: format!(
                    "version {version} of `{}` was written but not sealed to its labels ({}); it is not served until it is written again",
                    path.as_str(),
                    map_sdk(e, Call::Write, path, self.timeout)
                ),
            })
    }

    /// One read: the value and the secret's metadata, and what the seal says.
    async fn read_once(
        &self,
        name: &str,
        path: &SecretPath,
    ) -> Result<(StoredSecret, super::Seal), StoreError> {
        let (value, desc) = tokio::join!(
            self.client.get_secret_value().secret_id(name).send(),
            self.client.describe_secret().secret_id(name).send()
        );
        let value = value.map_err(|e| map_sdk(e, Call::Read, path, self.timeout))?;
        let mut desc = desc.map_err(|e| map_sdk(e, Call::Read, path, self.timeout))?;
        let version = value
            .version_id()
            .and_then(parse_version_id)
            .unwrap_or_else(|| current_version(desc.version_ids_to_stages()));
        if seal_of(desc.tags()).is_none() {
            // No seal: an unsealed (older) secret, or a description made
            // before a first sealed write tagged it while the value is that
            // write's. Describe again, now strictly after the value read: a
            // write tags `pending` before it puts, so still no seal means
            // the value predates any sealed write.
            desc = self
                .client
                .describe_secret()
                .secret_id(name)
                .send()
                .await
                .map_err(|e| map_sdk(e, Call::Read, path, self.timeout))?;
        }
        let bytes = match (value.secret_binary, value.secret_string) {
            (Some(b), _) => SecretBytes::new(b.into_inner()),
            // Written outside the broker as a string: its bytes.
            (None, Some(s)) => SecretBytes::new(zeroize::Zeroizing::new(s).as_bytes().to_vec()),
            (None, None) => {
                return Err(StoreError::NotFound {
                    store: STORE,
                    path: path.as_str().to_owned(),
                });
            }
        };
        let labels = labels_of(desc.tags());
        let seal = super::check_seal(seal_of(desc.tags()), version, &labels);
        Ok((
            StoredSecret {
                version,
                value: bytes,
                labels,
            },
            seal,
        ))
    }
}

/// The AWS SDK config from the default chain (credentials, and the region
/// unless `region` names it), with the broker's TLS, timeouts and retries;
/// shared by the `aws` store and `[uploads]` S3 signing.
pub(crate) async fn sdk_config(
    region: Option<&str>,
    endpoint_url: Option<&str>,
    timeout: Duration,
) -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeout)
                .operation_attempt_timeout(timeout)
                .operation_timeout(timeout)
                .build(),
        )
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(1)),
        );
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r.to_owned()));
    }
    if let Some(e) = endpoint_url {
        loader = loader.endpoint_url(e.to_owned());
    }
    loader.load().await
}

fn seal_of(tags: &[Tag]) -> Option<&str> {
    tags.iter()
        .find(|t| t.key() == Some(SEAL_TAG))
        .and_then(|t| t.value())
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

fn labels_of(tags: &[Tag]) -> Labels {
    tags.iter()
        .filter_map(|t| {
            let k = t.key()?.strip_prefix(LABEL_TAG)?;
            Some((k.to_owned(), t.value().unwrap_or("").to_owned()))
        })
        .collect()
}

fn exists(path: &SecretPath) -> StoreError {
    StoreError::Exists {
        store: STORE,
        path: path.as_str().to_owned(),
    }
}

#[async_trait]
impl Store for AwsStore {
    fn backend(&self) -> &'static str {
        STORE
    }

    async fn put(&self, path: &SecretPath, req: PutRequest) -> Result<PutOutcome, StoreError> {
        let name = self.name(path)?;
        let _serialized = self.write_locks.lock(path).await;
        if req.value.is_empty() {
            return Err(StoreError::Invalid {
                store: STORE,
                detail:
                    "AWS Secrets Manager cannot hold an empty value (a secret is 1 to 65536 bytes)"
                        .to_owned(),
            });
        }
        for _ in 0..MAX_ATTEMPTS {
            let described = self.client.describe_secret().secret_id(&name).send().await;
            match described {
                Err(e) => {
                    let e = map_sdk(e, Call::Read, path, self.timeout);
                    if e.kind() != StoreErrorKind::NotFound {
                        return Err(e);
                    }
                    // SECURITY: the SDK copies the value into its request
                    // buffer; ours is only borrowed here.
                    let created = self
                        .client
                        .create_secret()
                        .name(&name)
                        .client_request_token(version_id(1))
                        .secret_binary(Blob::new(req.value.expose_secret().to_vec()))
                        // One call: value, labels and their seal together.
                        .set_tags(Some(Self::tags(
                            path,
                            &req.labels,
                            &super::label_seal(1, &req.labels),
                        )))
                        .send()
                        .await;
                    match created {
                        Ok(_) => {
                            return Ok(PutOutcome {
                                version: 1,
                                created: true,
                                created_at: Timestamp::now(),
                            });
                        }
                        Err(e) => {
                            let e = map_sdk(e, Call::Write, path, self.timeout);
                            match e.kind() {
                                // Someone created it first.
                                StoreErrorKind::Exists if req.create_only => return Err(e),
                                StoreErrorKind::Exists => continue,
                                _ => return Err(e),
                            }
                        }
                    }
                }
                Ok(desc) => {
                    if req.create_only {
                        return Err(exists(path));
                    }
                    if desc.deleted_date().is_some() {
                        return Err(StoreError::Unavailable {
                            store: STORE,
                            detail: format!(
                                "secret `{name}` is scheduled for deletion outside the broker; restore or force-delete it"
                            ),
                        });
                    }
                    let next = current_version(desc.version_ids_to_stages()) + 1;
                    // SECURITY: labels before the value, sealed `pending`;
                    // the value is served only once sealed below.
                    self.prepare_labels(&name, path, desc.tags(), &req.labels)
                        .await?;
                    let put = self
                        .client
                        .put_secret_value()
                        .secret_id(&name)
                        .client_request_token(version_id(next))
                        .secret_binary(Blob::new(req.value.expose_secret().to_vec()))
                        .send()
                        .await;
                    match put {
                        Ok(_) => {
                            self.seal(&name, path, &req.labels, next).await?;
                            return Ok(PutOutcome {
                                version: next,
                                created: false,
                                created_at: Timestamp::now(),
                            });
                        }
                        Err(e) => {
                            let e = map_sdk(e, Call::Write, path, self.timeout);
                            if e.kind() == StoreErrorKind::Exists {
                                // Version `next` was taken by another writer
                                // (whose seal, if our labels replaced its
                                // labels, no longer matches: unreadable
                                // until one of us seals again).
                                tokio::task::yield_now().await;
                                continue;
                            }
                            return Err(e);
                        }
                    }
                }
            }
        }
        Err(StoreError::Unavailable {
            store: STORE,
            detail: format!(
                "`{}` is being written too often to get a version in {MAX_ATTEMPTS} tries",
                path.as_str()
            ),
        })
    }

    async fn get(&self, path: &SecretPath) -> Result<StoredSecret, StoreError> {
        let name = self.name(path)?;
        super::read_sealed(STORE, path, || self.read_once(&name, path)).await
    }

    async fn list(&self, scope: &ScopePath) -> Result<Vec<SecretMeta>, StoreError> {
        let name_prefix = format!("{}{}", self.prefix, scope.key_prefix());
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut req = self
                .client
                .list_secrets()
                .max_results(100)
                .set_next_token(next.take());
            if !name_prefix.is_empty() {
                // A prefix match, case-insensitive at AWS: we filter again.
                req = req.filters(
                    Filter::builder()
                        .key(FilterNameStringType::Name)
                        .values(&name_prefix)
                        .build(),
                );
            }
            let page = req
                .send()
                .await
                .map_err(|e| errors::map_list(e, scope, self.timeout))?;
            for s in page.secret_list() {
                let Some(name) = s.name() else { continue };
                if s.deleted_date().is_some() {
                    continue;
                }
                let tagged = s
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some(PATH_TAG))
                    .and_then(|t| t.value());
                let raw = tagged.or_else(|| name.strip_prefix(&self.prefix));
                let Some(path) = raw.and_then(|r| SecretPath::parse(r).ok()) else {
                    continue;
                };
                // The name is authoritative: a copied tag cannot alias.
                if name != format!("{}{}", self.prefix, path.as_str()) || !path.is_within(scope) {
                    continue;
                }
                let version = current_version(s.secret_versions_to_stages());
                if version == 0 {
                    continue;
                }
                let updated = s
                    .last_changed_date()
                    .or(s.created_date())
                    .and_then(|d| d.to_millis().ok())
                    .and_then(|ms| u64::try_from(ms).ok())
                    .map_or(Timestamp(0), Timestamp);
                out.push(SecretMeta {
                    path,
                    version,
                    updated_at: updated,
                    labels: labels_of(s.tags()),
                });
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(super::settle_listing(out))
    }

    async fn delete(&self, path: &SecretPath) -> Result<(), StoreError> {
        let name = self.name(path)?;
        // A forced delete of a missing secret succeeds; the contract wants
        // a 404, so ask the metadata first.
        self.client
            .describe_secret()
            .secret_id(&name)
            .send()
            .await
            .map_err(|e| map_sdk(e, Call::Read, path, self.timeout))?;
        self.client
            .delete_secret()
            .secret_id(&name)
            .force_delete_without_recovery(true)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| map_sdk(e, Call::Write, path, self.timeout))
    }

    async fn health(&self) -> Result<(), StoreError> {
        let mut req = self.client.list_secrets().max_results(1);
        if !self.prefix.is_empty() {
            req = req.filters(
                Filter::builder()
                    .key(FilterNameStringType::Name)
                    .values(&self.prefix)
                    .build(),
            );
        }
        req.send()
            .await
            .map(|_| ())
            .map_err(|e| errors::map_list(e, &ScopePath::root(), self.timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ids_round_trip_and_fit_the_token_rules() {
        for n in [1, 2, 99, u64::MAX] {
            let id = version_id(n);
            assert!((32..=64).contains(&id.len()), "{id}");
            assert_eq!(parse_version_id(&id), Some(n));
        }
        assert_eq!(parse_version_id("3f9a…-uuid"), None);
    }

    #[test]
    fn the_current_version_is_the_one_staged_current() {
        let mut v = HashMap::new();
        v.insert(version_id(3), vec!["AWSPREVIOUS".to_owned()]);
        v.insert(version_id(4), vec!["AWSCURRENT".to_owned()]);
        v.insert(version_id(2), vec![]);
        assert_eq!(current_version(Some(&v)), 4);
        v.insert("foreign-uuid".to_owned(), vec!["AWSCURRENT".to_owned()]);
        v.remove(&version_id(4));
        assert_eq!(current_version(Some(&v)), 3);
        assert_eq!(current_version(None), 0);
    }

    #[test]
    fn labels_live_in_prefixed_tags() {
        let path = SecretPath::parse("acme/db").unwrap();
        let labels: Labels = [("team".to_owned(), "db".to_owned())].into();
        let tags = AwsStore::tags(&path, &labels, "pending");
        assert_eq!(tags[0].key(), Some(PATH_TAG));
        assert_eq!(seal_of(&tags), Some("pending"));
        assert_eq!(labels_of(&tags), labels);
    }
}
