//! `secret-broker inject`: adds the broker sidecar to annotated pod
//! templates in Kubernetes manifests (stdin, files or directories, as
//! `kubectl apply -f` takes them) and prints the result.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use clap::Args;

use super::Exit;
use crate::inject::InjectOptions;

/// Arguments of `inject`.
#[derive(Debug, Args)]
pub struct InjectArgs {
    /// Manifests (one or more YAML documents each): files, directories (their
    /// `.yaml`, `.yml` and `.json` files, sorted) or `-` for stdin; repeatable.
    /// Absent reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The broker image where a pod sets no `secret-broker.io/image`
    /// [default: the image of this release].
    #[arg(long, value_name = "IMAGE", value_parser = parse_image)]
    image: Option<String>,
}

/// An image reference: non-empty, no whitespace (as the annotation).
pub(super) fn parse_image(s: &str) -> Result<String, String> {
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return Err("is not an image reference (non-empty, no spaces)".into());
    }
    Ok(s.to_owned())
}

/// Runs `inject`.
pub fn run(args: InjectArgs) -> Exit {
    let opts = InjectOptions {
        image: args.image.unwrap_or_else(|| InjectOptions::default().image),
    };
    let mut inputs = Vec::new();
    if args.files.is_empty() {
        inputs.push(PathBuf::from("-"));
    }
    for f in args.files {
        if f.as_os_str() != "-" && f.is_dir() {
            match manifests_in(&f) {
                Ok(found) => inputs.extend(found),
                Err(e) => {
                    eprintln!("error: cannot read the directory `{}`: {e}", f.display());
                    return Exit::Io;
                }
            }
        } else {
            inputs.push(f);
        }
    }
    let mut out = String::new();
    let mut failed = false;
    for input in &inputs {
        let (name, text) = if input.as_os_str() == "-" {
            ("-".to_owned(), read_stdin())
        } else {
            (input.display().to_string(), std::fs::read_to_string(input))
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read `{name}`: {e}");
                return Exit::Io;
            }
        };
        // Every error of every file, so one run shows all there is to fix.
        match crate::inject::inject_stream(&text, &opts) {
            Ok(stream) => {
                for w in &stream.warnings {
                    eprintln!("warning: `{name}`: {w}");
                }
                if !out.is_empty() && !stream.text.is_empty() {
                    out.push_str("---\n");
                }
                out.push_str(&stream.text);
            }
            Err(errors) => {
                failed = true;
                for e in errors {
                    eprintln!("error: `{name}`: {e}");
                }
            }
        }
    }
    if failed {
        return Exit::Failure;
    }
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("error: cannot write the output: {e}");
            Exit::Io
        }
    }
}

/// A directory's manifests, as `kubectl apply -f DIR` picks them (not
/// recursive), in name order so the output is stable.
fn manifests_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if p.is_file() && matches!(ext, "yaml" | "yml" | "json") {
            found.push(p);
        }
    }
    found.sort();
    Ok(found)
}

fn read_stdin() -> std::io::Result<String> {
    let mut s = String::new();
    std::io::stdin().lock().read_to_string(&mut s)?;
    Ok(s)
}
