//! The two KV v2 calls that carry a value, written by hand over the same
//! HTTP client so that the value only ever sits in zeroizing buffers on our
//! side (vaultrs would copy it into a `serde_json::Value`).
//!
//! A value is stored as `{"value": "<utf-8>"}` when it is UTF-8 and as
//! `{"value_base64": "<standard base64>"}` otherwise: readable by people and
//! `bao kv get`, and exactly reversible. The version's labels go in the same
//! data, as `"labels": {...}`: one write sets value and labels together, and
//! one read returns them together, so no reader can see a value with labels
//! that were not written with it (the secret's `custom_metadata`, which
//! applies to every version, is only the listing's copy; a version written
//! before labels were kept in data falls back to it).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use super::auth::{Login, Refusal, Session};
use super::{STORE, by_status, map_reqwest};
use crate::secret::SecretBytes;
use crate::store::{Labels, StoreError, Timestamp};

/// What a confirmed data write returned.
#[derive(Debug)]
pub(super) struct Written {
    pub(super) version: u64,
    pub(super) created_at: Timestamp,
}

/// Why a data write did not land.
#[derive(Debug)]
pub(super) enum WriteError {
    /// `cas` no longer matches the current version: someone wrote first.
    CasMismatch,
    /// Anything else.
    Store(StoreError),
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl Refusal for WriteError {
    fn is_refusal(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_refusal())
    }
}

/// A request body that zeroizes itself when hyper is done with it.
struct ZeroBody(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for ZeroBody {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// `{"options":{"cas":N},"data":{"labels":{...},...}}` in a buffer sized up front, so it
/// never reallocates and leaves a stray copy behind.
fn write_body(
    value: &SecretBytes,
    labels: &Labels,
    cas: u64,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let bytes = value.expose_secret();
    let labels = serde_json::to_vec(labels).map_err(|e| StoreError::Backend {
        store: STORE,
        detail: format!("cannot encode the request: {e}"),
    })?;
    // Worst case JSON escaping is 6 bytes per input byte (`\u0000`).
    let mut body = Zeroizing::new(Vec::with_capacity(bytes.len() * 6 + labels.len() + 112));
    body.extend_from_slice(b"{\"options\":{\"cas\":");
    body.extend_from_slice(cas.to_string().as_bytes());
    body.extend_from_slice(b"},\"data\":{\"labels\":");
    body.extend_from_slice(&labels);
    body.push(b',');
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            body.extend_from_slice(b"\"value\":");
            serde_json::to_writer(&mut *body, text).map_err(|e| StoreError::Backend {
                store: STORE,
                detail: format!("cannot encode the request: {e}"),
            })?;
        }
        Err(_) => {
            body.extend_from_slice(b"\"value_base64\":\"");
            let start = body.len();
            body.resize(start + bytes.len().div_ceil(3) * 4, 0);
            let n =
                B64.encode_slice(bytes, &mut body[start..])
                    .map_err(|e| StoreError::Backend {
                        store: STORE,
                        detail: format!("cannot encode the request: {e}"),
                    })?;
            body.truncate(start + n);
            body.push(b'"');
        }
    }
    body.extend_from_slice(b"}}");
    Ok(body)
}

fn url(session: &Session, mount: &str, key: &str) -> String {
    format!("{}/v1/{mount}/data/{key}", session.address)
}

fn request(
    session: &Session,
    method: reqwest::Method,
    url: String,
    token: &str,
) -> reqwest::RequestBuilder {
    let mut req = session
        .http
        .request(method, url)
        .header("X-Vault-Request", "true")
        .header("X-Vault-Token", token);
    if let Some(ns) = &session.namespace {
        req = req.header("X-Vault-Namespace", ns);
    }
    req
}

/// `POST {mount}/data/{key}` with `cas`: acknowledged only by Vault's 200.
/// Sent again only after Vault refused a dead token (see
/// [`Session::with_login`]: a refused write changed nothing).
pub(super) async fn write(
    session: &Session,
    mount: &str,
    key: &str,
    value: &SecretBytes,
    labels: &Labels,
    cas: u64,
) -> Result<Written, WriteError> {
    session
        .with_login(|login| write_once(session, login, mount, key, value, labels, cas))
        .await
}

