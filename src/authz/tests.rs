//! Tests of the authorizer: the default policy's full matrix, a proptest
//! against a plain reference model, bad policy sets, reloads and context.

use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::identity::PrincipalKind;

fn schema() -> PolicySource {
    shipped_sources().0
}

fn src(name: &str, text: &str) -> PolicySource {
    PolicySource {
        name: name.to_owned(),
        text: text.to_owned(),
    }
}

fn shipped() -> Authorizer {
    let (schema, policies) = shipped_sources();
    Authorizer::from_sources(schema, policies).unwrap()
}

pub(super) fn component(name: &str, roles: &[&str]) -> Principal {
    Principal {
        name: name.into(),
        kind: PrincipalKind::Component,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        scope: None,
    }
}

pub(super) fn task(name: &str, scope: &str) -> Principal {
    Principal {
        name: name.into(),
        kind: PrincipalKind::Task,
        roles: vec!["tasks".into()],
        scope: Some(ScopePath::parse(scope).unwrap()),
    }
}

fn platform() -> Principal {
    component("provisioner", &["platform"])
}

const CTX: RequestContext<'static> = RequestContext {
    transport: Transport::Unix,
    peer: Some(PeerCred {
        uid: 1000,
        gid: 1000,
        pid: Some(4242),
    }),
    request_id: "req-test",
    spiffe_id: None,
};

fn on_secret(a: &Authorizer, p: &Principal, action: Action, path: &str) -> Decision {
    let path = SecretPath::parse(path).unwrap();
    a.decide(
        p,
        action,
        Resource::Secret {
            path: &path,
            labels: None,
        },
        &CTX,
    )
}

fn on_scope(a: &Authorizer, p: &Principal, scope: &str) -> Decision {
    let scope = if scope.is_empty() {
        ScopePath::root()
    } else {
        ScopePath::parse(scope).unwrap()
    };
    a.decide(p, Action::List, Resource::Scope(&scope), &CTX)
}

fn allowed(a: &Authorizer, p: &Principal, action: Action, path: &str) -> bool {
    let d = on_secret(a, p, action, path);
    assert!(d.errors.is_empty(), "{action:?} {path}: {:?}", d.errors);
    d.allowed
}

fn lists(a: &Authorizer, p: &Principal, scope: &str) -> bool {
    let d = on_scope(a, p, scope);
    assert!(d.errors.is_empty(), "list {scope}: {:?}", d.errors);
    d.allowed
}

// --- The default policy's matrix -------------------------------------------

#[test]
fn platform_writes_lists_deletes_and_never_reads() {
    let a = shipped();
    let p = platform();
    for path in ["acme/tasks/t-42/db-password", "acme/x", "dev/db"] {
        assert!(allowed(&a, &p, Action::Write, path), "write {path}");
        assert!(allowed(&a, &p, Action::Delete, path), "delete {path}");
        assert!(!allowed(&a, &p, Action::Read, path), "read {path}");
    }
    for scope in ["", "acme", "acme/tasks/t-42"] {
        assert!(lists(&a, &p, scope), "list {scope:?}");
    }
    let d = on_secret(&a, &p, Action::Read, "dev/db");
    assert_eq!(*d.policies, ["platform-never-reads"]);
    let d = on_secret(&a, &p, Action::Write, "dev/db");
    assert_eq!(*d.policies, ["platform-provision"]);
}

#[test]
fn task_reads_and_lists_only_in_and_under_its_scope() {
    let a = shipped();
    let t = task("t-42", "acme/tasks/t-42");
    for path in [
        "acme/tasks/t-42/x",
        "acme/tasks/t-42/db/x",
        "acme/tasks/t-42/a/b/c",
    ] {
        assert!(allowed(&a, &t, Action::Read, path), "read {path}");
        assert!(!allowed(&a, &t, Action::Write, path), "write {path}");
        assert!(!allowed(&a, &t, Action::Delete, path), "delete {path}");
    }
    for path in [
        "acme/tasks/t-43/x",
        "acme/x",
        "acme/tasks/x",
        "acme/tasks/t-4/x",
        "acme/tasks/t-420/x",
        "acme/tasks/t-42x/y",
        "other/tasks/t-42/x",
    ] {
        assert!(!allowed(&a, &t, Action::Read, path), "read {path}");
    }
    assert!(lists(&a, &t, "acme/tasks/t-42"));
    assert!(lists(&a, &t, "acme/tasks/t-42/db"));
    for scope in [
        "acme/tasks",
        "acme",
        "",
        "acme/tasks/t-4",
        "acme/tasks/t-43",
    ] {
        assert!(!lists(&a, &t, scope), "list {scope:?}");
    }
    let d = on_secret(&a, &t, Action::Read, "acme/tasks/t-42/x");
    assert_eq!(*d.policies, ["task-read-own-scope"]);
}

#[test]
fn sibling_prefixes_do_not_leak() {
    let a = shipped();
    let t4 = task("t4", "acme/t-4");
    let t42 = task("t42", "acme/t-42");
    assert!(allowed(&a, &t4, Action::Read, "acme/t-4/x"));
    assert!(!allowed(&a, &t4, Action::Read, "acme/t-42/x"));
    assert!(allowed(&a, &t42, Action::Read, "acme/t-42/x"));
    assert!(!allowed(&a, &t42, Action::Read, "acme/t-4/x"));
    assert!(!lists(&a, &t4, "acme/t-42"));
    assert!(!lists(&a, &t42, "acme/t-4"));
}

