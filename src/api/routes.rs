//! Routing: the request path → one of the contract's routes, with secret
//! paths and scopes parsed strictly before anything else happens.

use http::Method;

use super::error::ApiError;
use crate::secret::{ScopePath, SecretPath};

/// A recognized route.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// `GET /v1/whoami`.
    Whoami,
    /// `/v1/secrets/{path}`.
    Secret(SecretPath),
    /// `/v1/secrets/{scope}/` or `/v1/secrets/`.
    List(ScopePath),
    /// `POST /v1/uploads/{path}`: mint a signed upload URL for task output.
    Upload(SecretPath),
}

const SECRETS: &str = "/v1/secrets/";
const UPLOADS: &str = "/v1/uploads/";

/// The output path of a `/v1/uploads/…` request path: exactly the text a
/// [`Route::Upload`] was parsed from. Any other path is returned whole.
pub fn upload_part(path: &str) -> &str {
    path.strip_prefix(UPLOADS).unwrap_or(path)
}

/// The part of a `/v1/secrets/…` request path after the prefix: exactly the
/// text a [`Route::Secret`] or [`Route::List`] was parsed from (parsing
/// never rewrites a path). Any other path is returned whole.
pub fn secret_part(path: &str) -> &str {
    path.strip_prefix(SECRETS).unwrap_or(path)
}

impl Route {
    /// Parses a request path (without the query). Unknown routes are
    /// `404 not_found`; a bad secret path is `400 invalid_path`.
    pub fn parse(path: &str) -> Result<Self, ApiError> {
        match path {
            "/healthz" => return Ok(Self::Healthz),
            "/readyz" => return Ok(Self::Readyz),
            "/v1/whoami" => return Ok(Self::Whoami),
            _ => {}
        }
        if let Some(rest) = path.strip_prefix(UPLOADS) {
            // Checked exactly as a secret path: no percent-decoding, no
            // empty, `.` or `..` segment, no trailing `/`.
            if rest.as_bytes().contains(&b'%') {
                return Err(ApiError::InvalidPath(
                    "percent-encoded bytes are not allowed in a path".into(),
                ));
            }
            return Ok(Self::Upload(SecretPath::parse(rest)?));
        }
        let Some(rest) = path.strip_prefix(SECRETS) else {
            return Err(ApiError::NotFound(format!(
                "no route `{}`; see the API in the README",
                super::printable(path, 128)
            )));
        };
        // SECURITY: no percent-decoding at all: an encoded byte is refused
        // rather than decoded, so `%2F` or `%2e%2e` can never change meaning.
        if rest.as_bytes().contains(&b'%') {
            return Err(ApiError::InvalidPath(
                "percent-encoded bytes are not allowed in a path".into(),
            ));
        }
        if rest.is_empty() {
            return Ok(Self::List(ScopePath::root()));
        }
        match rest.strip_suffix('/') {
            Some(scope) => Ok(Self::List(ScopePath::parse(scope)?)),
            None => Ok(Self::Secret(SecretPath::parse(rest)?)),
        }
    }

    /// Checks that `method` applies to this route. A `PUT` or `DELETE` on
    /// a path ending in `/` names no secret: the contract makes a trailing
    /// `/` on a secret path an invalid path (`400 invalid_path`), not a
    /// `405`; any other method a route does not answer is `405`.
    pub fn check_method(&self, method: &Method) -> Result<(), ApiError> {
        match (self, method) {
            (Self::Upload(_), &Method::POST) => Ok(()),
            (Self::Upload(_), _) => Err(ApiError::MethodNotAllowed {
                method: super::printable(method.as_str(), 16),
                allow: self.allow(),
            }),
            (Self::Secret(_), &Method::GET | &Method::PUT | &Method::DELETE) | (_, &Method::GET) => {
                Ok(())
            }
            (Self::List(_), &Method::PUT | &Method::DELETE) => Err(ApiError::InvalidPath(
                "a secret path does not end in `/` (a path ending in `/` is a scope, which only `GET` lists)".into(),
            )),
            _ => Err(ApiError::MethodNotAllowed {
                method: super::printable(method.as_str(), 16),
                allow: self.allow(),
            }),
        }
    }

