//! Entra ID access tokens for Key Vault, fetched over the store's own HTTP
//! client: client secret, workload identity (a federated service-account
//! token, re-read for every token) or managed identity. Tokens are cached
//! until five minutes before expiry and dropped when the vault answers `401`.
//!
//! The token endpoint is `$AZURE_AUTHORITY_HOST` (as Azure's SDKs and the
//! workload identity webhook set it), else `https://login.microsoftonline.com`.
//! Managed identity is found as Azure's SDKs find it: App Service, Functions
//! and Container Apps set `$IDENTITY_ENDPOINT` and `$IDENTITY_HEADER`
//! (api-version 2019-08-01); elsewhere (VMs, scale sets, AKS nodes) it is
//! IMDS at `http://169.254.169.254`, or `$AZURE_POD_IDENTITY_AUTHORITY_HOST`.
//! Service Fabric and Azure Arc managed identities are refused by name.
//! The audience comes from the vault's `401` challenge, and only Key Vault
//! audiences are accepted, so a mistyped `vault_url` can never obtain a
//! token for another Azure API.

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use zeroize::Zeroizing;

use super::{STORE, denied, map_reqwest};
use crate::config::AzureCredentials;
use crate::store::StoreError;

/// Key Vault's audiences in Azure's clouds (public, China, US Government).
const VAULT_RESOURCES: &[&str] = &[
    "https://vault.azure.net",
    "https://vault.azure.cn",
    "https://vault.usgovcloudapi.net",
];
const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
const IMDS_HOST: &str = "http://169.254.169.254";
const IMDS_PATH: &str = "/metadata/identity/oauth2/token";

/// Where tokens come from, resolved at start. Holds ids and file paths only.
#[derive(Clone)]
pub(super) enum Source {
    ClientSecret {
        tenant: String,
        client: String,
        secret_file: PathBuf,
    },
    Workload {
        tenant: String,
        client: String,
        token_file: PathBuf,
    },
    ManagedIdentity {
        /// A user-assigned identity's client id; else the system-assigned one.
        client: Option<String>,
        endpoint: Managed,
    },
}

/// Where a managed identity's tokens come from (URLs only; App Service's
/// header secret is read from the environment for each request).
#[derive(Clone, Debug)]
pub(super) enum Managed {
    /// The Instance Metadata Service's token URL.
    Imds(String),
    /// `$IDENTITY_ENDPOINT` (App Service, Functions, Container Apps).
    AppService(String),
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::ClientSecret { .. } => "client_secret",
            Self::Workload { .. } => "workload",
            Self::ManagedIdentity { .. } => "managed_identity",
        };
        f.debug_struct("Source")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Source {
    /// Resolves the configured credentials against the environment.
    pub(super) fn from_config(c: &AzureCredentials) -> Result<Self, StoreError> {
        let workload = || -> Option<Self> {
            Some(Self::Workload {
                tenant: env("AZURE_TENANT_ID")?,
                client: env("AZURE_CLIENT_ID")?,
                token_file: env("AZURE_FEDERATED_TOKEN_FILE")?.into(),
            })
        };
        match c {
            AzureCredentials::ClientSecret {
                tenant_id,
                client_id,
                client_secret_file,
            } => Ok(Self::ClientSecret {
                tenant: tenant_id.clone(),
                client: client_id.clone(),
                secret_file: client_secret_file.clone(),
            }),
            AzureCredentials::Workload => workload().ok_or_else(|| {
                denied("credentials = \"workload\" needs $AZURE_TENANT_ID, $AZURE_CLIENT_ID and $AZURE_FEDERATED_TOKEN_FILE (set by the workload identity webhook)")
            }),
            AzureCredentials::Default => match workload() {
                Some(w) => Ok(w),
                None => Ok(Self::ManagedIdentity {
                    client: env("AZURE_CLIENT_ID"),
                    endpoint: Managed::from_env()?,
                }),
            },
        }
    }

    /// Who answers token requests, for errors.
    fn issuer(&self) -> &'static str {
        match self {
            Self::ClientSecret { .. } | Self::Workload { .. } => "Entra ID",
            Self::ManagedIdentity {
                endpoint: Managed::Imds(_),
                ..
            } => "the managed identity endpoint (IMDS)",
            Self::ManagedIdentity {
                endpoint: Managed::AppService(_),
                ..
            } => "the managed identity endpoint ($IDENTITY_ENDPOINT)",
        }
    }
}

