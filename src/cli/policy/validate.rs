//! `secret-broker policy validate [--policies DIR]`: parse the schema and
//! every `*.cedar` file and validate strictly, exactly as the broker does at
//! start and on reload; errors are printed like a compiler's.

use clap::Args;

use super::{Exit, PolicyDirArg, load, render};

/// Arguments of `policy validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    dir: PolicyDirArg,
}

/// Runs `policy validate`: 0 valid, 1 invalid, 2 unreadable.
pub fn run(args: &ValidateArgs) -> Exit {
    let authz = match load(&args.dir.dir) {
        Ok(a) => a,
        Err(code) => return code,
    };
    // Warnings (an impossible policy, confusable identifiers) do not make
    // the broker refuse the set, so they do not fail validation either.
    for w in authz.warnings() {
        eprint!("{}", render("warning", &w));
    }
    outln!(
        "{}: {} policies valid against the schema",
        args.dir.dir.display(),
        authz.policy_ids().len()
    );
    Exit::Ok
}
