//! Secret paths (`scope/name`) and scopes, parsed strictly per the contract.
//!
//! A path has 2 to 16 segments; a segment matches
//! `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`; the whole path is at most 512 bytes.
//! Everything else is rejected before authorization or any store call, so no
//! later layer ever sees `..`, percent-encoding, NUL or non-ASCII.

use std::fmt;
use std::sync::Arc;

/// Most segments a secret path may have (scope segments plus the name).
pub const MAX_SEGMENTS: usize = 16;
/// Longest a secret path may be, in bytes.
pub const MAX_PATH_BYTES: usize = 512;
const MAX_SEGMENT_BYTES: usize = 128;

/// Why a path was refused. Messages never echo more than the offending
/// segment's position, so a hostile path cannot flood logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty.
    #[error("path is empty")]
    Empty,
    /// Longer than [`MAX_PATH_BYTES`].
    #[error("path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    /// Too few segments for a secret (a secret needs a scope and a name).
    #[error("a secret path needs a scope and a name (`scope/name`)")]
    TooFewSegments,
    /// More than [`MAX_SEGMENTS`] segments.
    #[error("path has more than {MAX_SEGMENTS} segments")]
    TooManySegments,
    /// A segment is empty (leading, trailing or doubled `/`).
    #[error("segment {0} is empty (leading, trailing or doubled `/`)")]
    EmptySegment(usize),
    /// A segment breaks the segment grammar.
    #[error("segment {0} must match `[A-Za-z0-9][A-Za-z0-9._-]{{0,127}}`")]
    BadSegment(usize),
}

/// Checks one segment against the grammar.
fn valid_segment(b: &[u8]) -> bool {
    !b.is_empty()
        && b.len() <= MAX_SEGMENT_BYTES
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Splits and checks `raw`, returning the number of segments.
fn check(raw: &str, min_segments: usize) -> Result<usize, PathError> {
    if raw.is_empty() {
        return Err(PathError::Empty);
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    let mut n = 0;
    // Bytes, not `str::split`: a path is checked on every request, and its
    // segments are short (a byte loop beats a `memchr` call per segment).
    for (i, seg) in raw.as_bytes().split(|&b| b == b'/').enumerate() {
        n = i + 1;
        if n > MAX_SEGMENTS {
            return Err(PathError::TooManySegments);
        }
        if seg.is_empty() {
            return Err(PathError::EmptySegment(n));
        }
        if !valid_segment(seg) {
            return Err(PathError::BadSegment(n));
        }
    }
    if n < min_segments {
        return Err(PathError::TooFewSegments);
    }
    Ok(n)
}

/// A validated secret path: a scope of 1..=15 segments and a name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretPath {
    // INVARIANT: passes `check(_, 2)`; `name_at` is the byte index of the
    // last `/`. Shared, not copied: a request's permit, the store call and
    // the cache key all hold the same path, and a clone is a refcount.
    raw: Arc<str>,
    name_at: usize,
}

impl SecretPath {
    /// Parses a secret path (`scope/name`, 2..=16 segments).
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        check(raw, 2)?;
        let name_at = raw
            .bytes()
            .rposition(|b| b == b'/')
            .ok_or(PathError::TooFewSegments)?;
        Ok(Self {
            raw: Arc::from(raw),
            name_at,
        })
    }

    /// The whole path.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The last segment.
    pub fn name(&self) -> &str {
        &self.raw[self.name_at + 1..]
    }

    /// The scope the secret lives in (all segments but the last).
    pub fn scope(&self) -> ScopePath {
        ScopePath {
            raw: self.raw[..self.name_at].to_owned(),
        }
    }

    /// Whether this secret lies inside `scope`, nested scopes included
    /// (segment-wise: `acme/t-4` never contains `acme/t-42/x`).
    pub fn is_within(&self, scope: &ScopePath) -> bool {
        scope.contains_path(&self.raw)
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretPath({:?})", self.raw)
    }
}

/// A validated scope: 1..=15 segments, or the root scope (empty) that
/// contains everything.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopePath {
    // INVARIANT: empty (root), or passes `check(_, 1)` with at most 15 segments.
    raw: String,
}

impl ScopePath {
    /// The root scope, which contains every secret.
    pub fn root() -> Self {
        Self { raw: String::new() }
    }

