//! Mapping AWS SDK failures to store error kinds. Only error codes, AWS's
//! messages and transport descriptions are used: the SDK never puts a
//! request body (a value) in an error.

use std::time::Duration;

use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::STORE;
use crate::secret::{ScopePath, SecretPath};
use crate::store::StoreError;

/// What an operator should check when AWS refuses the broker.
const IAM_HINT: &str = "check the broker's AWS credentials (the default chain: environment, web identity, profile, instance role) and its IAM policy (deploy/backend-policies/aws/writer.json)";

/// Whether the failed call read or wrote (for `ResourceExists`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Call {
    Read,
    Write,
}

/// Maps a failure of a call on one secret.
pub(super) fn map_sdk<E, R>(
    e: SdkError<E, R>,
    _call: Call,
    path: &SecretPath,
    after: Duration,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    map(e, path.as_str(), after)
}

/// Maps a failure of `ListSecrets`.
pub(super) fn map_list<E, R>(e: SdkError<E, R>, scope: &ScopePath, after: Duration) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    map(e, scope.as_str(), after)
}

fn map<E, R>(e: SdkError<E, R>, what: &str, after: Duration) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let code = e.code().unwrap_or("").to_owned();
    let message = e.message().unwrap_or("").to_owned();
    let said = if message.is_empty() {
        code.clone()
    } else {
        format!("{code}: {message}")
    };
    match &e {
        SdkError::TimeoutError(_) => {
            return StoreError::Timeout {
                store: STORE,
                after,
            };
        }
        SdkError::DispatchFailure(d) => {
            if d.is_timeout() {
                return StoreError::Timeout {
                    store: STORE,
                    after,
                };
            }
            let detail = DisplayErrorContext(&e).to_string();
            if credentials_problem(&detail) {
                return StoreError::Denied {
                    store: STORE,
                    detail: format!("no usable AWS credentials ({detail}); {IAM_HINT}"),
                };
            }
            return StoreError::Unavailable {
                store: STORE,
                detail: format!("cannot reach AWS Secrets Manager: {detail}"),
            };
        }
        SdkError::ConstructionFailure(_) => {
            let detail = DisplayErrorContext(&e).to_string();
            if credentials_problem(&detail) {
                return StoreError::Denied {
                    store: STORE,
                    detail: format!("no usable AWS credentials ({detail}); {IAM_HINT}"),
                };
            }
            return StoreError::Invalid {
                store: STORE,
                detail: format!("cannot build the request: {detail}"),
            };
        }
        _ => {}
    }
    let status = match &e {
        SdkError::ServiceError(s) => Some(s.raw()),
        SdkError::ResponseError(r) => Some(r.raw()),
        _ => None,
    };
    let status_dbg = status.map(|r| format!("{r:?}")).unwrap_or_default();
    let is_5xx = status_dbg.contains("StatusCode(5");
    match code.as_str() {
        "ResourceNotFoundException" => StoreError::NotFound {
            store: STORE,
            path: what.to_owned(),
        },
        "ResourceExistsException" => StoreError::Exists {
            store: STORE,
            path: what.to_owned(),
        },
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredTokenException"
        | "ExpiredToken"
        | "DecryptionFailure"
        | "EncryptionFailure" => StoreError::Denied {
            store: STORE,
            detail: format!("AWS refused the broker ({said}); {IAM_HINT}"),
        },
        "ThrottlingException"
        | "InternalServiceError"
        | "ServiceUnavailable"
        | "RequestLimitExceeded" => StoreError::Unavailable {
            store: STORE,
            detail: format!("AWS Secrets Manager answered {said}"),
        },
        "InvalidParameterException"
        | "InvalidRequestException"
        | "ValidationException"
        | "LimitExceededException"
        | "MalformedPolicyDocumentException" => StoreError::Invalid {
            store: STORE,
            detail: format!("AWS Secrets Manager refused `{what}`: {said}"),
        },
        _ if is_5xx => StoreError::Unavailable {
            store: STORE,
            detail: format!("AWS Secrets Manager answered {said}"),
        },
        _ => StoreError::Backend {
            store: STORE,
            detail: format!(
                "unexpected answer from AWS Secrets Manager for `{what}`: {}",
                if said.is_empty() {
                    DisplayErrorContext(&e).to_string()
                } else {
                    said
                }
            ),
        },
    }
}

fn credentials_problem(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("credential") || d.contains("identity")
}
