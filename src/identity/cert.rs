//! Client certificates → principal, for the TLS listener.
//!
//! The TLS layer (rustls, webpki) has already checked the chain, validity,
//! the client-auth EKU and revocation when a [`PeerCert`] is made; this
//! module reads the identity out of the leaf and holds it against the
//! configured certificate principals:
//!
//! - `spiffe_id`: the certificate's **single** URI SAN equals it exactly
//!   (the SPIFFE X.509-SVID rule: a certificate with several URI SANs is no
//!   SVID, and is refused outright);
//! - `cert_dns_name`: one of its DNS SANs equals it (ASCII case aside);
//! - `cert_spki_sha256`: on top of either, the SHA-256 of its public key.
//!
//! The subject CN is never read, and nothing matches by prefix or glob.

use std::fmt;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Longest SPIFFE id accepted (the SPIFFE standard's limit).
const MAX_SPIFFE_ID: usize = 2048;

/// What a certificate principal names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSubject {
    /// The certificate's single URI SAN, exactly.
    SpiffeId(String),
    /// One of the certificate's DNS SANs (stored lowercase).
    DnsName(String),
}

/// How a caller proves to be a certificate principal.
#[derive(Clone, PartialEq, Eq)]
pub struct CertRule {
    /// The SAN that must be present.
    pub subject: CertSubject,
    /// SHA-256 of the certificate's SubjectPublicKeyInfo, if pinned.
    pub spki_sha256: Option<[u8; 32]>,
}

impl fmt::Debug for CertRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertRule")
            .field("subject", &self.subject)
            .field("pinned", &self.spki_sha256.is_some())
            .finish()
    }
}

impl CertRule {
    /// Whether `cert` proves this rule.
    pub(crate) fn matches(&self, cert: &PeerCert) -> bool {
        let subject_ok = match &self.subject {
            // SECURITY: exact equality with the one URI SAN; `PeerCert`
            // refuses certificates with several, so none can pick one.
            CertSubject::SpiffeId(id) => cert.uri.as_deref() == Some(id.as_str()),
            CertSubject::DnsName(name) => cert.dns_names.iter().any(|d| d == name),
        };
        let pin_ok = self
            .spki_sha256
            .is_none_or(|want| bool::from(want.ct_eq(&cert.spki_sha256)));
        subject_ok && pin_ok
    }
}

/// Why a verified certificate still cannot identify anyone. Logged for the
/// operator; the caller is told only that it matched no principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The DER did not parse (or has duplicate extensions).
    #[error("the client certificate does not parse as X.509")]
    Parse,
    /// No extended key usage, or one without client authentication.
    #[error("the client certificate lacks the client-auth extended key usage")]
    NotClientAuth,
    /// Several URI SANs: not a SPIFFE X.509-SVID.
    #[error("the client certificate has several URI SANs; an X.509-SVID has exactly one")]
    SeveralUris,
}

/// The identity facts of a client's leaf certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// The single URI SAN, if there is exactly one.
    uri: Option<String>,
    /// The DNS SANs, lowercase.
    dns_names: Vec<String>,
    /// SHA-256 of the SubjectPublicKeyInfo.
    spki_sha256: [u8; 32],
    /// End of validity, seconds since the epoch.
    not_after: i64,
}

