//! `secret-broker run [flags] -- COMMAND [ARG]...`: read secrets as the
//! caller, hand them to COMMAND as variables and files, then `exec` it.
//!
//! The flags and the broker client live here; everything else is in
//! [`crate::run`], which has no HTTP in it.
//!
//! Exit codes before COMMAND runs (COMMAND never starts on any of them):
//! 1 the broker refused a read (401, 403, 404, 5xx), 2 bad flags,
//! 65 a value or name cannot be used (not UTF-8, NUL, collision),
//! 69 the broker is unreachable, 74 a local file (DEST's directory, a
//! write), 126 COMMAND cannot be executed, 127 COMMAND not found.
//! Once COMMAND runs, the exit code is COMMAND's own.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt as _;

use clap::Args;
use http::Method;

use super::client::{Client, ClientError};
use super::{ClientArgs, Exit};
use crate::run::{self, FailureKind, Fetched, Plan, RunError, Source, SourceError, spec};
use crate::secret::{ScopePath, SecretBytes, SecretPath};

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Variable NAME holds the value of secret PATH (repeatable).
    #[arg(long = "env", value_name = "NAME=PATH")]
    env: Vec<String>,
    /// Every secret under SCOPE becomes a variable named by its relative
    /// path, upper-cased, other characters mapped to `_` (repeatable).
    #[arg(long = "env-from", value_name = "SCOPE/")]
    env_from: Vec<String>,
    /// Write the raw bytes of PATH to DEST, atomically, mode MODE (default 0400) (repeatable).
    #[arg(long = "file", value_name = "DEST=PATH[:MODE]")]
    file: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

impl RunArgs {
    fn plan(&self) -> Result<Plan, RunError> {
        Ok(Plan {
            env: self
                .env
                .iter()
                .map(|v| spec::env(v))
                .collect::<Result<_, _>>()?,
            env_from: self
                .env_from
                .iter()
                .map(|v| spec::env_from(v))
                .collect::<Result<_, _>>()?,
            files: self
                .file
                .iter()
                .map(|v| spec::file(v))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Runs `run`: on success it does not return (COMMAND replaces it).
pub fn run(args: RunArgs) -> Exit {
    let plan = match args.plan().and_then(|p| p.check_dests().map(|()| p)) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let client = match Client::new(&args.client) {
        Ok(c) => c,
        Err(e) => return super::client::report(Err(e)),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Software;
        }
    };
    let gathered = rt.block_on(run::gather(&plan, &BrokerSource(&client), false));
    drop(rt);
    let gathered = match gathered.and_then(|g| run::write_files(&g).map(|()| g)) {
        Ok(g) => g,
        Err(e) => return fail(&e),
    };
    exec(&args.command, &gathered.env)
}

/// Replaces this process with COMMAND; returns only if that failed.
fn exec(command: &[OsString], env: &[(String, SecretBytes)]) -> Exit {
    use std::os::unix::process::CommandExt as _;
    let Some((program, rest)) = command.split_first() else {
        eprintln!("error: run needs a COMMAND after `--`");
        return Exit::Usage;
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    for (name, value) in env {
        // INVARIANT: `run::env::build` let through only UTF-8 without NUL.
        cmd.env(name, OsStr::from_bytes(value.expose_secret()));
    }
    let err = cmd.exec();
    eprintln!("error: cannot run `{}`: {err}", program.to_string_lossy());
    if err.kind() == std::io::ErrorKind::NotFound {
        Exit::CommandNotFound
    } else {
        Exit::CannotExecute
    }
}

/// Prints why COMMAND was not started and maps it to an exit code.
fn fail(e: &RunError) -> Exit {
    eprintln!("error: {e}; COMMAND was not started");
    exit_for(e.kind())
}

/// The documented exit code of each kind of failure.
fn exit_for(kind: FailureKind) -> Exit {
    match kind {
        FailureKind::Usage => Exit::Usage,
        FailureKind::Refused => Exit::Failure,
        FailureKind::Unreachable => Exit::Unavailable,
        FailureKind::Data => Exit::DataErr,
        FailureKind::Io => Exit::Io,
        FailureKind::Internal => Exit::Software,
    }
}

/// The broker as a [`Source`]: ordinary API reads with the caller's
/// identity (peer credentials, or its bearer token).
#[derive(Debug)]
struct BrokerSource<'c>(&'c Client);

impl Source for BrokerSource<'_> {
    async fn read(&self, path: &SecretPath, fresh: bool) -> Result<Fetched, SourceError> {
        let mut headers = vec![("accept", "application/octet-stream")];
        if fresh {
            headers.push(("cache-control", "no-cache"));
        }
        let mut reply = self
            .0
            .send(
                Method::GET,
                &format!("/v1/secrets/{}", path.as_str()),
                None,
                &headers,
            )
            .await
            .map_err(source_error)?;
        let version = reply
            .headers
            .get("x-secret-version")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                SourceError::Unreachable("the broker's answer has no `x-secret-version`".into())
            })?;
        // Moves the zeroizing body's buffer into the secret type, no copy.
        let value = SecretBytes::new(std::mem::take(&mut *reply.body));
        Ok(Fetched { version, value })
    }

    async fn list(&self, scope: &ScopePath) -> Result<Vec<SecretPath>, SourceError> {
        let reply = self
            .0
            .send(
                Method::GET,
                &format!("/v1/secrets/{}/", scope.as_str()),
                None,
                &[],
            )
            .await
            .map_err(source_error)?;
        let v = reply
            .json()
            .map_err(|e| SourceError::Unreachable(e.to_string()))?;
        let mut paths = Vec::new();
        for s in v["secrets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let Some(p) = s["path"].as_str().and_then(|p| SecretPath::parse(p).ok()) else {
                return Err(SourceError::Unreachable(
                    "the broker listed an entry without a valid path".into(),
                ));
            };
            // SECURITY: only what lies inside the asked scope becomes a
            // variable, whatever the answer held.
            if scope.contains_path(p.as_str()) {
                paths.push(p);
            }
        }
        Ok(paths)
    }
}

fn source_error(e: ClientError) -> SourceError {
    match e {
        ClientError::Api {
            status,
            code,
            request_id,
            ..
        } => SourceError::Refused {
            status,
            code,
            request_id,
        },
        other => SourceError::Unreachable(other.to_string()),
    }
}
