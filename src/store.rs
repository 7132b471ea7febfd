//! The secret store abstraction: one async trait every backend implements,
//! and the typed error whose `kind()` the API layer maps to status codes.
//!
//! Stores see only validated paths and never log or return values in errors.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "azure")]
pub mod azure;
pub mod cache;
pub mod embedded;
#[cfg(any(feature = "gcp", feature = "azure"))]
pub mod encode;
#[cfg(feature = "gcp")]
pub mod gcp;
#[cfg(any(feature = "vault", feature = "azure"))]
pub(crate) mod https;
pub mod metered;
#[cfg(feature = "vault")]
pub mod vault;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::secret::{ScopePath, SecretBytes, SecretPath};

/// Labels attached to a secret: metadata, never secret.
pub type Labels = BTreeMap<String, String>;

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Self(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-22T01:02:03.456Z`.
    pub fn to_rfc3339(self) -> String {
        self.rfc3339().as_str().to_owned()
    }

    /// The same text, formatted on the stack (no allocation: the audit
    /// line of every request carries one). Times past the year 9999, which
    /// RFC 3339 cannot write, are clamped to its last millisecond.
    pub fn rfc3339(self) -> Rfc3339 {
        /// 9999-12-31T23:59:59.999Z.
        const LAST_MS: u64 = 253_402_300_799_999;
        let t = self.0.min(LAST_MS);
        let secs = t / 1000;
        let days = i64::try_from(secs / 86_400).unwrap_or(0);
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        let mut b = *b"0000-00-00T00:00:00.000Z";
        digits(&mut b[0..4], u64::try_from(y).unwrap_or(0));
        digits(&mut b[5..7], u64::from(m));
        digits(&mut b[8..10], u64::from(d));
        digits(&mut b[11..13], rem / 3600);
        digits(&mut b[14..16], (rem % 3600) / 60);
        digits(&mut b[17..19], rem % 60);
        digits(&mut b[20..23], t % 1000);
        Rfc3339(b)
    }
}

/// Writes `v` as zero-padded decimal digits filling `out`.
fn digits(out: &mut [u8], mut v: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + u8::try_from(v % 10).unwrap_or(0);
        v /= 10;
    }
}

/// A timestamp as RFC 3339 text (`2026-11-22T01:02:03.456Z`), held inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339([u8; 24]);

impl Rfc3339 {
    /// The text.
    pub fn as_str(&self) -> &str {
        // INVARIANT: only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or("1970-01-01T00:00:00.000Z")
    }
}

impl fmt::Debug for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian, UTC).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let m = u32::try_from(m).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// What a remote store's first contact at start means: a store that cannot
/// be reached yet (down, or not answering in time) lets the broker start
/// unready (`/readyz` 503) and keep trying; anything else (refused
/// credentials, bad config) refuses the start. One rule for every store.
#[cfg(any(feature = "vault", feature = "aws", feature = "gcp", feature = "azure"))]
pub(crate) fn start_unready_if_unreachable(
    store: &'static str,
    first_contact: Result<(), StoreError>,
) -> Result<(), StoreError> {
    match first_contact {
        Err(e)
            if matches!(
                e.kind(),
                StoreErrorKind::Unavailable | StoreErrorKind::Timeout
            ) =>
        {
            tracing::warn!(store, error = %e, "the store is not reachable yet; starting unready");
            Ok(())
        }
        other => other,
    }
}

/// Maps a reqwest transport failure of an HTTP store: a timeout is
/// `Timeout`, a failed TLS handshake `Backend` naming what to check, a
/// failure to connect or send `Unavailable` (prefixed with
/// `unreachable`, e.g. "cannot reach Key Vault"), anything else `Backend`.
/// reqwest's messages carry the URL, never a body or a header.
#[cfg(any(feature = "vault", feature = "azure"))]
pub(crate) fn map_reqwest(
    store: &'static str,
    unreachable: &str,
    e: &reqwest::Error,
    after: Duration,
) -> StoreError {
    if e.is_timeout() {
        return StoreError::Timeout { store, after };
    }
    // A failed TLS handshake is `Backend` with what to check, not
    // `Unavailable`: a wrong CA stops the broker at start (it would never
    // become ready) and answers 502 naming the cause at run time. Scheme,
    // host and port only: a URL's path names secrets.
    let address = e
        .url()
        .map_or_else(String::new, |u| u.origin().ascii_serialization());
    if let Some(detail) = https::handshake_failure(e, &address) {
        return StoreError::Backend { store, detail };
    }
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_connect() || e.is_request() || e.is_body() {
        let detail = if unreachable.is_empty() {
            detail
        } else {
            format!("{unreachable}: {detail}")
        };
        StoreError::Unavailable { store, detail }
    } else {
        StoreError::Backend { store, detail }
    }
}

/// A store answered with a redirect. Store clients never follow one:
/// reqwest keeps `X-Vault-Token` on a redirect to another origin, and a
/// 307/308 sends the body (a value) again, to wherever the answer points.
/// The error names the status and, when the target is an absolute http(s)
/// URL, its origin: never its path or query, which could carry data.
#[cfg(any(feature = "vault", feature = "aws", feature = "gcp", feature = "azure"))]
pub(crate) fn redirected(store: &'static str, status: u16, location: Option<&str>) -> StoreError {
    let to = location
        .and_then(origin_of)
        .map_or_else(String::new, |o| format!(" to `{o}`"));
    StoreError::Backend {
        store,
        detail: format!(
            "the store redirected the request ({status}{to}); the broker never follows a store's redirects: set the store's address to the server that answers"
        ),
    }
}

/// `scheme://host[:port]` of an absolute http(s) URL, without any
/// user-info; `None` for anything else (a relative or odd location).
#[cfg(any(feature = "vault", feature = "aws", feature = "gcp", feature = "azure"))]
fn origin_of(location: &str) -> Option<String> {
    let (scheme, rest) = location.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    // SECURITY: user-info (`user:password@`) is dropped; the host must be
    // plain host characters, so nothing else of the location slips through.
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    (!host.is_empty() && host.len() <= 261 && host.chars().all(plain))
        .then(|| format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// How often a read of a store whose labels live beside its versions (aws,
/// gcp) reads again when the labels are not sealed to the version it got
/// (a write in progress), before it fails closed.
#[cfg(any(feature = "aws", feature = "gcp"))]
pub(crate) const SEAL_READ_ATTEMPTS: u32 = 3;

/// The seal of `labels` to `version`: `{version}:{digest}`, the digest the
/// first 16 bytes of SHA-256 over the labels' JSON (sorted keys), in hex.
///
/// Stores that keep labels on the secret and values in its versions (aws
/// tags, gcp annotations) cannot write both at once. A write sets the new
/// labels with the seal `pending`, then adds the version, then seals the
/// labels to it; a read releases a value only when the seal it finds names
/// the version it read and the labels it read. So no intermediate state and
/// no single failure shows a value with labels not written with it: a read
/// sees a version with its own labels, or fails closed (502).
#[cfg(any(feature = "aws", feature = "gcp"))]
pub(crate) fn label_seal(version: u64, labels: &Labels) -> String {
    use sha2::Digest;
    // A map of strings always serializes.
    let json = serde_json::to_vec(labels).unwrap_or_default();
    let digest = sha2::Sha256::digest(&json);
    format!("{version}:{}", hex::encode(&digest[..16]))
}

/// The seal of a write whose version is not yet written: never matches.
#[cfg(any(feature = "aws", feature = "gcp"))]
pub(crate) const PENDING_SEAL: &str = "pending";

/// What a read's seal check found (see [`label_seal`]).
#[cfg(any(feature = "aws", feature = "gcp"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seal {
    /// The labels were written with this version.
    Holds,
    /// No seal at all: written before seals existed (or outside the broker).
    Absent,
    /// A write is in progress, or one failed between its calls.
    Broken,
}

/// Checks `seal` (as stored) against the version and labels a read got.
#[cfg(any(feature = "aws", feature = "gcp"))]
pub(crate) fn check_seal(seal: Option<&str>, version: u64, labels: &Labels) -> Seal {
    match seal {
        None => Seal::Absent,
        Some(s) if s == label_seal(version, labels) => Seal::Holds,
        Some(_) => Seal::Broken,
    }
}

/// Reads with `read_once` until the labels' seal holds (or is absent: a
/// secret written before seals), reading again a little later while a
/// write is in progress, and failing closed when it stays broken.
#[cfg(any(feature = "aws", feature = "gcp"))]
pub(crate) async fn read_sealed<F, Fut>(
    store: &'static str,
    path: &SecretPath,
    mut read_once: F,
) -> Result<StoredSecret, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(StoredSecret, Seal), StoreError>>,
{
    let mut attempt = 1;
    loop {
        let (secret, seal) = read_once().await?;
        match seal {
            Seal::Holds | Seal::Absent => return Ok(secret),
            // SECURITY: a value is never released with labels that were
            // not written with it; `secret` is dropped (zeroized) here.
            Seal::Broken if attempt >= SEAL_READ_ATTEMPTS => {
                return Err(unsealed(store, path, secret.version));
            }
            Seal::Broken => {
                drop(secret);
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)))
                    .await;
                attempt += 1;
            }
        }
    }
}

