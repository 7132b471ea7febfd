//! Caller identity: peer credentials and bearer tokens → one configured principal.
//!
//! Matching rule (documented in the README): a request that presents a
//! bearer token is matched only against principals that have a
//! `token_sha256` (and, if they also name a uid/gid, those must match too);
//! a request without a token is matched only against principals without
//! one, by uid and/or gid. Exactly one match is required; none or several
//! is `401 unauthenticated`. A wrong token never falls back to uid matching.
//! Over the TLS listener only certificate principals match ([`cert`]).

pub mod cert;

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::ScopePath;
pub use cert::{CertRule, PeerCert, TlsPeer};

/// The Cedar entity type of a principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    /// A platform component (provisioner).
    Component,
    /// A task pod, confined to its scope.
    Task,
}

impl PrincipalKind {
    /// The entity type name inside the `SecretBroker` namespace.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Component => "Component",
            Self::Task => "Task",
        }
    }
}

/// A resolved caller, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The configured name; also the Cedar entity id.
    pub name: String,
    /// Component or Task.
    pub kind: PrincipalKind,
    /// Role entity ids the principal is `in`.
    pub roles: Vec<String>,
    /// The task's scope (`Some` exactly for tasks).
    pub scope: Option<ScopePath>,
}

/// Peer credentials of a Unix-socket connection (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Effective uid of the peer process.
    pub uid: u32,
    /// Effective gid of the peer process.
    pub gid: u32,
    /// Pid of the peer process, where the OS reports it.
    pub pid: Option<i32>,
}

/// SHA-256 of a bearer token, as configured in `token_sha256`.
#[derive(Clone)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// Parses 64 hex characters.
    pub fn from_hex(hex_str: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_str.trim(), &mut out).ok()?;
        Some(Self(out))
    }

    /// Digests a presented token.
    pub fn of_token(token: &[u8]) -> Self {
        Self(Sha256::digest(token).into())
    }

    /// Lowercase hex, for generated configs.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Constant-time equality.
    fn matches(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SECURITY: a digest of a low-entropy token can be brute-forced; keep it out of logs.
        f.write_str("TokenDigest([REDACTED])")
    }
}

/// A principal and the proof a caller must give to be it.
#[derive(Debug, Clone)]
pub struct PrincipalSpec {
    /// Who the caller becomes.
    pub principal: Principal,
    /// Required peer uid, if any.
    pub uid: Option<u32>,
    /// Required peer gid, if any.
    pub gid: Option<u32>,
    /// Required bearer token digest, if any.
    pub token: Option<TokenDigest>,
    /// Required client certificate (TLS listener only); a spec with one
    /// has no uid, gid or token.
    pub cert: Option<CertRule>,
}

impl PrincipalSpec {
    fn matches(&self, peer: Option<&PeerCred>, token: Option<&TokenDigest>) -> bool {
        // SECURITY: a certificate principal has no uid, gid or token, so the
        // checks below would all pass: it must never match off TLS.
        if self.cert.is_some() {
            return false;
        }
        let token_ok = match (&self.token, token) {
            (Some(want), Some(got)) => want.matches(got),
            (None, None) => true,
            _ => false,
        };
        let uid_ok = self.uid.is_none_or(|u| peer.is_some_and(|p| p.uid == u));
        let gid_ok = self.gid.is_none_or(|g| peer.is_some_and(|p| p.gid == g));
        // INVARIANT: config validation guarantees every spec has at least one
        // criterion, so a spec never matches everyone.
        token_ok && uid_ok && gid_ok
    }
}

