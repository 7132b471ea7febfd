//! `POST /v1/uploads/{path}`: one Cedar decision (action `upload` on
//! `SecretBroker::Output::"{path}"`), then a signed, create-only `PUT` URL
//! for the task's output. No store call is made.
//!
//! SECURITY: the URL is a credential. It is written into this one response
//! body (zeroized when sent) and nowhere else: the audit line records the
//! path, errors and logs name the failure only, and metrics count by
//! action, decision and status.

use http::StatusCode;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{Answer, ApiError, ApiRequest, ConnInfo, Trail, ZeroizingBuf, decided, identify};
use crate::authz::RequestContext;
use crate::secret::SecretPath;
use crate::upload::Constraints;

/// What the audit line records of a minted upload: what the URL allows,
/// never the URL.
#[derive(Debug, Default)]
pub(super) struct UploadTrail {
    object: String,
    size: u64,
    sha256: Option<String>,
    expires_at: String,
}

impl UploadTrail {
    pub(super) fn audited(&self) -> crate::audit::AuditUpload<'_> {
        crate::audit::AuditUpload {
            object: &self.object,
            size: self.size,
            sha256: self.sha256.as_deref(),
            expires_at: &self.expires_at,
        }
    }
}

/// Longest `content_type` accepted.
const MAX_CONTENT_TYPE: usize = 255;

/// An upload request body, as checked.
#[derive(Debug, PartialEq, Eq)]
pub struct UploadBody {
    /// The exact size of the upload, in bytes.
    pub size: u64,
    /// Its SHA-256, when given.
    pub sha256: Option<[u8; 32]>,
    /// The `Content-Type` to store it with, when given.
    pub content_type: Option<String>,
}

/// The body's fields before their values are checked. Each is kept as a
/// JSON value so a wrong type is reported by field, not by serde, whose
/// messages quote the input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUploadBody {
    size: Option<serde_json::Value>,
    sha256: Option<serde_json::Value>,
    content_type: Option<serde_json::Value>,
}

fn bad(message: &str) -> ApiError {
    ApiError::InvalidBody(message.to_owned())
}

/// Parses and checks an upload body. Messages name the field and the
/// fault, never a token of the body.
pub fn parse_upload(bytes: &[u8]) -> Result<UploadBody, ApiError> {
    let raw: RawUploadBody = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        // SECURITY: serde's message is dropped (it quotes the input).
        serde_json::error::Category::Data => bad(
            "the body must be a JSON object {\"size\": N} with optional \"sha256\" and \"content_type\", and no other or repeated field",
        ),
        _ => ApiError::InvalidBody(format!(
            "the body is not valid JSON (error at line {} column {})",
            e.line(),
            e.column()
        )),
    })?;
    let size = match raw.size {
        None | Some(serde_json::Value::Null) => {
            return Err(bad(
                "the body needs `size`, the exact number of bytes to upload",
            ));
        }
        Some(v) => v
            .as_u64()
            .ok_or_else(|| bad("`size` must be a whole number of bytes (0 or more)"))?,
    };
    let sha256 = match raw.sha256 {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if s.len() == 64 => {
            let mut sum = [0u8; 32];
            hex::decode_to_slice(&s, &mut sum)
                .map_err(|_| bad("`sha256` must be 64 hex digits (the upload's SHA-256)"))?;
            Some(sum)
        }
        Some(_) => {
            return Err(bad("`sha256` must be 64 hex digits (the upload's SHA-256)"));
        }
    };
    let content_type = match raw.content_type {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if valid_content_type(&s) => Some(s),
        Some(_) => {
            return Err(bad(
                "`content_type` must be a media type such as \"application/gzip\" (at most 255 of [A-Za-z0-9!#$&^_.+-], one `/`, optional `; name=value` parameters)",
            ));
        }
    };
    Ok(UploadBody {
        size,
        sha256,
        content_type,
    })
}

/// A media type `type/subtype` with optional `; name=value` parameters,
/// of token characters only: it is sent as a signed header, so nothing a
/// header canonicalization could rewrite (spaces in runs, quotes,
/// control characters) is allowed.
fn valid_content_type(s: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    if s.len() > MAX_CONTENT_TYPE {
        return false;
    }
    let mut parts = s.split(';');
    let media = parts.next().unwrap_or("");
    let media_ok = media
        .split_once('/')
        .is_some_and(|(t, sub)| token(t) && token(sub));
    media_ok
        && parts.all(|p| {
            let p = p.strip_prefix(' ').unwrap_or(p);
            p.split_once('=').is_some_and(|(k, v)| token(k) && token(v))
        })
}

