//! Request and response bodies that may hold secret bytes.
//!
//! Request bodies are collected into a zeroizing buffer sized up front (so
//! it never reallocates and strands a copy), under the body limit and
//! timeout, while reading. Response bodies are a [`ZeroizingBuf`], zeroed
//! when hyper drops them after writing.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Buf;
use http::HeaderMap;
use http_body_util::BodyExt as _;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use zeroize::Zeroizing;

use super::error::ApiError;
use crate::json::{escaped_len, push_escaped};
use crate::secret::SecretBytes;
use crate::store::Labels;

/// A response body chunk that zeroizes its bytes on drop.
#[derive(Default)]
pub struct ZeroizingBuf {
    data: Zeroizing<Vec<u8>>,
    pos: usize,
}

impl std::fmt::Debug for ZeroizingBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZeroizingBuf")
            .field("len", &self.data.len())
            .finish_non_exhaustive()
    }
}

impl ZeroizingBuf {
    /// Wraps bytes that will be zeroized after sending.
    pub fn new(data: Zeroizing<Vec<u8>>) -> Self {
        Self { data, pos: 0 }
    }

    /// Wraps non-secret bytes (zeroizing them is harmless).
    pub fn public(data: Vec<u8>) -> Self {
        Self::new(Zeroizing::new(data))
    }
}

impl Buf for ZeroizingBuf {
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn chunk(&self) -> &[u8] {
        &self.data[self.pos..]
    }

    fn advance(&mut self, cnt: usize) {
        self.pos = (self.pos + cnt).min(self.data.len());
    }
}

/// The response body type of every API response.
pub type Body = http_body_util::Full<ZeroizingBuf>;

/// Checks `Content-Type` for a JSON body (absent is accepted).
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        // SECURITY: the header is not echoed; a misdirected value must not
        // come back in an error body.
        Err(ApiError::UnsupportedMediaType(
            "this content type is not supported; send `application/json`".into(),
        ))
    }
}

/// Reads a request body under the limit and timeout, into a zeroizing buffer.
pub async fn read_body(
    body: &mut hyper::body::Incoming,
    headers: &HeaderMap,
    max_bytes: usize,
    timeout: Duration,
) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    check_content_type(headers)?;
    let declared = match headers.get(http::header::CONTENT_LENGTH) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| ApiError::InvalidBody("`Content-Length` is not a number".into()))?,
        ),
        None if headers.contains_key(http::header::TRANSFER_ENCODING) => None,
        None => return Err(ApiError::LengthRequired),
    };
    let too_large = || ApiError::TooLarge(format!("request body exceeds {max_bytes} bytes"));
    if declared.is_some_and(|n| n > max_bytes) {
        return Err(too_large());
    }
    // INVARIANT: capacity is never exceeded below (the limit check comes
    // first), so the buffer never reallocates and leaves no stray copy.
    let mut buf = Zeroizing::new(Vec::with_capacity(declared.unwrap_or(max_bytes)));
    let collect = async {
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| ApiError::InvalidBody(format!("cannot read body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > buf.capacity().min(max_bytes) {
                    return Err(too_large());
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, collect).await {
        Ok(r) => r?,
        Err(_) => return Err(ApiError::RequestTimeout(timeout)),
    }
    Ok(buf)
}

/// A `PUT` body: exactly one of `value` / `value_base64`, optional labels.
#[derive(Debug)]
pub struct PutBody {
    /// The value to store.
    pub value: SecretBytes,
    /// Labels to set.
    pub labels: Labels,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPutBody {
    value: Option<Utf8Secret>,
    value_base64: Option<Base64Secret>,
    labels: Option<Labels>,
}

/// A JSON string taken straight into zeroizing memory.
struct Utf8Secret(SecretBytes);
/// A base64 JSON string decoded straight into zeroizing memory.
struct Base64Secret(SecretBytes);

struct Utf8Visitor;
impl Visitor<'_> for Utf8Visitor {
    type Value = Utf8Secret;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Utf8Secret(SecretBytes::copy_from(v.as_bytes())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Utf8Secret(SecretBytes::new(v.into_bytes())))
    }
}

impl<'de> Deserialize<'de> for Utf8Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(Utf8Visitor)
    }
}