/// Why a caller was not identified. Never carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// No principal matched. Says what the broker saw of the caller (its
    /// own uid/gid, whether it sent a token), never what is configured.
    #[error("the caller matches no configured principal: {0}")]
    NoMatch(Seen),
    /// Several principals matched. The names go to the broker's log only:
    /// SECURITY: an unauthenticated caller learns nothing of the config.
    #[error(
        "the caller matches several principals, so it is refused; the broker's log names them: make the config unambiguous"
    )]
    Ambiguous(String),
    /// The peer carries the kernel's overflow uid or gid.
    #[error(
        "the caller's uid or gid is the kernel's overflow id (a process in a user namespace this broker cannot see into), which stands for every such process: it cannot be identified by uid or gid; run it with a mapped uid/gid or give it a bearer token"
    )]
    OverflowId,
    /// Over TLS: the client certificate matched no certificate principal
    /// (or could not identify anyone; the broker's log says why).
    #[error("the client certificate matches no configured principal")]
    CertNoMatch,
    /// Over TLS: the client certificate expired after the handshake.
    #[error(
        "the client certificate has expired since the connection was made; reconnect with a current certificate"
    )]
    CertExpired,
    /// The `Authorization` header is not a bearer token.
    #[error("the `Authorization` header must be `Bearer <token>`")]
    BadAuthorization,
}

/// What the broker saw of a caller it could not identify: the caller's own
/// facts, so that a `401` says which uid/gid the broker saw and whether a
/// token arrived.
// SECURITY: nothing here comes from the config, so a refused caller learns
// nothing about which principals exist; the token itself is never kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The peer's uid and gid (`SO_PEERCRED`), where the transport has them.
    pub peer: Option<(u32, u32)>,
    /// Whether an `Authorization: Bearer` token was sent.
    pub token: bool,
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.peer {
            Some((uid, gid)) => write!(f, "the broker saw uid {uid}, gid {gid}")?,
            None => f.write_str("the broker saw no peer uid/gid")?,
        }
        if self.token {
            f.write_str(
                " and a bearer token, which no token principal has (a request with a token is matched against token principals only; check the token)",
            )
        } else {
            f.write_str(
                " and no bearer token; the config needs a principal with this uid or gid, or send a token",
            )
        }
    }
}

/// The kernel's overflow uid and gid (`/proc/sys/kernel/overflow{uid,gid}`,
/// 65534 unless changed): what a peer whose id has no mapping in the
/// broker's user namespace appears as.
pub fn overflow_ids() -> (u32, u32) {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(65534)
    };
    (read("overflowuid"), read("overflowgid"))
}

/// A token digest as a map key. SECURITY: equality is constant-time, and
/// the map hashes keys with std's `RandomState` (SipHash under a random
/// per-process key), so a lookup's timing tells a caller neither which
/// bytes of a configured digest its own digest shares nor anything else
/// about the configured ones.
#[derive(Clone)]
struct DigestKey([u8; 32]);

impl std::hash::Hash for DigestKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialEq for DigestKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for DigestKey {}

/// Which specs can match a caller at all, so a lookup costs the same with
/// ten principals or ten thousand: only these candidates are then checked
/// with [`PrincipalSpec::matches`], the rule itself.
// INVARIANT: every spec that `matches` a (peer, token) pair is among the
// candidates `Index::candidates` returns for it: a token spec matches only
// its own digest (`by_token`); a token-less spec that names a uid matches
// only that uid (`by_uid`); one that names a gid and no uid only that gid
// (`by_gid`); one that names nothing (config refuses it) anyone without a
// token (`catch_all`). Certificate specs never match off TLS; over TLS a
// `spiffe_id` spec matches only a certificate whose URI SAN is that id
// (`by_uri`), a `dns_name` spec only one that has that DNS SAN (`by_dns`).
#[derive(Clone, Default)]
struct Index {
    by_token: std::collections::HashMap<DigestKey, Vec<usize>>,
    by_uid: std::collections::HashMap<u32, Vec<usize>>,
    by_gid: std::collections::HashMap<u32, Vec<usize>>,
    catch_all: Vec<usize>,
    by_uri: std::collections::HashMap<String, Vec<usize>>,
    by_dns: std::collections::HashMap<String, Vec<usize>>,
}

