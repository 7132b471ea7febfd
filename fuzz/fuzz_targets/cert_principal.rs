//! Fuzzes the certificate-to-principal mapping of the TLS listener: any
//! DER a verified handshake could hand over is parsed without a panic, and
//! whatever identity comes out matches exactly: the single URI SAN or a DNS
//! SAN equal to a principal's, never a prefix or an extension of it, never
//! past a pin it fails, never two principals at once, never once expired.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_broker::identity::cert::{CertError, CertSubject};
use secret_broker::identity::{
    CertRule, IdentityError, PeerCert, Principal, PrincipalKind, PrincipalSpec, Resolver, TlsPeer,
};

fn spec(name: &str, subject: CertSubject, pin: Option<[u8; 32]>) -> PrincipalSpec {
    PrincipalSpec {
        principal: Principal {
            name: name.to_owned(),
            kind: PrincipalKind::Component,
            roles: vec!["platform".to_owned()],
            scope: None,
        },
        uid: None,
        gid: None,
        token: None,
        cert: Some(CertRule {
            subject,
            spki_sha256: pin,
        }),
    }
}

/// Which spec (by index) the peer resolves to, at a time before any
/// certificate's end.
fn resolve(specs: Vec<PrincipalSpec>, peer: &TlsPeer) -> Result<usize, IdentityError> {
    Resolver::new(specs)
        .resolve_cert(peer, i64::MIN)
        .map(|(i, _)| i)
}

fuzz_target!(|data: &[u8]| {
    let parsed = PeerCert::parse(data);
    if let Err(e) = &parsed {
        // Every refusal is one of the known reasons (and says nothing of
        // the certificate's content).
        assert!(matches!(
            e,
            CertError::Parse | CertError::NotClientAuth | CertError::SeveralUris
        ));
    }
    let peer = TlsPeer {
        addr: "127.0.0.1:1".to_owned(),
        cert: parsed.clone(),
    };
    // Fixed principals: a certificate that does not carry their exact
    // names matches none.
    let fixed = || {
        vec![
            spec(
                "spiffe",
                CertSubject::SpiffeId("spiffe://example.org/writer".to_owned()),
                None,
            ),
            spec(
                "dns",
                CertSubject::DnsName("writer.example.org".to_owned()),
                None,
            ),
        ]
    };
    let Ok(cert) = parsed else {
        assert!(matches!(
            resolve(fixed(), &peer),
            Err(IdentityError::CertNoMatch)
        ));
        return;
    };
    match resolve(fixed(), &peer) {
        Ok(0) => assert_eq!(cert.spiffe_id(), Some("spiffe://example.org/writer")),
        Ok(1) | Err(IdentityError::CertNoMatch) | Err(IdentityError::Ambiguous(_)) => {}
        other => panic!("unexpected {other:?}"),
    }
    if let Some(id) = cert.spiffe_id() {
        let id = id.to_owned();
        let exact = spec("a", CertSubject::SpiffeId(id.clone()), None);
        assert_eq!(resolve(vec![exact.clone()], &peer).ok(), Some(0));
        // Two principals with the same id: ambiguous, never the first.
        assert!(matches!(
            resolve(vec![exact.clone(), exact.clone()], &peer),
            Err(IdentityError::Ambiguous(_))
        ));
        // An id that extends the certificate's, or that it only extends.
        let longer = spec("b", CertSubject::SpiffeId(format!("{id}/x")), None);
        assert!(resolve(vec![longer], &peer).is_err());
        let mut shorter = id.clone();
        shorter.pop();
        let shorter = spec("c", CertSubject::SpiffeId(shorter), None);
        assert!(resolve(vec![shorter], &peer).is_err());
        // A pin this key does not have (an all-zero SHA-256 is not found).
        let pinned = spec("d", CertSubject::SpiffeId(id), Some([0; 32]));
        assert!(resolve(vec![pinned], &peer).is_err());
        // Expired since the handshake: refused.
        assert!(matches!(
            Resolver::new(vec![exact]).resolve_cert(&peer, i64::MAX),
            Err(IdentityError::CertExpired)
        ));
    }
    if let Some(name) = cert.dns_name() {
        let name = name.to_owned();
        assert_eq!(name, name.to_ascii_lowercase());
        let exact = spec("e", CertSubject::DnsName(name), None);
        assert_eq!(resolve(vec![exact], &peer).ok(), Some(0));
    }
});
