//! `secret-broker policy prove [--policies DIR]`: symbolic proofs, for every
//! entity store and every request the schema allows, of the two rules the
//! broker exists for:
//!
//! - `platform-never-reads`: no principal in `Role::"platform"` is ever
//!   allowed `read`;
//! - `task-reads-own-scope`: a `Task` is allowed `read` only on resources
//!   `in principal.scope`;
//! - `upload-own-scope-only`: only a `Task` is ever allowed `upload`, and
//!   only on outputs `in principal.scope`.
//!
//! Each is checked as an implication with Cedar's symbolic compiler
//! (`cedar-policy-symcc`): for every request type the property covers, every
//! request the policy set allows must also be allowed by a reference policy
//! that states the property. A violation comes back from the solver as a
//! concrete request and entity store, which is printed and decided again by
//! the broker's authorizer to name the policies that allowed it.
//!
//! The solver is `cvc5`, run as a subprocess: `$CVC5` if set, else `cvc5` on
//! `PATH` (Debian: `apt-get install cvc5`).

use std::str::FromStr;

use cedar_policy::{PolicySet, RequestEnv, Schema};
use cedar_policy_symcc::solver::LocalSolver;
use cedar_policy_symcc::{CedarSymCompiler, CompiledPolicySet};
use clap::Args;

use super::{Exit, PolicyDirArg, load};
use crate::authz::Authorizer;
use crate::authz::entities::NAMESPACE;
use crate::authz::testfile::list_or_none;

/// Arguments of `policy prove`.
#[derive(Debug, Args)]
pub struct ProveArgs {
    #[command(flatten)]
    dir: PolicyDirArg,
}

/// A property: the request types it covers and a reference policy set that
/// allows exactly what the property permits there.
struct Property {
    name: &'static str,
    claim: &'static str,
    covers: fn(&RequestEnv) -> bool,
    reference: &'static str,
}

fn is_action(env: &RequestEnv, id: &str) -> bool {
    env.action().type_name().to_string() == format!("{NAMESPACE}::Action")
        && AsRef::<str>::as_ref(env.action().id()) == id
}

const PROPERTIES: [Property; 3] = [
    Property {
        name: "platform-never-reads",
        claim: "no principal in `Role::\"platform\"` can `read`",
        covers: |env| is_action(env, "read"),
        reference: r#"permit (principal, action, resource)
unless { principal in SecretBroker::Role::"platform" };"#,
    },
    Property {
        name: "task-reads-own-scope",
        claim: "a `Task` can `read` only resources inside its own scope",
        covers: |env| {
            is_action(env, "read") && env.principal().to_string() == format!("{NAMESPACE}::Task")
        },
        reference: r#"permit (principal is SecretBroker::Task, action, resource)
when { resource in principal.scope };"#,
    },
    Property {
        name: "upload-own-scope-only",
        claim: "only a `Task` can `upload`, and only inside its own scope",
        // Every principal type: for a `Component` the reference allows
        // nothing, so the proof is that the policies allow it nothing too.
        covers: |env| is_action(env, "upload"),
        reference: r#"permit (principal is SecretBroker::Task, action, resource)
when { resource in principal.scope };"#,
    },
];

/// Why a proof could not be attempted or finished.
#[derive(Debug, thiserror::Error)]
enum ProveError {
    #[error(
        "cannot start the `cvc5` solver (`{solver}`): {source}; install it (`apt-get install cvc5`) or set `CVC5` to its path"
    )]
    Solver {
        solver: String,
        source: cedar_policy_symcc::solver::SolverError,
    },
    #[error("property `{property}` on `{env}`: {message}")]
    Symcc {
        property: &'static str,
        env: String,
        message: String,
    },
}

/// What proving one property found.
enum Verdict {
    /// Holds on every covered request type (how many there were).
    Proved(usize),
    /// A request the policies allow and the property forbids.
    Violated(Box<cedar_policy_symcc::Env>),
}

fn env_name(env: &RequestEnv) -> String {
    format!("{} {} {}", env.principal(), env.action(), env.resource())
}

