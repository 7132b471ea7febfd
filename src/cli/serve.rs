//! `secret-broker serve [--config FILE] [--dev]`: assemble the broker from
//! its config and run it until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::Exit;
use crate::api::AppState;
use crate::audit::AuditLog;
use crate::authz::{Authorizer, AuthzError};
use crate::broker::Broker;
use crate::config::{
    Config, ConfigError, LogConfig, LogFormat, RuntimeConfig, RuntimeFlavor, StoreConfig,
};
use crate::identity::Resolver;
use crate::metrics::{Metrics, MetricsError, serve_metrics};
use crate::server::{self, ServerError};
use crate::store::cache::CachedStore;
use crate::store::embedded::EmbeddedStore;
use crate::store::metered::MeteredStore;
use crate::store::{Store, StoreError};

/// Default config file when `--config` is not given.
const DEFAULT_CONFIG: &str = "/etc/secret-broker/config.toml";

/// How often every audit shard is flushed, for lines no connection flushed
/// right after its answer (see `audit::spool`).
const AUDIT_FLUSH_PERIOD: std::time::Duration = std::time::Duration::from_millis(50);

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The config file [default: $SECRET_BROKER_CONFIG, else /etc/secret-broker/config.toml]
    #[arg(long, value_name = "FILE", env = "SECRET_BROKER_CONFIG")]
    config: Option<PathBuf>,
    /// Development mode: a temp dir with a fresh key, the shipped policies,
    /// you as a Task of scope `dev` and a printed platform token.
    #[arg(long, conflicts_with = "config")]
    dev: bool,
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Bad policy set.
    #[error(transparent)]
    Policy(#[from] AuthzError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit sink could not be opened.
    #[error("cannot open the audit sink: {0}")]
    Audit(std::io::Error),
    /// The listener failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// Process hardening failed.
    #[error("cannot disable core dumps: {0}")]
    Hardening(std::io::Error),
    /// The metrics listener could not start.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// `[memory] lock` could not be honoured.
    #[error(transparent)]
    MemoryLock(#[from] crate::hardening::LockError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// Dev-mode setup failed.
    #[error("cannot prepare dev mode: {0}")]
    Dev(std::io::Error),
    /// The TLS listener's files or address are unusable.
    #[error(transparent)]
    Tls(#[from] server::tls::TlsError),
    /// `[uploads]` could not start (no region, no credential, bad bucket).
    #[error(transparent)]
    Uploads(#[from] crate::upload::UploadError),
}

impl StartError {
    fn exit(&self) -> Exit {
        match self {
            Self::Config(_) | Self::Policy(_) | Self::Tls(_) => Exit::Config,
            Self::Store(_) => Exit::Unavailable,
            Self::Uploads(crate::upload::UploadError::Credentials(_)) => Exit::Unavailable,
            Self::Uploads(_) => Exit::Config,
            Self::Audit(_) | Self::Dev(_) => Exit::Io,
            Self::MemoryLock(_) => Exit::OsErr,
            Self::Server(_) | Self::Hardening(_) | Self::Metrics(_) | Self::Runtime(_) => {
                Exit::Software
            }
        }
    }
}

/// Runs `serve`: loads the config (or prepares `--dev`), builds the runtime
/// it asks for, and serves until a stop signal.
pub fn run(args: ServeArgs) -> Exit {
    let loaded = if args.dev {
        super::dev::prepare().map(|dev| (dev.config.clone(), Some(dev)))
    } else {
        let path = args.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        Config::load(&path)
            .map(|config| (config, None))
            .map_err(Into::into)
    };
    let result = loaded.and_then(|(config, dev)| {
        let runtime = build_runtime(&config.runtime).map_err(StartError::Runtime)?;
        let r = runtime.block_on(start(config, dev.as_ref()));
        drop(dev);
        r
    });
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => {
            tracing::error!(error = %e, "secret-broker could not start");
            eprintln!("error: {e}");
            e.exit()
        }
    }
}

/// The tokio runtime `[runtime]` asks for.
fn build_runtime(cfg: &RuntimeConfig) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match cfg.flavor {
        // `per_core`: the main runtime only accepts, handles signals and
        // runs background work; connections run on `server::Workers`.
        RuntimeFlavor::CurrentThread | RuntimeFlavor::PerCore => {
            tokio::runtime::Builder::new_current_thread()
        }
        RuntimeFlavor::MultiThread => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = cfg.worker_threads {
                b.worker_threads(n);
            }
            b
        }
    };
    builder.enable_all().build()
}

