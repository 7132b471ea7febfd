//! `include = ["store.toml"]`: a config made of several files. The main
//! file names the others; each included file sets whole tables the main
//! file leaves out (a table set twice is an error), its relative paths
//! resolve against its own directory, and it may not include further files.
//!
//! Why: an injected pod's broker config is generated per pod, while the
//! store settings and their credential files come from a Secret shared by
//! many pods. Including the Secret's `store.toml` keeps the two apart
//! without templating either.

use std::collections::BTreeMap;
use std::path::Path;

use super::raw::RawConfig;
use super::{Config, ConfigError, invalid, resolve};

/// One parsed file: its raw config, the top-level keys it set, and where
/// its relative paths resolve.
struct File {
    name: String,
    raw: RawConfig,
    keys: Vec<String>,
    base: std::path::PathBuf,
}

/// TOML's message with the line and column, but without the source snippet
/// `toml` would print: the offending line may hold a credential placed
/// under the wrong key.
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    // SECURITY: `e.to_string()` quotes the offending line; never use it.
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.chars().rev().take_while(|c| *c != '\n').count() + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

fn parse(text: &str, name: &str, base: &Path) -> Result<File, ConfigError> {
    let parse_err = |e: toml::de::Error| ConfigError::Parse {
        path: name.to_owned(),
        message: parse_message(text, &e),
    };
    // Typed first, so unknown keys are reported with line and column.
    let raw: RawConfig = toml::from_str(text).map_err(parse_err)?;
    let table: toml::Table = toml::from_str(text).map_err(parse_err)?;
    Ok(File {
        name: name.to_owned(),
        raw,
        keys: table.keys().filter(|k| *k != "include").cloned().collect(),
        base: base.to_owned(),
    })
}

/// Parses `text` (the main file, `name`, relative paths against `base`),
/// reads and parses what it includes, and joins their tables.
pub(super) fn load(text: &str, name: &str, base: &Path) -> Result<Config, ConfigError> {
    let mut main = parse(text, name, base)?;
    let mut owner: BTreeMap<String, String> = main
        .keys
        .iter()
        .map(|k| (k.clone(), name.to_owned()))
        .collect();
    let mut included = Vec::new();
    for entry in main.raw.take_include() {
        if entry.is_empty() {
            return Err(invalid("include", "an entry is empty; name a file"));
        }
        let path = resolve(base, &entry);
        let text = read_regular(&path)?;
        let shown = path.display().to_string();
        let inc_base = path.parent().unwrap_or(Path::new("/"));
        let mut file = parse(&text, &shown, inc_base)?;
        // INVARIANT: one level only, so there is no cycle to detect.
        if !file.raw.take_include().is_empty() {
            return Err(invalid(
                "include",
                format!("`{shown}` is included by `{name}` and may not include other files"),
            ));
        }
        for key in &file.keys {
            if let Some(first) = owner.insert(key.clone(), shown.clone()) {
                return Err(invalid(
                    key,
                    format!("set in both `{first}` and `{shown}`; set each table in one file only"),
                ));
            }
        }
        included.push(file);
    }
    let mut config = main.raw.validate(&main.base)?;
    for file in included {
        let wrap = |source: ConfigError| ConfigError::Included {
            path: file.name.clone(),
            source: Box::new(source),
        };
        let part = file.raw.validate(&file.base).map_err(wrap)?;
        take_tables(&mut config, part, &file.keys);
    }
    Ok(config)
}

/// The most an included file may hold; a config is a few kilobytes.
const MAX_INCLUDE_BYTES: u64 = 1024 * 1024;

/// Reads an included file, which must be a regular file (symlinks to one,
/// as in a mounted Secret, are fine) of at most [`MAX_INCLUDE_BYTES`]: a
/// device or a FIFO named by mistake must not hang or exhaust the broker.
fn read_regular(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read as _;
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    let shown = path.display();
    if !meta.is_file() {
        return Err(invalid(
            "include",
            format!("`{shown}` is not a regular file"),
        ));
    }
    if meta.len() > MAX_INCLUDE_BYTES {
        return Err(invalid(
            "include",
            format!("`{shown}` is larger than {MAX_INCLUDE_BYTES} bytes"),
        ));
    }
    let mut text = String::new();
    file.take(MAX_INCLUDE_BYTES)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    Ok(text)
}

/// Moves the tables named by `keys` from `part` into `config`.
fn take_tables(config: &mut Config, part: Config, keys: &[String]) {
    // Destructured in full so that a new table cannot be forgotten here.
    let Config {
        listen,
        store,
        cache,
        policy_dir,
        audit,
        audit_spool,
        audit_on_failure,
        log,
        limits,
        runtime,
        memory_lock,
        metrics_addr,
        principals,
        uploads,
    } = part;
    let has = |k: &str| keys.iter().any(|key| key == k);
    if has("listen") {
        config.listen = listen;
    }
    if has("store") {
        config.store = store;
    }
    if has("cache") {
        config.cache = cache;
    }
    if has("policy") {
        config.policy_dir = policy_dir;
    }
    if has("audit") {
        config.audit = audit;
        config.audit_spool = audit_spool;
        config.audit_on_failure = audit_on_failure;
    }
    if has("log") {
        config.log = log;
    }
    if has("limits") {
        config.limits = limits;
    }
    if has("runtime") {
        config.runtime = runtime;
    }
    if has("memory") {
        config.memory_lock = memory_lock;
    }
    if has("metrics") {
        config.metrics_addr = metrics_addr;
    }
    if has("principal") {
        config.principals = principals;
    }
    if has("uploads") {
        config.uploads = uploads;
    }
}

#[cfg(test)]
mod tests;