impl Managed {
    /// The managed identity endpoint this environment offers, in the order
    /// Azure's SDKs look for one.
    fn from_env() -> Result<Self, StoreError> {
        let unsupported = |what: &str| StoreError::Invalid {
            store: STORE,
            detail: format!(
                "{what} managed identity is not supported; use workload identity or credentials = \"client_secret\""
            ),
        };
        match (env("IDENTITY_ENDPOINT"), env("IDENTITY_HEADER")) {
            (Some(_), Some(_)) if env("IDENTITY_SERVER_THUMBPRINT").is_some() => Err(unsupported(
                "Service Fabric ($IDENTITY_SERVER_THUMBPRINT is set)",
            )),
            (Some(url), Some(_)) => {
                if url.starts_with("http://") || url.starts_with("https://") {
                    Ok(Self::AppService(url))
                } else {
                    Err(StoreError::Invalid {
                        store: STORE,
                        detail: format!("$IDENTITY_ENDPOINT `{url}` is not an http(s) URL"),
                    })
                }
            }
            (Some(_), None) if env("IMDS_ENDPOINT").is_some() => Err(unsupported(
                "Azure Arc ($IDENTITY_ENDPOINT and $IMDS_ENDPOINT are set)",
            )),
            _ => {
                let host = env("AZURE_POD_IDENTITY_AUTHORITY_HOST")
                    .unwrap_or_else(|| IMDS_HOST.to_owned());
                Ok(Self::Imds(format!(
                    "{}{IMDS_PATH}",
                    host.trim_end_matches('/')
                )))
            }
        }
    }
}

struct Cached {
    token: Zeroizing<String>,
    refresh_at: Instant,
}

/// Fetches and caches tokens.
pub(super) struct Tokens {
    source: Source,
    authority: String,
    cached: Mutex<Option<Cached>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SECURITY: the cached token is never printed.
        f.debug_struct("Tokens")
            .field("source", &self.source)
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

fn zstring<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Zeroizing<String>, D::Error> {
    String::deserialize(d).map(Zeroizing::new)
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(deserialize_with = "zstring")]
    access_token: Zeroizing<String>,
    /// Seconds from now (Entra ID: a number; IMDS: a string).
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    /// Epoch seconds (App Service answers this alone, as a string).
    #[serde(default)]
    expires_on: Option<serde_json::Value>,
}

/// A JSON number or a string of digits.
fn seconds(v: Option<&serde_json::Value>) -> Option<u64> {
    let v = v?;
    v.as_u64().or_else(|| v.as_str()?.trim().parse().ok())
}

/// How long a token lives: `expires_in`, else `expires_on` less now.
fn lifetime(t: &TokenResponse) -> Option<u64> {
    seconds(t.expires_in.as_ref()).or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        seconds(t.expires_on.as_ref()).map(|on| on.saturating_sub(now))
    })
}

/// The audience in a `WWW-Authenticate: Bearer authorization="…",
/// resource="…"` (or `scope="…/.default"`) challenge, if it is Key Vault's.
pub(super) fn challenge_resource(header: &str) -> Option<String> {
    let rest = header.trim().strip_prefix("Bearer")?;
    for part in rest.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').trim_end_matches('/');
        let v = v.strip_suffix("/.default").unwrap_or(v);
        if matches!(k.trim(), "resource" | "scope") && VAULT_RESOURCES.contains(&v) {
            return Some(v.to_owned());
        }
    }
    None
}

