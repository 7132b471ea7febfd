//! JSON string escaping for the bodies and audit lines the broker writes by
//! hand (on the hot path, without serde): one escaper, held equal to
//! `serde_json`'s by property tests.

/// The length of `s` escaped as a JSON string's contents.
pub(crate) fn escaped_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// Appends `s` escaped as a JSON string's contents (no quotes): exactly
/// `serde_json`'s escaping (quote, backslash, the short control escapes,
/// `\u00XX` for other control characters; nothing else), property-tested.
pub(crate) fn push_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    // Runs of bytes that need no escape are copied whole; the run is
    // found eight bytes at a time first (most strings need no escape).
    let clean = clean_prefix(bytes);
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate().skip(clean) {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.extend_from_slice(&bytes[run..i]);
        run = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
    }
    out.extend_from_slice(&bytes[run..]);
}

/// How many leading bytes of `bytes` need no escape, to a multiple of 8
/// (the rest is left to the byte loop): per 8-byte word, whether any byte
/// is below 0x20, a quote or a backslash, with the bit tricks of
/// "Bit Twiddling Hacks" (determine if a word has a byte less than n, or
/// equal to n).
fn clean_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut done = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // A byte < 0x20, or the byte (x ^ c) == 0 for c a quote or a
        // backslash; only bytes < 0x80 can match (`!x & HIGH`).
        let below = x.wrapping_sub(ONES * 0x20);
        let quote = (x ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES);
        let slash = (x ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES);
        if (below | quote | slash) & !x & HIGH != 0 {
            break;
        }
        done += 8;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_escapes_like_serde_json(s: &str) {
        let mut ours = Vec::new();
        push_escaped(&mut ours, s);
        let theirs = serde_json::to_string(s).unwrap();
        assert_eq!(
            String::from_utf8(ours.clone()).unwrap(),
            theirs[1..theirs.len() - 1]
        );
        assert_eq!(escaped_len(s), ours.len());
    }

    proptest::proptest! {
        #[test]
        fn escaping_is_json_string_escaping(s in proptest::prelude::any::<String>()) {
            assert_escapes_like_serde_json(&s);
        }

        #[test]
        fn escaping_handles_every_special_byte(s in "[\\x00-\\x1f\"\\\\a\u{e9}\u{7f}]{0,24}") {
            assert_escapes_like_serde_json(&s);
        }
    }
}
