//! `secret-broker policy …`: policy as code. Validate, test, explain, format
//! and prove the Cedar policies on the same authorization module the server
//! decides with (`authz::Authorizer`), so a test means what production means.
//!
//! Exit codes for every subcommand: 0 ok, 1 the check failed (invalid
//! policies, a failing test, an unformatted file, a disproved property),
//! 2 usage, I/O, or a tool (the solver) that could not run.
//!
//! They check a secret-broker policy set only: its schema must declare the
//! broker's entity types ([`BROKER_ONLY`]).

/// `println!` that ignores a closed stdout (`| head`) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod explain;
mod fmt;
mod prove;
mod test;
mod validate;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::Exit;
use crate::authz::{Action, Authorizer, AuthzError, Diagnostic};
use crate::config::{Config, ConfigError};
use crate::identity::{Principal, PrincipalKind, PrincipalSpec};
use crate::secret::ScopePath;

/// The one line that says what these tools are for, in `--help` and in
/// the docs (and, in other words, in the schema error).
pub(crate) const BROKER_ONLY: &str = "Broker-only: these commands check a secret-broker policy set, whose schema declares the broker's entity types (`SecretBroker::Task`, `Secret`, `Scope`, ... as in `policies/schema.cedarschema`); for another Cedar application use the `cedar` CLI.";

/// Arguments of `policy`.
#[derive(Debug, Args)]
#[command(after_help = BROKER_ONLY)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Parse and strictly validate the policies against the schema.
    Validate(validate::ValidateArgs),
    /// Run policy test cases (broker YAML or Cedar's `run-tests` JSON).
    Test(test::TestArgs),
    /// Decide one request and show which policies determined it.
    Explain(explain::ExplainArgs),
    /// Format the policy files with Cedar's formatter.
    Fmt(fmt::FmtArgs),
    /// Prove, for every entity store, that the platform never reads and
    /// that a task reads only inside its own scope (needs `cvc5`).
    Prove(prove::ProveArgs),
}

/// The policy directory option shared by the subcommands.
#[derive(Debug, Clone, Args)]
pub(crate) struct PolicyDirArg {
    /// Directory with `schema.cedarschema` and `*.cedar`.
    #[arg(long = "policies", value_name = "DIR", default_value = "policies")]
    dir: PathBuf,
}

/// `--deny-warnings`, shared by `validate` and `test`.
#[derive(Debug, Clone, Args)]
pub(crate) struct DenyWarningsArg {
    /// Fail on validation warnings too (an impossible policy, confusable
    /// identifiers), as `cedar validate --deny-warnings` and `cedar
    /// run-tests` do. Without it they are printed and do not fail, as the
    /// broker loads such a set.
    #[arg(long)]
    pub(crate) deny_warnings: bool,
}

