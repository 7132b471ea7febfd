//! Azure Blob Storage: a service SAS signed with the storage account key
//! (HMAC-SHA256 of Azure's documented string-to-sign; no I/O).
//!
//! The SAS pins the resource (`sr=b`: this one blob, by name), the
//! permission (`sp=c`: create only; Azure refuses a `PUT` over an existing
//! blob and every read, list or delete), the expiry (`se`), the protocol
//! (`spr=https`; `https,http` only for a loopback `http` endpoint such as
//! Azurite) and the service version. It signs no header: Azure cannot pin
//! the size, the checksum or the content type of what is uploaded, so
//! `[uploads] max_size` is enforced only when the URL is minted.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use hmac::Mac as _;
use zeroize::Zeroizing;

use super::{Constraints, SignError, SignedUpload, check_expiry, percent_encode};

/// The storage service version the SAS is signed for (`sv`). Any version
/// from 2020-12-06 on has the string-to-sign below; this one is GA in every
/// Azure region and accepted by Azurite.
pub const SAS_VERSION: &str = "2022-11-02";

/// Where the container is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureContainer {
    /// The storage account's name (3 to 24 of `a-z0-9`).
    pub account: String,
    /// The container task output goes to.
    pub container: String,
    /// The blob service URL (as a connection string's `BlobEndpoint`, e.g.
    /// Azurite's `http://127.0.0.1:10000/devstoreaccount1`): URLs are then
    /// `{endpoint}/{container}/{blob}`; else
    /// `https://{account}.blob.core.windows.net/{container}/{blob}`.
    pub endpoint: Option<String>,
}

/// A storage account key: the HMAC key of every SAS.
///
/// SECURITY: it grants everything on the account, so it is held zeroizing,
/// has no `Clone`, and prints as `[REDACTED]`.
pub struct AzureKey(Zeroizing<Vec<u8>>);

impl AzureKey {
    /// A key from its base64 text (as the portal and `az storage account
    /// keys list` show it; surrounding whitespace is ignored).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(text.len()));
        base64::engine::general_purpose::STANDARD
            .decode_vec(text, &mut bytes)
            .map_err(|_| KeyError::NotBase64)?;
        Ok(Self(bytes))
    }

    /// Reads a key from `account_key_file`. Errors name the file, never
    /// its content.
    pub fn read(path: &Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read(path)
            .map(Zeroizing::new)
            .map_err(|e| KeyFileError {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        let text = std::str::from_utf8(&text).map_err(|_| KeyFileError {
            path: path.display().to_string(),
            reason: KeyError::NotBase64.to_string(),
        })?;
        Self::from_base64(text).map_err(|e| KeyFileError {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}

impl std::fmt::Debug for AzureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AzureKey([REDACTED])")
    }
}

/// Why a key's text is not a key. Says nothing of the text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Nothing but whitespace.
    #[error(
        "it is empty; put the storage account's key in it (base64, as `az storage account keys list` shows it)"
    )]
    Empty,
    /// Not one base64 string.
    #[error(
        "it is not one base64 key (the storage account's key, as `az storage account keys list` shows it)"
    )]
    NotBase64,
}

/// `account_key_file` cannot be read or holds no key.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the azure account key file `{path}` ([uploads] account_key_file): {reason}")]
pub struct KeyFileError {
    path: String,
    reason: String,
}

