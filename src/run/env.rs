//! COMMAND's extra environment: `--env` names as given, `--env-from`
//! names mapped from paths, collisions refused, values checked.

use std::collections::BTreeMap;

use super::RunError;
use super::spec::EnvSpec;
use crate::secret::{ScopePath, SecretBytes, SecretPath};

/// The variable name for `path` under `scope`: the relative path
/// upper-cased, every byte outside `[A-Z0-9_]` mapped to `_`
/// (`acme/t/db/pass` under `acme/t` → `DB_PASS`).
pub fn name_for(scope: &ScopePath, path: &SecretPath) -> String {
    let rel = path
        .as_str()
        .strip_prefix(scope.key_prefix().as_str())
        .unwrap_or(path.as_str());
    rel.bytes()
        .map(|b| {
            let u = b.to_ascii_uppercase();
            if u.is_ascii_uppercase() || u.is_ascii_digit() || u == b'_' {
                char::from(u)
            } else {
                '_'
            }
        })
        .collect()
}

/// Builds the variables: every `--env`, then every `--env-from` secret
/// whose name no `--env` took. Two sources for one name (two `--env`, or
/// two listed paths) are an error naming both paths. A value must be
/// UTF-8 without NUL to be a variable.
pub fn build(
    explicit: &[EnvSpec],
    listed: &[(ScopePath, SecretPath)],
    values: &BTreeMap<SecretPath, super::Fetched>,
) -> Result<Vec<(String, SecretBytes)>, RunError> {
    // name → the path it comes from.
    let mut chosen: BTreeMap<String, &SecretPath> = BTreeMap::new();
    for e in explicit {
        if let Some(first) = chosen.insert(e.name.clone(), &e.path) {
            return Err(RunError::Collision {
                name: e.name.clone(),
                first: first.as_str().to_owned(),
                second: e.path.as_str().to_owned(),
            });
        }
    }
    let explicit_names: Vec<&str> = explicit.iter().map(|e| e.name.as_str()).collect();
    let mut from_listing: BTreeMap<String, &SecretPath> = BTreeMap::new();
    for (scope, path) in listed {
        let name = name_for(scope, path);
        if explicit_names.contains(&name.as_str()) {
            continue; // an explicit `--env` wins
        }
        match from_listing.get(&name) {
            // The same secret listed under two nested scopes maps to two
            // names, never to one; the same path twice is one source.
            Some(first) if *first == path => {}
            Some(first) => {
                return Err(RunError::Collision {
                    name,
                    first: first.as_str().to_owned(),
                    second: path.as_str().to_owned(),
                });
            }
            None => {
                from_listing.insert(name, path);
            }
        }
    }
    chosen.extend(from_listing);
    let mut out = Vec::with_capacity(chosen.len());
    for (name, path) in chosen {
        let Some(fetched) = values.get(path) else {
            // INVARIANT: `gather` read every path it hands to `build`.
            return Err(RunError::Internal(format!("`{path}` was not read")));
        };
        let bytes = fetched.value.expose_secret();
        if std::str::from_utf8(bytes).is_err() {
            return Err(RunError::EnvValue {
                name,
                path: path.as_str().to_owned(),
                why: "is not UTF-8",
            });
        }
        if bytes.contains(&0) {
            return Err(RunError::EnvValue {
                name,
                path: path.as_str().to_owned(),
                why: "holds a NUL byte",
            });
        }
        out.push((name, fetched.value.duplicate()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Fetched;
    use proptest::prelude::*;

    fn p(s: &str) -> SecretPath {
        SecretPath::parse(s).unwrap()
    }
    fn sc(s: &str) -> ScopePath {
        ScopePath::parse(s).unwrap()
    }
    fn val(v: &[u8]) -> Fetched {
        Fetched {
            version: 1,
            value: SecretBytes::copy_from(v),
        }
    }

    #[test]
    fn maps_names_as_documented() {
        assert_eq!(name_for(&sc("acme/t"), &p("acme/t/db/pass")), "DB_PASS");
        assert_eq!(name_for(&sc("acme/t"), &p("acme/t/api.key-2")), "API_KEY_2");
    }

    #[test]
    fn collisions_name_both_paths_and_env_wins() {
        let mut values = BTreeMap::new();
        values.insert(p("acme/t/db-pass"), val(b"canary-1"));
        values.insert(p("acme/t/db.pass"), val(b"canary-2"));
        values.insert(p("acme/t/other"), val(b"three"));
        let listed = vec![
            (sc("acme/t"), p("acme/t/db-pass")),
            (sc("acme/t"), p("acme/t/db.pass")),
        ];
        let err = build(&[], &listed, &values).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("acme/t/db-pass") && msg.contains("acme/t/db.pass"),
            "{msg}"
        );
        assert!(!msg.contains("canary"), "{msg}");
        // An explicit --env of that name settles it.
        let explicit = vec![EnvSpec {
            name: "DB_PASS".into(),
            path: p("acme/t/other"),
        }];
        let env = build(&explicit, &listed, &values).unwrap();
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].0, "DB_PASS");
        assert_eq!(env[0].1.expose_secret(), b"three");
        // Two --env of one name.
        let twice = vec![explicit[0].clone(), explicit[0].clone()];
        assert!(matches!(
            build(&twice, &[], &values),
            Err(RunError::Collision { .. })
        ));
    }

    #[test]
    fn refuses_values_that_cannot_be_variables_without_quoting_them() {
        let mut values = BTreeMap::new();
        values.insert(p("acme/t/bin"), val(b"canary\xff"));
        values.insert(p("acme/t/nul"), val(b"canary\0x"));
        for path in ["acme/t/bin", "acme/t/nul"] {
            let e = vec![EnvSpec {
                name: "X".into(),
                path: p(path),
            }];
            let msg = build(&e, &[], &values).unwrap_err().to_string();
            assert!(msg.contains(path) && msg.contains("`X`"), "{msg}");
            assert!(!msg.contains("canary"), "{msg}");
        }
    }

    proptest! {
        #[test]
        fn mapped_names_are_portable(segs in proptest::collection::vec("[A-Za-z0-9][A-Za-z0-9._-]{0,8}", 1..4)) {
            let path = p(&format!("acme/t/{}", segs.join("/")));
            let name = name_for(&sc("acme/t"), &path);
            prop_assert!(!name.is_empty());
            prop_assert!(name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'));
            prop_assert_eq!(name.len(), path.as_str().len() - "acme/t/".len());
        }
    }
}
