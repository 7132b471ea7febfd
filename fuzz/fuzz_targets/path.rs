//! Fuzzes secret-path, scope and route parsing: no panics, and whatever is
//! accepted is canonical (round-trips to the same string, only grammar
//! characters, segment-wise scope containment).
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_broker::api::routes::Route;
use secret_broker::secret::{ScopePath, SecretPath};

fn segment_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(p) = SecretPath::parse(s) {
        assert_eq!(p.as_str(), s);
        assert!(s.len() <= 512);
        let segs: Vec<&str> = s.split('/').collect();
        assert!((2..=16).contains(&segs.len()));
        assert!(segs.iter().all(|g| segment_ok(g)), "accepted a bad segment: {s:?}");
        assert_eq!(p.name(), *segs.last().unwrap_or(&""));
        assert!(p.is_within(&p.scope()));
        assert_eq!(SecretPath::parse(&p.to_string()).ok().as_ref(), Some(&p));
    }
    if let Ok(scope) = ScopePath::parse(s) {
        assert_eq!(scope.as_str(), s);
        assert!(s.split('/').all(segment_ok));
        for a in scope.ancestors() {
            assert!(ScopePath::parse(a).is_ok_and(|anc| anc.contains_scope(&scope)));
        }
    }
    if let Ok(Route::Secret(p)) = Route::parse(s) {
        // Dots may repeat inside a segment (`a..b` is a name); what must
        // never pass is a `.` or `..` segment, or any percent-encoding.
        assert!(!p.as_str().contains('%'));
        assert!(p.as_str().split('/').all(|g| g != "." && g != ".." && segment_ok(g)));
    }
});
