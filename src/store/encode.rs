//! Reversible names for stores whose secret names allow fewer characters
//! than broker paths (`[A-Za-z0-9._-]` segments joined by `/`): Google
//! Secret Manager ids (`[A-Za-z0-9_-]`, case-sensitive, at most 255) and
//! Azure Key Vault names (`[0-9a-zA-Z-]`, case-insensitive, at most 127).
//!
//! Each encoding is a prefix-free code applied character by character, so
//! it is injective and decodable, and `encode(scope + "/")` is a prefix of
//! `encode(path)` for every path inside that scope.
//!
//! - [`Alphabet::Gcp`]: letters, digits and `-` stand for themselves; `_`
//!   escapes: `_s` is `/`, `_d` is `.`, `_u` is `_`.
//!   `acme/t-42/db.pw` → `acme_st-42_sdb_dpw`.
//! - [`Alphabet::Azure`]: Key Vault folds case, so only lowercase letters
//!   and digits stand for themselves; `-` escapes: `-` + a lowercase letter
//!   is that letter uppercase, `-0` is `-`, `-1` is `/`, `-2` is `.`, `-3`
//!   is `_`. `Acme/t-42` → `-acme-1t-042`.
//!
//! A name longer than the store allows becomes a digest name instead:
//! [`Alphabet::digest_mark`] (a code the encoding never produces) and the
//! hex SHA-256 of the full path. Such names are not decodable; the store
//! keeps the path in a tag and checks it against the digest.

use sha2::{Digest, Sha256};

/// Which store's name rules to encode for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    /// Google Secret Manager secret ids.
    Gcp,
    /// Azure Key Vault secret names.
    Azure,
}

impl Alphabet {
    /// The longest name the store accepts.
    pub fn max_len(self) -> usize {
        match self {
            Self::Gcp => 255,
            Self::Azure => 127,
        }
    }

    /// How digest names start: an escape code [`encode`] never emits.
    pub fn digest_mark(self) -> &'static str {
        match self {
            Self::Gcp => "_h",
            Self::Azure => "-9",
        }
    }
}

/// Encodes `s`, which must consist of path characters (`[A-Za-z0-9._/-]`);
/// `None` for any other character.
pub fn encode(alphabet: Alphabet, s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len() + s.len() / 4);
    for c in s.chars() {
        match (alphabet, c) {
            (Alphabet::Gcp, 'a'..='z' | 'A'..='Z' | '0'..='9' | '-') => out.push(c),
            (Alphabet::Gcp, '/') => out.push_str("_s"),
            (Alphabet::Gcp, '.') => out.push_str("_d"),
            (Alphabet::Gcp, '_') => out.push_str("_u"),
            (Alphabet::Azure, 'a'..='z' | '0'..='9') => out.push(c),
            (Alphabet::Azure, 'A'..='Z') => {
                out.push('-');
                out.push(c.to_ascii_lowercase());
            }
            (Alphabet::Azure, '-') => out.push_str("-0"),
            (Alphabet::Azure, '/') => out.push_str("-1"),
            (Alphabet::Azure, '.') => out.push_str("-2"),
            (Alphabet::Azure, '_') => out.push_str("-3"),
            _ => return None,
        }
    }
    Some(out)
}

/// Decodes a name [`encode`] produced; `None` for anything else (a digest
/// name, a name made outside the broker). Azure names are matched
/// case-insensitively, as Key Vault does.
pub fn decode(alphabet: Alphabet, name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        let c = match alphabet {
            Alphabet::Gcp => match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' => c,
                '_' => match chars.next()? {
                    's' => '/',
                    'd' => '.',
                    'u' => '_',
                    _ => return None,
                },
                _ => return None,
            },
            Alphabet::Azure => match c.to_ascii_lowercase() {
                l @ ('a'..='z' | '0'..='9') => l,
                '-' => match chars.next()?.to_ascii_lowercase() {
                    l @ 'a'..='z' => l.to_ascii_uppercase(),
                    '0' => '-',
                    '1' => '/',
                    '2' => '.',
                    '3' => '_',
                    _ => return None,
                },
                _ => return None,
            },
        };
        out.push(c);
    }
    Some(out)
}

/// The store name of `full` (prefix and path): its encoding when that fits
/// [`Alphabet::max_len`], else the digest name. `None` when `full` has a
/// character outside the path grammar.
pub fn name_for(alphabet: Alphabet, full: &str) -> Option<String> {
    let encoded = encode(alphabet, full)?;
    if encoded.len() <= alphabet.max_len() {
        return Some(encoded);
    }
    Some(digest_name(alphabet, full))
}

/// The digest name of `full`.
pub fn digest_name(alphabet: Alphabet, full: &str) -> String {
    format!(
        "{}{}",
        alphabet.digest_mark(),
        hex::encode(Sha256::digest(full.as_bytes()))
    )
}

