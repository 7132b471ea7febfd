//! Mapping Google client failures to store error kinds. Uses the RPC status
//! code and message, HTTP status and transport class only: the client puts
//! no request body (a value) in its errors.

use std::error::Error as _;
use std::time::Duration;

use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::Code;

use super::STORE;
use crate::store::StoreError;

/// What an operator should check when Google refuses the broker.
pub(super) const IAM_HINT: &str = "check the broker's Google credentials (Application Default Credentials: $GOOGLE_APPLICATION_CREDENTIALS, gcloud, or workload identity) and its IAM role on the project (deploy/backend-policies/gcp/writer-role.yaml)";

/// The innermost Google error in `e`'s chain: retries wrap the last
/// attempt's error in an `exhausted` one.
fn innermost(e: &GaxError) -> &GaxError {
    let mut cur = e;
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(g) = s.downcast_ref::<GaxError>() {
            cur = g;
        }
        src = s.source();
    }
    cur
}

/// Maps a failure of a call about `what` (a path or scope).
pub(super) fn map(e: &GaxError, what: &str, after: Duration) -> StoreError {
    let inner = innermost(e);
    if inner.is_timeout() || e.is_timeout() {
        return StoreError::Timeout {
            store: STORE,
            after,
        };
    }
    if inner.is_connect() {
        return StoreError::Unavailable {
            store: STORE,
            detail: format!("cannot reach Google Secret Manager: {inner}"),
        };
    }
    if inner.is_authentication() {
        return StoreError::Denied {
            store: STORE,
            detail: format!("no usable Google credentials ({inner}); {IAM_HINT}"),
        };
    }
    if let Some(status) = inner.status() {
        let said = format!("{}: {}", status.code.name(), status.message);
        return match status.code {
            Code::NotFound => StoreError::NotFound {
                store: STORE,
                path: what.to_owned(),
            },
            Code::AlreadyExists => StoreError::Exists {
                store: STORE,
                path: what.to_owned(),
            },
            Code::PermissionDenied | Code::Unauthenticated => StoreError::Denied {
                store: STORE,
                detail: format!("Google Secret Manager refused the broker ({said}); {IAM_HINT}"),
            },
            Code::DeadlineExceeded => StoreError::Timeout {
                store: STORE,
                after,
            },
            Code::Unavailable
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Cancelled => StoreError::Unavailable {
                store: STORE,
                detail: format!("Google Secret Manager answered {said}"),
            },
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                StoreError::Invalid {
                    store: STORE,
                    detail: format!("Google Secret Manager refused `{what}`: {said}"),
                }
            }
            _ => StoreError::Backend {
                store: STORE,
                detail: format!(
                    "unexpected answer from Google Secret Manager for `{what}`: {said}"
                ),
            },
        };
    }
    match inner.http_status_code() {
        // The client follows no redirect (see `GcpStore::connect`).
        Some(code @ 300..=399) => crate::store::redirected(
            STORE,
            code,
            inner
                .http_headers()
                .and_then(|h| h.get("location"))
                .and_then(|v| v.to_str().ok()),
        ),
        Some(401 | 403) => StoreError::Denied {
            store: STORE,
            detail: format!("Google Secret Manager refused the broker ({inner}); {IAM_HINT}"),
        },
        Some(404) => StoreError::NotFound {
            store: STORE,
            path: what.to_owned(),
        },
        Some(409) => StoreError::Exists {
            store: STORE,
            path: what.to_owned(),
        },
        Some(429 | 500..=599) => StoreError::Unavailable {
            store: STORE,
            detail: format!("Google Secret Manager answered {inner}"),
        },
        Some(400..=499) => StoreError::Invalid {
            store: STORE,
            detail: format!("Google Secret Manager refused `{what}`: {inner}"),
        },
        // A connection dropped mid-call (the server died): unreachable.
        _ if inner.is_transport() || e.is_exhausted() => StoreError::Unavailable {
            store: STORE,
            detail: format!("cannot reach Google Secret Manager: {inner}"),
        },
        _ => StoreError::Backend {
            store: STORE,
            detail: format!("unexpected answer from Google Secret Manager for `{what}`: {inner}"),
        },
    }
}
