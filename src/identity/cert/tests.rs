//! Certificate-to-principal mapping on certificates made with rcgen.

use super::*;
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, SanType};

fn leaf(sans: Vec<SanType>, ekus: Vec<ExtendedKeyUsagePurpose>) -> (Vec<u8>, [u8; 32]) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = sans;
    p.extended_key_usages = ekus;
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "spiffe://td/cn-only");
    let cert = p.self_signed(&key).unwrap();
    let spki: [u8; 32] = Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(&key)).into();
    (cert.der().to_vec(), spki)
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

fn dns(s: &str) -> SanType {
    SanType::DnsName(s.try_into().unwrap())
}

const CLIENT: ExtendedKeyUsagePurpose = ExtendedKeyUsagePurpose::ClientAuth;

fn rule(subject: CertSubject) -> CertRule {
    CertRule {
        subject,
        spki_sha256: None,
    }
}

#[test]
fn spiffe_id_matches_exactly_one_uri_san() {
    let (der, _) = leaf(vec![uri("spiffe://td/ns/platform/sa/writer")], vec![CLIENT]);
    let cert = PeerCert::parse(&der).unwrap();
    assert_eq!(cert.spiffe_id(), Some("spiffe://td/ns/platform/sa/writer"));
    let exact = rule(CertSubject::SpiffeId(
        "spiffe://td/ns/platform/sa/writer".into(),
    ));
    assert!(exact.matches(&cert));
    // SECURITY: no prefix matching, either way.
    let prefix = rule(CertSubject::SpiffeId("spiffe://td/ns/platform".into()));
    assert!(!prefix.matches(&cert));
    let (der, _) = leaf(
        vec![uri("spiffe://td/ns/platform/sa/writer-2")],
        vec![CLIENT],
    );
    assert!(!exact.matches(&PeerCert::parse(&der).unwrap()));
}

#[test]
fn several_uri_sans_are_refused() {
    let (der, _) = leaf(
        vec![uri("spiffe://td/a"), uri("spiffe://td/b")],
        vec![CLIENT],
    );
    assert_eq!(PeerCert::parse(&der), Err(CertError::SeveralUris));
}

#[test]
fn the_cn_is_never_used() {
    // The CN says `spiffe://td/cn-only`; with no SAN nothing matches.
    let (der, _) = leaf(vec![], vec![CLIENT]);
    let cert = PeerCert::parse(&der).unwrap();
    assert_eq!(cert.spiffe_id(), None);
    assert!(!rule(CertSubject::SpiffeId("spiffe://td/cn-only".into())).matches(&cert));
}

#[test]
fn client_auth_eku_is_required() {
    let (der, _) = leaf(
        vec![uri("spiffe://td/a")],
        vec![ExtendedKeyUsagePurpose::ServerAuth],
    );
    assert_eq!(PeerCert::parse(&der), Err(CertError::NotClientAuth));
    let (der, _) = leaf(vec![uri("spiffe://td/a")], vec![]);
    assert_eq!(PeerCert::parse(&der), Err(CertError::NotClientAuth));
    assert_eq!(PeerCert::parse(b"not a certificate"), Err(CertError::Parse));
}

#[test]
fn dns_name_and_pin() {
    let (der, spki) = leaf(vec![dns("Writer.Platform.svc")], vec![CLIENT]);
    let cert = PeerCert::parse(&der).unwrap();
    assert_eq!(cert.dns_name(), Some("writer.platform.svc"));
    let mut r = rule(CertSubject::DnsName(
        dns_name("writer.platform.svc").unwrap(),
    ));
    assert!(r.matches(&cert));
    r.spki_sha256 = Some(spki);
    assert!(r.matches(&cert));
    let mut wrong = spki;
    wrong[0] ^= 1;
    r.spki_sha256 = Some(wrong);
    assert!(!r.matches(&cert));
    assert!(!rule(CertSubject::DnsName("platform.svc".into())).matches(&cert));
}

#[test]
fn config_values_are_checked() {
    assert!(valid_spiffe_id("spiffe://example.org/ns/a/sa/b").is_ok());
    for bad in [
        "spiffe://example.org",
        "spiffe://example.org/",
        "spiffe://example.org/a/",
        "spiffe://example.org/a/../b",
        "spiffe://Example.org/a",
        "SPIFFE://example.org/a",
        "spiffe://example.org:8443/a",
        "spiffe://u@example.org/a",
        "spiffe://example.org/a?q",
        "spiffe://example.org/a#f",
        "https://example.org/a",
    ] {
        assert!(valid_spiffe_id(bad).is_err(), "{bad}");
    }
    assert!(dns_name("*.example.org").is_err());
    assert!(dns_name("example.org.").is_err());
    assert_eq!(dns_name("A.example.org").unwrap(), "a.example.org");
    assert!(spki_pin("AAAA").is_err());
    assert!(spki_pin(&base64::engine::general_purpose::STANDARD.encode([7u8; 32])).is_ok());
}