#[test]
fn principals_without_the_right_role_get_nothing() {
    let a = shipped();
    let nobody = component("nobody", &[]);
    let ops = component("ops", &["ops", "platformx"]);
    for p in [&nobody, &ops] {
        for action in [Action::Read, Action::Write, Action::Delete] {
            let d = on_secret(&a, p, action, "acme/x");
            assert!(!d.allowed && d.policies.is_empty(), "{p:?} {action:?}");
        }
        assert!(!lists(&a, p, ""));
        assert!(!lists(&a, p, "acme"));
    }
    // A task stays confined by its scope, with or without roles, and a
    // `platform` role on a task does not let it write.
    let mut bare = task("bare", "acme/t-1");
    bare.roles.clear();
    assert!(allowed(&a, &bare, Action::Read, "acme/t-1/x"));
    assert!(!allowed(&a, &bare, Action::Read, "acme/t-2/x"));
}

#[test]
fn task_with_platform_role_is_still_forbidden_to_read() {
    // The forbid names the role, not the entity type.
    let a = shipped();
    let mut t = task("odd", "acme/t-1");
    t.roles = vec!["platform".into()];
    let d = on_secret(&a, &t, Action::Read, "acme/t-1/x");
    assert!(!d.allowed);
    assert_eq!(*d.policies, ["platform-never-reads"]);
    assert!(allowed(&a, &t, Action::Write, "acme/t-9/x"));
}

#[test]
fn root_list_is_for_platform_only() {
    let a = shipped();
    assert!(lists(&a, &platform(), ""));
    assert!(!lists(&a, &task("t", "acme"), ""));
}

#[test]
fn mismatched_action_and_resource_is_denied_with_an_error() {
    let a = shipped();
    let path = SecretPath::parse("acme/x").unwrap();
    let d = a.decide(
        &platform(),
        Action::List,
        Resource::Secret {
            path: &path,
            labels: None,
        },
        &CTX,
    );
    assert!(!d.allowed);
    assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
    let scope = ScopePath::parse("acme").unwrap();
    let d = a.decide(&platform(), Action::Write, Resource::Scope(&scope), &CTX);
    assert!(!d.allowed && !d.errors.is_empty());
}

#[test]
fn task_without_scope_is_denied_with_an_error() {
    let a = shipped();
    let mut t = task("t", "acme");
    t.scope = None;
    let d = on_secret(&a, &t, Action::Read, "acme/x");
    assert!(!d.allowed);
    assert_eq!(d.errors, ["task `t` has no scope"]);
}

#[test]
fn authorize_hands_back_a_proof_or_a_denial() {
    let a = shipped();
    let path = SecretPath::parse("acme/t-1/x").unwrap();
    let res = Resource::Secret {
        path: &path,
        labels: None,
    };
    let ok = a
        .authorize(
            &task("t", "acme/t-1"),
            Action::Read,
            res,
            &CTX,
            path.clone(),
        )
        .unwrap();
    assert_eq!(ok.get(), &path);
    assert_eq!(**ok.policies(), ["task-read-own-scope"]);
    assert_eq!(ok.into_inner(), path);
    let denied = a
        .authorize(&platform(), Action::Read, res, &CTX, ())
        .unwrap_err();
    assert_eq!(*denied.policies, ["platform-never-reads"]);
    assert!(denied.errors.is_empty());
}

#[test]
fn forbid_holds_against_a_blanket_permit() {
    let (schema, mut policies) = shipped_sources();
    policies.push(src("extra.cedar", "permit(principal, action, resource);\n"));
    let a = Authorizer::from_sources(schema, policies).unwrap();
    let d = on_secret(&a, &platform(), Action::Read, "acme/x");
    assert!(!d.allowed);
    assert_eq!(*d.policies, ["platform-never-reads"]);
    // The blanket permit does apply elsewhere (ids default to file#index).
    let d = on_secret(&a, &component("nobody", &[]), Action::Read, "acme/x");
    assert!(d.allowed);
    assert_eq!(*d.policies, ["extra.cedar#0"]);
}

#[test]
fn an_empty_policy_set_denies_everything() {
    let a = Authorizer::from_sources(schema(), vec![]).unwrap();
    assert!(!lists(&a, &platform(), ""));
    assert!(!allowed(&a, &task("t", "a"), Action::Read, "a/x"));
}

#[test]
fn policy_locations_point_at_the_policy() {
    let a = shipped();
    let text = shipped_sources().1[0].text.clone();
    for id in [
        "platform-provision",
        "task-read-own-scope",
        "platform-never-reads",
    ] {
        let needle = format!("@id(\"{id}\")");
        let line = text[..text.find(&needle).unwrap()].lines().count() + 1;
        assert_eq!(
            a.policy_location(id),
            Some((
                "policies/broker.cedar".to_owned(),
                u32::try_from(line).unwrap()
            )),
            "{id}"
        );
    }
    assert_eq!(a.policy_location("nope"), None);
    assert_eq!(
        a.policy_ids(),
        [
            "platform-never-reads",
            "platform-provision",
            "task-read-own-scope",
            "task-upload-own-scope",
            "upload-only-own-scope"
        ]
    );

    let text = "// two\npermit(principal, action, resource);\n\n  // permit(principal, action, resource);\nforbid(principal, action, resource);\npermit(principal, action, resource);";
    let a = Authorizer::from_sources(schema(), vec![src("p.cedar", text)]).unwrap();
    assert_eq!(a.policy_location("p.cedar#0"), Some(("p.cedar".into(), 2)));
    assert_eq!(a.policy_location("p.cedar#1"), Some(("p.cedar".into(), 5)));
    assert_eq!(a.policy_location("p.cedar#2"), Some(("p.cedar".into(), 6)));
}