/// One lock per stripe of paths, for the stores whose write is several
/// calls (aws, gcp: labels, version, seal). Two writes of one path through
/// this broker then never interleave, so the later one's seal is always the
/// last written and names the current version; otherwise the slower of two
/// concurrent writers could seal an older version over the newer one's
/// seal, and the secret would fail closed until written again. Writers on
/// other brokers can still interleave: that leaves the secret failing
/// closed (a 502 until the next write), never a value with labels not its
/// own. Striped, so memory stays fixed whatever the number of paths.
#[cfg(any(feature = "aws", feature = "gcp"))]
#[derive(Debug)]
pub(crate) struct WriteLocks([tokio::sync::Mutex<()>; WRITE_LOCK_STRIPES]);

#[cfg(any(feature = "aws", feature = "gcp"))]
const WRITE_LOCK_STRIPES: usize = 64;

#[cfg(any(feature = "aws", feature = "gcp"))]
impl Default for WriteLocks {
    fn default() -> Self {
        Self(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

#[cfg(any(feature = "aws", feature = "gcp"))]
impl WriteLocks {
    /// Waits for, and holds, the lock of `path`'s stripe.
    pub(crate) async fn lock(&self, path: &SecretPath) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(path.as_str());
        self.0[(hash % WRITE_LOCK_STRIPES as u64) as usize]
            .lock()
            .await
    }
}

/// The error of a read that kept finding a broken seal: fail closed.
#[cfg(any(feature = "aws", feature = "gcp"))]
pub(crate) fn unsealed(store: &'static str, path: &SecretPath, version: u64) -> StoreError {
    StoreError::Backend {
        store,
        detail: format!(
            "the labels of `{}` are not the ones written with its current version {version} (a write is in progress, or one failed part way); it is not served until it is written again",
            path.as_str()
        ),
    }
}

/// Sorts a listing by path and keeps one entry per path (its newest
/// version). Remote stores list in pages with no snapshot guarantee: a
/// write between two pages can shift items so one appears twice.
#[cfg(any(feature = "vault", feature = "aws", feature = "gcp", feature = "azure"))]
pub(crate) fn settle_listing(mut items: Vec<SecretMeta>) -> Vec<SecretMeta> {
    items.sort_by(|a, b| a.path.cmp(&b.path).then(b.version.cmp(&a.version)));
    items.dedup_by(|later, kept| later.path == kept.path);
    items
}

/// What a write asks of the store.
#[derive(Debug)]
pub struct PutRequest {
    /// The new value.
    pub value: SecretBytes,
    /// Labels to set on the secret (replace the previous labels).
    pub labels: Labels,
    /// `If-None-Match: *`: fail with [`StoreErrorKind::Exists`] if the path exists.
    pub create_only: bool,
}

/// What a confirmed write produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// The version just written (1 for a new secret).
    pub version: u64,
    /// Whether the secret did not exist before this write.
    pub created: bool,
    /// When this version was written.
    pub created_at: Timestamp,
}

/// A secret's current value.
#[derive(Debug)]
pub struct StoredSecret {
    /// The current version.
    pub version: u64,
    /// The value of that version.
    pub value: SecretBytes,
    /// The secret's labels, so read policies can use them before the value
    /// is released.
    pub labels: Labels,
}

impl StoredSecret {
    /// A second copy, value included (deliberately not `Clone`: every copy
    /// of a value is one more to zeroize, so copies are spelled out).
    pub fn duplicate(&self) -> Self {
        Self {
            version: self.version,
            value: self.value.duplicate(),
            labels: self.labels.clone(),
        }
    }
}

/// A secret's metadata, as listed. Never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    /// The broker path.
    pub path: SecretPath,
    /// The current version.
    pub version: u64,
    /// When the current version was written.
    pub updated_at: Timestamp,
    /// The secret's labels.
    pub labels: Labels,
}

