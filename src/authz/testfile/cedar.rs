//! Cedar's own `cedar run-tests` JSON form: telling it (and Cedar entity
//! files) apart from the broker's form, parsing each case strictly, and
//! running it with the broker's policy set and schema.
//!
//! The rules follow `cedar-policy-cli` 4.14.1 (`run_test.rs`, whose types
//! are private to the CLI, so they are restated here and checked against a
//! replica in the tests). A case is a JSON object with:
//!
//! | key          | required | value                                             |
//! |--------------|----------|---------------------------------------------------|
//! | `name`       | no       | a string (cedar ignores a non-string; we refuse)  |
//! | `request`    | yes      | `{principal, action, resource, context}`, all four required; the first three entity uid strings |
//! | `entities`   | yes      | a JSON entity list, or a file name relative to the test file, inside its directory |
//! | `decision`   | yes      | `"allow"` or `"deny"`                             |
//! | `reason`     | yes      | a list of policy ids, each among the deciding ones |
//! | `num_errors` | yes      | a count (a non-negative integer)                  |
//!
//! Stricter than cedar, so a misspelled check cannot be dropped silently:
//! any other key, in a case or in its `request`, is an error naming it
//! (cedar ignores it). A bad case fails on its own; the others still run.

use std::path::{Path, PathBuf};

use cedar_policy::{Context, Entities, EntityUid, Request};
use serde_json::{Map, Value};

use super::{Expect, Outcome, list_or_none, mismatch};
use crate::authz::Authorizer;

/// The keys of a Cedar case.
const CASE_KEYS: [&str; 6] = [
    "name",
    "request",
    "entities",
    "decision",
    "reason",
    "num_errors",
];
/// The keys of a Cedar case's `request`.
const REQUEST_KEYS: [&str; 4] = ["principal", "action", "resource", "context"];
/// Keys only a Cedar case has (the broker's form has none of them), so one
/// marks a file as Cedar's form; `has_error` is an older CLI's.
const CEDAR_ONLY_KEYS: [&str; 6] = [
    "request",
    "entities",
    "decision",
    "reason",
    "num_errors",
    "has_error",
];

/// One case of Cedar's `run-tests` format, checked for shape; its request
/// and entities are built when it runs (that needs the schema).
#[derive(Debug, Clone, PartialEq)]
pub struct CedarCase {
    /// `request.principal`, an entity uid as written.
    pub principal: String,
    /// `request.action`.
    pub action: String,
    /// `request.resource`.
    pub resource: String,
    /// `request.context`, as written.
    pub context: Value,
    /// Inline entities, or a file name relative to [`CedarCase::dir`].
    pub entities: Value,
    /// The expected decision.
    pub decision: Expect,
    /// Policy ids that must be among the deciding ones.
    pub reason: Vec<String>,
    /// The exact number of evaluation errors expected.
    pub num_errors: usize,
    /// The test file's directory (entity files are relative to it).
    pub dir: PathBuf,
}

/// The keys of an entity in Cedar's entities JSON.
const ENTITY_KEYS: [&str; 4] = ["uid", "attrs", "parents", "tags"];

/// Whether a JSON document is a Cedar entities file: a list whose every
/// element is an object with a `uid` and no key an entity does not have
/// (an empty list included, the usual "no entities" file). A test case of
/// either form has keys an entity cannot have, so a test file is never
/// mistaken for one (and skipped).
pub(super) fn is_entities_document(v: &Value) -> bool {
    v.as_array().is_some_and(|items| {
        items.iter().all(|e| {
            e.as_object().is_some_and(|o| {
                o.contains_key("uid") && o.keys().all(|k| ENTITY_KEYS.contains(&k.as_str()))
            })
        })
    })
}

/// Whether a JSON document is in Cedar's `run-tests` form: a list in which
/// some case has a key only Cedar's form has. The file's other cases are
/// then held to that form too, so one malformed case is reported as such
/// instead of making the whole file unrecognisable.
pub(super) fn is_cedar_document(v: &Value) -> bool {
    v.as_array().is_some_and(|cases| {
        cases.iter().any(|c| {
            c.as_object()
                .is_some_and(|o| CEDAR_ONLY_KEYS.iter().any(|k| o.contains_key(*k)))
        })
    })
}

/// The name a case gives itself, if any.
pub(super) fn name_of(case: &Value) -> Option<&str> {
    case.get("name").and_then(Value::as_str)
}

fn keys_list(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Unknown keys of `obj` (prefixed with `path`), as an error.
fn refuse_unknown(obj: &Map<String, Value>, known: &[&str], path: &str) -> Result<(), String> {
    let unknown: Vec<String> = obj
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| format!("`{path}{k}`"))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let legacy = if obj.contains_key("has_error") && path.is_empty() {
        " (`has_error` is from older cedar CLIs: cedar 4 reads `num_errors`, a count)"
    } else {
        ""
    };
    Err(format!(
        "unknown key{} {}{legacy}; {} has {}",
        if unknown.len() > 1 { "s" } else { "" },
        unknown.join(", "),
        if path.is_empty() {
            "a cedar case"
        } else {
            "`request`"
        },
        keys_list(known)
    ))
}

fn required<'a>(obj: &'a Map<String, Value>, key: &str, what: &str) -> Result<&'a Value, String> {
    obj.get(key)
        .ok_or_else(|| format!("`{key}` is missing ({what})"))
}