/// Whether `a` is a storage account name: 3 to 24 of `a-z0-9`.
pub fn valid_account(a: &str) -> bool {
    (3..=24).contains(&a.len())
        && a.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Whether `c` is a container name: 3 to 63 of `a-z0-9-`, starting and
/// ending with a letter or digit, no `--`.
pub fn valid_container(c: &str) -> bool {
    let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (3..=63).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && edge(c.bytes().next())
        && edge(c.bytes().last())
        && !c.contains("--")
}

/// Whether `blob` can be named in a URL and signed as it is: 1 to 1024
/// bytes, no empty, `.` or `..` segment (HTTP clients rewrite those, and
/// the signed name would no longer be the one asked for), no control
/// character.
// SECURITY: the name goes into a `\n`-joined string-to-sign; a newline in
// it could shift the fields after it, so control characters are refused.
fn valid_blob(blob: &str) -> bool {
    (1..=1024).contains(&blob.len())
        && !blob.chars().any(char::is_control)
        && blob
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// The blob service URL and the protocols the SAS allows on it.
fn service_url(at: &AzureContainer) -> Result<(String, &'static str), SignError> {
    let Some(endpoint) = &at.endpoint else {
        return Ok((
            format!("https://{}.blob.core.windows.net", at.account),
            "https",
        ));
    };
    let bad = || SignError::Endpoint(endpoint.clone());
    let u = url::Url::parse(endpoint).map_err(|_| bad())?;
    if !u.has_host() || u.query().is_some() || u.fragment().is_some() {
        return Err(bad());
    }
    let loopback = match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    let protocols = match u.scheme() {
        "https" => "https",
        // SECURITY: a URL that may travel in cleartext only where it never
        // leaves the machine (Azurite in tests); anywhere else https alone.
        "http" if loopback => "https,http",
        _ => return Err(bad()),
    };
    Ok((endpoint.trim_end_matches('/').to_owned(), protocols))
}

/// Azure's string-to-sign of a service SAS for a blob, versions 2020-12-06
/// and later ("Create a service SAS"): sixteen fields joined by `\n`, the
/// unused ones empty. `expiry` is `se` as it appears in the URL.
pub(crate) fn string_to_sign(
    at: &AzureContainer,
    blob: &str,
    expiry: &str,
    protocols: &str,
) -> String {
    [
        "c",                                                        // signedPermissions: create only
        "",     // signedStart: none (a skewed clock cannot make it unusable)
        expiry, // signedExpiry
        &format!("/blob/{}/{}/{}", at.account, at.container, blob), // canonicalizedResource
        "",     // signedIdentifier: no stored access policy
        "",     // signedIP
        protocols, // signedProtocol
        SAS_VERSION, // signedVersion
        "b",    // signedResource: a blob
        "",     // signedSnapshotTime
        "",     // signedEncryptionScope
        "",     // rscc
        "",     // rscd
        "",     // rsce
        "",     // rscl
        "",     // rsct
    ]
    .join("\n")
}

/// Signs a create-only `PUT` of `blob` valid for `expiry` from `now`
/// (seconds since the epoch). `c.size` and `c.sha256` cannot be pinned by a
/// SAS; `c.content_type` becomes a header to send (not signed).
pub fn sign(
    key: &AzureKey,
    at: &AzureContainer,
    blob: &str,
    expiry: Duration,
    now: i64,
    c: &Constraints<'_>,
) -> Result<SignedUpload, SignError> {
    check_expiry(expiry)?;
    if !valid_account(&at.account) {
        return Err(SignError::Account(at.account.clone()));
    }
    if !valid_container(&at.container) {
        return Err(SignError::Bucket(at.container.clone()));
    }
    if !valid_blob(blob) {
        return Err(SignError::Object);
    }
    let (service, protocols) = service_url(at)?;
    let secs = i64::try_from(expiry.as_secs()).map_err(|_| SignError::Expiry)?;
    let se = jiff::Timestamp::from_second(now.saturating_add(secs))
        .map_err(|_| SignError::Expiry)?
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let to_sign = string_to_sign(at, blob, &se, protocols);
    // INVARIANT: HMAC takes a key of any length.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key.0)
        .map_err(|_| SignError::Account(at.account.clone()))?;
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let url = format!(
        "{service}/{}/{}?sv={}&spr={}&se={}&sr=b&sp=c&sig={}",
        at.container,
        percent_encode(blob, true),
        SAS_VERSION,
        percent_encode(protocols, false),
        percent_encode(&se, false),
        percent_encode(&sig, false),
    );
    // Put Blob needs its type; the content type is stored with the blob
    // (a SAS cannot pin it).
    let mut headers = vec![("x-ms-blob-type".to_owned(), "BlockBlob".to_owned())];
    if let Some(t) = c.content_type {
        headers.push(("content-type".to_owned(), t.to_owned()));
    }
    Ok(SignedUpload { url, headers })
}

#[cfg(test)]
mod tests;
