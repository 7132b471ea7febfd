//! `secret-broker ls [SCOPE/]`: list secrets under a scope (metadata only).

use clap::Args;
use http::Method;

use super::ClientArgs;
use super::client::{Client, ClientError, write_json_line, write_stdout};

/// Arguments of `ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// The scope to list, recursively (`acme/tasks/` or `acme/tasks`) [default: a task's own
    /// scope; everything for a component]
    scope: Option<String>,
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

/// Runs `ls`. Without a scope, a task lists its own scope (it may list
/// nothing else) and a component everything.
pub async fn run(args: LsArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.client)?;
    let scope = match args.scope.as_deref() {
        Some(s) => s.trim_end_matches('/').to_owned(),
        None => own_scope(&client).await?,
    };
    let path = if scope.is_empty() {
        "/v1/secrets/".to_owned()
    } else {
        crate::secret::ScopePath::parse(&scope)
            .map_err(|e| ClientError::Usage(format!("`{scope}` is not a valid scope: {e}")))?;
        format!("/v1/secrets/{scope}/")
    };
    let reply = client.send(Method::GET, &path, None, &[]).await?;
    if client.json {
        return write_json_line(&reply.body);
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
            "{}\tv{}\t{}",
            s["path"].as_str().unwrap_or("?"),
            s["version"],
            s["updated_at"].as_str().unwrap_or(""),
        ));
        // The labels column only when there are labels: no stray tab.
        if !labels.is_empty() {
            out.push('\t');
            out.push_str(&labels.join(","));
        }
        out.push('\n');
    }
    write_stdout(out.as_bytes())
}

/// The scope `ls` lists when none is given: the caller's own if it is a
/// task (`GET /v1/whoami`), else the root (`""`).
async fn own_scope(client: &Client) -> Result<String, ClientError> {
    let who = client
        .send(Method::GET, "/v1/whoami", None, &[])
        .await?
        .json()?;
    Ok(who["scope"].as_str().unwrap_or("").to_owned())
}
