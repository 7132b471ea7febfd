//! The broker's side of uploads: `[uploads]`, the signing credential and
//! the clock, joined so that a URL is minted only for a permitted upload.
//!
//! S3: the signing key comes from the AWS default credential chain once at
//! start and again whenever it would expire within a URL's lifetime; a
//! mint itself makes no network call. With temporary credentials (a role,
//! IMDS, web identity) the session token is part of the URL, and the URL
//! dies with them: `expires_at` then says the earlier of the two.
//!
//! Azure: the account key is read from `account_key_file` once at start
//! (a rotated key takes a restart). GCS: the service account's key file is
//! read once at start.

use std::time::Duration;

use zeroize::Zeroizing;

use super::azure::{AzureContainer, AzureKey, KeyFileError};
use super::gcs::{GcsBucket, GcsKey};
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
    /// The Azure account key file is missing, unreadable or not a key.
    #[error(transparent)]
    AzureKey(#[from] KeyFileError),
    /// This build has no S3 support (the `aws` feature is off).
    #[error("s3 uploads are not available in this build (built without the `aws` feature)")]
    NotBuilt,
    /// The GCS service account key file cannot be read.
    #[error("cannot read [uploads] service_account_file `{path}`: {source}")]
    KeyFileRead {
        /// The file.
        path: std::path::PathBuf,
        /// The OS's reason (`No such file or directory`, …).
        source: std::io::Error,
    },
    /// The GCS service account key file is not a usable key.
    #[error("[uploads] service_account_file `{path}` {reason}")]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it (never a part of it).
        reason: super::gcs::KeyError,
    },
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
    signer: Signer,
    prefix: String,
    expiry: Duration,
    max_size: u64,
    encrypt_to: Option<String>,
}

/// The cloud a URL is signed for, with what signs it.
enum Signer {
    S3 {
        bucket: S3Bucket,
        creds: Credentials,
    },
    Azure {
        at: AzureContainer,
        key: AzureKey,
    },
    Gcs {
        bucket: GcsBucket,
        key: GcsKey,
    },
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SECURITY: where it signs for, never the credential or key.
        match self {
            Self::S3 { bucket, .. } => f.debug_tuple("S3").field(bucket).finish(),
            Self::Azure { at, .. } => f.debug_tuple("Azure").field(at).finish(),
            Self::Gcs { bucket, .. } => f.debug_tuple("Gcs").field(bucket).finish(),
        }
    }
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("signer", &self.signer)
            .field("prefix", &self.prefix)
            .field("expiry", &self.expiry)
            .field("max_size", &self.max_size)
            .field("encrypt_to", &self.encrypt_to)
            .finish_non_exhaustive()
    }
}

impl Uploader {
    /// Builds the uploader: resolves the signing credential (S3: the
    /// region and a first credential from the AWS default chain; Azure: the
    /// account key file; GCS: the service account key file), and signs a probe URL so that a bad bucket or
    /// endpoint stops the broker at start, not at a task's mint.
    pub async fn start(config: &UploadsConfig) -> Result<Self, UploadError> {
        let signer = match &config.backend {
            UploadBackend::S3 {
                region,
                endpoint_url,
            } => {
                let (creds, region) = Credentials::start(region.as_deref()).await?;
                Signer::S3 {
                    bucket: S3Bucket {
                        bucket: config.bucket.clone(),
                        region,
                        endpoint_url: endpoint_url.clone(),
                    },
                    creds,
                }
            }
            UploadBackend::Azure {
                account,
                account_key_file,
                endpoint,
            } => Signer::Azure {
                at: AzureContainer {
                    account: account.clone(),
                    container: config.bucket.clone(),
                    endpoint: endpoint.clone(),
                },
                key: AzureKey::read(account_key_file)?,
            },
            UploadBackend::Gcs {
                service_account_file,
                endpoint,
            } => Signer::Gcs {
                bucket: GcsBucket {
                    bucket: config.bucket.clone(),
                    endpoint: endpoint.clone(),
                },
                key: read_gcs_key(service_account_file)?,
            },
        };
        let uploader = Self {
            signer,
            prefix: config.prefix.clone(),
            expiry: config.expiry,
            max_size: config.max_size,
            encrypt_to: config.encrypt_to.clone(),
        };
        let object = format!("{}probe", uploader.prefix);
        let c = Constraints {
            size: 1,
            sha256: None,
            content_type: None,
        };
        let now = unix_now();
        match &uploader.signer {
            Signer::S3 { bucket, .. } => {
                let probe = S3Credential::new("probe".into(), "probe".into(), None);
                super::s3::sign(&probe, bucket, &object, uploader.expiry, now, &c)?;
            }
            Signer::Azure { at, key } => {
                super::azure::sign(key, at, &object, uploader.expiry, now, &c)?;
            }
            Signer::Gcs { bucket, key } => {
                super::gcs::sign(key, bucket, &object, uploader.expiry, now, &c)?;
            }
        }
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
        let (signed, lifetime) = match &self.signer {
            Signer::S3 { bucket, creds } => {
                let (cred, cred_expiry) = creds.current(now, self.expiry).await?;
                // A URL signed with temporary credentials dies with them:
                // sign it for no longer than they live, so `expires_at`
                // tells the truth.
                let lifetime = match cred_expiry {
                    Some(t) => {
                        let left = u64::try_from(t.saturating_sub(now)).unwrap_or(0);
                        self.expiry.min(Duration::from_secs(left.max(1)))
                    }
                    None => self.expiry,
                };
                let signed = super::s3::sign(&cred, bucket, &object, lifetime, now, c)?;
                (signed, lifetime)
            }
            Signer::Azure { at, key } => {
                let signed = super::azure::sign(key, at, &object, self.expiry, now, c)?;
                (signed, self.expiry)
            }
            Signer::Gcs { bucket, key } => {
                let signed = super::gcs::sign(key, bucket, &object, self.expiry, now, c)?;
                (signed, self.expiry)
            }
        };
        Ok(Minted {
            object,
            signed,
            expires_at: now.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(0)),
        })
    }
}

/// Reads and parses a GCS service account key file. SECURITY: the file's
/// bytes are zeroized once parsed, and errors name the file and the fault,
/// never a part of it.
fn read_gcs_key(path: &std::path::Path) -> Result<GcsKey, UploadError> {
    let bytes =
        std::fs::read(path)
            .map(Zeroizing::new)
            .map_err(|source| UploadError::KeyFileRead {
                path: path.to_owned(),
                source,
            })?;
    GcsKey::from_json(&bytes).map_err(|reason| UploadError::KeyFile {
        path: path.to_owned(),
        reason,
    })
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
            signer: Signer::S3 {
                bucket: S3Bucket {
                    bucket: "task-output".into(),
                    region: "eu-west-1".into(),
                    endpoint_url: Some("http://127.0.0.1:4568".into()),
                },
                creds: Credentials {
                    provider: SharedCredentialsProvider::new(provider),
                    last: tokio::sync::Mutex::new(None),
                },
            },
            prefix: "tenant-a/".into(),
            expiry: Duration::from_secs(300),
            max_size: 1 << 20,
            encrypt_to: None,
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