fn init_tracing(log: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second init (tests in one process) is harmless: keep the first.
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Opens the configured store. Remote stores log in here, so a broker with
/// bad store credentials fails at start with a message naming what to check.
async fn open_store(config: &StoreConfig) -> Result<Arc<dyn Store>, StartError> {
    Ok(match config {
        StoreConfig::Embedded { path, key_file } => Arc::new(EmbeddedStore::open(path, key_file)?),
        #[cfg(feature = "vault")]
        StoreConfig::Vault(c) => Arc::new(crate::store::vault::VaultStore::connect(c).await?),
        #[cfg(feature = "aws")]
        StoreConfig::Aws(c) => Arc::new(crate::store::aws::AwsStore::connect(c).await?),
        #[cfg(feature = "azure")]
        StoreConfig::Azure(c) => Arc::new(crate::store::azure::AzureStore::connect(c).await?),
        #[cfg(feature = "gcp")]
        StoreConfig::Gcp(c) => Arc::new(crate::store::gcp::GcpStore::connect(c).await?),
        #[allow(unreachable_patterns)]
        other => {
            return Err(StartError::Config(ConfigError::Invalid {
                key: "store.backend".to_owned(),
                message: format!(
                    "this build has no `{}` store; rebuild with `--features {}`",
                    other.backend(),
                    other.backend()
                ),
            }));
        }
    })
}

/// Raises the descriptor limit to its ceiling and warns when even that is
/// below what the API's connections, the metrics listener's reserve and
/// the broker's own files (store, audit, runtime) need.
fn check_fd_limit(config: &Config) {
    // The broker's own descriptors besides connections: the listeners,
    // the store and audit files, the runtime's epoll and event fds, a
    // remote store's connection pool.
    const OWN: u64 = 64;
    match crate::hardening::raise_fd_limit() {
        Ok(Some(limit)) => {
            let need = config.limits.max_connections as u64
                + OWN
                + config
                    .metrics_addr
                    .map_or(0, |_| crate::metrics::FD_RESERVE);
            if limit < need {
                tracing::warn!(
                    limit,
                    need,
                    "the file descriptor limit (RLIMIT_NOFILE) is below what limits.max_connections needs; raise it (ulimit -n, systemd LimitNOFILE=) or lower limits.max_connections"
                );
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
}

/// Builds every layer from the config and serves until a stop signal.
async fn start(config: Config, dev: Option<&super::dev::DevEnv>) -> Result<(), StartError> {
    init_tracing(&config.log);
    crate::hardening::disable_core_dumps().map_err(StartError::Hardening)?;
    check_fd_limit(&config);
    if config.memory_lock {
        crate::hardening::lock_memory()?;
    }
    // Policies are parsed and validated (CPU, a few ms) on another thread
    // while the store opens or logs in, so the two start-up costs overlap.
    let policy_dir = config.policy_dir.clone();
    let policies = tokio::task::spawn_blocking(move || Authorizer::load_dir(&policy_dir));
    // Bind before opening the store, so a second broker on the same config
    // is told the socket is served rather than that the store is locked.
    let (listener, guard) = server::bind(&config.listen)?;
    // The TLS listener's files are checked before the store opens, too.
    let tls = match &config.listen.tls {
        Some(t) => Some((
            server::tls::TlsConfigSet::load(t)?,
            server::tls::bind(t).await?,
        )),
        None => None,
    };
    let opened = open_store(&config.store).await;
    // A bad policy set is reported before a store problem, as it always was.
    let authz = match policies.await {
        Ok(loaded) => Arc::new(loaded?),
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    };
    let metrics = Arc::new(Metrics::default());
    let store: Arc<dyn Store> = Arc::new(MeteredStore::new(opened?, Arc::clone(&metrics)));
    let cache = Arc::new(CachedStore::new(
        store,
        config.cache.ttl,
        config.cache.stale_if_error,
    ));
    let _sweeper = cache.spawn_sweeper();
    metrics.attach_cache(&cache);
    let audit =
        Arc::new(AuditLog::open(&config.audit, config.audit_spool).map_err(StartError::Audit)?);
    // Lines of requests whose connection moved thread or was cut before
    // writing its answer wait at most this long in the spool.
    let _audit_flusher = audit.spawn_flusher(AUDIT_FLUSH_PERIOD);
    let uploader = match &config.uploads {
        Some(u) => Some(Arc::new(crate::upload::Uploader::start(u).await?)),
        None => None,
    };
    let state = Arc::new(
        AppState::new(
            Broker::new(authz, cache),
            Resolver::new(config.principals.clone()),
            audit,
            config.limits,
        )
        .with_metrics(Arc::clone(&metrics))
        .with_audit_on_failure(config.audit_on_failure)
        .with_uploader(uploader),
    );
    let _metrics_listener = match config.metrics_addr {
        Some(addr) => Some(serve_metrics(addr, metrics).await?),
        None => None,
    };
    // INVARIANT: before "ready", so a TERM right after it stops gracefully.
    let signals = server::Signals::install()?;
    tracing::info!(
        socket = %guard.path().display(),
        store = state.broker.backend(),
        principals = config.principals.len(),
        "secret-broker ready"
    );
    if let Some(dev) = dev {
        dev.print_banner();
    }
    if !config.memory_lock {
        // Off the serving path: reading /proc/self/smaps takes a moment,
        // and the first requests need not wait for it.
        tokio::task::spawn_blocking(crate::hardening::trim_code_residency);
    }
    let workers = match config.runtime.flavor {
        RuntimeFlavor::PerCore => {
            let n = config.runtime.worker_threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            let socket_workers = config
                .runtime
                .socket_workers
                .unwrap_or_else(|| server::default_socket_workers(n));
            let workers = server::Workers::start(
                n,
                socket_workers,
                config.runtime.spread_preempted,
                config.runtime.idle_spin,
            );
            Some(workers.map_err(StartError::Runtime)?)
        }
        RuntimeFlavor::CurrentThread | RuntimeFlavor::MultiThread => None,
    };
    let (stop_tls, tls_stopped) = tokio::sync::watch::channel(false);
    let tls_task = tls.map(|(set, tls_listener)| {
        tokio::spawn(server::tls::run(
            tls_listener,
            set,
            Arc::clone(&state),
            workers.as_ref().map(server::Workers::pool),
            tls_stopped,
        ))
    });
    let result = server::run(listener, state, workers.as_ref(), signals).await;
    let _ = stop_tls.send(true);
    if let Some(task) = tls_task {
        let _ = task.await;
    }
    drop(guard);
    if let Some(workers) = workers {
        // Joining the worker threads blocks; keep this runtime free for
        // whatever their last tasks still wait on.
        let _ = tokio::task::spawn_blocking(move || workers.shutdown()).await;
    }
    result.map_err(Into::into)
}
