//! One error type for clients: a message and an `extensions.code`, never internals.
//!
//! Refusals (`UNAUTHENTICATED`, `FORBIDDEN`, `BAD_USER_INPUT`, `CONFLICT`, `NOT_FOUND`,
//! `RATE_LIMITED`) say what the caller must change; `UNAVAILABLE` says that devart could not
//! decide now (Postgres unreachable, the hashing pool failing) and that the same request may
//! succeed later; `INTERNAL` is a defect. An infrastructure failure is never reported as a refusal.

use async_graphql::ErrorExtensions;
use devart_commands::{CommandError, StoreError};
use devart_domain::DomainError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BadUserInput,
    Unauthenticated,
    Forbidden,
    Conflict,
    NotFound,
    /// Too many requests from one identity or address (HTTP 429).
    RateLimited,
    /// A dependency failed; retry later (HTTP 503 with Retry-After).
    Unavailable,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadUserInput => "BAD_USER_INPUT",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::Forbidden => "FORBIDDEN",
            Code::Conflict => "CONFLICT",
            Code::NotFound => "NOT_FOUND",
            Code::RateLimited => "RATE_LIMITED",
            Code::Unavailable => "UNAVAILABLE",
            Code::Internal => "INTERNAL",
        }
    }
}

pub fn error(code: Code, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code.as_str()))
}

pub fn bad_input(field: &str, message: impl std::fmt::Display) -> async_graphql::Error {
    async_graphql::Error::new(format!("{field}: {message}")).extend_with(|_, e| {
        e.set("code", Code::BadUserInput.as_str());
        e.set("field", field);
    })
}

/// Logs an infrastructure failure inside the request's span and hides it from the client.
pub fn internal(cause: impl std::fmt::Display) -> async_graphql::Error {
    tracing::error!(error = %cause, "request failed");
    error(Code::Internal, "internal error")
}

/// How long a client is asked to wait after an outage, in seconds.
pub const UNAVAILABLE_RETRY_SECS: u64 = 2;

/// Logs an outage of a dependency and tells the client to retry.
pub fn unavailable(cause: impl std::fmt::Display) -> async_graphql::Error {
    tracing::error!(error = %cause, "request failed: a dependency is unavailable");
    unavailable_error()
}

/// The client's side of an outage, whose cause was logged where it was met.
pub fn unavailable_error() -> async_graphql::Error {
    async_graphql::Error::new("the service is unavailable; retry later").extend_with(|_, e| {
        e.set("code", Code::Unavailable.as_str());
        e.set("retryAfterSeconds", UNAVAILABLE_RETRY_SECS);
    })
}

/// Held back by a rate limit for `wait`.
pub fn rate_limited(what: &str, wait: std::time::Duration) -> async_graphql::Error {
    let seconds = retry_after_secs(wait);
    async_graphql::Error::new(format!("{what}; retry in {seconds} s")).extend_with(|_, e| {
        e.set("code", Code::RateLimited.as_str());
        e.set("retryAfterSeconds", seconds);
    })
}

/// A wait as whole seconds for `Retry-After`: rounded up, at least 1.
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Gives every error of a response a code: errors of the request itself (an unparsable or invalid
/// document, bad variables) are `BAD_USER_INPUT`, as are values a field's arguments cannot be
/// parsed into; any other error without one is `INTERNAL`. Over HTTP and WebSocket alike.
pub fn fill_codes(errors: &mut [async_graphql::ServerError], request_error: bool) {
    for error in errors {
        let has_code = error.extensions.as_ref().is_some_and(|e| e.get("code").is_some());
        if has_code {
            continue;
        }
        let code = if request_error || error.message.starts_with("Failed to parse") {
            Code::BadUserInput
        } else {
            tracing::error!(message = %error.message, "an error without a code");
            Code::Internal
        };
        error.extensions.get_or_insert_with(Default::default).set("code", code.as_str());
    }
}

impl From<DomainError> for GqlError {
    fn from(e: DomainError) -> Self {
        GqlError(match &e {
            DomainError::Invalid { field, message } => bad_input(field, message),
            DomainError::NotFound(_) => error(Code::NotFound, e.to_string()),
            DomainError::Conflict(_) => error(Code::Conflict, e.to_string()),
            DomainError::Forbidden(_) => error(Code::Forbidden, e.to_string()),
        })
    }
}

impl From<CommandError> for GqlError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Domain(d) => d.into(),
            CommandError::VersionMismatch { .. } | CommandError::CommandIdReused(_) => {
                GqlError(error(Code::Conflict, e.to_string()))
            }
            CommandError::Store(s) => s.into(),
        }
    }
}

impl From<StoreError> for GqlError {
    fn from(e: StoreError) -> Self {
        GqlError(match &e {
            StoreError::Conflict { .. } | StoreError::DuplicateCommand(_) => error(Code::Conflict, e.to_string()),
            _ if e.is_unavailable() => unavailable(e),
            _ => internal(e),
        })
    }
}

impl From<sqlx::Error> for GqlError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(e).into()
    }
}

/// A client error built from any layer's error; use as `.map_err(gql)?`, never a bare `?`, so no
/// error reaches a client without its code.
pub struct GqlError(pub async_graphql::Error);

pub fn gql(e: impl Into<GqlError>) -> async_graphql::Error {
    e.into().0
}

impl From<GqlError> for async_graphql::Error {
    fn from(e: GqlError) -> Self {
        e.0
    }
}
