//! The values of `run`'s flags, parsed strictly: `NAME=PATH`, `SCOPE/`,
//! `DEST=PATH[:MODE]`, `SRC=DEST[:MODE]` and `--on-change`.
//!
//! Secret paths hold neither `=` nor `:` (the segment grammar forbids
//! both), so `DEST=PATH[:MODE]` splits at the last `=`, whatever DEST holds.

use std::path::PathBuf;

use crate::secret::{ScopePath, SecretPath};

/// Default mode of a written file: owner read only.
pub const DEFAULT_MODE: u32 = 0o400;

/// Why a flag's value was refused. Flags are the caller's own text, never
/// a secret value, so they are quoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A value lacks its `=`.
    #[error("`--{flag} {value}` must be `{shape}`")]
    Shape {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: String,
        /// What it must look like.
        shape: &'static str,
    },
    /// An environment variable name outside `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("`{0}` is not a valid environment variable name (use `[A-Za-z_][A-Za-z0-9_]*`)")]
    EnvName(String),
    /// A secret path or scope that breaks the path grammar.
    #[error("`{value}` is not a valid {what}: {reason}")]
    Path {
        /// What was given.
        value: String,
        /// "secret path" or "scope".
        what: &'static str,
        /// Why.
        reason: crate::secret::PathError,
    },
    /// A mode that is not octal `0`–`0777`.
    #[error("mode `{0}` must be octal between 0 and 0777 (e.g. 0400)")]
    Mode(String),
    /// An empty file path.
    #[error("`--{0}` needs a non-empty file path")]
    EmptyFile(&'static str),
    /// A bad `--on-change`.
    #[error("`--on-change {0}` must be `restart`, `signal:SIG` (e.g. signal:HUP) or `none`")]
    OnChange(String),
}

/// `--env NAME=PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvSpec {
    /// The variable.
    pub name: String,
    /// The secret.
    pub path: SecretPath,
}

/// `--file DEST=PATH[:MODE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Where the bytes go.
    pub dest: PathBuf,
    /// The secret.
    pub path: SecretPath,
    /// The file's mode.
    pub mode: u32,
}

/// `--template SRC=DEST[:MODE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSpec {
    /// The template file.
    pub src: PathBuf,
    /// Where the rendering goes.
    pub dest: PathBuf,
    /// The file's mode.
    pub mode: u32,
}

/// What `--watch` does when a version changed, once the files are rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    /// Stop COMMAND and start it again with the new environment.
    Restart,
    /// Send COMMAND's process group this signal.
    Signal(rustix::process::Signal),
    /// Nothing (the files were rewritten; COMMAND reads them when it likes).
    None,
}

/// Parses `NAME=PATH`.
pub fn env(value: &str) -> Result<EnvSpec, SpecError> {
    let (name, path) = value.split_once('=').ok_or_else(|| SpecError::Shape {
        flag: "env",
        value: value.to_owned(),
        shape: "NAME=PATH",
    })?;
    if !valid_env_name(name) {
        return Err(SpecError::EnvName(name.to_owned()));
    }
    Ok(EnvSpec {
        name: name.to_owned(),
        path: secret_path(path)?,
    })
}

/// Parses `SCOPE/` (the trailing `/` is optional).
pub fn env_from(value: &str) -> Result<ScopePath, SpecError> {
    let raw = value.strip_suffix('/').unwrap_or(value);
    ScopePath::parse(raw).map_err(|reason| SpecError::Path {
        value: value.to_owned(),
        what: "scope",
        reason,
    })
}

/// Parses `DEST=PATH[:MODE]`.
pub fn file(value: &str) -> Result<FileSpec, SpecError> {
    let (dest, rest) = value.rsplit_once('=').ok_or_else(|| SpecError::Shape {
        flag: "file",
        value: value.to_owned(),
        shape: "DEST=PATH[:MODE]",
    })?;
    if dest.is_empty() {
        return Err(SpecError::EmptyFile("file"));
    }
    let (path, mode) = match rest.split_once(':') {
        Some((p, m)) => (p, mode(m)?),
        None => (rest, DEFAULT_MODE),
    };
    Ok(FileSpec {
        dest: PathBuf::from(dest),
        path: secret_path(path)?,
        mode,
    })
}

/// Parses `SRC=DEST[:MODE]`. A DEST that itself ends in `:` and octal
/// digits must be followed by an explicit mode.
pub fn template(value: &str) -> Result<TemplateSpec, SpecError> {
    let (src, rest) = value.split_once('=').ok_or_else(|| SpecError::Shape {
        flag: "template",
        value: value.to_owned(),
        shape: "SRC=DEST[:MODE]",
    })?;
    let (dest, mode) = match rest.rsplit_once(':') {
        Some((d, m)) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()) => (d, mode(m)?),
        _ => (rest, DEFAULT_MODE),
    };
    if src.is_empty() || dest.is_empty() {
        return Err(SpecError::EmptyFile("template"));
    }
    Ok(TemplateSpec {
        src: PathBuf::from(src),
        dest: PathBuf::from(dest),
        mode,
    })
}

/// Parses `restart`, `signal:SIG` (`HUP`, `SIGHUP` or a number) or `none`.
pub fn on_change(value: &str) -> Result<OnChange, SpecError> {
    match value {
        "restart" => return Ok(OnChange::Restart),
        "none" => return Ok(OnChange::None),
        _ => {}
    }
    value
        .strip_prefix("signal:")
        .and_then(signal)
        .map(OnChange::Signal)
        .ok_or_else(|| SpecError::OnChange(value.to_owned()))
}

