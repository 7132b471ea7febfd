//! Logging in to Vault and staying logged in: token (file or
//! `$VAULT_TOKEN`), AppRole and Kubernetes service-account logins, renewal
//! at two thirds of the token's TTL, and a fresh login when renewal fails or
//! the token nears its maximum TTL. Every call runs through
//! [`Session::with_login`], which also logs in afresh when Vault refuses a
//! token that has died under it (expired between two upkeep steps, or
//! revoked), so a request in that window is answered, not failed.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use subtle::ConstantTimeEq;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use zeroize::Zeroizing;

use super::{STORE, map_client_error};
use crate::config::VaultAuth;
use crate::store::{StoreError, StoreErrorKind};

/// A token shorter-lived than this is renewed (or replaced) straight away.
const MIN_SLEEP: Duration = Duration::from_secs(1);
/// How often a non-expiring token is checked (and its file re-read).
const IDLE_CHECK: Duration = Duration::from_secs(30);
/// The longest pause between failed login attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A logged-in client and what Vault said about its token.
pub(super) struct Login {
    /// The client carrying the token (for vaultrs calls).
    pub(super) client: Arc<VaultClient>,
    /// The same token, for the hand-written data calls.
    pub(super) token: Arc<Zeroizing<String>>,
    /// Seconds the token lives from `at`; 0 means it never expires.
    ttl: u64,
    renewable: bool,
    at: Instant,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SECURITY: never the token.
        f.debug_struct("Login")
            .field("ttl", &self.ttl)
            .field("renewable", &self.renewable)
            .finish_non_exhaustive()
    }
}

/// Everything needed to (re-)create a logged-in client.
pub(super) struct Session {
    pub(super) http: reqwest::Client,
    pub(super) address: String,
    pub(super) namespace: Option<String>,
    /// The per-request timeout, for error messages.
    pub(super) timeout: Duration,
    auth: VaultAuth,
    /// `$VAULT_TOKEN` as it was at start, for `auth = "token"` without a file.
    env_token: Option<Zeroizing<String>>,
    current: ArcSwapOption<Login>,
    /// The token file's last contents' modification time, to notice rotation.
    token_file_mtime: Mutex<Option<std::time::SystemTime>>,
    /// Held to replace the login, so that requests refused together when a
    /// token dies (and the upkeep task) cause one fresh login, not one each.
    relogin: tokio::sync::Mutex<()>,
}

/// A failure that may mean Vault no longer accepts the token: Vault
/// answers 403 both for a dead token and for a missing capability.
pub(super) trait Refusal {
    /// Whether Vault refused the request (401 or 403).
    fn is_refusal(&self) -> bool;
}

impl Refusal for StoreError {
    fn is_refusal(&self) -> bool {
        self.kind() == StoreErrorKind::Denied
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SECURITY: the method and address, never a token.
        f.debug_struct("Session")
            .field("address", &self.address)
            .field("namespace", &self.namespace)
            .field("auth", &method(&self.auth))
            .field("logged_in", &self.current.load().is_some())
            .finish_non_exhaustive()
    }
}

fn method(auth: &VaultAuth) -> &'static str {
    match auth {
        VaultAuth::Token { .. } => "token",
        VaultAuth::AppRole { .. } => "approle",
        VaultAuth::Kubernetes { .. } => "kubernetes",
    }
}

impl Session {
    pub(super) fn new(
        http: reqwest::Client,
        address: String,
        namespace: Option<String>,
        timeout: Duration,
        auth: VaultAuth,
    ) -> Self {
        let env_token = match &auth {
            VaultAuth::Token { token_file: None } => {
                std::env::var("VAULT_TOKEN").ok().map(Zeroizing::new)
            }
            _ => None,
        };
        Self {
            http,
            address,
            namespace,
            timeout,
            auth,
            env_token,
            current: ArcSwapOption::empty(),
            token_file_mtime: Mutex::new(None),
            relogin: tokio::sync::Mutex::new(()),
        }
    }

