//! The HTTPS client the HTTP stores (vault, azure) talk through: rustls on
//! *ring*, TLS 1.3 preferred and 1.2 accepted with only ring's AEAD suites,
//! trusting either the system roots (`$SSL_CERT_FILE` / `$SSL_CERT_DIR`
//! honoured) or, when a CA file is given, that bundle alone; and what to
//! tell an operator when a handshake fails.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::store::StoreError;

fn invalid(store: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        store,
        detail: detail.into(),
    }
}

/// Builds the reqwest client: per-request `timeout`, no proxy from the
/// environment (the store's address is taken literally), no redirects
/// followed (see [`refuse_redirect`]), our TLS config.
pub(crate) fn http_client(
    store: &'static str,
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Result<reqwest::Client, StoreError> {
    let tls = client_config(store, ca_file)?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .no_proxy()
        // SECURITY: a followed redirect would carry `X-Vault-Token` (reqwest
        // strips only `Authorization` and cookies across origins) and, on a
        // 307/308, the body holding a value, to wherever the store points.
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| StoreError::Backend {
            store,
            detail: format!("cannot build the HTTP client: {e}"),
        })
}

/// Refuses a redirect answer (the client does not follow them) as a
/// `Backend` error naming the status and the target's origin.
pub(crate) fn refuse_redirect(
    store: &'static str,
    resp: &reqwest::Response,
) -> Result<(), StoreError> {
    if !resp.status().is_redirection() {
        return Ok(());
    }
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok());
    Err(super::redirected(store, resp.status().as_u16(), location))
}

/// The rustls config. ring's default suites are all forward-secret AEADs
/// (TLS 1.3 AES-GCM and ChaCha20-Poly1305; TLS 1.2 ECDHE with the same);
/// rustls offers nothing weaker, so no suite list is needed to exclude one.
pub(crate) fn client_config(
    store: &'static str,
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, StoreError> {
    let roots = match ca_file {
        // Like `VAULT_CACERT`: the bundle replaces the system roots, which
        // pins the server to the operator's CA.
        Some(path) => pinned_roots(store, path)?,
        None => system_roots(store)?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| invalid(store, format!("cannot configure TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

fn pinned_roots(store: &'static str, path: &Path) -> Result<RootCertStore, StoreError> {
    let shown = path.display();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| invalid(store, format!("cannot read CA bundle `{shown}`: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(store, format!("CA bundle `{shown}` is not PEM: {e}")))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(invalid(
            store,
            format!("CA bundle `{shown}` holds no usable certificate"),
        ));
    }
    Ok(roots)
}

fn system_roots(store: &'static str) -> Result<RootCertStore, StoreError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(invalid(
            store,
            "no system CA certificates found; install ca-certificates or set $SSL_CERT_FILE (vault: or store.ca_file)",
        ));
    }
    Ok(roots)
}

/// What to tell an operator when `e` (or an error under it) is a failed
/// TLS handshake, or `None` when it is not one. A certificate that does not
/// verify is a configuration problem (or an attack), never an outage that
/// waiting would mend, so the caller reports it as such, not as
/// "unavailable".
pub(crate) fn handshake_failure(
    e: &(dyn std::error::Error + 'static),
    address: &str,
) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = rustls_error(err) {
            return Some(match t {
                rustls::Error::InvalidCertificate(_) => format!(
                    "cannot verify the TLS certificate of `{address}` ({t}); check that store.ca_file (or, without it, the system roots: $SSL_CERT_FILE) holds the CA that signed the server's certificate and that the certificate names the host of the store's address"
                ),
                _ => format!(
                    "the TLS handshake with `{address}` failed ({t}); the server must speak TLS 1.3 or 1.2 with a forward-secret AEAD suite on an https address"
                ),
            });
        }
        cur = err.source();
    }
    None
}

/// `e` itself as a rustls error, also when wrapped in `io::Error`s (which
/// hide their inner error from `source()`: hyper-rustls wraps tokio-rustls's
/// `io::Error` in another).
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(t) = e.downcast_ref::<rustls::Error>() {
        return Some(t);
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = client_config("vault", Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.pem"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = client_config("vault", Some(&empty))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no usable certificate"), "{err}");
    }

    /// A test CA and a server certificate for 127.0.0.1 signed by it.
    struct Pki {
        ca_pem: String,
        leaf: CertificateDer<'static>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    }

    fn pki() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        Pki {
            ca_pem: ca.pem(),
            leaf: leaf.der().clone(),
            key: rustls::pki_types::PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
                .unwrap(),
        }
    }

    /// Serves one HTTPS request on loopback with `versions` and reports the
    /// negotiated version and suite (or nothing if the handshake failed).
    fn serve_once(
        pki: &Pki,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (
        u16,
        std::thread::JoinHandle<Option<(rustls::ProtocolVersion, rustls::CipherSuite)>>,
    ) {
        use std::io::{Read, Write};
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pki.leaf.clone()], pki.key.clone_key())
            .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().ok()?;
            tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            let conn = rustls::ServerConnection::new(config).ok()?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 4096];
            let n = tls.read(&mut buf).ok()?;
            assert!(n > 0);
            let seen = (
                tls.conn.protocol_version()?,
                tls.conn.negotiated_cipher_suite()?.suite(),
            );
            tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                .ok()?;
            tls.conn.send_close_notify();
            let _ = tls.flush();
            Some(seen)
        });
        (port, handle)
    }

    async fn get(ca: &Path, port: u16) -> Result<reqwest::Response, reqwest::Error> {
        http_client("vault", Some(ca), Duration::from_secs(10))
            .unwrap()
            .get(format!("https://127.0.0.1:{port}/v1/sys/health"))
            .send()
            .await
    }

    #[tokio::test]
    async fn tls_13_is_preferred_and_12_accepted_with_aead_suites_only() {
        let pki = pki();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &pki.ca_pem).unwrap();

        let (port, server) = serve_once(&pki, &[&rustls::version::TLS13, &rustls::version::TLS12]);
        assert_eq!(get(&ca, port).await.unwrap().status(), 200);
        let (version, _) = server.join().unwrap().unwrap();
        assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);

        let (port, server) = serve_once(&pki, &[&rustls::version::TLS12]);
        assert_eq!(get(&ca, port).await.unwrap().status(), 200);
        let (version, suite) = server.join().unwrap().unwrap();
        assert_eq!(version, rustls::ProtocolVersion::TLSv1_2);
        let name = format!("{suite:?}");
        assert!(
            name.contains("ECDHE") && (name.contains("GCM") || name.contains("CHACHA20")),
            "{name}"
        );
    }

    #[tokio::test]
    async fn a_server_the_ca_file_did_not_sign_is_a_configuration_error() {
        let (server_pki, other) = (pki(), pki());
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("other-ca.pem");
        std::fs::write(&ca, &other.ca_pem).unwrap();
        let (port, server) = serve_once(&server_pki, &[&rustls::version::TLS13]);
        let e = get(&ca, port).await.unwrap_err();
        assert!(server.join().unwrap().is_none());
        let err = crate::store::map_reqwest("vault", "", &e, Duration::from_secs(10));
        assert_eq!(err.kind(), crate::store::StoreErrorKind::Backend, "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("`vault`")
                && msg.contains(&format!("`https://127.0.0.1:{port}`"))
                && msg.contains("store.ca_file")
                && msg.contains("invalid peer certificate"),
            "{msg}"
        );
        assert!(!msg.contains("/v1/sys/health"), "{msg}");
    }
}
