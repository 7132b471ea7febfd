//! `secret-broker run`: secrets for programs that cannot speak the API.
//!
//! Reads every secret a run needs through a [`Source`] (the CLI's client:
//! ordinary API reads as the caller, so authorized and audited as that
//! principal), builds COMMAND's environment ([`env`]) and writes files
//! ([`files`]), then either `exec`s COMMAND or supervises it ([`supervise`]).
//! No HTTP in here: the source is a trait, so all of this is testable
//! without a broker.
//!
//! Fail closed: one read that fails, one value that cannot be a variable,
//! one collision or one missing directory, and COMMAND never starts.
//! Errors name paths, variables and contract error codes, never a value.

pub mod env;
pub mod files;
pub mod spec;
pub mod supervise;
pub mod template;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::secret::{ScopePath, SecretBytes, SecretPath};

/// Why a run did not start (or a re-read did not apply).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A flag's value is malformed.
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    /// The broker refused or failed a read or a listing.
    #[error("cannot {what} `{target}`: {code} (status {status}, request {request_id})")]
    Refused {
        /// "read" or "list".
        what: &'static str,
        /// The secret path or scope.
        target: String,
        /// HTTP status.
        status: u16,
        /// The contract's error code (`not_found`, `forbidden`, ...).
        code: String,
        /// The request id, to find the audit line.
        request_id: String,
    },
    /// The broker could not be reached.
    #[error("cannot {what} `{target}`: unreachable: {detail}")]
    Unreachable {
        /// "read" or "list".
        what: &'static str,
        /// The secret path or scope.
        target: String,
        /// Why (a socket error; never a value).
        detail: String,
    },
    /// Two secrets for one variable.
    #[error(
        "variable `{name}` would come from both `{first}` and `{second}`: rename one, or set it with --env"
    )]
    Collision {
        /// The variable.
        name: String,
        /// One path.
        first: String,
        /// The other.
        second: String,
    },
    /// A value that cannot be an environment variable.
    #[error("secret `{path}` cannot be variable `{name}`: its value {why} (use --file instead)")]
    EnvValue {
        /// The variable.
        name: String,
        /// The secret.
        path: String,
        /// "is not UTF-8" or "holds a NUL byte".
        why: &'static str,
    },
    /// DEST's directory does not exist.
    #[error("the directory of `{}` does not exist: create it first", .0.display())]
    DestDir(PathBuf),
    /// Writing a file failed.
    #[error("cannot write `{}`: {source}", dest.display())]
    Write {
        /// The file.
        dest: PathBuf,
        /// The I/O error (never carries the bytes).
        source: std::io::Error,
    },
    /// A template could not be rendered.
    #[error("template `{}`: {detail}", src.display())]
    Template {
        /// The template file.
        src: PathBuf,
        /// What went wrong (an error kind and line, never a value).
        detail: String,
    },
    /// A template file could not be read.
    #[error("cannot read template `{}`: {source}", src.display())]
    TemplateRead {
        /// The template file.
        src: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A bug: a path that should have been read was not.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RunError {
    /// What kind of failure this is, for the exit code.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Spec(_) => FailureKind::Usage,
            Self::Refused { .. } => FailureKind::Refused,
            Self::Unreachable { .. } => FailureKind::Unreachable,
            Self::Collision { .. } | Self::EnvValue { .. } | Self::Template { .. } => {
                FailureKind::Data
            }
            Self::DestDir(_) | Self::Write { .. } | Self::TemplateRead { .. } => FailureKind::Io,
            Self::Internal(_) => FailureKind::Internal,
        }
    }
}

/// Classes of failure, each with its own documented exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Bad flags.
    Usage,
    /// The broker answered with an error (401, 403, 404, 5xx).
    Refused,
    /// The broker could not be reached.
    Unreachable,
    /// A value or name cannot be used (not UTF-8, NUL, collision, template).
    Data,
    /// Local files (DEST directory, write, template source).
    Io,
    /// A bug.
    Internal,
}

/// One read value.
#[derive(Debug)]
pub struct Fetched {
    /// The secret's version.
    pub version: u64,
    /// The value.
    pub value: SecretBytes,
}

/// Why the source failed one request.
#[derive(Debug)]
pub enum SourceError {
    /// The broker answered with a contract error.
    Refused {
        /// HTTP status.
        status: u16,
        /// Contract error code.
        code: String,
        /// Request id.
        request_id: String,
    },
    /// No answer (socket missing, connection failed or cut).
    Unreachable(String),
}

