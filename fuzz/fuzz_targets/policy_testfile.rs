//! Fuzzes the `policy test` file parser (Cedar's JSON form and the broker's
//! YAML form) and runs whatever parses against the shipped policies: a
//! test file is a CI input, so it must give cases or a clear error, never
//! a panic.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use secret_broker::authz::{Authorizer, testfile};

fn authz() -> &'static Authorizer {
    static A: OnceLock<Authorizer> = OnceLock::new();
    A.get_or_init(|| {
        let (schema, policies) = secret_broker::authz::shipped_sources();
        Authorizer::from_sources(schema, policies).expect("shipped policies")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // A directory that does not exist: referenced entity files resolve to
    // nothing, so the parser never reads the machine's files.
    let file = Path::new("/nonexistent-fuzz-dir/cases.yaml");
    if let Ok(parsed) = testfile::parse(file, text) {
        for case in &parsed.cases {
            let outcome = testfile::run(authz(), case, None);
            assert!(outcome.passed || !outcome.reason.is_empty(), "a failing case must say why");
        }
    }
});
