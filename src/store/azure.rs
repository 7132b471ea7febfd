//! The `azure` store: Azure Key Vault secrets over Key Vault's REST API
//! (`api-version=7.4`), one secret per broker path, named by encoding
//! `{prefix}{path}` into `[0-9a-z-]` (see [`encode`](super::encode); Key
//! Vault names fold case and allow 127 characters, longer paths get a
//! digest name).
//!
//! - Values: UTF-8 values are stored as they are (`contentType`
//!   `text/plain; charset=utf-8`); other bytes as standard base64 with
//!   `contentType` `application/octet-stream; base64`. Key Vault holds at
//!   most 25 KiB per value: larger writes are refused by the vault (`502`).
//! - Versions: Key Vault version ids are opaque; the broker's integer
//!   version is kept in the tag `sb-version` of each version. A write lists
//!   the versions (metadata: `GET /secrets/{name}/versions` never returns
//!   values), and sets `N+1`. Key Vault has no conditional write, so writes
//!   to one path are serialized inside the broker; two brokers writing one
//!   path at the same instant could both number a version `N+1`.
//! - Deletes: `DELETE /secrets/{name}` then purge (`DELETE
//!   /deletedsecrets/{name}`), so the name is free again and a re-created
//!   path starts at 1. The broker's identity needs the *purge* permission
//!   (`Microsoft.KeyVault/vaults/secrets/purge/action`); vaults with purge
//!   protection cannot be used (the delete fails, naming the permission).
//! - Tags: the full path in `sb-path` (`sb-path-2`, … past 256 characters),
//!   the version in `sb-version`, each label `k` in `sb-label-k`. Key Vault
//!   allows 15 tags per secret, so at most 13 labels (fewer for very long
//!   paths).
//! - Write-only: `put`, `list` and `delete` never call `GET
//!   /secrets/{name}` (the only call that returns a value).
//! - Auth: the vault's `401` challenge names the audience; tokens come from
//!   [`auth`]. The TLS stack is rustls on *ring* with the system roots
//!   (which honour `$SSL_CERT_FILE`), TLS 1.3 and 1.2 only. No value is
//!   sent before a token is in hand.
//!
//! The Azure SDK crates (`azure_security_keyvault_secrets`,
//! `azure_identity`) are not used: they bring `azure_core` and its own HTTP
//! and TLS stack, and their challenge handling refuses a vault not under
//! `vault.azure.net` unless a verification switch is turned off; talking
//! REST over the reqwest/rustls client the broker already has keeps the
//! TLS and auth paths identical in tests and production.

mod auth;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde::Deserialize;
use zeroize::Zeroizing;

use self::auth::{Source, Tokens, challenge_resource};
use super::encode::{self, Alphabet};
use crate::config::AzureConfig;
use crate::secret::{ScopePath, SecretBytes, SecretPath};
use crate::store::{
    Labels, PutOutcome, PutRequest, SecretMeta, Store, StoreError, StoreErrorKind, StoredSecret,
    Timestamp,
};

/// The backend name, as in config and errors.
const STORE: &str = "azure";
const API_VERSION: &str = "7.4";
const PATH_TAG: &str = "sb-path";
const VERSION_TAG: &str = "sb-version";
const LABEL_TAG: &str = "sb-label-";
const MAX_TAGS: usize = 15;
const MAX_TAG_VALUE: usize = 256;
const BASE64_TYPE: &str = "application/octet-stream; base64";
const TEXT_TYPE: &str = "text/plain; charset=utf-8";
/// What an operator should check when Key Vault refuses the broker.
const RBAC_HINT: &str = "check the broker's Azure credentials (store.credentials; workload identity, managed identity or the client secret) and its role on the vault (deploy/backend-policies/azure/writer-role.json)";

fn denied(what: &str) -> StoreError {
    StoreError::Denied {
        store: STORE,
        detail: format!("{what}; {RBAC_HINT}"),
    }
}