    /// Methods this route answers, for `405` and `Allow`.
    pub fn allow(&self) -> &'static str {
        match self {
            Self::Secret(_) => "GET, PUT, DELETE",
            Self::Upload(_) => "POST",
            _ => "GET",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/healthz").unwrap(), Route::Healthz);
        assert_eq!(
            Route::parse("/v1/secrets/").unwrap(),
            Route::List(ScopePath::root())
        );
        assert_eq!(
            Route::parse("/v1/secrets/acme/t-42/").unwrap(),
            Route::List(ScopePath::parse("acme/t-42").unwrap())
        );
        assert_eq!(
            Route::parse("/v1/secrets/acme/db").unwrap(),
            Route::Secret(SecretPath::parse("acme/db").unwrap())
        );
        assert_eq!(Route::parse("/nope").unwrap_err().code(), "not_found");
        for bad in [
            "/v1/secrets//a/b",
            "/v1/secrets/a/../b",
            "/v1/secrets/a/%2e%2e/b",
            "/v1/secrets/a%2Fb/c",
            "/v1/secrets/a",
            "/v1/secrets/a//",
            "/v1/secrets/a/b//",
            "/v1/secrets/./a",
        ] {
            assert_eq!(
                Route::parse(bad).unwrap_err().code(),
                "invalid_path",
                "{bad}"
            );
        }
    }

    #[test]
    fn upload_paths_are_checked_as_secret_paths_and_take_post_only() {
        let route = Route::parse("/v1/uploads/acme/t-42/out.tar").unwrap();
        assert_eq!(
            route,
            Route::Upload(SecretPath::parse("acme/t-42/out.tar").unwrap())
        );
        assert_eq!(
            upload_part("/v1/uploads/acme/t-42/out.tar"),
            "acme/t-42/out.tar"
        );
        assert!(route.check_method(&Method::POST).is_ok());
        for m in [Method::GET, Method::PUT, Method::DELETE] {
            let e = route.check_method(&m).unwrap_err();
            assert_eq!(e.code(), "method_not_allowed", "{m}");
        }
        assert_eq!(route.allow(), "POST");
        for bad in [
            "/v1/uploads/",
            "/v1/uploads/a",
            "/v1/uploads/a/",
            "/v1/uploads/a//b",
            "/v1/uploads/a/../b",
            "/v1/uploads/a/%2e%2e/b",
            "/v1/uploads/a%2Fb/c",
            "/v1/uploads/./a/b",
        ] {
            assert_eq!(
                Route::parse(bad).unwrap_err().code(),
                "invalid_path",
                "{bad}"
            );
        }
        assert_eq!(
            Route::parse("/v1/upload/a/b").unwrap_err().code(),
            "not_found"
        );
    }

    #[test]
    fn a_write_or_delete_on_a_scope_is_an_invalid_path() {
        for path in ["/v1/secrets/a/", "/v1/secrets/a/b/", "/v1/secrets/"] {
            let route = Route::parse(path).unwrap();
            for m in [Method::PUT, Method::DELETE] {
                assert_eq!(
                    route.check_method(&m).unwrap_err().code(),
                    "invalid_path",
                    "{m} {path}"
                );
            }
            assert!(route.check_method(&Method::GET).is_ok());
            assert_eq!(
                route.check_method(&Method::POST).unwrap_err().code(),
                "method_not_allowed"
            );
        }
        let secret = Route::parse("/v1/secrets/a/b").unwrap();
        for m in [Method::GET, Method::PUT, Method::DELETE] {
            assert!(secret.check_method(&m).is_ok());
        }
        assert_eq!(
            secret.check_method(&Method::PATCH).unwrap_err().code(),
            "method_not_allowed"
        );
        assert_eq!(
            Route::Whoami.check_method(&Method::PUT).unwrap_err().code(),
            "method_not_allowed"
        );
    }

    proptest::proptest! {
        /// The API audits a secret read's path as `secret_part` of the sent
        /// path: it must be exactly the parsed secret path.
        #[test]
        fn secret_part_is_the_parsed_path(
            tail in "[a-z0-9][a-z0-9._-]{0,6}(/[a-z0-9][a-z0-9._-]{0,6}){0,4}/?",
            prefix in proptest::sample::select(vec!["/v1/secrets/", "/v1/secret/", "/", ""]),
        ) {
            let sent = format!("{prefix}{tail}");
            match Route::parse(&sent) {
                Ok(Route::Secret(p)) => proptest::prop_assert_eq!(secret_part(&sent), p.as_str()),
                Ok(Route::List(s)) if !s.is_root() => {
                    proptest::prop_assert_eq!(secret_part(&sent), format!("{}/", s.as_str()));
                }
                _ => {}
            }
        }
    }
}
