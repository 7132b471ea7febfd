//! The HTTP client the vault store talks through: rustls on *ring*, TLS 1.3
//! preferred and 1.2 accepted with only ring's AEAD suites, trusting either
//! the system roots or, when `ca_file` is set, that CA bundle alone.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{STORE, invalid};
use crate::store::StoreError;

/// Builds the reqwest client: per-request `timeout`, no proxy from the
/// environment (the store's address is taken literally), our TLS config.
pub(super) fn http_client(
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Result<reqwest::Client, StoreError> {
    let tls = client_config(ca_file)?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| StoreError::Backend {
            store: STORE,
            detail: format!("cannot build the HTTP client: {e}"),
        })
}

/// The rustls config. ring's default suites are all forward-secret AEADs
/// (TLS 1.3 AES-GCM and ChaCha20-Poly1305; TLS 1.2 ECDHE with the same);
/// rustls offers nothing weaker, so no suite list is needed to exclude one.
pub(super) fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, StoreError> {
    let roots = match ca_file {
        // Like `VAULT_CACERT`: the bundle replaces the system roots, which
        // pins the server to the operator's CA.
        Some(path) => pinned_roots(path)?,
        None => system_roots()?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| invalid(format!("cannot configure TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

fn pinned_roots(path: &Path) -> Result<RootCertStore, StoreError> {
    let shown = path.display();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| invalid(format!("cannot read CA bundle `{shown}`: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("CA bundle `{shown}` is not PEM: {e}")))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(invalid(format!(
            "CA bundle `{shown}` holds no usable certificate"
        )));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, StoreError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(invalid(
            "no system CA certificates found; install ca-certificates or set store.ca_file",
        ));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = client_config(Some(&missing)).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = client_config(Some(&empty)).unwrap_err().to_string();
        assert!(err.contains("no usable certificate"), "{err}");
    }
}
