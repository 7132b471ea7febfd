//! Validation of `[uploads]` (DESIGN.md, "Task output uploads").

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{aws_region, duration, prefix, url};
use crate::config::{ConfigError, UploadBackend, UploadsConfig, invalid};

/// The longest a URL may live (the contract's cap).
const MAX_EXPIRY: std::time::Duration = crate::upload::MAX_EXPIRY;
/// S3's largest single `PUT` (5 GiB): a bigger object needs a multipart
/// upload, which one signed URL cannot do.
const S3_MAX_PUT: u64 = 5 * 1024 * 1024 * 1024;

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
    // gcs and azure: named so that their configs are refused as a backend
    // this build lacks, not as unknown keys.
    service_account_file: Option<IgnoredAny>,
    endpoint: Option<IgnoredAny>,
    account: Option<IgnoredAny>,
    account_key_file: Option<IgnoredAny>,
    // SECURITY: inline credentials are named only to be refused without
    // quoting them (see `RawStore`).
    access_key_id: Option<IgnoredAny>,
    secret_access_key: Option<IgnoredAny>,
    session_token: Option<IgnoredAny>,
    account_key: Option<IgnoredAny>,
    private_key: Option<IgnoredAny>,
}

impl RawUploads {
    pub(super) fn validate(self) -> Result<UploadsConfig, ConfigError> {
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
                "upload credentials are never inline in the config; s3 keys come from the AWS default credential chain",
            ));
        }
        let backend = self.backend.as_deref().unwrap_or("s3");
        match backend {
            "s3" => {}
            "gcs" | "azure" => {
                return Err(invalid(
                    "uploads.backend",
                    format!("`{backend}` uploads are not available in this build; use \"s3\""),
                ));
            }
            other => {
                return Err(invalid(
                    "uploads.backend",
                    format!("`{other}` is not one of s3, gcs, azure"),
                ));
            }
        }
        let foreign = [
            ("service_account_file", self.service_account_file.is_some()),
            ("endpoint", self.endpoint.is_some()),
            ("account", self.account.is_some()),
            ("account_key_file", self.account_key_file.is_some()),
        ];
        if let Some((key, _)) = foreign.iter().find(|(_, set)| *set) {
            return Err(invalid(
                format!("uploads.{key}"),
                "does not apply to backend `s3`; remove it (s3 takes region and endpoint_url)",
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
        if !s3_bucket_name(&bucket) {
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
        if max_size > S3_MAX_PUT {
            return Err(invalid(
                "uploads.max_size",
                "must be at most 5GiB: S3's largest single PUT",
            ));
        }
        if let Some(r) = &self.region {
            aws_region("uploads.region", r)?;
        }
        let endpoint_url = self
            .endpoint_url
            .map(|u| url("uploads.endpoint_url", u))
            .transpose()?;
        Ok(UploadsConfig {
            bucket,
            prefix,
            expiry,
            max_size,
            encrypt_to,
            backend: UploadBackend::S3 {
                region: self.region,
                endpoint_url,
            },
        })
    }
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
