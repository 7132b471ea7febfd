//! Vault store unit tests: error mapping and leak checks that need no server.

use super::*;
use crate::config::{RemoteConfig, VaultAuth};

const CANARY: &str = "hvs.CANARY-d41c7e";

#[test]
fn statuses_map_to_kinds() {
    assert_eq!(by_status(404, "", "a/b").kind(), StoreErrorKind::NotFound);
    assert_eq!(
        by_status(403, "permission denied", "").kind(),
        StoreErrorKind::Denied
    );
    assert!(
        by_status(403, "permission denied", "")
            .to_string()
            .contains("writer.hcl")
    );
    assert_eq!(
        by_status(503, "Vault is sealed", "").kind(),
        StoreErrorKind::Unavailable
    );
    assert_eq!(by_status(400, "bad", "").kind(), StoreErrorKind::Invalid);
    assert_eq!(by_status(500, "", "").kind(), StoreErrorKind::Backend);
}

#[tokio::test]
async fn an_unreachable_server_neither_fails_start_nor_leaks_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{CANARY}\n")).unwrap();
    let config = VaultConfig {
        // Port 9 (discard) on loopback: nothing listens there.
        address: "http://127.0.0.1:9".into(),
        mount: "secret".into(),
        namespace: None,
        ca_file: None,
        auth: VaultAuth::Token {
            token_file: Some(token_file),
        },
        remote: RemoteConfig {
            prefix: String::new(),
            timeout: Duration::from_millis(500),
        },
    };
    let store = VaultStore::connect(&config).await.unwrap();
    let err = store.health().await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
    let path = SecretPath::parse("acme/db").unwrap();
    let err = store.get(&path).await.unwrap_err();
    let shown = format!("{err} {err:?} {store:?}");
    assert!(!shown.contains(CANARY), "{shown}");
    assert!(!shown.contains("CANARY"), "{shown}");
}

#[tokio::test]
async fn missing_credential_files_are_refused_by_name() {
    let config = VaultConfig {
        address: "http://127.0.0.1:9".into(),
        mount: "secret".into(),
        namespace: None,
        ca_file: None,
        auth: VaultAuth::AppRole {
            role_id: "r".into(),
            secret_id_file: "/nonexistent/secret-id".into(),
        },
        remote: RemoteConfig {
            prefix: String::new(),
            timeout: Duration::from_millis(500),
        },
    };
    let err = VaultStore::connect(&config).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Denied);
    assert!(err.to_string().contains("/nonexistent/secret-id"), "{err}");
}