/// A backend that holds secret values.
///
/// Implementations must: acknowledge a `put` only once the value is durable
/// in the store; number versions 1, 2, 3… per path (restarting at 1 after a
/// delete); list recursively and segment-wise (`acme/t-4` never lists
/// `acme/t-42/x`); and never place a value or credential in an error.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// The backend's name as in config (`embedded`, `vault`, …), for errors.
    fn backend(&self) -> &'static str;

    /// Creates the secret or adds a new version.
    async fn put(&self, path: &SecretPath, req: PutRequest) -> Result<PutOutcome, StoreError>;

    /// Reads the current version.
    async fn get(&self, path: &SecretPath) -> Result<StoredSecret, StoreError>;

    /// The current version if it can be had from memory without waiting
    /// (the read cache's fresh entries); `None` means "call [`get`]". Lets
    /// a cache hit skip the boxed future of an async trait call.
    ///
    /// [`get`]: Store::get
    fn get_ready(&self, _path: &SecretPath) -> Option<StoredSecret> {
        None
    }

    /// Reads the current version from the backing store itself, past any
    /// read cache (a caller's `Cache-Control: no-cache`, so `run --watch`
    /// sees a rotation at once). Stores without a cache just read.
    async fn get_fresh(&self, path: &SecretPath) -> Result<StoredSecret, StoreError> {
        self.get(path).await
    }

    /// Lists, recursively, every secret inside `scope`, sorted by path.
    async fn list(&self, scope: &ScopePath) -> Result<Vec<SecretMeta>, StoreError>;

    /// Deletes every version of the secret.
    async fn delete(&self, path: &SecretPath) -> Result<(), StoreError>;

    /// Whether the store is reachable and usable.
    async fn health(&self) -> Result<(), StoreError>;
}

