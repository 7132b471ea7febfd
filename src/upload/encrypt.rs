//! age encryption of task output (`[uploads] encrypt_to`): the tenant's
//! X25519 recipient, checked once when the config loads and again by the
//! client that receives it, and a streaming encryptor that counts and
//! hashes the ciphertext as it is written (the size and SHA-256 a URL is
//! then minted for).
//!
//! Only X25519 recipients (`age1…`, from `age-keygen`): the format Debian's
//! `age` 1.1 decrypts with `age -d -i key.txt`. No plugin or ssh recipients.

use std::io::{self, Read, Write};
use std::str::FromStr as _;

use bech32::FromBase32 as _;
use sha2::{Digest as _, Sha256};

/// Why a string is not a usable recipient. SECURITY: the messages never
/// quote the value: an operator may have pasted the secret identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecipientError {
    /// An age identity (`AGE-SECRET-KEY-1…`), which must never be here.
    #[error(
        "is an age identity (a secret key), not a recipient: give its public key (`age-keygen -y key.txt` prints it) and keep the identity away from the broker"
    )]
    SecretKey,
    /// Not `age1` and 58 bech32 characters of a 32-byte key.
    #[error(
        "is not an age X25519 recipient (`age1` and 58 more characters, as `age-keygen` prints); ssh and plugin recipients are not supported"
    )]
    NotX25519,
    /// A low-order point: every shared secret with it is zero, so anyone
    /// could decrypt (and age refuses to encrypt to it).
    #[error("is not a usable X25519 public key (a low-order point); make a key with `age-keygen`")]
    LowOrder,
}

/// An age X25519 recipient that output can safely be encrypted to.
#[derive(Clone)]
pub struct Recipient(age::x25519::Recipient);

impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A public key: printing it is fine and helps.
        write!(f, "Recipient({})", self.0)
    }
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The canonical (lowercase bech32) form.
        self.0.fmt(f)
    }
}

/// Any scalar does: X25519 clamps it to a multiple of the cofactor 8, so
/// the product with a point of order 1, 2, 4 or 8 (on the curve or its
/// twist) is zero, and with any other point it is not.
const PROBE_SCALAR: [u8; 32] = [0x5a; 32];

impl Recipient {
    /// Parses and checks a recipient: bech32 with the `age` prefix, a
    /// 32-byte key, and not a low-order point.
    pub fn parse(s: &str) -> Result<Self, RecipientError> {
        if s.get(..15)
            .is_some_and(|p| p.eq_ignore_ascii_case("AGE-SECRET-KEY-"))
        {
            return Err(RecipientError::SecretKey);
        }
        let (hrp, data, variant) = bech32::decode(s).map_err(|_| RecipientError::NotX25519)?;
        if hrp != "age" || variant != bech32::Variant::Bech32 {
            return Err(RecipientError::NotX25519);
        }
        let bytes = Vec::<u8>::from_base32(&data).map_err(|_| RecipientError::NotX25519)?;
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| RecipientError::NotX25519)?;
        // SECURITY: age 0.11 panics on a low-order key (an all-zero shared
        // secret), and with such a key the file key would be wrapped under a
        // key anyone can compute. Refused here, where the key is read.
        if x25519_dalek::x25519(PROBE_SCALAR, key) == [0u8; 32] {
            return Err(RecipientError::LowOrder);
        }
        let r = age::x25519::Recipient::from_str(s).map_err(|_| RecipientError::NotX25519)?;
        Ok(Self(r))
    }
}

/// A writer that passes bytes on and counts and hashes them.
#[derive(Debug)]
pub struct Digesting<W> {
    inner: W,
    sha: Sha256,
    len: u64,
}

