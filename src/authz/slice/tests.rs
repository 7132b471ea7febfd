//! Tests of policy slicing: a property test that the sliced decision is
//! the unsliced one over random policy sets (every head shape, bodies that
//! error at runtime), and unit tests that slicing leaves out what it should.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{PolicyId, PolicySet, Schema};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

use super::super::policies::PolicySnapshot;
use super::super::*;
use super::PolicyIndex;

/// The shipped schema with action groups: `read`, `write` and `delete` are
/// in `secrets`, which is in `all`; `list` is in `all`; `upload` in none.
static GROUPED_SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    let text = shipped_sources()
        .0
        .text
        .replace(
            "action read, write, delete appliesTo",
            "action all;\n  action secrets in [all];\n  action read, write, delete in [secrets] appliesTo",
        )
        .replace("action list appliesTo", "action list in [all] appliesTo");
    Schema::from_cedarschema_str(&text).unwrap().0
});

/// An authorizer over `policies`, parsed but NOT validated: bodies that
/// strict validation would refuse (reading attributes or tags that may be
/// absent, on any resource type) are what exercise runtime errors, and a
/// slice must agree with Cedar on a set whatever passed validation.
fn unvalidated(policies: &str) -> Authorizer {
    let schema = GROUPED_SCHEMA.clone();
    let parsed = PolicySet::from_str(policies).unwrap_or_else(|e| panic!("{policies}: {e}"));
    // Named as the loader names them: `@id`, else Cedar's positional id.
    let mut set = PolicySet::new();
    for i in 0..parsed.num_of_policies() {
        let p = parsed.policy(&PolicyId::new(format!("policy{i}"))).unwrap();
        let id = p
            .annotation("id")
            .map_or_else(|| format!("policy{i}"), str::to_owned);
        set.add(p.new_id(PolicyId::new(id))).unwrap();
    }
    let snap = PolicySnapshot {
        actions: schema.action_entities().unwrap(),
        schema,
        slices: PolicyIndex::new(&set),
        policies: set,
        locations: HashMap::new(),
        warnings: Vec::new(),
        generation: 1,
        reads_request_id: true,
    };
    Authorizer::with_snapshot(snap, None)
}

/// Ids of the policies the index hands Cedar for a request.
fn candidates(
    a: &Authorizer,
    principal: &Principal,
    action: Action,
    resource: Resource<'_>,
) -> Vec<String> {
    let snap = a.current.load();
    let (request, entities) = build(&snap, principal, action, resource, &CTX).unwrap();
    snap.slices.candidate_ids(&request, &entities).unwrap()
}

use super::super::tests::{component, task};

const CTX: RequestContext<'static> = RequestContext {
    transport: Transport::Unix,
    peer: None,
    request_id: "r",
    spiffe_id: None,
};

fn scope(s: &str) -> ScopePath {
    if s.is_empty() {
        ScopePath::root()
    } else {
        ScopePath::parse(s).unwrap()
    }
}

// --- Generated policy sets ------------------------------------------------------

const NS: &str = "SecretBroker";

/// Scopes that heads name and requests use, overlapping on purpose.
const SCOPES: &[&str] = &["", "a", "b", "a/b", "a/a", "b/a", "a/b/a", "t-4", "t-42"];

fn uid(ty: &str, id: &str) -> String {
    format!("{NS}::{ty}::\"{id}\"")
}

/// Entities a principal head may name: the principals and roles requests
/// use, and some no principal can be in.
fn principal_entity() -> impl Strategy<Value = String> + Clone {
    prop::sample::select(vec![
        uid("Component", "c"),
        uid("Component", "z"),
        uid("Task", "t"),
        uid("Task", "u"),
        uid("Role", "platform"),
        uid("Role", "ops"),
        uid("Role", "tasks"),
        uid("Scope", "a"),
    ])
}

/// Entities a resource head may name: secrets, outputs and scopes at
/// several depths, the root scope among them.
fn resource_entity() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        prop::sample::select(SCOPES).prop_map(|s| uid("Scope", s)),
        prop::sample::select(vec!["a/x", "a/b/x", "b/db", "a/b/a/db"])
            .prop_map(|p| uid("Secret", p)),
        prop::sample::select(vec!["a/x", "a/b/x"]).prop_map(|p| uid("Output", p)),
        Just(uid("Task", "t")),
    ]
}