// --- Context and tags -------------------------------------------------------

#[test]
fn peer_credentials_and_transport_reach_the_context() {
    let policy = r#"
@id("uid-1000-lists")
permit (principal, action == SecretBroker::Action::"list", resource)
when { context has peer_uid && context.peer_uid == 1000 &&
       context has peer_gid && context.peer_gid == 50 &&
       context has peer_pid && context.peer_pid == 7 &&
       context.transport == "unix" && context.request_id == "r-1" };
"#;
    let a = Authorizer::from_sources(schema(), vec![src("ctx.cedar", policy)]).unwrap();
    let scope = ScopePath::parse("acme").unwrap();
    let nobody = component("nobody", &[]);
    let ask = |transport, peer| {
        let ctx = RequestContext {
            transport,
            peer,
            request_id: "r-1",
            spiffe_id: None,
        };
        a.decide(&nobody, Action::List, Resource::Scope(&scope), &ctx)
    };
    let cred = |uid| {
        Some(PeerCred {
            uid,
            gid: 50,
            pid: Some(7),
        })
    };
    let d = ask(Transport::Unix, cred(1000));
    assert!(d.allowed, "{d:?}");
    assert_eq!(*d.policies, ["uid-1000-lists"]);
    assert!(!ask(Transport::Unix, cred(1001)).allowed);
    assert!(!ask(Transport::Tls, cred(1000)).allowed);
    let d = ask(Transport::Unix, None);
    assert!(!d.allowed && d.errors.is_empty(), "{d:?}");
}

#[test]
fn labels_are_tags() {
    let policy = r#"
permit (principal is SecretBroker::Task, action == SecretBroker::Action::"read", resource)
when { resource.hasTag("shared") && resource.getTag("shared") == "yes" && resource.name == "x" };
"#;
    let a = Authorizer::from_sources(schema(), vec![src("tags.cedar", policy)]).unwrap();
    let t = task("t", "a");
    let path = SecretPath::parse("b/x").unwrap();
    let ask = |labels: Option<&Labels>| {
        a.decide(
            &t,
            Action::Read,
            Resource::Secret {
                path: &path,
                labels,
            },
            &CTX,
        )
    };
    let shared = Labels::from([("shared".to_owned(), "yes".to_owned())]);
    let other = Labels::from([("shared".to_owned(), "no".to_owned())]);
    assert!(ask(Some(&shared)).allowed);
    assert!(!ask(Some(&other)).allowed);
    assert!(!ask(None).allowed);
}

#[test]
fn our_entities_conform_to_the_shipped_schema() {
    let (schema_src, _) = shipped_sources();
    let (schema, _) = cedar_policy::Schema::from_cedarschema_str(&schema_src.text).unwrap();
    let path = SecretPath::parse("acme/t-42/db").unwrap();
    let scope = ScopePath::parse("acme/t-42/sub").unwrap();
    let labels = Labels::from([("k".to_owned(), "v".to_owned())]);
    for p in [platform(), task("t", "acme/t-42")] {
        let mut list = entities::principal_entities(&p).unwrap();
        list.extend(
            entities::resource_entities(Resource::Secret {
                path: &path,
                labels: Some(&labels),
            })
            .unwrap(),
        );
        list.extend(entities::resource_entities(Resource::Scope(&scope)).unwrap());
        cedar_policy::Entities::from_entities(list, Some(&schema)).unwrap();
    }
}

// --- Bad policy sets ---------------------------------------------------------

fn load_err(policies: Vec<PolicySource>) -> String {
    Authorizer::from_sources(schema(), policies)
        .unwrap_err()
        .to_string()
}

#[test]
fn syntax_error_is_located() {
    let text = "// fine so far\n\npermit(principal, action resource);\n";
    let msg = load_err(vec![src("bad.cedar", text)]);
    assert!(
        msg.starts_with("invalid policy set:\nbad.cedar:3:"),
        "{msg}"
    );
    assert!(
        msg.contains("\n  permit(principal, action resource);"),
        "{msg}"
    );
}

#[test]
fn unknown_attribute_is_located() {
    let text = "permit(principal, action, resource);\n\npermit(principal is SecretBroker::Task, action, resource)\n  when { principal.nope == \"x\" };\n";
    let msg = load_err(vec![src("attr.cedar", text)]);
    assert!(msg.contains("attr.cedar:4:10:"), "{msg}");
    assert!(msg.contains("`nope`"), "{msg}");
    assert!(
        msg.contains("\n    when { principal.nope == \"x\" };"),
        "{msg}"
    );
}

#[test]
fn unknown_entity_type_is_located() {
    let text =
        "@id(\"p\")\npermit(principal == SecretBroker::User::\"alice\", action, resource);\n";
    let msg = load_err(vec![
        src("good.cedar", "permit(principal, action, resource);"),
        src("type.cedar", text),
    ]);
    assert!(msg.contains("type.cedar:2:"), "{msg}");
    assert!(msg.contains("SecretBroker::User"), "{msg}");
    // Every diagnostic is one line plus its snippet.
    assert_eq!(msg.lines().count(), 3, "{msg}");
}

