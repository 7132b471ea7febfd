//! `secret-broker whoami`: the caller's resolved principal.

use clap::Args;
use http::Method;

use super::ClientArgs;
use super::client::{Client, ClientError, write_json_line, write_stdout};

/// Arguments of `whoami`.
#[derive(Debug, Args)]
pub struct WhoamiArgs {
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

/// Runs `whoami`.
pub async fn run(args: WhoamiArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.client)?;
    let reply = client.send(Method::GET, "/v1/whoami", None, &[]).await?;
    if client.json {
        return write_json_line(&reply.body);
    }
    let v = reply.json()?;
    let roles: Vec<&str> = v["roles"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r.as_str()).collect())
        .unwrap_or_default();
    let text = format!(
        "principal: {}\ntype:      {}\nscope:     {}\nroles:     {}\n",
        v["principal"].as_str().unwrap_or("?"),
        v["type"].as_str().unwrap_or("?"),
        v["scope"].as_str().unwrap_or("-"),
        if roles.is_empty() {
            "-".to_owned()
        } else {
            roles.join(", ")
        },
    );
    write_stdout(text.as_bytes())
}