/// The class of a store failure; only the API layer maps it to HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// No such secret.
    NotFound,
    /// Create-only write, and the secret exists.
    Exists,
    /// The store refused the broker's credentials or permissions.
    Denied,
    /// The store cannot be reached.
    Unavailable,
    /// The store did not answer in time.
    Timeout,
    /// The store rejected the request as malformed (e.g. too large).
    Invalid,
    /// Anything else: corruption, failed decryption, unexpected answers.
    Backend,
}

/// A store failure. Carries names and ids, never values or credentials.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such secret.
    #[error("secret `{path}` not found in store `{store}`")]
    NotFound {
        /// The backend name.
        store: &'static str,
        /// The secret path.
        path: String,
    },
    /// Create-only write, and the secret exists.
    #[error("secret `{path}` already exists in store `{store}`")]
    Exists {
        /// The backend name.
        store: &'static str,
        /// The secret path.
        path: String,
    },
    /// The store refused the broker's credentials or permissions.
    #[error("store `{store}` denied the broker: {detail}")]
    Denied {
        /// The backend name.
        store: &'static str,
        /// What to check.
        detail: String,
    },
    /// The store cannot be reached.
    #[error("store `{store}` is unavailable: {detail}")]
    Unavailable {
        /// The backend name.
        store: &'static str,
        /// What failed.
        detail: String,
    },
    /// The store did not answer in time.
    #[error("store `{store}` did not answer within {after:?}")]
    Timeout {
        /// The backend name.
        store: &'static str,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The store rejected the request.
    #[error("store `{store}` rejected the request: {detail}")]
    Invalid {
        /// The backend name.
        store: &'static str,
        /// Why.
        detail: String,
    },
    /// Anything else.
    #[error("store `{store}` failed: {detail}")]
    Backend {
        /// The backend name.
        store: &'static str,
        /// What failed (no values, no credentials).
        detail: String,
    },
}

