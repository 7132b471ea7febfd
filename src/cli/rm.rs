//! `secret-broker rm PATH`: delete a secret and all its versions.

use clap::Args;
use http::Method;

use super::ClientArgs;
use super::client::{Client, ClientError, write_stdout};

/// Arguments of `rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The secret path (`scope/name`).
    path: String,
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

/// Runs `rm`.
pub async fn run(args: RmArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.client)?;
    let path = super::put::api_path(&args.path)?;
    client.send(Method::DELETE, &path, None, &[]).await?;
    if client.json {
        let v = serde_json::json!({"path": args.path, "deleted": true});
        return write_stdout(format!("{v}\n").as_bytes());
    }
    write_stdout(format!("deleted {}\n", args.path).as_bytes())
}
