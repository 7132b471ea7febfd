//! Validation of `[uploads]` (DESIGN.md, "Task output uploads").

use std::path::Path;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{aws_region, duration, prefix, url};
use crate::config::{ConfigError, UploadBackend, UploadsConfig, invalid, resolve};

/// The longest a URL may live (the contract's cap).
const MAX_EXPIRY: std::time::Duration = crate::upload::MAX_EXPIRY;
/// S3's largest single `PUT` (5 GiB): a bigger object needs a multipart
/// upload, which one signed URL cannot do.
const S3_MAX_PUT: u64 = 5 * 1024 * 1024 * 1024;
/// Azure's largest single Put Blob (5000 MiB, service versions 2019-12-12
/// and later).
const AZURE_MAX_PUT: u64 = 5000 * 1024 * 1024;
/// GCS's largest object (5 TiB), which one `PUT` may upload.
const GCS_MAX_PUT: u64 = 5 * 1024 * 1024 * 1024 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUploads {
    backend: Option<String>,
    bucket: Option<String>,
    prefix: Option<String>,
    expiry: Option<String>,
    max_size: Option<toml::Value>,
    encrypt_to: Option<String>,
    // s3
    region: Option<String>,
    endpoint_url: Option<String>,
    // azure
    account: Option<String>,
    account_key_file: Option<String>,
    // gcs
    service_account_file: Option<String>,
    // azure and gcs
    endpoint: Option<String>,
    // SECURITY: inline credentials are named only to be refused without
    // quoting them (see `RawStore`).
    access_key_id: Option<IgnoredAny>,
    secret_access_key: Option<IgnoredAny>,
    session_token: Option<IgnoredAny>,
    account_key: Option<IgnoredAny>,
    private_key: Option<IgnoredAny>,
}

impl RawUploads {
    pub(super) fn validate(self, base: &Path) -> Result<UploadsConfig, ConfigError> {
        let inline = [
            ("access_key_id", self.access_key_id.is_some()),
            ("secret_access_key", self.secret_access_key.is_some()),
            ("session_token", self.session_token.is_some()),
            ("account_key", self.account_key.is_some()),
            ("private_key", self.private_key.is_some()),
        ];
        if let Some((key, _)) = inline.iter().find(|(_, set)| *set) {
            return Err(invalid(
                format!("uploads.{key}"),
                "upload credentials are never inline in the config; s3 keys come from the AWS default credential chain, a gcs key from service_account_file, azure's account key from account_key_file",
            ));
        }
        let backend = self.backend.as_deref().unwrap_or("s3");
        // The keys each backend takes; any other backend's key is refused.
        let (takes, max_put): (&[&str], u64) = match backend {
            "s3" => (&["region", "endpoint_url"], S3_MAX_PUT),
            "azure" => (&["account", "account_key_file", "endpoint"], AZURE_MAX_PUT),
            "gcs" => (&["service_account_file", "endpoint"], GCS_MAX_PUT),
            other => {
                return Err(invalid(
                    "uploads.backend",
                    format!("`{other}` is not one of s3, gcs, azure"),
                ));
            }
        };
        let set = [
            ("region", self.region.is_some()),
            ("endpoint_url", self.endpoint_url.is_some()),
            ("service_account_file", self.service_account_file.is_some()),
            ("endpoint", self.endpoint.is_some()),
            ("account", self.account.is_some()),
            ("account_key_file", self.account_key_file.is_some()),
        ];
        if let Some((key, _)) = set.iter().find(|(k, s)| *s && !takes.contains(k)) {
            return Err(invalid(
                format!("uploads.{key}"),
                format!(
                    "does not apply to backend `{backend}`; remove it ({backend} takes {})",
                    takes.join(", ")
                ),
            ));
        }
        // The canonical (lowercase) form, checked as the client will check
        // it: a bad recipient stops the broker, not every task's upload.
        let encrypt_to = self
            .encrypt_to
            .map(|r| {
                crate::upload::encrypt::Recipient::parse(&r)
                    .map(|r| r.to_string())
                    .map_err(|e| invalid("uploads.encrypt_to", e.to_string()))
            })
            .transpose()?;
        let bucket = self.bucket.ok_or_else(|| {
            invalid(
                "uploads.bucket",
                "is required: the bucket task output goes to, e.g. \"task-output\"",
            )
        })?;
        if backend == "azure" && !crate::upload::azure::valid_container(&bucket) {
            return Err(invalid(
                "uploads.bucket",
                format!(
                    "`{bucket}` is not an Azure container name (3 to 63 of a-z, 0-9 and `-`, starting and ending with a letter or digit, no `--`)"
                ),
            ));
        }
        if backend == "gcs" && !crate::upload::gcs::valid_bucket(&bucket) {
            return Err(invalid(
                "uploads.bucket",
                format!(
                    "`{bucket}` is not a GCS bucket name (3 to 63 of a-z, 0-9, `-`, `_` and `.`, starting and ending with a letter or digit)"
                ),
            ));
        }
        if backend == "s3" && !s3_bucket_name(&bucket) {
            return Err(invalid(
                "uploads.bucket",
                format!(
                    "`{bucket}` is not an S3 bucket name (3 to 63 of a-z, 0-9, `.` and `-`, starting and ending with a letter or digit)"
                ),
            ));
        }
        // INVARIANT: "" or scope segments ending in `/`, so `prefix + path`
        // is always a clean object name (no `//`, `.` or `..` segment).
        let prefix = prefix("uploads.prefix", self.prefix.as_deref().unwrap_or(""))?;
        let expiry = duration("uploads.expiry", self.expiry.as_deref(), "5m")?;
        if expiry.is_zero() || expiry > MAX_EXPIRY {
            return Err(invalid(
                "uploads.expiry",
                "must be between 1s and 1h (a URL is a credential; keep it short)",
            ));
        }
        if expiry.subsec_nanos() != 0 {
            return Err(invalid("uploads.expiry", "must be whole seconds"));
        }
        let max_size = match self.max_size {
            None => 1024 * 1024 * 1024,
            Some(toml::Value::Integer(n)) => u64::try_from(n)
                .map_err(|_| invalid("uploads.max_size", "must be at least 1 byte"))?,
            Some(toml::Value::String(s)) => {
                parse_size(&s).map_err(|m| invalid("uploads.max_size", m))?
            }
            Some(_) => {
                return Err(invalid(
                    "uploads.max_size",
                    "must be a size such as \"1GiB\" or \"512MiB\", or a number of bytes",
                ));
            }
        };
        if max_size == 0 {
            return Err(invalid("uploads.max_size", "must be at least 1 byte"));
        }
        if max_size > max_put {
            return Err(invalid(
                "uploads.max_size",
                match backend {
                    "azure" => "must be at most 5000MiB: Azure's largest single Put Blob",
                    "gcs" => "must be at most 5TiB: GCS's largest object",
                    _ => "must be at most 5GiB: S3's largest single PUT",
                },
            ));
        }
        let backend = match backend {
            "azure" => azure(base, self.account, self.account_key_file, self.endpoint)?,
            "gcs" => gcs(base, self.service_account_file, self.endpoint)?,
            _ => s3(self.region, self.endpoint_url)?,
        };
        Ok(UploadsConfig {
            bucket,
            prefix,
            expiry,
            max_size,
            encrypt_to,
            backend,
        })
    }
}

