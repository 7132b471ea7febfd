//! `secret-broker policy explain --principal P --action A --resource R`:
//! decide one request with the broker's own entities and show the decision,
//! the policies that determined it (with `file:line`), and any evaluation
//! errors.
//!
//! `P` is a principal of `--config FILE`, or `Task:<scope>` /
//! `Component:<role>[,<role>…]`. `R` is a secret path, or a scope when it
//! ends in `/` (for `list`; `/` alone is the root). `--entities F` adds
//! Cedar JSON entities to the ones the broker builds, for what-if questions
//! about entities the broker itself never builds (the answer then is no
//! longer what production would decide).

use std::path::{Path, PathBuf};

use cedar_policy::{Entities, Request};
use clap::Args;

use super::{Exit, PolicyCliError, PolicyDirArg, fail, load, parse_action, parse_principal, read};
use crate::authz::testfile::{Target, list_or_none};
use crate::authz::{Authorizer, Decision, RequestContext, Transport, context, entities};
use crate::identity::{PeerCred, PrincipalKind, PrincipalSpec};

/// Arguments of `policy explain`.
#[derive(Debug, Args)]
#[command(after_help = super::BROKER_ONLY)]
pub struct ExplainArgs {
    #[command(flatten)]
    dir: PolicyDirArg,
    /// A principal name from `--config`, or `Task:<scope>`, or `Component:<role>[,<role>…]`.
    #[arg(long, value_name = "P")]
    principal: String,
    /// read, write, list, delete or upload.
    #[arg(long, value_name = "A")]
    action: String,
    /// A secret path, or a scope ending in `/` (for list).
    #[arg(long, value_name = "PATH")]
    resource: String,
    /// The broker config whose principals `--principal` names.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Extra Cedar entities (JSON) added to the ones the broker builds.
    #[arg(long, value_name = "F")]
    entities: Option<PathBuf>,
    /// How the request arrives: unix or tls.
    #[arg(long, value_name = "T", default_value = "unix")]
    transport: String,
    /// With `--transport tls`: the client certificate's SPIFFE id, as the
    /// broker puts it in the context (`context.spiffe_id`).
    #[arg(long, value_name = "ID")]
    spiffe_id: Option<String>,
    /// Print the explanation as one JSON document (decision, request,
    /// caller, determined_by, errors) instead of text.
    #[arg(long)]
    json: bool,
}