async fn prove(
    compiler: &mut CedarSymCompiler<LocalSolver>,
    schema: &Schema,
    policies: &PolicySet,
    property: &Property,
) -> Result<Verdict, ProveError> {
    let symcc = |env: &RequestEnv, e: &dyn std::fmt::Display| ProveError::Symcc {
        property: property.name,
        env: env_name(env),
        message: e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    };
    let reference = PolicySet::from_str(property.reference).map_err(|e| ProveError::Symcc {
        property: property.name,
        env: "reference policy".to_owned(),
        message: e.to_string(),
    })?;
    let mut covered = 0;
    for env in schema.request_envs().filter(|e| (property.covers)(e)) {
        covered += 1;
        let ours =
            CompiledPolicySet::compile(policies, &env, schema).map_err(|e| symcc(&env, &e))?;
        let spec =
            CompiledPolicySet::compile(&reference, &env, schema).map_err(|e| symcc(&env, &e))?;
        if let Some(cex) = compiler
            .check_implies_with_counterexample_opt(&ours, &spec)
            .await
            .map_err(|e| symcc(&env, &e))?
        {
            return Ok(Verdict::Violated(Box::new(cex)));
        }
    }
    Ok(Verdict::Proved(covered))
}

/// The solver's counterexample as lines: the request and context as symcc
/// prints them, then its entities sorted (symcc's order is a hash map's)
/// and without the schema's action entities, which every store has.
fn counterexample(cex: &cedar_policy_symcc::Env) -> Vec<String> {
    let text = cex.to_string();
    let (head, entities) = text.split_once("\nentities: [\n").unwrap_or((&text, ""));
    let mut out: Vec<String> = head.lines().map(str::to_owned).collect();
    // Each entity starts on a line indented by exactly two spaces; its
    // attributes follow on deeper lines and a closing `  },`.
    let mut items: Vec<String> = Vec::new();
    for line in entities.lines().filter(|l| *l != "]") {
        let starts_item =
            line.starts_with("  ") && line.chars().nth(2).is_some_and(|c| c != ' ' && c != '}');
        match items.last_mut() {
            Some(item) if !starts_item => {
                item.push('\n');
                item.push_str(line);
            }
            _ if starts_item => items.push(line.to_owned()),
            _ => {}
        }
    }
    let action = format!("  {NAMESPACE}::Action::");
    items.retain(|i| !i.starts_with(&action));
    items.sort();
    out.push("entities:".to_owned());
    for item in items {
        out.extend(item.lines().map(|l| l.trim_end_matches(',').to_owned()));
    }
    out
}

/// Runs `policy prove`: 0 every property proved, 1 a counterexample found
/// (or the policies are invalid), 2 the solver could not run.
pub async fn run(args: &ProveArgs) -> Exit {
    let authz = match load(&args.dir.dir) {
        Ok(a) => a,
        Err(code) => return code,
    };
    match prove_all(&authz).await {
        Ok(true) => Exit::Ok,
        Ok(false) => Exit::Failure,
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Usage
        }
    }
}

async fn prove_all(authz: &Authorizer) -> Result<bool, ProveError> {
    let solver_name = std::env::var("CVC5").unwrap_or_else(|_| "cvc5".to_owned());
    let solver_err = |source| ProveError::Solver {
        solver: solver_name.clone(),
        source,
    };
    let solver = LocalSolver::cvc5().map_err(solver_err)?;
    let mut compiler = CedarSymCompiler::new(solver).map_err(|e| ProveError::Symcc {
        property: "(all)",
        env: "solver".to_owned(),
        message: e.to_string(),
    })?;
    let schema = authz.schema();
    let policies = authz.policy_set();
    let (mut proved, mut failed) = (0usize, 0usize);
    for property in &PROPERTIES {
        match prove(&mut compiler, &schema, &policies, property).await? {
            Verdict::Proved(0) => {
                proved += 1;
                outln!(
                    "PROVED {}: {} (vacuously: the schema allows no such request)",
                    property.name,
                    property.claim
                );
            }
            Verdict::Proved(n) => {
                proved += 1;
                outln!(
                    "PROVED {}: {} (for every entity store; {n} request type(s))",
                    property.name,
                    property.claim
                );
            }
            Verdict::Violated(cex) => {
                failed += 1;
                outln!("FAILED {}: {}", property.name, property.claim);
                outln!("  counterexample (allowed by the policies):");
                for line in counterexample(&cex) {
                    outln!("    {line}");
                }
                let d = authz.decide_request(&cex.request, &cex.entities);
                let at: Vec<String> = d
                    .policies
                    .iter()
                    .map(|id| match authz.policy_location(id) {
                        Some((file, line)) => format!("`{id}` at {file}:{line}"),
                        None => format!("`{id}`"),
                    })
                    .collect();
                outln!(
                    "  decided {} by: {}",
                    if d.allowed { "allow" } else { "deny" },
                    list_or_none(&at)
                );
            }
        }
    }
    outln!("{proved} proved, {failed} disproved");
    Ok(failed == 0)
}