struct Base64Visitor;
impl Visitor<'_> for Base64Visitor {
    type Value = Base64Secret;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a base64 string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let mut out = Zeroizing::new(vec![0u8; v.len() / 4 * 3 + 3]);
        let n = B64
            .decode_slice(v.as_bytes(), &mut out[..])
            .map_err(|_| E::custom("`value_base64` is not valid standard base64"))?;
        Ok(Base64Secret(SecretBytes::copy_from(&out[..n])))
    }
}

impl<'de> Deserialize<'de> for Base64Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(Base64Visitor)
    }
}

/// Longest label key and value, and most labels per secret.
const MAX_LABEL_KEY: usize = 63;
const MAX_LABEL_VALUE: usize = 256;
const MAX_LABELS: usize = 64;

fn check_labels(labels: &Labels) -> Result<(), ApiError> {
    if labels.len() > MAX_LABELS {
        return Err(ApiError::InvalidBody(format!(
            "more than {MAX_LABELS} labels"
        )));
    }
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_LABEL_KEY
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
        if !key_ok {
            return Err(ApiError::InvalidBody(format!(
                "label key `{}` must be 1-{MAX_LABEL_KEY} of [A-Za-z0-9._/-]",
                super::printable(k, 64)
            )));
        }
        if v.len() > MAX_LABEL_VALUE || v.chars().any(char::is_control) {
            return Err(ApiError::InvalidBody(format!(
                "label `{k}` must be at most {MAX_LABEL_VALUE} bytes without control characters"
            )));
        }
    }
    Ok(())
}

/// Parses a `PUT` body. Error messages never echo a value: serde's own
/// messages are passed on only when they name fields.
pub fn parse_put(bytes: &[u8], max_value: usize) -> Result<PutBody, ApiError> {
    let raw: RawPutBody = serde_json::from_slice(bytes).map_err(|e| {
        let text = e.to_string();
        // SECURITY: serde messages such as "invalid type: integer `123`"
        // quote the input; only field-naming messages are safe to return.
        let safe = ["unknown field", "missing field", "duplicate field", "base64"]
            .iter()
            .any(|n| text.contains(n));
        if safe {
            ApiError::InvalidBody(text)
        } else {
            ApiError::InvalidBody(format!(
                "body is not a JSON object of the form {{\"value\": \"...\"}} or {{\"value_base64\": \"...\"}} with optional \"labels\" (error at line {} column {})",
                e.line(),
                e.column()
            ))
        }
    })?;
    let value = match (raw.value, raw.value_base64) {
        (Some(Utf8Secret(v)), None) | (None, Some(Base64Secret(v))) => v,
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidBody(
                "send either `value` or `value_base64`, not both".into(),
            ));
        }
        (None, None) => {
            return Err(ApiError::InvalidBody(
                "the body needs `value` (UTF-8) or `value_base64`".into(),
            ));
        }
    };
    if value.len() > max_value {
        return Err(ApiError::TooLarge(format!(
            "value is {} bytes; the limit is {max_value}",
            value.len()
        )));
    }
    let labels = raw.labels.unwrap_or_default();
    check_labels(&labels)?;
    Ok(PutBody { value, labels })
}

/// Builds `{"path","version","value"}` (or `value_base64` for non-UTF-8
/// bytes) in one exactly-sized zeroizing buffer.
pub fn secret_json(path: &str, version: u64, value: &SecretBytes) -> Zeroizing<Vec<u8>> {
    let bytes = value.expose_secret();
    let mut version_text = itoa::Buffer::new();
    let version = version_text.format(version);
    let (key, text_len) = match std::str::from_utf8(bytes) {
        Ok(s) => ("value", escaped_len(s)),
        Err(_) => (
            "value_base64",
            base64::encoded_len(bytes.len(), true).unwrap_or(0),
        ),
    };
    let cap = 32 + escaped_len(path) + version.len() + key.len() + text_len;
    // INVARIANT: `cap` bounds everything pushed below, so no reallocation.
    let mut out = Zeroizing::new(Vec::with_capacity(cap));
    out.extend_from_slice(b"{\"path\":\"");
    push_escaped(&mut out, path);
    out.extend_from_slice(b"\",\"version\":");
    out.extend_from_slice(version.as_bytes());
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":\"");
    push_value(&mut out, bytes, text_len);
    out.extend_from_slice(b"\"}");
    debug_assert!(out.len() <= cap);
    out
}

