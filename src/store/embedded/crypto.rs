//! The embedded store's key: loading and generating the key file, and
//! sealing and opening records with AES-256-GCM bound to path and version.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use super::{STORE, backend, invalid};
use crate::secret::SecretBytes;
use crate::store::StoreError;

/// Bytes in a key file: one AES-256 key.
pub(super) const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Domain separation for every associated-data string this store builds.
const AAD_DOMAIN: &[u8] = b"secret-broker/v1\0";
/// The plaintext of the key-check record (not secret: it only proves the key).
const KEY_CHECK_PLAINTEXT: &[u8] = b"secret-broker key check";

/// The store's encryption key, as a ready cipher.
///
/// SECURITY: no `Debug` of the key bytes, no `Clone`. The raw key is read
/// into a `Zeroizing` buffer that is wiped as soon as the cipher is built;
/// the cipher's AES round keys are wiped on drop (`aes`' `zeroize` feature).
pub(super) struct StoreKey {
    cipher: Aes256Gcm,
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreKey").finish_non_exhaustive()
    }
}

fn create_hint(key_file: &Path) -> String {
    format!(
        "create one with `head -c {KEY_LEN} /dev/urandom > {}`",
        key_file.display()
    )
}

impl StoreKey {
    /// Reads a key file of exactly [`KEY_LEN`] raw bytes.
    pub(super) fn load(key_file: &Path) -> Result<Self, StoreError> {
        let shown = key_file.display();
        let mut file = File::open(key_file).map_err(|e| {
            invalid(format!(
                "cannot open key file `{shown}`: {e}; {}",
                create_hint(key_file)
            ))
        })?;
        let meta = file
            .metadata()
            .map_err(|e| invalid(format!("cannot read key file `{shown}`: {e}")))?;
        if !meta.is_file() {
            return Err(invalid(format!("key file `{shown}` is not a regular file")));
        }
        if meta.len() != KEY_LEN as u64 {
            return Err(invalid(format!(
                "key file `{shown}` must hold exactly {KEY_LEN} raw bytes (it holds {}); {}",
                meta.len(),
                create_hint(key_file)
            )));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        file.read_exact(key.as_mut_slice())
            .map_err(|e| invalid(format!("cannot read key file `{shown}`: {e}")))?;
        // The file may have grown since `metadata`: refuse rather than use a
        // prefix of a file the operator did not mean as a key.
        let mut extra = [0u8; 1];
        if file
            .read(&mut extra)
            .map_err(|e| invalid(format!("cannot read key file `{shown}`: {e}")))?
            != 0
        {
            return Err(invalid(format!(
                "key file `{shown}` must hold exactly {KEY_LEN} raw bytes (it holds more); {}",
                create_hint(key_file)
            )));
        }
        let cipher = Aes256Gcm::new_from_slice(key.as_slice())
            .map_err(|_| invalid(format!("key file `{shown}` is not a valid AES-256 key")))?;
        Ok(Self { cipher })
    }

    /// Encrypts `plaintext` as the record of `path` at `version`:
    /// `nonce(12) || ciphertext || tag(16)`.
    pub(super) fn seal(
        &self,
        path: &str,
        version: u64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        self.seal_with_aad(&record_aad(path, version), plaintext)
    }

    /// Decrypts the record of `path` at `version` into zeroizing memory.
    pub(super) fn open(
        &self,
        path: &str,
        version: u64,
        record: &[u8],
    ) -> Result<SecretBytes, StoreError> {
        let plain = self.open_with_aad(&record_aad(path, version), record).ok_or_else(|| {
            backend(format!(
                "failed to decrypt secret `{path}` version {version} (wrong key file, or the record was altered or moved)"
            ))
        })?;
        Ok(SecretBytes::new(plain))
    }

    /// A record that proves, at open, that the key file matches the store.
    pub(super) fn key_check_record(&self) -> Result<Vec<u8>, StoreError> {
        self.seal_with_aad(&key_check_aad(), KEY_CHECK_PLAINTEXT)
    }

    /// Whether `record` was written by [`Self::key_check_record`] with this key.
    pub(super) fn verifies_key_check(&self, record: &[u8]) -> bool {
        self.open_with_aad(&key_check_aad(), record)
            .is_some_and(|p| p.as_slice() == KEY_CHECK_PLAINTEXT)
    }

    fn seal_with_aad(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        // SECURITY: a fresh random 96-bit nonce per record. Random nonces are
        // safe for far more records than one broker writes (the bound is
        // about 2^32 records per key).
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| backend(format!("cannot draw a random nonce: {e}")))?;
        // SECURITY: the buffer holds plaintext until encrypted in place, so it
        // is zeroizing, and sized up front so that no reallocation leaves a
        // plaintext copy behind in freed memory.
        let mut buf = Zeroizing::new(Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN));
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, &mut buf[NONCE_LEN..])
            .map_err(|_| backend(format!("failed to encrypt a record for store `{STORE}`")))?;
        buf.extend_from_slice(&tag);
        // Only ciphertext is left in the buffer: hand the allocation out.
        Ok(std::mem::take(&mut *buf))
    }

    /// The plaintext, or `None` when the record does not authenticate.
    fn open_with_aad(&self, aad: &[u8], record: &[u8]) -> Option<Vec<u8>> {
        if record.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, sealed) = record.split_at(NONCE_LEN);
        // SECURITY: decrypted in place in a zeroizing buffer; its allocation
        // is then moved, never copied, into the caller's zeroizing owner.
        let mut buf = Zeroizing::new(Vec::with_capacity(sealed.len()));
        buf.extend_from_slice(sealed);
        self.cipher
            .decrypt_in_place(Nonce::from_slice(nonce), aad, &mut *buf)
            .ok()?;
        Some(std::mem::take(&mut *buf))
    }
}

/// `secret-broker/v1\0 || path || \0 || version (u64, big-endian)`: binds a
/// record to its path and version, so a record copied elsewhere fails to
/// authenticate. Paths contain no NUL, so the encoding is unambiguous.
fn record_aad(path: &str, version: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + path.len() + 1 + 8);
    aad.extend_from_slice(AAD_DOMAIN);
    aad.extend_from_slice(path.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// Distinct from every record AAD: those continue with a path, which never
/// starts with `\0`.
fn key_check_aad() -> Vec<u8> {
    let mut aad = AAD_DOMAIN.to_vec();
    aad.extend_from_slice(b"\0key-check");
    aad
}

/// Writes a fresh random key file: created with `create_new` (never
/// overwrites) and mode 0600, then synced.
pub(super) fn generate_key_file(path: &Path) -> io::Result<()> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(key.as_mut_slice()).map_err(|e| io::Error::other(e.to_string()))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(key.as_slice())?;
    file.sync_all()?;
    // Sync the directory too, so the new entry survives a crash.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}
