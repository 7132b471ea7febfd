//! GCS: V4 signed URLs (`GOOG4-RSA-SHA256`), signed with a service
//! account's RSA private key (*ring*), path-style.
//!
//! The signature pins the method (`PUT`), the object name, the expiry and
//! the signed headers: `x-goog-if-generation-match: 0` (create-only: GCS
//! answers `412` if the object exists), `x-goog-content-length-range: N,N`
//! (the exact size) and `content-type` when given. GCS has no request
//! header it checks a SHA-256 against (`x-goog-hash` takes MD5 and CRC32C
//! only), so a `sha256` the caller gave is audited but not pinned here.
//!
//! The general signer ([`presign`]) follows Google's V4 algorithm for any
//! method, headers and query parameters, so that it can be checked against
//! Google's published conformance vectors (`tests/fixtures/gcs-v4-signing`);
//! the broker only ever calls [`sign`].

use std::time::Duration;

use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject as _;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::{Constraints, SignError, SignedUpload, check_expiry, percent_encode};

/// Google's public endpoint, used when `[uploads] endpoint` is unset.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

/// Where the bucket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsBucket {
    /// The bucket's name.
    pub bucket: String,
    /// Another endpoint (`scheme://host[:port]`); else [`DEFAULT_ENDPOINT`].
    /// URLs are path-style either way: `{endpoint}/{bucket}/{object}`.
    pub endpoint: Option<String>,
}

/// A service account's signing key: its email (not secret; it is in every
/// URL) and its RSA private key.
///
/// SECURITY: no `Debug` of the key, no `Clone`, no way to read it back. The
/// key pair lives in *ring*'s own memory, which the broker's global
/// allocator zeroes when it is freed; the file's bytes, the PEM and the DER
/// it was parsed from are zeroized as soon as it is parsed.
pub struct GcsKey {
    client_email: String,
    key: RsaKeyPair,
}

impl std::fmt::Debug for GcsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsKey")
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

/// Why a service-account key file cannot be used. Never quotes the file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not JSON, or not a JSON object.
    #[error(
        "is not a JSON object (error at line {line} column {column}); it must be a service account key file (JSON) from Google Cloud"
    )]
    Json {
        /// Where the parser stopped.
        line: usize,
        /// Where the parser stopped.
        column: usize,
    },
    /// `type` is not `service_account`.
    #[error(
        "is not a service account key (its `type` must be \"service_account\"); create one with `gcloud iam service-accounts keys create`"
    )]
    NotServiceAccount,
    /// A field is missing or not a string.
    #[error("has no `{0}` string; it must be a service account key file (JSON) from Google Cloud")]
    Missing(&'static str),
    /// `client_email` cannot be an account's email.
    #[error("has a `client_email` that is not an email address")]
    Email,
    /// `private_key` is not a PEM PKCS#8 RSA key *ring* accepts.
    #[error(
        "has a `private_key` that is not a PEM PKCS#8 RSA private key (\"-----BEGIN PRIVATE KEY-----\") of 2048 to 4096 bits"
    )]
    PrivateKey,
}

impl GcsKey {
    /// Parses the contents of a service-account key file (JSON).
    pub fn from_json(json: &[u8]) -> Result<Self, KeyError> {
        // Only the three fields used; the rest of the file is ignored.
        // SECURITY: serde's messages are dropped (they can quote values).
        let file: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(json)
            .map_err(|e| KeyError::Json {
                line: e.line(),
                column: e.column(),
            })?;
        let field = |name: &'static str| {
            file.get(name)
                .and_then(serde_json::Value::as_str)
                .ok_or(KeyError::Missing(name))
        };
        if field("type")? != "service_account" {
            return Err(KeyError::NotServiceAccount);
        }
        let client_email = field("client_email")?;
        let email_ok = client_email.len() <= 320
            && client_email.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty()
                    && !host.is_empty()
                    && client_email
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'/')
            });
        if !email_ok {
            return Err(KeyError::Email);
        }
        let pem = Zeroizing::new(field("private_key")?.as_bytes().to_vec());
        let mut der = PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|_| KeyError::PrivateKey)?;
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der());
        zeroize::Zeroize::zeroize(&mut der);
        let key = key.map_err(|_| KeyError::PrivateKey)?;
        let client_email = client_email.to_owned();
        // The parsed JSON holds the PEM too: dropped here, and its blocks
        // zeroed on free by the global allocator.
        drop(file);
        Ok(Self { client_email, key })
    }

    /// The service account's email (the credential's public half).
    pub fn client_email(&self) -> &str {
        &self.client_email
    }
}

/// Whether `b` can be a GCS bucket name: 3 to 63 of `a-z0-9-_.` (at most
/// 222 with dots, each dot-separated part at most 63), starting and ending
/// with a letter or digit.
pub fn valid_bucket(b: &str) -> bool {
    let edge = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let max = if b.contains('.') { 222 } else { 63 };
    (3..=max).contains(&b.len())
        && b.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.')
        })
        && edge(b.bytes().next())
        && edge(b.bytes().last())
        && b.split('.')
            .all(|part| !part.is_empty() && part.len() <= 63)
}