impl Index {
    fn new(specs: &[PrincipalSpec]) -> Self {
        let mut index = Self::default();
        for (i, spec) in specs.iter().enumerate() {
            if let Some(rule) = &spec.cert {
                let (map, key) = match &rule.subject {
                    cert::CertSubject::SpiffeId(id) => (&mut index.by_uri, id),
                    cert::CertSubject::DnsName(name) => (&mut index.by_dns, name),
                };
                map.entry(key.clone()).or_default().push(i);
                continue;
            }
            match (&spec.token, spec.uid, spec.gid) {
                (Some(t), _, _) => index.by_token.entry(DigestKey(t.0)).or_default().push(i),
                (None, Some(uid), _) => index.by_uid.entry(uid).or_default().push(i),
                (None, None, Some(gid)) => index.by_gid.entry(gid).or_default().push(i),
                (None, None, None) => index.catch_all.push(i),
            }
        }
        index
    }

    /// Indexes of the specs that could match. The lists are disjoint (each
    /// spec is in one), so nothing repeats; they are chained as they are,
    /// without collecting them: this runs on every request.
    fn candidates<'a>(
        &'a self,
        peer: Option<&PeerCred>,
        token: Option<&TokenDigest>,
    ) -> impl Iterator<Item = usize> + 'a {
        let none: &'a [usize] = &[];
        let (first, second, third) = match token {
            Some(t) => (
                self.by_token
                    .get(&DigestKey(t.0))
                    .map_or(none, Vec::as_slice),
                none,
                none,
            ),
            None => match peer {
                Some(p) => (
                    self.by_uid.get(&p.uid).map_or(none, Vec::as_slice),
                    self.by_gid.get(&p.gid).map_or(none, Vec::as_slice),
                    self.catch_all.as_slice(),
                ),
                None => (none, none, self.catch_all.as_slice()),
            },
        };
        first.iter().chain(second).chain(third).copied()
    }
}

impl Index {
    /// Indexes of the certificate specs that could match `cert`, ascending
    /// (config order, as [`Index::candidates`]).
    fn cert_candidates(&self, cert: &PeerCert) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        if let Some(v) = cert.uri().and_then(|u| self.by_uri.get(u)) {
            out.extend_from_slice(v);
        }
        for name in cert.dns_names() {
            if let Some(v) = self.by_dns.get(name) {
                out.extend_from_slice(v);
            }
        }
        out.sort_unstable();
        // A certificate may repeat a DNS SAN.
        out.dedup();
        out
    }
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SECURITY: the digests stay out of logs (see `TokenDigest`'s Debug).
        f.debug_struct("Index")
            .field("tokens", &self.by_token.len())
            .field("uids", &self.by_uid.len())
            .field("gids", &self.by_gid.len())
            .field("cert_subjects", &(self.by_uri.len() + self.by_dns.len()))
            .finish_non_exhaustive()
    }
}

/// Resolves callers to principals.
#[derive(Debug, Clone)]
pub struct Resolver {
    specs: Vec<PrincipalSpec>,
    overflow: (u32, u32),
    index: Index,
}

impl Resolver {
    /// A resolver over the configured principals.
    pub fn new(specs: Vec<PrincipalSpec>) -> Self {
        Self {
            index: Index::new(&specs),
            specs,
            overflow: overflow_ids(),
        }
    }

    /// The configured principals.
    pub fn specs(&self) -> &[PrincipalSpec] {
        &self.specs
    }

    /// Parses an `Authorization` header value into a token digest.
    pub fn bearer_digest(header: &[u8]) -> Result<TokenDigest, IdentityError> {
        let rest = header
            .strip_prefix(b"Bearer ")
            .or_else(|| header.strip_prefix(b"bearer "))
            .ok_or(IdentityError::BadAuthorization)?;
        let token = rest.trim_ascii();
        if token.is_empty() {
            return Err(IdentityError::BadAuthorization);
        }
        Ok(TokenDigest::of_token(token))
    }

    /// The one principal the caller proves to be.
    pub fn resolve(
        &self,
        peer: Option<&PeerCred>,
        token: Option<&TokenDigest>,
    ) -> Result<&Principal, IdentityError> {
        self.resolve_indexed(peer, token).map(|(_, p)| p)
    }

