//! `secret-broker put PATH (--value V | --from-file F | --stdin)`: create a
//! secret or add a version.

use std::io::Read as _;
use std::path::PathBuf;

use clap::Args;
use http::Method;
use zeroize::Zeroizing;

use super::ClientArgs;
use super::client::{Client, ClientError, write_json_line, write_stdout};
use crate::secret::{SecretBytes, SecretPath};
use crate::store::Labels;

/// Arguments of `put`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["value", "from_file", "stdin"])))]
pub struct PutArgs {
    /// The secret path (`scope/name`).
    path: String,
    /// The value (note: visible in the process list; prefer --from-file or --stdin).
    #[arg(long, value_name = "V")]
    value: Option<String>,
    /// Read the value from a file, byte for byte.
    #[arg(long, value_name = "F")]
    from_file: Option<PathBuf>,
    /// Read the value from standard input, byte for byte.
    #[arg(long)]
    stdin: bool,
    /// A label `key=value` (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,
    /// Only create: fail if the secret exists (`If-None-Match: *`).
    #[arg(long)]
    create_only: bool,
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

/// `/v1/secrets/{path}` for a path checked locally first, so typos fail
/// with the same message the broker would give.
pub fn api_path(path: &str) -> Result<String, ClientError> {
    SecretPath::parse(path)
        .map_err(|e| ClientError::Usage(format!("`{path}` is not a valid secret path: {e}")))?;
    Ok(format!("/v1/secrets/{path}"))
}

/// Runs `put`.
pub async fn run(args: PutArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.client)?;
    let path = api_path(&args.path)?;
    let mut labels = Labels::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| ClientError::Usage(format!("label `{l}` must be `key=value`")))?;
        labels.insert(k.to_owned(), v.to_owned());
    }
    let value = match (args.value, &args.from_file, args.stdin) {
        (Some(v), _, _) => SecretBytes::new(v.into_bytes()),
        (_, Some(f), _) => {
            let bytes = Zeroizing::new(std::fs::read(f).map_err(|source| ClientError::Read {
                path: f.display().to_string(),
                source,
            })?);
            SecretBytes::copy_from(&bytes)
        }
        _ => {
            let mut buf = Zeroizing::new(Vec::new());
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|source| ClientError::Read {
                    path: "stdin".into(),
                    source,
                })?;
            SecretBytes::copy_from(&buf)
        }
    };
    // The broker refuses an empty value (`400 invalid_body`); say so
    // before sending, naming where it came from (`false | put --stdin`).
    if value.is_empty() {
        let source = match (&args.from_file, args.stdin) {
            (Some(f), _) => format!("the file `{}`", f.display()),
            (None, true) => "standard input".to_owned(),
            (None, false) => "`--value`".to_owned(),
        };
        return Err(ClientError::Usage(format!(
            "the value from {source} is empty; a secret holds at least one byte (to remove one, use `rm`); nothing was sent"
        )));
    }
    let body = crate::api::body::put_json(&value, &labels);
    drop(value);
    let extra: &[(&str, &str)] = if args.create_only {
        &[("if-none-match", "*")]
    } else {
        &[]
    };
    let reply = client.send(Method::PUT, &path, Some(body), extra).await?;
    if client.json {
        return write_json_line(&reply.body);
    }
    let v = reply.json()?;
    let what = if reply.status == 201 {
        "created"
    } else {
        "new version"
    };
    write_stdout(format!("wrote {} version {} ({what})\n", args.path, v["version"]).as_bytes())
}
