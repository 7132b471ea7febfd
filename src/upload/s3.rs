//! S3: SigV4 query presigning (`rusty-s3`: pure, no I/O).
//!
//! The signature pins the method (`PUT`), the object name, the expiry and
//! the signed headers: `content-length` (the exact size), `if-none-match: *`
//! (create-only: S3 answers `412` if the object exists), the checksum
//! `x-amz-checksum-sha256` when the caller gave one, and `content-type`
//! when given. With temporary credentials the session token is in the URL
//! and the URL dies with them.

use std::time::Duration;

use base64::Engine as _;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::{Constraints, SignError, SignedUpload, check_expiry};

/// Where the bucket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Bucket {
    /// The bucket's name.
    pub bucket: String,
    /// The region it is in (`us-east-1`, …).
    pub region: String,
    /// An S3-compatible endpoint (then URLs are path-style:
    /// `{endpoint}/{bucket}/{object}`); else AWS's regional endpoint,
    /// virtual-host style.
    pub endpoint_url: Option<String>,
}

/// An access key, with its session token when temporary.
pub struct S3Credential {
    /// The access key id (not secret; it is in every URL).
    pub access_key_id: String,
    secret_access_key: zeroize::Zeroizing<String>,
    session_token: Option<zeroize::Zeroizing<String>>,
}

impl S3Credential {
    /// A credential from its parts.
    pub fn new(
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    ) -> Self {
        Self {
            access_key_id,
            secret_access_key: secret_access_key.into(),
            session_token: session_token.map(Into::into),
        }
    }
}

impl std::fmt::Debug for S3Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credential")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Signs a create-only `PUT` of `object` valid for `expiry` from `now`
/// (seconds since the epoch).
pub fn sign(
    cred: &S3Credential,
    at: &S3Bucket,
    object: &str,
    expiry: Duration,
    now: i64,
    c: &Constraints<'_>,
) -> Result<SignedUpload, SignError> {
    check_expiry(expiry)?;
    let (endpoint, style) = match &at.endpoint_url {
        Some(e) => (e.clone(), UrlStyle::Path),
        None => (
            format!("https://s3.{}.amazonaws.com", at.region),
            UrlStyle::VirtualHost,
        ),
    };
    let endpoint: url::Url = endpoint
        .parse()
        .ok()
        .filter(|u: &url::Url| matches!(u.scheme(), "http" | "https") && u.has_host())
        .ok_or_else(|| SignError::Endpoint(endpoint.clone()))?;
    let bucket = Bucket::new(endpoint, style, at.bucket.clone(), at.region.clone())
        .map_err(|_| SignError::Bucket(at.bucket.clone()))?;
    // INVARIANT: `object` is built from a validated path (segments of
    // `[A-Za-z0-9._-]` joined by `/`) and a configured prefix, so joining
    // it to the bucket URL cannot fail (rusty-s3 would panic if it did).
    let (key, secret) = (
        cred.access_key_id.clone(),
        cred.secret_access_key.as_str().to_owned(),
    );
    let creds = match &cred.session_token {
        Some(token) => Credentials::new_with_token(key, secret, token.as_str().to_owned()),
        None => Credentials::new(key, secret),
    };
    let mut headers = vec![
        ("content-length".to_owned(), c.size.to_string()),
        // SECURITY: create-only; S3 refuses (412) a PUT over an existing
        // object when this header is signed and sent.
        ("if-none-match".to_owned(), "*".to_owned()),
    ];
    if let Some(sum) = c.sha256 {
        headers.push((
            "x-amz-checksum-sha256".to_owned(),
            base64::engine::general_purpose::STANDARD.encode(sum),
        ));
    }
    if let Some(t) = c.content_type {
        headers.push(("content-type".to_owned(), t.to_owned()));
    }
    let mut action = bucket.put_object(Some(&creds), object);
    for (k, v) in &headers {
        action.headers_mut().insert(k.clone(), v.clone());
    }
    let time = jiff::Timestamp::from_second(now).map_err(|_| SignError::Expiry)?;
    let url = action.sign_with_time(expiry, &time);
    Ok(SignedUpload {
        url: url.into(),
        headers,
    })
}

#[cfg(test)]
mod tests;
