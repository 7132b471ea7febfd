//! The broker's side of uploads: `[uploads]`, the signing credential and
//! the clock, joined so that a URL is minted only for a permitted upload.
//!
//! The signing key comes from the AWS default credential chain once at
//! start and again whenever it would expire within a URL's lifetime; a
//! mint itself makes no network call. With temporary credentials (a role,
//! IMDS, web identity) the session token is part of the URL, and the URL
//! dies with them: `expires_at` then says the earlier of the two.

use std::time::Duration;

use super::s3::{S3Bucket, S3Credential};
use super::{Constraints, SignError, SignedUpload};
use crate::authz::Permitted;
use crate::broker::UploadOutput;
use crate::config::{UploadBackend, UploadsConfig};

/// Why the uploader could not start or mint. Carries names, never a key
/// or a URL.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// No credential could be had from the AWS default chain.
    #[error("cannot get s3 upload credentials from the AWS default credential chain: {0}")]
    Credentials(String),
    /// The chain gave no region and `[uploads] region` is unset.
    #[error("no AWS region for uploads: set [uploads] region or $AWS_REGION")]
    NoRegion,
    /// The signer refused the configured bucket or endpoint.
    #[error("cannot sign upload urls: {0}")]
    Sign(#[from] SignError),
    /// This build has no S3 support (the `aws` feature is off).
    #[error("s3 uploads are not available in this build (built without the `aws` feature)")]
    NotBuilt,
}

/// A minted upload, ready for the one response that carries it.
#[derive(Debug)]
pub struct Minted {
    /// The object name in the bucket (`prefix` + path).
    pub object: String,
    /// The URL and the headers to send with it.
    pub signed: SignedUpload,
    /// When the URL stops working, in seconds since the epoch.
    pub expires_at: i64,
}

/// Mints signed upload URLs for `[uploads]`.
pub struct Uploader {
    bucket: S3Bucket,
    prefix: String,
    expiry: Duration,
    max_size: u64,
    encrypt_to: Option<String>,
    creds: Credentials,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SECURITY: the credential cache is not printed.
        f.debug_struct("Uploader")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("expiry", &self.expiry)
            .field("max_size", &self.max_size)
            .field("encrypt_to", &self.encrypt_to)
            .finish_non_exhaustive()
    }
}

impl Uploader {
    /// Builds the uploader: resolves the region and a first credential
    /// from the AWS default chain, and signs a probe URL so that a bad
    /// bucket or endpoint stops the broker at start, not at a task's mint.
    pub async fn start(config: &UploadsConfig) -> Result<Self, UploadError> {
        let UploadBackend::S3 {
            region,
            endpoint_url,
        } = &config.backend;
        let (creds, region) = Credentials::start(region.as_deref()).await?;
        let uploader = Self {
            bucket: S3Bucket {
                bucket: config.bucket.clone(),
                region,
                endpoint_url: endpoint_url.clone(),
            },
            prefix: config.prefix.clone(),
            expiry: config.expiry,
            max_size: config.max_size,
            encrypt_to: config.encrypt_to.clone(),
            creds,
        };
        let probe = S3Credential::new("probe".into(), "probe".into(), None);
        super::s3::sign(
            &probe,
            &uploader.bucket,
            &format!("{}probe", uploader.prefix),
            uploader.expiry,
            unix_now(),
            &Constraints {
                size: 1,
                sha256: None,
                content_type: None,
            },
        )?;
        Ok(uploader)
    }

    /// The largest size a URL is minted for.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// The age recipient (`[uploads] encrypt_to`) the client encrypts to
    /// before uploading, if any.
    pub fn recipient(&self) -> Option<&str> {
        self.encrypt_to.as_deref()
    }

    /// The object name of an output path: `prefix` + path.
    pub fn object(&self, permit: &Permitted<UploadOutput>) -> String {
        // INVARIANT: the prefix is "" or scope segments ending in `/`, and
        // the path is a validated secret path: the join is a clean name.
        format!("{}{}", self.prefix, permit.get().path().as_str())
    }

    /// Mints a create-only `PUT` URL for the permitted output path.
    pub async fn mint(
        &self,
        permit: &Permitted<UploadOutput>,
        c: &Constraints<'_>,
    ) -> Result<Minted, UploadError> {
        self.mint_at(self.object(permit), c, unix_now()).await
    }

    /// Mints a URL for `object` at `now`: the clock is a parameter so that
    /// tests can fix it.
    async fn mint_at(
        &self,
        object: String,
        c: &Constraints<'_>,
        now: i64,
    ) -> Result<Minted, UploadError> {
        let (cred, cred_expiry) = self.creds.current(now, self.expiry).await?;
        // A URL signed with temporary credentials dies with them: sign it
        // for no longer than they live, so `expires_at` tells the truth.
        let lifetime = match cred_expiry {
            Some(t) => {
                let left = u64::try_from(t.saturating_sub(now)).unwrap_or(0);
                self.expiry.min(Duration::from_secs(left.max(1)))
            }
            None => self.expiry,
        };
        let signed = super::s3::sign(&cred, &self.bucket, &object, lifetime, now, c)?;
        Ok(Minted {
            object,
            signed,
            expires_at: now.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(0)),
        })
    }
}

/// Seconds since the epoch (a clock before 1970 reads as 0).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The AWS default chain and the last credential it gave.
#[cfg(feature = "aws")]
struct Credentials {
    provider: aws_credential_types::provider::SharedCredentialsProvider,
    last: tokio::sync::Mutex<Option<aws_credential_types::Credentials>>,
}