/// Where values come from: the broker, read as the caller.
pub trait Source {
    /// Reads one secret. `fresh` asks the broker to skip its read cache
    /// (`--watch` re-reads, so a rotation is seen).
    fn read(
        &self,
        path: &SecretPath,
        fresh: bool,
    ) -> impl Future<Output = Result<Fetched, SourceError>>;
    /// Lists the secret paths under `scope`, recursively.
    fn list(&self, scope: &ScopePath)
    -> impl Future<Output = Result<Vec<SecretPath>, SourceError>>;
}

/// Everything a run asks for, from the flags.
#[derive(Debug, Default)]
pub struct Plan {
    /// `--env`.
    pub env: Vec<spec::EnvSpec>,
    /// `--env-from`.
    pub env_from: Vec<ScopePath>,
    /// `--file`.
    pub files: Vec<spec::FileSpec>,
    /// `--template`, their sources read.
    pub templates: Vec<template::Loaded>,
}

impl Plan {
    /// Every DEST must be in an existing directory: checked before any
    /// read.
    pub fn check_dests(&self) -> Result<(), RunError> {
        let dests = self.files.iter().map(|f| &f.dest);
        for dest in dests.chain(self.templates.iter().map(|t| &t.spec.dest)) {
            if !files::dest_dir_exists(dest) {
                return Err(RunError::DestDir(dest.clone()));
            }
        }
        Ok(())
    }
}

/// Everything read for one start of COMMAND.
#[derive(Debug)]
pub struct Gathered {
    /// Extra variables for COMMAND.
    pub env: Vec<(String, SecretBytes)>,
    /// Files to write: DEST, mode, bytes.
    pub files: Vec<(PathBuf, u32, SecretBytes)>,
    /// Every path read and its version; a change in this map (a new
    /// version, a secret added to or gone from a listed scope) is a
    /// rotation.
    pub versions: BTreeMap<SecretPath, u64>,
}

/// Reads every secret of `plan` (each path once). Any failure is returned
/// and nothing is kept.
pub async fn gather<S: Source>(plan: &Plan, src: &S, fresh: bool) -> Result<Gathered, RunError> {
    let mut values: BTreeMap<SecretPath, Fetched> = BTreeMap::new();
    let mut listed: Vec<(ScopePath, SecretPath)> = Vec::new();
    for scope in &plan.env_from {
        let paths = src
            .list(scope)
            .await
            .map_err(|e| source_error(e, "list", scope.key_prefix()))?;
        listed.extend(paths.into_iter().map(|p| (scope.clone(), p)));
    }
    let wanted = plan
        .env
        .iter()
        .map(|e| &e.path)
        .chain(listed.iter().map(|(_, p)| p))
        .chain(plan.files.iter().map(|f| &f.path));
    for path in wanted {
        if values.contains_key(path) {
            continue;
        }
        let fetched = src
            .read(path, fresh)
            .await
            .map_err(|e| source_error(e, "read", path.as_str().to_owned()))?;
        values.insert(path.clone(), fetched);
    }
    let env = env::build(&plan.env, &listed, &values)?;
    let mut out_files = Vec::with_capacity(plan.files.len());
    for f in &plan.files {
        let Some(v) = values.get(&f.path) else {
            return Err(RunError::Internal(format!("`{}` was not read", f.path)));
        };
        out_files.push((f.dest.clone(), f.mode, v.value.duplicate()));
    }
    for t in &plan.templates {
        let rendered = template::render(t, &mut values, |path: SecretPath| async move {
            src.read(&path, fresh)
                .await
                .map_err(|e| source_error(e, "read", path.as_str().to_owned()))
        })
        .await?;
        out_files.push((t.spec.dest.clone(), t.spec.mode, rendered));
    }
    let versions = values.iter().map(|(p, f)| (p.clone(), f.version)).collect();
    Ok(Gathered {
        env,
        files: out_files,
        versions,
    })
}

/// Writes every file of `g`, atomically, in flag order.
pub fn write_files(g: &Gathered) -> Result<(), RunError> {
    for (dest, mode, bytes) in &g.files {
        if !files::dest_dir_exists(dest) {
            return Err(RunError::DestDir(dest.clone()));
        }
        files::write_atomic(dest, bytes.expose_secret(), *mode).map_err(|source| {
            RunError::Write {
                dest: dest.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

fn source_error(e: SourceError, what: &'static str, target: String) -> RunError {
    match e {
        SourceError::Refused {
            status,
            code,
            request_id,
        } => RunError::Refused {
            what,
            target,
            status,
            code,
            request_id,
        },
        SourceError::Unreachable(detail) => RunError::Unreachable {
            what,
            target,
            detail,
        },
    }
}
