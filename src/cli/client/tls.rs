//! The client verbs' TLS transport: `--url https://HOST:PORT` with a client
//! certificate (`--cert`, `--key`), the CA that signed the broker's
//! certificate (`--cacert`) and an optional pin on the broker's key
//! (`--pin sha256//BASE64`, as curl's `--pinnedpubkey`).
//!
//! The broker is verified by webpki against `--cacert` and the URL's host
//! (a DNS name or an IP address SAN); with a pin, its leaf's SPKI SHA-256
//! must match too. The same suites as the listener: TLS 1.3 (1.2 only with
//! ECDHE), AES-256-GCM and CHACHA20-POLY1305.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::ClientError;

/// How long connecting and the handshake may take together: a broker
/// behind a dropped route must not hang a script for minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The prefix of a pin, as curl spells it.
const PIN_PREFIX: &str = "sha256//";

/// The TLS settings as given (flags, else environment), before loading.
#[derive(Debug, Default)]
pub(super) struct TlsArgs {
    /// `https://HOST[:PORT]`.
    pub url: String,
    /// The client certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// The CA bundle the broker's certificate must chain to (PEM).
    pub cacert: Option<PathBuf>,
    /// `sha256//BASE64` of the broker's SPKI.
    pub pin: Option<String>,
}

/// A broker's TLS listener, ready to connect to.
pub(super) struct Target {
    /// `HOST:PORT`, for connecting and for the `host` header.
    pub authority: String,
    /// The URL as given, for messages.
    pub url: String,
    server_name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn usage(msg: impl Into<String>) -> ClientError {
    ClientError::Usage(msg.into())
}

/// Splits `https://HOST[:PORT][/]` into the host (brackets of an IPv6
/// address removed) and the port (443 by default).
pub(super) fn parse_url(url: &str) -> Result<(String, u16), ClientError> {
    let bad = |why: &str| usage(format!("--url `{url}` {why}; use https://HOST:PORT"));
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(bad(
            "is not an https:// URL (the TLS listener speaks only TLS)",
        ));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(bad(
            "must be only a scheme, host and port (no path, query or user)",
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err(bad("has an unclosed `[`"));
        };
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(':') && !authority.starts_with('[') {
        return Err(bad("has no host, or an IPv6 address without [brackets]"));
    }
    let port = match port {
        None => 443,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("has a port that is not a number from 1 to 65535"))?,
    };
    Ok((host.to_owned(), port))
}

/// Parses `sha256//BASE64` (the standard base64 of 32 bytes).
pub(super) fn parse_pin(pin: &str) -> Result<[u8; 32], ClientError> {
    let b64 = pin.strip_prefix(PIN_PREFIX).ok_or_else(|| {
        usage("--pin must be `sha256//BASE64` (the SHA-256 of the broker's public key, as curl's --pinnedpubkey)")
    })?;
    crate::identity::cert::spki_pin(b64).map_err(|why| usage(format!("--pin {why}")))
}

fn read(what: &str, path: &Path) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| ClientError::Read {
            path: format!("{} ({what})", path.display()),
            source,
        })
}

fn invalid(what: &str, path: &Path, why: impl fmt::Display) -> ClientError {
    usage(format!("{what} `{}` {why}", path.display()))
}

impl Target {
    /// Reads the certificate, key and CA files and builds the client
    /// config. Every file is required: the listener always asks for a
    /// client certificate, and the broker is only trusted through
    /// `--cacert`.
    pub(super) fn load(args: &TlsArgs) -> Result<Self, ClientError> {
        let (host, port) = parse_url(&args.url)?;
        let need = |v: &Option<PathBuf>, flag: &str, env: &str| {
            v.clone().ok_or_else(|| {
                usage(format!(
                    "--url needs {flag} (or ${env}): the broker's TLS listener {}",
                    if flag == "--cacert" {
                        "is trusted only through the CA that signed its certificate"
                    } else {
                        "always asks for a client certificate and its key"
                    }
                ))
            })
        };
        let cert_path = need(&args.cert, "--cert", "SECRET_BROKER_CERT")?;
        let key_path = need(&args.key, "--key", "SECRET_BROKER_KEY")?;
        let ca_path = need(&args.cacert, "--cacert", "SECRET_BROKER_CACERT")?;
        let pin = args.pin.as_deref().map(parse_pin).transpose()?;

        let cert_pem = read("--cert", &cert_path)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("--cert", &cert_path, format_args!("is not PEM: {e}")))?;
        if chain.is_empty() {
            return Err(invalid("--cert", &cert_path, "holds no certificate"));
        }
        let key_pem = read("--key", &key_path)?;
        // SECURITY: the parser's error could hold no key bytes, but say
        // only that it failed.
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|_| invalid("--key", &key_path, "holds no PEM private key"))?;
        let ca_pem = read("--cacert", &ca_path)?;
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(&ca_pem) {
            let der =
                der.map_err(|e| invalid("--cacert", &ca_path, format_args!("is not PEM: {e}")))?;
            roots.add(der).map_err(|e| {
                invalid(
                    "--cacert",
                    &ca_path,
                    format_args!("holds an unusable CA: {e}"),
                )
            })?;
        }
        if roots.is_empty() {
            return Err(invalid("--cacert", &ca_path, "holds no CA certificate"));
        }

        let provider = Arc::new(CryptoProvider {
            cipher_suites: crate::server::tls::client_suites(),
            ..ring::default_provider()
        });
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| usage(format!("--cacert: {e}")))?;
        let verifier = Arc::new(PinnedVerifier { webpki, pin });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| usage(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain, key)
            .map_err(|e| {
                invalid(
                    "--key",
                    &key_path,
                    format_args!("does not fit the certificate in --cert: {e}"),
                )
            })?;
        // The broker never resumes (it re-verifies every client); keep no
        // tickets for it either.
        config.resumption = rustls::client::Resumption::disabled();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| usage(format!("--url `{}` has an invalid host", args.url)))?;
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Self {
            authority,
            url: args.url.clone(),
            server_name,
            config: Arc::new(config),
        })
    }

    /// Connects and completes the handshake (bounded in time).
    pub(super) async fn connect(
        &self,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ClientError> {
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.config));
        let work = async {
            let tcp = tokio::net::TcpStream::connect(&self.authority)
                .await
                .map_err(|e| ClientError::Connect {
                    at: self.url.clone(),
                    why: format!(
                        "{e}; is the broker's TLS listener there? set --url or $SECRET_BROKER_URL"
                    ),
                })?;
            connector
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| self.tls_error(&e))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, work)
            .await
            .map_err(|_| ClientError::Connect {
                at: self.url.clone(),
                why: format!("no TLS connection within {}s", CONNECT_TIMEOUT.as_secs()),
            })?
    }

    /// A failed handshake (or the broker's alert after it: in TLS 1.3 the
    /// server refuses a client certificate after the client has finished)
    /// as an error that says which side refused and what to check.
    pub(super) fn tls_error(&self, e: &(dyn std::error::Error + 'static)) -> ClientError {
        let why = match find_rustls(e) {
            Some(r) => explain(r, &self.server_name),
            None => e.to_string(),
        };
        ClientError::Tls {
            url: self.url.clone(),
            why,
        }
    }
}