/// `principal`, `principal == E`, `in E`, `is T`, `is T in E` (also with
/// `resource`).
fn entity_head(
    var: &'static str,
    entity: impl Strategy<Value = String> + Clone,
    types: Vec<&'static str>,
) -> impl Strategy<Value = String> {
    let ty = prop::sample::select(types).prop_map(|t| format!("{NS}::{t}"));
    prop_oneof![
        Just(var.to_owned()),
        entity.clone().prop_map(move |e| format!("{var} == {e}")),
        entity.clone().prop_map(move |e| format!("{var} in {e}")),
        ty.clone().prop_map(move |t| format!("{var} is {t}")),
        (ty, entity).prop_map(move |(t, e)| format!("{var} is {t} in {e}")),
    ]
}

/// `action`, `action == A`, `action in A` (a group or not), `action in [..]`.
fn action_head() -> impl Strategy<Value = String> {
    let names = vec![
        "read", "write", "list", "delete", "upload", "secrets", "all",
    ];
    let one = prop::sample::select(names).prop_map(|a| uid("Action", a));
    prop_oneof![
        Just("action".to_owned()),
        one.clone().prop_map(|a| format!("action == {a}")),
        one.clone().prop_map(|a| format!("action in {a}")),
        prop::collection::vec(one, 1..4).prop_map(|v| format!("action in [{}]", v.join(", "))),
    ]
}

/// Conditions, many of which error at runtime for some requests: an
/// absent attribute (`resource.name` on a scope, `principal.scope` on a
/// component, `context.peer_uid` without peer credentials), an absent tag,
/// an overflow, an extension call on a bad string.
const CONDITIONS: &[&str] = &[
    "true",
    "false",
    r#"context.transport == "unix""#,
    "context.peer_uid == 7",
    "context has peer_uid && context.peer_uid * 4611686018427387904 > 1",
    r#"resource.name == "db""#,
    r#"resource.hasTag("c") && resource.getTag("c") == "r""#,
    r#"resource.getTag("c") == "r""#,
    "resource in principal.scope",
    "principal.scope == resource",
    r#"principal in SecretBroker::Role::"platform""#,
    r#"resource in SecretBroker::Scope::"a""#,
    "ip(context.transport).isLoopback()",
    r#"context.request_id like "x*""#,
];

fn condition() -> impl Strategy<Value = String> {
    let leaf = prop::sample::select(CONDITIONS).prop_map(str::to_owned);
    leaf.prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) && ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) || ({b})")),
            inner.prop_map(|a| format!("!({a})")),
        ]
    })
}

fn generated_policy() -> impl Strategy<Value = String> {
    let principal = entity_head(
        "principal",
        principal_entity(),
        vec!["Task", "Component", "Secret"],
    );
    let resource = entity_head(
        "resource",
        resource_entity(),
        vec!["Secret", "Scope", "Output"],
    );
    let clauses = prop::collection::vec((any::<bool>(), condition()), 0..3);
    (any::<bool>(), principal, action_head(), resource, clauses).prop_map(
        |(permit, p, a, r, clauses)| {
            let effect = if permit { "permit" } else { "forbid" };
            let body: String = clauses
                .iter()
                .map(|(when, c)| format!(" {} {{ {c} }}", if *when { "when" } else { "unless" }))
                .collect();
            format!("{effect} ({p}, {a}, {r}){body};\n")
        },
    )
}

/// One generated request: who, what, on which, over what context.
#[derive(Debug, Clone)]
struct Req {
    who: u8,
    task_scope: &'static str,
    roles: Vec<&'static str>,
    action: Action,
    /// Scope segments; for a secret or an output, the last is its name.
    target: Vec<&'static str>,
    /// Decide on a resource of the wrong type for the action.
    mismatched: bool,
    tag: Option<&'static str>,
    tls: bool,
    uid: Option<u32>,
    request_id: &'static str,
}

fn request() -> impl Strategy<Value = Req> {
    (
        (
            0..4u8,
            prop::sample::select(SCOPES[1..].to_vec()),
            prop::sample::subsequence(vec!["platform", "ops", "tasks"], 0..=3),
            prop::sample::select(Action::ALL.to_vec()),
            prop::collection::vec(prop::sample::select(vec!["a", "b", "t-4", "x", "db"]), 0..5),
        ),
        (
            prop::bool::weighted(0.1),
            prop::option::of(prop::sample::select(vec!["r", "s"])),
            any::<bool>(),
            prop::option::of(prop::sample::select(vec![0u32, 1, 7])),
            prop::sample::select(vec!["x1", "y"]),
        ),
    )
        .prop_map(
            |(
                (who, task_scope, roles, action, target),
                (mismatched, tag, tls, uid, request_id),
            )| {
                Req {
                    who,
                    task_scope,
                    roles,
                    action,
                    target,
                    mismatched,
                    tag,
                    tls,
                    uid,
                    request_id,
                }
            },
        )
}