    /// Parses a non-root scope (1..=15 segments, no trailing `/`).
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        let n = check(raw, 1)?;
        if n >= MAX_SEGMENTS {
            return Err(PathError::TooManySegments);
        }
        Ok(Self {
            raw: raw.to_owned(),
        })
    }

    /// The scope as written (`""` for the root).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether this is the root scope.
    pub fn is_root(&self) -> bool {
        self.raw.is_empty()
    }

    /// The proper ancestors of this scope, nearest first
    /// (`a/b/c` → `a/b`, `a`). The root is not included.
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        let raw = self.raw.as_str();
        raw.char_indices()
            .rev()
            .filter(|&(_, c)| c == '/')
            .map(move |(i, _)| &raw[..i])
    }

    /// The key prefix under which this scope's secrets live: `scope/`, or
    /// `""` for the root.
    pub fn key_prefix(&self) -> String {
        if self.raw.is_empty() {
            String::new()
        } else {
            format!("{}/", self.raw)
        }
    }

    /// Whether `path` (a secret or scope path) lies strictly inside this scope.
    pub fn contains_path(&self, path: &str) -> bool {
        self.raw.is_empty()
            || (path.len() > self.raw.len()
                && path.starts_with(self.raw.as_str())
                && path.as_bytes()[self.raw.len()] == b'/')
    }

    /// Whether `other` is this scope or nested inside it.
    pub fn contains_scope(&self, other: &ScopePath) -> bool {
        self == other || self.contains_path(&other.raw)
    }
}

impl fmt::Display for ScopePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for ScopePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopePath({:?})", self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_contract_example() {
        let p = SecretPath::parse("acme/tasks/t-42/db-password").unwrap();
        assert_eq!(p.name(), "db-password");
        assert_eq!(p.scope().as_str(), "acme/tasks/t-42");
        let anc: Vec<_> = p.scope().ancestors().map(str::to_owned).collect();
        assert_eq!(anc, ["acme/tasks", "acme"]);
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in [
            "",
            "x",
            "/a/b",
            "a/b/",
            "a//b",
            "a/../b",
            "a/./b",
            "../a",
            "a/%2F",
            "a/b%2Fc",
            "a/b\0",
            "a/\u{e9}",
            "a/.hidden",
            "a/-x",
            "a/_x",
            "a b/c",
            "a/b c",
            "a\\b/c",
        ] {
            assert!(SecretPath::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long_seg = "a".repeat(129);
        assert!(SecretPath::parse(&format!("a/{long_seg}")).is_err());
        let ok_seg = "a".repeat(128);
        assert!(SecretPath::parse(&format!("a/{ok_seg}")).is_ok());
        let seventeen = vec!["a"; 17].join("/");
        assert_eq!(
            SecretPath::parse(&seventeen),
            Err(PathError::TooManySegments)
        );
        assert!(SecretPath::parse(&vec!["a"; 16].join("/")).is_ok());
        let too_long = format!("{}/b", "a/".repeat(200));
        assert!(SecretPath::parse(&too_long).is_err());
    }

    #[test]
    fn scope_containment_is_segment_wise() {
        let t4 = ScopePath::parse("acme/t-4").unwrap();
        assert!(!SecretPath::parse("acme/t-42/x").unwrap().is_within(&t4));
        assert!(SecretPath::parse("acme/t-4/x").unwrap().is_within(&t4));
        assert!(SecretPath::parse("acme/t-4/db/x").unwrap().is_within(&t4));
        assert!(!SecretPath::parse("acme/x").unwrap().is_within(&t4));
        assert!(
            SecretPath::parse("acme/x")
                .unwrap()
                .is_within(&ScopePath::root())
        );
        assert!(t4.contains_scope(&t4));
        assert!(t4.contains_scope(&ScopePath::parse("acme/t-4/db").unwrap()));
        assert!(!t4.contains_scope(&ScopePath::parse("acme/t-42").unwrap()));
        assert!(ScopePath::parse(&vec!["a"; 16].join("/")).is_err());
    }

    fn segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9][A-Za-z0-9._-]{0,20}"
    }

    proptest! {
        #[test]
        fn valid_paths_round_trip(segs in prop::collection::vec(segment(), 2..=16)) {
            let raw = segs.join("/");
            prop_assume!(raw.len() <= MAX_PATH_BYTES);
            let p = SecretPath::parse(&raw).unwrap();
            prop_assert_eq!(p.as_str(), raw.as_str());
            prop_assert_eq!(p.name(), segs.last().unwrap().as_str());
            prop_assert_eq!(format!("{}/{}", p.scope(), p.name()), raw.clone());
            prop_assert!(p.is_within(&p.scope()));
            prop_assert_eq!(p.scope().ancestors().count(), segs.len() - 2);
        }

        #[test]
        fn arbitrary_input_never_panics_and_accepted_is_canonical(raw in "\\PC{0,80}") {
            if let Ok(p) = SecretPath::parse(&raw) {
                prop_assert_eq!(p.as_str(), raw.as_str());
                prop_assert!(raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b)));
                prop_assert!(!raw.contains("..") || raw.split('/').all(|s| s != ".."));
                prop_assert!(raw.split('/').all(|s| !s.is_empty() && s.as_bytes()[0].is_ascii_alphanumeric()));
            }
        }

        #[test]
        fn containment_matches_string_model(a in prop::collection::vec("[ab]{1,2}", 1..4), b in prop::collection::vec("[ab]{1,2}", 2..5)) {
            let scope = ScopePath::parse(&a.join("/")).unwrap();
            let path = SecretPath::parse(&b.join("/")).unwrap();
            let model = b.len() > a.len() && b[..a.len()] == a[..];
            prop_assert_eq!(path.is_within(&scope), model);
        }
    }
}
