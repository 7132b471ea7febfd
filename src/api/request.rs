//! The parts of a request the API acts on, taken out of hyper's request as
//! soon as hyper hands it over.
//!
//! hyper gives out the URI and every header value as slices of the
//! connection's read buffer. While any of them is alive the buffer is
//! shared, so hyper's next read (it reads on while the handler runs, to see
//! the peer hang up) cannot reuse it: it allocates a fresh 8 KiB buffer,
//! and the old one is freed (and cleared by the zero-on-free allocator)
//! when the request drops. Copying out the few fields the API uses and
//! dropping hyper's request before the handler runs lets hyper keep its one
//! buffer for the whole connection. It also means a bearer token is hashed
//! at once and never copied.
//!
//! A `PUT` or `POST` keeps its headers and body: its body is read from the
//! same buffer, and the body reader checks `Content-Type` and
//! `Content-Length`.

use http::header::{ACCEPT, AUTHORIZATION, CACHE_CONTROL, IF_NONE_MATCH};
use http::{HeaderMap, Method, Request};
use hyper::body::Incoming;

use crate::identity::{IdentityError, Resolver, TokenDigest};

/// What the API needs of one request, owning nothing of hyper's buffer
/// except for a `PUT`'s or `POST`'s headers and body.
#[derive(Debug)]
pub struct ApiRequest {
    /// The request method.
    pub method: Method,
    /// The URI path (no query), as sent.
    pub path: String,
    /// The digest of the bearer token, if an `Authorization` header came;
    /// an error if it was not a bearer token (reported only where identity
    /// is needed, so `/healthz` does not care).
    pub bearer: Option<Result<TokenDigest, IdentityError>>,
    /// `Accept` asks for `application/octet-stream`.
    pub wants_raw: bool,
    /// `If-None-Match: *` (create only).
    pub create_only: bool,
    /// The first query parameter's name, if the URI has a query string
    /// (bounded and printable: see [`query_name`]). The API defines no
    /// query parameter, so any is refused rather than ignored.
    pub query: Option<String>,
    /// `Cache-Control: no-cache`: a read past the broker's read cache.
    pub fresh: bool,
    /// A `PUT`'s or `POST`'s headers and body, for the body reader; or the body alone
    /// of any other request that sent one, so that what an early answer
    /// left unread can be drained ([`ApiRequest::drain`]). Boxed: this
    /// struct is moved into every request's future, and a read has no body.
    pub body: Option<Box<(HeaderMap, Incoming)>>,
}

impl ApiRequest {
    /// Reads and discards what is left of the request's body, so that an
    /// answer sent before the body was read (a `401`, `400`, `405`, ...)
    /// reaches a client still writing it: closing a socket with unread
    /// input resets it, and the client sees `EPIPE`/`ECONNRESET` instead of
    /// the answer (Go's `net/http` and nginx's `lingering_close` do the
    /// same). At most `max_bytes` (judged by `Content-Length` up front where
    /// sent) and `timeout`. Returns whether the body was read to its end,
    /// so the connection can be kept.
    pub async fn drain(&mut self, max_bytes: usize, timeout: std::time::Duration) -> bool {
        use http_body_util::BodyExt as _;
        let Some(body) = self.body.as_mut() else {
            return true;
        };
        let (headers, incoming) = &mut **body;
        if hyper::body::Body::is_end_stream(incoming) {
            return true;
        }
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_bytes as u64) {
            return false;
        }
        let drain = async {
            let mut seen = 0usize;
            while let Some(frame) = incoming.frame().await {
                let Ok(frame) = frame else { return false };
                if let Some(data) = frame.data_ref() {
                    seen += data.len();
                    if seen > max_bytes {
                        return false;
                    }
                }
            }
            true
        };
        tokio::time::timeout(timeout, drain).await.unwrap_or(false)
    }
}

impl From<Request<Incoming>> for ApiRequest {
    fn from(req: Request<Incoming>) -> Self {
        let (parts, incoming) = req.into_parts();
        let fields = HeadFields::scan(
            parts
                .headers
                .iter()
                .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes())),
        );
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().map(query_name);
        let method = parts.method;
        let body = if method == Method::PUT || method == Method::POST {
            Some(Box::new((parts.headers, incoming)))
        } else if hyper::body::Body::is_end_stream(&incoming) {
            None
        } else {
            // Only the length is kept, for the drain.
            let mut headers = HeaderMap::new();
            if let Some(v) = parts.headers.get(http::header::CONTENT_LENGTH) {
                headers.insert(http::header::CONTENT_LENGTH, v.clone());
            }
            Some(Box::new((headers, incoming)))
        };
        fields.into_request(method, path, query, body)
    }
}

