//! Configuration: a raw `deny_unknown_fields` TOML layer, then a validated,
//! typed [`Config`]. Every key has a default; errors name the key and say
//! what to write instead.

mod duration;
mod include;
mod raw;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::parse_duration;

use crate::identity::{CertRule, PrincipalKind, PrincipalSpec, TokenDigest};
use crate::secret::ScopePath;

/// Default socket path when neither config nor environment names one.
pub const DEFAULT_SOCKET: &str = "/run/secret-broker/api.sock";

/// A config that could not be loaded. Maps to exit code 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config `{path}`: {source}")]
    Read {
        /// The config path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys.
    #[error("config `{path}` is not valid: {message}")]
    Parse {
        /// The config path.
        path: String,
        /// TOML's own message (with line and column).
        message: String,
    },
    /// A key has a bad value.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// A bad value in a file named by `include`.
    #[error("in included config `{path}`: {source}")]
    Included {
        /// The included file.
        path: String,
        /// The error in it.
        source: Box<ConfigError>,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Where the API listens.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// The Unix socket path.
    pub socket: PathBuf,
    /// The socket file's mode (default 0660).
    pub mode: u32,
    /// The socket file's group, if not the broker's own.
    pub group: Option<u32>,
    /// `[listen.tls]`: the mutual-TLS listener for remote writers, if on.
    pub tls: Option<TlsListenConfig>,
}

/// The lowest TLS version the listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMinVersion {
    /// TLS 1.3 only (the default).
    Tls13,
    /// TLS 1.2 with ECDHE AES-256-GCM / CHACHA20-POLY1305 suites, too.
    Tls12,
}

/// `[listen.tls]`: the mutual-TLS listener.
#[derive(Debug, Clone)]
pub struct TlsListenConfig {
    /// Where to listen.
    pub addr: std::net::SocketAddr,
    /// The server certificate chain (PEM).
    pub cert: PathBuf,
    /// The server private key (PEM).
    pub key: PathBuf,
    /// The CA bundle client certificates must chain to (PEM).
    pub client_ca: PathBuf,
    /// CRL files (PEM or DER).
    pub crl: Vec<PathBuf>,
    /// The lowest protocol version.
    pub min_version: TlsMinVersion,
    /// Connections older than this are closed after their in-flight request.
    pub max_connection_age: Duration,
}

/// Which store holds the values.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// The embedded encrypted database.
    Embedded {
        /// The database file.
        path: PathBuf,
        /// The 32-byte AES-256-GCM key file.
        key_file: PathBuf,
    },
    /// HashiCorp Vault (or OpenBao), KV v2.
    Vault(VaultConfig),
    /// AWS Secrets Manager.
    Aws(AwsConfig),
    /// Google Secret Manager.
    Gcp(GcpConfig),
    /// Azure Key Vault.
    Azure(AzureConfig),
}

impl StoreConfig {
    /// The backend name, as in `store.backend`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Embedded { .. } => "embedded",
            Self::Vault(_) => "vault",
            Self::Aws(_) => "aws",
            Self::Gcp(_) => "gcp",
            Self::Azure(_) => "azure",
        }
    }
}

/// Settings every remote store shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    /// Prepended to every path: `""` or segments ending in `/` (`"team/"`).
    pub prefix: String,
    /// How long one store call may take (default 5s).
    pub timeout: Duration,
}

/// The `vault` store. Holds file paths, never a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultConfig {
    /// `https://vault.example:8200` (`http://` only for loopback).
    pub address: String,
    /// The KV v2 mount (default `secret`).
    pub mount: String,
    /// The Vault namespace (Enterprise / OpenBao), if any.
    pub namespace: Option<String>,
    /// A PEM CA bundle; when set, the server must chain to it alone.
    pub ca_file: Option<PathBuf>,
    /// How the broker logs in.
    pub auth: VaultAuth,
    /// Prefix and timeout.
    pub remote: RemoteConfig,
}

