//! `--template SRC=DEST[:MODE]`: minijinja templates whose
//! `{{ secret("PATH") }}` is the secret's value.
//!
//! SECURITY: the environment has no loader (the crate is built without
//! one, and none is set), so `include`, `import` and `extends` cannot
//! reach a file; there are no functions but `secret`, strict undefined
//! makes a typo an error instead of an empty string, and fuel stops a
//! runaway loop. Error messages are built from minijinja's error *kind*
//! and line only, never its detail, which may quote a value.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};

use super::spec::TemplateSpec;
use super::{Fetched, RunError};
use crate::secret::{SecretBytes, SecretPath};

/// Instructions a template may run (a config file needs a few hundred).
pub const FUEL: u64 = 100_000;
/// Render rounds: a template whose secret paths depend on other secrets'
/// values needs one round per level.
const MAX_ROUNDS: usize = 8;
/// Largest rendering.
const MAX_OUTPUT: usize = 1 << 20;

/// A template whose source was read at start.
#[derive(Debug)]
pub struct Loaded {
    /// Its flag.
    pub spec: TemplateSpec,
    source: String,
}

/// Reads SRC (once, at start; a re-read renders the same source).
pub fn load(spec: TemplateSpec) -> Result<Loaded, RunError> {
    let source = std::fs::read_to_string(&spec.src).map_err(|source| RunError::TemplateRead {
        src: spec.src.clone(),
        source,
    })?;
    Ok(Loaded { spec, source })
}

/// What one render pass shares with its `secret()` function.
#[derive(Debug, Default)]
struct Pass {
    /// Paths asked for and not among the values given.
    missing: BTreeSet<SecretPath>,
    /// Every path asked for.
    used: BTreeSet<SecretPath>,
    /// Our own message for an error `secret()` raised.
    note: Option<String>,
}

/// Renders `t`, reading the secrets it asks for through `read` into
/// `values` (shared with the rest of the run, so each path is read once).
pub async fn render<F, Fut>(
    t: &Loaded,
    values: &mut BTreeMap<SecretPath, Fetched>,
    mut read: F,
) -> Result<SecretBytes, RunError>
where
    F: FnMut(SecretPath) -> Fut,
    Fut: Future<Output = Result<Fetched, RunError>>,
{
    for _ in 0..MAX_ROUNDS {
        let pass = Arc::new(Mutex::new(Pass::default()));
        let result = render_once(&t.source, values, &pass);
        let pass = std::mem::take(&mut *pass.lock().unwrap_or_else(PoisonError::into_inner));
        if pass.missing.is_empty() {
            return result.map_err(|e| template_error(&t.spec.src, &e, pass.note));
        }
        // Errors of a pass with missing values are the placeholders' doing.
        for path in pass.missing {
            let fetched = read(path.clone()).await?;
            values.insert(path, fetched);
        }
    }
    Err(RunError::Template {
        src: t.spec.src.clone(),
        detail: format!("secret paths nest more than {MAX_ROUNDS} levels deep"),
    })
}

fn render_once(
    source: &str,
    values: &BTreeMap<SecretPath, Fetched>,
    pass: &Arc<Mutex<Pass>>,
) -> Result<SecretBytes, Error> {
    // The built-in filters, tests and functions (`range`, `dict`, ...) touch
    // no file; no loader is set.
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    // A config file keeps its last newline (Jinja drops it by default).
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()?,
    );
    let known: Arc<BTreeMap<SecretPath, Value>> = Arc::new(
        values
            .iter()
            .map(|(p, f)| (p.clone(), to_value(&f.value)))
            .collect(),
    );
    let shared = Arc::clone(pass);
    env.add_function("secret", move |raw: &str| -> Result<Value, Error> {
        let mut pass = shared.lock().unwrap_or_else(PoisonError::into_inner);
        let Ok(path) = SecretPath::parse(raw) else {
            let msg = format!("secret(`{raw}`): not a valid secret path");
            pass.note = Some(msg.clone());
            return Err(Error::new(ErrorKind::InvalidOperation, msg));
        };
        pass.used.insert(path.clone());
        match known.get(&path) {
            Some(v) => Ok(v.clone()),
            None => {
                pass.missing.insert(path);
                Ok(Value::from(""))
            }
        }
    });
    env.add_filter("json", json);
    env.add_filter("b64encode", b64encode);
    env.add_filter("shell_quote", shell_quote);
    let out = env.render_str(source, ())?;
    if out.len() > MAX_OUTPUT {
        return Err(Error::new(ErrorKind::InvalidOperation, "output too large"));
    }
    Ok(SecretBytes::new(out.into_bytes()))
}