    /// [`Resolver::resolve`], with the principal's index in
    /// [`Resolver::specs`] (for per-principal limits).
    pub fn resolve_indexed(
        &self,
        peer: Option<&PeerCred>,
        token: Option<&TokenDigest>,
    ) -> Result<(usize, &Principal), IdentityError> {
        // SECURITY: the overflow id is every unmapped process on the host,
        // not one caller: it proves nothing, so without a token such a peer
        // is refused (config refuses principals that name it, too).
        if token.is_none()
            && peer.is_some_and(|p| p.uid == self.overflow.0 || p.gid == self.overflow.1)
        {
            return Err(IdentityError::OverflowId);
        }
        // SECURITY: only the candidates the index names can match (see
        // `Index`); each is checked with the full rule, with no early exit,
        // and the token lookup is keyed and constant-time (`DigestKey`), so
        // timing does not reveal which token prefix or principal matched.
        // Counted, not collected: the names are only wanted for the error
        // (a second pass), and a list would cost an allocation per request.
        let mut found: Option<(usize, &PrincipalSpec)> = None;
        let mut matched = 0usize;
        for i in self.index.candidates(peer, token) {
            let Some(spec) = self.specs.get(i) else {
                continue;
            };
            if spec.matches(peer, token) {
                matched += 1;
                found.get_or_insert((i, spec));
            }
        }
        match (found, matched) {
            (Some((i, spec)), 1) => Ok((i, &spec.principal)),
            (None, _) => Err(IdentityError::NoMatch(Seen {
                peer: peer.map(|p| (p.uid, p.gid)),
                token: token.is_some(),
            })),
            _ => {
                // In config order, as the operator wrote them.
                let mut all: Vec<usize> = self
                    .index
                    .candidates(peer, token)
                    .filter(|&i| self.specs.get(i).is_some_and(|s| s.matches(peer, token)))
                    .collect();
                all.sort_unstable();
                let names: Vec<&str> = all
                    .iter()
                    .filter_map(|&i| self.specs.get(i))
                    .map(|spec| spec.principal.name.as_str())
                    .collect();
                Err(IdentityError::Ambiguous(names.join(", ")))
            }
        }
    }
}