    /// Runs `call` with the current login. If Vault refuses it, and the
    /// token turns out to be dead (not merely short of a capability) and
    /// replaceable, logs in afresh (once, shared with concurrent callers)
    /// and runs `call` once more with the new login.
    ///
    /// Safe for every call the store makes, writes included: Vault checks
    /// the token before it routes a request, so a refused request changed
    /// nothing, and the retry is the first attempt that can take effect.
    /// (The data write also carries `cas`, so it could not land twice.)
    pub(super) async fn with_login<T, E, F, Fut>(&self, mut call: F) -> Result<T, E>
    where
        E: Refusal + From<StoreError>,
        F: FnMut(Arc<Login>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let login = self.current()?;
        match call(Arc::clone(&login)).await {
            Err(e) if e.is_refusal() && self.recover(&login).await => call(self.current()?).await,
            r => r,
        }
    }

    /// After Vault refused `failed`: whether there is now a login worth
    /// retrying with (someone else's, or a fresh one of ours).
    async fn recover(&self, failed: &Arc<Login>) -> bool {
        if self.replaced(failed) {
            return true;
        }
        let replaceable = match &self.auth {
            VaultAuth::AppRole { .. } | VaultAuth::Kubernetes { .. } => {
                // SECURITY: a token that still looks itself up was refused
                // for want of a capability; logging in again would not
                // help, and would let denied requests mint tokens.
                match vaultrs::token::lookup_self(&*failed.client).await {
                    Ok(_) => false,
                    Err(e) => map_client_error(e, self.timeout).kind() == StoreErrorKind::Denied,
                }
            }
            // Only a token file that now holds another token can help.
            VaultAuth::Token {
                token_file: Some(path),
            } => read_credential(path, "token_file")
                .is_ok_and(|(now, _)| !bool::from(now.as_bytes().ct_eq(failed.token.as_bytes()))),
            VaultAuth::Token { token_file: None } => false,
        };
        if !replaceable {
            return false;
        }
        match self.login_replacing(failed).await {
            Ok(_) => {
                tracing::info!(
                    store = STORE,
                    auth = method(&self.auth),
                    "vault refused the broker's token; logged in again"
                );
                true
            }
            Err(e) => {
                tracing::warn!(store = STORE, error = %e, "vault refused the broker's token and a new login failed");
                false
            }
        }
    }

