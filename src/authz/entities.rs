//! Cedar entities for a request: the principal, its roles and scope, and the resource.
//!
//! Entity ids are the paths themselves. Every `Scope` and `Secret` entity
//! lists *all* its ancestor scopes as direct parents (nearest first, then the
//! root `Scope::""`), so the hierarchy is already transitively closed and no
//! entity store outside the request is needed. Ancestors are computed by
//! [`ScopePath::ancestors`], which is segment-wise: `acme/t-42` has parent
//! `acme`, never `acme/t-4`.

use std::sync::LazyLock;

use cedar_policy::{Entities, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use cedar_policy_core::entities::{Entities as CoreEntities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;

use super::{Action, Resource};
use crate::identity::{Principal, PrincipalKind};
use crate::secret::{ScopePath, SecretPath};

/// The Cedar namespace of the broker's schema.
pub const NAMESPACE: &str = "SecretBroker";

/// Why entities for a request could not be built. Carries names, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntityError {
    /// A type name of the schema did not parse (a bug, caught by tests).
    #[error("internal: cannot build cedar type names: {0}")]
    TypeNames(String),
    /// A task principal was configured without a scope.
    #[error("task `{0}` has no scope")]
    TaskWithoutScope(String),
    /// Cedar refused the entity store (e.g. two different entities, one uid).
    #[error("cannot build the entity store: {0}")]
    Store(String),
    /// Cedar refused an entity.
    #[error("cannot build entity `{uid}`: {message}")]
    Entity {
        /// The entity that failed.
        uid: String,
        /// Cedar's reason.
        message: String,
    },
}

/// The entity types of the schema, parsed once.
#[derive(Debug)]
struct Types {
    role: EntityTypeName,
    scope: EntityTypeName,
    component: EntityTypeName,
    task: EntityTypeName,
    secret: EntityTypeName,
    output: EntityTypeName,
    action: EntityTypeName,
}

// Parsing a type name runs Cedar's parser; do it once per process, not per
// request. A failure is kept (not panicked on) and reported by every caller.
static TYPES: LazyLock<Result<Types, String>> = LazyLock::new(|| {
    let parse = |basename: &str| {
        format!("{NAMESPACE}::{basename}")
            .parse::<EntityTypeName>()
            .map_err(|e| format!("`{NAMESPACE}::{basename}`: {e}"))
    };
    Ok(Types {
        role: parse("Role")?,
        scope: parse("Scope")?,
        component: parse("Component")?,
        task: parse("Task")?,
        secret: parse("Secret")?,
        output: parse("Output")?,
        action: parse("Action")?,
    })
});

fn types() -> Result<&'static Types, EntityError> {
    TYPES
        .as_ref()
        .map_err(|e| EntityError::TypeNames(e.clone()))
}

fn uid(ty: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
}

/// `SecretBroker::Action::"<action>"`.
pub fn action_uid(action: Action) -> Result<EntityUid, EntityError> {
    Ok(uid(&types()?.action, action.as_str()))
}

/// `SecretBroker::Component::"<name>"` or `SecretBroker::Task::"<name>"`.
pub fn principal_uid(principal: &Principal) -> Result<EntityUid, EntityError> {
    let t = types()?;
    let ty = match principal.kind {
        PrincipalKind::Component => &t.component,
        PrincipalKind::Task => &t.task,
    };
    Ok(uid(ty, &principal.name))
}

/// `SecretBroker::Scope::"<scope>"` (`Scope::""` for the root).
pub fn scope_uid(scope: &ScopePath) -> Result<EntityUid, EntityError> {
    Ok(uid(&types()?.scope, scope.as_str()))
}

/// `SecretBroker::Secret::"<path>"`.
pub fn secret_uid(path: &SecretPath) -> Result<EntityUid, EntityError> {
    Ok(uid(&types()?.secret, path.as_str()))
}

/// `SecretBroker::Output::"<path>"`.
pub fn output_uid(path: &SecretPath) -> Result<EntityUid, EntityError> {
    Ok(uid(&types()?.output, path.as_str()))
}

