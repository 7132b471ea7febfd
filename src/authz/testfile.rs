//! Policy test files: the broker's concise YAML form and Cedar's own
//! `cedar run-tests` JSON form, parsed into cases and run against an
//! [`Authorizer`].
//!
//! A broker case names a caller (a configured principal, or an inline
//! `task`/`component`), an action and a path, and is decided by
//! [`Authorizer::decide`] — the server's own path, entities included — so a
//! test means what production means. A Cedar case carries its own request
//! and entities and is decided by [`Authorizer::decide_request`] with the
//! same policy set and schema.
//!
//! ```yaml
//! config: ../deploy/config.toml        # optional; resolves `principal:` names
//! cases:
//!   - name: platform writes anywhere
//!     principal: provisioner           # or task: {scope: acme/t-42}
//!     action: write                    #    or component: {roles: [platform]}
//!     path: acme/t-42/db               # `scope: acme/t-42` (or a path ending in `/`) for list
//!     labels: {team: db}               # write, or read (the stored labels): what the broker knows
//!     transport: unix                  # or tls
//!     peer_uid: 1001                   # unix only; also peer_gid, peer_pid
//!     spiffe_id: spiffe://td/writer    # tls only: the client certificate's id
//!     expect: allow
//!     policies: [platform-provision]   # optional: exactly the policies that decide
//! ```
//!
//! Which form a file is in is read from its content: a JSON list in which
//! a case has a Cedar-only key (`request`, `entities`, `decision`, …) is
//! Cedar's ([`cedar`]); a JSON list of entities (objects with `uid`) is an
//! entities file, not a test file; anything else is the broker's. Every
//! case is parsed on its own, strictly: a malformed case (a missing field,
//! an unknown key) fails with a reason naming the field, and the file's
//! other cases still run.

mod cedar;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Action, Authorizer, Decision, RequestContext, Resource, Transport};
use crate::identity::{PeerCred, Principal, PrincipalKind, PrincipalSpec};
use crate::secret::{PathError, ScopePath, SecretPath};
use crate::store::Labels;

pub use cedar::CedarCase;

/// What a test file of either form looks like, for errors.
const EXPECTED_FORMS: &str = "expected the broker's form (a map with `cases:`, or a list of cases with `action` and `expect`) or cedar's `run-tests` form (a JSON list of cases with `request`, `entities`, `decision`, `reason` and `num_errors`)";

/// A test file that could not be read as a whole.
#[derive(Debug, thiserror::Error)]
pub enum TestFileError {
    /// Neither the broker's YAML form nor Cedar's JSON form.
    #[error("`{file}` is not a test file: {message}")]
    Parse {
        /// The file.
        file: String,
        /// The parser's one-line reason.
        message: String,
    },
    /// A Cedar entities file (a test case's `entities` may name it). A
    /// directory of tests may hold them; they are skipped there.
    #[error(
        "`{file}` is a cedar entities file (a JSON list of entities with `uid`), not a test file; {EXPECTED_FORMS}"
    )]
    Entities {
        /// The file.
        file: String,
    },
}

/// The decision a case expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The request is permitted.
    Allow,
    /// The request is denied.
    Deny,
}

impl Expect {
    fn of(allowed: bool) -> Self {
        if allowed { Self::Allow } else { Self::Deny }
    }

    /// `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// What a request acts on: a secret, or a scope (for `list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A secret path.
    Secret(SecretPath),
    /// A scope; the root scope lists everything.
    Scope(ScopePath),
}

impl Target {
    /// Parses `acme/t-42/db` (a secret) or `acme/t-42/` (a scope: a trailing
    /// `/`, as in the API; `/` alone or the empty string is the root).
    pub fn parse(s: &str) -> Result<Self, PathError> {
        match s.strip_suffix('/') {
            Some("") => Ok(Self::Scope(ScopePath::root())),
            Some(scope) => ScopePath::parse(scope).map(Self::Scope),
            None if s.is_empty() => Ok(Self::Scope(ScopePath::root())),
            None => SecretPath::parse(s).map(Self::Secret),
        }
    }

    /// Parses a scope with or without its trailing `/`.
    pub fn parse_scope(s: &str) -> Result<Self, PathError> {
        let s = s.strip_suffix('/').unwrap_or(s);
        if s.is_empty() {
            Ok(Self::Scope(ScopePath::root()))
        } else {
            ScopePath::parse(s).map(Self::Scope)
        }
    }