/// Checks the sliced decision against the unsliced one for `r`; returns
/// the decision and whether slicing left any policy out.
fn check(a: &Authorizer, r: &Req) -> Result<(Decision, bool), TestCaseError> {
    let principal = match r.who {
        0 => task("t", r.task_scope),
        1 => task("u", r.task_scope),
        2 => component("c", &r.roles),
        _ => component("z", &[]),
    };
    let ctx = RequestContext {
        transport: if r.tls {
            Transport::Tls
        } else {
            Transport::Unix
        },
        peer: r.uid.map(|u| PeerCred {
            uid: u,
            gid: u,
            pid: None,
        }),
        request_id: r.request_id,
        spiffe_id: None,
    };
    let labels: Labels = r
        .tag
        .iter()
        .map(|v| ("c".to_owned(), (*v).to_owned()))
        .collect();
    let scope_path = scope(&r.target.join("/"));
    let secret_path = SecretPath::parse(&r.target.join("/")).ok();
    let on_scope = (r.action == Action::List) != r.mismatched;
    let resource = match (&secret_path, on_scope, r.action) {
        (Some(path), false, Action::Upload) => Resource::Output(path),
        (Some(path), false, _) => Resource::Secret {
            path,
            labels: Some(&labels),
        },
        _ => Resource::Scope(&scope_path),
    };
    let sliced = a.decide_uncached(&principal, r.action, resource, &ctx);
    let whole = a.evaluate_unsliced(&principal, r.action, resource, &ctx);
    prop_assert_eq!(
        &sliced,
        &whole,
        "{:?} {:?} {:?}",
        principal,
        r.action,
        resource
    );
    let snap = a.current.load();
    let dropped = build(&snap, &principal, r.action, resource, &ctx)
        .ok()
        .and_then(|(req, ents)| snap.slices.candidate_ids(&req, &ents))
        .is_some_and(|ids| ids.len() < snap.policies.num_of_policies());
    Ok((sliced, dropped))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// SECURITY: over random sets of permits and forbids with every head
    /// shape and bodies that error at runtime, the decision on the slice
    /// equals the decision on the whole set: allow or deny, the policies
    /// behind it, and every error, in order.
    #[test]
    fn sliced_decisions_equal_unsliced(
        policies in prop::collection::vec(generated_policy(), 1..24),
        with_shipped in any::<bool>(),
        requests in prop::collection::vec(request(), 1..10),
    ) {
        let mut text: String = policies.concat();
        if with_shipped {
            text += &shipped_sources().1[0].text;
        }
        let a = unvalidated(&text);
        for r in &requests {
            check(&a, r)?;
        }
    }
}

#[test]
fn generated_cases_cover_allows_forbids_errors_and_slices() {
    // The property is only as good as its cases: over a fixed run, the
    // generated sets and requests must reach allows, forbids, errors, and
    // slices that leave policies out (all in the same decision at times).
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (
        prop::collection::vec(generated_policy(), 1..24),
        prop::collection::vec(request(), 1..10),
    );
    let (mut allows, mut forbids, mut errors, mut dropped, mut both) = (0, 0, 0, 0, 0);
    for _ in 0..200 {
        let (policies, requests) = strategy.new_tree(&mut runner).unwrap().current();
        let a = unvalidated(&policies.concat());
        for r in &requests {
            let (d, left_out) = check(&a, r).unwrap();
            allows += usize::from(d.allowed);
            forbids += usize::from(!d.allowed && !d.policies.is_empty());
            errors += usize::from(!d.errors.is_empty());
            dropped += usize::from(left_out);
            both += usize::from(left_out && !d.errors.is_empty() && !d.policies.is_empty());
        }
    }
    for (what, n) in [
        ("allows", allows),
        ("forbids", forbids),
        ("errors", errors),
        ("slices", dropped),
        ("sliced decisions with reasons and errors", both),
    ] {
        assert!(n >= 20, "only {n} {what} in the generated cases");
    }
}

// --- What slicing leaves out ------------------------------------------------------

/// The shipped policies plus `n` operator policies of the bench's two
/// shapes (`benches/scale.rs`): tenant `i`'s tasks read `tenants/t-i`,
/// its component `svc-i` writes and deletes there.
fn with_tenants(n: usize) -> Authorizer {
    let (schema, mut policies) = shipped_sources();
    let mut text = String::new();
    for i in 0..n {
        text += &format!(
            "@id(\"tenant-read-{i}\")\npermit (principal is SecretBroker::Task, action == SecretBroker::Action::\"read\", resource in SecretBroker::Scope::\"tenants/t-{i}\")\nwhen {{ context.transport == \"unix\" }};\n\
             @id(\"tenant-write-{i}\")\npermit (principal == SecretBroker::Component::\"svc-{i}\", action in [SecretBroker::Action::\"write\", SecretBroker::Action::\"delete\"], resource in SecretBroker::Scope::\"tenants/t-{i}\");\n"
        );
    }
    policies.push(PolicySource {
        name: "operator.cedar".to_owned(),
        text,
    });
    Authorizer::from_sources(schema, policies).unwrap()
}

