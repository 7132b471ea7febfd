//! `secret-broker policy validate [--policies DIR]`: parse the schema and
//! every `*.cedar` file and validate strictly, exactly as the broker does at
//! start and on reload; errors are printed like a compiler's. Warnings
//! are printed too, and fail it with `--deny-warnings`.

use clap::Args;

use super::{DenyWarningsArg, Exit, PolicyDirArg, load_warned};

/// Arguments of `policy validate`.
#[derive(Debug, Args)]
#[command(after_help = super::BROKER_ONLY)]
pub struct ValidateArgs {
    #[command(flatten)]
    dir: PolicyDirArg,
    #[command(flatten)]
    warnings: DenyWarningsArg,
}

/// Runs `policy validate`: 0 valid, 1 invalid (or warned, with
/// `--deny-warnings`), 2 unreadable.
pub fn run(args: &ValidateArgs) -> Exit {
    let authz = match load_warned(&args.dir.dir, args.warnings.deny_warnings) {
        Ok(a) => a,
        Err(code) => return code,
    };
    outln!(
        "{}: {} policies valid against the schema",
        args.dir.dir.display(),
        authz.policy_ids().len()
    );
    Exit::Ok
}