#[test]
fn unknown_action_and_lax_typing_are_refused() {
    let msg = load_err(vec![src(
        "act.cedar",
        "permit(principal, action == SecretBroker::Action::\"read-ish\", resource);",
    )]);
    assert!(msg.contains("act.cedar:1:"), "{msg}");
    // Strict mode: an optional attribute must be guarded by `has`.
    let msg = load_err(vec![src(
        "opt.cedar",
        "permit(principal, action, resource) when { context.peer_uid == 1 };",
    )]);
    assert!(msg.contains("opt.cedar:1:"), "{msg}");
}

#[test]
fn every_bad_file_is_reported() {
    let err = Authorizer::from_sources(
        schema(),
        vec![
            src("a.cedar", "permit(principal, action, resource)"),
            src("b.cedar", "\nforbid(principal, action, resource;"),
        ],
    )
    .unwrap_err();
    let files: Vec<_> = err.diagnostics().iter().map(|d| d.file.as_str()).collect();
    assert_eq!(files, ["a.cedar", "b.cedar"]);
    assert_eq!(err.diagnostics()[1].line, 2);
}

#[test]
fn duplicate_ids_are_refused() {
    let p = "@id(\"same\")\npermit(principal, action, resource);\n";
    let msg = load_err(vec![src("one.cedar", p), src("two.cedar", p)]);
    assert!(
        msg.contains("two.cedar:1:1: policy id `same` is already used at one.cedar:1"),
        "{msg}"
    );
    let msg = load_err(vec![src(
        "e.cedar",
        "@id(\"\")\npermit(principal, action, resource);",
    )]);
    assert!(
        msg.contains("e.cedar:1:1: `@id` must not be empty"),
        "{msg}"
    );
}

#[test]
fn templates_are_refused() {
    let msg = load_err(vec![src(
        "tpl.cedar",
        "permit(principal, action, resource);\npermit(principal == ?principal, action, resource);\n// two\npermit(principal, action, resource in ?resource);",
    )]);
    // Each at its first slot: the second is placed after the first (it
    // was placed at 1:1 when the search for it started before the first).
    assert!(msg.contains("tpl.cedar:2:21: policy templates"), "{msg}");
    assert!(msg.contains("tpl.cedar:4:39: policy templates"), "{msg}");
    assert!(msg.contains("no template links"), "{msg}");
}

#[test]
fn bad_schema_is_located() {
    let bad = src(
        "schema.cedarschema",
        "namespace SecretBroker {\n  entity Role\n  entity Scope;\n}\n",
    );
    let msg = Authorizer::from_sources(bad, vec![])
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("invalid schema:\nschema.cedarschema:"),
        "{msg}"
    );
    let undeclared = src("s.cedarschema", "entity A in [B];\n");
    let msg = Authorizer::from_sources(undeclared, vec![])
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("invalid schema:\ns.cedarschema:1:"),
        "{msg}"
    );
}

#[test]
fn schema_must_describe_our_entities() {
    // A required attribute the broker never sets would make policies that
    // read it error, and an erroring forbid is skipped: refuse the schema.
    let text = schema()
        .text
        .replace("scope: Scope,", "scope: Scope,\n    team: String,");
    let msg = Authorizer::from_sources(src("s.cedarschema", &text), vec![])
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("invalid schema:\ns.cedarschema:1:1: the schema does not describe the entities the broker builds:"),
        "{msg}"
    );
    assert!(msg.contains("team"), "{msg}");
    // Labels are tags: a schema without them is refused too.
    let text = schema().text.replace("} tags String;", "};");
    assert!(Authorizer::from_sources(src("s.cedarschema", &text), vec![]).is_err());
}

// --- Loading and reloading a directory --------------------------------------

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn shipped_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (schema, policies) = shipped_sources();
    write(dir.path(), "schema.cedarschema", &schema.text);
    write(dir.path(), "broker.cedar", &policies[0].text);
    dir
}

#[test]
fn load_dir_reads_sorted_cedar_files_only() {
    let dir = shipped_dir();
    write(dir.path(), "notes.txt", "not cedar");
    write(dir.path(), ".hidden.cedar", "garbage");
    std::fs::create_dir(dir.path().join("sub.cedar")).unwrap();
    write(
        dir.path(),
        "a-extra.cedar",
        "permit(principal, action == SecretBroker::Action::\"list\", resource);",
    );
    let a = Authorizer::load_dir(dir.path()).unwrap();
    assert_eq!(a.generation(), 1);
    let (file, line) = a.policy_location("a-extra.cedar#0").unwrap();
    assert!(file.ends_with("a-extra.cedar") && line == 1, "{file}");
    assert!(lists(&a, &component("nobody", &[]), "acme"));
    assert_eq!(a.reload().map(|()| a.generation()).unwrap(), 2);
}

