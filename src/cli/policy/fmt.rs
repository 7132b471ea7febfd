//! `secret-broker policy fmt [--policies DIR] [--check]`: format every
//! `*.cedar` file with Cedar's own formatter (comments kept); `--check`
//! changes nothing and fails if a file would change.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{Exit, PolicyCliError, PolicyDirArg, fail, read};
use crate::authz::policies::POLICY_EXT;

/// Arguments of `policy fmt`.
#[derive(Debug, Args)]
pub struct FmtArgs {
    #[command(flatten)]
    dir: PolicyDirArg,
    /// Change nothing; list the files that are not formatted and exit 1.
    #[arg(long)]
    check: bool,
}

/// The `*.cedar` files of `dir`, sorted, as the broker loads them.
fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyCliError> {
    let io = |source| PolicyCliError::Io {
        op: "read",
        path: dir.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let visible = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.starts_with('.'));
        if visible && path.extension().is_some_and(|e| e == POLICY_EXT) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// `text` as Cedar's formatter writes it.
pub(crate) fn format(text: &str) -> Result<String, String> {
    let config = cedar_policy_formatter::Config {
        line_width: 80,
        indent_width: 2,
    };
    cedar_policy_formatter::policies_str_to_pretty(text, &config).map_err(|e| {
        let mut msg = e.to_string();
        for cause in e.chain().skip(1) {
            msg.push_str(&format!(": {cause}"));
        }
        msg
    })
}

/// Runs `policy fmt`: 0 formatted (or, with `--check`, already formatted),
/// 1 unformatted files (`--check`) or files that do not parse, 2 I/O.
pub fn run(args: &FmtArgs) -> Exit {
    let files = match policy_files(&args.dir.dir) {
        Ok(f) => f,
        Err(e) => {
            let code = fail(&e);
            eprintln!("{}", super::policies_hint(&args.dir.dir));
            return code;
        }
    };
    let (mut unformatted, mut broken) = (0usize, 0usize);
    for path in &files {
        let text = match read(path) {
            Ok(t) => t,
            Err(e) => return fail(&e),
        };
        let formatted = match format(&text) {
            Ok(f) => f,
            Err(message) => {
                eprintln!("{}: cannot format: {message}", path.display());
                broken += 1;
                continue;
            }
        };
        if formatted == text {
            continue;
        }
        unformatted += 1;
        if args.check {
            outln!(
                "{}: not formatted (run `secret-broker policy fmt`)",
                path.display()
            );
        } else if let Err(source) = std::fs::write(path, formatted) {
            return fail(&PolicyCliError::Io {
                op: "write",
                path: path.display().to_string(),
                source,
            });
        } else {
            outln!("formatted {}", path.display());
        }
    }
    if broken > 0 || (args.check && unformatted > 0) {
        eprintln!(
            "{} of {} file(s) not formatted{}",
            unformatted + broken,
            files.len(),
            if broken > 0 {
                ", some do not parse"
            } else {
                ""
            }
        );
        return Exit::Failure;
    }
    if args.check {
        outln!("{} file(s) already formatted", files.len());
    }
    Exit::Ok
}
