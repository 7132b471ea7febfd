//! End-to-end tests of `secret-broker policy …` on the shipped policies and
//! on fixture policy dirs, deliberately broken ones included, running the
//! real binary from the repository root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_secret-broker");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const FIXTURES: &str = "tests/fixtures/policies";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn policy(args: &[&str]) -> Run {
    policy_env(args, &[])
}

fn policy_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(BIN)
        .current_dir(ROOT)
        .arg("policy")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

/// The closing `N passed, M failed` line, parsed.
fn tally(stdout: &str) -> (usize, usize) {
    let last = stdout.lines().last().unwrap_or_default();
    let nums: Vec<usize> = last
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(
        last,
        format!("{} passed, {} failed", nums[0], nums[1]),
        "{stdout}"
    );
    (nums[0], nums[1])
}

/// 1-based line of `needle` in a repository file.
fn line_of(file: &str, needle: &str) -> usize {
    let text = std::fs::read_to_string(Path::new(ROOT).join(file)).unwrap();
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn validate_accepts_the_shipped_and_valid_policies() {
    for dir in [
        "policies",
        &fixture("valid"),
        "policies/examples/restricted-labels",
        "policies/examples/workspace-roles",
    ] {
        let r = policy(&["validate", "--policies", dir]);
        assert_eq!(r.code, 0, "{dir}: {}", r.stderr);
        assert!(
            r.stdout.contains("policies valid against the schema"),
            "{}",
            r.stdout
        );
    }
    // `policies` is the default directory.
    assert_eq!(policy(&["validate"]).code, 0);
}

#[test]
fn validate_reports_a_syntax_error_like_a_compiler() {
    let r = policy(&["validate", "--policies", &fixture("syntax-error")]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let file = format!("{FIXTURES}/syntax-error/broker.cedar");
    let mut lines = r.stderr.lines();
    let first = lines.next().unwrap();
    assert!(
        first.starts_with(&format!("{file}:5:3: error: unexpected token `action`")),
        "{}",
        r.stderr
    );
    // The offending line, then a caret under column 3.
    assert_eq!(
        lines.next().unwrap().trim(),
        r#"action == SecretBroker::Action::"list","#
    );
    assert_eq!(lines.next().unwrap(), "      ^");
}

#[test]
fn validate_reports_a_schema_violation_with_its_location() {
    let r = policy(&["validate", "--policies", &fixture("schema-violation")]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let file = format!("{FIXTURES}/schema-violation/broker.cedar");
    assert!(
        r.stderr.contains(&format!("{file}:8:8: error: ")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("attribute `owner`"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("when { resource.owner == principal };\n           ^"),
        "{}",
        r.stderr
    );
}

#[test]
fn validate_exit_codes_for_io_and_usage() {
    let r = policy(&["validate", "--policies", "no/such/dir"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("no/such/dir"), "{}", r.stderr);
    // Run outside the repository (no `policies/` here): a hint to say where.
    let elsewhere = tempfile::tempdir().unwrap();
    for verb in ["validate", "fmt"] {
        let out = Command::new(BIN)
            .current_dir(elsewhere.path())
            .args(["policy", verb])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{verb}: {err}");
        assert!(err.contains("--policies DIR"), "{verb}: {err}");
    }
    assert_eq!(policy(&["validate", "--bogus"]).code, 2);
    assert_eq!(policy(&["test"]).code, 2, "TESTS are required");
}

#[test]
fn the_shipped_tests_pass() {
    let junit = tempfile::NamedTempFile::new().unwrap();
    let r = policy(&[
        "test",
        "policies/tests/",
        "--junit",
        junit.path().to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let (passed, failed) = tally(&r.stdout);
    assert!(passed >= 30, "{}", r.stdout);
    assert_eq!(failed, 0);
    assert!(
        r.stdout
            .contains("PASS prefix confusion, t-4 cannot read t-42\n")
    );
    assert!(
        r.stdout
            .contains("PASS cedar format: a task reads in its scope\n")
    );
    let xml = std::fs::read_to_string(junit.path()).unwrap();
    assert!(
        xml.contains(&format!("tests=\"{passed}\" failures=\"0\"")),
        "{xml}"
    );
}

#[test]
fn the_examples_tests_pass_with_their_policies() {
    for ex in ["restricted-labels", "workspace-roles"] {
        let dir = format!("policies/examples/{ex}");
        let r = policy(&["test", "--policies", &dir, &format!("{dir}/tests")]);
        assert_eq!(r.code, 0, "{ex}: {}{}", r.stdout, r.stderr);
        assert_eq!(tally(&r.stdout).1, 0);
    }
}

#[test]
fn example_copies_of_the_shipped_policy_are_current() {
    for ex in ["restricted-labels", "workspace-roles"] {
        for file in ["broker.cedar", "schema.cedarschema"] {
            let shipped =
                std::fs::read_to_string(Path::new(ROOT).join("policies").join(file)).unwrap();
            let copy = std::fs::read_to_string(
                Path::new(ROOT)
                    .join("policies/examples")
                    .join(ex)
                    .join(file),
            )
            .unwrap();
            assert_eq!(shipped, copy, "policies/examples/{ex}/{file} is stale");
        }
    }
}

#[test]
fn the_runner_is_checked_both_ways() {
    let valid = fixture("valid");
    let right = policy(&["test", "--policies", &valid, &fixture("tests/right.yaml")]);
    assert_eq!(right.code, 0, "{}", right.stdout);
    assert_eq!(tally(&right.stdout), (2, 0));

    let wrong = policy(&["test", "--policies", &valid, &fixture("tests/wrong.yaml")]);
    assert_eq!(wrong.code, 1, "{}", wrong.stdout);
    assert_eq!(tally(&wrong.stdout), (1, 1));
    assert!(
        wrong.stdout.contains(
            "FAIL wrong platform reads: expected allow, got deny (policies: platform-never-reads)\n"
        ),
        "{}",
        wrong.stdout
    );

    // A directory is searched recursively; one failure fails the run.
    let both = policy(&["test", "--policies", &valid, &fixture("tests")]);
    assert_eq!(both.code, 1);
    assert_eq!(tally(&both.stdout), (3, 1));
}

#[test]
fn test_fails_on_a_policy_that_lets_the_platform_read() {
    let junit = tempfile::NamedTempFile::new().unwrap();
    let r = policy(&[
        "test",
        "--policies",
        &fixture("platform-reads"),
        "policies/tests",
        "--junit",
        junit.path().to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains(
            "FAIL platform never reads, not even what it wrote: expected deny, got allow (policies: platform-debug-read)\n"
        ),
        "{}",
        r.stdout
    );
    let (_, failed) = tally(&r.stdout);
    assert!(failed > 0);
    let xml = std::fs::read_to_string(junit.path()).unwrap();
    assert!(xml.contains(&format!("failures=\"{failed}\"")), "{xml}");
    assert!(
        xml.contains(
            "<failure message=\"expected deny, got allow (policies: platform-debug-read)\"/>"
        ),
        "{xml}"
    );
}

#[test]
fn test_refuses_a_malformed_file_and_invalid_policies() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "cases: [{principal: p, action: read, path: a/b, expected: allow}]",
    )
    .unwrap();
    // A bad case fails on its own, naming the key (it was a whole-file
    // error, exit 2).
    let r = policy(&["test", bad.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(tally(&r.stdout), (0, 1));
    assert!(
        r.stdout.contains("unknown field `expected`"),
        "{}",
        r.stdout
    );
    // A file that is no test file at all is still refused as a whole.
    std::fs::write(&bad, "colour: blue\ncases: []").unwrap();
    let r = policy(&["test", bad.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("is not a test file"), "{}", r.stderr);
    assert!(
        r.stderr.contains("expected the broker's form"),
        "{}",
        r.stderr
    );

    let r = policy(&[
        "test",
        "--policies",
        &fixture("syntax-error"),
        "policies/tests",
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("broker.cedar:5:3:"), "{}", r.stderr);
}

fn cedar_tests(name: &str) -> String {
    fixture(&format!("cedar-tests/{name}"))
}

#[test]
fn cedar_format_cases_cannot_pass_by_accident() {
    // `reasons` for `reason`: were the key dropped, the case would pass.
    let r = policy(&["test", &cedar_tests("misspelled.json")]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(tally(&r.stdout), (1, 1));
    assert!(
        r.stdout
            .contains("FAIL misspelled reason key: unknown key `reasons`; a cedar case has"),
        "{}",
        r.stdout
    );

    // A case without `request` beside a good one: the good one still runs.
    let r = policy(&["test", &cedar_tests("missing-request.json")]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(tally(&r.stdout), (1, 1));
    assert!(
        r.stdout.contains("PASS a task reads in its scope\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("FAIL no request: `request` is missing"),
        "{}",
        r.stdout
    );

    // Every field cedar requires is required here too.
    let r = policy(&["test", &cedar_tests("missing-fields.json")]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(tally(&r.stdout), (0, 4));
    for want in [
        "FAIL no reason: `reason` is missing",
        "FAIL no num_errors: `num_errors` is missing",
        "FAIL no context: `request.context` is missing",
        "FAIL legacy has_error: unknown key `has_error`",
    ] {
        assert!(r.stdout.contains(want), "{want}: {}", r.stdout);
    }
}

#[test]
fn a_tests_folder_may_hold_entity_files() {
    // The documented layout: cases naming `entities.json` beside them.
    let r = policy(&["test", &cedar_tests("layout")]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(tally(&r.stdout), (3, 0));
    assert!(!r.stdout.contains("entities.json"), "{}", r.stdout);

    // Named on the command line, an entities file is a mistake, said so.
    let r = policy(&["test", &cedar_tests("layout/entities.json")]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("is a cedar entities file (a JSON list of entities with `uid`), not a test file; expected the broker's form"),
        "{}",
        r.stderr
    );

    // A run that finds no case does not pass.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("entities.json"), "[]").unwrap();
    let r = policy(&["test", empty.path().to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(tally(&r.stdout), (0, 0));
    assert!(r.stderr.contains("no test cases in"), "{}", r.stderr);
}

#[test]
fn warnings_are_reported_and_fatal_on_request() {
    let dir = fixture("warning");
    let file = format!("{dir}/tasks-never-list-secrets.cedar");
    let line = line_of(&file, "@id(\"tasks-never-list-secrets\")");
    let at = format!(
        "{file}:{line}:1: warning: for policy `tasks-never-list-secrets`, policy is impossible"
    );

    let r = policy(&["validate", "--policies", &dir]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains(&at), "{}", r.stderr);
    assert!(
        r.stderr.contains("2 warning(s); the broker loads this set"),
        "{}",
        r.stderr
    );
    let r = policy(&["validate", "--policies", &dir, "--deny-warnings"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains(&at), "{}", r.stderr);
    assert!(
        r.stderr.contains("`--deny-warnings` makes them errors"),
        "{}",
        r.stderr
    );

    let r = policy(&["test", "--policies", &dir, "policies/tests"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(tally(&r.stdout).1, 0);
    assert!(r.stderr.contains(&at), "{}", r.stderr);
    // As `cedar run-tests` does, but before any case runs.
    let r = policy(&[
        "test",
        "--policies",
        &dir,
        "policies/tests",
        "--deny-warnings",
    ]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("PASS"), "{}", r.stdout);

    // The shipped policies have none.
    for dir in [
        "policies",
        "policies/examples/restricted-labels",
        "policies/examples/workspace-roles",
    ] {
        let r = policy(&["validate", "--policies", dir, "--deny-warnings"]);
        assert_eq!(r.code, 0, "{dir}: {}", r.stderr);
        assert!(!r.stderr.contains("warning"), "{dir}: {}", r.stderr);
    }
}

#[test]
fn cedar_positional_ids_name_id_less_policies() {
    let dir = fixture("no-ids");
    let r = policy(&["test", "--policies", &dir, &cedar_tests("positional.json")]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(tally(&r.stdout), (5, 0));
    // Cedar names an `@id`'d policy by its id, so it has no `policy2`.
    let r = policy(&[
        "test",
        "--policies",
        &dir,
        &cedar_tests("positional-at-id.json"),
    ]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("missing reason(s): `policy2` (got: platform-never-reads)"),
        "{}",
        r.stdout
    );
}

#[test]
fn templates_are_refused_at_their_slot() {
    let file = format!("{}/broker.cedar", fixture("templates"));
    let line = line_of(&file, "principal == ?principal");
    let r = policy(&["validate", "--policies", &fixture("templates")]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("{file}:{line}:16: error: policy templates (`?principal`, `?resource`) are not supported: the broker has no template links")),
        "{}",
        r.stderr
    );
}

#[test]
fn the_tools_say_they_are_broker_only() {
    let r = policy(&["validate", "--policies", &fixture("not-broker")]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let first = r.stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains("schema.cedarschema:1:1: error: not a secret-broker schema: it declares none of the broker's `SecretBroker` entity types")
            && first.contains("for another cedar application use the `cedar` cli"),
        "{}",
        r.stderr
    );
    for args in [
        &["--help"][..],
        &["validate", "--help"],
        &["test", "--help"],
        &["explain", "--help"],
    ] {
        let r = policy(args);
        assert_eq!(r.code, 0);
        assert!(
            r.stdout
                .contains("Broker-only: these commands check a secret-broker policy set"),
            "{args:?}: {}",
            r.stdout
        );
    }
}

#[test]
fn explain_names_the_deciding_policy_and_its_line() {
    let r = policy(&[
        "explain",
        "--config",
        "policies/tests/broker.toml",
        "--principal",
        "provisioner",
        "--action",
        "read",
        "--resource",
        "acme/tasks/t-42/db",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line = line_of("policies/broker.cedar", r#"@id("platform-never-reads")"#);
    assert!(r.stdout.starts_with("decision: deny\n"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!(
            "  forbid `platform-never-reads` at policies/broker.cedar:{line}\n"
        )),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("errors: none"), "{}", r.stdout);

    let r = policy(&[
        "explain",
        "--principal",
        "Task:acme/tasks/t-42",
        "--action",
        "list",
        "--resource",
        "acme/tasks/t-42/",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line = line_of("policies/broker.cedar", r#"@id("task-read-own-scope")"#);
    assert!(r.stdout.starts_with("decision: allow\n"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains(r#"resource SecretBroker::Scope::"acme/tasks/t-42""#),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!(
            "  permit `task-read-own-scope` at policies/broker.cedar:{line}\n"
        )),
        "{}",
        r.stdout
    );

    let r = policy(&[
        "explain",
        "--principal",
        "Component:",
        "--action",
        "write",
        "--resource",
        "a/b",
    ]);
    assert!(
        r.stdout.contains("no policy applies, so the default deny"),
        "{}",
        r.stdout
    );
}

/// `explain --json`: one JSON document a script can read, with the same
/// facts as the text.
#[test]
fn explain_json_for_scripts() {
    let r = policy(&[
        "explain",
        "--config",
        "policies/tests/broker.toml",
        "--principal",
        "provisioner",
        "--action",
        "read",
        "--resource",
        "acme/tasks/t-42/db",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.ends_with("}\n") && r.stdout.lines().count() == 1,
        "{}",
        r.stdout
    );
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["caller"]["name"], "provisioner");
    assert_eq!(v["caller"]["type"], "Component");
    assert_eq!(v["determined_by"][0]["effect"], "forbid");
    assert_eq!(v["determined_by"][0]["id"], "platform-never-reads");
    let line = line_of("policies/broker.cedar", r#"@id("platform-never-reads")"#);
    assert_eq!(
        v["determined_by"][0]["at"],
        format!("policies/broker.cedar:{line}")
    );
    assert_eq!(v["errors"], serde_json::json!([]));
}

#[test]
fn explain_refuses_bad_arguments() {
    let cases: [&[&str]; 4] = [
        &[
            "--principal",
            "provisioner",
            "--action",
            "read",
            "--resource",
            "a/b",
        ],
        &[
            "--principal",
            "Task:a",
            "--action",
            "peek",
            "--resource",
            "a/b",
        ],
        &[
            "--principal",
            "Task:a",
            "--action",
            "read",
            "--resource",
            "a/../b",
        ],
        &[
            "--config",
            "policies/tests/broker.toml",
            "--principal",
            "nobody",
            "--action",
            "read",
            "--resource",
            "a/b",
        ],
    ];
    for args in cases {
        let mut all = vec!["explain"];
        all.extend_from_slice(args);
        let r = policy(&all);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stdout);
        assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    }
}

#[test]
fn explain_takes_extra_entities() {
    let dir = tempfile::tempdir().unwrap();
    let entities = dir.path().join("e.json");
    std::fs::write(&entities, r#"[{"uid": {"type": "SecretBroker::Role", "id": "auditors"}, "attrs": {}, "parents": []}]"#).unwrap();
    let r = policy(&[
        "explain",
        "--principal",
        "Component:platform",
        "--action",
        "write",
        "--resource",
        "a/b",
        "--entities",
        entities.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("decision: allow\n"), "{}", r.stdout);
}

#[test]
fn fmt_check_passes_on_shipped_policies_and_fails_on_unformatted() {
    for dir in [
        "policies",
        "policies/examples/restricted-labels",
        "policies/examples/workspace-roles",
    ] {
        let r = policy(&["fmt", "--check", "--policies", dir]);
        assert_eq!(r.code, 0, "{dir}: {}{}", r.stdout, r.stderr);
        // Nothing was formatted: it says so.
        assert!(r.stdout.contains("already formatted"), "{}", r.stdout);
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ugly.cedar");
    std::fs::write(&file, "permit(principal,action,resource);\n").unwrap();
    let d = dir.path().to_str().unwrap();
    let r = policy(&["fmt", "--check", "--policies", d]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains(&format!("{}: not formatted", file.display())),
        "{}",
        r.stdout
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "permit(principal,action,resource);\n"
    );

    let r = policy(&["fmt", "--policies", d]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "permit (principal, action, resource);\n"
    );
    assert_eq!(policy(&["fmt", "--check", "--policies", d]).code, 0);

    std::fs::write(&file, "permit(principal,").unwrap();
    let r = policy(&["fmt", "--check", "--policies", d]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("cannot format"), "{}", r.stderr);
}

#[test]
fn prove_holds_for_the_shipped_policies_and_examples() {
    for dir in [
        "policies",
        "policies/examples/restricted-labels",
        "policies/examples/workspace-roles",
    ] {
        let r = policy(&["prove", "--policies", dir]);
        assert_eq!(r.code, 0, "{dir}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stdout.contains("PROVED platform-never-reads: "),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout.contains("PROVED task-reads-own-scope: "),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout.contains("PROVED upload-own-scope-only: "),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout.ends_with("3 proved, 0 disproved\n"),
            "{}",
            r.stdout
        );
    }
}

#[test]
fn prove_prints_a_counterexample_when_the_platform_can_read() {
    let r = policy(&["prove", "--policies", &fixture("platform-reads")]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let s = &r.stdout;
    assert!(s.contains("FAILED platform-never-reads: "), "{s}");
    assert!(
        s.contains("counterexample (allowed by the policies):"),
        "{s}"
    );
    assert!(s.contains(r#"action: SecretBroker::Action::"read""#), "{s}");
    assert!(s.contains(r#"in [SecretBroker::Role::"platform"]"#), "{s}");
    let line = line_of(
        &format!("{FIXTURES}/platform-reads/broker.cedar"),
        r#"@id("platform-debug-read")"#,
    );
    assert!(
        s.contains(&format!(
            "decided allow by: `platform-debug-read` at {FIXTURES}/platform-reads/broker.cedar:{line}"
        )),
        "{s}"
    );
}

#[test]
fn prove_tells_the_two_properties_apart() {
    let r = policy(&["prove", "--policies", &fixture("task-escapes")]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("PROVED platform-never-reads: "),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("FAILED task-reads-own-scope: "),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(r#"principal: SecretBroker::Task::"#),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("decided allow by: `tasks-read-acme`"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.ends_with("2 proved, 1 disproved\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn prove_catches_a_permit_that_lets_the_platform_upload() {
    let r = policy(&["prove", "--policies", &fixture("upload-escapes")]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let s = &r.stdout;
    assert!(s.contains("PROVED platform-never-reads: "), "{s}");
    assert!(s.contains("PROVED task-reads-own-scope: "), "{s}");
    assert!(s.contains("FAILED upload-own-scope-only: "), "{s}");
    assert!(
        s.contains(r#"action: SecretBroker::Action::"upload""#),
        "{s}"
    );
    assert!(s.contains("decided allow by: `platform-uploads`"), "{s}");
    assert!(s.ends_with("2 proved, 1 disproved\n"), "{s}");
}

#[test]
fn prove_without_a_solver_says_exactly_what_failed() {
    let r = policy_env(&["prove"], &[("CVC5", "/nonexistent/cvc5")]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .starts_with("error: cannot start the `cvc5` solver (`/nonexistent/cvc5`)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("apt-get install cvc5"), "{}", r.stderr);
}

/// A policy over `context.spiffe_id` (a TLS writer's certificate id) is
/// testable: broker test cases take `spiffe_id`, and `explain` takes
/// `--spiffe-id` (both with the tls transport only).
#[test]
fn tls_writers_spiffe_ids_are_testable_and_explainable() {
    let dir = fixture("spiffe");
    let r = policy(&["test", "--policies", &dir, &format!("{dir}/tests/")]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(tally(&r.stdout), (3, 0), "{}", r.stdout);
    let explain = |id: &str| {
        policy(&[
            "explain",
            "--policies",
            &dir,
            "--principal",
            "Component:platform",
            "--action",
            "write",
            "--resource",
            "acme/x/db",
            "--transport",
            "tls",
            "--spiffe-id",
            id,
        ])
    };
    let r = explain("spiffe://td/ns/platform/sa/provisioner");
    assert!(r.stdout.starts_with("decision: allow"), "{}", r.stdout);
    let r = explain("spiffe://td/ns/platform/sa/other");
    assert!(r.stdout.starts_with("decision: deny"), "{}", r.stdout);
    assert!(
        r.stdout.contains("only-the-provisioner-writes-over-tls"),
        "{}",
        r.stdout
    );
    let r = policy(&[
        "explain",
        "--policies",
        &dir,
        "--principal",
        "Component:platform",
        "--action",
        "write",
        "--resource",
        "acme/x/db",
        "--spiffe-id",
        "spiffe://td/x",
    ]);
    assert_eq!(r.code, 2, "unix has no spiffe id: {}", r.stderr);
}
