//! Unit and property tests of the test-file parser and runner.

use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::authz::shipped_sources;

fn authz() -> Authorizer {
    let (schema, policies) = shipped_sources();
    Authorizer::from_sources(schema, policies).unwrap()
}

fn parse_yaml(text: &str) -> TestFile {
    parse(Path::new("dir/t.yaml"), text).unwrap()
}

fn only_case(text: &str) -> TestCase {
    let mut f = parse_yaml(text);
    assert_eq!(f.cases.len(), 1);
    f.cases.remove(0)
}

fn broker(case: &TestCase) -> &BrokerCase {
    match &case.spec {
        CaseSpec::Broker(b) => b,
        other => panic!("not a broker case: {other:?}"),
    }
}

fn invalid(case: &TestCase) -> &str {
    match &case.spec {
        CaseSpec::Invalid(reason) => reason,
        other => panic!("not invalid: {other:?}"),
    }
}

#[test]
fn parses_the_broker_form() {
    let f = parse_yaml(
        r#"
config: broker.toml
cases:
  - name: platform writes
    principal: provisioner
    action: write
    path: acme/t-42/db
    labels: {team: db}
    transport: tls
    expect: allow
    policies: [platform-provision]
  - task: {scope: acme/t-42}
    action: list
    scope: acme/t-42/
    peer_uid: 7
    expect: deny
"#,
    );
    assert_eq!(f.config.as_deref(), Some(Path::new("dir/broker.toml")));
    assert_eq!(f.cases[0].name, "platform writes");
    let b = broker(&f.cases[0]);
    assert_eq!(b.caller, Caller::Configured("provisioner".into()));
    assert_eq!(b.action, Action::Write);
    assert_eq!(
        b.target,
        Target::Secret(SecretPath::parse("acme/t-42/db").unwrap())
    );
    assert_eq!(b.labels.as_ref().unwrap()["team"], "db");
    assert_eq!(b.transport, Transport::Tls);
    assert_eq!(b.expect, Expect::Allow);
    assert_eq!(
        b.policies.as_deref(),
        Some(&["platform-provision".into()][..])
    );

    // Unnamed cases are named after their file and index.
    assert_eq!(f.cases[1].name, "dir/t.yaml#1");
    let b = broker(&f.cases[1]);
    assert_eq!(
        b.target,
        Target::Scope(ScopePath::parse("acme/t-42").unwrap())
    );
    assert_eq!(b.peer, (Some(7), None, None));
    match &b.caller {
        Caller::Inline(p) => {
            assert_eq!(p.kind, PrincipalKind::Task);
            assert_eq!(p.scope.as_ref().unwrap().as_str(), "acme/t-42");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bare_list_of_cases_is_a_file() {
    let f = parse_yaml("- {component: {roles: [platform]}, action: list, path: /, expect: allow}");
    assert_eq!(f.config, None);
    assert_eq!(broker(&f.cases[0]).target, Target::Scope(ScopePath::root()));
}

#[test]
fn nonsense_cases_are_invalid_not_skipped() {
    let cases = [
        (
            "{principal: p, task: {scope: a}, action: read, path: a/b, expect: allow}",
            "exactly one of `principal`",
        ),
        (
            "{principal: p, action: read, path: a/b}",
            "`expect` is missing",
        ),
        (
            "{principal: p, action: peek, path: a/b, expect: allow}",
            "`peek` is not an action",
        ),
        (
            "{principal: p, action: list, path: a/b, expect: allow}",
            "`list` takes a scope",
        ),
        (
            "{principal: p, action: read, scope: a, expect: allow}",
            "`read` takes a secret path",
        ),
        (
            "{principal: p, action: read, path: a/../b, expect: allow}",
            "path `a/../b`",
        ),
        (
            "{principal: p, action: delete, path: a/b, labels: {k: v}, expect: deny}",
            "only on `write`",
        ),
        (
            "{principal: p, action: read, path: a/b, transport: tls, peer_uid: 1, expect: deny}",
            "only on the unix transport",
        ),
        (
            "{principal: p, action: read, path: a/b, transport: carrier-pigeon, expect: deny}",
            "`carrier-pigeon`",
        ),
        (
            "{task: {scope: a/}, action: read, path: a/b, expect: deny}",
            "task scope `a/`",
        ),
    ];
    for (text, want) in cases {
        let case = only_case(&format!("- {text}"));
        let reason = invalid(&case);
        assert!(reason.contains(want), "{text}: {reason}");
        // An invalid case fails when run.
        assert!(!run(&authz(), &case, None).passed);
    }
}

#[test]
fn unknown_keys_and_bad_yaml_refuse_the_file() {
    for text in [
        "cases: [{principal: p, action: read, path: a/b, expected: allow}]",
        "cases: [{principal: p, action: read, path: a/b, expect: maybe}]",
        "colour: blue\ncases: []",
        "cases: [",
    ] {
        let err = parse(Path::new("t.yaml"), text).unwrap_err().to_string();
        assert!(err.starts_with("`t.yaml` is not a test file: "), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}

#[test]
fn cedar_json_is_recognised_and_named() {
    let f = parse(
        Path::new("x/c.json"),
        r#"[{"name": "n", "request": {}, "entities": [], "decision": "deny"},
            {"request": {}, "entities": [], "decision": "deny"}]"#,
    )
    .unwrap();
    assert_eq!(f.cases[0].name, "n");
    assert_eq!(f.cases[1].name, "x/c.json#1");
    assert!(matches!(&f.cases[0].spec, CaseSpec::Cedar(c) if c.dir == Path::new("x")));
}

#[test]
fn the_runner_fails_a_wrong_expectation_and_passes_a_right_one() {
    let a = authz();
    let right = only_case(
        "- {component: {roles: [platform]}, action: read, path: a/b, expect: deny, policies: [platform-never-reads]}",
    );
    let o = run(&a, &right, None);
    assert!(o.passed, "{}", o.reason);

    let wrong =
        only_case("- {component: {roles: [platform]}, action: read, path: a/b, expect: allow}");
    let o = run(&a, &wrong, None);
    assert!(!o.passed);
    assert_eq!(
        o.reason,
        "expected allow, got deny (policies: platform-never-reads)"
    );

    let wrong_policy = only_case(
        "- {task: {scope: a}, action: read, path: a/b, expect: allow, policies: [platform-provision]}",
    );
    let o = run(&a, &wrong_policy, None);
    assert_eq!(
        o.reason,
        "expected allow by [platform-provision], got allow by [task-read-own-scope]"
    );

    let default_deny = only_case("- {task: {scope: a}, action: read, path: b/c, expect: allow}");
    assert_eq!(
        run(&a, &default_deny, None).reason,
        "expected allow, got deny (policies: none)"
    );
}

#[test]
fn configured_principals_need_a_config() {
    let a = authz();
    let case = only_case("- {principal: provisioner, action: write, path: a/b, expect: allow}");
    assert!(
        run(&a, &case, None)
            .reason
            .contains("needs a broker config")
    );
    let spec = PrincipalSpec {
        principal: Principal {
            name: "provisioner".into(),
            kind: PrincipalKind::Component,
            roles: vec!["platform".into()],
            scope: None,
        },
        uid: Some(1001),
        gid: None,
        token: None,
        cert: None,
    };
    let specs = [spec];
    assert!(run(&a, &case, Some(&specs)).passed);
    let (_, peer) = caller(broker(&case), Some(&specs)).unwrap();
    assert_eq!(peer.map(|p| p.uid), Some(1001));
    let other = only_case("- {principal: nobody, action: write, path: a/b, expect: allow}");
    assert!(
        run(&a, &other, Some(&specs))
            .reason
            .contains("no principal `nobody`")
    );
}

fn cedar_case(decision: &str, reason: &str, errors: &str) -> TestCase {
    let text = format!(
        r#"[{{"request": {{"principal": "SecretBroker::Component::\"p\"",
              "action": "SecretBroker::Action::\"write\"",
              "resource": "SecretBroker::Secret::\"a/b\"",
              "context": {{"transport": "unix", "request_id": "r"}}}},
            "entities": [{{"uid": {{"type": "SecretBroker::Component", "id": "p"}}, "attrs": {{}},
                           "parents": [{{"type": "SecretBroker::Role", "id": "platform"}}]}},
                         {{"uid": {{"type": "SecretBroker::Secret", "id": "a/b"}}, "attrs": {{"name": "b"}}, "parents": []}}],
            "decision": "{decision}", "reason": [{reason}]{errors}}}]"#
    );
    parse(Path::new("c.json"), &text).unwrap().cases.remove(0)
}

