//! The `secret-broker` binary: parse arguments, run, map to an exit code.
//! Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser as _;

// SECURITY: every freed block is zeroed, so buffers that briefly held a
// secret (hyper's, serde's, reallocations) do not leave copies behind.
#[global_allocator]
static ALLOC: secret_broker::alloc::ZeroizingAlloc = secret_broker::alloc::ZeroizingAlloc;

fn main() -> ExitCode {
    let cli = secret_broker::cli::Cli::parse();
    ExitCode::from(cli.run() as u8)
}
