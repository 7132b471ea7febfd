//! Loading a policy set: reading the directory, parsing each file, strict
//! validation against the schema, and `file:line:col` diagnostics.
//!
//! Every file is parsed on its own so that Cedar's byte-offset spans refer
//! to that file's text; they are turned into 1-based line and column (in
//! characters) plus the offending source line. A policy's id is its
//! `@id("…")` annotation, else `<file name>#<index>` (0-based, in source
//! order); ids must be unique across the whole set.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{Entities, PolicyId, PolicySet, Schema, ValidationMode, Validator};

use super::AuthzError;

/// The schema file every policy directory must hold.
pub const SCHEMA_FILE: &str = "schema.cedarschema";
/// The extension of policy files.
pub const POLICY_EXT: &str = "cedar";
/// The namespace of the entity types the broker builds.
const BROKER_NAMESPACE: &str = "SecretBroker";

/// The text of one schema or policy file, with the name shown in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// The file's name or path, as shown in diagnostics.
    pub name: String,
    /// The file's contents.
    pub text: String,
}

/// One problem found in a file, located to line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file's name, as in [`PolicySource::name`].
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// What is wrong, on one line.
    pub message: String,
    /// The offending source line (trailing whitespace trimmed).
    pub snippet: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}\n  {}",
            self.file, self.line, self.column, self.message, self.snippet
        )
    }
}

/// A non-empty list of diagnostics, printed one per line after a newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            write!(f, "\n{d}")?;
        }
        Ok(())
    }
}

/// A validated, immutable policy set: what one generation decides with.
#[derive(Debug)]
pub(crate) struct PolicySnapshot {
    pub(crate) schema: Schema,
    pub(crate) policies: PolicySet,
    /// The schema's action entities, so operator-defined action groups work.
    pub(crate) actions: Entities,
    /// Policy id → (file, 1-based line of its first token or annotation).
    pub(crate) locations: HashMap<String, (String, u32)>,
    /// Validator and schema warnings (not fatal).
    pub(crate) warnings: Vec<Diagnostic>,
    pub(crate) generation: u64,
    /// Whether any policy can read `context.request_id`, decided from the
    /// parsed policies (`context_use`). If none can, the request id cannot
    /// affect a decision and the decision cache may serve it; if one can,
    /// every decision is made afresh (each request has its own id).
    pub(crate) reads_request_id: bool,
    /// The policies' heads, indexed: which of them a request can meet.
    pub(crate) slices: super::slice::PolicyIndex,
}

/// Reads `dir/schema.cedarschema` and every `dir/*.cedar` (not recursive,
/// sorted by name, dotfiles skipped, symlinks followed as ConfigMaps use them).
pub(crate) fn read_dir(dir: &Path) -> Result<(PolicySource, Vec<PolicySource>), AuthzError> {
    let io = |path: &Path, source: std::io::Error| AuthzError::Io {
        path: path.display().to_string(),
        source,
    };
    let schema_path = dir.join(SCHEMA_FILE);
    let schema = match std::fs::read_to_string(&schema_path) {
        Ok(text) => PolicySource {
            name: schema_path.display().to_string(),
            text,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir.is_dir() => {
            return Err(AuthzError::MissingSchema {
                dir: dir.display().to_string(),
            });
        }
        Err(e) => return Err(io(&schema_path, e)),
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        let visible = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.starts_with('.'));
        // `is_file` follows symlinks; Kubernetes mounts ConfigMap keys as
        // symlinks into a hidden `..data` directory.
        if visible && path.extension().is_some_and(|e| e == POLICY_EXT) && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    let mut policies = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        policies.push(PolicySource {
            name: path.display().to_string(),
            text,
        });
    }
    Ok((schema, policies))
}

/// 1-based line and column (in characters) of byte `offset` in `text`,
/// and that line's text.
fn line_col(text: &str, offset: usize) -> (u32, u32, String) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = before.matches('\n').count() + 1;
    let column = text[line_start..offset].chars().count() + 1;
    let snippet = text[line_start..line_end].trim_end().to_owned();
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
        snippet,
    )
}

/// 1-based line numbers of offsets that mostly come in increasing order,
/// counted from the previous offset rather than from the start: a file of
/// 10k policies otherwise costs a scan of the text per policy, quadratic in
/// its size (benches/scale.rs).
#[derive(Default)]
struct LineCounter {
    /// A byte offset on a char boundary, and the newlines before it.
    at: usize,
    newlines: usize,
}

