//! The command line: argument types, exit codes, and dispatch to one module
//! per subcommand.

mod client;
mod completions;
mod dev;
mod get;
mod health;
mod inject;
mod install_self;
mod ls;
mod policy;
mod put;
mod rm;
mod run;
mod serve;
mod upload;
mod webhook;
mod whoami;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use client::ClientError;

/// Process exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// The request failed (an API error, a failing check).
    Failure = 1,
    /// Bad usage.
    Usage = 2,
    /// The broker identified no principal (`401 unauthenticated`).
    Unauthenticated = 3,
    /// The policy denied the request (`403 forbidden`).
    Forbidden = 4,
    /// No such secret (`404 not_found`).
    NotFound = 5,
    /// `put --create-only` and the secret exists (`412 precondition_failed`),
    /// or `upload` and the object exists (the bucket's `412`).
    Exists = 6,
    /// `upload`: the bucket refused the signed request (`403`): the URL
    /// expired, or the request differs from what the broker signed.
    UploadRefused = 7,
    /// The config is invalid (EX_CONFIG).
    Config = 64,
    /// The broker could not be reached (EX_UNAVAILABLE).
    Unavailable = 69,
    /// Startup failed for another reason (EX_SOFTWARE).
    Software = 70,
    /// The OS refused something the config asks for, e.g. locking memory (EX_OSERR).
    OsErr = 71,
    /// Local I/O failed (EX_IOERR).
    Io = 74,
    /// Data cannot be used as asked, e.g. a secret that cannot be an
    /// environment variable (EX_DATAERR).
    DataErr = 65,
    /// `run`: COMMAND was found but cannot be executed (as shells do).
    CannotExecute = 126,
    /// `run`: COMMAND was not found (as shells do).
    CommandNotFound = 127,
}

/// secret-broker: platform components write secrets they can never read
/// back; task pods read only their own scope.
#[derive(Debug, Parser)]
#[command(name = "secret-broker", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker.
    Serve(serve::ServeArgs),
    /// Create a secret or add a version (platform).
    Put(put::PutArgs),
    /// Read a secret's value (task).
    Get(get::GetArgs),
    /// List secrets under a scope (names and metadata only).
    Ls(ls::LsArgs),
    /// Delete a secret and all its versions.
    Rm(rm::RmArgs),
    /// Show who the broker takes you for.
    Whoami(whoami::WhoamiArgs),
    /// Exit 0 if the broker on the socket is ready (for probes; no identity needed).
    Health(health::HealthArgs),
    /// Add the broker sidecar to annotated Kubernetes manifests.
    Inject(inject::InjectArgs),
    /// Run the Kubernetes mutating admission webhook (HTTPS).
    Webhook(webhook::WebhookArgs),
    /// Policy as code: validate, test, explain, fmt, prove.
    Policy(policy::PolicyArgs),
    /// Print a shell completion script (bash, zsh, fish) on stdout.
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff) on stdout: `secret-broker man > secret-broker.1`.
    Man(completions::ManArgs),
    /// Start a program with secrets as environment variables and files.
    Run(run::RunArgs),
    /// Upload task output straight to the bucket through a signed, create-only URL (task).
    Upload(upload::UploadArgs),
    /// Copy this binary to DEST, mode 0555 (injection's init container).
    #[command(hide = true)]
    InstallSelf(install_self::InstallSelfArgs),
}

/// Options shared by the client verbs.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The broker's socket [default: $SECRET_BROKER_SOCKET, else /run/secret-broker/api.sock]
    #[arg(long, value_name = "S")]
    socket: Option<PathBuf>,
    /// Send `Authorization: Bearer` with the token read from this file [default:
    /// $SECRET_BROKER_TOKEN_FILE; without either, the token is $SECRET_BROKER_TOKEN itself]
    #[arg(long, value_name = "F")]
    token_file: Option<PathBuf>,
    /// Reach the broker's mutual-TLS listener instead of the socket:
    /// https://HOST:PORT [default: $SECRET_BROKER_URL]
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// With --url: the client certificate chain, PEM [default: $SECRET_BROKER_CERT]
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// With --url: the client certificate's private key, PEM [default: $SECRET_BROKER_KEY]
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// With --url: the CA bundle that signed the broker's certificate, PEM
    /// [default: $SECRET_BROKER_CACERT]
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// With --url: also require the broker's public key to be this one
    /// (sha256//BASE64 of its SPKI, as curl's --pinnedpubkey)
    #[arg(long, value_name = "sha256//BASE64")]
    pin: Option<String>,
    /// Print the API's JSON instead of text for people, one document per line
    /// (errors too: the API's error envelope).
    #[arg(long)]
    json: bool,
}

impl Cli {
    /// Runs the command and returns the exit code.
    pub fn run(self) -> Exit {
        match self.command {
            // `serve` builds its runtime from its config (`[runtime]`).
            Command::Serve(a) => serve::run(a),
            Command::Inject(a) => inject::run(a),
            // The webhook serves many API-server calls at once; the client
            // verbs and policy commands need no more than one thread.
            Command::Webhook(a) => block_on(true, webhook::run(a)),
            Command::Put(a) => client_verb(a.client.json, put::run(a)),
            Command::Get(a) => client_verb(a.client.json, get::run(a)),
            Command::Ls(a) => client_verb(a.client.json, ls::run(a)),
            Command::Rm(a) => client_verb(a.client.json, rm::run(a)),
            Command::Whoami(a) => client_verb(a.client.json, whoami::run(a)),
            Command::Health(a) => client_verb(a.client.json, health::run(a)),
            Command::Upload(a) => client_verb(a.client.json, upload::run(a)),
            Command::Policy(a) => block_on(false, policy::run(a)),
            Command::Completions(a) => completions::completions(&a),
            Command::Man(a) => completions::man(&a),
            // `run` builds its own runtime and drops it before `exec`.
            Command::Run(a) => run::run(a),
            Command::InstallSelf(a) => install_self::run(&a),
        }
    }
}

/// Runs a client verb and reports its failure (as JSON too with `--json`).
fn client_verb(
    json: bool,
    fut: impl std::future::Future<Output = Result<(), ClientError>>,
) -> Exit {
    block_on(false, async move { client::report(json, fut.await) })
}

/// Runs `fut` on a fresh runtime (multi-threaded or current-thread).
fn block_on(multi: bool, fut: impl std::future::Future<Output = Exit>) -> Exit {
    let mut builder = if multi {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    match builder.enable_all().build() {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            Exit::Software
        }
    }
}
