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
//!     expect: allow
//!     policies: [platform-provision]   # optional: exactly the policies that decide
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cedar_policy::{Context, Entities, EntityUid, Request};
use serde::Deserialize;

use super::{Action, Authorizer, Decision, RequestContext, Resource, Transport};
use crate::identity::{PeerCred, Principal, PrincipalKind, PrincipalSpec};
use crate::secret::{PathError, ScopePath, SecretPath};
use crate::store::Labels;

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

    /// As the authorizer takes it.
    pub fn resource<'a>(&'a self, labels: Option<&'a Labels>) -> Resource<'a> {
        match self {
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
    /// The expected decision.
    pub expect: Expect,
    /// If given, exactly the policy ids expected to determine the decision.
    pub policies: Option<Vec<String>>,
}

/// One case of Cedar's `run-tests` format, parsed when run (it needs the
/// schema).
#[derive(Debug, Clone, PartialEq)]
pub struct CedarCase {
    /// The case as written.
    pub json: serde_json::Value,
    /// The test file's directory (entity files are relative to it).
    pub dir: PathBuf,
}

/// What a case is, or why it cannot be run.
#[derive(Debug, Clone, PartialEq)]
pub enum CaseSpec {
    /// The broker's form.
    Broker(Box<BrokerCase>),
    /// Cedar's form.
    Cedar(CedarCase),
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
#[serde(untagged)]
enum RawFile {
    Cases(Vec<RawCase>),
    File(RawBrokerFile),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBrokerFile {
    config: Option<String>,
    cases: Vec<RawCase>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Option<String>,
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
    expect: Option<Expect>,
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

/// Whether a JSON document is in Cedar's `run-tests` form: an array of
/// objects with a `request`.
fn is_cedar_form(v: &serde_json::Value) -> bool {
    v.as_array()
        .is_some_and(|cases| !cases.is_empty() && cases.iter().all(|c| c.get("request").is_some()))
}

/// Parses a test file; `file` is its path (for names, and to resolve the
/// config and entity files it mentions).
pub fn parse(file: &Path, text: &str) -> Result<TestFile, TestFileError> {
    let display = file.display().to_string();
    let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let err = |message: String| TestFileError::Parse {
        file: display.clone(),
        message: message.split_whitespace().collect::<Vec<_>>().join(" "),
    };
    let cedar = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .filter(is_cedar_form);
    if let Some(json) = cedar {
        let cases = json
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, c)| TestCase {
                name: c
                    .get("name")
                    .and_then(|n| n.as_str())
                    .map_or_else(|| format!("{display}#{i}"), str::to_owned),
                spec: CaseSpec::Cedar(CedarCase {
                    json: c.clone(),
                    dir: dir.clone(),
                }),
            })
            .collect();
        return Ok(TestFile {
            config: None,
            cases,
        });
    }
    // YAML is a superset of JSON, so broker cases may be written in either.
    let raw: RawFile = serde_yaml_ng::from_str(text).map_err(|e| err(e.to_string()))?;
    let (config, raw_cases) = match raw {
        RawFile::Cases(cases) => (None, cases),
        RawFile::File(f) => (f.config.map(|c| dir.join(c)), f.cases),
    };
    let cases = raw_cases
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let name = raw.name.clone().unwrap_or_else(|| format!("{display}#{i}"));
            let spec = match broker_case(raw) {
                Ok(case) => CaseSpec::Broker(Box::new(case)),
                Err(reason) => CaseSpec::Invalid(reason),
            };
            TestCase { name, spec }
        })
        .collect();
    Ok(TestFile { config, cases })
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
    let action = Action::parse(&action)
        .ok_or_else(|| format!("`{action}` is not an action; use read, write, list or delete"))?;
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
        (a @ (Action::Read | Action::Write | Action::Delete), Target::Scope(_)) => {
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
    let expect = raw.expect.ok_or("`expect` is missing (allow or deny)")?;
    Ok(BrokerCase {
        caller,
        action,
        target,
        labels: raw.labels,
        transport,
        peer,
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
        CaseSpec::Cedar(c) => run_cedar(authz, c),
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
        spiffe_id: None,
    };
    let d = match (&case.target, case.action, &case.labels) {
        // A read as the broker does it: first without labels (before the
        // store is asked), then again with the stored labels.
        (Target::Secret(path), Action::Read, Some(labels)) => {
            let first = authz.decide(&principal, Action::Read, case.target.resource(None), &ctx);
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
            case.target.resource(case.labels.as_ref()),
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

#[derive(Debug, Deserialize)]
struct RawCedarCase {
    request: RawCedarRequest,
    entities: serde_json::Value,
    decision: Expect,
    #[serde(default)]
    reason: Vec<String>,
    num_errors: Option<usize>,
    // Older Cedar CLIs wrote `has_error` instead of `num_errors`.
    has_error: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct RawCedarRequest {
    principal: String,
    action: String,
    resource: String,
    #[serde(default)]
    context: serde_json::Value,
}

fn run_cedar(authz: &Authorizer, case: &CedarCase) -> Outcome {
    let raw: RawCedarCase = match serde_json::from_value(case.json.clone()) {
        Ok(r) => r,
        Err(e) => return Outcome::fail(format!("not a cedar test case: {e}"), None),
    };
    let (request, entities) = match cedar_request(authz, &raw, &case.dir) {
        Ok(built) => built,
        Err(reason) => return Outcome::fail(reason, None),
    };
    let d = authz.decide_request(&request, &entities);
    if Expect::of(d.allowed) != raw.decision {
        return Outcome::fail(mismatch(raw.decision, &d), Some(d));
    }
    // Cedar's semantics: the expected reasons must be among the actual ones.
    let missing: Vec<String> = raw
        .reason
        .iter()
        .filter(|r| !d.policies.contains(r))
        .map(|r| format!("`{r}`"))
        .collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "missing reason(s): {} (got: {})",
            missing.join(", "),
            list_or_none(&d.policies)
        ));
    }
    let want_errors = raw
        .num_errors
        .unwrap_or_else(|| usize::from(raw.has_error.unwrap_or(false)));
    let errors_ok = match (raw.num_errors, raw.has_error) {
        (None, Some(has)) => has != d.errors.is_empty(),
        _ => d.errors.len() == want_errors,
    };
    if !errors_ok {
        problems.push(format!(
            "expected {want_errors} error(s), got {}{}",
            d.errors.len(),
            if d.errors.is_empty() {
                String::new()
            } else {
                format!(": {}", d.errors.join("; "))
            }
        ));
    }
    if problems.is_empty() {
        Outcome {
            passed: true,
            reason: String::new(),
            decision: Some(d),
        }
    } else {
        Outcome::fail(problems.join("; "), Some(d))
    }
}

fn cedar_request(
    authz: &Authorizer,
    raw: &RawCedarCase,
    dir: &Path,
) -> Result<(Request, Entities), String> {
    let schema = authz.schema();
    let uid = |what: &str, s: &str| {
        s.parse::<EntityUid>()
            .map_err(|e| format!("{what} `{s}`: {e}"))
    };
    let principal = uid("principal", &raw.request.principal)?;
    let action = uid("action", &raw.request.action)?;
    let resource = uid("resource", &raw.request.resource)?;
    let context_json = if raw.request.context.is_null() {
        serde_json::json!({})
    } else {
        raw.request.context.clone()
    };
    let context = Context::from_json_value(context_json, Some((&schema, &action)))
        .map_err(|e| format!("context: {e}"))?;
    let request = Request::new(principal, action, resource, context, Some(&schema))
        .map_err(|e| format!("request: {e}"))?;
    let entities_json = match raw.entities.as_str() {
        // A file name, relative to the test file and kept inside its
        // directory, as `cedar run-tests` does.
        Some(name) => {
            let path = dir.join(name);
            let inside = match (path.canonicalize(), dir.canonicalize()) {
                (Ok(p), Ok(d)) => p.starts_with(d),
                _ => false,
            };
            if !inside {
                return Err(format!(
                    "entities file `{name}` is missing or outside `{}`",
                    dir.display()
                ));
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
            serde_json::from_str(&text)
                .map_err(|e| format!("entities file `{}`: {e}", path.display()))?
        }
        None => raw.entities.clone(),
    };
    let entities = Entities::from_json_value(entities_json, Some(&schema))
        .map_err(|e| format!("entities: {e}"))?;
    Ok((request, entities))
}

#[cfg(test)]
mod tests;