#[cfg(feature = "aws")]
impl Credentials {
    async fn start(region: Option<&str>) -> Result<(Self, String), UploadError> {
        // Same chain, TLS and timeouts as the `aws` store; the S3 endpoint
        // is not the SDK's concern (the broker signs, the task calls S3).
        let sdk = crate::store::aws::sdk_config(region, None, Duration::from_secs(5)).await;
        let region = sdk
            .region()
            .map(ToString::to_string)
            .ok_or(UploadError::NoRegion)?;
        let provider = sdk.credentials_provider().ok_or_else(|| {
            UploadError::Credentials("the chain has no credential provider".into())
        })?;
        let creds = Self {
            provider,
            last: tokio::sync::Mutex::new(None),
        };
        creds.current(unix_now(), Duration::ZERO).await?;
        Ok((creds, region))
    }

    /// A credential that lives at least `lifetime` past `now` if the chain
    /// can give one, and its expiry (`None`: a long-lived key).
    async fn current(
        &self,
        now: i64,
        lifetime: Duration,
    ) -> Result<(S3Credential, Option<i64>), UploadError> {
        use aws_credential_types::provider::ProvideCredentials as _;
        let expiry_of = |c: &aws_credential_types::Credentials| {
            c.expiry().map(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            })
        };
        let need = now.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(0));
        let mut last = self.last.lock().await;
        let fresh = last
            .as_ref()
            .is_some_and(|c| expiry_of(c).is_none_or(|t| t > need));
        if !fresh {
            let got = self
                .provider
                .provide_credentials()
                .await
                .map_err(|e| UploadError::Credentials(e.to_string()))?;
            *last = Some(got);
        }
        let Some(c) = last.as_ref() else {
            return Err(UploadError::Credentials("none given".into()));
        };
        Ok((
            S3Credential::new(
                c.access_key_id().to_owned(),
                c.secret_access_key().to_owned(),
                c.session_token().map(str::to_owned),
            ),
            expiry_of(c),
        ))
    }
}

/// Without the `aws` feature there is no S3 credential chain.
#[cfg(not(feature = "aws"))]
struct Credentials;

#[cfg(not(feature = "aws"))]
impl Credentials {
    async fn start(_region: Option<&str>) -> Result<(Self, String), UploadError> {
        Err(UploadError::NotBuilt)
    }

    async fn current(
        &self,
        _now: i64,
        _lifetime: Duration,
    ) -> Result<(S3Credential, Option<i64>), UploadError> {
        Err(UploadError::NotBuilt)
    }
}

#[cfg(all(test, feature = "aws"))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, UNIX_EPOCH};

    use aws_credential_types::provider::SharedCredentialsProvider;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    /// An uploader whose chain hands out credentials expiring `ttl` seconds
    /// after `NOW` (`None`: a long-lived key), counting its calls.
    fn uploader(ttl: Option<u64>, calls: Arc<AtomicUsize>) -> Uploader {
        let provider = aws_credential_types::credential_fn::provide_credentials_fn(move || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let expiry = ttl.map(|t| UNIX_EPOCH + Duration::from_secs(NOW as u64 + t));
            async move {
                Ok(aws_credential_types::Credentials::new(
                    format!("AKIAEXAMPLE{n}"),
                    "secret",
                    ttl.map(|_| "token".to_owned()),
                    expiry,
                    "test",
                ))
            }
        });
        Uploader {
            bucket: S3Bucket {
                bucket: "task-output".into(),
                region: "eu-west-1".into(),
                endpoint_url: Some("http://127.0.0.1:4568".into()),
            },
            prefix: "tenant-a/".into(),
            expiry: Duration::from_secs(300),
            max_size: 1 << 20,
            encrypt_to: None,
            creds: Credentials {
                provider: SharedCredentialsProvider::new(provider),
                last: tokio::sync::Mutex::new(None),
            },
        }
    }

    fn query(m: &Minted, key: &str) -> String {
        url::Url::parse(m.signed.expose_url())
            .ok()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.into_owned())
            })
            .unwrap_or_default()
    }

    const C: Constraints<'static> = Constraints {
        size: 3,
        sha256: None,
        content_type: None,
    };

    #[tokio::test]
    async fn a_long_lived_key_is_fetched_once_and_urls_live_the_full_expiry() {
        let calls = Arc::new(AtomicUsize::new(0));
        let u = uploader(None, Arc::clone(&calls));
        for i in 0..3 {
            let m = u.mint_at("tenant-a/a/b".into(), &C, NOW + i).await.unwrap();
            assert_eq!(m.expires_at, NOW + i + 300);
            assert_eq!(query(&m, "X-Amz-Expires"), "300");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_url_signed_with_temporary_credentials_dies_with_them() {
        // Credentials with 100s left, but every fetch gives the same: the
        // URL is signed for 100s and `expires_at` says so.
        let calls = Arc::new(AtomicUsize::new(0));
        let u = uploader(Some(100), Arc::clone(&calls));
        let m = u.mint_at("tenant-a/a/b".into(), &C, NOW).await.unwrap();
        assert_eq!(m.expires_at, NOW + 100);
        assert_eq!(query(&m, "X-Amz-Expires"), "100");
        assert_eq!(query(&m, "X-Amz-Security-Token"), "token");
        // They would expire within a URL's lifetime, so each mint asks the
        // chain again for fresher ones.
        u.mint_at("tenant-a/a/b".into(), &C, NOW).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn temporary_credentials_that_outlive_a_url_are_reused() {
        let calls = Arc::new(AtomicUsize::new(0));
        let u = uploader(Some(3600), Arc::clone(&calls));
        let m = u.mint_at("tenant-a/a/b".into(), &C, NOW).await.unwrap();
        assert_eq!(m.expires_at, NOW + 300);
        u.mint_at("tenant-a/a/b".into(), &C, NOW + 60)
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Past the point where a URL would outlive them: fetched again.
        u.mint_at("tenant-a/a/b".into(), &C, NOW + 3400)
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