async fn write_once(
    session: &Session,
    login: std::sync::Arc<Login>,
    mount: &str,
    key: &str,
    value: &SecretBytes,
    labels: &Labels,
    cas: u64,
) -> Result<Written, WriteError> {
    let body = write_body(value, labels, cas).map_err(WriteError::Store)?;
    let resp = request(
        session,
        reqwest::Method::POST,
        url(session, mount, key),
        &login.token,
    )
    .header("content-type", "application/json")
    .body(reqwest::Body::from(Bytes::from_owner(ZeroBody(body))))
    .send()
    .await
    .map_err(|e| WriteError::Store(map_reqwest(&e, session.timeout)))?;
    crate::store::https::refuse_redirect(STORE, &resp)?;
    let status = resp.status().as_u16();
    let text = resp
        .bytes()
        .await
        .map_err(|e| WriteError::Store(map_reqwest(&e, session.timeout)))?;
    if status != 200 {
        let msg = errors(&text);
        if status == 400 && msg.contains("check-and-set") {
            return Err(WriteError::CasMismatch);
        }
        return Err(WriteError::Store(by_status(status, &msg, key)));
    }
    #[derive(Deserialize)]
    struct Resp {
        data: Meta,
    }
    #[derive(Deserialize)]
    struct Meta {
        version: u64,
        created_time: String,
    }
    let r: Resp = serde_json::from_slice(&text).map_err(|e| {
        WriteError::Store(StoreError::Backend {
            store: STORE,
            detail: format!("unexpected answer to a write of `{key}`: {e}"),
        })
    })?;
    Ok(Written {
        version: r.data.version,
        created_at: parse_time(&r.data.created_time).unwrap_or_else(Timestamp::now),
    })
}

/// A string field that is zeroized when dropped.
struct ZString(Zeroizing<String>);

impl<'de> Deserialize<'de> for ZString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self(Zeroizing::new(s)))
    }
}

/// What `GET {mount}/data/{key}` answered, when it holds a live version.
pub(super) struct Read {
    pub(super) version: u64,
    pub(super) value: SecretBytes,
    pub(super) labels: Labels,
}

/// `GET {mount}/data/{key}`: the current version, its value and the
/// secret's custom metadata (the labels) in one call.
pub(super) async fn read(session: &Session, mount: &str, key: &str) -> Result<Read, StoreError> {
    session
        .with_login(|login| read_once(session, login, mount, key))
        .await
}

async fn read_once(
    session: &Session,
    login: std::sync::Arc<Login>,
    mount: &str,
    key: &str,
) -> Result<Read, StoreError> {
    let resp = request(
        session,
        reqwest::Method::GET,
        url(session, mount, key),
        &login.token,
    )
    .send()
    .await
    .map_err(|e| map_reqwest(&e, session.timeout))?;
    crate::store::https::refuse_redirect(STORE, &resp)?;
    let status = resp.status().as_u16();
    let body = resp
        .bytes()
        .await
        .map_err(|e| map_reqwest(&e, session.timeout))?;
    let mut body = ZeroBytes::new(body);
    if status != 200 {
        return Err(by_status(status, &errors(body.as_slice()), key));
    }
    #[derive(Deserialize)]
    struct Resp {
        data: Option<Data>,
    }
    #[derive(Deserialize)]
    struct Data {
        data: Option<Fields>,
        metadata: Option<Meta>,
    }
    #[derive(Deserialize)]
    struct Fields {
        value: Option<ZString>,
        value_base64: Option<ZString>,
        /// This version's labels (absent in versions written before they
        /// were kept here).
        labels: Option<Labels>,
    }
    #[derive(Deserialize)]
    struct Meta {
        version: u64,
        #[serde(default)]
        destroyed: bool,
        #[serde(default)]
        deletion_time: String,
        custom_metadata: Option<HashMap<String, String>>,
    }
    let parsed: Resp =
        serde_json::from_slice(body.as_slice()).map_err(|e| StoreError::Backend {
            store: STORE,
            // serde_json's message names a line and column, never the input.
            detail: format!("unexpected answer to a read of `{key}`: {e}"),
        })?;
    body.wipe();
    let not_found = || StoreError::NotFound {
        store: STORE,
        path: key.to_owned(),
    };
    let data = parsed.data.ok_or_else(not_found)?;
    let meta = data.metadata.ok_or_else(not_found)?;
    // A version deleted or destroyed outside the broker reads as absent.
    if meta.destroyed || !meta.deletion_time.is_empty() {
        return Err(not_found());
    }
    let fields = data.data.ok_or_else(not_found)?;
    let value = match (fields.value, fields.value_base64) {
        (Some(v), None) => SecretBytes::copy_from(v.0.as_bytes()),
        (None, Some(b)) => {
            let mut out = Zeroizing::new(vec![0u8; b.0.len() / 4 * 3 + 3]);
            let n = B64
                .decode_slice(b.0.as_bytes(), &mut out[..])
                .map_err(|_| StoreError::Backend {
                    store: STORE,
                    detail: format!("`{key}` holds a `value_base64` that is not base64"),
                })?;
            SecretBytes::copy_from(&out[..n])
        }
        _ => {
            return Err(StoreError::Backend {
                store: STORE,
                detail: format!(
                    "`{key}` was not written by the broker: it needs exactly one of the fields `value` or `value_base64`"
                ),
            });
        }
    };
    // SECURITY: the labels written with this version, in the same response
    // as its value; the secret-wide custom metadata only for older versions.
    let labels = match fields.labels {
        Some(l) => l,
        None => meta
            .custom_metadata
            .unwrap_or_default()
            .into_iter()
            .collect(),
    };
    Ok(Read {
        version: meta.version,
        value,
        labels,
    })
}