/// Signs a create-only `PUT` of `object` valid for `expiry` from `now`
/// (seconds since the epoch).
pub fn sign(
    key: &GcsKey,
    at: &GcsBucket,
    object: &str,
    expiry: Duration,
    now: i64,
    c: &Constraints<'_>,
) -> Result<SignedUpload, SignError> {
    // GCS's own limit is 7 days; ours is shorter.
    check_expiry(expiry)?;
    if !valid_bucket(&at.bucket) {
        return Err(SignError::Bucket(at.bucket.clone()));
    }
    let mut headers = vec![
        // SECURITY: create-only; GCS refuses (412) a write over an existing
        // object when this header is signed and sent.
        ("x-goog-if-generation-match".to_owned(), "0".to_owned()),
        // SECURITY: the exact size; GCS refuses a body of another length.
        (
            "x-goog-content-length-range".to_owned(),
            format!("{0},{0}", c.size),
        ),
    ];
    if let Some(t) = c.content_type {
        headers.push(("content-type".to_owned(), t.to_owned()));
    }
    let req = Request {
        method: "PUT",
        endpoint: at.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT),
        bucket: &at.bucket,
        object: Some(object),
        headers: &headers,
        query: &[],
    };
    let signed = presign(key, &req, expiry.as_secs(), now)?;
    Ok(SignedUpload {
        url: signed.url,
        headers,
    })
}

impl std::fmt::Debug for Presigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presigned")
            .field("url", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// A request to sign, in general (the conformance vectors use every part).
#[derive(Debug)]
pub(crate) struct Request<'a> {
    /// `GET`, `PUT`, `POST`, …
    pub method: &'a str,
    /// `scheme://host[:port]`, kept as given in the URL; the signed `host`
    /// is the host name alone (as Google's clients and vectors sign it).
    pub endpoint: &'a str,
    pub bucket: &'a str,
    /// `None`: the bucket itself.
    pub object: Option<&'a str>,
    /// Headers the request will carry, each signed.
    pub headers: &'a [(String, String)],
    /// Extra query parameters, each signed.
    pub query: &'a [(String, String)],
}

/// A signed request, and the strings signed on the way (for the vectors).
/// SECURITY: `url` is a credential; `Debug` leaves it out.
pub(crate) struct Presigned {
    pub url: String,
    // Read by the conformance tests, which compare them with the vectors.
    #[cfg_attr(not(test), allow(dead_code))]
    pub canonical_request: String,
    #[cfg_attr(not(test), allow(dead_code))]
    pub string_to_sign: String,
}

/// Google's V4 signing (“Signatures”, `GOOG4-RSA-SHA256`): a canonical
/// request, its SHA-256 in a string to sign, an RSA PKCS#1 v1.5 SHA-256
/// signature of that, in hex, as the last query parameter.
pub(crate) fn presign(
    key: &GcsKey,
    r: &Request<'_>,
    expiry_secs: u64,
    now: i64,
) -> Result<Presigned, SignError> {
    let endpoint = r.endpoint.trim_end_matches('/');
    let host = endpoint_host(endpoint).ok_or_else(|| SignError::Endpoint(endpoint.to_owned()))?;
    if r.bucket.is_empty() || r.bucket.contains('/') {
        return Err(SignError::Bucket(r.bucket.to_owned()));
    }
    let ts = jiff::Timestamp::from_second(now).map_err(|_| SignError::Expiry)?;
    let datetime = ts.strftime("%Y%m%dT%H%M%SZ").to_string();
    let scope = format!("{}/auto/storage/goog4_request", &datetime[..8]);

    // Headers: lowercase names, values trimmed with inner runs of spaces
    // and tabs collapsed to one space, sorted by name, repeats joined by `,`.
    let mut canon: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    canon.insert("host".into(), vec![host]);
    for (name, value) in r.headers {
        let value = value
            .split([' ', '\t'])
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        canon
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value);
    }
    let signed_headers = canon.keys().cloned().collect::<Vec<_>>().join(";");
    let payload = canon
        .get("x-goog-content-sha256")
        .map_or_else(|| "UNSIGNED-PAYLOAD".to_owned(), |v| v.join(","));

    let mut query: Vec<(String, String)> = [
        ("X-Goog-Algorithm", "GOOG4-RSA-SHA256".to_owned()),
        ("X-Goog-Credential", format!("{}/{scope}", key.client_email)),
        ("X-Goog-Date", datetime.clone()),
        ("X-Goog-Expires", expiry_secs.to_string()),
        ("X-Goog-SignedHeaders", signed_headers.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (percent_encode(k, false), percent_encode(&v, false)))
    .chain(
        r.query
            .iter()
            .map(|(k, v)| (percent_encode(k, false), percent_encode(v, false))),
    )
    .collect();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");

    let mut path = format!("/{}", percent_encode(r.bucket, false));
    if let Some(object) = r.object {
        path.push('/');
        path.push_str(&percent_encode(object, true));
    }
    let mut canonical_request = format!("{}\n{path}\n{query}\n", r.method);
    for (name, values) in &canon {
        canonical_request.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    canonical_request.push_str(&format!("\n{signed_headers}\n{payload}"));

    let string_to_sign = format!(
        "GOOG4-RSA-SHA256\n{datetime}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut signature = vec![0u8; key.key.public().modulus_len()];
    key.key
        .sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            string_to_sign.as_bytes(),
            &mut signature,
        )
        .map_err(|_| SignError::Signing)?;
    Ok(Presigned {
        url: format!(
            "{endpoint}{path}?{query}&X-Goog-Signature={}",
            hex::encode(signature)
        ),
        canonical_request,
        string_to_sign,
    })
}

/// The host name of an `http(s)://host[:port]` endpoint with nothing after
/// it (no user, path, query or fragment); `None` if it is not one.
fn endpoint_host(endpoint: &str) -> Option<String> {
    let u = url::Url::parse(endpoint).ok()?;
    let bare = matches!(u.scheme(), "http" | "https")
        && u.username().is_empty()
        && u.password().is_none()
        && u.path() == "/"
        && u.query().is_none()
        && u.fragment().is_none()
        // `Url` adds the root `/`; a path the endpoint itself had is refused.
        && !endpoint.split_once("://").is_some_and(|(_, rest)| rest.contains('/'));
    bare.then(|| u.host_str().map(str::to_owned)).flatten()
}

#[cfg(test)]
mod tests;