impl<W: Write> Digesting<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            sha: Sha256::new(),
            len: 0,
        }
    }

    /// Flushes and returns the writer, the number of bytes written and
    /// their SHA-256.
    pub fn finish(mut self) -> io::Result<(W, u64, [u8; 32])> {
        self.inner.flush()?;
        Ok((self.inner, self.len, self.sha.finalize().into()))
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The size and SHA-256 of everything `input` yields (read to its end).
pub fn digest(mut input: impl Read) -> io::Result<(u64, [u8; 32])> {
    let mut d = Digesting::new(io::sink());
    io::copy(&mut input, &mut d)?;
    let (_, len, sha) = d.finish()?;
    Ok((len, sha))
}

/// Encrypts everything `input` yields to `recipient` as an age file
/// (binary, not armored), streaming into `out` (memory stays at age's 64
/// KiB chunk); returns `out` with the ciphertext's size and SHA-256.
pub fn encrypt<W: Write>(
    recipient: &Recipient,
    mut input: impl Read,
    out: W,
) -> io::Result<(W, u64, [u8; 32])> {
    let to: [&dyn age::Recipient; 1] = [&recipient.0];
    let encryptor = age::Encryptor::with_recipients(to.into_iter())
        .map_err(|e| io::Error::other(format!("age: {e}")))?;
    let mut writer = encryptor.wrap_output(Digesting::new(out))?;
    io::copy(&mut input, &mut writer)?;
    writer.finish()?.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From age's own test vectors (`x25519.rs`): a recipient and its identity.
    const RECIPIENT: &str = "age1t7rxyev2z3rw82stdlrrepyc39nvn86l5078zqkf5uasdy86jp6svpy7pa";
    const IDENTITY: &str =
        "AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33";

    #[test]
    fn x25519_recipients_parse_and_everything_else_is_refused_unquoted() {
        let r = Recipient::parse(RECIPIENT).unwrap();
        assert_eq!(r.to_string(), RECIPIENT);
        assert_eq!(
            Recipient::parse(&RECIPIENT.to_uppercase())
                .unwrap()
                .to_string(),
            RECIPIENT
        );
        assert_eq!(
            Recipient::parse(IDENTITY).unwrap_err(),
            RecipientError::SecretKey
        );
        assert_eq!(
            Recipient::parse(&IDENTITY.to_lowercase()).unwrap_err(),
            RecipientError::SecretKey
        );
        // A one-character change breaks the checksum.
        let typo = RECIPIENT.replacen("t7r", "t8r", 1);
        for bad in [
            "",
            "age1",
            "age1xyz",
            typo.as_str(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN",
            "age1yubikey1qwt50d05nh5vutpdzmlg5wn80xq5negm4uj9ghv0snvdd3yysf5yw3rhl3t",
            // Not ASCII, with a character across byte 15.
            "age1aaaaaaaaaa\u{e9}\u{e9}\u{e9}\u{e9}",
            "\u{1f511}\u{1f511}\u{1f511}\u{1f511}",
        ] {
            let e = Recipient::parse(bad).unwrap_err();
            assert_eq!(e, RecipientError::NotX25519, "{bad}");
        }
        for e in [
            RecipientError::SecretKey,
            RecipientError::NotX25519,
            RecipientError::LowOrder,
        ] {
            let m = e.to_string();
            assert!(!m.contains("AGE-SECRET") && !m.contains(RECIPIENT), "{m}");
        }
    }

    /// Every low-order point (libsodium's list of X25519 small-order
    /// encodings, with and without the ignored top bit) is refused; age
    /// would panic on each.
    #[test]
    fn low_order_points_are_refused() {
        use bech32::ToBase32 as _;
        let mut points: Vec<[u8; 32]> = vec![[0; 32]];
        let mut one = [0u8; 32];
        one[0] = 1;
        points.push(one);
        points.push(
            hex::decode("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
                .unwrap()
                .try_into()
                .unwrap(),
        );
        points.push(
            hex::decode("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157")
                .unwrap()
                .try_into()
                .unwrap(),
        );
        for low in [0xec, 0xed, 0xee] {
            let mut p = [0xffu8; 32];
            p[0] = low;
            p[31] = 0x7f;
            points.push(p);
        }
        let with_top_bit: Vec<[u8; 32]> = points
            .iter()
            .map(|p| {
                let mut q = *p;
                q[31] |= 0x80;
                q
            })
            .collect();
        points.extend(with_top_bit);
        for p in points {
            let s = bech32::encode("age", p.to_base32(), bech32::Variant::Bech32).unwrap();
            assert_eq!(
                Recipient::parse(&s).unwrap_err(),
                RecipientError::LowOrder,
                "{}",
                hex::encode(p)
            );
        }
    }

    #[test]
    fn encryption_streams_and_reports_the_ciphertext_it_wrote() {
        let r = Recipient::parse(RECIPIENT).unwrap();
        // Over two of age's 64 KiB chunks.
        let plain: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        let (out, len, sha) = encrypt(&r, plain.as_slice(), Vec::new()).unwrap();
        assert_eq!(len, out.len() as u64);
        assert_eq!(sha, <[u8; 32]>::from(Sha256::digest(&out)));
        assert!(out.starts_with(b"age-encryption.org/v1\n-> X25519 "));
        assert!(!out.windows(64).any(|w| w == &plain[..64]));
        // And the identity decrypts it.
        let id: age::x25519::Identity = IDENTITY.parse().unwrap();
        let d = age::Decryptor::new(out.as_slice()).unwrap();
        let mut back = Vec::new();
        d.decrypt(std::iter::once(&id as &dyn age::Identity))
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, plain);
        // Fresh randomness each time.
        let (again, ..) = encrypt(&r, plain.as_slice(), Vec::new()).unwrap();
        assert_ne!(again, out);
        assert_eq!(digest(plain.as_slice()).unwrap().0, 150_000);
    }
}
