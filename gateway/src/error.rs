//! One error type for clients: a message and an `extensions.code`, never internals.

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
    /// Too many mutations from one identity (HTTP 429).
    RateLimited,
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
            CommandError::Store(StoreError::Conflict { .. }) => GqlError(error(Code::Conflict, e.to_string())),
            CommandError::Store(s) => GqlError(internal(s)),
        }
    }
}

impl From<StoreError> for GqlError {
    fn from(e: StoreError) -> Self {
        GqlError(internal(e))
    }
}

impl From<sqlx::Error> for GqlError {
    fn from(e: sqlx::Error) -> Self {
        GqlError(internal(e))
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