/// A signal by name (`HUP`, `SIGHUP`, case-insensitive) or number.
pub fn signal(name: &str) -> Option<rustix::process::Signal> {
    use rustix::process::Signal;
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let sig = match bare {
        "HUP" => Signal::HUP,
        "INT" => Signal::INT,
        "QUIT" => Signal::QUIT,
        "TERM" => Signal::TERM,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        "KILL" => Signal::KILL,
        "WINCH" => Signal::WINCH,
        "ALRM" => Signal::ALARM,
        "CONT" => Signal::CONT,
        "STOP" => Signal::STOP,
        n => {
            let n: i32 = n.parse().ok()?;
            return Signal::from_named_raw(n);
        }
    };
    Some(sig)
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_env_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn secret_path(raw: &str) -> Result<SecretPath, SpecError> {
    SecretPath::parse(raw).map_err(|reason| SpecError::Path {
        value: raw.to_owned(),
        what: "secret path",
        reason,
    })
}

fn mode(raw: &str) -> Result<u32, SpecError> {
    let digits = raw.strip_prefix("0o").unwrap_or(raw);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if !digits.is_empty() && digits.len() <= 4 && m <= 0o777 => Ok(m),
        _ => Err(SpecError::Mode(raw.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_documented_shapes() {
        let e = env("DB_PASS=acme/t/db").unwrap();
        assert_eq!((e.name.as_str(), e.path.as_str()), ("DB_PASS", "acme/t/db"));
        assert_eq!(env_from("acme/t/").unwrap().as_str(), "acme/t");
        assert_eq!(env_from("acme/t").unwrap().as_str(), "acme/t");
        let f = file("/run/s/a=b=acme/t/db:0440").unwrap();
        assert_eq!(f.dest, PathBuf::from("/run/s/a=b"));
        assert_eq!((f.path.as_str(), f.mode), ("acme/t/db", 0o440));
        assert_eq!(file("/x=acme/t/db").unwrap().mode, 0o400);
        let t = template("a.tmpl=/etc/app:1/c.conf").unwrap();
        assert_eq!(t.dest, PathBuf::from("/etc/app:1/c.conf"));
        assert_eq!(t.mode, 0o400);
        let t = template("a.tmpl=/etc/c.conf:600").unwrap();
        assert_eq!((t.dest, t.mode), (PathBuf::from("/etc/c.conf"), 0o600));
        assert_eq!(on_change("restart").unwrap(), OnChange::Restart);
        assert_eq!(on_change("none").unwrap(), OnChange::None);
        assert_eq!(
            on_change("signal:HUP").unwrap(),
            OnChange::Signal(rustix::process::Signal::HUP)
        );
        assert_eq!(
            on_change("signal:sigusr1").unwrap(),
            OnChange::Signal(rustix::process::Signal::USR1)
        );
    }

    #[test]
    fn refuses_bad_values() {
        assert!(matches!(env("NOEQUALS"), Err(SpecError::Shape { .. })));
        assert!(matches!(env("1X=acme/t/d"), Err(SpecError::EnvName(_))));
        assert!(matches!(env("A-B=acme/t/d"), Err(SpecError::EnvName(_))));
        assert!(matches!(env("A=acme/../d"), Err(SpecError::Path { .. })));
        assert!(matches!(env("A=onlyname"), Err(SpecError::Path { .. })));
        assert!(matches!(env_from("/"), Err(SpecError::Path { .. })));
        assert!(matches!(env_from(""), Err(SpecError::Path { .. })));
        assert!(matches!(file("=acme/t/d"), Err(SpecError::EmptyFile(_))));
        assert!(matches!(file("/x=acme/t/d:0999"), Err(SpecError::Mode(_))));
        assert!(matches!(file("/x=acme/t/d:4755"), Err(SpecError::Mode(_))));
        assert!(matches!(file("/x=acme/t/d:"), Err(SpecError::Mode(_))));
        assert!(matches!(template("=/x"), Err(SpecError::EmptyFile(_))));
        assert!(matches!(
            on_change("signal:NOPE"),
            Err(SpecError::OnChange(_))
        ));
        assert!(matches!(on_change("reload"), Err(SpecError::OnChange(_))));
    }

    proptest! {
        #[test]
        fn file_round_trips(
            dest in "/[a-z=:]{1,12}(/[a-z=:.]{1,8}){0,3}",
            segs in proptest::collection::vec("[a-z0-9][a-z0-9._-]{0,6}", 2..5),
            mode in 0u32..=0o777,
        ) {
            let path = segs.join("/");
            let f = file(&format!("{dest}={path}:{mode:o}")).unwrap();
            prop_assert_eq!(f.dest, PathBuf::from(&dest));
            prop_assert_eq!(f.path.as_str(), path.as_str());
            prop_assert_eq!(f.mode, mode);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = env(&s);
            let _ = env_from(&s);
            let _ = file(&s);
            let _ = template(&s);
            let _ = on_change(&s);
        }

        #[test]
        fn env_names_accepted_are_portable(s in "[A-Za-z0-9_-]{0,10}") {
            if valid_env_name(&s) {
                prop_assert!(!s.is_empty() && !s.as_bytes()[0].is_ascii_digit() && !s.contains('-'));
            }
        }
    }
}