/// Maps a transport failure (shared with the other HTTP store).
fn map_reqwest(e: &reqwest::Error, after: Duration) -> StoreError {
    super::map_reqwest(STORE, "cannot reach Key Vault", e, after)
}

/// Key Vault's `{"error": {"code", "message"}}`, shortened.
fn said(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Outer {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    serde_json::from_slice::<Outer>(body)
        .map(|o| format!("{}: {}", o.error.code, o.error.message))
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

fn by_status(status: u16, body: &[u8], what: &str) -> StoreError {
    let said = said(body);
    match status {
        401 | 403 => denied(&format!("Key Vault refused the broker ({status} {said})")),
        404 => StoreError::NotFound {
            store: STORE,
            path: what.to_owned(),
        },
        400 | 409 | 413 => StoreError::Invalid {
            store: STORE,
            detail: format!("Key Vault refused `{what}` ({status} {said})"),
        },
        429 | 500..=599 => StoreError::Unavailable {
            store: STORE,
            detail: format!("Key Vault answered {status} {said}"),
        },
        _ => StoreError::Backend {
            store: STORE,
            detail: format!("unexpected answer from Key Vault for `{what}`: {status} {said}"),
        },
    }
}

#[derive(Debug, Default, Deserialize)]
struct Attributes {
    #[serde(default)]
    created: Option<u64>,
    #[serde(default)]
    updated: Option<u64>,
}

/// A secret or version as listed: metadata, never a value.
#[derive(Debug, Deserialize)]
struct Item {
    id: String,
    #[serde(default)]
    attributes: Attributes,
    #[serde(default)]
    tags: Option<HashMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    value: Vec<Item>,
    #[serde(default, rename = "nextLink")]
    next_link: Option<String>,
}

/// A string field zeroized on drop.
struct ZString(Zeroizing<String>);

impl<'de> Deserialize<'de> for ZString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self(Zeroizing::new(s)))
    }
}

/// `GET /secrets/{name}`: the only answer that carries a value.
#[derive(Deserialize)]
struct Bundle {
    value: ZString,
    #[serde(default, rename = "contentType")]
    content_type: Option<String>,
    #[serde(default)]
    tags: Option<HashMap<String, String>>,
}

/// A request body that zeroizes itself when the client is done with it.
struct ZeroBody(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for ZeroBody {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn version_of(tags: Option<&HashMap<String, String>>) -> Option<u64> {
    tags?.get(VERSION_TAG)?.parse().ok()
}

fn labels_of(tags: Option<&HashMap<String, String>>) -> Labels {
    tags.map(|t| {
        t.iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(LABEL_TAG)?.to_owned(), v.clone())))
            .collect()
    })
    .unwrap_or_default()
}

fn path_tag(tags: Option<&HashMap<String, String>>) -> Option<String> {
    let t = tags?;
    let mut out = t.get(PATH_TAG)?.clone();
    for i in 2.. {
        match t.get(&format!("{PATH_TAG}-{i}")) {
            Some(more) => out.push_str(more),
            None => break,
        }
    }
    Some(out)
}

/// The tags of version `version` of `full` with `labels`.
fn tags(full: &str, version: u64, labels: &Labels) -> Result<HashMap<String, String>, StoreError> {
    let mut t = HashMap::new();
    let chunks: Vec<&[u8]> = full.as_bytes().chunks(MAX_TAG_VALUE).collect();
    for (i, c) in chunks.iter().enumerate() {
        let key = if i == 0 {
            PATH_TAG.to_owned()
        } else {
            format!("{PATH_TAG}-{}", i + 1)
        };
        // Paths are ASCII: every chunk is UTF-8.
        t.insert(key, String::from_utf8_lossy(c).into_owned());
    }
    t.insert(VERSION_TAG.to_owned(), version.to_string());
    for (k, v) in labels {
        if v.len() > MAX_TAG_VALUE {
            return Err(StoreError::Invalid {
                store: STORE,
                detail: format!(
                    "label `{k}` is longer than the {MAX_TAG_VALUE} characters a Key Vault tag holds"
                ),
            });
        }
        t.insert(format!("{LABEL_TAG}{k}"), v.clone());
    }
    if t.len() > MAX_TAGS {
        return Err(StoreError::Invalid {
            store: STORE,
            detail: format!(
                "Key Vault holds {MAX_TAGS} tags per secret: at most {} labels for this path",
                MAX_TAGS.saturating_sub(chunks.len() + 1)
            ),
        });
    }
    Ok(t)
}

