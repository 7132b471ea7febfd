//! Request and response bodies that may hold secret bytes.
//!
//! Request bodies are collected into a zeroizing buffer sized up front (so
//! it never reallocates and strands a copy), under the body limit and
//! timeout, while reading. Response bodies are a [`ZeroizingBuf`], zeroed
//! when hyper drops them after writing.

use std::cell::Cell;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Buf;
use http::HeaderMap;
use http_body_util::BodyExt as _;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
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

/// Most labels on one secret. With the limits below, every store takes
/// what the API accepts: Azure Key Vault holds 15 tags a secret, the
/// broker's own being `sb-version` and one `sb-path` tag per 256 characters
/// of prefix and path (at most 3 without a prefix, 5 up to 1024); AWS Secrets Manager 50 tags (one is the path);
/// Vault 64 `custom_metadata` keys; GCP keeps the labels as JSON in one
/// annotation (16 KiB for all of a secret's annotations), not as GCP labels.
pub const MAX_LABELS: usize = 10;
/// Longest label key, in bytes: AWS tag keys hold 128 characters with the
/// broker's 20-character `secret-broker:label:` prefix; Vault 128.
pub const MAX_LABEL_KEY: usize = 63;
/// Longest label value, in bytes: AWS and Azure tag values hold 256
/// characters (Vault 512).
pub const MAX_LABEL_VALUE: usize = 256;

/// A `PUT` body: exactly one of `value` / `value_base64`, optional labels.
#[derive(Debug)]
pub struct PutBody {
    /// The value to store.
    pub value: SecretBytes,
    /// Labels to set.
    pub labels: Labels,
}

/// What is wrong with a `PUT` body: the field and the fault, never a
/// token of the input (not a value, not a label, not an unknown field's
/// name), since a body that is refused may still hold a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyFault {
    /// Not valid JSON; the position is the parser's.
    #[error("the body is not valid JSON (error at line {line} column {column})")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// Valid JSON, but not an object.
    #[error(
        "the body must be a JSON object: {{\"value\": \"...\"}} or {{\"value_base64\": \"...\"}}, with optional \"labels\""
    )]
    NotObject,
    /// A field other than the three the body takes.
    #[error("the body has a field other than `value`, `value_base64` and `labels`")]
    UnknownField,
    /// A field sent twice.
    #[error("`{0}` appears more than once")]
    DuplicateField(&'static str),
    /// `value` or `value_base64` is not a JSON string.
    #[error("`{0}` must be a JSON string")]
    NotString(&'static str),
    /// `value_base64` does not decode.
    #[error("`value_base64` is not valid standard base64 (RFC 4648, with padding)")]
    BadBase64,
    /// Both value fields.
    #[error("send either `value` or `value_base64`, not both")]
    BothValues,
    /// Neither value field.
    #[error("the body needs `value` (UTF-8) or `value_base64`")]
    NoValue,
    /// The value has no bytes.
    #[error("the value is empty; a secret holds at least one byte (to remove a secret, DELETE it)")]
    EmptyValue,
    /// `labels` is not an object.
    #[error("`labels` must be a JSON object of string values")]
    LabelsNotObject,
    /// A label's value is not a string.
    #[error("every label value in `labels` must be a JSON string")]
    LabelNotString,
    /// Over [`MAX_LABELS`].
    #[error("`labels` holds more than {} labels", MAX_LABELS)]
    TooManyLabels,
    /// A key over [`MAX_LABEL_KEY`] bytes.
    #[error("a label key in `labels` is longer than {} bytes", MAX_LABEL_KEY)]
    LabelKeyTooLong,
    /// An empty key, or one with other characters than `[A-Za-z0-9._/-]`.
    #[error("a label key in `labels` is empty or has characters other than [A-Za-z0-9._/-]")]
    LabelKeyChars,
    /// A value over [`MAX_LABEL_VALUE`] bytes.
    #[error("a label value in `labels` is longer than {} bytes", MAX_LABEL_VALUE)]
    LabelValueTooLong,
    /// A value with control characters.
    #[error("a label value in `labels` holds control characters")]
    LabelValueControl,
    /// A label key sent twice.
    #[error("a label key appears more than once in `labels`")]
    DuplicateLabel,
}

impl From<BodyFault> for ApiError {
    fn from(f: BodyFault) -> Self {
        Self::InvalidBody(f.to_string())
    }
}

/// Where the body's visitors leave the fault that stopped them. serde's
/// own messages quote the input (``invalid type: integer `123` ``), so
/// they are never shown: a visitor records what was wrong here and fails,
/// and [`parse_put`] reports the recorded fault.
type FaultSlot = Cell<Option<BodyFault>>;

/// Records `fault` (unless an inner visitor already recorded a more
/// precise one) and returns an error whose text is never shown.
fn fail<E: de::Error>(slot: &FaultSlot, fault: BodyFault) -> E {
    if slot.get().is_none() {
        slot.set(Some(fault));
    }
    E::custom("invalid put body")
}

/// The fields of a `PUT` body, as parsed (limits already checked).
#[derive(Default)]
struct RawPutBody {
    value: Option<SecretBytes>,
    value_base64: Option<SecretBytes>,
    labels: Option<Labels>,
}

/// The top-level object. Written by hand (not derived) so that each field
/// is checked as it arrives, with the fault named, and so that limits stop
/// the parse at the first label past them.
struct PutVisitor<'f>(&'f FaultSlot);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Value,
    ValueBase64,
    Labels,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Self::Value => "value",
            Self::ValueBase64 => "value_base64",
            Self::Labels => "labels",
        }
    }
}

