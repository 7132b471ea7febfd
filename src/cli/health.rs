//! `secret-broker health`: exits 0 when the broker on the socket is ready
//! (`GET /readyz` is 200). Needs no identity; the injected sidecar's
//! startup and liveness probes run it.

use clap::Args;
use http::Method;

use super::ClientArgs;
use super::client::{Client, ClientError, write_json_line, write_stdout};

/// Arguments of `health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

/// Runs `health`.
pub async fn run(args: HealthArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.client)?;
    // Any non-2xx answer is an error here, so reaching this means ready.
    let reply = client.send(Method::GET, "/readyz", None, &[]).await?;
    if client.json {
        return write_json_line(&reply.body);
    }
    write_stdout(b"ready\n")
}
