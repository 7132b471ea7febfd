//! `include`: joined tables, relative paths, conflicts, missing files,
//! unknown keys named with the included file, and no nesting.

use std::path::Path;

use super::super::{Config, ConfigError, StoreConfig, VaultAuth};

const MAIN: &str = r#"
include = ["store/store.toml"]

[listen]
socket = "api.sock"

[[principal]]
name = "task"
type = "Task"
scope = "acme/tasks/t-42"
uid = 2000
"#;

const STORE: &str = r#"
[store]
backend = "vault"
address = "http://127.0.0.1:8200"
token_file = "vault-token"

[cache]
ttl = "0"
"#;

/// A temp dir with `config.toml` (`main`) and `store/store.toml` (`store`).
fn files(main: &str, store: Option<&str>) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, main).unwrap();
    if let Some(store) = store {
        std::fs::create_dir(dir.path().join("store")).unwrap();
        std::fs::write(dir.path().join("store/store.toml"), store).unwrap();
    }
    (dir, config)
}

fn load(main: &str, store: Option<&str>) -> Result<Config, ConfigError> {
    let (_dir, config) = files(main, store);
    Config::load(&config)
}

#[test]
fn included_tables_join_with_paths_relative_to_their_own_file() {
    let (dir, config) = files(MAIN, Some(STORE));
    let c = Config::load(&config).unwrap();
    // The main file's own paths resolve against its directory…
    assert_eq!(c.listen.socket, dir.path().join("api.sock"));
    assert_eq!(c.principals.len(), 1);
    // …and the included file's against the included file's.
    let StoreConfig::Vault(v) = &c.store else {
        panic!("not vault: {:?}", c.store);
    };
    assert_eq!(
        v.auth,
        VaultAuth::Token {
            token_file: Some(dir.path().join("store/vault-token"))
        }
    );
    assert!(c.cache.ttl.is_zero());
    // An absolute include works the same.
    let abs = MAIN.replace(
        "\"store/store.toml\"",
        &format!("\"{}\"", dir.path().join("store/store.toml").display()),
    );
    let c = Config::from_toml(&abs, "main.toml", Path::new("/elsewhere")).unwrap();
    assert_eq!(c.store.backend(), "vault");
    assert_eq!(c.listen.socket, Path::new("/elsewhere/api.sock"));
}

#[test]
fn no_include_and_an_empty_list_change_nothing() {
    let c = load("include = []\n", None).unwrap();
    assert_eq!(c.store.backend(), "embedded");
}

#[test]
fn a_table_set_in_both_files_is_an_error_naming_both() {
    let main = MAIN.replace("[listen]", "[store]\nbackend = \"embedded\"\n\n[listen]");
    let e = load(&main, Some(STORE)).unwrap_err().to_string();
    assert!(e.starts_with("config key `store`: set in both `"), "{e}");
    assert!(
        e.contains("config.toml") && e.contains("store/store.toml"),
        "{e}"
    );
    // Arrays of tables too: principals come from one file.
    let store = format!("{STORE}\n[[principal]]\nname = \"x\"\ntype = \"Component\"\nuid = 1\n");
    let e = load(MAIN, Some(&store)).unwrap_err().to_string();
    assert!(e.contains("config key `principal`: set in both"), "{e}");
}

#[test]
fn a_missing_included_file_is_a_read_error_naming_it() {
    let e = load(MAIN, None).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    let e = e.to_string();
    assert!(
        e.starts_with("cannot read config `") && e.contains("store/store.toml`"),
        "{e}"
    );
    let e = load("include = [\"\"]\n", None).unwrap_err().to_string();
    assert!(e.contains("config key `include`"), "{e}");
    // A directory or a device is refused, not read (no hang on /dev/zero).
    for path in ["/dev/zero", "/"] {
        let e = load(&format!("include = [\"{path}\"]\n"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a regular file"), "{e}");
    }
}

#[test]
fn errors_inside_the_included_file_name_it() {
    let store = STORE.replace("token_file", "tokne_file");
    let e = load(MAIN, Some(&store)).unwrap_err().to_string();
    assert!(e.contains("store/store.toml` is not valid"), "{e}");
    assert!(e.contains("tokne_file"), "{e}");
    // A bad value (not a parse error) names the file as well.
    let store = STORE.replace("http://127.0.0.1:8200", "http://vault.example:8200");
    let e = load(MAIN, Some(&store)).unwrap_err().to_string();
    assert!(e.starts_with("in included config `"), "{e}");
    assert!(
        e.contains("store/store.toml`: config key `store.address`"),
        "{e}"
    );
    // Inline credentials are refused there too, without echoing them.
    let store = STORE.replace("token_file = \"vault-token\"", "token = \"s.CANARY\"");
    let e = load(MAIN, Some(&store)).unwrap_err().to_string();
    assert!(e.contains("never inline") && !e.contains("CANARY"), "{e}");
}

#[test]
fn includes_do_not_nest() {
    let store = format!("include = [\"more.toml\"]\n{STORE}");
    let e = load(MAIN, Some(&store)).unwrap_err().to_string();
    assert!(
        e.contains("config key `include`") && e.contains("may not include other files"),
        "{e}"
    );
    // Including itself is the same error, not a loop.
    let (_dir, config) = files("include = [\"config.toml\"]\n", None);
    let e = Config::load(&config).unwrap_err().to_string();
    assert!(e.contains("may not include other files"), "{e}");
}

#[test]
fn include_must_be_a_list_of_file_names() {
    let e = load("include = \"store.toml\"\n", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not valid"), "{e}");
}

#[test]
fn an_included_uploads_table_joins_and_a_second_one_is_refused() {
    let store = format!("{STORE}\n[uploads]\nbucket = \"task-output\"\nmax_size = \"2MiB\"\n");
    let c = load(MAIN, Some(&store)).unwrap();
    let u = c.uploads.expect("the included [uploads] is kept");
    assert_eq!((u.bucket.as_str(), u.max_size), ("task-output", 2 << 20));
    // Not set anywhere: off.
    assert!(load(MAIN, Some(STORE)).unwrap().uploads.is_none());
    let main = format!("{MAIN}\n[uploads]\nbucket = \"other\"\n");
    let e = load(&main, Some(&store)).unwrap_err().to_string();
    assert!(e.contains("`uploads`") && e.contains("set in both"), "{e}");
}
