//! `secret-broker policy test [--policies DIR] TESTS... [--junit FILE]`: run
//! test cases against the policies, one `PASS`/`FAIL` line each, closing
//! with `N passed, M failed`; exit 1 on any failure, or if nothing was
//! tested. TESTS are files or directories (searched recursively for
//! `*.yaml`, `*.yml`, `*.json`; Cedar entities files found there, which
//! test cases may name, are skipped). Warnings about the policy set are
//! printed, and with `--deny-warnings` fail the run before any case.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{
    DenyWarningsArg, Exit, PolicyCliError, PolicyDirArg, fail, load_warned, principals, read,
};
use crate::authz::testfile::{self, Outcome, TestCase, TestFileError};
use crate::identity::PrincipalSpec;

/// Arguments of `policy test`.
#[derive(Debug, Args)]
#[command(after_help = super::BROKER_ONLY)]
pub struct TestArgs {
    #[command(flatten)]
    dir: PolicyDirArg,
    #[command(flatten)]
    warnings: DenyWarningsArg,
    /// Test files or directories.
    #[arg(value_name = "TESTS", required = true)]
    tests: Vec<PathBuf>,
    /// The broker config whose principals `principal:` names (a file's own
    /// `config:` wins).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Also write the results as JUnit XML.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
}

const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// A file to run, and whether it was named on the command line (rather
/// than found in a directory).
type Found = (PathBuf, bool);

/// The test files named by `roots`: files as given, directories searched
/// recursively (sorted, dotfiles skipped).
fn discover(roots: &[PathBuf]) -> Result<Vec<Found>, PolicyCliError> {
    let mut out = Vec::new();
    for root in roots {
        if root.is_dir() {
            walk(root, &mut out)?;
        } else if root.is_file() {
            out.push((root.clone(), true));
        } else {
            return Err(PolicyCliError::Io {
                op: "read",
                path: root.display().to_string(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<Found>) -> Result<(), PolicyCliError> {
    let io = |source| PolicyCliError::Io {
        op: "read",
        path: dir.display().to_string(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e))
        {
            out.push((path, false));
        }
    }
    Ok(())
}

/// The results of one file, for the JUnit report.
struct FileResults {
    file: String,
    cases: Vec<(TestCase, Outcome)>,
}

/// Runs `policy test`.
pub fn run(args: &TestArgs) -> Exit {
    let authz = match load_warned(&args.dir.dir, args.warnings.deny_warnings) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let files = match discover(&args.tests) {
        Ok(f) => f,
        Err(e) => return fail(&e),
    };
    let default_specs = match args.config.as_deref().map(principals).transpose() {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let mut configs: HashMap<PathBuf, Vec<PrincipalSpec>> = HashMap::new();
    let mut results = Vec::with_capacity(files.len());
    let (mut passed, mut failed) = (0usize, 0usize);
    for (file, named) in &files {
        let text = match read(file) {
            Ok(t) => t,
            Err(e) => return fail(&e),
        };
        let parsed = match testfile::parse(file, &text) {
            Ok(p) => p,
            // The documented layout: entity files beside the test files
            // that name them. Named on the command line, it is a mistake.
            Err(TestFileError::Entities { .. }) if !named => continue,
            Err(e) => return fail(&PolicyCliError::Usage(e.to_string())),
        };
        let specs = match &parsed.config {
            Some(path) => {
                if !configs.contains_key(path) {
                    match principals(path) {
                        Ok(s) => configs.insert(path.clone(), s),
                        Err(e) => return fail(&e),
                    };
                }
                configs.get(path).map(Vec::as_slice)
            }
            None => default_specs.as_deref(),
        };
        let mut cases = Vec::with_capacity(parsed.cases.len());
        for case in parsed.cases {
            let outcome = testfile::run(&authz, &case, specs);
            if outcome.passed {
                passed += 1;
                outln!("PASS {}", case.name);
            } else {
                failed += 1;
                outln!("FAIL {}: {}", case.name, outcome.reason);
            }
            cases.push((case, outcome));
        }
        results.push(FileResults {
            file: file.display().to_string(),
            cases,
        });
    }
    outln!("{passed} passed, {failed} failed");
    if passed + failed == 0 {
        // A run that tests nothing must not pass (a wrong path, a directory
        // holding only entity files).
        let roots: Vec<String> = args
            .tests
            .iter()
            .map(|t| format!("`{}`", t.display()))
            .collect();
        eprintln!(
            "error: no test cases in {}; a run that tests nothing does not pass",
            roots.join(", ")
        );
        return Exit::Failure;
    }
    if let Some(path) = &args.junit {
        if let Err(source) = std::fs::write(path, junit(&results)) {
            return fail(&PolicyCliError::Io {
                op: "write",
                path: path.display().to_string(),
                source,
            });
        }
    }
    if failed > 0 { Exit::Failure } else { Exit::Ok }
}

/// Escapes text for an XML attribute or element.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry other control characters at all.
            c if c.is_control() && !matches!(c, '\n' | '\t') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A JUnit XML report: one `testsuite` per file, one `testcase` per case.
fn junit(results: &[FileResults]) -> String {
    let total: usize = results.iter().map(|r| r.cases.len()).sum();
    let failures: usize = results
        .iter()
        .flat_map(|r| &r.cases)
        .filter(|(_, o)| !o.passed)
        .count();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"secret-broker policy test\" tests=\"{total}\" failures=\"{failures}\">\n"
    );
    for r in results {
        let fails = r.cases.iter().filter(|(_, o)| !o.passed).count();
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{fails}\">\n",
            xml(&r.file),
            r.cases.len()
        ));
        for (case, outcome) in &r.cases {
            let open = format!(
                "    <testcase name=\"{}\" classname=\"{}\"",
                xml(&case.name),
                xml(&r.file)
            );
            if outcome.passed {
                out.push_str(&format!("{open}/>\n"));
            } else {
                out.push_str(&format!(
                    "{open}>\n      <failure message=\"{}\"/>\n    </testcase>\n",
                    xml(&outcome.reason)
                ));
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes_markup_and_controls() {
        assert_eq!(xml("a<b>&\"c'\u{1}"), "a&lt;b&gt;&amp;&quot;c&apos; ");
    }
}