#[test]
fn load_dir_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let msg = Authorizer::load_dir(dir.path()).unwrap_err().to_string();
    assert!(msg.starts_with("no `schema.cedarschema` in `"), "{msg}");
    let missing = dir.path().join("nope");
    let msg = Authorizer::load_dir(&missing).unwrap_err().to_string();
    assert!(
        msg.starts_with("cannot read `") && msg.contains("nope"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
}

#[test]
fn bad_reload_keeps_the_old_set_and_good_reload_swaps() {
    let dir = shipped_dir();
    let a = Authorizer::load_dir(dir.path()).unwrap();
    let auditor = component("auditor", &["auditor"]);
    assert!(!lists(&a, &auditor, "acme"));
    assert!(allowed(&a, &platform(), Action::Write, "acme/x"));

    // A broken file: reload fails with a located error, nothing changes.
    write(
        dir.path(),
        "zz.cedar",
        "permit(principal, action, resource) when { nope };",
    );
    let err = a.reload().unwrap_err().to_string();
    assert!(err.contains("zz.cedar:1:"), "{err}");
    assert_eq!(a.generation(), 1);
    assert!(allowed(&a, &platform(), Action::Write, "acme/x"));
    assert!(!allowed(&a, &platform(), Action::Read, "acme/x"));

    // A broken schema: same.
    write(dir.path(), "zz.cedar", "");
    write(dir.path(), "schema.cedarschema", "namespace {");
    assert!(a.reload().is_err());
    assert_eq!(a.generation(), 1);
    assert!(allowed(&a, &platform(), Action::Write, "acme/x"));

    // A good change takes effect and bumps the generation.
    let (schema, _) = shipped_sources();
    write(dir.path(), "schema.cedarschema", &schema.text);
    write(
        dir.path(),
        "zz.cedar",
        "@id(\"auditors-list\")\npermit(principal in SecretBroker::Role::\"auditor\", action == SecretBroker::Action::\"list\", resource);",
    );
    a.reload().unwrap();
    assert_eq!(a.generation(), 2);
    assert!(lists(&a, &auditor, "acme"));
    assert!(a.policy_location("auditors-list").is_some());

    // Removing the default policy takes its permits away.
    std::fs::remove_file(dir.path().join("broker.cedar")).unwrap();
    a.reload().unwrap();
    assert_eq!(a.generation(), 3);
    assert!(!allowed(&a, &platform(), Action::Write, "acme/x"));
    assert!(a.policy_location("platform-provision").is_none());
}

#[test]
fn sources_are_not_reloadable() {
    assert!(matches!(shipped().reload(), Err(AuthzError::NotReloadable)));
    assert_eq!(shipped().generation(), 1);
}

// --- Property: Cedar agrees with a plain model --------------------------------

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ab]{1,2}".prop_map(|s| s),
        Just("t-4".to_owned()),
        Just("t-42".to_owned()),
    ]
}

/// Segment-wise containment, written independently of `ScopePath`.
fn within(scope: &[String], path: &[String]) -> bool {
    path.len() >= scope.len() && path[..scope.len()] == scope[..]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn cedar_matches_the_reference_model(
        task_scope in prop::collection::vec(segment(), 1..4),
        target in prop::collection::vec(segment(), 0..5),
        action in prop::sample::select(Action::ALL.to_vec()),
        kind in 0..3u8,
    ) {
        let a = shipped();
        // 0: a task of `task_scope`; 1: a platform component; 2: a component
        // with other roles, which gets nothing.
        let is_task = kind == 0;
        let nothing = kind == 2;
        let principal = match kind {
            0 => task("t", &task_scope.join("/")),
            1 => platform(),
            _ => component("c", &["ops"]),
        };
        let (decision, model) = if action == Action::List {
            let scope = if target.is_empty() {
                ScopePath::root()
            } else {
                ScopePath::parse(&target.join("/")).unwrap()
            };
            let d = a.decide(&principal, action, Resource::Scope(&scope), &CTX);
            // A scope resource: the task's scope itself or nested in it.
            (d, !nothing && (!is_task || within(&task_scope, &target)))
        } else {
            prop_assume!(target.len() >= 2);
            let path = SecretPath::parse(&target.join("/")).unwrap();
            let resource = match action {
                Action::Upload => Resource::Output(&path),
                _ => Resource::Secret { path: &path, labels: None },
            };
            let d = a.decide(&principal, action, resource, &CTX);
            // A secret or an output: strictly inside the scope (the name is
            // the last segment). Only tasks upload; the platform never reads.
            let model = !nothing && match (is_task, action) {
                (true, Action::Read | Action::Upload) => {
                    within(&task_scope, &target[..target.len() - 1])
                }
                (true, _) => false,
                (false, Action::Read | Action::Upload) => false,
                (false, _) => true,
            };
            (d, model)
        };
        prop_assert!(decision.errors.is_empty(), "{:?}", decision.errors);
        prop_assert_eq!(decision.allowed, model, "{:?} {:?} {:?} {:?}", principal, action, target, decision);
    }
}

// --- Decision cache -----------------------------------------------------------

