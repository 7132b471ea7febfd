//! Secret bytes, secret paths and scopes: the vocabulary every layer shares.
//!
//! `SecretBytes` is the only type that owns secret material. It zeroizes on
//! drop, prints as `[REDACTED]`, has no `Display`, `Serialize` or `Clone`, and
//! its one way out is the greppable [`SecretBytes::expose_secret`].

mod path;

pub use path::{MAX_PATH_BYTES, MAX_SEGMENTS, PathError, ScopePath, SecretPath};

use zeroize::Zeroizing;

/// Owned secret bytes, zeroized when dropped.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; the vector's buffer is zeroized on drop.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies `bytes` into a fresh zeroizing buffer of exactly that size.
    pub fn copy_from(bytes: &[u8]) -> Self {
        let mut v = Vec::with_capacity(bytes.len());
        v.extend_from_slice(bytes);
        Self::new(v)
    }

    /// The secret bytes. Every call site is a place where a secret leaves
    /// its owner: keep them few and grep for them in review.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A second owned copy, for the cache. Explicit rather than `Clone` so
    /// that copies of secrets stay visible in review.
    pub fn duplicate(&self) -> Self {
        Self::copy_from(&self.0)
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl PartialEq for SecretBytes {
    /// Constant-time comparison (length is not secret).
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.0.len() && bool::from(self.0.as_slice().ct_eq(other.0.as_slice()))
    }
}

impl Eq for SecretBytes {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SecretBytes::copy_from(b"canary-7f3a");
        let printed = format!("{s:?} {:#?}", s);
        assert!(!printed.contains("canary"));
        assert!(printed.contains("[REDACTED]"));
    }

    #[test]
    fn exposes_and_compares() {
        let a = SecretBytes::copy_from(b"abc");
        assert_eq!(a.expose_secret(), b"abc");
        assert_eq!(a, a.duplicate());
        assert_ne!(a, SecretBytes::copy_from(b"abd"));
        assert_ne!(a, SecretBytes::copy_from(b"ab"));
        assert_eq!(a.len(), 3);
    }
}