/// One explained decision, rendered as text or JSON.
#[derive(Debug, serde::Serialize)]
struct Explanation {
    decision: &'static str,
    request: ExplainedRequest,
    caller: ExplainedCaller,
    /// Empty: no policy applies, so the default deny.
    determined_by: Vec<DeterminedBy>,
    errors: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
struct ExplainedRequest {
    principal: String,
    action: String,
    resource: String,
}

#[derive(Debug, serde::Serialize)]
struct ExplainedCaller {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    scope: Option<String>,
    roles: Vec<String>,
    transport: &'static str,
}

#[derive(Debug, serde::Serialize)]
struct DeterminedBy {
    effect: &'static str,
    id: String,
    /// `file:line`, or `?` when unknown.
    at: String,
}

impl Explanation {
    /// The text `policy explain` prints for people.
    fn text(&self) -> String {
        let r = &self.request;
        let c = &self.caller;
        let mut out = format!(
            "decision: {}\nrequest:  principal {}, action {}, resource {}\n",
            self.decision, r.principal, r.action, r.resource
        );
        let scope = c.scope.as_ref().map(|s| format!(", scope `{s}`"));
        out.push_str(&format!(
            "caller:   {} `{}`{}, roles: {}; transport {}\n",
            c.kind,
            c.name,
            scope.unwrap_or_default(),
            list_or_none(&c.roles),
            c.transport,
        ));
        if self.determined_by.is_empty() {
            out.push_str("determined by: no policy applies, so the default deny\n");
        } else {
            out.push_str("determined by:\n");
            for d in &self.determined_by {
                out.push_str(&format!("  {} `{}` at {}\n", d.effect, d.id, d.at));
            }
        }
        if self.errors.is_empty() {
            out.push_str("errors: none\n");
        } else {
            out.push_str("errors:\n");
            for e in &self.errors {
                out.push_str(&format!("  {e}\n"));
            }
        }
        out
    }
}

/// Runs `policy explain`: 0 once a decision is explained (allow or deny),
/// 1 invalid policies, 2 bad arguments or unreadable files.
pub fn run(args: &ExplainArgs) -> Exit {
    let authz = match load(&args.dir.dir) {
        Ok(a) => a,
        Err(code) => return code,
    };
    match explain(&authz, args) {
        Ok(explained) if args.json => {
            // A map of strings and lists always serializes.
            outln!("{}", serde_json::to_string(&explained).unwrap_or_default());
            Exit::Ok
        }
        Ok(explained) => {
            outln!("{}", explained.text().trim_end());
            Exit::Ok
        }
        Err(e) => fail(&e),
    }
}

fn explain(authz: &Authorizer, args: &ExplainArgs) -> Result<Explanation, PolicyCliError> {
    let usage = PolicyCliError::Usage;
    let specs = args.config.as_deref().map(super::principals).transpose()?;
    let spec = parse_principal(&args.principal, specs.as_deref())?;
    let action = parse_action(&args.action)?;
    let target = Target::parse(&args.resource)
        .map_err(|e| usage(format!("resource `{}`: {e}", args.resource)))?;
    let transport = match args.transport.as_str() {
        "unix" => Transport::Unix,
        "tls" => Transport::Tls,
        other => return Err(usage(format!("transport `{other}` is not `unix` or `tls`"))),
    };
    if transport == Transport::Unix && args.spiffe_id.is_some() {
        return Err(usage(
            "`--spiffe-id` exists only with `--transport tls`".to_owned(),
        ));
    }
    // The unix socket always reports the peer; a configured principal's
    // uid/gid stand in for it.
    let peer = (transport == Transport::Unix).then(|| PeerCred {
        uid: spec.uid.unwrap_or(0),
        gid: spec.gid.unwrap_or(0),
        pid: None,
    });
    let ctx = RequestContext {
        transport,
        peer,
        request_id: "policy-explain",
        spiffe_id: args.spiffe_id.as_deref(),
    };
    let resource = target.resource(action, None);
    let decision = match &args.entities {
        None => authz.decide(&spec.principal, action, resource, &ctx),
        Some(file) => with_extra_entities(authz, &spec, action, resource, &ctx, file)?,
    };
    let p = &spec.principal;
    let set = authz.policy_set();
    let determined_by = decision
        .policies
        .iter()
        .map(|id| DeterminedBy {
            effect: set
                .policy(&cedar_policy::PolicyId::new(id))
                .map_or("?", |p| match p.effect() {
                    cedar_policy::Effect::Permit => "permit",
                    cedar_policy::Effect::Forbid => "forbid",
                }),
            id: id.to_string(),
            at: authz
                .policy_location(id)
                .map_or_else(|| "?".to_owned(), |(file, line)| format!("{file}:{line}")),
        })
        .collect();
    Ok(Explanation {
        decision: if decision.allowed { "allow" } else { "deny" },
        request: ExplainedRequest {
            principal: entities::principal_uid(p).map_or_else(|e| e.to_string(), |u| u.to_string()),
            action: entities::action_uid(action).map_or_else(|e| e.to_string(), |u| u.to_string()),
            resource: entities::resource_uid(resource)
                .map_or_else(|e| e.to_string(), |u| u.to_string()),
        },
        caller: ExplainedCaller {
            kind: match p.kind {
                PrincipalKind::Component => "Component",
                PrincipalKind::Task => "Task",
            },
            name: p.name.clone(),
            scope: p.scope.as_ref().map(ToString::to_string),
            roles: p.roles.clone(),
            transport: transport.as_str(),
        },
        determined_by,
        errors: decision.errors.iter().map(ToString::to_string).collect(),
    })
}

/// Decides with the broker's entities plus those of `file`.
fn with_extra_entities(
    authz: &Authorizer,
    spec: &PrincipalSpec,
    action: crate::authz::Action,
    resource: crate::authz::Resource<'_>,
    ctx: &RequestContext<'_>,
    file: &Path,
) -> Result<Decision, PolicyCliError> {
    let schema = authz.schema();
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        PolicyCliError::Usage(format!("`{}`: {what}: {e}", file.display()))
    };
    let extra = Entities::from_json_str(&read(file)?, Some(&schema))
        .map_err(|e| bad("not cedar entities", &e))?;
    let internal = |e: &dyn std::fmt::Display| PolicyCliError::Usage(e.to_string());
    let mut list = entities::principal_entities(&spec.principal).map_err(|e| internal(&e))?;
    list.extend(entities::resource_entities(resource).map_err(|e| internal(&e))?);
    // Action entities come from the schema (added again below); a file's
    // entity with the uid of one of the broker's is an error, not an override.
    list.extend(
        extra
            .iter()
            .filter(|e| !e.uid().type_name().basename().eq("Action"))
            .cloned(),
    );
    let all = Entities::from_entities(list, Some(&schema))
        .map_err(|e| bad("clashes with the broker's entities or the schema", &e))?;
    let request = Request::new(
        entities::principal_uid(&spec.principal).map_err(|e| internal(&e))?,
        entities::action_uid(action).map_err(|e| internal(&e))?,
        entities::resource_uid(resource).map_err(|e| internal(&e))?,
        context::context(ctx).map_err(|e| internal(&e))?,
        Some(&schema),
    )
    .map_err(|e| internal(&e))?;
    Ok(authz.decide_request(&request, &all))
}
