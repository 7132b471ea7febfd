//! The mutual-TLS listener for remote platform writers: its rustls config
//! (TLS 1.3 by default, AES-256-GCM and CHACHA20-POLY1305 only, a client
//! certificate always required, no session resumption), the reloader that
//! swaps cert, key, client CA and CRLs without a restart, and the accept
//! loop that hands each verified connection to the same API as the socket.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::SingleCertAndKey;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, watch};

use crate::api::{AppState, ConnInfo};
use crate::audit::AuditPeer;
use crate::authz::Transport;
use crate::config::{TlsListenConfig, TlsMinVersion};
use crate::identity::{PeerCert, TlsPeer};

/// How often the files are checked for changes (cert-manager and the
/// kubelet swap them without telling anyone).
const POLL_EVERY: Duration = Duration::from_secs(10);

/// TLS 1.3's suites: AES-256-GCM and CHACHA20-POLY1305 only (no AES-128).
const SUITES_13: &[rustls::SupportedCipherSuite] = &[
    ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
    ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
];

/// With `min_version = "1.2"`: ECDHE with the same two AEADs only.
const SUITES_12: &[rustls::SupportedCipherSuite] = &[
    ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ring::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// The suites the CLI's TLS client offers: the listener's own, for either
/// version (the listener picks by its `min_version`).
pub(crate) fn client_suites() -> Vec<rustls::SupportedCipherSuite> {
    [SUITES_13, SUITES_12].concat()
}

/// Why the TLS listener's files could not be loaded, or it could not start.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("listen.tls: cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file does not hold what it should.
    #[error("listen.tls: `{path}` {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The server certificate or key is unusable.
    #[error("listen.tls: {0}")]
    ServerCert(String),
    /// rustls refused the settings.
    #[error("listen.tls: {0}")]
    Config(String),
    /// The address could not be bound.
    #[error("listen.tls: cannot listen on `{addr}`: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: io::Error,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn digest(b: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(b).into()
}

/// Loads the four kinds of file into a server config, and a fingerprint
/// of what was read (to notice changes).
fn load(cfg: &TlsListenConfig) -> Result<(rustls::ServerConfig, Vec<u8>), TlsError> {
    // The webhook's loader: reads both files and checks that the key
    // matches the certificate.
    let (certified, mut fingerprint) = crate::webhook::tls::load(&cfg.cert, &cfg.key)
        .map_err(|e| TlsError::ServerCert(e.to_string()))?;
    let ca_pem = read(&cfg.client_ca)?;
    fingerprint.extend(digest(&ca_pem));
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(&ca_pem) {
        let der = der.map_err(|e| TlsError::Invalid {
            path: cfg.client_ca.clone(),
            message: format!("is not a PEM certificate bundle: {e}"),
        })?;
        roots.add(der).map_err(|e| TlsError::Invalid {
            path: cfg.client_ca.clone(),
            message: format!("holds an unusable CA certificate: {e}"),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::Invalid {
            path: cfg.client_ca.clone(),
            message: "holds no CA certificate".into(),
        });
    }
    let mut crls = Vec::new();
    for path in &cfg.crl {
        let bytes = read(path)?;
        fingerprint.extend(digest(&bytes));
        if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            for crl in CertificateRevocationListDer::pem_slice_iter(&bytes) {
                crls.push(crl.map_err(|e| TlsError::Invalid {
                    path: path.clone(),
                    message: format!("is not a PEM CRL: {e}"),
                })?);
            }
        } else {
            crls.push(CertificateRevocationListDer::from(bytes));
        }
    }
    let (versions, suites): (&[&'static rustls::SupportedProtocolVersion], Vec<_>) =
        match cfg.min_version {
            TlsMinVersion::Tls13 => (&[&rustls::version::TLS13], SUITES_13.to_vec()),
            TlsMinVersion::Tls12 => (
                &[&rustls::version::TLS13, &rustls::version::TLS12],
                [SUITES_13, SUITES_12].concat(),
            ),
        };
    let provider = Arc::new(CryptoProvider {
        cipher_suites: suites,
        ..ring::default_provider()
    });
    // SECURITY: a client certificate is always required (never
    // `allow_unauthenticated`); webpki checks the chain, validity and the
    // client-auth EKU, and with CRLs the leaf's revocation: a leaf whose
    // issuer has no CRL in the list is refused (unknown status is denied).
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .with_crls(crls)
            .only_check_end_entity_revocation()
            .build()
            .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    // SECURITY: no resumption. On resumption rustls restores the stored
    // client chain without verifying it again, so a revoked, expired or no
    // longer trusted client could come back: no cache, no tickets.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, fingerprint))
}

/// The current rustls config, swapped whole when the files change.
#[derive(Debug)]
pub struct TlsConfigSet {
    cfg: TlsListenConfig,
    current: ArcSwap<rustls::ServerConfig>,
    fingerprint: Mutex<Vec<u8>>,
}

impl TlsConfigSet {
    /// Loads the files once; a broker does not start on a bad set.
    pub fn load(cfg: &TlsListenConfig) -> Result<Arc<Self>, TlsError> {
        let (config, fingerprint) = load(cfg)?;
        Ok(Arc::new(Self {
            cfg: cfg.clone(),
            current: ArcSwap::from_pointee(config),
            fingerprint: Mutex::new(fingerprint),
        }))
    }

    /// Re-reads the files and swaps in the new set if they changed and
    /// load. `Err` when they do not: the last good set stays in force.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (config, fingerprint) = load(&self.cfg)?;
        let Ok(mut old) = self.fingerprint.lock() else {
            return Ok(false);
        };
        if *old == fingerprint {
            return Ok(false);
        }
        *old = fingerprint;
        self.current.store(Arc::new(config));
        Ok(true)
    }

    /// The config new handshakes use.
    fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current.load_full()
    }
}