/// Why a `policy` subcommand could not do its job (as opposed to a check
/// that ran and failed).
#[derive(Debug, thiserror::Error)]
pub enum PolicyCliError {
    /// A file could not be read or written.
    #[error("cannot {op} `{path}`: {source}")]
    Io {
        /// `read` or `write`.
        op: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The broker config given for principals is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An argument is malformed.
    #[error("{0}")]
    Usage(String),
}

/// Runs `policy …`.
pub async fn run(args: PolicyArgs) -> Exit {
    match args.command {
        PolicyCommand::Validate(a) => validate::run(&a),
        PolicyCommand::Test(a) => test::run(&a),
        PolicyCommand::Explain(a) => explain::run(&a),
        PolicyCommand::Fmt(a) => fmt::run(&a),
        PolicyCommand::Prove(a) => prove::run(&a).await,
    }
}

/// Prints a diagnostic the way compilers do: `file:line:col: message`, the
/// offending line, and a caret under the column.
pub(crate) fn render(kind: &str, d: &Diagnostic) -> String {
    // Tabs stay tabs in the padding so the caret lines up in a terminal.
    let pad: String = d
        .snippet
        .chars()
        .take(d.column.saturating_sub(1) as usize)
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    format!(
        "{}:{}:{}: {kind}: {}\n    {}\n    {pad}^\n",
        d.file, d.line, d.column, d.message, d.snippet
    )
}

/// Loads the policy set in `dir`, printing what is wrong to stderr. The
/// error is the exit code to return: 1 for invalid policies, 2 for I/O.
pub(crate) fn load(dir: &Path) -> Result<Authorizer, Exit> {
    match Authorizer::load_dir(dir) {
        Ok(authz) => Ok(authz),
        Err(e) => {
            let diagnostics = e.diagnostics();
            let mut err = std::io::stderr().lock();
            if diagnostics.is_empty() {
                let _ = writeln!(err, "error: {e}");
                let missing = match &e {
                    AuthzError::MissingSchema { .. } => true,
                    AuthzError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
                    _ => false,
                };
                if missing {
                    let _ = writeln!(err, "{}", policies_hint(dir));
                }
            } else {
                for d in diagnostics {
                    let _ = write!(err, "{}", render("error", d));
                }
                let _ = writeln!(
                    err,
                    "error: `{}`: {} error(s); the broker would refuse this policy set",
                    dir.display(),
                    diagnostics.len()
                );
            }
            Err(match e {
                AuthzError::InvalidSchema(_) | AuthzError::InvalidPolicySet(_) => Exit::Failure,
                _ => Exit::Usage,
            })
        }
    }
}

/// [`load`], then prints the set's warnings to stderr; with `deny` a set
/// with warnings fails (exit 1) like an invalid one.
pub(crate) fn load_warned(dir: &Path, deny: bool) -> Result<Authorizer, Exit> {
    let authz = load(dir)?;
    let warnings = authz.warnings();
    if warnings.is_empty() {
        return Ok(authz);
    }
    let mut err = std::io::stderr().lock();
    for w in &warnings {
        let _ = write!(err, "{}", render("warning", w));
    }
    if deny {
        let _ = writeln!(
            err,
            "error: `{}`: {} warning(s), and `--deny-warnings` makes them errors",
            dir.display(),
            warnings.len()
        );
        return Err(Exit::Failure);
    }
    let _ = writeln!(
        err,
        "note: `{}`: {} warning(s); the broker loads this set, `--deny-warnings` fails on them",
        dir.display(),
        warnings.len()
    );
    Ok(authz)
}

/// What to do when `dir` holds no policy set: run from the repository, or
/// say where it is.
pub(crate) fn policies_hint(dir: &Path) -> String {
    format!(
        "hint: `{}` is not a policy directory (looked for schema.cedarschema and *.cedar there, relative to the current directory); pass `--policies DIR` with the directory that holds them",
        dir.display()
    )
}

/// Prints `error: …` to stderr and returns the exit code for `e`.
pub(crate) fn fail(e: &PolicyCliError) -> Exit {
    eprintln!("error: {e}");
    Exit::Usage
}

/// Reads a UTF-8 file for a `policy` subcommand.
pub(crate) fn read(path: &Path) -> Result<String, PolicyCliError> {
    std::fs::read_to_string(path).map_err(|source| PolicyCliError::Io {
        op: "read",
        path: path.display().to_string(),
        source,
    })
}

/// The configured principals of a broker config file.
pub(crate) fn principals(config: &Path) -> Result<Vec<PrincipalSpec>, PolicyCliError> {
    Ok(Config::load(config)?.principals)
}

/// A principal given on the command line: the name of a configured
/// principal, or `Task:<scope>` / `Component:<role>[,<role>…]` for one that
/// needs no config (named `task` / `component`).
pub(crate) fn parse_principal(
    s: &str,
    specs: Option<&[PrincipalSpec]>,
) -> Result<PrincipalSpec, PolicyCliError> {
    let usage = |m: String| PolicyCliError::Usage(m);
    if let Some(scope) = s.strip_prefix("Task:") {
        let scope = ScopePath::parse(scope)
            .map_err(|e| usage(format!("principal `{s}`: invalid scope: {e}")))?;
        return Ok(inline(Principal {
            name: "task".to_owned(),
            kind: PrincipalKind::Task,
            roles: Vec::new(),
            scope: Some(scope),
        }));
    }
    if let Some(roles) = s.strip_prefix("Component:") {
        let roles = roles
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect();
        return Ok(inline(Principal {
            name: "component".to_owned(),
            kind: PrincipalKind::Component,
            roles,
            scope: None,
        }));
    }
    let Some(specs) = specs else {
        return Err(usage(format!(
            "principal `{s}` needs `--config FILE` to look it up; or write `Task:<scope>` or `Component:<role>`"
        )));
    };
    specs
        .iter()
        .find(|p| p.principal.name == s)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = specs.iter().map(|p| p.principal.name.as_str()).collect();
            usage(format!(
                "no principal `{s}` in the config (it has: {})",
                names.join(", ")
            ))
        })
}

/// A principal spec with no credentials, for principals given inline.
pub(crate) fn inline(principal: Principal) -> PrincipalSpec {
    PrincipalSpec {
        principal,
        uid: None,
        gid: None,
        token: None,
        cert: None,
    }
}

/// An action by its Cedar id.
pub(crate) fn parse_action(s: &str) -> Result<Action, PolicyCliError> {
    Action::parse(s).ok_or_else(|| {
        PolicyCliError::Usage(format!(
            "`{s}` is not an action; use read, write, list, delete or upload"
        ))
    })
}