/// The uid of a request's resource.
pub fn resource_uid(resource: Resource<'_>) -> Result<EntityUid, EntityError> {
    match resource {
        Resource::Secret { path, .. } => secret_uid(path),
        Resource::Scope(scope) => scope_uid(scope),
        Resource::Output(path) => output_uid(path),
    }
}

/// Every ancestor scope of `scope` as a parent uid: its proper prefixes,
/// nearest first, then the root. The root itself has none.
fn scope_parents(t: &Types, scope: &ScopePath) -> Vec<EntityUid> {
    if scope.is_root() {
        return Vec::new();
    }
    // INVARIANT: listing every ancestor directly keeps the hierarchy
    // transitively closed without Cedar having to know other scopes. The
    // root is included so that `resource in Scope::""` holds for everything,
    // as `ScopePath::root().contains_path` does.
    scope
        .ancestors()
        .chain(std::iter::once(""))
        .map(|a| uid(&t.scope, a))
        .collect()
}

/// The `Scope` entity for `scope`, with all its ancestors as parents.
pub fn scope_entity(scope: &ScopePath) -> Result<Entity, EntityError> {
    let t = types()?;
    Ok(Entity::new_no_attrs(
        uid(&t.scope, scope.as_str()),
        scope_parents(t, scope).into_iter().collect(),
    ))
}

/// The principal's entity, its `Role` entities and, for a task, its `Scope`
/// entity (the target of its `scope` attribute).
pub fn principal_entities(principal: &Principal) -> Result<Vec<Entity>, EntityError> {
    let t = types()?;
    let me = principal_uid(principal)?;
    let roles: Vec<EntityUid> = principal.roles.iter().map(|r| uid(&t.role, r)).collect();
    let mut out = Vec::with_capacity(roles.len() + 2);
    let entity = match principal.kind {
        PrincipalKind::Component => Entity::new_no_attrs(me, roles.iter().cloned().collect()),
        PrincipalKind::Task => {
            // SECURITY: a task without a scope must not be treated as
            // unconfined (or as the root scope); refuse to build it, which
            // the caller turns into a deny.
            let scope = principal
                .scope
                .as_ref()
                .ok_or_else(|| EntityError::TaskWithoutScope(principal.name.clone()))?;
            let attrs = [(
                "scope".to_owned(),
                RestrictedExpression::new_entity_uid(uid(&t.scope, scope.as_str())),
            )];
            let entity = Entity::new_with_tags(me.clone(), attrs, roles.iter().cloned(), [])
                .map_err(|e| EntityError::Entity {
                    uid: me.to_string(),
                    message: e.to_string(),
                })?;
            out.push(scope_entity(scope)?);
            entity
        }
    };
    out.push(entity);
    out.extend(roles.into_iter().map(Entity::with_uid));
    Ok(out)
}

/// The resource's entity: a `Secret` (attr `name`, labels as tags, parents
/// its scope and all the scope's ancestors) or a `Scope`.
pub fn resource_entities(resource: Resource<'_>) -> Result<Vec<Entity>, EntityError> {
    match resource {
        Resource::Scope(scope) => Ok(vec![scope_entity(scope)?]),
        Resource::Output(path) => {
            // An output object sits in its scope tree exactly as a secret
            // does, so `resource in principal.scope` means the same thing.
            let t = types()?;
            let scope = path.scope();
            let parents =
                std::iter::once(uid(&t.scope, scope.as_str())).chain(scope_parents(t, &scope));
            Ok(vec![Entity::new_no_attrs(
                uid(&t.output, path.as_str()),
                parents.collect(),
            )])
        }
        Resource::Secret { path, labels } => {
            let t = types()?;
            let scope = path.scope();
            let me = uid(&t.secret, path.as_str());
            let parents =
                std::iter::once(uid(&t.scope, scope.as_str())).chain(scope_parents(t, &scope));
            let attrs = [(
                "name".to_owned(),
                RestrictedExpression::new_string(path.name().to_owned()),
            )];
            let tags = labels
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone())));
            let entity = Entity::new_with_tags(me.clone(), attrs, parents, tags).map_err(|e| {
                EntityError::Entity {
                    uid: me.to_string(),
                    message: e.to_string(),
                }
            })?;
            Ok(vec![entity])
        }
    }
}