impl LineCounter {
    fn line_at(&mut self, text: &str, offset: usize) -> u32 {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        if offset < self.at {
            *self = Self::default();
        }
        self.newlines += text[self.at..offset].matches('\n').count();
        self.at = offset;
        u32::try_from(self.newlines + 1).unwrap_or(u32::MAX)
    }
}

/// An error and its causes, on one line (`outer: inner: …`).
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut out = one_line(&err.to_string());
    let mut next = err.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&one_line(&cause.to_string()));
        next = cause.source();
    }
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A diagnostic for a Cedar error whose spans point into `src`; errors
/// without a span are placed at `fallback` (a byte offset).
fn diagnose(src: &PolicySource, err: &dyn miette::Diagnostic, fallback: usize) -> Diagnostic {
    let label = err.labels().and_then(|mut labels| {
        let first = labels.next()?;
        // Prefer the primary label when Cedar marks one.
        Some(if first.primary() {
            first
        } else {
            labels.find(|l| l.primary()).unwrap_or(first)
        })
    });
    let offset = label.as_ref().map_or(fallback, |l| l.offset());
    let mut message = one_line(&err.to_string());
    if let Some(text) = label.as_ref().and_then(|l| l.label()) {
        message.push_str(&format!(" ({})", one_line(text)));
    }
    if let Some(help) = err.help() {
        message.push_str(&format!("; help: {}", one_line(&help.to_string())));
    }
    let (line, column, snippet) = line_col(&src.text, offset);
    Diagnostic {
        file: src.name.clone(),
        line,
        column,
        message,
        snippet,
    }
}

/// A diagnostic of our own at byte `offset` of `src`.
fn diagnostic_at(src: &PolicySource, offset: usize, message: String) -> Diagnostic {
    let (line, column, snippet) = line_col(&src.text, offset);
    Diagnostic {
        file: src.name.clone(),
        line,
        column,
        message,
        snippet,
    }
}

/// Finds where `needle` (a policy's exact source text, as Cedar keeps it)
/// starts in `text` at or after `from`: the first occurrence preceded only
/// by whitespace and `//` comments, so a policy quoted inside a comment is
/// skipped.
fn locate(text: &str, from: usize, needle: &str) -> Option<usize> {
    let mut search = from;
    loop {
        let at = search + text.get(search..)?.find(needle)?;
        let mut in_comment = false;
        let mut clean = true;
        let gap = text.get(from..at)?;
        let mut chars = gap.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\n' => in_comment = false,
                _ if in_comment || c.is_whitespace() => {}
                '/' if chars.peek() == Some(&'/') => in_comment = true,
                _ => clean = false,
            }
        }
        if clean && !in_comment {
            return Some(at);
        }
        search = at + 1;
    }
}

/// Byte offset of the first slot (`?principal`, `?resource`) in a
/// template's text, or 0. Slots appear only in the scope, which comes
/// before any condition; an annotation mentioning one could come first,
/// and would only move the caret within the same policy.
fn first_slot(text: &str) -> usize {
    ["?principal", "?resource"]
        .iter()
        .filter_map(|slot| text.find(slot))
        .min()
        .unwrap_or(0)
}

