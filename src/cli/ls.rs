//! `secret-broker ls [SCOPE/]`: list secrets under a scope (metadata only).

use clap::Args;
use http::Method;

use super::ClientArgs;
use super::client::{Client, ClientError, write_stdout};

/// Arguments of `ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// The scope to list, recursively (`acme/tasks/` or `acme/tasks`); all if omitted.
    scope: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs `ls`.
pub async fn run(args: LsArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.client)?;
    let scope = args.scope.as_deref().unwrap_or("").trim_end_matches('/');
    let path = if scope.is_empty() {
        "/v1/secrets/".to_owned()
    } else {
        crate::secret::ScopePath::parse(scope)
            .map_err(|e| ClientError::Usage(format!("`{scope}` is not a valid scope: {e}")))?;
        format!("/v1/secrets/{scope}/")
    };
    let reply = client.send(Method::GET, &path, None, &[]).await?;
    if client.json {
        return write_stdout(&reply.body);
    }
    let v = reply.json()?;
    let mut out = String::new();
    for s in v["secrets"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let labels: Vec<String> = s["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "{}\tv{}\t{}\t{}\n",
            s["path"].as_str().unwrap_or("?"),
            s["version"],
            s["updated_at"].as_str().unwrap_or(""),
            labels.join(",")
        ));
    }
    write_stdout(out.as_bytes())
}