#[test]
fn a_thousand_policies_that_cannot_apply_are_left_out() {
    let a = with_tenants(500);
    assert_eq!(a.current.load().policies.num_of_policies(), 1005);
    let path = SecretPath::parse("acme/tasks/t-42/db").unwrap();
    let secret = Resource::Secret {
        path: &path,
        labels: None,
    };
    let t = task("t-42", "acme/tasks/t-42");
    // Only the shipped policies that can apply: one each, here.
    assert_eq!(
        candidates(&a, &t, Action::Read, secret),
        ["task-read-own-scope"]
    );
    let p = component("provisioner", &["platform"]);
    assert_eq!(
        candidates(&a, &p, Action::Read, secret),
        ["platform-never-reads"]
    );
    assert_eq!(
        candidates(&a, &p, Action::Write, secret),
        ["platform-provision"]
    );
    // A tenant's own policies join in under its tree, and only its own.
    let path = SecretPath::parse("tenants/t-7/x/db").unwrap();
    let secret = Resource::Secret {
        path: &path,
        labels: None,
    };
    assert_eq!(
        candidates(&a, &task("t", "tenants/t-7"), Action::Read, secret),
        ["task-read-own-scope", "tenant-read-7"]
    );
    assert_eq!(
        candidates(&a, &component("svc-7", &[]), Action::Delete, secret),
        ["tenant-write-7"]
    );
    assert_eq!(
        candidates(&a, &component("svc-8", &[]), Action::Delete, secret),
        Vec::<String>::new()
    );
    // And the decisions are the ones the whole set gives.
    for (who, action, allowed) in [
        (task("t", "tenants/t-7"), Action::Read, true),
        // `tenant-read-7` lets any task read there, as in the bench.
        (task("t", "tenants/t-8"), Action::Read, true),
        (task("t", "tenants/t-7"), Action::Write, false),
        (component("svc-7", &[]), Action::Delete, true),
        (component("svc-8", &[]), Action::Delete, false),
    ] {
        let d = a.decide_uncached(&who, action, secret, &CTX);
        assert_eq!(d, a.evaluate_unsliced(&who, action, secret, &CTX));
        assert_eq!(d.allowed, allowed, "{who:?} {action:?}");
    }
}

#[test]
fn the_set_handed_to_cedar_is_the_slice() {
    let a = with_tenants(500);
    let snap = a.current.load();
    let path = SecretPath::parse("acme/t-42/db").unwrap();
    let secret = Resource::Secret {
        path: &path,
        labels: None,
    };
    let (request, entities) =
        build(&snap, &task("t", "acme/t-42"), Action::Read, secret, &CTX).unwrap();
    let first = snap.slices.select(&snap.policies, &request, &entities);
    assert_eq!(first.set().num_of_policies(), 1);
    // The same slice again comes from the index's cache, not a rebuild.
    let again = snap.slices.select(&snap.policies, &request, &entities);
    match (&first, &again) {
        (super::Selected::Sliced(x), super::Selected::Sliced(y)) => assert!(Arc::ptr_eq(x, y)),
        _ => panic!("expected sliced sets"),
    }
    // When every policy can apply, the whole set is used as it is.
    let only = "@id(\"all\") permit (principal, action, resource);";
    let all = Authorizer::from_sources(
        shipped_sources().0,
        vec![PolicySource {
            name: "all.cedar".to_owned(),
            text: only.to_owned(),
        }],
    )
    .unwrap();
    let snap = all.current.load();
    let (request, entities) =
        build(&snap, &task("t", "acme/t-42"), Action::Read, secret, &CTX).unwrap();
    assert!(matches!(
        snap.slices.select(&snap.policies, &request, &entities),
        super::Selected::Full(_)
    ));
}

