//! What the API answers with: a status, the few headers its answers carry,
//! and a body that is zeroized once sent.
//!
//! Kept as plain fields rather than an `http::Response`: a header map
//! costs two allocations, a hashed insert per header, a copy of the
//! request id and of the version number, and a free of each, on every
//! request. The plain-GET lane writes an answer as it is
//! ([`Answer::headers`]); hyper's path turns it into a response
//! ([`Answer::into_response`]) from the same list, so both write the same
//! headers in the same order.

use http::header::{ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::{Body, RequestId, ZeroizingBuf};

/// `X-Request-Id`, on every answer to a request that got an id.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Secret-Version`, on a read's answer.
pub const X_SECRET_VERSION: HeaderName = HeaderName::from_static("x-secret-version");

/// One answer of the API.
#[derive(Debug)]
pub struct Answer {
    status: StatusCode,
    content_type: &'static str,
    request_id: Option<RequestId>,
    secret_version: Option<u64>,
    allow: Option<&'static str>,
    close: bool,
    body: ZeroizingBuf,
}

impl Answer {
    /// An answer with `status`, `body` of `content_type`, `no-store`.
    pub fn new(status: StatusCode, body: ZeroizingBuf, content_type: &'static str) -> Self {
        Self {
            status,
            content_type,
            request_id: None,
            secret_version: None,
            allow: None,
            close: false,
            body,
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Says which request this answers (`X-Request-Id`).
    pub fn set_request_id(&mut self, id: RequestId) {
        self.request_id = Some(id);
    }

    /// Says which version of a secret the body holds (`X-Secret-Version`).
    pub fn set_secret_version(&mut self, version: u64) {
        self.secret_version = Some(version);
    }

    /// Lists the methods the path allows (`Allow`, on a 405).
    pub fn set_allow(&mut self, methods: &'static str) {
        self.allow = Some(methods);
    }

    /// Closes the connection after this answer (`Connection: close`).
    pub fn set_close(&mut self) {
        self.close = true;
    }

    /// Whether the connection closes after this answer.
    pub fn closes(&self) -> bool {
        self.close
    }

    /// The body's bytes.
    pub fn body(&self) -> &[u8] {
        bytes::Buf::chunk(&self.body)
    }

    /// Hands `f` each header, name and value, in the order they are
    /// written; `content-length` and `date` are the writer's.
    pub fn headers(&self, mut f: impl FnMut(&HeaderName, &[u8])) {
        f(&CONTENT_TYPE, self.content_type.as_bytes());
        f(&CACHE_CONTROL, b"no-store");
        if let Some(id) = &self.request_id {
            f(&X_REQUEST_ID, id.as_str().as_bytes());
        }
        if let Some(version) = self.secret_version {
            f(
                &X_SECRET_VERSION,
                itoa::Buffer::new().format(version).as_bytes(),
            );
        }
        if self.close {
            f(&CONNECTION, b"close");
        }
        if let Some(allow) = self.allow {
            f(&ALLOW, allow.as_bytes());
        }
    }

    /// The same answer as an `http::Response`, for hyper.
    pub fn into_response(self) -> Response<Body> {
        let mut headers = HeaderMap::with_capacity(6);
        self.headers(|name, value| {
            // INVARIANT: every value above is visible ASCII (a media type,
            // hex digits, digits, method names), which a header takes.
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(name.clone(), value);
            }
        });
        let mut response = Response::new(Body::new(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = headers;
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(answer: &Answer) -> Vec<(String, String)> {
        let mut out = Vec::new();
        answer.headers(|n, v| out.push((n.to_string(), String::from_utf8(v.to_vec()).unwrap())));
        out
    }

    #[test]
    fn the_response_for_hyper_has_the_headers_the_lane_writes_in_order() {
        let mut answer = Answer::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ZeroizingBuf::public(b"{}".to_vec()),
            "application/json",
        );
        answer.set_request_id(RequestId::new(b"0123abcd", 0x2a));
        answer.set_secret_version(7);
        answer.set_close();
        answer.set_allow("GET, PUT, DELETE");
        let lane = listed(&answer);
        assert_eq!(
            lane,
            [
                ("content-type", "application/json"),
                ("cache-control", "no-store"),
                ("x-request-id", "0123abcd-2a"),
                ("x-secret-version", "7"),
                ("connection", "close"),
                ("allow", "GET, PUT, DELETE"),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        assert!(answer.closes());
        let response = answer.into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        let hyper: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(hyper, lane);
    }

    #[test]
    fn a_plain_answer_carries_type_and_no_store_only() {
        let answer = Answer::new(StatusCode::OK, ZeroizingBuf::default(), "text/plain");
        assert_eq!(
            listed(&answer),
            [
                ("content-type", "text/plain"),
                ("cache-control", "no-store")
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        assert!(!answer.closes());
        assert!(answer.body().is_empty());
    }
}