/// File name component of a source name, for generated ids.
fn file_name(name: &str) -> &str {
    Path::new(name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(name)
}

/// Refuses a schema that does not describe the entities the broker builds.
///
/// SECURITY: policies are validated against the schema, but evaluated
/// against our entities. If an operator's schema declared, say, a required
/// attribute we never set, a policy reading it would error at runtime and be
/// skipped, silently disabling a forbid. Checking representative entities
/// once here keeps the two in step.
fn check_entity_shapes(schema: &Schema, schema_src: &PolicySource) -> Result<(), AuthzError> {
    use super::{Resource, entities};
    use crate::identity::{Principal, PrincipalKind};
    use crate::secret::{ScopePath, SecretPath};
    use crate::store::Labels;

    let refuse = |message: String| {
        AuthzError::InvalidSchema(Diagnostics(vec![diagnostic_at(schema_src, 0, message)]))
    };
    let internal = |e: &dyn fmt::Display| AuthzError::Internal(e.to_string());
    let scope = ScopePath::parse("acme/tasks").map_err(|e| internal(&e))?;
    let path = SecretPath::parse("acme/tasks/db").map_err(|e| internal(&e))?;
    let labels = Labels::from([("team".to_owned(), "db".to_owned())]);
    let mut reps = Vec::new();
    for (kind, scope) in [
        (PrincipalKind::Component, None),
        (PrincipalKind::Task, Some(scope.clone())),
    ] {
        let p = Principal {
            name: "shape-check".to_owned(),
            kind,
            roles: vec!["platform".to_owned()],
            scope,
        };
        // Component and Task share a uid only if their types match; they
        // do not, so one store holds both.
        reps.extend(entities::principal_entities(&p).map_err(|e| internal(&e))?);
    }
    let secret = Resource::Secret {
        path: &path,
        labels: Some(&labels),
    };
    reps.extend(entities::resource_entities(secret).map_err(|e| internal(&e))?);
    reps.extend(entities::resource_entities(Resource::Scope(&scope)).map_err(|e| internal(&e))?);
    Entities::from_entities(reps, Some(schema)).map_err(|e| {
        refuse(format!(
            "the schema does not describe the entities the broker builds: {}; this is for a secret-broker policy set only, whose schema declares the `SecretBroker` entity types as the shipped `policies/schema.cedarschema` does (for another cedar application use the `cedar` cli)",
            with_causes(&e)
        ))
    })?;
    Ok(())
}

/// Parses, names, validates (strictly) and assembles a policy set.
pub(crate) fn compile(
    schema_src: &PolicySource,
    sources: &[PolicySource],
    generation: u64,
) -> Result<PolicySnapshot, AuthzError> {
    let mut warnings = Vec::new();
    let schema = match Schema::from_cedarschema_str(&schema_src.text) {
        Ok((schema, schema_warnings)) => {
            warnings.extend(schema_warnings.map(|w| diagnose(schema_src, &w, 0)));
            schema
        }
        Err(e) => {
            return Err(AuthzError::InvalidSchema(Diagnostics(vec![diagnose(
                schema_src, &e, 0,
            )])));
        }
    };
    // Another Cedar application's schema: say so in one line, before its
    // policies are validated against a schema the broker cannot use.
    if !schema
        .entity_types()
        .any(|t| t.namespace() == BROKER_NAMESPACE)
    {
        return Err(AuthzError::InvalidSchema(Diagnostics(vec![diagnostic_at(
            schema_src,
            0,
            format!(
                "not a secret-broker schema: it declares none of the broker's `{BROKER_NAMESPACE}` entity types (see the shipped `policies/schema.cedarschema`); the broker and its `policy` tools take a secret-broker policy set only, for another cedar application use the `cedar` cli"
            ),
        )])));
    }

    let mut errors = Vec::new();
    let mut set = PolicySet::new();
    let mut locations: HashMap<String, (String, u32)> = HashMap::new();
    // Policy id → index of its source, to place validation errors.
    let mut origin: HashMap<String, usize> = HashMap::new();
    for (file_idx, src) in sources.iter().enumerate() {
        let parsed = match PolicySet::from_str(&src.text) {
            Ok(p) => p,
            Err(e) => {
                errors.extend(e.iter().map(|pe| diagnose(src, pe, 0)));
                continue;
            }
        };
        let count = parsed.num_of_policies() + parsed.num_of_templates();
        let mut cursor = 0;
        let mut lines = LineCounter::default();
        for index in 0..count {
            // Cedar names the policies of a parsed text `policy0`,
            // `policy1`, … in source order (documented on
            // `PolicySet::from_str`); that order gives us indexes and lets
            // each text be located after the previous one.
            let cedar_id = PolicyId::new(format!("policy{index}"));
            if let Some(template) = parsed.template(&cedar_id) {
                // The error points at the template's first slot. The cursor
                // moves past the template so that the policies after it are
                // located (and so placed) correctly.
                let text = template.to_cedar();
                let at = match locate(&src.text, cursor, &text) {
                    Some(at) => {
                        cursor = at + text.len();
                        at + first_slot(&text)
                    }
                    None => cursor,
                };
                errors.push(diagnostic_at(
                    src,
                    at,
                    "policy templates (`?principal`, `?resource`) are not supported: the broker has no template links to fill them; write a policy per principal or resource, or one rule over an attribute (as `resource in principal.scope` does)".to_owned(),
                ));
                continue;
            }
            let Some(policy) = parsed.policy(&cedar_id) else {
                continue;
            };
            let at = policy
                .to_cedar()
                .and_then(|t| {
                    let at = locate(&src.text, cursor, &t)?;
                    cursor = at + t.len();
                    Some(at)
                })
                .unwrap_or(cursor);
            let line = lines.line_at(&src.text, at);
            let id = match policy.annotation("id") {
                Some("") => {
                    errors.push(diagnostic_at(src, at, "`@id` must not be empty".to_owned()));
                    continue;
                }
                Some(id) => id.to_owned(),
                None => format!("{}#{index}", file_name(&src.name)),
            };
            if let Some((file, first)) = locations.get(&id) {
                errors.push(diagnostic_at(
                    src,
                    at,
                    format!("policy id `{id}` is already used at {file}:{first}"),
                ));
                continue;
            }
            if let Err(e) = set.add(policy.new_id(PolicyId::new(&id))) {
                errors.push(diagnostic_at(src, at, one_line(&e.to_string())));
                continue;
            }
            locations.insert(id.clone(), (src.name.clone(), line));
            origin.insert(id, file_idx);
        }
    }
    if !errors.is_empty() {
        return Err(AuthzError::InvalidPolicySet(Diagnostics(errors)));
    }

    // SECURITY: strict validation refuses policies that name unknown types,
    // attributes or actions, or that could error at runtime (an erroring
    // policy is skipped, so a typo would silently disable a forbid).
    // Warnings (an impossible policy, confusable identifiers) are kept for
    // the operator to see but do not refuse the set.
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    let place = |id: &PolicyId, err: &dyn miette::Diagnostic| {
        let file = origin
            .get(AsRef::<str>::as_ref(id))
            .and_then(|&i| sources.get(i));
        match file {
            Some(src) => diagnose(src, err, 0),
            None => diagnostic_at(schema_src, 0, one_line(&err.to_string())),
        }
    };
    let errors: Vec<Diagnostic> = result
        .validation_errors()
        .map(|e| place(e.policy_id(), e))
        .collect();
    warnings.extend(
        result
            .validation_warnings()
            .map(|w| place(w.policy_id(), w)),
    );
    if !errors.is_empty() {
        return Err(AuthzError::InvalidPolicySet(Diagnostics(errors)));
    }
    check_entity_shapes(&schema, schema_src)?;
    let actions = schema
        .action_entities()
        .map_err(|e| AuthzError::Internal(format!("cannot build action entities: {e}")))?;
    // SECURITY: from the parsed policies, not their text: an escaped
    // attribute name (`context["request\u{5f}id"]`) reads the id without
    // spelling it.
    let reads_request_id = super::context_use::reads_request_id(&set);
    let slices = super::slice::PolicyIndex::new(&set);
    Ok(PolicySnapshot {
        schema,
        policies: set,
        actions,
        locations,
        warnings,
        generation,
        reads_request_id,
        slices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_counter_agrees_with_line_col_in_any_order() {
        let text = "a\né\n\nxyz\n// c\nlast";
        let mut lines = LineCounter::default();
        for offset in [0, 1, 2, 3, 4, 5, 6, 9, 20, 3, 12, 7, 0, 16, 100] {
            assert_eq!(
                lines.line_at(text, offset),
                line_col(text, offset).0,
                "offset {offset}"
            );
        }
    }

    #[test]
    fn line_col_counts_from_one_in_chars() {
        let text = "ab\ncé d\n";
        assert_eq!(line_col(text, 0), (1, 1, "ab".into()));
        assert_eq!(line_col(text, 3), (2, 1, "cé d".into()));
        // Byte 6 is the space after `é` (2 bytes): column 3.
        assert_eq!(line_col(text, 6), (2, 3, "cé d".into()));
        // Inside a multi-byte char and past the end are clamped, not panics.
        assert_eq!(line_col(text, 5).0, 2);
        assert_eq!(line_col(text, 999).0, 3);
    }

    #[test]
    fn locate_skips_commented_copies() {
        let text = "// permit(principal, action, resource);\npermit(principal, action, resource);";
        let needle = "permit(principal, action, resource);";
        assert_eq!(locate(text, 0, needle), Some(40));
        assert_eq!(locate(text, 40 + needle.len(), needle), None);
    }
}
