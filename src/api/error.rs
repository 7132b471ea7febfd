//! API errors: the one place where failures of every layer become an HTTP
//! status and a contract error code.

use http::StatusCode;

use crate::identity::IdentityError;
use crate::secret::PathError;
use crate::store::{StoreError, StoreErrorKind};

/// A request that failed, with what the caller may be told.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad secret path or scope.
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// Bad request body.
    #[error("invalid body: {0}")]
    InvalidBody(String),
    /// The caller matches no principal (or several).
    #[error("{0}")]
    Unauthenticated(#[from] IdentityError),
    /// The policy denies.
    #[error("the policy does not allow `{action}` on `{target}`")]
    Forbidden {
        /// The action.
        action: &'static str,
        /// The path or scope.
        target: String,
    },
    /// No such route or secret.
    #[error("{0}")]
    NotFound(String),
    /// The method does not apply to the route.
    #[error("method `{method}` is not allowed here; use {allow}")]
    MethodNotAllowed {
        /// The method sent.
        method: String,
        /// The methods allowed (also sent as `Allow`).
        allow: &'static str,
    },
    /// A `PUT` without `Content-Length` or chunked encoding.
    #[error("a request body needs `Content-Length` or chunked transfer encoding")]
    LengthRequired,
    /// Body or value over the limit.
    #[error("{0}")]
    TooLarge(String),
    /// Body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// `If-None-Match: *` and the secret exists.
    #[error("secret `{0}` already exists and `If-None-Match: *` was sent")]
    PreconditionFailed(String),
    /// The body did not arrive in time.
    #[error("the request body did not arrive within {0:?}")]
    RequestTimeout(std::time::Duration),
    /// Too many connections or requests in flight.
    #[error("too many requests in flight; retry shortly")]
    Overloaded,
    /// Too many requests of this caller in flight.
    #[error(
        "too many requests of this caller in flight ([limits] max_in_flight_per_principal); retry shortly"
    )]
    CallerOverloaded,
    /// Store unreachable or broker not ready.
    #[error("{0}")]
    Unavailable(String),
    /// The store failed.
    #[error("{0}")]
    BackendError(String),
    /// The store timed out.
    #[error("{0}")]
    BackendTimeout(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidPath(_) | Self::InvalidBody(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::LengthRequired => StatusCode::LENGTH_REQUIRED,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded | Self::CallerOverloaded => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BackendError(_) => StatusCode::BAD_GATEWAY,
            Self::BackendTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The contract's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidPath(_) => "invalid_path",
            Self::InvalidBody(_) => "invalid_body",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::LengthRequired => "length_required",
            Self::TooLarge(_) => "too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::PreconditionFailed(_) => "precondition_failed",
            Self::RequestTimeout(_) => "request_timeout",
            Self::Overloaded | Self::CallerOverloaded => "overloaded",
            Self::Unavailable(_) => "unavailable",
            Self::BackendError(_) => "backend_error",
            Self::BackendTimeout(_) => "backend_timeout",
        }
    }
}

impl From<PathError> for ApiError {
    fn from(e: PathError) -> Self {
        Self::InvalidPath(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // INVARIANT: store errors carry names and ids only, never values or
        // credentials, so their text may reach the caller.
        let msg = e.to_string();
        match e.kind() {
            StoreErrorKind::NotFound => Self::NotFound(msg),
            StoreErrorKind::Exists => match e {
                StoreError::Exists { path, .. } => Self::PreconditionFailed(path),
                _ => Self::PreconditionFailed(msg),
            },
            StoreErrorKind::Unavailable => Self::Unavailable(msg),
            StoreErrorKind::Timeout => Self::BackendTimeout(msg),
            StoreErrorKind::Denied | StoreErrorKind::Invalid | StoreErrorKind::Backend => {
                Self::BackendError(msg)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_kinds_map_to_contract_codes() {
        let s = "embedded";
        let cases = [
            (
                StoreError::NotFound {
                    store: s,
                    path: "a/b".into(),
                },
                404,
                "not_found",
            ),
            (
                StoreError::Exists {
                    store: s,
                    path: "a/b".into(),
                },
                412,
                "precondition_failed",
            ),
            (
                StoreError::Unavailable {
                    store: s,
                    detail: "x".into(),
                },
                503,
                "unavailable",
            ),
            (
                StoreError::Timeout {
                    store: s,
                    after: std::time::Duration::from_secs(5),
                },
                504,
                "backend_timeout",
            ),
            (
                StoreError::Denied {
                    store: s,
                    detail: "x".into(),
                },
                502,
                "backend_error",
            ),
            (
                StoreError::Backend {
                    store: s,
                    detail: "x".into(),
                },
                502,
                "backend_error",
            ),
        ];
        for (err, status, code) in cases {
            let api = ApiError::from(err);
            assert_eq!(api.status().as_u16(), status);
            assert_eq!(api.code(), code);
        }
    }
}