    /// As the authorizer takes it for `action`: a path names an
    /// `Output` for `upload` and a `Secret` otherwise.
    pub fn resource<'a>(&'a self, action: Action, labels: Option<&'a Labels>) -> Resource<'a> {
        match self {
            Self::Secret(path) if action == Action::Upload => Resource::Output(path),
            Self::Secret(path) => Resource::Secret { path, labels },
            Self::Scope(scope) => Resource::Scope(scope),
        }
    }
}

/// Who makes a broker case's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A principal of the broker config, by name.
    Configured(String),
    /// A principal given in the test itself.
    Inline(Principal),
}

/// One request in broker terms and what it should come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerCase {
    /// Who asks.
    pub caller: Caller,
    /// What they ask to do.
    pub action: Action,
    /// To what.
    pub target: Target,
    /// Labels the broker knows when deciding (`write` only).
    pub labels: Option<Labels>,
    /// How the caller connected.
    pub transport: Transport,
    /// Peer uid, gid and pid overrides (unix only).
    pub peer: (Option<u32>, Option<u32>, Option<i32>),
    /// The client certificate's SPIFFE id (tls only).
    pub spiffe_id: Option<String>,
    /// The expected decision.
    pub expect: Expect,
    /// If given, exactly the policy ids expected to determine the decision.
    pub policies: Option<Vec<String>>,
}

/// What a case is, or why it cannot be run.
#[derive(Debug, Clone, PartialEq)]
pub enum CaseSpec {
    /// The broker's form.
    Broker(Box<BrokerCase>),
    /// Cedar's form.
    Cedar(Box<CedarCase>),
    /// A case that does not make sense (it fails, with this reason).
    Invalid(String),
}

/// A named case.
#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    /// As printed on its `PASS`/`FAIL` line.
    pub name: String,
    /// The case.
    pub spec: CaseSpec,
}

/// The cases of one file.
#[derive(Debug, Clone, PartialEq)]
pub struct TestFile {
    /// The broker config the file names (resolved against its directory).
    pub config: Option<PathBuf>,
    /// Its cases, in order.
    pub cases: Vec<TestCase>,
}

/// How a case came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether it met every expectation.
    pub passed: bool,
    /// Why it failed (empty when it passed).
    pub reason: String,
    /// The decision, when one was reached.
    pub decision: Option<Decision>,
}

