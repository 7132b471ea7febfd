//! The mutual-TLS listener end to end: the real binary, a throwaway PKI
//! made with rcgen, and a rustls client. A writer writes and cannot read,
//! the task reads over the socket; every kind of bad client is refused;
//! nothing is resumed; certificates reload on SIGHUP and by the poll
//! (through a Kubernetes `..data` swap); revoked and AES-128-only clients
//! are refused; stalled TLS clients leave the socket alone; and the CLI
//! itself writes over TLS and refuses a broker it cannot trust.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

use common::{Broker, Resp, TASK_TOKEN, parse_response};

struct Ca(CertifiedIssuer<'static, KeyPair>);

/// A client's chain and key, ready for a rustls client.
struct Client {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test ca");
        Self(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    fn pem(&self) -> String {
        self.0.pem()
    }

    /// The server's certificate and key (PEM) for these SANs (DNS names
    /// or IP addresses), and the pin of its key (`sha256//BASE64`).
    fn server(&self, sans: &[&str]) -> (String, String, String) {
        use base64::Engine as _;
        use sha2::Digest as _;
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let cert = CertificateParams::new(sans)
            .unwrap()
            .signed_by(&key, &self.0)
            .unwrap();
        let pin = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(
            rcgen::PublicKeyData::subject_public_key_info(&key),
        ));
        (cert.pem(), key.serialize_pem(), format!("sha256//{pin}"))
    }

    /// A client's certificate and key as PEM files in `dir`, named `name`.
    fn client_files(
        &self,
        dir: &std::path::Path,
        name: &str,
        spiffe_id: &str,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.subject_alt_names = vec![uri(spiffe_id)];
        let cert = p.signed_by(&key, &self.0).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn client_with(&self, edit: impl FnOnce(&mut CertificateParams)) -> Client {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        edit(&mut p);
        let cert = p.signed_by(&key, &self.0).unwrap();
        Client {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        }
    }

    /// A CRL (valid until 2090) revoking these serial numbers.
    fn crl(&self, serials: &[u64]) -> String {
        rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2090, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*s),
                    revocation_time: rcgen::date_time_ymd(2024, 1, 2),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.0)
        .unwrap()
        .pem()
        .unwrap()
    }

    fn client(&self, spiffe_id: &str) -> Client {
        self.client_with(|p| p.subject_alt_names = vec![uri(spiffe_id)])
    }
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

const WRITER: &str = "spiffe://example.org/ns/platform/sa/writer";

struct Tls {
    broker: Broker,
    addr: String,
    ca: Ca,
    /// `sha256//BASE64` of the server's key.
    pin: String,
}

impl Tls {
    fn start(listen_extra: &str, principals: &str) -> Self {
        Self::start_for(&["localhost"], listen_extra, principals)
    }

    /// With a server certificate for these SANs.
    fn start_for(sans: &[&str], listen_extra: &str, principals: &str) -> Self {
        Self::start_prepared(sans, listen_extra, principals, |_, _| {})
    }

    /// `prepare` writes more files (a CRL) into the broker's directory
    /// before it starts.
    fn start_prepared(
        sans: &[&str],
        listen_extra: &str,
        principals: &str,
        prepare: impl FnOnce(&Ca, &std::path::Path),
    ) -> Self {
        let ca = Ca::new();
        let dir = Broker::temp_dir();
        prepare(&ca, dir.path());
        let (cert, key, pin) = ca.server(sans);
        std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), key).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        let mut store_key = [0u8; 32];
        getrandom::fill(&mut store_key).unwrap();
        std::fs::write(dir.path().join("store.key"), store_key).unwrap();
        let extra = format!(
            r#"
[listen.tls]
addr = "127.0.0.1:0"
cert = "tls.crt"
key = "tls.key"
client_ca = "ca.crt"
{listen_extra}

[[principal]]
name = "remote-writer"
type = "Component"
roles = ["platform"]
spiffe_id = "{WRITER}"

[[principal]]
name = "task-42"
type = "Task"
scope = "acme/tasks/t-42"
token_sha256 = "{}"
{principals}
"#,
            common::sha256_hex(TASK_TOKEN)
        );
        let broker = Broker::start_with_store(
            dir,
            "backend = \"embedded\"\npath = \"store.redb\"\nkey_file = \"store.key\"",
            &extra,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let text = broker.stderr_text();
            if let Some(line) = text.lines().find(|l| l.contains("TLS listener ready")) {
                let v: Value = serde_json::from_str(line).unwrap();
                break v["fields"]["addr"].as_str().unwrap().to_owned();
            }
            assert!(Instant::now() < deadline, "no TLS listener: {text}");
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            broker,
            addr,
            ca,
            pin,
        }
    }

    fn port(&self) -> &str {
        self.addr.rsplit_once(':').unwrap().1
    }

    /// Runs the CLI with no socket, token or TLS variables but `env`.
    fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.args(args).current_dir(self.broker.dir.path());
        for var in [
            "SECRET_BROKER_SOCKET",
            "SECRET_BROKER_TOKEN",
            "SECRET_BROKER_TOKEN_FILE",
            "SECRET_BROKER_URL",
            "SECRET_BROKER_CERT",
            "SECRET_BROKER_KEY",
            "SECRET_BROKER_CACERT",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        cmd.output().unwrap()
    }

    fn config(
        &self,
        client: Option<&Client>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        self.config_with(client, versions, rustls::crypto::ring::default_provider())
    }

    /// A client config that offers only `suite`.
    fn config_only(
        &self,
        client: &Client,
        suite: rustls::SupportedCipherSuite,
    ) -> Arc<rustls::ClientConfig> {
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![suite],
            ..rustls::crypto::ring::default_provider()
        };
        self.config_with(Some(client), &[suite.version()], provider)
    }

    fn config_with(
        &self,
        client: Option<&Client>,
        versions: &[&'static rustls::SupportedProtocolVersion],
        provider: rustls::crypto::CryptoProvider,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.0.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match client {
            Some(c) => builder
                .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        })
    }

    /// One request on a fresh connection; `Err` when the handshake (or
    /// the connection) was refused.
    fn request_with(
        &self,
        config: Arc<rustls::ClientConfig>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(Resp, rustls::HandshakeKind), std::io::Error> {
        let conn =
            rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap())
                .unwrap();
        let tcp = TcpStream::connect(&self.addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(15)))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(head.as_bytes())?;
        let mut out = Vec::new();
        tls.read_to_end(&mut out)?;
        if out.is_empty() {
            return Err(std::io::Error::other("closed without an answer"));
        }
        let kind = tls.conn.handshake_kind().unwrap();
        Ok((parse_response(&out), kind))
    }

    fn request(&self, client: &Client, method: &str, path: &str, body: Option<&str>) -> Resp {
        self.request_with(
            self.config(Some(client), &[&rustls::version::TLS13]),
            method,
            path,
            body,
        )
        .unwrap()
        .0
    }

    fn refused(&self, config: Arc<rustls::ClientConfig>) -> bool {
        self.request_with(config, "GET", "/v1/whoami", None)
            .is_err()
    }
}