/// The JSON body of a write, in a buffer that is zeroized on drop.
fn write_body(
    value: &SecretBytes,
    tags: &HashMap<String, String>,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        value: &'a str,
        #[serde(rename = "contentType")]
        content_type: &'a str,
        tags: &'a HashMap<String, String>,
    }
    let bytes = value.expose_secret();
    let b64;
    let (text, content_type) = match std::str::from_utf8(bytes) {
        Ok(t) => (t, TEXT_TYPE),
        Err(_) => {
            b64 = Zeroizing::new(B64.encode(bytes));
            (b64.as_str(), BASE64_TYPE)
        }
    };
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 6 + 1024));
    serde_json::to_writer(
        &mut *out,
        &Body {
            value: text,
            content_type,
            tags,
        },
    )
    .map_err(|e| StoreError::Backend {
        store: STORE,
        detail: format!("cannot encode the request: {e}"),
    })?;
    Ok(out)
}

/// The Azure Key Vault store (backend `azure`).
pub struct AzureStore {
    http: reqwest::Client,
    vault_url: String,
    tokens: Tokens,
    /// The audience from the vault's challenge, once seen.
    resource: Mutex<Option<String>>,
    prefix: String,
    timeout: Duration,
    /// Per-name write locks (see the module docs on versions).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SECURITY: `tokens` prints its source kind only.
        f.debug_struct("AzureStore")
            .field("vault_url", &self.vault_url)
            .field("tokens", &self.tokens)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AzureStore {
    /// Builds the client and checks it can list. An unreachable vault is
    /// not fatal (the broker starts unready); refused credentials are.
    pub async fn connect(config: &AzureConfig) -> Result<Self, StoreError> {
        let timeout = config.remote.timeout;
        let store = Self {
            http: super::https::http_client(STORE, None, timeout)?,
            vault_url: config.vault_url.clone(),
            tokens: Tokens::new(Source::from_config(&config.credentials)?),
            resource: Mutex::new(None),
            prefix: config.remote.prefix.clone(),
            timeout,
            locks: Mutex::new(HashMap::new()),
        };
        super::start_unready_if_unreachable(STORE, store.health().await)?;
        Ok(store)
    }

    fn url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}api-version={API_VERSION}", self.vault_url)
    }

    fn full(&self, path: &SecretPath) -> String {
        format!("{}{}", self.prefix, path.as_str())
    }

    fn name(&self, path: &SecretPath) -> Result<String, StoreError> {
        encode::name_for(Alphabet::Azure, &self.full(path)).ok_or_else(|| StoreError::Invalid {
            store: STORE,
            detail: format!("`{}` cannot be a Key Vault name", path.as_str()),
        })
    }

    /// A token, learning the audience from an unauthenticated probe first.
    async fn token(&self) -> Result<Zeroizing<String>, StoreError> {
        if let Some(t) = self.tokens.cached() {
            return Ok(t);
        }
        let known = self.resource.lock().ok().and_then(|r| r.clone());
        let resource = match known {
            Some(r) => r,
            None => {
                // SECURITY: the probe carries no body and no credential.
                let resp = self
                    .http
                    .get(self.url("/secrets?maxresults=1"))
                    .send()
                    .await
                    .map_err(|e| map_reqwest(&e, self.timeout))?;
                super::https::refuse_redirect(STORE, &resp)?;
                let status = resp.status().as_u16();
                let challenge = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|h| h.to_str().ok())
                    .and_then(challenge_resource);
                match (status, challenge) {
                    (401, Some(r)) => {
                        if let Ok(mut g) = self.resource.lock() {
                            *g = Some(r.clone());
                        }
                        r
                    }
                    (429 | 500..=599, _) => {
                        return Err(StoreError::Unavailable {
                            store: STORE,
                            detail: format!("Key Vault answered {status}"),
                        });
                    }
                    _ => {
                        return Err(denied(&format!(
                            "`{}` did not answer with a Key Vault authentication challenge ({status}); is store.vault_url a Key Vault?",
                            self.vault_url
                        )));
                    }
                }
            }
        };
        self.tokens.fetch(&self.http, &resource, self.timeout).await
    }

    /// Sends one request with a bearer token; on `401` fetches a new token
    /// once and repeats (a refused request was not applied). Returns the
    /// status and body. The whole exchange is bounded by the store timeout.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Bytes>,
    ) -> Result<(u16, Zeroizing<Vec<u8>>), StoreError> {
        let exchange = async {
            for attempt in 0..2 {
                let token = self.token().await?;
                let mut req = self
                    .http
                    .request(method.clone(), url)
                    .bearer_auth(token.as_str());
                if let Some(b) = &body {
                    req = req
                        .header("content-type", "application/json")
                        .body(reqwest::Body::from(b.clone()));
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| map_reqwest(&e, self.timeout))?;
                super::https::refuse_redirect(STORE, &resp)?;
                let status = resp.status().as_u16();
                let bytes = resp
                    .bytes()
                    .await
                    .map_err(|e| map_reqwest(&e, self.timeout))?;
                let bytes = Zeroizing::new(bytes.to_vec());
                if status == 401 && attempt == 0 {
                    self.tokens.invalidate();
                    continue;
                }
                return Ok((status, bytes));
            }
            Err(denied("Key Vault refused a fresh token"))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(StoreError::Timeout {
                store: STORE,
                after: self.timeout,
            }))
    }

    /// Follows a page's `nextLink` only on the vault's own origin, so the
    /// token is never sent elsewhere.
    fn next_url(&self, link: Option<String>) -> Result<Option<String>, StoreError> {
        match link {
            None => Ok(None),
            Some(l) if l.is_empty() => Ok(None),
            Some(l) if l.starts_with(&format!("{}/", self.vault_url)) => Ok(Some(l)),
            Some(_) => Err(StoreError::Backend {
                store: STORE,
                detail: "Key Vault's nextLink points outside the vault; not followed".to_owned(),
            }),
        }
    }

    /// Every item of a paged listing.
    async fn all_pages(&self, first: String, what: &str) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut url = Some(first);
        while let Some(u) = url {
            let (status, body) = self.send(reqwest::Method::GET, &u, None).await?;
            if status != 200 {
                return Err(by_status(status, &body, what));
            }
            let page: Page = serde_json::from_slice(&body).map_err(|e| StoreError::Backend {
                store: STORE,
                detail: format!("unexpected listing from Key Vault: {e}"),
            })?;
            out.extend(page.value);
            url = self.next_url(page.next_link)?;
        }
        Ok(out)
    }

    fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.locks.lock() {
            Ok(mut m) => {
                // Forget locks nobody holds, so the map stays small.
                m.retain(|_, l| Arc::strong_count(l) > 1);
                m.entry(name.to_owned()).or_default().clone()
            }
            Err(_) => Arc::default(),
        }
    }
}

