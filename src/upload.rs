//! Task output uploads: signed, write-only, create-only URLs that a task
//! `PUT`s its output to, straight into the tenant's bucket.
//!
//! Each cloud's signer is one file here and a pure function of (credential,
//! object, expiry, now, constraints): no network call, no clock read, so
//! tests fix the clock and compare with published vectors. The URL a signer
//! returns is a credential (anyone holding it may upload once until it
//! expires); it is kept in [`SignedUpload`], whose `Debug` redacts it, and
//! leaves only through [`SignedUpload::expose_url`].

use std::time::Duration;

pub mod azure;
pub mod encrypt;
pub mod gcs;
pub mod s3;
pub mod uploader;

pub use uploader::{Minted, UploadError, Uploader};

/// The longest a minted URL may live (the contract's cap; every cloud's own
/// limit is longer).
pub const MAX_EXPIRY: Duration = Duration::from_secs(3600);

/// Refuses a URL lifetime of zero or over [`MAX_EXPIRY`] (each cloud's own
/// limit is longer).
pub(crate) fn check_expiry(expiry: Duration) -> Result<(), SignError> {
    if expiry.is_zero() || expiry > MAX_EXPIRY {
        return Err(SignError::Expiry);
    }
    Ok(())
}

/// Percent-encodes every byte but RFC 3986's unreserved ones (and `/` when
/// `keep_slash`), in upper-case hex: what SigV4, GCS V4 and Azure SAS
/// canonical forms and URLs want.
pub(crate) fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a signature pins besides the method, the object and the expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Constraints<'a> {
    /// The exact size of the body, in bytes.
    pub size: u64,
    /// The body's SHA-256, when the caller gave it.
    pub sha256: Option<&'a [u8; 32]>,
    /// The `Content-Type` to store the object with, when given.
    pub content_type: Option<&'a str>,
}

/// A minted upload: the URL and exactly the headers to send with the `PUT`.
pub struct SignedUpload {
    url: String,
    /// Header names (lowercase) and values the `PUT` must carry. On S3
    /// each is part of the signature, so dropping or changing one is
    /// refused; an Azure SAS signs no header (`x-ms-blob-type` is required
    /// by the service, `content-type` is stored as sent).
    pub headers: Vec<(String, String)>,
}

impl SignedUpload {
    /// The signed URL. SECURITY: a credential; it belongs in the one
    /// response that mints it and nowhere else (no log, error or audit).
    pub fn expose_url(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Debug for SignedUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedUpload")
            .field("url", &"[REDACTED]")
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

/// Why a URL could not be signed. Carries names, never a key or a URL.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    /// The endpoint is not an absolute `http`/`https` URL.
    #[error(
        "endpoint `{0}` is not an https url this backend can sign for (plain http only to a loopback address)"
    )]
    Endpoint(String),
    /// The bucket name cannot be used in a URL.
    #[error("bucket `{0}` is not a valid bucket name")]
    Bucket(String),
    /// The storage account name cannot be used (Azure).
    #[error("account `{0}` is not an Azure storage account name (3 to 24 of a-z and 0-9)")]
    Account(String),
    /// The object name cannot be signed as it is (empty, over 1024 bytes,
    /// an empty, `.` or `..` segment, or a control character).
    #[error(
        "the object name cannot be signed: it is empty, too long, or has an empty, `.` or `..` segment"
    )]
    Object,
    /// The expiry is zero or over [`MAX_EXPIRY`].
    #[error("an upload url lives between 1s and 1h; set [uploads] expiry within that")]
    Expiry,
    /// The signing key refused to sign (it never should once loaded).
    #[error("the upload signing key cannot sign")]
    Signing,
}