/// The rustls error somewhere in `e`'s chain (hyper and tokio-rustls wrap
/// it in `io::Error`s).
pub(super) fn find_rustls<'e>(
    mut e: &'e (dyn std::error::Error + 'static),
) -> Option<&'e rustls::Error> {
    loop {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                return Some(r);
            }
        }
        e = e.source()?;
    }
}

fn explain(e: &rustls::Error, name: &ServerName<'_>) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let host = name.to_str();
    match e {
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "the broker's certificate is not signed by a CA in --cacert".into()
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "the broker's certificate is not valid for `{host}` (no DNS name or IP address SAN matches the --url host)"
        ),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the broker's certificate has expired".into()
        }
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "the broker's certificate is not valid yet (check the clocks)".into()
        }
        E::InvalidCertificate(C::Revoked) => "the broker's certificate is revoked".into(),
        E::General(msg) => msg.clone(),
        E::AlertReceived(A::ProtocolVersion | A::HandshakeFailure | A::InsufficientSecurity) => {
            format!("the broker and this client share no TLS version or cipher suite ({e})")
        }
        E::AlertReceived(
            A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::AccessDenied
            | A::DecryptError,
        ) => format!(
            "the broker refused the client certificate ({e}): --cert must be signed by the broker's client_ca, be valid now, have the client-auth EKU and not be revoked"
        ),
        other => other.to_string(),
    }
}

/// webpki's verification, then the pin on the leaf's public key.
struct PinnedVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    pin: Option<[u8; 32]>,
}

impl fmt::Debug for PinnedVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedVerifier")
            .field("pinned", &self.pin.is_some())
            .finish_non_exhaustive()
    }
}

/// The SHA-256 of a certificate's SubjectPublicKeyInfo.
fn spki_sha256(der: &[u8]) -> Option<[u8; 32]> {
    use x509_parser::prelude::{FromDer as _, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(Sha256::digest(cert.public_key().raw).into())
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // SECURITY: the pin is on top of the chain and name checks, never
        // instead of them (as curl does with --cacert and --pinnedpubkey).
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if let Some(want) = self.pin {
            let ok = spki_sha256(end_entity).is_some_and(|got| bool::from(got.ct_eq(&want)));
            if !ok {
                return Err(rustls::Error::General(
                    "the broker's public key does not match --pin (it is not the key pinned; if the broker's key was rotated on purpose, update the pin)".into(),
                ));
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_host_and_port_only() {
        assert_eq!(
            parse_url("https://broker.svc:8443").unwrap(),
            ("broker.svc".into(), 8443)
        );
        assert_eq!(
            parse_url("https://10.0.0.1:8443/").unwrap(),
            ("10.0.0.1".into(), 8443)
        );
        assert_eq!(
            parse_url("https://[::1]:9000").unwrap(),
            ("::1".into(), 9000)
        );
        assert_eq!(parse_url("https://b").unwrap(), ("b".into(), 443));
        for bad in [
            "http://b:80",
            "b:8443",
            "https://",
            "https://b:8443/v1",
            "https://u@b:1",
            "https://b:0",
            "https://b:x",
            "https://::1:8443",
            "https://[::1:8443",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pins_are_curl_style() {
        let b64 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert_eq!(parse_pin(&format!("sha256//{b64}")).unwrap(), [0; 32]);
        for bad in [b64, "sha256//AAAA", "sha1//AAAA", "sha256//not base64!"] {
            assert!(parse_pin(bad).is_err(), "{bad}");
        }
    }
}