/// Checks one case's shape; the error names the field.
pub(super) fn parse_case(case: &Value, dir: &Path) -> Result<CedarCase, String> {
    let obj = case
        .as_object()
        .ok_or("a cedar case must be a JSON object with `request`, `entities`, `decision`, `reason` and `num_errors`")?;
    refuse_unknown(obj, &CASE_KEYS, "")?;
    if obj.get("name").is_some_and(|n| !n.is_string()) {
        return Err("`name` must be a string".to_owned());
    }
    let request = required(
        obj,
        "request",
        "an object with `principal`, `action`, `resource` and `context`",
    )?
    .as_object()
    .ok_or("`request` must be an object with `principal`, `action`, `resource` and `context`")?;
    refuse_unknown(request, &REQUEST_KEYS, "request.")?;
    let uid = |key: &str| -> Result<String, String> {
        match request.get(key) {
            // Cedar reads `null` as absent.
            None | Some(Value::Null) => Err(format!(
                "`request.{key}` is missing (an entity uid such as `SecretBroker::Task::\"t\"`)"
            )),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!(
                "`request.{key}` must be a string (an entity uid such as `SecretBroker::Task::\"t\"`)"
            )),
        }
    };
    let principal = uid("principal")?;
    let action = uid("action")?;
    let resource = uid("resource")?;
    let context = request
        .get("context")
        .ok_or("`request.context` is missing (an object; `{}` for none)")?
        .clone();
    let entities = required(obj, "entities", "a list of entities, or a file name")?.clone();
    let decision = match required(obj, "decision", "`allow` or `deny`")?.as_str() {
        Some("allow") => Expect::Allow,
        Some("deny") => Expect::Deny,
        _ => return Err("`decision` must be `allow` or `deny`".to_owned()),
    };
    let reason = required(obj, "reason", "a list of policy ids, possibly empty")?
        .as_array()
        .and_then(|ids| {
            ids.iter()
                .map(|id| id.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or("`reason` must be a list of policy id strings")?;
    let num_errors = required(obj, "num_errors", "a count of evaluation errors, usually 0")?
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or("`num_errors` must be a non-negative integer")?;
    Ok(CedarCase {
        principal,
        action,
        resource,
        context,
        entities,
        decision,
        reason,
        num_errors,
        dir: dir.to_path_buf(),
    })
}

/// The broker id of the policy Cedar would name `policy<n>`: Cedar numbers
/// the policies of its one policy file from 0 in source order and names a
/// policy by its `@id` instead when it has one. The broker's set is the
/// directory's `*.cedar` files in name order (as `cat policies/*.cedar`
/// would give `cedar`), so `policy<n>` is the n-th policy counting through
/// them, if that policy has no `@id` (its broker id is then
/// `<file>#<index in file>`).
pub(crate) fn positional_id(authz: &Authorizer, cedar_id: &str) -> Option<String> {
    let digits = cedar_id.strip_prefix("policy")?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut n: usize = digits.parse().ok()?;
    // Cedar writes `policy1`, never `policy01`.
    if n.to_string() != digits {
        return None;
    }
    let set = authz.policy_set();
    // Policies per file, in the loader's (name) order.
    let mut files: std::collections::BTreeMap<String, usize> = Default::default();
    for id in authz.policy_ids() {
        let (file, _) = authz.policy_location(&id)?;
        *files.entry(file).or_default() += 1;
    }
    for (file, count) in files {
        if n >= count {
            n -= count;
            continue;
        }
        let name = Path::new(&file).file_name()?.to_str()?;
        let id = format!("{name}#{n}");
        // An `@id`'d policy at this position is not `policy<n>` in Cedar.
        let policy = set.policy(&cedar_policy::PolicyId::new(&id))?;
        return policy.annotation("id").is_none().then_some(id);
    }
    None
}

/// Runs one Cedar case.
pub(super) fn run(authz: &Authorizer, case: &CedarCase) -> Outcome {
    let (request, entities) = match build(authz, case) {
        Ok(built) => built,
        Err(reason) => return Outcome::fail(reason, None),
    };
    let d = authz.decide_request(&request, &entities);
    if Expect::of(d.allowed) != case.decision {
        return Outcome::fail(mismatch(case.decision, &d), Some(d));
    }
    // Cedar's semantics: the expected reasons must be among the actual
    // ones. A reason is a broker id, or Cedar's positional `policy<n>`.
    let missing: Vec<String> = case
        .reason
        .iter()
        .filter(|r| {
            !d.policies.contains(r)
                && positional_id(authz, r).is_none_or(|id| !d.policies.contains(&id))
        })
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
    if d.errors.len() != case.num_errors {
        problems.push(format!(
            "expected {} error(s), got {}{}",
            case.num_errors,
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

fn build(authz: &Authorizer, case: &CedarCase) -> Result<(Request, Entities), String> {
    let schema = authz.schema();
    let uid = |what: &str, s: &str| {
        s.parse::<EntityUid>()
            .map_err(|e| format!("{what} `{s}`: {e}"))
    };
    let principal = uid("principal", &case.principal)?;
    let action = uid("action", &case.action)?;
    let resource = uid("resource", &case.resource)?;
    let context = Context::from_json_value(case.context.clone(), Some((&schema, &action)))
        .map_err(|e| format!("context: {e}"))?;
    let request = Request::new(principal, action, resource, context, Some(&schema))
        .map_err(|e| format!("request: {e}"))?;
    let entities_json = match case.entities.as_str() {
        // A file name, relative to the test file and kept inside its
        // directory, as `cedar run-tests` does.
        Some(name) => {
            let dir = &case.dir;
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
        None => case.entities.clone(),
    };
    let entities = Entities::from_json_value(entities_json, Some(&schema))
        .map_err(|e| format!("entities: {e}"))?;
    Ok((request, entities))
}