#[async_trait]
impl Store for AzureStore {
    fn backend(&self) -> &'static str {
        STORE
    }

    async fn put(&self, path: &SecretPath, req: PutRequest) -> Result<PutOutcome, StoreError> {
        let name = self.name(path)?;
        let lock = self.lock_for(&name.to_ascii_lowercase());
        let _held = lock.lock().await;
        let versions = match self
            .all_pages(
                self.url(&format!("/secrets/{name}/versions?maxresults=25")),
                path.as_str(),
            )
            .await
        {
            Ok(v) => v,
            Err(e) if e.kind() == StoreErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        if req.create_only && !versions.is_empty() {
            return Err(StoreError::Exists {
                store: STORE,
                path: path.as_str().to_owned(),
            });
        }
        let current = versions
            .iter()
            .filter_map(|v| version_of(v.tags.as_ref()))
            .max()
            .unwrap_or(versions.len() as u64);
        let next = current + 1;
        let tags = tags(&self.full(path), next, &req.labels)?;
        let body = Bytes::from_owner(ZeroBody(write_body(&req.value, &tags)?));
        let (status, resp) = self
            .send(
                reqwest::Method::PUT,
                &self.url(&format!("/secrets/{name}")),
                Some(body),
            )
            .await?;
        if status != 200 {
            if status == 409 {
                return Err(StoreError::Invalid {
                    store: STORE,
                    detail: format!(
                        "Key Vault holds `{name}` as deleted ({}); purge it, or grant the broker the purge permission",
                        said(&resp)
                    ),
                });
            }
            return Err(by_status(status, &resp, path.as_str()));
        }
        #[derive(Deserialize)]
        struct Written {
            #[serde(default)]
            attributes: Attributes,
        }
        let created_at = serde_json::from_slice::<Written>(&resp)
            .ok()
            .and_then(|w| w.attributes.created)
            .map_or_else(Timestamp::now, |s| Timestamp(s.saturating_mul(1000)));
        Ok(PutOutcome {
            version: next,
            created: versions.is_empty(),
            created_at,
        })
    }

    async fn get(&self, path: &SecretPath) -> Result<StoredSecret, StoreError> {
        let name = self.name(path)?;
        let (status, body) = self
            .send(
                reqwest::Method::GET,
                &self.url(&format!("/secrets/{name}")),
                None,
            )
            .await?;
        if status != 200 {
            return Err(by_status(status, &body, path.as_str()));
        }
        let b: Bundle = serde_json::from_slice(&body).map_err(|_| StoreError::Backend {
            store: STORE,
            detail: format!("unexpected answer from Key Vault for `{}`", path.as_str()),
        })?;
        let value = if b.content_type.as_deref() == Some(BASE64_TYPE) {
            B64.decode(b.value.0.as_bytes())
                .map(SecretBytes::new)
                .map_err(|_| StoreError::Backend {
                    store: STORE,
                    detail: format!("`{}` is marked base64 but is not", path.as_str()),
                })?
        } else {
            SecretBytes::copy_from(b.value.0.as_bytes())
        };
        let version = match version_of(b.tags.as_ref()) {
            Some(v) => v,
            // Written outside the broker: count the versions.
            None => self
                .all_pages(
                    self.url(&format!("/secrets/{name}/versions?maxresults=25")),
                    path.as_str(),
                )
                .await?
                .len() as u64,
        };
        Ok(StoredSecret {
            version,
            value,
            labels: labels_of(b.tags.as_ref()),
        })
    }

    async fn list(&self, scope: &ScopePath) -> Result<Vec<SecretMeta>, StoreError> {
        let items = self
            .all_pages(self.url("/secrets?maxresults=25"), scope.as_str())
            .await?;
        let mut out = Vec::new();
        for item in items {
            let Some(name) = item.id.rsplit_once("/secrets/").map(|(_, n)| n) else {
                continue;
            };
            let name = name.trim_end_matches('/');
            let tagged = path_tag(item.tags.as_ref());
            let Some(full) = encode::full_path_of(Alphabet::Azure, name, tagged.as_deref()) else {
                continue;
            };
            let Some(path) = full
                .strip_prefix(&self.prefix)
                .and_then(|p| SecretPath::parse(p).ok())
            else {
                continue;
            };
            if !path.is_within(scope) {
                continue;
            }
            let at = item.attributes.updated.or(item.attributes.created);
            out.push(SecretMeta {
                path,
                version: version_of(item.tags.as_ref()).unwrap_or(1),
                updated_at: at.map_or(Timestamp(0), |s| Timestamp(s.saturating_mul(1000))),
                labels: labels_of(item.tags.as_ref()),
            });
        }
        Ok(super::settle_listing(out))
    }

    async fn delete(&self, path: &SecretPath) -> Result<(), StoreError> {
        let name = self.name(path)?;
        let lock = self.lock_for(&name.to_ascii_lowercase());
        let _held = lock.lock().await;
        let (status, body) = self
            .send(
                reqwest::Method::DELETE,
                &self.url(&format!("/secrets/{name}")),
                None,
            )
            .await?;
        if status != 200 {
            return Err(by_status(status, &body, path.as_str()));
        }
        // The soft-deleted secret is purged so the name can be reused; the
        // vault may still be finishing the delete (409): wait and retry.
        let purge = self.url(&format!("/deletedsecrets/{name}"));
        let mut wait = Duration::from_millis(100);
        loop {
            let (status, body) = self.send(reqwest::Method::DELETE, &purge, None).await?;
            match status {
                200 | 204 | 404 => return Ok(()),
                409 if wait < Duration::from_secs(4) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                403 => {
                    return Err(denied(&format!(
                        "`{}` was deleted but Key Vault refused to purge it ({}): the broker needs Microsoft.KeyVault/vaults/secrets/purge/action, and the vault must not have purge protection",
                        path.as_str(),
                        said(&body)
                    )));
                }
                _ => return Err(by_status(status, &body, path.as_str())),
            }
        }
    }

    async fn health(&self) -> Result<(), StoreError> {
        let (status, body) = self
            .send(
                reqwest::Method::GET,
                &self.url("/secrets?maxresults=1"),
                None,
            )
            .await?;
        if status == 200 {
            Ok(())
        } else {
            Err(by_status(status, &body, ""))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_carry_path_version_and_labels() {
        let labels: Labels = [("owner/name".to_owned(), "a.b".to_owned())].into();
        let long = format!("acme/{}", "x".repeat(300));
        let t = tags(&long, 7, &labels).unwrap();
        assert_eq!(path_tag(Some(&t)).as_deref(), Some(long.as_str()));
        assert_eq!(version_of(Some(&t)), Some(7));
        assert_eq!(labels_of(Some(&t)), labels);
        let many: Labels = (0..14).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        let err = tags("acme/x", 1, &many).unwrap_err().to_string();
        assert!(err.contains("15 tags"), "{err}");
    }

    #[test]
    fn bodies_keep_text_and_mark_base64() {
        let t = HashMap::new();
        let b = write_body(&SecretBytes::copy_from(b"h\"i"), &t).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            (v["value"].as_str(), v["contentType"].as_str()),
            (Some("h\"i"), Some(TEXT_TYPE))
        );
        let b = write_body(&SecretBytes::copy_from(&[0xff, 0]), &t).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            (v["value"].as_str(), v["contentType"].as_str()),
            (Some("/wA="), Some(BASE64_TYPE))
        );
    }

    #[test]
    fn errors_never_carry_bodies_beyond_the_error_object() {
        let body = br#"{"value":"CANARY-VALUE","error":{"code":"Forbidden","message":"no"}}"#;
        let e = by_status(403, body, "acme/x").to_string();
        assert!(e.contains("Forbidden") && !e.contains("CANARY"), "{e}");
        assert!(by_status(404, b"", "acme/x").kind() == StoreErrorKind::NotFound);
    }
}