/// Binds the listener's address.
pub async fn bind(cfg: &TlsListenConfig) -> Result<TcpListener, TlsError> {
    TcpListener::bind(cfg.addr)
        .await
        .map_err(|source| TlsError::Bind {
            addr: cfg.addr,
            source,
        })
}

/// Reloads on request (SIGHUP, the poll); logs and counts the outcome.
fn reload_now(set: &TlsConfigSet, state: &AppState, why: &str) {
    match set.reload() {
        Ok(true) => {
            tracing::info!(trigger = why, "reloaded the TLS listener's certificates");
            state.metrics.tls_reload(true);
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, trigger = why, "TLS reload refused; the previous certificates stay in force");
            state.metrics.tls_reload(false);
        }
    }
}

/// Serves TLS connections until `shutdown` turns true, then waits (up to
/// the drain timeout) for the open ones to finish. With `workers`
/// (`per_core`), each connection (its handshake included) is served on the
/// next worker's runtime, as the socket's are; without, on the runtime this
/// runs on.
pub async fn run(
    listener: TcpListener,
    set: Arc<TlsConfigSet>,
    state: Arc<AppState>,
    workers: Option<super::WorkerPool>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), super::ServerError> {
    let mut sighup = signal(SignalKind::hangup()).map_err(super::ServerError::Signals)?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "TLS listener ready");
    }
    let limits = state.limits;
    // Its own cap: TLS clients cannot take the socket's connection slots.
    let conns = Arc::new(Semaphore::new(limits.max_connections));
    let max_age = set.cfg.max_connection_age;
    let mut builder = super::http1_builder(&limits);
    // The socket's head-deadline watchdog is not used here: hyper's own
    // timer bounds each request head (and an idle keep-alive) instead.
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "tls accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                // Over the cap the connection is closed before any TLS work
                // (an answer would need a handshake), and audited as the
                // socket's over-cap refusals are: 429, the peer's address.
                let Ok(permit) = Arc::clone(&conns).try_acquire_owned() else {
                    drop(stream);
                    let addr = addr.to_string();
                    let request_id = state.next_request_id();
                    super::audit_unparsed(
                        &state,
                        &request_id,
                        Some(AuditPeer::Tls { addr: &addr, spiffe_id: None, dns_name: None }),
                        429,
                        Duration::ZERO,
                    );
                    continue;
                };
                let conn = Accepted {
                    addr,
                    config: set.current(),
                    state: Arc::clone(&state),
                    builder: builder.clone(),
                    max_age,
                    shutdown: shutdown.clone(),
                    spinner: None,
                };
                match &workers {
                    None => drop(tokio::spawn(conn.serve(stream, permit))),
                    Some(pool) => {
                        // The socket moves to the worker's reactor, and the
                        // connection's task runs there.
                        let worker = pool.next();
                        match worker.adopt(stream) {
                            Ok(stream) => {
                                let conn = Accepted { spinner: worker.watch(&stream), ..conn };
                                drop(worker.handle().spawn(conn.serve(stream, permit)));
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot hand a TLS connection to a worker"),
                        }
                    }
                }
            }
            _ = sighup.recv() => {
                let (set, state) = (Arc::clone(&set), Arc::clone(&state));
                let _ = tokio::task::spawn_blocking(move || reload_now(&set, &state, "sighup")).await;
            }
            _ = poll.tick() => {
                let (set, state) = (Arc::clone(&set), Arc::clone(&state));
                let _ = tokio::task::spawn_blocking(move || reload_now(&set, &state, "poll")).await;
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.drain_timeout, conns.acquire_many(all)).await;
    Ok(())
}

