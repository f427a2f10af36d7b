//! What devart's integration tests and its benchmark both need to run devart for real.
//!
//! # Layout
//! - [`stack`]: [`Stack`], a fresh database cloned from a migrated template and a bus prefix of its
//!   own on the real Postgres and NATS, removed afterwards.
//! - [`server`]: [`Server`], devart with the roles asked for, running inside this process as
//!   `devart serve` runs them, its gateway on a free port.
//! - [`graphql`]: [`Client`], GraphQL over HTTP, and [`Subscriptions`], `graphql-transport-ws`
//!   over a WebSocket.
//! - [`fake_openai`]: [`FakeEmbeddingsApi`], a local OpenAI-compatible embeddings API that records
//!   its requests and fails when told to, for the remote embeddings provider.
//!
//! Every call returns an [`Error`] rather than panicking: a benchmark reports a failure and still
//! removes what it made; a test turns it into its own panic with `expect`.

pub mod fake_openai;
pub mod graphql;
pub mod server;
pub mod stack;

use std::time::Duration;

pub use fake_openai::{fake_vector, FakeEmbeddingsApi, FakeFailure, SeenRequest};
pub use graphql::{Client, Subscriptions};
pub use server::{token, Server};
pub use stack::{Stack, StackOptions};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A database name or bus prefix that would not survive being put into SQL or a subject.
    #[error("`{0}` is not a usable name: lowercase ASCII letters, digits and `_`, at most 63 bytes")]
    InvalidName(String),
    /// Not in the message: the URL may carry a password.
    #[error("the Postgres URL does not parse as a URL")]
    InvalidUrl,
    #[error("{doing}")]
    Postgres {
        doing: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("{doing}: {message}")]
    Nats { doing: &'static str, message: String },
    #[error("GraphQL over HTTP")]
    Http(#[from] reqwest::Error),
    #[error("the server answered with something other than JSON: {0}")]
    NotJson(String),
    #[error("GraphQL errors: {0}")]
    Graphql(serde_json::Value),
    /// Boxed: the WebSocket's error is many times the size of any other.
    #[error("the WebSocket")]
    WebSocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    /// The other side broke the `graphql-transport-ws` protocol, or closed the connection.
    #[error("graphql-transport-ws: {0}")]
    Protocol(String),
    #[error("{what} within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    /// devart's roles ended (with this error, or by a panic) while they were expected to run.
    #[error("devart stopped: {0}")]
    Stopped(String),
    /// A token was asked for, but the configuration has no JWT secret to sign it with.
    #[error("no JWT secret is configured, so no token can be issued")]
    NoSecret,
    #[error("binding a free port")]
    Bind(#[source] std::io::Error),
}

impl From<tokio_tungstenite::tungstenite::Error> for Error {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        Error::WebSocket(Box::new(e))
    }
}

impl Error {
    fn postgres(doing: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
        move |source| Error::Postgres { doing, source }
    }
}