/// Builds a `PUT` body (`value`, or `value_base64` for non-UTF-8 bytes,
/// plus labels) in one exactly-sized zeroizing buffer, for the CLI client.
pub fn put_json(value: &SecretBytes, labels: &Labels) -> Zeroizing<Vec<u8>> {
    let bytes = value.expose_secret();
    let labels = serde_json::to_vec(labels).unwrap_or_else(|_| b"{}".to_vec());
    let (key, text_len) = match std::str::from_utf8(bytes) {
        Ok(s) => ("value", escaped_len(s)),
        Err(_) => (
            "value_base64",
            base64::encoded_len(bytes.len(), true).unwrap_or(0),
        ),
    };
    let cap = 24 + key.len() + text_len + labels.len();
    // INVARIANT: `cap` bounds everything pushed below, so no reallocation.
    let mut out = Zeroizing::new(Vec::with_capacity(cap));
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":\"");
    push_value(&mut out, bytes, text_len);
    out.extend_from_slice(b"\",\"labels\":");
    out.extend_from_slice(&labels);
    out.push(b'}');
    out
}

/// Appends `bytes` escaped (UTF-8) or base64-encoded (`text_len` long).
fn push_value(out: &mut Vec<u8>, bytes: &[u8], text_len: usize) {
    match std::str::from_utf8(bytes) {
        Ok(s) => push_escaped(out, s),
        Err(_) => {
            let start = out.len();
            out.resize(start + text_len, 0);
            let n = B64.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
            out.truncate(start + n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_body_forms() {
        let b = parse_put(br#"{"value":"s3cr\"et\n"}"#, 100).unwrap();
        assert_eq!(b.value.expose_secret(), b"s3cr\"et\n");
        let b = parse_put(br#"{"value_base64":"AAEC/w==","labels":{"a":"b"}}"#, 100).unwrap();
        assert_eq!(b.value.expose_secret(), &[0, 1, 2, 255]);
        assert_eq!(b.labels["a"], "b");
        for bad in [
            &br#"{}"#[..],
            br#"{"value":"a","value_base64":"YQ=="}"#,
            br#"{"value":"a","extra":1}"#,
            br#"{"value_base64":"***"}"#,
            br#"{"value":12345}"#,
            br#"not json"#,
            br#"{"value":"a","labels":{"bad key":"x"}}"#,
            br#"{"value":"a","value":"b"}"#,
        ] {
            let e = parse_put(bad, 100).unwrap_err();
            assert_eq!(e.code(), "invalid_body", "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            parse_put(br#"{"value":"abcdef"}"#, 5).unwrap_err().code(),
            "too_large"
        );
    }

    #[test]
    fn errors_never_echo_values() {
        for body in [
            &br#"{"value":99887766}"#[..],
            br#"{"value":["canary-xyz"]}"#,
            br#"{"value_base64":"canary-xyz!"}"#,
            br#"{"value":"canary-xyz","labels":"canary-xyz"}"#,
            br#"{"value":"canary-xyz"#,
        ] {
            let e = parse_put(body, 100).unwrap_err();
            let text = format!("{e} {e:?}");
            assert!(
                !text.contains("canary") && !text.contains("99887766"),
                "{text}"
            );
        }
    }

    #[test]
    fn put_json_parses_back() {
        let mut labels = Labels::new();
        labels.insert("env".into(), "prod".into());
        for value in [&b"text \" \n"[..], &[0xfe, 0x01]] {
            let json = put_json(&SecretBytes::copy_from(value), &labels);
            assert!(json.len() <= json.capacity());
            let back = parse_put(&json, 1000).unwrap();
            assert_eq!(back.value.expose_secret(), value);
            assert_eq!(back.labels, labels);
        }
    }

    #[test]
    fn secret_json_round_trips() {
        for value in [
            &b"plain"[..],
            b"quote\" back\\ nl\n ctl\x01 tab\t",
            "unicode é ✓".as_bytes(),
            &[0xff, 0x00, 0x80],
            b"",
        ] {
            let s = SecretBytes::copy_from(value);
            let json = secret_json("acme/x", 7, &s);
            assert!(json.len() <= json.capacity());
            let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(v["path"], "acme/x");
            assert_eq!(v["version"], 7);
            let got = match v.get("value") {
                Some(t) => t.as_str().unwrap().as_bytes().to_vec(),
                None => B64.decode(v["value_base64"].as_str().unwrap()).unwrap(),
            };
            assert_eq!(got, value);
        }
    }
}