#[test]
fn a_remote_writer_writes_cannot_read_and_the_task_reads_over_the_socket() {
    let t = Tls::start("", "");
    let writer = t.ca.client(WRITER);
    let who = t.request(&writer, "GET", "/v1/whoami", None);
    assert_eq!(who.status, 200, "{}", who.text());
    assert_eq!(who.json()["principal"], "remote-writer");
    let put = t.request(
        &writer,
        "PUT",
        "/v1/secrets/acme/tasks/t-42/db",
        Some(r#"{"value":"s3cret-over-tls"}"#),
    );
    assert_eq!(put.status, 201, "{}", put.text());
    let read = t.request(&writer, "GET", "/v1/secrets/acme/tasks/t-42/db", None);
    assert_eq!(read.status, 403, "{}", read.text());
    assert!(!read.text().contains("s3cret"));
    let got = t.broker.get("acme/tasks/t-42/db", TASK_TOKEN);
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["value"], "s3cret-over-tls");
    // The audit line names the TLS peer by address and SPIFFE id.
    let lines = t.broker.audit_lines();
    let write = lines.iter().find(|l| l["action"] == "write").unwrap();
    assert_eq!(write["peer"]["spiffe_id"], WRITER);
    assert!(
        write["peer"]["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(write["peer"].get("uid").is_none());
    // The socket's caller is still audited by its credentials.
    let read = lines
        .iter()
        .find(|l| l["action"] == "read" && l["principal"] == "task-42")
        .unwrap();
    assert!(read["peer"]["uid"].is_u64());
}

#[test]
fn bad_clients_are_refused() {
    let t = Tls::start(
        "",
        r#"
[[principal]]
name = "pinned"
type = "Component"
roles = ["platform"]
spiffe_id = "spiffe://example.org/pinned"
cert_spki_sha256 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
"#,
    );
    let v13: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    // At the handshake: no certificate, another CA, expired, server-auth
    // only, and a TLS 1.2-only client.
    assert!(t.refused(t.config(None, v13)), "no client certificate");
    let other = Ca::new().client(WRITER);
    assert!(t.refused(t.config(Some(&other), v13)), "another CA");
    let expired = t.ca.client_with(|p| {
        p.subject_alt_names = vec![uri(WRITER)];
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    assert!(t.refused(t.config(Some(&expired), v13)), "expired");
    let not_yet = t.ca.client_with(|p| {
        p.subject_alt_names = vec![uri(WRITER)];
        p.not_before = rcgen::date_time_ymd(2090, 1, 1);
        p.not_after = rcgen::date_time_ymd(2091, 1, 1);
    });
    assert!(t.refused(t.config(Some(&not_yet), v13)), "not yet valid");
    let server_only = t.ca.client_with(|p| {
        p.subject_alt_names = vec![uri(WRITER)];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    });
    assert!(
        t.refused(t.config(Some(&server_only), v13)),
        "server-auth EKU"
    );
    let writer = t.ca.client(WRITER);
    assert!(
        t.refused(t.config(Some(&writer), &[&rustls::version::TLS12])),
        "TLS 1.2 by default"
    );
    // After the handshake, as 401: the certificate names no principal.
    let cases = [
        (
            "two URI SANs",
            t.ca.client_with(|p| {
                p.subject_alt_names = vec![uri(WRITER), uri("spiffe://example.org/other")];
            }),
        ),
        (
            "a SPIFFE id that only starts with the principal's",
            t.ca.client(&format!("{WRITER}-2")),
        ),
        (
            "a prefix of the principal's",
            t.ca.client("spiffe://example.org/ns/platform"),
        ),
        (
            "CN only",
            t.ca.client_with(|p| {
                p.distinguished_name.push(rcgen::DnType::CommonName, WRITER);
            }),
        ),
        (
            "no client-auth EKU at all",
            t.ca.client_with(|p| {
                p.subject_alt_names = vec![uri(WRITER)];
                p.extended_key_usages = vec![];
            }),
        ),
        (
            "a key that fails the pin",
            t.ca.client("spiffe://example.org/pinned"),
        ),
    ];
    for (what, client) in &cases {
        let r = t.request(client, "GET", "/v1/whoami", None);
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert!(
            r.text()
                .contains("certificate matches no configured principal"),
            "{what}: {}",
            r.text()
        );
    }
    // The socket keeps working beside the listener.
    assert_eq!(t.broker.get("acme/tasks/t-42/none", TASK_TOKEN).status, 404);
}

#[test]
fn a_resumption_attempt_is_not_resumed() {
    let t = Tls::start("", "");
    let writer = t.ca.client(WRITER);
    // One client config, so its session cache carries over (rustls's
    // client resumes by default when the server allows it).
    let config = t.config(Some(&writer), &[&rustls::version::TLS13]);
    for _ in 0..3 {
        let (r, kind) = t
            .request_with(Arc::clone(&config), "GET", "/v1/whoami", None)
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(kind, rustls::HandshakeKind::Full);
    }
}

#[test]
fn a_ca_swap_by_sighup_takes_effect_and_a_broken_set_keeps_the_old_one() {
    let t = Tls::start("", "");
    let old = t.ca.client(WRITER);
    let new_ca = Ca::new();
    let fresh = new_ca.client(WRITER);
    assert!(t.refused(t.config(Some(&fresh), &[&rustls::version::TLS13])));
    // A broken CA file is refused; the old set stays in force.
    let ca_path = t.broker.dir.path().join("ca.crt");
    std::fs::write(&ca_path, "not a pem").unwrap();
    t.broker.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !t.broker.stderr_text().contains("TLS reload refused") {
        assert!(Instant::now() < deadline, "{}", t.broker.stderr_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(t.request(&old, "GET", "/v1/whoami", None).status, 200);
    // Swap in the new CA by rename, then SIGHUP.
    let tmp = t.broker.dir.path().join("ca.crt.new");
    std::fs::write(&tmp, new_ca.pem()).unwrap();
    std::fs::rename(&tmp, &ca_path).unwrap();
    t.broker.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !t.broker.stderr_text().contains("reloaded the TLS listener") {
        assert!(Instant::now() < deadline, "{}", t.broker.stderr_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The client verifies the server against the old CA, which signed the
    // server's certificate: only the client CA changed.
    assert!(t.refused(t.config(Some(&old), &[&rustls::version::TLS13])));
    assert_eq!(t.request(&fresh, "GET", "/v1/whoami", None).status, 200);
}

#[test]
fn connections_older_than_max_connection_age_are_closed() {
    let t = Tls::start(
        "max_connection_age = \"1s\"\n\n[limits]\nheader_timeout = \"60s\"",
        "",
    );
    let writer = t.ca.client(WRITER);
    let conn = rustls::ClientConnection::new(
        t.config(Some(&writer), &[&rustls::version::TLS13]),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(&t.addr).unwrap();
    // Far below the 60 s head timeout: only the age can close it in time.
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // A keep-alive request: the server would keep the connection open.
    tls.write_all(b"GET /v1/whoami HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    tls.read_to_end(&mut out)
        .expect("the broker closes the connection once it is older than max_connection_age");
    assert_eq!(parse_response(&out).status, 200);
}

/// Exit code and stderr of a CLI run, for messages.
fn outcome(out: &std::process::Output) -> (i32, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_writes_over_tls_as_a_certificate_principal_and_cannot_read() {
    let t = Tls::start("", "");
    let dir = t.broker.dir.path();
    let (cert, key) = t.ca.client_files(dir, "writer", WRITER);
    let url = format!("https://localhost:{}", t.port());
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let tls = [
        "--url", &url, "--cert", cert, "--key", key, "--cacert", "ca.crt",
    ];
    let put = t.cli(
        &[
            &["put", "acme/tasks/t-42/db", "--value", "via-cli-tls"],
            &tls[..],
        ]
        .concat(),
        &[],
    );
    assert_eq!(outcome(&put).0, 0, "{:?}", outcome(&put));
    let got = t.broker.get("acme/tasks/t-42/db", TASK_TOKEN);
    assert_eq!(got.json()["value"], "via-cli-tls");
    // The writer cannot read back what it wrote: 403, exit 4.
    let get = t.cli(&[&["get", "acme/tasks/t-42/db"], &tls[..]].concat(), &[]);
    let (code, err) = outcome(&get);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("forbidden"), "{err}");
    assert!(!String::from_utf8_lossy(&get.stdout).contains("via-cli-tls"));
    // The same through the environment, with the right pin; `ls` too.
    let env = [
        ("SECRET_BROKER_URL", url.as_str()),
        ("SECRET_BROKER_CERT", cert),
        ("SECRET_BROKER_KEY", key),
        ("SECRET_BROKER_CACERT", "ca.crt"),
    ];
    let who = t.cli(&["whoami", "--json", "--pin", &t.pin], &env);
    assert_eq!(outcome(&who).0, 0, "{:?}", outcome(&who));
    let v: Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(v["principal"], "remote-writer");
    let ls = t.cli(&["ls", "acme/tasks/t-42/"], &env);
    assert_eq!(outcome(&ls).0, 0, "{:?}", outcome(&ls));
    assert!(String::from_utf8_lossy(&ls.stdout).contains("acme/tasks/t-42/db"));
    let rm = t.cli(&["rm", "acme/tasks/t-42/db"], &env);
    assert_eq!(outcome(&rm).0, 0, "{:?}", outcome(&rm));
    // `health` asks /readyz over TLS.
    assert_eq!(outcome(&t.cli(&["health"], &env)).0, 0);
    // The audit line names the writer by its SPIFFE id.
    let lines = t.broker.audit_lines();
    let write = lines.iter().find(|l| l["action"] == "write").unwrap();
    assert_eq!(write["peer"]["spiffe_id"], WRITER);
}

#[test]
fn the_cli_refuses_a_broker_it_cannot_trust_and_says_why() {
    let t = Tls::start("", "");
    let dir = t.broker.dir.path();
    let (cert, key) = t.ca.client_files(dir, "writer", WRITER);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let other = Ca::new();
    std::fs::write(dir.join("other-ca.crt"), other.pem()).unwrap();
    let good_url = format!("https://localhost:{}", t.port());
    let put = |url: &str, cacert: &str, extra: &[&str], cert: &str, key: &str| {
        let args = [
            &[
                "put",
                "acme/tasks/t-42/db",
                "--value",
                "must-not-arrive",
                "--url",
                url,
                "--cert",
                cert,
                "--key",
                key,
                "--cacert",
                cacert,
            ][..],
            extra,
        ]
        .concat();
        outcome(&t.cli(&args, &[]))
    };
    // A pin that the broker's key does not match.
    let wrong_pin = format!("sha256//{}", "A".repeat(43) + "=");
    let (code, err) = put(&good_url, "ca.crt", &["--pin", &wrong_pin], cert, key);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("does not match --pin"), "{err}");
    // A CA that did not sign the broker's certificate.
    let (code, err) = put(&good_url, "other-ca.crt", &[], cert, key);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("not signed by a CA in --cacert"), "{err}");
    // The broker's certificate names `localhost`, not 127.0.0.1.
    let ip_url = format!("https://127.0.0.1:{}", t.port());
    let (code, err) = put(&ip_url, "ca.crt", &[], cert, key);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("not valid for `127.0.0.1`"), "{err}");
    // The broker refuses a client certificate from another CA (in TLS
    // 1.3, after the client's side of the handshake).
    let (ocert, okey) = other.client_files(dir, "stranger", WRITER);
    let (code, err) = put(
        &good_url,
        "ca.crt",
        &[],
        ocert.to_str().unwrap(),
        okey.to_str().unwrap(),
    );
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("refused the client certificate"), "{err}");
    // Nothing was written by any of them.
    assert_eq!(t.broker.get("acme/tasks/t-42/db", TASK_TOKEN).status, 404);
    // Usage: TLS files without a URL, or a URL and a socket.
    let (code, err) = outcome(&t.cli(&["whoami", "--cert", cert], &[]));
    assert_eq!(code, 2, "{err}");
    let (code, err) = outcome(&t.cli(
        &["whoami", "--url", &good_url, "--socket", "/nonexistent"],
        &[],
    ));
    assert_eq!(code, 2, "{err}");
    let (code, err) = outcome(&t.cli(&["whoami", "--url", &good_url], &[]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--cert"), "{err}");
}

#[test]
fn the_cli_verifies_an_ip_address_san() {
    let t = Tls::start_for(&["127.0.0.1"], "", "");
    let dir = t.broker.dir.path();
    let (cert, key) = t.ca.client_files(dir, "writer", WRITER);
    let url = format!("https://127.0.0.1:{}", t.port());
    let args = [
        "whoami",
        "--url",
        &url,
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--cacert",
        "ca.crt",
        "--pin",
        &t.pin,
    ];
    let who = t.cli(&args, &[]);
    assert_eq!(outcome(&who).0, 0, "{:?}", outcome(&who));
    assert!(String::from_utf8_lossy(&who.stdout).contains("remote-writer"));
}

#[test]
fn a_client_revoked_by_the_crl_is_refused_and_the_others_are_not() {
    const REVOKED: u64 = 0x5eed;
    let t = Tls::start_prepared(&["localhost"], "crl = [\"crl.pem\"]", "", |ca, dir| {
        std::fs::write(dir.join("crl.pem"), ca.crl(&[REVOKED])).unwrap();
    });
    let v13: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let with_serial = |serial: u64| {
        t.ca.client_with(|p| {
            p.subject_alt_names = vec![uri(WRITER)];
            p.serial_number = Some(rcgen::SerialNumber::from(serial));
        })
    };
    // Same CA, same SPIFFE id: only the serial number differs.
    assert!(
        t.refused(t.config(Some(&with_serial(REVOKED)), v13)),
        "revoked"
    );
    let good = with_serial(0x600d);
    assert_eq!(t.request(&good, "GET", "/v1/whoami", None).status, 200);
}

#[test]
fn the_poll_alone_follows_a_kubernetes_data_symlink_swap() {
    use std::os::unix::fs::symlink;
    let t = Tls::start("", "");
    let dir = t.broker.dir.path();
    let old = t.ca.client(WRITER);
    let new_ca = Ca::new();
    let fresh = new_ca.client(WRITER);
    // The kubelet's layout for a mounted Secret: `ca.crt -> ..data/ca.crt`
    // and `..data -> ..<timestamp>`; an update writes a new timestamped
    // directory and renames a new `..data` link over the old one.
    let stamp = |name: &str, pem: &str| {
        std::fs::create_dir(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("ca.crt"), pem).unwrap();
    };
    stamp("..2025_01_01_00_00_00.1", &t.ca.pem());
    symlink("..2025_01_01_00_00_00.1", dir.join("..data")).unwrap();
    symlink("..data/ca.crt", dir.join("ca.crt.link")).unwrap();
    std::fs::rename(dir.join("ca.crt.link"), dir.join("ca.crt")).unwrap();
    assert_eq!(t.request(&old, "GET", "/v1/whoami", None).status, 200);
    stamp("..2025_01_01_01_00_00.2", &new_ca.pem());
    symlink("..2025_01_01_01_00_00.2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    // No SIGHUP: the poll (every 10 s) must notice on its own.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = t.broker.stderr_text();
        let reloaded = text
            .lines()
            .filter(|l| l.contains("reloaded the TLS listener"))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v["fields"]["trigger"] == "poll");
        if reloaded {
            break;
        }
        assert!(Instant::now() < deadline, "no reload by the poll: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(t.refused(t.config(Some(&old), &[&rustls::version::TLS13])));
    assert_eq!(t.request(&fresh, "GET", "/v1/whoami", None).status, 200);
}

#[test]
fn aes_128_only_clients_are_refused() {
    use rustls::crypto::ring::cipher_suite as cs;
    // With 1.2 allowed too, so that the 1.2 AES-128 suite is tried against
    // a listener that speaks 1.2.
    let t = Tls::start("min_version = \"1.2\"", "");
    let writer = t.ca.client(WRITER);
    assert!(t.refused(t.config_only(&writer, cs::TLS13_AES_128_GCM_SHA256)));
    assert!(t.refused(t.config_only(&writer, cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)));
    // The same clients with the AES-256 suite are served: it is the
    // suite that was refused.
    for suite in [
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ] {
        let (r, _) = t
            .request_with(t.config_only(&writer, suite), "GET", "/v1/whoami", None)
            .unwrap();
        assert_eq!(r.status, 200);
    }
}

#[test]
fn stalled_and_busy_tls_clients_do_not_starve_the_socket() {
    let t = Tls::start(
        "\n[limits]\nmax_connections = 16\nheader_timeout = \"60s\"",
        "",
    );
    let writer = t.ca.client(WRITER);
    let put = t.request(
        &writer,
        "PUT",
        "/v1/secrets/acme/tasks/t-42/x",
        Some(r#"{"value":"v"}"#),
    );
    assert_eq!(put.status, 201);
    // Four times the TLS connection cap, held open in the handshake: half
    // silent, half after a partial ClientHello record header.
    let mut stalled = Vec::new();
    for i in 0..64 {
        let mut s = TcpStream::connect(&t.addr).unwrap();
        if i % 2 == 0 {
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
        }
        stalled.push(s);
    }
    // And busy clients doing full handshakes meanwhile (some are turned
    // away at the cap; that is the point).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t = Arc::new(t);
    let busy: Vec<_> = (0..4)
        .map(|_| {
            let (t, stop, writer) = (Arc::clone(&t), Arc::clone(&stop), t.ca.client(WRITER));
            std::thread::spawn(move || {
                let config = t.config(Some(&writer), &[&rustls::version::TLS13]);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = t.request_with(Arc::clone(&config), "GET", "/v1/whoami", None);
                }
            })
        })
        .collect();
    for _ in 0..30 {
        let r = t.broker.get("acme/tasks/t-42/x", TASK_TOKEN);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in busy {
        b.join().unwrap();
    }
    drop(stalled);
}

/// `deploy/shared-broker` (schema-checked with the other manifests by
/// tests/inject.rs) holds together: its config is one the broker accepts,
/// with the TLS listener on the files the cert-manager Secret provides, the
/// Service's port, and names the Certificate covers.
#[test]
fn the_shared_broker_deploy_example_holds_together() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/shared-broker");
    let yaml = |f: &str| -> Value {
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    let cm = yaml("config.yaml");
    let text = cm["data"]["config.toml"].as_str().unwrap();
    let config =
        secret_broker::config::Config::from_toml(text, "config.toml", std::path::Path::new("/"))
            .unwrap();
    let tls = config.listen.tls.as_ref().expect("a [listen.tls]");
    assert_eq!(tls.addr.port(), 8443);
    assert!(config.principals.iter().all(|p| p.cert.is_some()));
    let cert = yaml("certificate.yaml");
    let deploy = yaml("deployment.yaml");
    let pod = &deploy["spec"]["template"]["spec"];
    let tls_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .unwrap();
    assert_eq!(
        tls_volume["secret"]["secretName"],
        cert["spec"]["secretName"]
    );
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tls")
        .unwrap();
    // A subPath mount would never see a rotation.
    assert!(mount.get("subPath").is_none());
    let at = mount["mountPath"].as_str().unwrap();
    for f in [&tls.cert, &tls.key, &tls.client_ca] {
        assert!(
            f.starts_with(at),
            "{} is not in the Secret's mount",
            f.display()
        );
    }
    let svc = yaml("service.yaml");
    let (name, ns) = (
        svc["metadata"]["name"].as_str().unwrap(),
        "secret-broker-shared",
    );
    let names: Vec<&str> = cert["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        names.contains(&format!("{name}.{ns}.svc").as_str()),
        "{names:?}"
    );
    assert_eq!(svc["spec"]["ports"][0]["port"], 8443);
}

/// The TLS listener audits what it refuses, as the socket does: a request
/// it cannot parse (400, with the client's address and certificate
/// identity), and a connection over `max_connections`, closed before any
/// TLS work (429, with the client's address). Before, both left no line.
#[test]
fn tls_refusals_and_malformed_requests_are_audited_with_the_peer() {
    let t = Tls::start(
        "\n[limits]\nmax_connections = 2\nheader_timeout = \"60s\"",
        "",
    );
    let writer = t.ca.client(WRITER);
    let config = t.config(Some(&writer), &[&rustls::version::TLS13]);
    let _ = t.request_with(config, "GAR BAGE", "/x", None);
    let audited = |status: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = t
                .broker
                .audit_lines()
                .into_iter()
                .find(|l| l["status"] == status)
            {
                return l;
            }
            assert!(Instant::now() < deadline, "no {status} line");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let bad = audited(400);
    assert!(bad["principal"].is_null(), "{bad}");
    assert!(
        bad["peer"]["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{bad}"
    );
    assert_eq!(bad["peer"]["spiffe_id"], WRITER, "{bad}");

    // Two silent connections hold both slots; a third is closed at once.
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(&t.addr).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let over = loop {
        let mut s = TcpStream::connect(&t.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 16];
        // Closed without an answer: end of stream, or a reset (a read that
        // times out is a connection that was taken: try again).
        let closed = match s.read(&mut buf) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        if closed {
            let line = audited(429);
            break line;
        }
        assert!(Instant::now() < deadline, "never turned away");
    };
    assert!(over["principal"].is_null(), "{over}");
    assert!(
        over["peer"]["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{over}"
    );
    drop(held);
}
