//! `secret-broker completions SHELL` and `secret-broker man`: shell
//! completion scripts and a man page, generated from the same clap
//! definitions as the parser, so they cannot drift from it.

use clap::{Args, CommandFactory, ValueEnum};

use super::{Cli, Exit};

/// Options of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Shells with a completion script.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Options of `man` (none).
#[derive(Debug, Args)]
pub struct ManArgs {}

/// Prints the completion script for the shell on stdout.
pub fn completions(args: &CompletionsArgs) -> Exit {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = Cli::command();
    // Into a buffer first: the generator panics on a write error (a closed
    // pipe), and a CLI reports those.
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "secret-broker", &mut out);
    write_stdout(&out)
}

/// Writes `bytes` to stdout; a failure (a closed pipe) is an I/O error.
fn write_stdout(bytes: &[u8]) -> Exit {
    match std::io::Write::write_all(&mut std::io::stdout(), bytes) {
        Ok(()) => Exit::Ok,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Ok,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            Exit::Io
        }
    }
}

/// Prints the man page (roff) on stdout: the top page, then one section per
/// subcommand.
pub fn man(_args: &ManArgs) -> Exit {
    let mut cmd = Cli::command();
    // Built, each subcommand is named `secret-broker-VERB` in its page.
    cmd.build();
    let mut out = Vec::new();
    let rendered = clap_mangen::Man::new(cmd.clone())
        .render(&mut out)
        .and_then(|()| {
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                clap_mangen::Man::new(sub.clone()).render(&mut out)?;
            }
            Ok(())
        });
    match rendered {
        Ok(()) => write_stdout(&out),
        Err(e) => {
            eprintln!("error: cannot render the man page: {e}");
            Exit::Software
        }
    }
}