impl StoreError {
    /// The class of this failure.
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            Self::NotFound { .. } => StoreErrorKind::NotFound,
            Self::Exists { .. } => StoreErrorKind::Exists,
            Self::Denied { .. } => StoreErrorKind::Denied,
            Self::Unavailable { .. } => StoreErrorKind::Unavailable,
            Self::Timeout { .. } => StoreErrorKind::Timeout,
            Self::Invalid { .. } => StoreErrorKind::Invalid,
            Self::Backend { .. } => StoreErrorKind::Backend,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(feature = "vault", feature = "aws", feature = "gcp", feature = "azure"))]
    #[test]
    fn settled_listings_have_one_entry_per_path_the_newest() {
        let meta = |p: &str, v: u64| SecretMeta {
            path: SecretPath::parse(p).unwrap(),
            version: v,
            updated_at: Timestamp(0),
            labels: Labels::new(),
        };
        let got = settle_listing(vec![
            meta("a/c", 1),
            meta("a/b", 2),
            meta("a/c", 3),
            meta("a/b", 2),
        ]);
        let got: Vec<(String, u64)> = got
            .iter()
            .map(|m| (m.path.to_string(), m.version))
            .collect();
        assert_eq!(got, [("a/b".to_owned(), 2), ("a/c".to_owned(), 3)]);
    }

    #[cfg(any(feature = "vault", feature = "aws", feature = "gcp", feature = "azure"))]
    #[test]
    fn redirects_name_the_status_and_at_most_the_origin() {
        let msg = |loc: Option<&str>| redirected("vault", 307, loc).to_string();
        let m = msg(Some(
            "https://User:pw@Evil.example:8200/v1/secret/data/acme/db?x=canary#f",
        ));
        assert!(
            m.contains("307") && m.contains("`https://evil.example:8200`"),
            "{m}"
        );
        for leak in ["pw", "User", "secret/data", "acme", "canary"] {
            assert!(!m.contains(leak), "{m}");
        }
        assert_eq!(redirected("aws", 308, None).kind(), StoreErrorKind::Backend);
        for odd in [
            "/v1/secret/data/acme",
            "ftp://h/x",
            "http://h%2Fx/y",
            "http:///x",
        ] {
            let m = msg(Some(odd));
            assert!(
                m.contains("(307)") && !m.contains('%') && !m.contains("acme"),
                "{m}"
            );
        }
    }

    #[cfg(any(feature = "aws", feature = "gcp"))]
    #[test]
    fn seals_bind_labels_to_one_version() {
        let l: Labels = [("classification".to_owned(), "restricted".to_owned())].into();
        let seal = label_seal(4, &l);
        assert_eq!(check_seal(Some(&seal), 4, &l), Seal::Holds);
        assert_eq!(check_seal(Some(&seal), 5, &l), Seal::Broken);
        assert_eq!(check_seal(Some(&seal), 4, &Labels::new()), Seal::Broken);
        assert_eq!(check_seal(Some(PENDING_SEAL), 4, &l), Seal::Broken);
        assert_eq!(check_seal(None, 4, &l), Seal::Absent);
        assert_eq!(label_seal(1, &Labels::new()), label_seal(1, &Labels::new()));
    }

    #[test]
    fn rfc3339() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_795_309_323_456).to_rfc3339(),
            "2026-11-22T01:02:03.456Z"
        );
        assert_eq!(
            Timestamp(951_782_400_000).to_rfc3339(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(Timestamp(u64::MAX).to_rfc3339(), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            format!("{:?}", Timestamp(0).rfc3339()),
            "\"1970-01-01T00:00:00.000Z\""
        );
    }

    proptest::proptest! {
        /// The stack formatter writes what `format!` writes, for every time
        /// RFC 3339 can express.
        #[test]
        fn rfc3339_matches_the_plain_formatter(ms in 0u64..=253_402_300_799_999) {
            let secs = ms / 1000;
            let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap());
            let rem = secs % 86_400;
            let plain = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                rem / 3600,
                (rem % 3600) / 60,
                rem % 60,
                ms % 1000
            );
            proptest::prop_assert_eq!(Timestamp(ms).to_rfc3339(), plain);
        }
    }
}