impl Outcome {
    fn fail(reason: String, decision: Option<Decision>) -> Self {
        Self {
            passed: false,
            reason,
            decision,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBrokerFile {
    config: Option<String>,
    cases: Vec<serde_yaml_ng::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    // Checked to be a string; the name itself is read before the case is
    // parsed, so a malformed case keeps its name.
    #[serde(rename = "name")]
    _name: Option<String>,
    principal: Option<String>,
    task: Option<RawTask>,
    component: Option<RawComponent>,
    action: Option<String>,
    path: Option<String>,
    scope: Option<String>,
    labels: Option<Labels>,
    transport: Option<String>,
    peer_uid: Option<u32>,
    peer_gid: Option<u32>,
    peer_pid: Option<i32>,
    spiffe_id: Option<String>,
    // A string, read below, so that a wrong value is named as `expect`'s.
    expect: Option<String>,
    policies: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    scope: String,
    name: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    name: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// Parses a test file; `file` is its path (for names, and to resolve the
/// config and entity files it mentions).
pub fn parse(file: &Path, text: &str) -> Result<TestFile, TestFileError> {
    let display = file.display().to_string();
    let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let err = |message: String| TestFileError::Parse {
        file: display.clone(),
        message: one_line(&message),
    };
    let unnamed = |i: usize| format!("{display}#{i}");
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        if cedar::is_entities_document(&json) {
            return Err(TestFileError::Entities { file: display });
        }
        if cedar::is_cedar_document(&json) {
            let cases = json
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, c)| TestCase {
                    name: cedar::name_of(c).map_or_else(|| unnamed(i), str::to_owned),
                    spec: match cedar::parse_case(c, &dir) {
                        Ok(case) => CaseSpec::Cedar(Box::new(case)),
                        Err(reason) => CaseSpec::Invalid(reason),
                    },
                })
                .collect();
            return Ok(TestFile {
                config: None,
                cases,
            });
        }
    }
    // YAML is a superset of JSON, so broker cases may be written in either.
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| err(e.to_string()))?;
    let (config, raw_cases) = match doc {
        serde_yaml_ng::Value::Sequence(cases) => (None, cases),
        doc @ serde_yaml_ng::Value::Mapping(_) => {
            let f: RawBrokerFile = serde_yaml_ng::from_value(doc)
                .map_err(|e| err(format!("{e}; {EXPECTED_FORMS}")))?;
            (f.config.map(|c| dir.join(c)), f.cases)
        }
        _ => return Err(err(EXPECTED_FORMS.to_owned())),
    };
    let cases = raw_cases
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let name = raw
                .get("name")
                .and_then(serde_yaml_ng::Value::as_str)
                .map_or_else(|| unnamed(i), str::to_owned);
            let parsed = if raw.is_mapping() {
                serde_yaml_ng::from_value::<RawCase>(raw).map_err(|e| one_line(&e.to_string()))
            } else {
                Err("a case must be a map of keys such as `action`, `path` and `expect`".to_owned())
            };
            let spec = match parsed.and_then(broker_case) {
                Ok(case) => CaseSpec::Broker(Box::new(case)),
                Err(reason) => CaseSpec::Invalid(reason),
            };
            TestCase { name, spec }
        })
        .collect();
    Ok(TestFile { config, cases })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn broker_case(raw: RawCase) -> Result<BrokerCase, String> {
    let caller = match (raw.principal, raw.task, raw.component) {
        (Some(name), None, None) => Caller::Configured(name),
        (None, Some(t), None) => {
            let scope =
                ScopePath::parse(&t.scope).map_err(|e| format!("task scope `{}`: {e}", t.scope))?;
            Caller::Inline(Principal {
                name: t.name.unwrap_or_else(|| "task".to_owned()),
                kind: PrincipalKind::Task,
                roles: t.roles,
                scope: Some(scope),
            })
        }
        (None, None, Some(c)) => Caller::Inline(Principal {
            name: c.name.unwrap_or_else(|| "component".to_owned()),
            kind: PrincipalKind::Component,
            roles: c.roles,
            scope: None,
        }),
        _ => return Err("give exactly one of `principal`, `task` or `component`".to_owned()),
    };
    let action = raw.action.ok_or("`action` is missing")?;
    let action = Action::parse(&action).ok_or_else(|| {
        format!("`{action}` is not an action; use read, write, list, delete or upload")
    })?;
    let target = match (raw.path, raw.scope) {
        (Some(p), None) => Target::parse(&p).map_err(|e| format!("path `{p}`: {e}"))?,
        (None, Some(s)) => Target::parse_scope(&s).map_err(|e| format!("scope `{s}`: {e}"))?,
        _ => return Err("give exactly one of `path` or `scope`".to_owned()),
    };
    match (action, &target) {
        (Action::List, Target::Secret(p)) => {
            return Err(format!(
                "`list` takes a scope: write `scope: {}` or a path ending in `/`",
                p.as_str()
            ));
        }
        (
            a @ (Action::Read | Action::Write | Action::Delete | Action::Upload),
            Target::Scope(_),
        ) => {
            return Err(format!("`{}` takes a secret path, not a scope", a.as_str()));
        }
        _ => {}
    }
    // SECURITY (test fidelity): the broker knows a secret's labels on a
    // write (they are being set) and on a read (it decides again with the
    // stored labels before releasing the value); a delete or list is decided
    // without them, so a test supplying them there would not mean what
    // production means.
    if raw.labels.is_some() && !matches!(action, Action::Write | Action::Read) {
        return Err(format!(
            "`labels` are known to the broker only on `write` and `read`; a `{}` is decided without them",
            action.as_str()
        ));
    }
    let transport = match raw.transport.as_deref() {
        None | Some("unix") => Transport::Unix,
        Some("tls") => Transport::Tls,
        Some(other) => return Err(format!("transport `{other}` is not `unix` or `tls`")),
    };
    let peer = (raw.peer_uid, raw.peer_gid, raw.peer_pid);
    if transport == Transport::Tls && peer != (None, None, None) {
        return Err("peer credentials exist only on the unix transport".to_owned());
    }
    if transport == Transport::Unix && raw.spiffe_id.is_some() {
        return Err("`spiffe_id` exists only on the tls transport".to_owned());
    }
    let expect = match raw.expect.as_deref() {
        Some("allow") => Expect::Allow,
        Some("deny") => Expect::Deny,
        Some(other) => return Err(format!("`expect` is `{other}`; write allow or deny")),
        None => return Err("`expect` is missing (allow or deny)".to_owned()),
    };
    Ok(BrokerCase {
        caller,
        action,
        target,
        labels: raw.labels,
        transport,
        peer,
        spiffe_id: raw.spiffe_id,
        expect,
        policies: raw.policies,
    })
}