impl ApiRequest {
    /// A `GET` with no body, no query and an origin-form `path`, read by
    /// the connection's own parser (`server::plain_get`) instead of hyper:
    /// the same fields as hyper's request would give, from the head's
    /// `(name, value)` pairs in the order sent.
    pub fn plain_get<'h>(path: &str, headers: impl Iterator<Item = (&'h [u8], &'h [u8])>) -> Self {
        HeadFields::scan(headers).into_request(Method::GET, path.to_owned(), None, None)
    }
}

/// What the API reads from a request's headers: for each header it takes
/// the first one sent (as `HeaderMap::get` does), `Cache-Control` from
/// all of them.
#[derive(Default)]
struct HeadFields {
    bearer: Option<Result<TokenDigest, IdentityError>>,
    accept: Option<bool>,
    if_none_match: Option<bool>,
    fresh: bool,
}

impl HeadFields {
    /// Reads `(name, value)` pairs, names in any case.
    fn scan<'h>(headers: impl Iterator<Item = (&'h [u8], &'h [u8])>) -> Self {
        let mut f = Self::default();
        for (name, value) in headers {
            if name.eq_ignore_ascii_case(AUTHORIZATION.as_str().as_bytes()) {
                if f.bearer.is_none() {
                    f.bearer = Some(Resolver::bearer_digest(value));
                }
            } else if name.eq_ignore_ascii_case(ACCEPT.as_str().as_bytes()) {
                // `HeaderValue::to_str`: visible ASCII only.
                f.accept.get_or_insert_with(|| {
                    value.iter().all(|&b| b == b'\t' || (32..127).contains(&b))
                        && value
                            .windows(APPLICATION_OCTET_STREAM.len())
                            .any(|w| w == APPLICATION_OCTET_STREAM)
                });
            } else if name.eq_ignore_ascii_case(IF_NONE_MATCH.as_str().as_bytes()) {
                f.if_none_match
                    .get_or_insert_with(|| value.trim_ascii() == b"*");
            } else if name.eq_ignore_ascii_case(CACHE_CONTROL.as_str().as_bytes()) {
                f.fresh |= value
                    .split(|&b| b == b',')
                    .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-cache"));
            }
        }
        f
    }

    fn into_request(
        self,
        method: Method,
        path: String,
        query: Option<String>,
        body: Option<Box<(HeaderMap, Incoming)>>,
    ) -> ApiRequest {
        ApiRequest {
            method,
            path,
            bearer: self.bearer,
            wants_raw: self.accept.unwrap_or(false),
            create_only: self.if_none_match.unwrap_or(false),
            query,
            fresh: self.fresh,
            body,
        }
    }
}

/// What `Accept` must contain for a read to answer raw bytes.
const APPLICATION_OCTET_STREAM: &[u8] = b"application/octet-stream";

/// Longest query parameter name an error repeats.
const MAX_QUERY_NAME: usize = 64;

/// The name of a query string's first parameter (`version` in
/// `version=1&x`), cut to [`MAX_QUERY_NAME`] characters with anything
/// unprintable replaced; empty when the first parameter has no name.
// SECURITY: never the value: `?value=hunter2` must not come back in an
// error body or reach a log.
pub fn query_name(query: &str) -> String {
    let first = query.split('&').next().unwrap_or("");
    let name = first.split('=').next().unwrap_or("");
    super::printable(name, MAX_QUERY_NAME)
}

/// The `400 invalid_path` for a request with a query string: the API takes
/// none, and ignoring one (`?version=1`) would let a caller believe it got
/// what it asked for.
pub fn query_refused(name: &str) -> super::ApiError {
    let what = if name.is_empty() {
        "this request has a query string".to_owned()
    } else {
        format!("this request has the query parameter `{name}`")
    };
    super::ApiError::InvalidPath(format!(
        "the API takes no query parameters and {what}; remove it (a read always returns the current version)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_are_the_first_name_only_bounded_and_printable() {
        assert_eq!(query_name("version=1"), "version");
        assert_eq!(query_name("a&b=2"), "a");
        assert_eq!(query_name("=secret-value"), "");
        assert_eq!(query_name(""), "");
        assert_eq!(query_name("x=hunter2&y"), "x");
        assert_eq!(query_name("a%0Ab=1"), "a%0Ab");
        assert_eq!(query_name("\u{1b}[31m=1"), "?[31m");
        assert_eq!(query_name(&"n".repeat(1000)).len(), MAX_QUERY_NAME);
        let e = query_refused("version");
        assert_eq!(e.code(), "invalid_path");
        assert!(e.to_string().contains("`version`"), "{e}");
        assert!(!query_refused("").to_string().contains("``"));
    }
}
