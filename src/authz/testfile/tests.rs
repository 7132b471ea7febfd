//! Unit and property tests of the test-file parser and runner.

use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::authz::{PolicySource, shipped_sources};

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
fn a_bad_case_fails_alone_naming_its_field() {
    let f = parse_yaml(
        "cases:\n  - {name: typo, principal: p, action: read, path: a/b, expected: allow}\n  - {name: maybe, principal: p, action: read, path: a/b, expect: maybe}\n  - {name: fine, task: {scope: a}, action: read, path: a/b, expect: allow}",
    );
    assert_eq!(f.cases.len(), 3);
    assert_eq!(f.cases[0].name, "typo");
    assert!(invalid(&f.cases[0]).contains("unknown field `expected`"));
    assert_eq!(f.cases[1].name, "maybe");
    assert_eq!(
        invalid(&f.cases[1]),
        "`expect` is `maybe`; write allow or deny"
    );
    assert!(run(&authz(), &f.cases[2], None).passed);
    let f = parse_yaml("- just a string\n- [1, 2]");
    for case in &f.cases {
        assert!(
            invalid(case).starts_with("a case must be a map"),
            "{case:?}"
        );
    }
}

#[test]
fn unknown_top_level_keys_and_bad_yaml_refuse_the_file() {
    for text in [
        "colour: blue\ncases: []",
        "cases: [",
        "just a string",
        "config: x",
    ] {
        let err = parse(Path::new("t.yaml"), text).unwrap_err().to_string();
        assert!(err.starts_with("`t.yaml` is not a test file: "), "{err}");
        if text != "cases: [" {
            assert!(err.contains("expected the broker's form"), "{err}");
        }
        assert!(!err.contains('\n'), "{err}");
    }
}

#[test]
fn entity_files_are_told_from_test_files() {
    for text in [
        "[]",
        r#"[{"uid": {"type": "SecretBroker::Scope", "id": "a"}, "attrs": {}, "parents": []}]"#,
        r#"[{"uid": {"__entity": {"type": "SecretBroker::Role", "id": "r"}}, "tags": {}}]"#,
    ] {
        let err = parse(Path::new("d/entities.json"), text).unwrap_err();
        assert!(matches!(err, TestFileError::Entities { .. }), "{text}");
        assert!(
            err.to_string().contains("is a cedar entities file"),
            "{err}"
        );
    }
    // A key no entity has makes it a (malformed) test file, never skipped.
    let f = parse(
        Path::new("d/t.json"),
        r#"[{"uid": {"type": "SecretBroker::Scope", "id": "a"}, "decision": "deny"}]"#,
    )
    .unwrap();
    assert!(invalid(&f.cases[0]).contains("unknown key `uid`"));
}

#[test]
fn cedar_json_is_recognised_and_named() {
    let case = r#"{"request": {"principal": "A::\"a\"", "action": "A::\"b\"", "resource": "A::\"c\"",
        "context": {}}, "entities": [], "decision": "deny", "reason": [], "num_errors": 0}"#;
    let named = case.replacen('{', r#"{"name": "n", "#, 1);
    let f = parse(Path::new("x/c.json"), &format!("[{named}, {case}]")).unwrap();
    assert_eq!(f.cases[0].name, "n");
    assert_eq!(f.cases[1].name, "x/c.json#1");
    assert!(matches!(&f.cases[0].spec, CaseSpec::Cedar(c) if c.dir == Path::new("x")));
    assert!(matches!(&f.cases[1].spec, CaseSpec::Cedar(c) if c.num_errors == 0));
}

