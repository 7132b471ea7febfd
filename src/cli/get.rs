//! `secret-broker get PATH`: print a secret's value.

use std::io::IsTerminal as _;

use clap::Args;
use http::Method;

use super::ClientArgs;
use super::client::{Client, ClientError, write_json_line, write_stdout};

/// Arguments of `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The secret path (`scope/name`).
    path: String,
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

/// Runs `get`: the raw value on stdout (a newline is added only on a
/// terminal, so `$(secret-broker get x)` and pipes get the exact bytes).
pub async fn run(args: GetArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.client)?;
    let path = super::put::api_path(&args.path)?;
    if client.json {
        let reply = client.send(Method::GET, &path, None, &[]).await?;
        return write_json_line(&reply.body);
    }
    let reply = client
        .send(
            Method::GET,
            &path,
            None,
            &[("accept", "application/octet-stream")],
        )
        .await?;
    write_stdout(&reply.body)?;
    if std::io::stdout().is_terminal() {
        write_stdout(b"\n")?;
    }
    Ok(())
}