/// Handles `POST /v1/uploads/{path}`.
pub(super) async fn mint<'s>(
    state: &'s super::AppState,
    ctx: &RequestContext<'_>,
    conn: &ConnInfo,
    req: &mut ApiRequest,
    path: SecretPath,
    trail: &mut Trail<'s>,
) -> Result<Answer, ApiError> {
    let who = identify(state, conn, req, trail)?;
    let Some(uploader) = state.uploader.as_deref() else {
        return Err(ApiError::NotFound(
            "uploads are not configured on this broker (no [uploads] table in its config)".into(),
        ));
    };
    let raw = super::read_request_body(state, req).await?;
    let asked = parse_upload(&raw)?;
    drop(raw);
    let permit = decided(
        state.broker.authorize_upload(who, &path, ctx),
        trail,
        "upload",
        path.as_str(),
    )?;
    if asked.size > uploader.max_size() {
        return Err(ApiError::TooLarge(format!(
            "`size` is over this broker's upload limit of {} bytes ([uploads] max_size)",
            uploader.max_size()
        )));
    }
    let minted = uploader
        .mint(
            &permit,
            &Constraints {
                size: asked.size,
                sha256: asked.sha256.as_ref(),
                content_type: asked.content_type.as_deref(),
            },
        )
        .await
        .map_err(|e| {
            // The error names the cause, never a key or a URL.
            tracing::warn!(error = %e, "cannot mint an upload url");
            ApiError::Unavailable("cannot mint an upload url now; the broker's log says why".into())
        })?;
    let headers: serde_json::Map<String, serde_json::Value> = minted
        .signed
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let expires_at = jiff::Timestamp::from_second(minted.expires_at)
        .map(|t| t.to_string())
        .unwrap_or_default();
    // SECURITY: what the URL allows, never the URL (a credential).
    tracing::debug!(
        path = path.as_str(),
        object = %minted.object,
        size = asked.size,
        expires_at = %expires_at,
        "minted an upload url"
    );
    trail.upload = Some(Box::new(UploadTrail {
        object: minted.object.clone(),
        size: asked.size,
        sha256: asked.sha256.map(hex::encode),
        expires_at: expires_at.clone(),
    }));
    let answer = serde_json::json!({
        "path": path.as_str(),
        "object": minted.object,
        "method": "PUT",
        "url": minted.signed.expose_url(),
        "headers": headers,
        "expires_at": expires_at,
        "recipient": uploader.recipient(),
    });
    // SECURITY: the one copy of the URL that leaves, in a buffer sized up
    // front (no reallocation leaves a stray copy) and zeroized once sent.
    let mut out = Zeroizing::new(Vec::with_capacity(
        1024 + 2 * minted.signed.expose_url().len(),
    ));
    serde_json::to_writer(&mut *out, &answer)
        .map_err(|_| ApiError::Unavailable("cannot write the upload answer".into()))?;
    drop(answer);
    Ok(Answer::new(
        StatusCode::CREATED,
        ZeroizingBuf::new(out),
        "application/json",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_and_bad_values_name_the_field_never_the_value() {
        let ok = parse_upload(br#"{"size": 5}"#).unwrap();
        assert_eq!(
            ok,
            UploadBody {
                size: 5,
                sha256: None,
                content_type: None
            }
        );
        let sum = "ab".repeat(32);
        let full = parse_upload(
            format!(
                r#"{{"size":0,"sha256":"{sum}","content_type":"application/gzip; charset=utf-8"}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(full.sha256, Some([0xab; 32]));
        assert_eq!(
            full.content_type.as_deref(),
            Some("application/gzip; charset=utf-8")
        );
        let canary = "CANARY7731";
        let cases = [
            (format!(r#"{{"size":"{canary}"}}"#), "`size`"),
            (format!(r#"{{"size":-1,"x":"{canary}"}}"#), "no other"),
            (r#"{"size":-1}"#.to_owned(), "`size`"),
            (r#"{"size":1.5}"#.to_owned(), "`size`"),
            (r#"{}"#.to_owned(), "`size`"),
            (format!(r#"{{"size":1,"sha256":"{canary}"}}"#), "`sha256`"),
            (
                format!(r#"{{"size":1,"sha256":"{}"}}"#, "zz".repeat(32)),
                "`sha256`",
            ),
            (
                format!(r#"{{"size":1,"content_type":"{canary} x"}}"#),
                "`content_type`",
            ),
            (
                r#"{"size":1,"content_type":"text/plain\n"}"#.to_owned(),
                "`content_type`",
            ),
            (
                r#"{"size":1,"content_type":"text"}"#.to_owned(),
                "`content_type`",
            ),
            (r#"{"size":1,"size":2}"#.to_owned(), "repeated"),
            (format!(r#"{{"{canary}":1}}"#), "no other"),
            (format!(r#"["{canary}"]"#), "JSON object"),
            (format!(r#"{{"size":1 "{canary}"}}"#), "not valid JSON"),
        ];
        for (body, needle) in cases {
            let e = parse_upload(body.as_bytes()).unwrap_err();
            assert_eq!(e.code(), "invalid_body", "{body}");
            let m = e.to_string();
            assert!(m.contains(needle), "{body}: {m}");
            assert!(!m.contains(canary), "{body}: {m}");
        }
    }
}