impl Tokens {
    pub(super) fn new(source: Source) -> Self {
        let authority = env("AZURE_AUTHORITY_HOST")
            .unwrap_or_else(|| DEFAULT_AUTHORITY.to_owned())
            .trim_end_matches('/')
            .to_owned();
        Self {
            source,
            authority,
            cached: Mutex::new(None),
        }
    }

    /// The cached token, if still fresh.
    pub(super) fn cached(&self) -> Option<Zeroizing<String>> {
        let guard = self.cached.lock().ok()?;
        let c = guard.as_ref()?;
        (Instant::now() < c.refresh_at).then(|| c.token.clone())
    }

    /// Forgets the cached token (the vault refused it).
    pub(super) fn invalidate(&self) {
        if let Ok(mut g) = self.cached.lock() {
            *g = None;
        }
    }

    /// Fetches a new token for `resource`.
    pub(super) async fn fetch(
        &self,
        http: &reqwest::Client,
        resource: &str,
        timeout: Duration,
    ) -> Result<Zeroizing<String>, StoreError> {
        let scope = format!("{resource}/.default");
        let req = match &self.source {
            Source::ClientSecret {
                tenant,
                client,
                secret_file,
            } => {
                let secret = read_file(secret_file, "client_secret_file")?;
                let form = Zeroizing::new(form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client),
                    ("client_secret", secret.trim()),
                    ("scope", &scope),
                ]));
                http.post(format!("{}/{tenant}/oauth2/v2.0/token", self.authority))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form.as_bytes().to_vec())
            }
            Source::Workload {
                tenant,
                client,
                token_file,
            } => {
                let jwt = read_file(token_file, "$AZURE_FEDERATED_TOKEN_FILE")?;
                let form = Zeroizing::new(form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", jwt.trim()),
                    ("scope", &scope),
                ]));
                http.post(format!("{}/{tenant}/oauth2/v2.0/token", self.authority))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form.as_bytes().to_vec())
            }
            Source::ManagedIdentity {
                client,
                endpoint: Managed::Imds(url),
            } => {
                let mut q = vec![("api-version", "2018-02-01"), ("resource", resource)];
                if let Some(c) = client {
                    q.push(("client_id", c));
                }
                http.get(format!("{url}?{}", form(&q)))
                    .header("Metadata", "true")
            }
            Source::ManagedIdentity {
                client,
                endpoint: Managed::AppService(url),
            } => {
                // SECURITY: the header is a per-process secret of the
                // platform's; marked sensitive so no Debug prints it.
                let secret = Zeroizing::new(env("IDENTITY_HEADER").unwrap_or_default());
                let mut header = reqwest::header::HeaderValue::from_str(&secret)
                    .map_err(|_| denied("$IDENTITY_HEADER is not a valid header value"))?;
                header.set_sensitive(true);
                let mut q = vec![("api-version", "2019-08-01"), ("resource", resource)];
                if let Some(c) = client {
                    q.push(("client_id", c));
                }
                let sep = if url.contains('?') { '&' } else { '?' };
                http.get(format!("{url}{sep}{}", form(&q)))
                    .header("X-IDENTITY-HEADER", header)
            }
        };
        let issuer = self.source.issuer();
        let resp = req
            .send()
            .await
            .map_err(|e| match map_reqwest(&e, timeout) {
                StoreError::Unavailable { detail, .. } | StoreError::Backend { detail, .. } => {
                    denied(&format!("cannot get a token from {issuer} ({detail})"))
                }
                other => other,
            })?;
        crate::store::https::refuse_redirect(STORE, &resp)?;
        let status = resp.status().as_u16();
        let body = Zeroizing::new(
            resp.bytes()
                .await
                .map_err(|e| map_reqwest(&e, timeout))?
                .to_vec(),
        );
        if status != 200 {
            return Err(denied(&format!(
                "{issuer} refused a token ({status} {})",
                refusal(&body)
            )));
        }
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            denied(&format!(
                "{issuer} answered a token request with something unexpected"
            ))
        })?;
        let secs = lifetime(&t).unwrap_or(600);
        let refresh_at = Instant::now() + Duration::from_secs(secs.saturating_sub(300).max(30));
        if let Ok(mut g) = self.cached.lock() {
            *g = Some(Cached {
                token: t.access_token.clone(),
                refresh_at,
            });
        }
        Ok(t.access_token)
    }
}

