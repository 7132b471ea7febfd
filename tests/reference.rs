//! `docs/reference.md` keeps up with the code: every error code the API or
//! the CLI can answer, every CLI verb, flag and environment variable, every
//! exit code and every config key the code knows appears in it. The lists
//! come from the code itself (the error code mappings, clap's command tree,
//! the exit code enum, and the config parser's own refusal of an unknown
//! key), so a new one fails here until it is documented.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory as _;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn reference() -> String {
    std::fs::read_to_string(root().join("docs/reference.md")).unwrap()
}

/// Fails listing every item of `want` that `doc` lacks in its documented
/// form (`form(item)`).
fn assert_documented(what: &str, want: &BTreeSet<String>, form: impl Fn(&str) -> String) {
    assert!(!want.is_empty(), "found no {what} in the code");
    let doc = reference();
    let missing: Vec<String> = want
        .iter()
        .map(|w| form(w))
        .filter(|f| !doc.contains(f.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/reference.md does not document these {what}: {missing:?}"
    );
}

/// The string literals a function returns in `file`: the arms of its
/// `match` (`Self::X => "code"`), from `fn name` to the end of its body.
fn returned_literals(file: &str, name: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    let start = text
        .find(&format!("fn {name}("))
        .unwrap_or_else(|| panic!("no `fn {name}` in {file}"));
    let body = &text[start..];
    // The body ends at the first line that closes the function (`    }`).
    let end = body.find("\n    }\n").unwrap_or(body.len());
    body[..end]
        .split("=> \"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_api_error_code_is_documented() {
    let codes = returned_literals("src/api/error.rs", "code");
    assert!(codes.contains("invalid_path") && codes.contains("backend_timeout"));
    assert_documented("API error codes", &codes, |c| format!("| `{c}` |"));
}

#[test]
fn every_cli_error_code_is_documented() {
    let codes = returned_literals("src/cli/client.rs", "code");
    assert!(codes.contains("unreachable") && codes.contains("usage"));
    assert_documented("CLI error codes", &codes, |c| format!("| `{c}` |"));
}

/// Every verb as `secret-broker VERB [SUBVERB]`, every long flag and every
/// environment variable clap knows.
#[test]
fn every_cli_verb_flag_and_env_var_is_documented() {
    let (mut verbs, mut flags, mut envs) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    fn walk(
        cmd: &clap::Command,
        prefix: &str,
        verbs: &mut BTreeSet<String>,
        flags: &mut BTreeSet<String>,
        envs: &mut BTreeSet<String>,
    ) {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                if long != "help" && long != "version" {
                    flags.insert(long.to_owned());
                }
            }
            if let Some(env) = arg.get_env() {
                envs.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            let name = format!("{prefix} {}", sub.get_name());
            verbs.insert(name.clone());
            walk(sub, &name, verbs, flags, envs);
        }
    }
    let cli = secret_broker::cli::Cli::command();
    walk(&cli, "secret-broker", &mut verbs, &mut flags, &mut envs);
    assert!(verbs.contains("secret-broker policy explain"), "{verbs:?}");
    assert_documented("CLI verbs", &verbs, |v| format!("`{v}"));
    assert_documented("CLI flags", &flags, |f| format!("`--{f}"));
    // The variables the client reads by hand, besides clap's.
    let text = std::fs::read_to_string(root().join("src/cli/client.rs")).unwrap();
    for call in ["var(\"", "var_os(\""] {
        for part in text.split(call).skip(1) {
            if let Some(name) = part.split('"').next() {
                envs.insert(name.to_owned());
            }
        }
    }
    assert!(envs.contains("SECRET_BROKER_TOKEN_FILE"), "{envs:?}");
    assert_documented("environment variables", &envs, |e| format!("| `{e}` |"));
}

/// The exit codes of `cli::Exit` (`Name = N,`), each a row of the table.
#[test]
fn every_exit_code_is_documented() {
    let text = std::fs::read_to_string(root().join("src/cli.rs")).unwrap();
    let start = text.find("pub enum Exit {").unwrap();
    let body = &text[start..start + text[start..].find("\n}").unwrap()];
    let codes: BTreeSet<String> = body
        .lines()
        .filter_map(|l| l.trim().strip_suffix(','))
        .filter_map(|l| l.split_once(" = "))
        .map(|(_, n)| n.trim().to_owned())
        .collect();
    assert!(codes.contains("0") && codes.contains("64"), "{codes:?}");
    assert_documented("exit codes", &codes, |c| format!("| `{c}` |"));
}

/// The keys the config parser knows, in the words of its own refusal of
/// an unknown key (`expected one of `a`, `b``).
fn known_keys(table_header: &str) -> Vec<String> {
    let text = format!("{table_header}\nzz_not_a_key = 1\n");
    let err = secret_broker::config::Config::from_toml(&text, "probe.toml", Path::new("/"))
        .expect_err("an unknown key is refused")
        .to_string();
    let expected = err
        .split_once("expected")
        .unwrap_or_else(|| panic!("no list of keys in: {err}"))
        .1;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_config_key_is_documented() {
    let tables = known_keys("");
    assert!(tables.contains(&"limits".to_owned()), "{tables:?}");
    let mut keys = BTreeSet::new();
    for table in tables {
        match table.as_str() {
            "include" => {
                keys.insert(table);
            }
            "principal" => {
                for k in known_keys("[[principal]]") {
                    keys.insert(format!("principal.{k}"));
                }
            }
            t => {
                for k in known_keys(&format!("[{t}]")) {
                    keys.insert(format!("{t}.{k}"));
                }
            }
        }
    }
    assert!(keys.contains("audit.on_failure") && keys.contains("store.vault_url"));
    assert_documented("config keys", &keys, |k| format!("`{k}`"));
}

#[test]
fn the_readme_links_the_reference_and_nothing_outside_the_repo() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains("(docs/reference.md)"));
    for file in ["README.md", "docs/reference.md", "docs/performance.md"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        assert!(
            !text.contains("../shared"),
            "{file} points outside the repo"
        );
    }
}