/// The entity store for one request: `list` as given, with no
/// transitive-closure pass.
///
/// `cedar_policy::Entities::from_entities` always recomputes the closure,
/// which costs ~20µs per request; the entities built in this module already
/// list every ancestor as a direct parent, and action entities come from the
/// schema with their ancestors computed. Only pass entities built here (or
/// otherwise closed): a missing indirect ancestor would make `in` false.
pub fn request_store(list: Vec<Entity>) -> Result<Entities, EntityError> {
    // The public API has no way to skip the closure, so build the core
    // store and wrap it; the clone is of a few small maps.
    CoreEntities::from_entities(
        list.iter()
            .map(|e| AsRef::<cedar_policy_core::ast::Entity>::as_ref(e).clone()),
        None::<&NoEntitiesSchema>,
        TCComputation::AssumeAlreadyComputed,
        Extensions::none(),
    )
    .map(Entities::from)
    .map_err(|e| EntityError::Store(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Labels;

    fn task(scope: &str) -> Principal {
        Principal {
            name: "t".into(),
            kind: PrincipalKind::Task,
            roles: vec!["tasks".into()],
            scope: Some(ScopePath::parse(scope).unwrap()),
        }
    }

    fn parents(e: &Entity) -> Vec<String> {
        // The JSON form is the stable public view of an entity's parents.
        let json = e.to_json_value().unwrap();
        let mut out: Vec<String> = json["parents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| format!("{}::{}", p["type"].as_str().unwrap(), p["id"]))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn scope_parents_are_all_prefixes_and_root() {
        let e = scope_entity(&ScopePath::parse("acme/tasks/t-42").unwrap()).unwrap();
        assert_eq!(
            e.uid().to_string(),
            r#"SecretBroker::Scope::"acme/tasks/t-42""#
        );
        assert_eq!(
            parents(&e),
            [
                r#"SecretBroker::Scope::"""#,
                r#"SecretBroker::Scope::"acme""#,
                r#"SecretBroker::Scope::"acme/tasks""#,
            ]
        );
        assert!(parents(&scope_entity(&ScopePath::root()).unwrap()).is_empty());
    }

    #[test]
    fn secret_has_name_tags_and_scope_parents() {
        let path = SecretPath::parse("acme/t-42/db-password").unwrap();
        let labels = Labels::from([("team".to_owned(), "db".to_owned())]);
        let es = resource_entities(Resource::Secret {
            path: &path,
            labels: Some(&labels),
        })
        .unwrap();
        assert_eq!(es.len(), 1);
        let json = es[0].to_json_value().unwrap();
        assert_eq!(json["attrs"]["name"], "db-password");
        assert_eq!(json["tags"]["team"], "db");
        assert_eq!(
            parents(&es[0]),
            [
                r#"SecretBroker::Scope::"""#,
                r#"SecretBroker::Scope::"acme""#,
                r#"SecretBroker::Scope::"acme/t-42""#,
            ]
        );
    }

    #[test]
    fn task_entities_carry_scope_and_roles() {
        let es = principal_entities(&task("acme/t-42")).unwrap();
        let uids: Vec<String> = es.iter().map(|e| e.uid().to_string()).collect();
        assert_eq!(
            uids,
            [
                r#"SecretBroker::Scope::"acme/t-42""#,
                r#"SecretBroker::Task::"t""#,
                r#"SecretBroker::Role::"tasks""#,
            ]
        );
        let json = es[1].to_json_value().unwrap();
        assert_eq!(json["attrs"]["scope"]["__entity"]["id"], "acme/t-42");
        assert_eq!(parents(&es[1]), [r#"SecretBroker::Role::"tasks""#]);
    }

    #[test]
    fn task_without_scope_is_refused() {
        let mut p = task("a");
        p.scope = None;
        assert_eq!(
            principal_entities(&p).unwrap_err(),
            EntityError::TaskWithoutScope("t".into())
        );
    }
}