#[test]
fn cedar_cases_are_strict_and_fail_one_by_one() {
    let good = serde_json::json!({
        "name": "good",
        "request": {"principal": "A::\"a\"", "action": "A::\"b\"", "resource": "A::\"c\"", "context": {}},
        "entities": [], "decision": "deny", "reason": [], "num_errors": 0,
    });
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = good.clone();
        f(&mut c);
        c
    };
    let cases = [
        (
            with(&|c| {
                c["reasons"] = c["reason"].take();
                c.as_object_mut().unwrap().remove("reason");
            }),
            "unknown key `reasons`",
        ),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("reason");
            }),
            "`reason` is missing",
        ),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("num_errors");
            }),
            "`num_errors` is missing",
        ),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("entities");
            }),
            "`entities` is missing",
        ),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("decision");
            }),
            "`decision` is missing",
        ),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("request");
            }),
            "`request` is missing",
        ),
        (
            with(&|c| {
                c["request"].as_object_mut().unwrap().remove("context");
            }),
            "`request.context` is missing",
        ),
        (
            with(&|c| {
                c["request"]["principal"] = serde_json::Value::Null;
            }),
            "`request.principal` is missing",
        ),
        (
            with(&|c| {
                c["request"]["contxt"] = serde_json::json!({});
            }),
            "unknown key `request.contxt`",
        ),
        (
            with(&|c| {
                c["has_error"] = false.into();
            }),
            "`has_error` is from older cedar CLIs",
        ),
        (
            with(&|c| {
                c["decision"] = "Allow".into();
            }),
            "`decision` must be",
        ),
        (
            with(&|c| {
                c["num_errors"] = (-1).into();
            }),
            "`num_errors` must be",
        ),
        (
            with(&|c| {
                c["reason"] = serde_json::json!([1]);
            }),
            "`reason` must be",
        ),
        (
            with(&|c| {
                c["name"] = 7.into();
            }),
            "`name` must be a string",
        ),
    ];
    let list: Vec<serde_json::Value> = std::iter::once(good.clone())
        .chain(cases.iter().map(|(c, _)| c.clone()))
        .collect();
    let f = parse(Path::new("c.json"), &serde_json::to_string(&list).unwrap()).unwrap();
    assert_eq!(f.cases.len(), cases.len() + 1);
    assert!(matches!(f.cases[0].spec, CaseSpec::Cedar(_)));
    for ((_, want), case) in cases.iter().zip(&f.cases[1..]) {
        let reason = invalid(case);
        assert!(reason.contains(want), "{want}: {reason}");
        assert!(!reason.contains('\n'), "{reason}");
    }
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

    let wrong = run(&a, &cedar_case("deny", "", r#", "num_errors": 0"#), None);
    assert_eq!(
        wrong.reason,
        "expected deny, got allow (policies: platform-provision)"
    );
    // Every shipped policy has an `@id`, so Cedar has no `policy0` either.
    let missing = run(
        &a,
        &cedar_case("allow", r#""policy0""#, r#", "num_errors": 0"#),
        None,
    );
    assert!(
        missing.reason.starts_with("missing reason(s): `policy0`"),
        "{}",
        missing.reason
    );
    let errors = run(&a, &cedar_case("allow", "", r#", "num_errors": 1"#), None);
    assert_eq!(errors.reason, "expected 1 error(s), got 0");
    // Older CLIs' `has_error` is refused, not read as "no errors expected".
    let legacy = run(
        &a,
        &cedar_case("allow", "", r#", "has_error": false"#),
        None,
    );
    assert!(legacy.reason.contains("`has_error`"), "{}", legacy.reason);
}

#[test]
fn cedar_positional_ids_name_id_less_policies_in_file_order() {
    let schema = shipped_sources().0;
    let src = |name: &str, text: &str| PolicySource {
        name: format!("dir/{name}"),
        text: text.to_owned(),
    };
    let permit = |action: &str| {
        format!("permit (principal, action == SecretBroker::Action::\"{action}\", resource);\n")
    };
    let a = Authorizer::from_sources(
        schema,
        vec![
            src("a.cedar", &format!("{}{}", permit("read"), permit("write"))),
            src(
                "b.cedar",
                &format!("@id(\"named\")\n{}{}", permit("delete"), permit("list")),
            ),
        ],
    )
    .unwrap();
    let id = |n: &str| cedar::positional_id(&a, n);
    assert_eq!(id("policy0").as_deref(), Some("a.cedar#0"));
    assert_eq!(id("policy1").as_deref(), Some("a.cedar#1"));
    // An `@id`'d policy is named by it in Cedar too.
    assert_eq!(id("policy2"), None);
    assert_eq!(id("policy3").as_deref(), Some("b.cedar#1"));
    for not in [
        "policy4",
        "policy",
        "policy01",
        "policy1x",
        "policy-1",
        "named",
        "a.cedar#0",
    ] {
        assert_eq!(id(not), None, "{not}");
    }
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

/// A replica of `cedar-policy-cli` 4.14.1's test case types (`run_test.rs`:
/// `UncheckedTestCase`, `RequestJSON` and the uid checks of
/// `CheckedTestCaseSeed` before it parses them). The CLI's types are
/// private to its binary crate and the crate is not a dependency, so they
/// are restated here, field for field and attribute for attribute.
mod cedar_cli {
    use serde::Deserialize;
    use serde_json::Value;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct UncheckedTestCase {
        request: RequestJson,
        entities: Value,
        decision: ExpectedDecision,
        reason: Vec<String>,
        num_errors: usize,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct RequestJson {
        #[serde(default)]
        principal: Option<String>,
        #[serde(default)]
        action: Option<String>,
        #[serde(default)]
        resource: Option<String>,
        context: Value,
    }

    #[derive(Deserialize)]
    enum ExpectedDecision {
        #[serde(rename = "allow")]
        Allow,
        #[serde(rename = "deny")]
        Deny,
    }

    /// Whether `cedar run-tests` gets past reading the case's fields.
    pub(super) fn accepts(case: &Value) -> bool {
        serde_json::from_value::<UncheckedTestCase>(case.clone()).is_ok_and(|c| {
            let _ = matches!(c.decision, ExpectedDecision::Allow | ExpectedDecision::Deny);
            c.request.principal.is_some()
                && c.request.action.is_some()
                && c.request.resource.is_some()
        })
    }
}

/// Where we are stricter than `cedar run-tests`, by design: an unknown key
/// in a case or its request, a `name` that is not a string, and (serde
/// accepts a struct as a list of its fields) a case or request written as
/// a JSON list.
fn stricter_than_cedar(case: &serde_json::Value) -> bool {
    const CASE: [&str; 6] = [
        "name",
        "request",
        "entities",
        "decision",
        "reason",
        "num_errors",
    ];
    const REQUEST: [&str; 4] = ["principal", "action", "resource", "context"];
    let Some(obj) = case.as_object() else {
        return true;
    };
    obj.keys().any(|k| !CASE.contains(&k.as_str()))
        || obj.get("name").is_some_and(|n| !n.is_string())
        || obj.get("request").is_some_and(|r| {
            r.as_object()
                .is_none_or(|r| r.keys().any(|k| !REQUEST.contains(&k.as_str())))
        })
}

/// A JSON value for one field: well-formed, of a wrong type, or `null`.
fn field(good: serde_json::Value) -> impl Strategy<Value = Option<serde_json::Value>> {
    use serde_json::json;
    prop_oneof![
        4 => Just(Some(good)),
        1 => Just(None),
        1 => Just(Some(serde_json::Value::Null)),
        1 => prop::sample::select(vec![json!(1), json!(-1), json!(1.5), json!("allow"), json!(["x"]), json!({}), json!(true)]).prop_map(Some),
    ]
}

fn object(fields: Vec<(&'static str, Option<serde_json::Value>)>) -> serde_json::Value {
    serde_json::Value::Object(
        fields
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v?)))
            .collect(),
    )
}

fn cedar_request() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    let fields = (
        field(json!("SecretBroker::Task::\"t\"")),
        field(json!("SecretBroker::Action::\"read\"")),
        field(json!("SecretBroker::Secret::\"a/b\"")),
        field(json!({"transport": "unix", "request_id": "r"})),
        prop::option::weighted(0.1, Just(json!(0))),
    );
    prop_oneof![
        9 => fields.prop_map(|(p, a, r, c, extra)| {
            object(vec![("principal", p), ("action", a), ("resource", r), ("context", c), ("contxt", extra)])
        }),
        1 => Just(json!(["SecretBroker::Task::\"t\"", "SecretBroker::Action::\"read\"", "SecretBroker::Secret::\"a/b\"", {}])),
    ]
}

fn cedar_test_case() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    (
        prop::option::weighted(0.7, prop_oneof![Just(json!("n")), Just(json!(3))]),
        prop::option::weighted(0.9, cedar_request()),
        field(json!([])),
        prop_oneof![4 => field(json!("allow")), 1 => Just(Some(json!("deny"))), 1 => Just(Some(json!("Allow")))],
        field(json!(["p"])),
        field(json!(0)),
        prop::option::weighted(0.1, prop_oneof![Just(json!(["p"])), Just(json!(false))]),
    )
        .prop_map(|(name, request, entities, decision, reason, num_errors, extra)| {
            let extra_key = if extra.as_ref().is_some_and(serde_json::Value::is_boolean) {
                "has_error"
            } else {
                "reasons"
            };
            object(vec![
                ("name", name),
                ("request", request),
                ("entities", entities),
                ("decision", decision),
                ("reason", reason),
                ("num_errors", num_errors),
                (extra_key, extra),
            ])
        })
}

fn segment() -> impl Strategy<Value = String> {
    // Few distinct values so prefixes and equal segments are common.
    prop::sample::select(vec!["acme", "t-4", "t-42", "t-4.2", "tasks", "a"]).prop_map(str::to_owned)
}

fn scope() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..4).prop_map(|s| s.join("/"))
}

proptest! {
    /// Every case whose fields we accept, `cedar run-tests` accepts too,
    /// and the reverse, except where we are stricter on purpose (unknown
    /// keys, a non-string `name`, a list for an object).
    #[test]
    fn cedar_cases_are_read_as_cedar_reads_them(case in cedar_test_case()) {
        let ours = cedar::parse_case(&case, Path::new(".")).is_ok();
        let theirs = cedar_cli::accepts(&case);
        prop_assert_eq!(ours, theirs && !stricter_than_cedar(&case), "{}", case);
        if ours {
            // Accepted on its own, accepted in a file.
            let file = parse(Path::new("c.json"), &serde_json::json!([case]).to_string()).unwrap();
            prop_assert!(matches!(file.cases[0].spec, CaseSpec::Cedar(_)));
        }
    }

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