/// What a token endpoint said when it refused, on one line: Entra ID's and
/// IMDS's `error: error_description` (its first line: Entra appends trace
/// and correlation ids on the next ones), or App Service's `message`.
/// These never echo a credential.
fn refusal(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Refusal {
        #[serde(default)]
        error: String,
        #[serde(default)]
        error_description: String,
        #[serde(default)]
        message: String,
    }
    let Ok(r) = serde_json::from_slice::<Refusal>(body) else {
        return String::new();
    };
    let description = r.error_description.lines().next().unwrap_or("").trim();
    let said = match (r.error.as_str(), description, r.message.as_str()) {
        ("", "", m) => m.to_owned(),
        (e, "", _) => e.to_owned(),
        (e, d, _) => format!("{e}: {d}"),
    };
    said.chars().filter(|c| !c.is_control()).take(400).collect()
}

fn read_file(path: &PathBuf, what: &str) -> Result<Zeroizing<String>, StoreError> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| StoreError::Denied {
            store: STORE,
            detail: format!("cannot read {what} `{}`: {e}", path.display()),
        })
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_key_vault_audiences_are_taken_from_challenges() {
        let real = r#"Bearer authorization="https://login.microsoftonline.com/72f988bf", resource="https://vault.azure.net""#;
        assert_eq!(
            challenge_resource(real).as_deref(),
            Some("https://vault.azure.net")
        );
        let scoped = r#"Bearer authorization="https://login.microsoftonline.com/t", scope="https://vault.azure.cn/.default""#;
        assert_eq!(
            challenge_resource(scoped).as_deref(),
            Some("https://vault.azure.cn")
        );
        let other = r#"Bearer authorization="https://login.microsoftonline.com/t", resource="https://management.azure.com""#;
        assert_eq!(challenge_resource(other), None);
        assert_eq!(challenge_resource("Basic realm=x"), None);
    }

    #[test]
    fn forms_are_percent_encoded() {
        assert_eq!(
            form(&[("a", "x y&z"), ("scope", "https://v/.default")]),
            "a=x%20y%26z&scope=https%3A%2F%2Fv%2F.default"
        );
    }

    #[test]
    fn refusals_are_one_line() {
        let entra = br#"{"error":"invalid_request","error_description":"AADSTS70021: No matching federated identity record found.\r\nTrace ID: t\r\nCorrelation ID: c","error_codes":[70021]}"#;
        assert_eq!(
            refusal(entra),
            "invalid_request: AADSTS70021: No matching federated identity record found."
        );
        let app_service = br#"{"statusCode":400,"message":"Identity not found"}"#;
        assert_eq!(refusal(app_service), "Identity not found");
        assert_eq!(refusal(b"<html>"), "");
    }

    #[test]
    fn lifetimes_come_from_expires_in_or_expires_on() {
        let t: TokenResponse =
            serde_json::from_str(r#"{"access_token":"x","expires_in":"3599"}"#).unwrap();
        assert_eq!(lifetime(&t), Some(3599));
        let on = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 1000;
        let t: TokenResponse =
            serde_json::from_str(&format!(r#"{{"access_token":"x","expires_on":"{on}"}}"#))
                .unwrap();
        assert!((990..=1000).contains(&lifetime(&t).unwrap()));
    }

    #[test]
    fn debug_names_the_kind_only() {
        let s = Source::ClientSecret {
            tenant: "t".into(),
            client: "c".into(),
            secret_file: "/run/secret-file".into(),
        };
        let shown = format!("{:?}", Tokens::new(s));
        assert!(
            shown.contains("client_secret") && !shown.contains("secret-file"),
            "{shown}"
        );
    }
}
