//! `secret-broker run [flags] -- COMMAND [ARG]...`: read secrets as the
//! caller, hand them to COMMAND as variables and files, then `exec` it.
//!
//! The flags and the broker client live here; everything else is in
//! [`crate::run`], which has no HTTP in it.
//!
//! Exit codes before COMMAND runs (COMMAND never starts on any of them):
//! 1 the broker refused a read (401, 403, 404, 5xx), 2 bad flags,
//! 65 a value or name cannot be used (not UTF-8, NUL, collision, a
//! template error), 69 the broker is unreachable, 74 a local file (DEST's
//! directory, a write, a template SRC), 126 COMMAND cannot be executed, 127 COMMAND not found.
//! Once COMMAND runs, the exit code is COMMAND's own (with `--watch`,
//! 128+N when COMMAND was killed by signal N).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt as _;
use std::time::Duration;

use clap::Args;
use http::Method;

use super::client::{Client, ClientError};
use super::{ClientArgs, Exit};
use crate::run::{
    self, FailureKind, Fetched, Plan, RunError, Source, SourceError, spec, supervise,
};
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
    /// Render template SRC (minijinja; `{{ secret("PATH") }}`; filters json,
    /// b64encode, shell_quote) to DEST, written like --file (repeatable).
    #[arg(long = "template", value_name = "SRC=DEST[:MODE]")]
    template: Vec<String>,
    /// Stay as COMMAND's parent and re-read every D (e.g. 30s); rotate on a changed version.
    #[arg(long, value_name = "D", value_parser = positive_duration)]
    watch: Option<Duration>,
    /// With --watch, on a changed version (files are rewritten first):
    /// `restart`, `signal:SIG` (e.g. signal:HUP) or `none`.
    #[arg(long, value_name = "ACTION", requires = "watch", default_value = "restart",
          value_parser = |v: &str| spec::on_change(v).map_err(|e| e.to_string()))]
    on_change: spec::OnChange,
    /// With --watch and `restart`: time between TERM and KILL.
    #[arg(long, value_name = "D", requires = "watch", default_value = "10s",
          value_parser = crate::config::parse_duration)]
    stop_timeout: Duration,
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
            templates: self
                .template
                .iter()
                .map(|v| run::template::load(spec::template(v)?))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Runs `run`: on success it does not return (COMMAND replaces it, or
/// with `--watch` `run` exits with COMMAND's code).
pub fn run(args: RunArgs) -> Exit {
    let plan = match args.plan().and_then(|p| p.check_dests().map(|()| p)) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let client = match Client::new(&args.client) {
        Ok(c) => c,
        Err(e) => return super::client::report(args.client.json, Err(e)),
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
    let source = BrokerSource(&client);
    let gathered = rt
        .block_on(run::gather(&plan, &source, false))
        .and_then(|g| run::write_files(&g).map(|()| g));
    let gathered = match gathered {
        Ok(g) => g,
        Err(e) => return fail(&e),
    };
    let Some(every) = args.watch else {
        drop(rt);
        return exec(&args.command, &gathered.env);
    };
    let watch = supervise::Watch {
        every,
        on_change: args.on_change,
        stop_timeout: args.stop_timeout,
    };
    let ended = rt.block_on(supervise::supervise(
        &plan,
        &source,
        &args.command,
        watch,
        gathered,
    ));
    drop(rt);
    match ended {
        // COMMAND's own exit code, which `Exit` cannot hold.
        Ok(code) => std::process::exit(code),
        Err(e @ supervise::SuperviseError::Spawn { .. }) => {
            eprintln!("error: {e}");
            Exit::CannotExecute
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Software
        }
    }
}

pub(super) fn positive_duration(v: &str) -> Result<Duration, String> {
    match crate::config::parse_duration(v)? {
        d if d.is_zero() => Err("must be more than 0".to_owned()),
        d => Ok(d),
    }
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
    // The same codes as the other client verbs for the answers a script
    // tells apart.
    match e {
        RunError::Refused { status: 401, .. } => Exit::Unauthenticated,
        RunError::Refused { status: 403, .. } => Exit::Forbidden,
        RunError::Refused { status: 404, .. } => Exit::NotFound,
        _ => exit_for(e.kind()),
    }
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