struct FieldSeed<'f>(&'f FaultSlot);

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Field;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldSeed<'_> {
    type Value = Field;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
        match v {
            "value" => Ok(Field::Value),
            "value_base64" => Ok(Field::ValueBase64),
            "labels" => Ok(Field::Labels),
            // SECURITY: the name is not echoed: a misplaced value could be it.
            _ => Err(fail(self.0, BodyFault::UnknownField)),
        }
    }
}

impl<'de> Visitor<'de> for PutVisitor<'_> {
    type Value = RawPutBody;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPutBody, A::Error> {
        let slot = self.0;
        let mut raw = RawPutBody::default();
        let mut seen: Vec<Field> = Vec::with_capacity(3);
        while let Some(field) = map.next_key_seed(FieldSeed(slot))? {
            if seen.contains(&field) {
                return Err(fail(slot, BodyFault::DuplicateField(field.name())));
            }
            seen.push(field);
            match field {
                Field::Value => {
                    raw.value = map
                        .next_value_seed(OptionSeed(Utf8Seed))
                        .map_err(|e| fail_or(slot, BodyFault::NotString("value"), e))?;
                }
                Field::ValueBase64 => {
                    raw.value_base64 = map
                        .next_value_seed(OptionSeed(Base64Seed(slot)))
                        .map_err(|e| fail_or(slot, BodyFault::NotString("value_base64"), e))?;
                }
                Field::Labels => {
                    raw.labels = map
                        .next_value_seed(OptionSeed(LabelsSeed(slot)))
                        .map_err(|e| fail_or(slot, BodyFault::LabelsNotObject, e))?;
                }
            }
            if raw.value.is_some() && raw.value_base64.is_some() {
                return Err(fail(slot, BodyFault::BothValues));
            }
        }
        Ok(raw)
    }
}

/// Records `fault` unless one is recorded, and passes `e` on unchanged (a
/// syntax error inside a field stays a syntax error).
fn fail_or<E>(slot: &FaultSlot, fault: BodyFault, e: E) -> E {
    if slot.get().is_none() {
        slot.set(Some(fault));
    }
    e
}