/// The shipped set plus policies that read every context field and labels,
/// so that every part of the cache key can change a decision; with
/// `request_id`, one more that reads the request id (which turns the cache
/// off: ids are unique per request).
fn context_sensitive(request_id: bool) -> Authorizer {
    let (schema, mut policies) = shipped_sources();
    policies.push(src(
        "extra.cedar",
        r#"@id("uid-7-reads-all")
permit (principal is SecretBroker::Task, action == SecretBroker::Action::"read", resource)
when { context has peer_uid && context.peer_uid == 7 };
@id("no-tls-restricted")
forbid (principal, action, resource is SecretBroker::Secret)
when { context.transport == "tls" || (resource.hasTag("c") && resource.getTag("c") == "r") };
@id("pid-1-never")
forbid (principal, action, resource) when { context has peer_pid && context.peer_pid == 1 };
"#,
    ));
    if request_id {
        policies.push(src(
            "rid.cedar",
            r#"@id("rid-x-never")
forbid (principal, action, resource) when { context.request_id == "x" };
"#,
        ));
    }
    Authorizer::from_sources(schema, policies).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Every cached decision equals the plain Cedar call, across repeated
    /// and varied inputs (principal, action, resource, labels, context).
    #[test]
    fn cached_decisions_equal_plain_cedar(
        requests in prop::collection::vec((
            prop::collection::vec(segment(), 1..3),
            prop::collection::vec(segment(), 0..4),
            prop::sample::select(Action::ALL.to_vec()),
            0..3u8,
            prop::option::of(prop::sample::select(vec![7u32, 8])),
            prop::sample::select(vec![None, Some(1i32), Some(2)]),
            any::<bool>(),
            any::<bool>(),
            prop::sample::select(vec!["x", "y"]),
        ), 1..12),
        with_rid_policy in any::<bool>(),
    ) {
        let a = context_sensitive(with_rid_policy);
        // Replay the batch twice so the second pass is served from the cache.
        for _ in 0..2 {
            for (scope, target, action, kind, uid, pid, tls, restricted, rid) in &requests {
                let principal = match kind {
                    0 => task("t", &scope.join("/")),
                    1 => platform(),
                    _ => component("c", &["ops"]),
                };
                let ctx = RequestContext {
                    transport: if *tls { Transport::Tls } else { Transport::Unix },
                    peer: uid.map(|u| PeerCred { uid: u, gid: u, pid: *pid }),
                    request_id: rid,
                    spiffe_id: None,
                };
                let mut labels = Labels::new();
                if *restricted {
                    labels.insert("c".into(), "r".into());
                }
                let scope_path;
                let secret_path;
                let resource = if *action == Action::List || target.len() < 2 {
                    scope_path = if target.is_empty() { ScopePath::root() } else { ScopePath::parse(&target.join("/")).unwrap() };
                    Resource::Scope(&scope_path)
                } else {
                    secret_path = SecretPath::parse(&target.join("/")).unwrap();
                    match action {
                        Action::Upload => Resource::Output(&secret_path),
                        _ => Resource::Secret { path: &secret_path, labels: Some(&labels) },
                    }
                };
                let cached = a.decide(&principal, *action, resource, &ctx);
                let plain = a.decide_uncached(&principal, *action, resource, &ctx);
                prop_assert_eq!(&cached, &plain, "{:?} {:?} {:?}", principal, action, ctx);
            }
        }
        // A write's labels and an upload are never cached; everything else
        // is, unless a policy reads the request id.
        let cacheable = requests.iter().any(|(_, target, action, _, _, _, _, restricted, _)| {
            !(*action == Action::Write && *restricted && target.len() >= 2)
                && *action != Action::Upload
        });
        prop_assert_eq!(a.cached_decisions() > 0, cacheable && !with_rid_policy);
    }
}

// --- Generated policies: the cache never changes a decision -------------------