/// How the `vault` store authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    /// A token from `token_file`, else from `$VAULT_TOKEN` at start.
    Token {
        /// The file holding the token (re-read when it changes).
        token_file: Option<PathBuf>,
    },
    /// AppRole login at `auth/approle`.
    AppRole {
        /// The role id (an identifier, not a secret).
        role_id: String,
        /// The file holding the secret id.
        secret_id_file: PathBuf,
    },
    /// Kubernetes service-account login at `auth/kubernetes`.
    Kubernetes {
        /// The Vault role.
        role: String,
        /// The service-account token file (re-read at every login).
        jwt_file: PathBuf,
    },
}

/// The `aws` store. Credentials come from the AWS default chain only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsConfig {
    /// The region; default: the chain's (`$AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Another endpoint (e.g. a VPC endpoint or a local test server).
    pub endpoint_url: Option<String>,
    /// Prefix and timeout.
    pub remote: RemoteConfig,
}

/// The `gcp` store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcpConfig {
    /// The Google Cloud project id that holds the secrets.
    pub project: String,
    /// Another endpoint (a private endpoint or a local test server).
    pub endpoint: Option<String>,
    /// Where credentials come from.
    pub credentials: GcpCredentials,
    /// Prefix and timeout.
    pub remote: RemoteConfig,
}

/// How the `gcp` store authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcpCredentials {
    /// Application Default Credentials: `$GOOGLE_APPLICATION_CREDENTIALS`,
    /// gcloud's file, or the metadata server (workload identity).
    Default,
    /// No credentials at all: only for a local test server.
    Anonymous,
}

/// The `azure` store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureConfig {
    /// `https://NAME.vault.azure.net`.
    pub vault_url: String,
    /// Where credentials come from.
    pub credentials: AzureCredentials,
    /// Prefix and timeout.
    pub remote: RemoteConfig,
}

/// How the `azure` store authenticates. Holds ids and file paths only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureCredentials {
    /// Workload identity if its environment is set, else managed identity.
    Default,
    /// Workload identity federation: `$AZURE_TENANT_ID`, `$AZURE_CLIENT_ID`,
    /// `$AZURE_FEDERATED_TOKEN_FILE` (as the AKS webhook sets them).
    Workload,
    /// A service principal's client secret, read from a file.
    ClientSecret {
        /// The Entra ID tenant.
        tenant_id: String,
        /// The application (client) id.
        client_id: String,
        /// The file holding the client secret (re-read at every token).
        client_secret_file: PathBuf,
    },
}

/// `[uploads]`: where task output goes and what a minted URL allows.
/// Holds names, file paths and limits only: the signing key comes from the
/// backend's credential chain (s3) or key file (gcs, azure) at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadsConfig {
    /// The bucket the output goes to.
    pub bucket: String,
    /// Prepended to every object name: `""` or segments ending in `/`.
    pub prefix: String,
    /// How long a minted URL lives (default 5m, at most 1h).
    pub expiry: Duration,
    /// The largest upload a URL is minted for, in bytes (default 1 GiB).
    pub max_size: u64,
    /// The tenant's age X25519 recipient (canonical `age1…`): `upload`
    /// encrypts to it before uploading. Checked at load.
    pub encrypt_to: Option<String>,
    /// The cloud and its settings.
    pub backend: UploadBackend,
}

/// Which cloud `[uploads]` signs for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadBackend {
    /// Amazon S3 or an S3-compatible server; keys from the AWS default chain.
    S3 {
        /// The bucket's region; default: the chain's (`$AWS_REGION`, profile).
        region: Option<String>,
        /// An S3-compatible endpoint (URLs are then path-style).
        endpoint_url: Option<String>,
    },
    /// Azure Blob Storage; URLs are service SAS signed with the account key.
    Azure {
        /// The storage account's name.
        account: String,
        /// The file holding the account key (base64), read at start.
        account_key_file: PathBuf,
        /// The blob service URL (e.g. Azurite's
        /// `http://127.0.0.1:10000/devstoreaccount1`); default
        /// `https://{account}.blob.core.windows.net`.
        endpoint: Option<String>,
    },
    /// Google Cloud Storage; URLs signed with a service account's key.
    Gcs {
        /// The service account's JSON key file (read at start; never
        /// inline in the config).
        service_account_file: PathBuf,
        /// Another endpoint than `https://storage.googleapis.com`.
        endpoint: Option<String>,
    },
}