/// `null` or what `S` takes (a field sent as `null` counts as absent).
struct OptionSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for OptionSeed<S> {
    type Value = Option<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for OptionSeed<S> {
    type Value = Option<S::Value>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("null or a value")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

/// A JSON string taken straight into zeroizing memory.
struct Utf8Seed;

impl<'de> DeserializeSeed<'de> for Utf8Seed {
    type Value = SecretBytes;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SecretBytes, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Utf8Seed {
    type Value = SecretBytes;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretBytes, E> {
        Ok(SecretBytes::copy_from(v.as_bytes()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<SecretBytes, E> {
        Ok(SecretBytes::new(v.into_bytes()))
    }
}

/// A base64 JSON string decoded straight into zeroizing memory.
struct Base64Seed<'f>(&'f FaultSlot);

impl<'de> DeserializeSeed<'de> for Base64Seed<'_> {
    type Value = SecretBytes;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SecretBytes, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Base64Seed<'_> {
    type Value = SecretBytes;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a base64 string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretBytes, E> {
        let mut out = Zeroizing::new(vec![0u8; v.len() / 4 * 3 + 3]);
        let n = B64
            .decode_slice(v.as_bytes(), &mut out[..])
            .map_err(|_| fail(self.0, BodyFault::BadBase64))?;
        Ok(SecretBytes::copy_from(&out[..n]))
    }
}

/// The label map, checked entry by entry as it is parsed: the parse stops
/// at the first label past a limit, before the rest is read into memory.
struct LabelsSeed<'f>(&'f FaultSlot);

impl<'de> DeserializeSeed<'de> for LabelsSeed<'_> {
    type Value = Labels;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Labels, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LabelsSeed<'_> {
    type Value = Labels;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object of strings")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
        let slot = self.0;
        let mut labels = Labels::new();
        while let Some(key) = map.next_key::<String>()? {
            if labels.len() == MAX_LABELS {
                return Err(fail(slot, BodyFault::TooManyLabels));
            }
            if let Err(fault) = check_label_key(&key) {
                return Err(fail(slot, fault));
            }
            if labels.contains_key(&key) {
                return Err(fail(slot, BodyFault::DuplicateLabel));
            }
            let value: String = map
                .next_value()
                .map_err(|e| fail_or(slot, BodyFault::LabelNotString, e))?;
            if let Err(fault) = check_label_value(&value) {
                return Err(fail(slot, fault));
            }
            labels.insert(key, value);
        }
        Ok(labels)
    }
}

fn check_label_key(k: &str) -> Result<(), BodyFault> {
    if k.len() > MAX_LABEL_KEY {
        return Err(BodyFault::LabelKeyTooLong);
    }
    let chars_ok = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    if chars_ok {
        Ok(())
    } else {
        Err(BodyFault::LabelKeyChars)
    }
}

fn check_label_value(v: &str) -> Result<(), BodyFault> {
    if v.len() > MAX_LABEL_VALUE {
        Err(BodyFault::LabelValueTooLong)
    } else if v.chars().any(char::is_control) {
        Err(BodyFault::LabelValueControl)
    } else {
        Ok(())
    }
}

/// Checks labels against the API's limits ([`MAX_LABELS`],
/// [`MAX_LABEL_KEY`], [`MAX_LABEL_VALUE`], the key alphabet, no control
/// characters): what a `PUT` body's labels are held to while parsed.
pub fn check_labels(labels: &Labels) -> Result<(), BodyFault> {
    if labels.len() > MAX_LABELS {
        return Err(BodyFault::TooManyLabels);
    }
    labels.iter().try_for_each(|(k, v)| {
        check_label_key(k)?;
        check_label_value(v)
    })
}

/// Parses a `PUT` body, labels' limits included. An error names the field
/// and what was wrong with it ([`BodyFault`]), never a token of the input.
pub fn parse_put(bytes: &[u8], max_value: usize) -> Result<PutBody, ApiError> {
    let slot = FaultSlot::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = de
        .deserialize_map(PutVisitor(&slot))
        .and_then(|raw| de.end().map(|()| raw));
    let raw = parsed.map_err(|e| {
        // SECURITY: serde's message is dropped; only its category and
        // position are used.
        let fault = match e.classify() {
            serde_json::error::Category::Data => slot.get().unwrap_or(BodyFault::NotObject),
            _ => BodyFault::Syntax {
                line: e.line(),
                column: e.column(),
            },
        };
        ApiError::from(fault)
    })?;
    let value = match (raw.value, raw.value_base64) {
        (Some(v), None) | (None, Some(v)) => v,
        (Some(_), Some(_)) => return Err(BodyFault::BothValues.into()),
        (None, None) => return Err(BodyFault::NoValue.into()),
    };
    // One rule for every store, before the policy or the store is asked:
    // some stores refuse an empty value (AWS), others would silently
    // replace a secret with nothing.
    if value.is_empty() {
        return Err(BodyFault::EmptyValue.into());
    }
    if value.len() > max_value {
        return Err(ApiError::TooLarge(format!(
            "value is {} bytes; the limit is {max_value}",
            value.len()
        )));
    }
    Ok(PutBody {
        value,
        labels: raw.labels.unwrap_or_default(),
    })
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

    /// Every way a `PUT` body can be refused, each with a canary in the
    /// field at fault: the fault is named, the canary never appears.
    fn refused_bodies() -> Vec<(String, BodyFault)> {
        let c = "CANARY-b0dy-5e1f";
        let n = "987654321";
        let key = "k".repeat(MAX_LABEL_KEY + 1);
        let long = format!("{c}{}", "v".repeat(MAX_LABEL_VALUE));
        let many: Vec<String> = (0..=MAX_LABELS)
            .map(|i| format!(r#""k{i}":"{c}""#))
            .collect();
        use BodyFault as F;
        vec![
            (format!(r#"{{"value":{n}}}"#), F::NotString("value")),
            (
                format!(r#"{{"value_base64":{n}}}"#),
                F::NotString("value_base64"),
            ),
            (format!(r#"{{"value":["{c}"]}}"#), F::NotString("value")),
            (
                format!(r#"{{"value":{{"{c}":"{c}"}}}}"#),
                F::NotString("value"),
            ),
            (
                format!(r#"{{"value":true,"x":"{c}"}}"#),
                F::NotString("value"),
            ),
            (
                format!(r#"{{"value_base64":["{c}"]}}"#),
                F::NotString("value_base64"),
            ),
            (format!(r#"{{"value_base64":"{c}!"}}"#), F::BadBase64),
            (format!(r#"{{"value_base64":"{c}"}}"#), F::BadBase64),
            (format!(r#"{{"value":"{c}","{c}":"{c}"}}"#), F::UnknownField),
            (format!(r#"{{"{c}":1}}"#), F::UnknownField),
            (
                format!(r#"{{"value":"{c}","value":"{c}"}}"#),
                F::DuplicateField("value"),
            ),
            (
                format!(r#"{{"value_base64":"YQ==","value_base64":"{c}"}}"#),
                F::DuplicateField("value_base64"),
            ),
            (
                format!(r#"{{"value":"{c}","labels":{{}},"labels":{{"a":"{c}"}}}}"#),
                F::DuplicateField("labels"),
            ),
            (
                format!(r#"{{"value":"{c}","value_base64":"YQ=="}}"#),
                F::BothValues,
            ),
            (
                format!(r#"{{"value_base64":"YQ==","value":"{c}"}}"#),
                F::BothValues,
            ),
            (format!(r#"{{"labels":{{"a":"{c}"}}}}"#), F::NoValue),
            (
                format!(r#"{{"value":"","labels":{{"a":"{c}"}}}}"#),
                F::EmptyValue,
            ),
            (
                format!(r#"{{"value_base64":"","labels":{{"a":"{c}"}}}}"#),
                F::EmptyValue,
            ),
            (
                format!(r#"{{"value":null,"labels":{{"a":"{c}"}}}}"#),
                F::NoValue,
            ),
            (
                format!(r#"{{"value":"{c}","labels":"{c}"}}"#),
                F::LabelsNotObject,
            ),
            (
                format!(r#"{{"value":"{c}","labels":["{c}"]}}"#),
                F::LabelsNotObject,
            ),
            (
                format!(r#"{{"value":"{c}","labels":{n}}}"#),
                F::LabelsNotObject,
            ),
            (
                format!(r#"{{"value":"{c}","labels":{{"k":["{c}"]}}}}"#),
                F::LabelNotString,
            ),
            (
                format!(r#"{{"value":"{c}","labels":{{"k":{n}}}}}"#),
                F::LabelNotString,
            ),
            (
                format!(r#"{{"value":"{c}","labels":{{{}}}}}"#, many.join(",")),
                F::TooManyLabels,
            ),
            (
                format!(r#"{{"value":"{c}","labels":{{"{key}{c}":"v"}}}}"#),
                F::LabelKeyTooLong,
            ),
            (
                format!(r#"{{"value":"{c}","labels":{{"{c} x":"v"}}}}"#),
                F::LabelKeyChars,
            ),
            (
                format!(r#"{{"value":"{c}","labels":{{"":"{c}"}}}}"#),
                F::LabelKeyChars,
            ),
            (
                format!(r#"{{"value":"{c}","labels":{{"é{c}":"v"}}}}"#),
                F::LabelKeyChars,
            ),
            (
                format!(r#"{{"value":"{c}","labels":{{"k":"{long}"}}}}"#),
                F::LabelValueTooLong,
            ),
            (
                format!(r#"{{"value":"{c}","labels":{{"k":"{c}\n"}}}}"#),
                F::LabelValueControl,
            ),
            (
                format!(r#"{{"value":"{c}","labels":{{"k":"{c}","k":"{c}"}}}}"#),
                F::DuplicateLabel,
            ),
            (format!(r#""{c}""#), F::NotObject),
            (format!(r#"["{c}"]"#), F::NotObject),
            (n.to_owned(), F::NotObject),
        ]
    }

    #[test]
    fn each_refusal_names_its_fault_and_never_the_input() {
        for (body, want) in refused_bodies() {
            let e = parse_put(body.as_bytes(), 1000).unwrap_err();
            assert_eq!(e.code(), "invalid_body", "{body}");
            let text = format!("{e} {e:?}");
            assert_eq!(
                text,
                format!("{} {:?}", ApiError::from(want), ApiError::from(want)),
                "{body}"
            );
            assert!(
                !text.contains("CANARY") && !text.contains("987654321"),
                "{body}: {text}"
            );
        }
    }

    #[test]
    fn syntax_errors_give_a_position_only() {
        for body in [
            &br#"{"value":"CANARY-x"#[..],
            br#"{"value":"CANARY-x"} CANARY"#,
            br#"{"value" "CANARY-x"}"#,
            br#"{"labels":{"k":"CANARY-x",}}"#,
            b"CANARY",
            b"",
        ] {
            let e = parse_put(body, 100).unwrap_err().to_string();
            assert!(e.contains("not valid JSON (error at line 1 column"), "{e}");
            assert!(!e.contains("CANARY"), "{e}");
        }
    }

    #[test]
    fn labels_at_the_limits_are_accepted() {
        let labels: Labels = (0..MAX_LABELS)
            .map(|i| (format!("{i:0>63}"), "v".repeat(MAX_LABEL_VALUE)))
            .collect();
        assert_eq!(check_labels(&labels), Ok(()));
        let body = put_json(&SecretBytes::copy_from(b"x"), &labels);
        assert_eq!(parse_put(&body, 10).unwrap().labels, labels);
        // `null` fields count as absent, as before.
        let b = parse_put(br#"{"value":"x","value_base64":null,"labels":null}"#, 10).unwrap();
        assert!(b.labels.is_empty());
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