/// A secret as a template value: a string when UTF-8, else bytes (use
/// `b64encode`).
fn to_value(v: &SecretBytes) -> Value {
    match std::str::from_utf8(v.expose_secret()) {
        Ok(s) => Value::from_safe_string(s.to_owned()),
        Err(_) => Value::from_bytes(v.expose_secret().to_vec()),
    }
}

/// `json`: a JSON literal (a string quoted and escaped) for config files.
fn json(v: Value) -> Result<Value, Error> {
    let text = if let Some(s) = v.as_str() {
        serde_json::Value::String(s.to_owned()).to_string()
    } else if v.is_none() {
        "null".to_owned()
    } else if v.is_number() || matches!(v.kind(), minijinja::value::ValueKind::Bool) {
        v.to_string()
    } else {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "json takes a string, number, boolean or none",
        ));
    };
    Ok(Value::from_safe_string(text))
}

/// `b64encode`: standard base64 of a string's or bytes' bytes.
fn b64encode(v: Value) -> Result<Value, Error> {
    use base64::Engine as _;
    let bytes = v.as_bytes().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            "b64encode takes a string or bytes",
        )
    })?;
    Ok(Value::from_safe_string(
        base64::engine::general_purpose::STANDARD.encode(bytes),
    ))
}

/// `shell_quote`: one POSIX shell word, single-quoted (`'` as `'\''`).
fn shell_quote(v: Value) -> Result<Value, Error> {
    let s = v
        .as_str()
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "shell_quote takes a string"))?;
    Ok(Value::from_safe_string(format!(
        "'{}'",
        s.replace('\'', "'\\''")
    )))
}

fn template_error(src: &std::path::Path, e: &Error, note: Option<String>) -> RunError {
    let what = note.unwrap_or_else(|| e.kind().to_string());
    let detail = match e.line() {
        Some(line) => format!("{what} (line {line})"),
        None => what,
    };
    RunError::Template {
        src: PathBuf::from(src),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(source: &str) -> Loaded {
        Loaded {
            spec: TemplateSpec {
                src: "t.tmpl".into(),
                dest: "out".into(),
                mode: 0o400,
            },
            source: source.to_owned(),
        }
    }

    async fn render_with(source: &str, secrets: &[(&str, &[u8])]) -> Result<String, RunError> {
        let secrets: BTreeMap<String, Vec<u8>> = secrets
            .iter()
            .map(|(p, v)| ((*p).to_owned(), v.to_vec()))
            .collect();
        let mut values = BTreeMap::new();
        let out = render(&loaded(source), &mut values, |p: SecretPath| {
            let v = secrets.get(p.as_str()).cloned();
            async move {
                v.map(|v| Fetched {
                    version: 1,
                    value: SecretBytes::new(v),
                })
                .ok_or_else(|| RunError::Internal(format!("no {p}")))
            }
        })
        .await?;
        Ok(String::from_utf8(out.expose_secret().to_vec()).unwrap())
    }

    #[tokio::test]
    async fn renders_secrets_with_filters() {
        let out = render_with(
            "user={{ secret('a/user') }} pass={{ secret('a/pass') | json }} \
             b={{ secret('a/bin') | b64encode }} sh={{ secret('a/pass') | shell_quote }}",
            &[
                ("a/user", b"bob"),
                ("a/pass", b"it's \"x\""),
                ("a/bin", b"\xff\x00"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(out, r#"user=bob pass="it's \"x\"" b=/wA= sh='it'\''s "x"'"#);
    }

    #[tokio::test]
    async fn nested_paths_take_rounds() {
        let out = render_with(
            "{{ secret(secret('a/ptr')) }}",
            &[("a/ptr", b"a/real"), ("a/real", b"v")],
        )
        .await
        .unwrap();
        assert_eq!(out, "v");
    }

    #[tokio::test]
    async fn errors_never_quote_values() {
        for src in [
            "{{ nope }}",
            "{{ secret('a/v') | int }}",
            "{{ secret('a/v') + 1 }}",
            "{{ secret('a/v') | b64encode | shell_quote | nope_filter }}",
            "{% include 'x' %}",
            "{{ secret('../etc') }}",
        ] {
            let err = render_with(src, &[("a/v", b"canary-t-77")])
                .await
                .unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, RunError::Template { .. }), "{src}: {msg}");
            assert!(!msg.contains("canary"), "{src}: {msg}");
        }
    }

    #[tokio::test]
    async fn a_runaway_template_runs_out_of_fuel() {
        let err = render_with(
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
            &[],
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("fuel"), "{err}");
    }
}