#[test]
fn cedar_cases_check_decision_reasons_and_errors() {
    let a = authz();
    let ok = run(
        &a,
        &cedar_case("allow", r#""platform-provision""#, r#", "num_errors": 0"#),
        None,
    );
    assert!(ok.passed, "{}", ok.reason);
    let legacy = run(
        &a,
        &cedar_case("allow", "", r#", "has_error": false"#),
        None,
    );
    assert!(legacy.passed, "{}", legacy.reason);

    let wrong = run(&a, &cedar_case("deny", "", ""), None);
    assert_eq!(
        wrong.reason,
        "expected deny, got allow (policies: platform-provision)"
    );
    let missing = run(&a, &cedar_case("allow", r#""policy0""#, ""), None);
    assert!(
        missing.reason.starts_with("missing reason(s): `policy0`"),
        "{}",
        missing.reason
    );
    let errors = run(&a, &cedar_case("allow", "", r#", "num_errors": 1"#), None);
    assert_eq!(errors.reason, "expected 1 error(s), got 0");
}

#[test]
fn cedar_cases_refuse_requests_the_schema_does_not_allow() {
    let a = authz();
    let text = r#"[{"request": {"principal": "SecretBroker::Component::\"p\"",
        "action": "SecretBroker::Action::\"list\"", "resource": "SecretBroker::Secret::\"a/b\"",
        "context": {"transport": "unix", "request_id": "r"}},
        "entities": [], "decision": "deny", "reason": [], "num_errors": 0}]"#;
    let case = parse(Path::new("c.json"), text).unwrap().cases.remove(0);
    let o = run(&a, &case, None);
    assert!(!o.passed);
    assert!(o.reason.starts_with("request: "), "{}", o.reason);
}

fn segment() -> impl Strategy<Value = String> {
    // Few distinct values so prefixes and equal segments are common.
    prop::sample::select(vec!["acme", "t-4", "t-42", "t-4.2", "tasks", "a"]).prop_map(str::to_owned)
}

fn scope() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..4).prop_map(|s| s.join("/"))
}

proptest! {
    #[test]
    fn parsing_never_panics(text in ".{0,200}") {
        let _ = parse(Path::new("t.yaml"), &text);
        let _ = parse(Path::new("t.json"), &text);
    }

    #[test]
    fn broker_cases_round_trip(
        scope in scope(),
        name in segment(),
        action in prop::sample::select(vec!["read", "write", "delete"]),
        allow in any::<bool>(),
        tls in any::<bool>(),
    ) {
        let path = format!("{scope}/{name}");
        let case = serde_json::json!([{
            "name": "generated",
            "task": {"scope": scope},
            "action": action,
            "path": path,
            "transport": if tls { "tls" } else { "unix" },
            "expect": if allow { "allow" } else { "deny" },
        }]);
        let text = serde_yaml_ng::to_string(&case).unwrap();
        let file = parse(Path::new("t.yaml"), &text).unwrap();
        let b = broker(&file.cases[0]);
        prop_assert_eq!(b.action.as_str(), action);
        prop_assert_eq!(&b.target, &Target::Secret(SecretPath::parse(&path).unwrap()));
        prop_assert_eq!(b.transport == Transport::Tls, tls);
        prop_assert_eq!(b.expect == Expect::Allow, allow);
    }

    /// Through the runner, the shipped policy lets a task read exactly the
    /// paths its scope segment-wise contains (prefix confusion included).
    #[test]
    fn task_reads_match_scope_containment(own in scope(), other in scope(), name in segment()) {
        let path = format!("{other}/{name}");
        let inside = SecretPath::parse(&path).unwrap().is_within(&ScopePath::parse(&own).unwrap());
        let text = format!(
            "- {{task: {{scope: '{own}'}}, action: read, path: '{path}', expect: {}}}",
            if inside { "allow" } else { "deny" }
        );
        let case = parse(Path::new("t.yaml"), &text).unwrap().cases.remove(0);
        let o = run(&authz(), &case, None);
        prop_assert!(o.passed, "{}", o.reason);
    }
}