/// The principal and, on the unix transport, the peer credentials a broker
/// case's request carries. A configured principal's uid/gid are its peer's
/// unless the case overrides them; otherwise they default to 0.
pub fn caller(
    case: &BrokerCase,
    specs: Option<&[PrincipalSpec]>,
) -> Result<(Principal, Option<PeerCred>), String> {
    let (principal, uid, gid) = match &case.caller {
        Caller::Inline(p) => (p.clone(), None, None),
        Caller::Configured(name) => {
            let specs = specs.ok_or_else(|| {
                format!("principal `{name}` needs a broker config (`config:` in the file, or `--config`)")
            })?;
            let spec = specs
                .iter()
                .find(|s| s.principal.name == *name)
                .ok_or_else(|| format!("no principal `{name}` in the broker config"))?;
            (spec.principal.clone(), spec.uid, spec.gid)
        }
    };
    let peer = (case.transport == Transport::Unix).then(|| {
        let uid = case.peer.0.or(uid).unwrap_or(0);
        PeerCred {
            uid,
            gid: case.peer.1.or(gid).unwrap_or(0),
            pid: case.peer.2,
        }
    });
    Ok((principal, peer))
}

/// `a, b` or `none`.
pub fn list_or_none(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".to_owned()
    } else {
        ids.join(", ")
    }
}

fn mismatch(expect: Expect, d: &Decision) -> String {
    let mut reason = format!(
        "expected {}, got {} (policies: {})",
        expect.as_str(),
        Expect::of(d.allowed).as_str(),
        list_or_none(&d.policies)
    );
    if !d.errors.is_empty() {
        reason.push_str(&format!(" (errors: {})", d.errors.join("; ")));
    }
    reason
}

/// Runs one case. `specs` are the principals of the broker config, if any.
pub fn run(authz: &Authorizer, case: &TestCase, specs: Option<&[PrincipalSpec]>) -> Outcome {
    match &case.spec {
        CaseSpec::Invalid(reason) => Outcome::fail(reason.clone(), None),
        CaseSpec::Broker(b) => run_broker(authz, b, specs),
        CaseSpec::Cedar(c) => cedar::run(authz, c),
    }
}

fn run_broker(authz: &Authorizer, case: &BrokerCase, specs: Option<&[PrincipalSpec]>) -> Outcome {
    let (principal, peer) = match caller(case, specs) {
        Ok(c) => c,
        Err(reason) => return Outcome::fail(reason, None),
    };
    let ctx = RequestContext {
        transport: case.transport,
        peer,
        request_id: "policy-test",
        spiffe_id: case.spiffe_id.as_deref(),
    };
    let d = match (&case.target, case.action, &case.labels) {
        // A read as the broker does it: first without labels (before the
        // store is asked), then again with the stored labels.
        (Target::Secret(path), Action::Read, Some(labels)) => {
            let first = authz.decide(
                &principal,
                Action::Read,
                case.target.resource(Action::Read, None),
                &ctx,
            );
            match first.allowed {
                true => authz
                    .recheck_read(&principal, path, labels, &ctx)
                    .unwrap_or(first),
                false => first,
            }
        }
        _ => authz.decide(
            &principal,
            case.action,
            case.target.resource(case.action, case.labels.as_ref()),
            &ctx,
        ),
    };
    if Expect::of(d.allowed) != case.expect {
        return Outcome::fail(mismatch(case.expect, &d), Some(d));
    }
    if let Some(want) = &case.policies {
        let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
        let got: BTreeSet<&str> = d.policies.iter().map(String::as_str).collect();
        if want != got {
            let reason = format!(
                "expected {} by [{}], got {} by [{}]",
                case.expect.as_str(),
                want.into_iter().collect::<Vec<_>>().join(", "),
                Expect::of(d.allowed).as_str(),
                got.into_iter().collect::<Vec<_>>().join(", "),
            );
            return Outcome::fail(reason, Some(d));
        }
    }
    Outcome {
        passed: true,
        reason: String::new(),
        decision: Some(d),
    }
}

#[cfg(test)]
mod tests;