/// Read cache settings.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// How long a read stays cached (0 disables the cache).
    pub ttl: Duration,
    /// How long past `ttl` a cached value may be served while the store fails.
    pub stale_if_error: Duration,
}

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    /// Standard output, one JSON line per request.
    Stdout,
    /// Appended to a file.
    File(PathBuf),
}

/// What the broker does when an audit line cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditOnFailure {
    /// Fail closed (the default): the request is answered `503
    /// unavailable` instead, and requests are refused until a line can be
    /// written again. A security product does not serve what it cannot
    /// record.
    #[default]
    Refuse,
    /// Serve anyway (availability over the record); the failure is logged
    /// and counted.
    Serve,
}

/// Operational log format (logs go to stderr; audit goes to its sink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

/// Operational logging.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `secret_broker=debug`.
    pub level: String,
}

/// Connection and request limits, enforced while reading.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at once; more are answered `429` and closed.
    pub max_connections: usize,
    /// Requests being handled at once; more are answered `429`.
    pub max_in_flight: usize,
    /// Open connections of one peer uid at once; more are answered `429`
    /// and closed (default: half of `max_connections`).
    pub max_connections_per_uid: usize,
    /// Requests of one principal being handled at once; more are answered
    /// `429` (default: half of `max_in_flight`).
    pub max_in_flight_per_principal: usize,
    /// Largest secret value, in bytes.
    pub max_value_bytes: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Time allowed to receive a request's head.
    pub header_timeout: Duration,
    /// Time allowed to receive a request's body.
    pub body_timeout: Duration,
    /// Time allowed for in-flight requests to finish on shutdown.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_in_flight: 256,
            max_connections_per_uid: 512,
            max_in_flight_per_principal: 128,
            max_value_bytes: 64 * 1024,
            max_body_bytes: 2 * 64 * 1024 + 16 * 1024,
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Which tokio runtime `serve` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeFlavor {
    /// One thread for all connections (plus blocking-pool threads for store I/O).
    CurrentThread,
    /// A work-stealing pool of worker threads.
    MultiThread,
    /// One current-thread runtime per worker thread, each serving the
    /// connections handed to it in turn (accept, signals and background
    /// work on the main thread).
    PerCore,
}

/// `[runtime]`: the async runtime's shape.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeConfig {
    /// Current-thread or multi-thread.
    pub flavor: RuntimeFlavor,
    /// Worker threads for `multi_thread` and `per_core` (default: one per core).
    pub worker_threads: Option<usize>,
    /// Of the `per_core` workers, how many serve the Unix socket's
    /// connections (default: half, rounded up; the TLS listener's go to
    /// all of them).
    pub socket_workers: Option<usize>,
    /// Preemptions per request at or above which a socket worker moves
    /// connections to the other workers (`None`: it never does).
    pub spread_preempted: Option<f64>,
    /// How long a `per_core` worker polls its connections before sleeping
    /// (zero: never).
    pub idle_spin: std::time::Duration,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listener settings.
    pub listen: ListenConfig,
    /// Store selection and settings.
    pub store: StoreConfig,
    /// Read cache.
    pub cache: CacheConfig,
    /// Directory with `schema.cedarschema` and `*.cedar`.
    pub policy_dir: PathBuf,
    /// Audit sink.
    pub audit: AuditSink,
    /// `[audit] spool`: keep a file sink's request lines crash-safe in a
    /// spool beside it before each answer, appending them right after it
    /// (`true`), or append each line before its answer (`false`, the
    /// default).
    pub audit_spool: bool,
    /// `[audit] on_failure`: what a request gets when its audit line cannot
    /// be written.
    pub audit_on_failure: AuditOnFailure,
    /// Operational logs.
    pub log: LogConfig,
    /// Limits.
    pub limits: Limits,
    /// The async runtime.
    pub runtime: RuntimeConfig,
    /// `[memory] lock`: lock all memory into RAM (no swap) at start.
    pub memory_lock: bool,
    /// Where to serve Prometheus metrics (`[metrics] addr`); off when `None`.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Who may call, and how they prove it.
    pub principals: Vec<PrincipalSpec>,
    /// `[uploads]`: signed upload URLs for task output; off when `None`.
    pub uploads: Option<UploadsConfig>,
}

