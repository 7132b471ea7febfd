//! Mapping AWS SDK failures to store error kinds. Only error codes, AWS's
//! messages and transport descriptions are used: the SDK never puts a
//! request body (a value) in an error.

use std::time::Duration;

use aws_sdk_secretsmanager::config::http::HttpResponse;
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
pub(super) fn map_sdk<E>(
    e: SdkError<E, HttpResponse>,
    _call: Call,
    path: &SecretPath,
    after: Duration,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    map(e, path.as_str(), after)
}

/// Maps a failure of `ListSecrets`.
pub(super) fn map_list<E>(
    e: SdkError<E, HttpResponse>,
    scope: &ScopePath,
    after: Duration,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    map(e, scope.as_str(), after)
}

fn map<E>(e: SdkError<E, HttpResponse>, what: &str, after: Duration) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
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
            if let Some(denied) = no_credentials(&detail) {
                return denied;
            }
            return StoreError::Unavailable {
                store: STORE,
                detail: format!("cannot reach AWS Secrets Manager: {detail}"),
            };
        }
        SdkError::ConstructionFailure(_) => {
            let detail = DisplayErrorContext(&e).to_string();
            if let Some(denied) = no_credentials(&detail) {
                return denied;
            }
            return StoreError::Invalid {
                store: STORE,
                detail: format!("cannot build the request: {detail}"),
            };
        }
        _ => {}
    }
    let status = e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
    // The SDK's HTTP client (hyper) follows no redirect; one answered is
    // refused by name, like every store's.
    if (300..400).contains(&status) {
        let location = e.raw_response().and_then(|r| r.headers().get("location"));
        return crate::store::redirected(STORE, status, location);
    }
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
        _ if status >= 500 => StoreError::Unavailable {
            store: STORE,
            detail: format!("AWS Secrets Manager answered {status} {said}")
                .trim_end()
                .to_owned(),
        },
        // An error the SDK could not read (an IAM refusal in another
        // protocol's shape, a proxy): the status still says who refused.
        "" if status == 401 || status == 403 => StoreError::Denied {
            store: STORE,
            detail: format!("AWS refused the broker (HTTP {status}); {IAM_HINT}"),
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

/// What to check when the chain found no usable credentials: the web
/// identity settings when the environment configures it (the SDK's error
/// names neither the file nor the role), else the chain as a whole.
fn credentials_hint() -> String {
    match std::env::var("AWS_WEB_IDENTITY_TOKEN_FILE") {
        Ok(file) if !file.is_empty() => format!(
            "web identity is configured: check that $AWS_WEB_IDENTITY_TOKEN_FILE (`{file}`) exists and is readable by the broker, that $AWS_ROLE_ARN (`{}`) trusts the token's issuer and that STS is reachable; {IAM_HINT}",
            std::env::var("AWS_ROLE_ARN").unwrap_or_default()
        ),
        _ => IAM_HINT.to_owned(),
    }
}

/// The refusal to report when `detail` says the SDK found no usable
/// credentials, naming what to check.
fn no_credentials(detail: &str) -> Option<StoreError> {
    credentials_problem(detail).then(|| StoreError::Denied {
        store: STORE,
        detail: format!(
            "no usable AWS credentials ({detail}); {}",
            credentials_hint()
        ),
    })
}

fn credentials_problem(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("credential") || d.contains("identity")
}