    /// Whether the current login is no longer `old`.
    fn replaced(&self, old: &Arc<Login>) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|now| !Arc::ptr_eq(now, old))
    }

    /// Logs in unless someone replaced `old` meanwhile; `Ok(true)` if this
    /// call logged in.
    async fn login_replacing(&self, old: &Arc<Login>) -> Result<bool, StoreError> {
        let _one = self.relogin.lock().await;
        if self.replaced(old) {
            return Ok(false);
        }
        self.login().await.map(|()| true)
    }

    /// The current login, or `Unavailable` while the broker has none yet.
    pub(super) fn current(&self) -> Result<Arc<Login>, StoreError> {
        self.current
            .load_full()
            .ok_or_else(|| StoreError::Unavailable {
                store: STORE,
                detail: "not logged in to vault yet (retrying in the background)".to_owned(),
            })
    }

    /// A vaultrs client carrying `token` (empty: for login calls).
    fn client(&self, token: &str) -> Result<VaultClient, StoreError> {
        // Every setting is explicit: vaultrs would otherwise read VAULT_ADDR,
        // VAULT_SKIP_VERIFY, VAULT_CACERT and friends from the environment.
        let mut b = VaultClientSettingsBuilder::default();
        b.address(&self.address)
            .token(token)
            .verify(true)
            .ca_certs(Vec::new())
            .identity(None)
            .wrapping(false)
            .timeout(None);
        if let Some(ns) = &self.namespace {
            b.set_namespace(ns.clone());
        }
        let settings = b.build().map_err(|e| StoreError::Invalid {
            store: STORE,
            detail: format!("bad client settings: {e}"),
        })?;
        let mut client = VaultClient {
            http: rustify::clients::reqwest::Client::new(&self.address, self.http.clone()),
            middle: vaultrs::api::EndpointMiddleware {
                token: String::new(),
                version: "v1".to_owned(),
                wrap: None,
                namespace: self.namespace.clone(),
            },
            settings,
        };
        vaultrs::client::Client::set_token(&mut client, token);
        Ok(client)
    }

    /// Logs in with the configured method and installs the new token.
    pub(super) async fn login(&self) -> Result<(), StoreError> {
        let login = match &self.auth {
            VaultAuth::Token { token_file } => {
                let token = match token_file {
                    Some(path) => {
                        let (t, mtime) = read_credential(path, "token_file")?;
                        *self
                            .token_file_mtime
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = mtime;
                        t
                    }
                    None => self.env_token.clone().ok_or_else(|| StoreError::Denied {
                        store: STORE,
                        detail: "auth = \"token\" needs store.token_file or $VAULT_TOKEN"
                            .to_owned(),
                    })?,
                };
                let client = self.client(&token)?;
                // Learn the TTL; also proves the token is valid now.
                let info = vaultrs::token::lookup_self(&client).await.map_err(|e| {
                    denied_hint(
                        map_client_error(e, self.timeout),
                        "the token (is it valid and not expired?)",
                    )
                })?;
                Login {
                    client: Arc::new(client),
                    token: Arc::new(token),
                    ttl: info.ttl,
                    renewable: info.renewable.unwrap_or(false),
                    at: Instant::now(),
                }
            }
            VaultAuth::AppRole {
                role_id,
                secret_id_file,
            } => {
                let (secret_id, _) = read_credential(secret_id_file, "secret_id_file")?;
                let anon = self.client("")?;
                let auth = vaultrs::auth::approle::login(&anon, "approle", role_id, &secret_id)
                    .await
                    .map_err(|e| {
                        denied_hint(
                            map_client_error(e, self.timeout),
                            &format!("AppRole `{role_id}` and its secret id at auth/approle"),
                        )
                    })?;
                self.installed(auth)?
            }
            VaultAuth::Kubernetes { role, jwt_file } => {
                let (jwt, _) = read_credential(jwt_file, "jwt_file")?;
                let anon = self.client("")?;
                let auth = vaultrs::auth::kubernetes::login(&anon, "kubernetes", role, &jwt)
                    .await
                    .map_err(|e| {
                        denied_hint(
                            map_client_error(e, self.timeout),
                            &format!("Kubernetes role `{role}` at auth/kubernetes and the service-account token"),
                        )
                    })?;
                self.installed(auth)?
            }
        };
        tracing::info!(
            store = STORE,
            auth = method(&self.auth),
            ttl_s = login.ttl,
            renewable = login.renewable,
            "logged in to vault"
        );
        self.current.store(Some(Arc::new(login)));
        Ok(())
    }

    /// Turns a login answer into a `Login`, taking the token out of it.
    fn installed(&self, mut auth: vaultrs::api::AuthInfo) -> Result<Login, StoreError> {
        let token = Zeroizing::new(std::mem::take(&mut auth.client_token));
        Ok(Login {
            client: Arc::new(self.client(&token)?),
            token: Arc::new(token),
            ttl: auth.lease_duration,
            renewable: auth.renewable,
            at: Instant::now(),
        })
    }

    /// One step of upkeep: renew, re-login or re-read the token file as
    /// due. Returns how long to sleep before the next step.
    async fn upkeep(&self) -> Duration {
        let Some(login) = self.current.load_full() else {
            return match self.login().await {
                Ok(()) => MIN_SLEEP,
                Err(e) => {
                    tracing::warn!(store = STORE, error = %e, "vault login failed; retrying");
                    MAX_BACKOFF.min(Duration::from_secs(5))
                }
            };
        };
        if login.ttl == 0 {
            // A non-expiring token: only a rotated token file matters.
            if let VaultAuth::Token {
                token_file: Some(path),
            } = &self.auth
            {
                let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                let seen = *self
                    .token_file_mtime
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if mtime != seen {
                    if let Err(e) = self.login_replacing(&login).await {
                        tracing::warn!(store = STORE, error = %e, "cannot use the rotated token file");
                    }
                }
            }
            return IDLE_CHECK;
        }
        let ttl = Duration::from_secs(login.ttl);
        let due = login.at + ttl * 2 / 3;
        let now = Instant::now();
        if now < due {
            return (due - now).max(MIN_SLEEP);
        }
        let relogin = !matches!(self.auth, VaultAuth::Token { .. });
        if login.renewable {
            match vaultrs::token::renew_self(&*login.client, None).await {
                // Renewed to (nearly) the same TTL: keep going. A much
                // shorter TTL means the token is nearing its max TTL, so a
                // login method logs in afresh instead.
                Ok(auth) if !relogin || auth.lease_duration * 3 >= login.ttl * 2 => {
                    let renewed = Login {
                        client: Arc::clone(&login.client),
                        token: Arc::clone(&login.token),
                        ttl: auth.lease_duration,
                        renewable: auth.renewable,
                        at: now,
                    };
                    tracing::debug!(
                        store = STORE,
                        ttl_s = renewed.ttl,
                        "renewed the vault token"
                    );
                    self.current.store(Some(Arc::new(renewed)));
                    return MIN_SLEEP;
                }
                Ok(_) => {}
                Err(e) => {
                    let e = map_client_error(e, self.timeout);
                    tracing::warn!(store = STORE, error = %e, "cannot renew the vault token");
                }
            }
        }
        if relogin
            || matches!(
                self.auth,
                VaultAuth::Token {
                    token_file: Some(_)
                }
            )
        {
            match self.login_replacing(&login).await {
                Ok(_) => MIN_SLEEP,
                Err(e) => {
                    tracing::warn!(store = STORE, error = %e, "vault re-login failed; retrying");
                    backoff(login.at + ttl, now)
                }
            }
        } else {
            // A token from the environment cannot be replaced; keep trying
            // to renew it until it expires.
            backoff(login.at + ttl, now)
        }
    }
}