impl fmt::Debug for PeerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerCert")
            .field("uri", &self.uri)
            .field("dns_names", &self.dns_names)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl PeerCert {
    /// Reads the identity out of a leaf certificate (DER).
    pub fn parse(der: &[u8]) -> Result<Self, CertError> {
        let (rest, cert) = X509Certificate::from_der(der).map_err(|_| CertError::Parse)?;
        if !rest.is_empty() {
            return Err(CertError::Parse);
        }
        // SECURITY: webpki accepts a certificate without any EKU for client
        // auth; a certificate meant for a client must say so.
        match cert.extended_key_usage() {
            Ok(Some(eku)) if eku.value.client_auth => {}
            Ok(_) => return Err(CertError::NotClientAuth),
            Err(_) => return Err(CertError::Parse),
        }
        let mut uris = Vec::new();
        let mut dns_names = Vec::new();
        match cert.subject_alternative_name() {
            Ok(Some(san)) => {
                for name in &san.value.general_names {
                    match name {
                        GeneralName::URI(u) => uris.push((*u).to_owned()),
                        GeneralName::DNSName(d) => dns_names.push(d.to_ascii_lowercase()),
                        _ => {}
                    }
                }
            }
            Ok(None) => {}
            Err(_) => return Err(CertError::Parse),
        }
        if uris.len() > 1 {
            return Err(CertError::SeveralUris);
        }
        Ok(Self {
            uri: uris.pop(),
            dns_names,
            spki_sha256: Sha256::digest(cert.public_key().raw).into(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// The SPIFFE id, when the single URI SAN is one.
    pub fn spiffe_id(&self) -> Option<&str> {
        self.uri.as_deref().filter(|u| u.starts_with("spiffe://"))
    }

    /// The single URI SAN, whatever its scheme (what a `spiffe_id` rule
    /// compares with).
    pub(crate) fn uri(&self) -> Option<&str> {
        self.uri.as_deref()
    }

    /// Every DNS SAN, lowercase (what a `dns_name` rule looks among).
    pub(crate) fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// A certificate's identity facts without a certificate, for tests of
    /// the rules that read them.
    #[cfg(test)]
    pub(crate) fn from_parts(uri: Option<&str>, dns_names: &[&str], spki_sha256: [u8; 32]) -> Self {
        Self {
            uri: uri.map(str::to_owned),
            dns_names: dns_names.iter().map(|d| d.to_ascii_lowercase()).collect(),
            spki_sha256,
            not_after: i64::MAX,
        }
    }

    /// The first DNS SAN, for the audit line of a non-SPIFFE client.
    pub fn dns_name(&self) -> Option<&str> {
        self.dns_names.first().map(String::as_str)
    }

    /// Whether the certificate has expired by `now` (seconds since the
    /// epoch): a connection may outlive its handshake.
    pub fn expired_at(&self, now: i64) -> bool {
        now > self.not_after
    }
}

/// Who is on the other end of a TLS connection.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    /// The client's address, as audited (`ip:port`).
    pub addr: String,
    /// Its verified leaf's identity, or why it has none.
    pub cert: Result<PeerCert, CertError>,
}

/// Checks a configured SPIFFE id: `spiffe://` + a lowercase trust domain +
/// a non-empty path of `[A-Za-z0-9._-]` segments, none `.` or `..`, no
/// query, fragment, port, user info or trailing `/`.
pub fn valid_spiffe_id(s: &str) -> Result<(), &'static str> {
    if s.len() > MAX_SPIFFE_ID {
        return Err("is longer than 2048 bytes");
    }
    let rest = s
        .strip_prefix("spiffe://")
        .ok_or("must start with `spiffe://` (lowercase scheme)")?;
    let (domain, path) = rest
        .split_once('/')
        .ok_or("needs a path after the trust domain (`spiffe://td/workload`)")?;
    if domain.is_empty()
        || !domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
    {
        return Err("has a trust domain that is not lowercase [a-z0-9.-_]");
    }
    for seg in path.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err("has an empty, `.` or `..` path segment (or a trailing `/`)");
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err("has a path segment outside [A-Za-z0-9._-]");
        }
    }
    Ok(())
}

/// Checks a configured DNS name and lowercases it: LDH labels, no
/// wildcard, no trailing dot.
pub fn dns_name(s: &str) -> Result<String, &'static str> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err("is not a DNS name such as `writer.platform.svc` (no wildcard, no trailing dot)")
    }
}

/// Parses a pin: the standard base64 of 32 bytes.
pub fn spki_pin(s: &str) -> Result<[u8; 32], &'static str> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| "is not base64")?;
    bytes.try_into().map_err(|_| {
        "must be the base64 SHA-256 of the certificate's public key (`openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`)"
    })
}

#[cfg(test)]
mod tests;
