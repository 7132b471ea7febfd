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
//! A `PUT` keeps its headers and body: its body is read from the same
//! buffer, and the body reader checks `Content-Type` and `Content-Length`.

use http::header::{ACCEPT, AUTHORIZATION, IF_NONE_MATCH};
use http::{HeaderMap, Method, Request};
use hyper::body::Incoming;

use crate::identity::{IdentityError, Resolver, TokenDigest};

/// What the API needs of one request, owning nothing of hyper's buffer
/// except for a `PUT`'s headers and body.
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
    /// A `PUT`'s headers and body, for the body reader. Boxed: this struct
    /// is moved into every request's future, and a read has no body.
    pub body: Option<Box<(HeaderMap, Incoming)>>,
}

impl From<Request<Incoming>> for ApiRequest {
    fn from(req: Request<Incoming>) -> Self {
        let (parts, incoming) = req.into_parts();
        let headers = &parts.headers;
        let bearer = headers
            .get(AUTHORIZATION)
            .map(|v| Resolver::bearer_digest(v.as_bytes()));
        let wants_raw = headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/octet-stream"));
        let create_only = headers
            .get(IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes().trim_ascii() == b"*");
        let path = parts.uri.path().to_owned();
        let method = parts.method;
        let body = (method == Method::PUT).then(|| Box::new((parts.headers, incoming)));
        Self {
            method,
            path,
            bearer,
            wants_raw,
            create_only,
            body,
        }
    }
}
