//! `secret-broker inject`: adds the broker sidecar to annotated pod
//! templates in Kubernetes manifests (stdin or a file) and prints the result.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;

use clap::Args;

use super::Exit;

/// Arguments of `inject`.
#[derive(Debug, Args)]
pub struct InjectArgs {
    /// The manifests (one or more YAML documents); `-` or absent reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: Option<PathBuf>,
}

/// Runs `inject`.
pub fn run(args: InjectArgs) -> Exit {
    let (name, text) = match args.file.as_deref() {
        None => ("-".to_owned(), read_stdin()),
        Some(p) if p.as_os_str() == "-" => ("-".to_owned(), read_stdin()),
        Some(p) => (p.display().to_string(), std::fs::read_to_string(p)),
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read `{name}`: {e}");
            return Exit::Io;
        }
    };
    match crate::inject::inject_yaml(&text) {
        Ok(out) => match std::io::stdout().lock().write_all(out.as_bytes()) {
            Ok(()) => Exit::Ok,
            Err(e) => {
                eprintln!("error: cannot write the output: {e}");
                Exit::Io
            }
        },
        Err(e) => {
            eprintln!("error: `{name}`: {e}");
            Exit::Failure
        }
    }
}

fn read_stdin() -> std::io::Result<String> {
    let mut s = String::new();
    std::io::stdin().lock().read_to_string(&mut s)?;
    Ok(s)
}