/// An accepted TCP connection and what serving it takes.
struct Accepted {
    addr: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    builder: hyper::server::conn::http1::Builder,
    max_age: Duration,
    shutdown: watch::Receiver<bool>,
    /// The worker's spinner, when the connection runs on a worker that
    /// spins (`idle_spin`) and watches its socket.
    spinner: Option<Arc<super::spin::Spinner>>,
}

impl Accepted {
    /// Serves the connection, then gives back its place under the cap.
    async fn serve(self, stream: tokio::net::TcpStream, permit: tokio::sync::OwnedSemaphorePermit) {
        serve_one(stream, self).await;
        drop(permit);
    }
}

/// One TLS connection: the handshake (bounded in time), then HTTP/1.1 on
/// the API until the client leaves, the connection reaches its maximum
/// age, or the broker shuts down (both after the in-flight request).
async fn serve_one(stream: tokio::net::TcpStream, accepted: Accepted) {
    let Accepted {
        addr,
        config,
        state,
        builder,
        max_age,
        mut shutdown,
        spinner,
    } = accepted;
    let started = Instant::now();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    // SECURITY: a client that stalls the handshake holds a slot only this
    // long.
    let handshake =
        tokio::time::timeout(state.limits.header_timeout, acceptor.accept(stream)).await;
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        failed => {
            match failed {
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "tls handshake failed"),
                _ => tracing::debug!(%addr, "tls handshake timed out"),
            }
            state.metrics.tls_handshake_failed();
            // The connection ends before it has a `Conn` to say so.
            if let Some(spinner) = &spinner {
                spinner.closed();
            }
            return;
        }
    };
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|leaf| PeerCert::parse(leaf.as_ref()))
        // INVARIANT: the verifier requires a certificate; a handshake
        // without one never completes.
        .unwrap_or(Err(crate::identity::cert::CertError::Parse));
    let peer = Arc::new(TlsPeer {
        addr: addr.to_string(),
        cert,
    });
    let info = ConnInfo {
        peer: None,
        transport: Transport::Tls,
        tls: Some(Arc::clone(&peer)),
    };
    let mut ctx = super::Conn::new(Arc::clone(&state), info);
    ctx.spinner = spinner;
    let ctx = Arc::new(ctx);
    let io = super::FlushingIo::new(tls, Arc::clone(&state.audit));
    let conn = super::connection(&builder, io, ctx);
    tokio::pin!(conn);
    let age = tokio::time::sleep(max_age.saturating_sub(started.elapsed()));
    tokio::pin!(age);
    let mut closing = false;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            () = &mut age, if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    };
    if let Err(e) = result {
        super::audit_connection_error(&state, Some(AuditPeer::from(&*peer)), &e, started);
    }
}