/// Conditions that validate against the shipped schema for every action,
/// each with whether it can read the request id. The reading ones spell
/// the attribute every way Cedar allows, or hand `context` on whole.
const CONDITIONS: &[(&str, bool)] = &[
    (r#"context.transport == "unix""#, false),
    (r#"context["transport"] == "tls""#, false),
    ("context has peer_uid && context.peer_uid == 7", false),
    ("context has peer_pid", false),
    ("principal is SecretBroker::Task", false),
    (r#"principal in SecretBroker::Role::"platform""#, false),
    (r#"resource in SecretBroker::Scope::"a""#, false),
    (r#"context.request_id == "x""#, true),
    (r#"context["request_id"] == "y""#, true),
    (r#"context["request\u{5f}id"] == "x""#, true),
    (r#"context["\u{72}equest\u{5f}id"] like "x*""#, true),
    (r#"["y"].contains(context.request_id)"#, true),
    (r#"{ c: context }.c.request_id == "x""#, true),
    (
        r#"(if context.transport == "unix" then context else context).request_id == "y""#,
        true,
    ),
    (r#"{ "Var": context.request_id }["Var"] == "x""#, true),
    ("context has request_id", true),
    ("context == context", true),
];

/// A boolean condition over [`CONDITIONS`], and whether it can read the
/// request id.
fn condition() -> impl Strategy<Value = (String, bool)> {
    let leaf = prop::sample::select(CONDITIONS.to_vec())
        .prop_map(|(text, reads)| (text.to_owned(), reads));
    leaf.prop_recursive(3, 8, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone())
                .prop_map(|((a, ra), (b, rb))| (format!("({a}) && ({b})"), ra || rb)),
            (inner.clone(), inner.clone())
                .prop_map(|((a, ra), (b, rb))| (format!("({a}) || ({b})"), ra || rb)),
            inner.clone().prop_map(|(a, ra)| (format!("!({a})"), ra)),
        ]
    })
}

/// A policy: permit or forbid, `when` or `unless` a condition.
fn generated_policy() -> impl Strategy<Value = (String, bool)> {
    (any::<bool>(), any::<bool>(), condition()).prop_map(|(permit, when, (cond, reads))| {
        let effect = if permit { "permit" } else { "forbid" };
        let clause = if when { "when" } else { "unless" };
        (
            format!("{effect} (principal, action, resource) {clause} {{ {cond} }};\n"),
            reads,
        )
    })
}

#[test]
fn every_generated_condition_validates() {
    for (cond, reads) in CONDITIONS {
        let text = format!("permit (principal, action, resource) when {{ {cond} }};");
        let a = Authorizer::from_sources(schema(), vec![src("c.cedar", &text)])
            .unwrap_or_else(|e| panic!("{cond}: {e}"));
        assert_eq!(a.current.load().reads_request_id, *reads, "{cond}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// With generated policies beside the shipped ones, the cached decision
    /// is always the plain one, whichever request ids arrive, and the
    /// cache is used exactly when no policy can read the request id.
    #[test]
    fn cache_never_changes_a_generated_policy_decision(
        policies in prop::collection::vec(generated_policy(), 1..4),
        requests in prop::collection::vec((
            prop::collection::vec(segment(), 0..4),
            prop::sample::select(Action::ALL.to_vec()),
            0..3u8,
            any::<bool>(),
            prop::option::of(prop::sample::select(vec![7u32, 8])),
        ), 1..6),
    ) {
        let (schema, mut sources) = shipped_sources();
        let reads = policies.iter().any(|(_, r)| *r);
        let text: String = policies.iter().map(|(p, _)| p.as_str()).collect();
        sources.push(src("generated.cedar", &text));
        let a = Authorizer::from_sources(schema, sources)
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        prop_assert_eq!(a.current.load().reads_request_id, reads, "{}", text);
        for _ in 0..2 {
            for (target, action, kind, tls, uid) in &requests {
                // Each request under several ids, so that a cache keyed
                // without the id would answer one id with another's decision.
                for rid in ["x", "y", "x", "z"] {
                    let principal = match kind {
                        0 => task("t", "a"),
                        1 => platform(),
                        _ => component("c", &["ops"]),
                    };
                    let ctx = RequestContext {
                        transport: if *tls { Transport::Tls } else { Transport::Unix },
                        peer: uid.map(|u| PeerCred { uid: u, gid: u, pid: None }),
                        request_id: rid,
                        spiffe_id: None,
                    };
                    let scope_path;
                    let secret_path;
                    let resource = if *action == Action::List || target.len() < 2 {
                        scope_path = if target.is_empty() { ScopePath::root() } else { ScopePath::parse(&target.join("/")).unwrap() };
                        Resource::Scope(&scope_path)
                    } else {
                        secret_path = SecretPath::parse(&target.join("/")).unwrap();
                        match action {
                            Action::Upload => Resource::Output(&secret_path),
                            _ => Resource::Secret { path: &secret_path, labels: None },
                        }
                    };
                    let cached = a.decide(&principal, *action, resource, &ctx);
                    let plain = a.decide_uncached(&principal, *action, resource, &ctx);
                    prop_assert_eq!(&cached, &plain, "{} {:?} {:?} {:?}", text, principal, action, ctx);
                }
            }
        }
        // Uploads are never cached, whatever the policies read.
        let only_uploads = requests.iter().all(|r| r.1 == Action::Upload);
        prop_assert_eq!(a.cached_decisions() == 0, reads || only_uploads, "{}", text);
    }
}

#[test]
fn an_escaped_request_id_read_is_never_cached() {
    // The finding's policy: reads the id without spelling `request_id`.
    let (schema, mut policies) = shipped_sources();
    policies.push(src(
        "odd.cedar",
        "forbid (principal, action, resource) when { context[\"request\\u{5f}id\"] like \"*-odd\" };\n",
    ));
    let a = Authorizer::from_sources(schema, policies).unwrap();
    let t = task("t", "acme/t-42");
    let path = SecretPath::parse("acme/t-42/db").unwrap();
    let res = Resource::Secret {
        path: &path,
        labels: None,
    };
    let allowed: Vec<bool> = (0..12)
        .map(|i| {
            let rid = format!("r{i}-{}", if i % 2 == 0 { "even" } else { "odd" });
            let ctx = RequestContext {
                request_id: &rid,
                spiffe_id: None,
                ..CTX
            };
            a.decide(&t, Action::Read, res, &ctx).allowed
        })
        .collect();
    let alternating: Vec<bool> = (0..12).map(|i| i % 2 == 0).collect();
    assert_eq!(allowed, alternating);
    assert_eq!(a.cached_decisions(), 0);
}

#[test]
fn denied_writes_with_labels_are_not_cached() {
    // A task may not write; each denial carries the caller's label map.
    let a = shipped();
    let t = task("t", "acme/t-42");
    for i in 0..200 {
        let path = SecretPath::parse(&format!("acme/t-42/s{i}")).unwrap();
        let labels: Labels = (0..10)
            .map(|k| (format!("k{k}-{i}"), "v".repeat(256)))
            .collect();
        let d = a.decide(
            &t,
            Action::Write,
            Resource::Secret {
                path: &path,
                labels: Some(&labels),
            },
            &CTX,
        );
        assert!(!d.allowed);
    }
    assert_eq!((a.cached_decisions(), a.cached_decision_bytes()), (0, 0));
    // The same writes without labels are small and cached.
    let path = SecretPath::parse("acme/t-42/s").unwrap();
    let res = Resource::Secret {
        path: &path,
        labels: None,
    };
    assert!(!a.decide(&t, Action::Write, res, &CTX).allowed);
    assert_eq!(a.cached_decisions(), 1);
    assert!(a.cached_decision_bytes() > 0);
}

#[test]
fn reload_clears_cached_decisions() {
    let dir = shipped_dir();
    let a = Authorizer::load_dir(dir.path()).unwrap();
    let t = task("t", "acme/t-42");
    let path = SecretPath::parse("acme/t-42/db").unwrap();
    let read = |a: &Authorizer| {
        a.decide(
            &t,
            Action::Read,
            Resource::Secret {
                path: &path,
                labels: None,
            },
            &CTX,
        )
        .allowed
    };
    assert!(read(&a));
    assert!(read(&a), "served from the cache");
    assert_eq!(a.cached_decisions(), 1);
    write(
        dir.path(),
        "deny.cedar",
        "@id(\"no-db\")\nforbid(principal, action, resource) when { resource is SecretBroker::Secret && resource.name == \"db\" };\n",
    );
    a.reload().unwrap();
    assert!(
        !read(&a),
        "a reload must not be answered by a stale cached allow"
    );
}

// --- Cost ---------------------------------------------------------------------

/// `cargo test --release --lib decision_cost -- --ignored --nocapture`
#[test]
#[ignore = "timing; run by hand in release"]
fn decision_cost() {
    let a = shipped();
    let t = task("t", "acme/tasks/t-42");
    let path = SecretPath::parse("acme/tasks/t-42/db/password").unwrap();
    let labels = Labels::from([("team".to_owned(), "db".to_owned())]);
    let res = Resource::Secret {
        path: &path,
        labels: Some(&labels),
    };
    let n = 20_000u32;
    for _ in 0..1000 {
        assert!(a.decide(&t, Action::Read, res, &CTX).allowed);
    }
    let start = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(a.decide(&t, Action::Read, res, &CTX));
    }
    let per = start.elapsed() / n;
    println!("decide: {per:?} per decision");
}

/// Where a decision's time goes; same invocation as `decision_cost`.
#[test]
#[ignore = "timing; run by hand in release"]
fn decision_cost_breakdown() {
    use std::time::Instant;
    let a = shipped();
    let snap = a.current.load();
    let t = task("t", "acme/tasks/t-42");
    let path = SecretPath::parse("acme/tasks/t-42/db/password").unwrap();
    let res = Resource::Secret {
        path: &path,
        labels: None,
    };
    let n = 20_000u32;
    macro_rules! time {
        ($name:expr, $e:expr) => {{
            let start = Instant::now();
            for _ in 0..n {
                std::hint::black_box($e);
            }
            println!("{}: {:?}", $name, start.elapsed() / n);
        }};
    }
    time!(
        "principal_entities",
        entities::principal_entities(&t).unwrap()
    );
    time!(
        "resource_entities",
        entities::resource_entities(res).unwrap()
    );
    let mut list = entities::principal_entities(&t).unwrap();
    list.extend(entities::resource_entities(res).unwrap());
    time!(
        "from_entities (closure)",
        cedar_policy::Entities::from_entities(list.clone(), None).unwrap()
    );
    time!(
        "request_store",
        entities::request_store(list.clone()).unwrap()
    );
    time!("context", context::context(&CTX).unwrap());
    let pu = entities::principal_uid(&t).unwrap();
    let au = entities::action_uid(Action::Read).unwrap();
    let ru = entities::resource_uid(res).unwrap();
    time!(
        "request + schema check",
        cedar_policy::Request::new(
            pu.clone(),
            au.clone(),
            ru.clone(),
            context::context(&CTX).unwrap(),
            Some(&snap.schema)
        )
        .unwrap()
    );
    time!(
        "request",
        cedar_policy::Request::new(
            pu.clone(),
            au.clone(),
            ru.clone(),
            context::context(&CTX).unwrap(),
            None
        )
        .unwrap()
    );
    let req = cedar_policy::Request::new(
        pu.clone(),
        au.clone(),
        ru.clone(),
        context::context(&CTX).unwrap(),
        None,
    )
    .unwrap();
    let ents = cedar_policy::Entities::from_entities(list.clone(), None).unwrap();
    time!(
        "is_authorized",
        a.cedar.is_authorized(&req, &snap.policies, &ents)
    );
    time!("action_lookup", snap.actions.get(&au).cloned());
}

#[test]
fn request_store_needs_no_closure_pass() {
    // The store we build without a closure pass answers `in` exactly as a
    // store with Cedar's closure computed would.
    let t = task("t", "a/b/c");
    let path = SecretPath::parse("a/b/c/d/e/x").unwrap();
    let scope = ScopePath::parse("a/b/c/d").unwrap();
    let mut list = entities::principal_entities(&t).unwrap();
    list.extend(
        entities::resource_entities(Resource::Secret {
            path: &path,
            labels: None,
        })
        .unwrap(),
    );
    list.extend(entities::resource_entities(Resource::Scope(&scope)).unwrap());
    let ours = entities::request_store(list.clone()).unwrap();
    let closed = cedar_policy::Entities::from_entities(list, None).unwrap();
    assert!(ours.deep_eq(&closed));
}