impl Resolver {
    /// The one certificate principal a TLS client proves to be, with its
    /// index in [`Resolver::specs`]. `now` is seconds since the epoch: a
    /// certificate that expired after the handshake is refused.
    pub fn resolve_cert(
        &self,
        peer: &TlsPeer,
        now: i64,
    ) -> Result<(usize, &Principal), IdentityError> {
        let cert = match &peer.cert {
            Ok(cert) => cert,
            Err(e) => {
                // For the operator only: the caller is told no more than
                // that it matched no principal.
                tracing::info!(addr = %peer.addr, reason = %e, "a TLS client's certificate identifies no one");
                return Err(IdentityError::CertNoMatch);
            }
        };
        if cert.expired_at(now) {
            return Err(IdentityError::CertExpired);
        }
        // Only the candidates the index names can match (see `Index`);
        // each is checked with the full rule (subject and pin).
        let mut found: Option<(usize, &PrincipalSpec)> = None;
        let mut names: Vec<&str> = Vec::new();
        for i in self.index.cert_candidates(cert) {
            let Some(spec) = self.specs.get(i) else {
                continue;
            };
            if spec.cert.as_ref().is_some_and(|rule| rule.matches(cert)) {
                names.push(&spec.principal.name);
                found.get_or_insert((i, spec));
            }
        }
        match (found, names.len()) {
            (Some((i, spec)), 1) => Ok((i, &spec.principal)),
            (None, _) => Err(IdentityError::CertNoMatch),
            _ => Err(IdentityError::Ambiguous(names.join(", "))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(name: &str, kind: PrincipalKind) -> Principal {
        Principal {
            name: name.into(),
            kind,
            roles: vec![],
            scope: None,
        }
    }

    fn peer(uid: u32, gid: u32) -> PeerCred {
        PeerCred {
            uid,
            gid,
            pid: Some(1),
        }
    }

    fn resolver() -> Resolver {
        Resolver::new(vec![
            PrincipalSpec {
                principal: principal("prov", PrincipalKind::Component),
                uid: Some(1001),
                gid: None,
                token: None,
                cert: None,
            },
            PrincipalSpec {
                principal: principal("task", PrincipalKind::Task),
                uid: Some(2000),
                gid: None,
                token: None,
                cert: None,
            },
            PrincipalSpec {
                principal: principal("grp", PrincipalKind::Task),
                uid: None,
                gid: Some(3000),
                token: None,
                cert: None,
            },
            PrincipalSpec {
                principal: principal("tok", PrincipalKind::Component),
                uid: None,
                gid: None,
                token: Some(TokenDigest::of_token(b"s3cret-token")),
                cert: None,
            },
        ])
    }

    #[test]
    fn matches_by_uid_gid_and_token() {
        let r = resolver();
        assert_eq!(r.resolve(Some(&peer(1001, 5)), None).unwrap().name, "prov");
        assert_eq!(r.resolve(Some(&peer(2000, 5)), None).unwrap().name, "task");
        assert_eq!(r.resolve(Some(&peer(7, 3000)), None).unwrap().name, "grp");
        let t = Resolver::bearer_digest(b"Bearer s3cret-token").unwrap();
        assert_eq!(
            r.resolve(Some(&peer(2000, 5)), Some(&t)).unwrap().name,
            "tok"
        );
        assert_eq!(r.resolve(None, Some(&t)).unwrap().name, "tok");
    }

    #[test]
    fn refuses_unknown_wrong_token_and_ambiguity() {
        let r = resolver();
        let unknown = r.resolve(Some(&peer(9, 8)), None).unwrap_err();
        assert_eq!(
            unknown,
            IdentityError::NoMatch(Seen {
                peer: Some((9, 8)),
                token: false
            })
        );
        // The caller is told what the broker saw of it, never a principal.
        let text = unknown.to_string();
        assert!(
            text.contains("uid 9, gid 8") && text.contains("no bearer token"),
            "{text}"
        );
        let wrong = Resolver::bearer_digest(b"Bearer nope").unwrap();
        // A wrong token does not fall back to uid matching.
        let e = r.resolve(Some(&peer(1001, 5)), Some(&wrong)).unwrap_err();
        assert_eq!(
            e,
            IdentityError::NoMatch(Seen {
                peer: Some((1001, 5)),
                token: true
            })
        );
        let text = e.to_string();
        assert!(
            text.contains("uid 1001, gid 5") && text.contains("and a bearer token"),
            "{text}"
        );
        for name in ["prov", "task", "grp", "tok", "nope"] {
            assert!(!text.contains(&format!("`{name}`")), "{text}");
        }
        assert!(
            r.resolve(None, Some(&wrong))
                .unwrap_err()
                .to_string()
                .contains("no peer uid/gid")
        );
        assert!(matches!(
            r.resolve(Some(&peer(2000, 3000)), None),
            Err(IdentityError::Ambiguous(_))
        ));
        assert_eq!(
            Resolver::bearer_digest(b"Basic abc").err(),
            Some(IdentityError::BadAuthorization)
        );
    }

    #[test]
    fn overflow_ids_are_refused_without_a_token() {
        let (ou, og) = overflow_ids();
        let mut specs = resolver().specs;
        specs.push(PrincipalSpec {
            principal: principal("gid-of-all", PrincipalKind::Task),
            uid: None,
            gid: Some(4000),
            token: None,
            cert: None,
        });
        let r = Resolver::new(specs);
        // Even a peer whose other id matches a principal is refused.
        assert_eq!(
            r.resolve(Some(&peer(ou, 4000)), None),
            Err(IdentityError::OverflowId)
        );
        assert_eq!(
            r.resolve(Some(&peer(2000, og)), None),
            Err(IdentityError::OverflowId)
        );
        // A token still identifies the caller.
        let t = Resolver::bearer_digest(b"Bearer s3cret-token").unwrap();
        assert_eq!(
            r.resolve(Some(&peer(ou, og)), Some(&t)).unwrap().name,
            "tok"
        );
    }

    #[test]
    fn certificate_principals_never_match_off_tls() {
        let mut specs = resolver().specs;
        specs.push(PrincipalSpec {
            principal: principal("remote", PrincipalKind::Component),
            uid: None,
            gid: None,
            token: None,
            cert: Some(CertRule {
                subject: cert::CertSubject::SpiffeId("spiffe://td/w".into()),
                spki_sha256: None,
            }),
        });
        let r = Resolver::new(specs);
        // Without the guard in `matches`, a spec with no uid/gid/token
        // matched every socket peer (and made every one ambiguous).
        assert_eq!(r.resolve(Some(&peer(1001, 5)), None).unwrap().name, "prov");
        assert!(matches!(
            r.resolve(Some(&peer(9, 9)), None),
            Err(IdentityError::NoMatch(_))
        ));
    }

    #[test]
    fn ambiguity_is_not_told_to_the_caller() {
        let e = resolver()
            .resolve(Some(&peer(2000, 3000)), None)
            .unwrap_err();
        assert!(matches!(&e, IdentityError::Ambiguous(n) if n.contains("task")));
        let msg = e.to_string();
        assert!(!msg.contains("task") && !msg.contains("grp"), "{msg}");
    }

    /// The rule without the index: every spec checked, in config order.
    fn linear(
        specs: &[PrincipalSpec],
        peer: Option<&PeerCred>,
        token: Option<&TokenDigest>,
    ) -> Result<usize, String> {
        one_of(specs, |s| s.matches(peer, token))
    }

    /// The one spec `matches` holds for, by index; else no one (empty) or
    /// the names of all it holds for, in config order.
    fn one_of(
        specs: &[PrincipalSpec],
        matches: impl Fn(&PrincipalSpec) -> bool,
    ) -> Result<usize, String> {
        let hits: Vec<usize> = (0..specs.len()).filter(|&i| matches(&specs[i])).collect();
        match hits.as_slice() {
            [i] => Ok(*i),
            [] => Err(String::new()),
            many => Err(many
                .iter()
                .map(|&i| specs[i].principal.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")),
        }
    }

    proptest::proptest! {
        /// The index changes what a lookup costs, never whom it finds:
        /// the same principal, the same refusal, the same ambiguity (names
        /// in config order) as checking every spec, over small id and
        /// token ranges so that clashes are common.
        #[test]
        fn indexed_lookup_finds_what_checking_every_spec_finds(
            specs in proptest::collection::vec(
                (
                    proptest::option::of(0u32..4),
                    proptest::option::of(0u32..4),
                    proptest::option::of(0u8..4),
                    proptest::bool::weighted(0.1),
                ),
                0..12,
            ),
            peer in proptest::option::of((0u32..5, 0u32..5)),
            token in proptest::option::of(0u8..5),
        ) {
            let specs: Vec<PrincipalSpec> = specs
                .into_iter()
                .enumerate()
                .map(|(i, (uid, gid, tok, cert))| PrincipalSpec {
                    principal: principal(&format!("p{i}"), PrincipalKind::Task),
                    uid,
                    gid,
                    token: tok.map(|t| TokenDigest::of_token(&[t])),
                    cert: cert.then(|| CertRule {
                        subject: cert::CertSubject::SpiffeId("spiffe://td/w".into()),
                        spki_sha256: None,
                    }),
                })
                .collect();
            let peer = peer.map(|(u, g)| PeerCred { uid: u, gid: g, pid: None });
            let token = token.map(|t| TokenDigest::of_token(&[t]));
            let r = Resolver::new(specs.clone());
            let got = match r.resolve_indexed(peer.as_ref(), token.as_ref()) {
                Ok((i, _)) => Ok(i),
                Err(IdentityError::Ambiguous(names)) => Err(names),
                Err(IdentityError::NoMatch(_)) => Err(String::new()),
                Err(e) => return Err(proptest::test_runner::TestCaseError::fail(e.to_string())),
            };
            proptest::prop_assert_eq!(got, linear(&specs, peer.as_ref(), token.as_ref()));
        }
    }

    /// The certificate rule without the index: every spec checked.
    fn linear_cert(specs: &[PrincipalSpec], cert: &PeerCert) -> Result<usize, String> {
        one_of(specs, |s| s.cert.as_ref().is_some_and(|r| r.matches(cert)))
    }

    const URIS: [&str; 3] = ["spiffe://td/a", "spiffe://td/b", "urn:x"];
    const DNS: [&str; 3] = ["a.example", "b.example", "c.example"];

    proptest::proptest! {
        /// Over TLS too, the index changes what a lookup costs, never whom
        /// it finds: certificate specs by URI or DNS SAN, pinned or not,
        /// mixed with uid and token specs, against certificates with any
        /// URI, several (repeated) DNS SANs and one of two keys.
        #[test]
        fn indexed_cert_lookup_finds_what_checking_every_spec_finds(
            specs in proptest::collection::vec(
                (0u8..3, 0usize..3, proptest::option::of(0u8..2)),
                0..12,
            ),
            uri in proptest::option::of(0usize..3),
            dns in proptest::collection::vec(0usize..3, 0..4),
            key in 0u8..2,
        ) {
            let specs: Vec<PrincipalSpec> = specs
                .into_iter()
                .enumerate()
                .map(|(i, (kind, name, pin))| PrincipalSpec {
                    principal: principal(&format!("p{i}"), PrincipalKind::Component),
                    uid: (kind == 2).then_some(1000),
                    gid: None,
                    token: None,
                    cert: (kind < 2).then(|| CertRule {
                        subject: if kind == 0 {
                            cert::CertSubject::SpiffeId(URIS[name].into())
                        } else {
                            cert::CertSubject::DnsName(DNS[name].into())
                        },
                        spki_sha256: pin.map(|p| [p; 32]),
                    }),
                })
                .collect();
            let dns: Vec<&str> = dns.into_iter().map(|d| DNS[d]).collect();
            let cert = PeerCert::from_parts(uri.map(|u| URIS[u]), &dns, [key; 32]);
            let peer = TlsPeer { addr: "127.0.0.1:1".into(), cert: Ok(cert.clone()) };
            let r = Resolver::new(specs.clone());
            let got = match r.resolve_cert(&peer, 0) {
                Ok((i, _)) => Ok(i),
                Err(IdentityError::Ambiguous(names)) => Err(names),
                Err(IdentityError::CertNoMatch) => Err(String::new()),
                Err(e) => return Err(proptest::test_runner::TestCaseError::fail(e.to_string())),
            };
            proptest::prop_assert_eq!(got, linear_cert(&specs, &cert));
        }
    }

    #[test]
    fn ten_thousand_principals_resolve_by_token_and_uid() {
        let specs: Vec<PrincipalSpec> = (0..10_000u32)
            .map(|i| PrincipalSpec {
                principal: principal(&format!("p{i}"), PrincipalKind::Task),
                uid: (i % 2 == 1).then_some(10_000 + i),
                gid: None,
                token: (i % 2 == 0).then(|| TokenDigest::of_token(format!("t{i}").as_bytes())),
                cert: None,
            })
            .collect();
        let r = Resolver::new(specs);
        let t = TokenDigest::of_token(b"t5000");
        assert_eq!(r.resolve(None, Some(&t)).unwrap().name, "p5000");
        assert_eq!(
            r.resolve(Some(&peer(15_001, 1)), None).unwrap().name,
            "p5001"
        );
        // A uid principal's uid with a token that is no one's: no match.
        let nobody = TokenDigest::of_token(b"t5001");
        assert!(matches!(
            r.resolve(Some(&peer(15_001, 1)), Some(&nobody)),
            Err(IdentityError::NoMatch(_))
        ));
    }

    #[test]
    fn digest_debug_and_errors_do_not_leak() {
        let d = TokenDigest::of_token(b"canary-token-123");
        assert!(!format!("{d:?}").contains(&d.to_hex()[..8]));
        let e = Resolver::bearer_digest(b"Token canary-token-123").unwrap_err();
        assert!(!format!("{e} {e:?}").contains("canary"));
    }
}