/// Retry sooner as expiry nears, but not in a tight loop.
fn backoff(expires: Instant, now: Instant) -> Duration {
    let left = expires.saturating_duration_since(now);
    (left / 4).clamp(MIN_SLEEP, MAX_BACKOFF)
}

/// Adds what to check to an auth failure.
fn denied_hint(e: StoreError, what: &str) -> StoreError {
    match e.kind() {
        StoreErrorKind::Denied | StoreErrorKind::NotFound | StoreErrorKind::Invalid => {
            StoreError::Denied {
                store: STORE,
                detail: format!("login refused; check {what}"),
            }
        }
        _ => e,
    }
}

/// Reads a credential file, trimmed, into zeroizing memory.
fn read_credential(
    path: &Path,
    key: &str,
) -> Result<(Zeroizing<String>, Option<std::time::SystemTime>), StoreError> {
    let shown = path.display();
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| StoreError::Denied {
        store: STORE,
        detail: format!("cannot read store.{key} `{shown}`: {e}"),
    })?);
    let text = std::str::from_utf8(&bytes).map_err(|_| StoreError::Denied {
        store: STORE,
        detail: format!("store.{key} `{shown}` is not UTF-8 text"),
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(StoreError::Denied {
            store: STORE,
            detail: format!("store.{key} `{shown}` is empty"),
        });
    }
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((Zeroizing::new(trimmed.to_owned()), mtime))
}

/// Keeps the session logged in until the store is dropped.
pub(super) fn spawn_upkeep(session: &Arc<Session>) -> tokio::task::JoinHandle<()> {
    let weak: Weak<Session> = Arc::downgrade(session);
    tokio::spawn(async move {
        loop {
            let Some(session) = weak.upgrade() else { break };
            let pause = session.upkeep().await;
            drop(session);
            tokio::time::sleep(pause).await;
        }
    })
}