fn s3(region: Option<String>, endpoint_url: Option<String>) -> Result<UploadBackend, ConfigError> {
    if let Some(r) = &region {
        aws_region("uploads.region", r)?;
    }
    let endpoint_url = endpoint_url
        .map(|u| url("uploads.endpoint_url", u))
        .transpose()?;
    Ok(UploadBackend::S3 {
        region,
        endpoint_url,
    })
}

fn gcs(
    base: &Path,
    service_account_file: Option<String>,
    endpoint: Option<String>,
) -> Result<UploadBackend, ConfigError> {
    // SECURITY: the key is read from this file when the broker starts,
    // never taken inline.
    let service_account_file = service_account_file.ok_or_else(|| {
        invalid(
            "uploads.service_account_file",
            "is required with backend `gcs`: the service account's JSON key file that signs upload URLs",
        )
    })?;
    let endpoint = endpoint.map(|u| url("uploads.endpoint", u)).transpose()?;
    if let Some(e) = &endpoint {
        let rest = e.split_once("://").map_or("", |(_, r)| r);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(invalid(
                "uploads.endpoint",
                format!(
                    "`{e}` must be scheme://host[:port] and nothing more (URLs are {{endpoint}}/{{bucket}}/{{object}})"
                ),
            ));
        }
    }
    Ok(UploadBackend::Gcs {
        service_account_file: resolve(base, &service_account_file),
        endpoint,
    })
}

fn azure(
    base: &Path,
    account: Option<String>,
    account_key_file: Option<String>,
    endpoint: Option<String>,
) -> Result<UploadBackend, ConfigError> {
    let account = account.ok_or_else(|| {
        invalid(
            "uploads.account",
            "is required for backend `azure`: the storage account's name, e.g. \"taskoutput\"",
        )
    })?;
    if !crate::upload::azure::valid_account(&account) {
        return Err(invalid(
            "uploads.account",
            format!("`{account}` is not an Azure storage account name (3 to 24 of a-z and 0-9)"),
        ));
    }
    // SECURITY: the key is read from this file when the broker starts,
    // never taken inline.
    let account_key_file = account_key_file.map(|p| resolve(base, &p)).ok_or_else(|| {
            invalid(
                "uploads.account_key_file",
                "is required for backend `azure`: a file holding the storage account's key (base64, as `az storage account keys list` shows it)",
            )
        })?;
    let endpoint = endpoint.map(|u| url("uploads.endpoint", u)).transpose()?;
    Ok(UploadBackend::Azure {
        account,
        account_key_file,
        endpoint,
    })
}

/// S3's bucket naming rules (the general-purpose bucket ones).
fn s3_bucket_name(b: &str) -> bool {
    let edge = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'-'))
        && edge(b.bytes().next())
        && edge(b.bytes().last())
        && !b.contains("..")
}

/// Parses a size: a whole number with an optional unit, binary (`KiB`,
/// `MiB`, `GiB`, `TiB`) or decimal (`B`, `KB`, `MB`, `GB`, `TB`).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size such as \"1GiB\" or \"512MiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit; use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}
