//! The webhook's TLS: TLS 1.3 and 1.2 only, AEAD suites with ECDHE only,
//! and a certificate resolver that picks up rotated files (cert-manager,
//! a re-mounted Secret) without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::WebhookError;

/// The only suites offered: forward-secret AEAD (ring's defaults, listed
/// here so the choice is explicit and reviewable).
const SUITES: &[rustls::SupportedCipherSuite] = &[
    ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
    ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
    ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ring::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// Loads a PEM certificate chain and private key into a signing key.
pub(crate) fn load(cert: &Path, key: &Path) -> Result<(CertifiedKey, Vec<u8>), WebhookError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| WebhookError::Read {
            path: p.to_owned(),
            source,
        })
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let bad = |p: &Path, m: String| WebhookError::Tls {
        path: p.to_owned(),
        message: m,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(bad(cert, "holds no certificate".into()));
    }
    // The key's bytes are never printed: only the parser's kind of error.
    let der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| bad(key, format!("not a PEM private key: {e}")))?;
    let signer = ring::sign::any_supported_type(&der)
        .map_err(|e| bad(key, format!("unsupported private key: {e}")))?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match()
        .map_err(|e| bad(key, format!("does not match the certificate: {e}")))?;
    // Remember what was loaded, to notice changes; the key is compared by
    // digest so its bytes are not kept around.
    let mut fingerprint = sha2_digest(&cert_pem);
    fingerprint.extend(sha2_digest(&key_pem));
    zeroize::Zeroize::zeroize(&mut { key_pem });
    Ok((ck, fingerprint))
}

fn sha2_digest(b: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(b).to_vec()
}

/// Serves the current certificate; [`CertReloader::watch`] swaps it when the
/// files change.
#[derive(Debug)]
pub(crate) struct CertReloader {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    fingerprint: Mutex<Vec<u8>>,
}

impl CertReloader {
    /// Loads the files once; fails if they are not a usable pair.
    pub(crate) fn new(cert: &Path, key: &Path) -> Result<Arc<Self>, WebhookError> {
        let (ck, fp) = load(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: ArcSwap::from_pointee(ck),
            fingerprint: Mutex::new(fp),
        }))
    }

    /// Re-reads the files; swaps the certificate if they changed and load.
    /// A half-written or bad pair is logged and the old one stays in force.
    pub(crate) fn reload(&self) -> bool {
        match load(&self.cert, &self.key) {
            Ok((ck, fp)) => {
                let Ok(mut old) = self.fingerprint.lock() else {
                    return false;
                };
                if *old == fp {
                    return false;
                }
                *old = fp;
                self.current.store(Arc::new(ck));
                tracing::info!(cert = %self.cert.display(), "reloaded the TLS certificate");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "keeping the current TLS certificate");
                false
            }
        }
    }

    /// Polls the files every `every` until the task is dropped.
    pub(crate) async fn watch(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let me = Arc::clone(&self);
            // File reads and parsing are blocking work.
            let _ = tokio::task::spawn_blocking(move || me.reload()).await;
        }
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The server config: TLS 1.3 and 1.2, [`SUITES`], HTTP/1.1 via ALPN.
pub(crate) fn server_config(
    certs: Arc<CertReloader>,
) -> Result<rustls::ServerConfig, WebhookError> {
    let provider = CryptoProvider {
        cipher_suites: SUITES.to_vec(),
        ..ring::default_provider()
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| WebhookError::Tls {
            path: PathBuf::new(),
            message: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