#[test]
fn action_groups_follow_the_schema() {
    let a = unvalidated(&format!(
        "@id(\"secrets\") permit (principal, action in {}, resource);\n\
         @id(\"all\") permit (principal, action in [{}], resource);\n\
         @id(\"eq-group\") permit (principal, action == {}, resource);\n\
         @id(\"list\") permit (principal, action in [{}, {}], resource);\n",
        uid("Action", "secrets"),
        uid("Action", "all"),
        uid("Action", "secrets"),
        uid("Action", "upload"),
        uid("Action", "list"),
    ));
    let path = SecretPath::parse("a/x").unwrap();
    let secret = Resource::Secret {
        path: &path,
        labels: None,
    };
    let root = ScopePath::root();
    let t = task("t", "a");
    // `action == G` never holds for a member of G: equality, not `in`.
    for action in [Action::Read, Action::Write, Action::Delete] {
        assert_eq!(
            candidates(&a, &t, action, secret),
            ["secrets", "all"],
            "{action:?}"
        );
    }
    assert_eq!(
        candidates(&a, &t, Action::List, Resource::Scope(&root)),
        ["all", "list"]
    );
    assert_eq!(
        candidates(&a, &t, Action::Upload, Resource::Output(&path)),
        ["list"]
    );
}

#[test]
fn principal_heads_slice_by_the_principal_and_its_roles() {
    let a = unvalidated(&format!(
        "@id(\"c\") permit (principal == {}, action, resource);\n\
         @id(\"ops\") permit (principal in {}, action, resource);\n\
         @id(\"task-in-tasks\") permit (principal is {NS}::Task in {}, action, resource);\n\
         @id(\"tasks\") forbid (principal is {NS}::Task, action, resource);\n",
        uid("Component", "c"),
        uid("Role", "ops"),
        uid("Role", "tasks"),
    ));
    let path = SecretPath::parse("a/x").unwrap();
    let secret = Resource::Secret {
        path: &path,
        labels: None,
    };
    assert_eq!(
        candidates(&a, &component("c", &["ops"]), Action::Read, secret),
        ["c", "ops"]
    );
    assert_eq!(
        candidates(&a, &component("d", &["tasks"]), Action::Read, secret),
        Vec::<String>::new()
    );
    assert_eq!(
        candidates(&a, &task("t", "a"), Action::Read, secret),
        ["task-in-tasks", "tasks"]
    );
}

#[test]
fn a_reload_indexes_the_new_set() {
    let dir = tempfile::tempdir().unwrap();
    let (schema, policies) = shipped_sources();
    std::fs::write(dir.path().join("schema.cedarschema"), &schema.text).unwrap();
    std::fs::write(dir.path().join("broker.cedar"), &policies[0].text).unwrap();
    let a = Authorizer::load_dir(dir.path()).unwrap();
    let t = task("t", "acme/t-42");
    let path = SecretPath::parse("acme/t-42/db").unwrap();
    let secret = Resource::Secret {
        path: &path,
        labels: None,
    };
    assert!(a.decide_uncached(&t, Action::Read, secret, &CTX).allowed);
    std::fs::write(
        dir.path().join("deny.cedar"),
        "@id(\"no-t-42\")\nforbid (principal, action, resource in SecretBroker::Scope::\"acme/t-42\");\n",
    )
    .unwrap();
    a.reload().unwrap();
    assert_eq!(
        candidates(&a, &t, Action::Read, secret),
        ["task-read-own-scope", "no-t-42"]
    );
    let d = a.decide_uncached(&t, Action::Read, secret, &CTX);
    assert_eq!(
        (d.allowed, &*d.policies),
        (false, &["no-t-42".to_owned()][..])
    );
}

#[test]
fn the_cache_of_sliced_sets_is_bounded() {
    let a = with_tenants(super::MAX_SETS + 100);
    let snap = a.current.load();
    for i in 0..super::MAX_SETS + 100 {
        let scope = ScopePath::parse(&format!("tenants/t-{i}")).unwrap();
        let (request, entities) = build(
            &snap,
            &task("t", "tenants/t-0"),
            Action::List,
            Resource::Scope(&scope),
            &CTX,
        )
        .unwrap();
        let _ = snap.slices.select(&snap.policies, &request, &entities);
        let path = SecretPath::parse(&format!("tenants/t-{i}/db")).unwrap();
        let secret = Resource::Secret {
            path: &path,
            labels: None,
        };
        let (request, entities) =
            build(&snap, &task("t", "tenants/t-0"), Action::Read, secret, &CTX).unwrap();
        let selected = snap.slices.select(&snap.policies, &request, &entities);
        assert_eq!(selected.set().num_of_policies(), 2, "tenant {i}");
    }
    let built = snap.slices.built.lock().unwrap();
    assert!(built.sets.len() <= super::MAX_SETS, "{}", built.sets.len());
    assert!(built.sets.len() > 1);
    let held: usize = built.sets.keys().map(|k| k.len()).sum();
    assert_eq!(held, built.held);
}