/// A response body we zero once parsed, where we hold the only reference.
struct ZeroBytes(Option<Bytes>);

impl ZeroBytes {
    fn new(b: Bytes) -> Self {
        Self(Some(b))
    }

    fn as_slice(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }

    fn wipe(&mut self) {
        if let Some(b) = self.0.take() {
            if let Ok(mut m) = b.try_into_mut() {
                m.as_mut().zeroize();
            }
        }
    }
}

impl Drop for ZeroBytes {
    fn drop(&mut self) {
        self.wipe();
    }
}

/// Vault's `{"errors": [...]}` joined; Vault's messages name paths and
/// policies, never values.
pub(super) fn errors(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct E {
        #[serde(default)]
        errors: Vec<String>,
    }
    serde_json::from_slice::<E>(body)
        .map(|e| e.errors.join("; "))
        .unwrap_or_default()
}

/// RFC 3339 (`2026-01-02T03:04:05.123456789Z`, or with an offset) to ms.
pub(super) fn parse_time(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        std::str::from_utf8(b.get(r)?).ok()?.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = s.get(start..i)?;
        let padded = format!("{:0<3}", frac.get(..3.min(frac.len()))?);
        ms = padded.parse().ok()?;
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 60 + om;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    u64::try_from(secs * 1000 + ms).ok().map(Timestamp)
}

/// Howard Hinnant's civil-to-days (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_like_vault_writes_them() {
        assert_eq!(
            parse_time("2026-11-22T01:02:03.456789123Z"),
            Some(Timestamp(1_795_309_323_456))
        );
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(Timestamp(0)));
        assert_eq!(
            parse_time("1970-01-01T01:00:00.5+01:00"),
            Some(Timestamp(500))
        );
        assert_eq!(
            parse_time("2000-02-29T00:00:00Z"),
            Some(Timestamp(951_782_400_000))
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-13-01T00:00:00Z",
            "2026-11-22T01:02:03",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn bodies_are_exact() {
        let labels: Labels = [("k".to_owned(), "v \"q\"".to_owned())].into();
        let b = write_body(&SecretBytes::copy_from(b"he said \"hi\"\n"), &labels, 3).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["options"]["cas"], 3);
        assert_eq!(v["data"]["labels"]["k"], "v \"q\"");
        assert_eq!(v["data"]["value"], "he said \"hi\"\n");
        let bin = [0u8, 0xff, 0xfe, 1, 2];
        let b = write_body(&SecretBytes::copy_from(&bin), &Labels::new(), 0).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            B64.decode(v["data"]["value_base64"].as_str().unwrap())
                .unwrap(),
            bin
        );
        // No reallocation: the worst-case escape fits the reserved capacity.
        let ctrl = vec![1u8; 1000];
        let b = write_body(&SecretBytes::copy_from(&ctrl), &labels, 12).unwrap();
        assert!(b.len() <= b.capacity(), "{}", b.len());
        assert!(b.len() <= ctrl.len() * 6 + 112 + serde_json::to_vec(&labels).unwrap().len());
    }
}