impl Config {
    /// Reads and validates a config file. Relative paths inside it are
    /// resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, &path.display().to_string(), base)
    }

    /// Parses and validates config text; `name` is used in errors and
    /// relative paths resolve against `base`. Files named by its top-level
    /// `include` are read from disk and their tables joined in; a table may
    /// be set in one file only.
    pub fn from_toml(text: &str, name: &str, base: &Path) -> Result<Self, ConfigError> {
        include::load(text, name, base)
    }
}

/// Parses an octal file mode such as `"0660"`.
fn parse_mode(s: &str) -> Result<u32, ConfigError> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(invalid(
            "listen.mode",
            format!("`{s}` is not an octal file mode such as \"0660\""),
        )),
    }
}

/// Resolves a group name or numeric gid via `/etc/group`.
fn resolve_group(s: &str) -> Result<u32, ConfigError> {
    if let Ok(gid) = s.parse::<u32>() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let gid = f.nth(1)?.parse::<u32>().ok()?;
            (name == s).then_some(gid)
        })
        .next()
        .ok_or_else(|| {
            invalid(
                "listen.group",
                format!("no group `{s}` in /etc/group; give a numeric gid instead"),
            )
        })
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@'))
}

fn principal_kind(key: &str, s: &str) -> Result<PrincipalKind, ConfigError> {
    match s {
        "Component" => Ok(PrincipalKind::Component),
        "Task" => Ok(PrincipalKind::Task),
        other => Err(invalid(
            key,
            format!("`{other}` is not a principal type; use \"Component\" or \"Task\""),
        )),
    }
}

fn token_digest(key: &str, s: &str) -> Result<TokenDigest, ConfigError> {
    if s.trim().len() != 64 {
        return Err(invalid(
            key,
            "must be the 64 hex digits of a SHA-256 (e.g. `printf %s \"$TOKEN\" | sha256sum`)",
        ));
    }
    TokenDigest::from_hex(s).ok_or_else(|| invalid(key, "is not hex"))
}

/// The certificate rule of a principal's `spiffe_id` / `cert_dns_name` /
/// `cert_spki_sha256`, if it has one.
fn cert_rule(
    key: &dyn Fn(&str) -> String,
    spiffe_id: Option<&str>,
    dns: Option<&str>,
    pin: Option<&str>,
) -> Result<Option<CertRule>, ConfigError> {
    use crate::identity::cert::{self, CertSubject};
    let subject = match (spiffe_id, dns) {
        (Some(id), None) => {
            cert::valid_spiffe_id(id)
                .map_err(|m| invalid(key("spiffe_id"), format!("`{id}` {m}")))?;
            CertSubject::SpiffeId(id.to_owned())
        }
        (None, Some(d)) => CertSubject::DnsName(
            cert::dns_name(d).map_err(|m| invalid(key("cert_dns_name"), format!("`{d}` {m}")))?,
        ),
        (Some(_), Some(_)) => {
            return Err(invalid(
                key("cert_dns_name"),
                "a principal names its certificate by `spiffe_id` or by `cert_dns_name`, not both",
            ));
        }
        (None, None) if pin.is_some() => {
            return Err(invalid(
                key("cert_spki_sha256"),
                "a pin is added to `spiffe_id` or `cert_dns_name`; name the certificate too",
            ));
        }
        (None, None) => return Ok(None),
    };
    let spki_sha256 = pin
        .map(|p| cert::spki_pin(p).map_err(|m| invalid(key("cert_spki_sha256"), m)))
        .transpose()?;
    Ok(Some(CertRule {
        subject,
        spki_sha256,
    }))
}

fn scope(key: &str, s: &str) -> Result<ScopePath, ConfigError> {
    ScopePath::parse(s).map_err(|e| invalid(key, format!("`{s}` is not a valid scope: {e}")))
}

#[cfg(test)]
mod tests;