/// Recovers the full path of store name `name`: decoded, or, for a digest
/// name, `tagged` (the path the store kept beside it) if and only if it
/// hashes to that name. The name is authoritative: a tag copied onto
/// another secret cannot alias a path.
pub fn full_path_of(alphabet: Alphabet, name: &str, tagged: Option<&str>) -> Option<String> {
    let same = |n: &str| match alphabet {
        Alphabet::Gcp => n == name,
        Alphabet::Azure => n.eq_ignore_ascii_case(name),
    };
    if let Some(full) = decode(alphabet, name) {
        // INVARIANT: only canonical names map to a path: a short path never
        // has a digest name, a long one never a plain one.
        return name_for(alphabet, &full)
            .is_some_and(|n| same(&n))
            .then_some(full);
    }
    let tagged = tagged?;
    let expected = name_for(alphabet, tagged)?;
    expected
        .eq_ignore_ascii_case(name)
        .then(|| tagged.to_owned())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const BOTH: [Alphabet; 2] = [Alphabet::Gcp, Alphabet::Azure];

    fn allowed(alphabet: Alphabet, name: &str) -> bool {
        name.bytes().all(|b| match alphabet {
            Alphabet::Gcp => b.is_ascii_alphanumeric() || b == b'_' || b == b'-',
            Alphabet::Azure => b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-',
        })
    }

    #[test]
    fn examples() {
        assert_eq!(
            encode(Alphabet::Gcp, "acme/t-42/db.pw").as_deref(),
            Some("acme_st-42_sdb_dpw")
        );
        assert_eq!(
            encode(Alphabet::Azure, "Acme/t-42").as_deref(),
            Some("-acme-1t-042")
        );
        assert_eq!(encode(Alphabet::Gcp, "a b"), None);
        assert_eq!(encode(Alphabet::Azure, "é"), None);
        assert_eq!(decode(Alphabet::Gcp, "a_x"), None);
        assert_eq!(decode(Alphabet::Gcp, "a_"), None);
        assert_eq!(decode(Alphabet::Azure, "a-9"), None);
        // Key Vault may hand names back in another case.
        assert_eq!(
            decode(Alphabet::Azure, "-ACME-1T-042").as_deref(),
            Some("Acme/t-42")
        );
    }

    #[test]
    fn long_paths_get_digest_names_that_check_their_tag() {
        for a in BOTH {
            let long = format!("acme/{}", "x".repeat(300));
            let name = name_for(a, &long).unwrap();
            assert!(name.starts_with(a.digest_mark()) && name.len() <= a.max_len());
            assert!(allowed(a, &name), "{name}");
            assert_eq!(decode(a, &name), None);
            assert_eq!(full_path_of(a, &name, Some(&long)), Some(long.clone()));
            assert_eq!(full_path_of(a, &name, Some("acme/other")), None);
            assert_eq!(full_path_of(a, &name, None), None);
            // A short path's tag cannot claim a plain name either.
            let short = name_for(a, "acme/x").unwrap();
            assert_eq!(
                full_path_of(a, &short, Some("acme/y")).as_deref(),
                Some("acme/x")
            );
        }
    }

    fn path_chars() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._/-]{0,300}"
    }

    proptest! {
        #[test]
        fn round_trip(s in path_chars()) {
            for a in BOTH {
                let e = encode(a, &s).unwrap();
                prop_assert!(allowed(a, &e), "{e}");
                prop_assert_eq!(decode(a, &e), Some(s.clone()));
                let name = name_for(a, &s).unwrap();
                prop_assert!(name.len() <= a.max_len());
                prop_assert!(allowed(a, &name) , "{name}");
                prop_assert_eq!(full_path_of(a, &name, Some(&s)), Some(s.clone()));
            }
        }

        #[test]
        fn injective_even_when_case_folded(x in path_chars(), y in path_chars()) {
            prop_assume!(x != y);
            for a in BOTH {
                let (ex, ey) = (encode(a, &x).unwrap(), encode(a, &y).unwrap());
                prop_assert_ne!(&ex, &ey);
                let (nx, ny) = (name_for(a, &x).unwrap(), name_for(a, &y).unwrap());
                prop_assert_ne!(&nx, &ny);
                if a == Alphabet::Azure {
                    prop_assert!(!nx.eq_ignore_ascii_case(&ny));
                }
            }
        }

        #[test]
        fn scope_prefixes_are_name_prefixes(scope in "[a-zA-Z0-9][a-zA-Z0-9._-]{0,20}", rest in "[a-zA-Z0-9][a-zA-Z0-9._/-]{0,20}") {
            for a in BOTH {
                let s = encode(a, &format!("{scope}/")).unwrap();
                let p = encode(a, &format!("{scope}/{rest}")).unwrap();
                prop_assert!(p.starts_with(&s));
            }
        }

        #[test]
        fn decode_never_panics_and_only_accepts_canonical(name in "[A-Za-z0-9_-]{0,40}") {
            for a in BOTH {
                if let Some(d) = decode(a, &name) {
                    let again = encode(a, &d).unwrap();
                    prop_assert!(again.eq_ignore_ascii_case(&name));
                }
            }
        }
    }
}
