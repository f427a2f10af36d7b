//! devart running inside this process, exactly as `devart serve` assembles it ([`devart::run`]),
//! with the gateway on a free port of the loopback interface.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use devart::{Config, Role};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::graphql::{Client, REQUEST_TIMEOUT};
use crate::Error;

/// How long a gateway may take to answer its health check after starting.
const HEALTHY_WITHIN: Duration = Duration::from_secs(10);

/// devart with the roles asked for, until [`Server::stop`] or [`Server::abort`]; dropping it
/// stops it too, without waiting.
pub struct Server {
    addr: SocketAddr,
    /// An administrator's token, when the configuration has a JWT secret to sign one with.
    token: Option<String>,
    client: Client,
    shutdown: CancellationToken,
    running: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    /// Starts `roles` on `config`'s database and bus; once the gateway (if it is one of them)
    /// answers its health check.
    pub async fn start(config: &Config, roles: &[Role]) -> Result<Server, Error> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(Error::Bind)?;
        let addr = listener.local_addr().map_err(Error::Bind)?;
        let shutdown = CancellationToken::new();
        let running = tokio::spawn({
            let (config, roles, shutdown) = (config.clone(), roles.to_vec(), shutdown.clone());
            async move { devart::run(&config, &roles, Some(listener), shutdown, devart::SHUTDOWN_GRACE_DEFAULT).await }
        });
        // An administrator: registering agents needs one.
        let token = match token(config, devart_gateway::Role::Admin) {
            Ok(token) => Some(token),
            Err(Error::NoSecret) => None,
            Err(other) => return Err(other),
        };
        let client = Client::new(&format!("http://{addr}/graphql"), REQUEST_TIMEOUT)?;
        let client = match &token {
            Some(token) => client.with_token(token),
            None => client,
        };
        let mut server = Server { addr, token, client, shutdown, running: Some(running) };
        if roles.contains(&Role::Gateway) {
            server.wait_healthy().await?;
        }
        Ok(server)
    }

    async fn wait_healthy(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        let health = self.url("/healthz");
        while Instant::now() < deadline {
            if self.running.as_ref().is_some_and(JoinHandle::is_finished) {
                return Err(self.ended().await);
            }
            if self.client.http().get(&health).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(Error::Timeout { what: "the gateway did not answer its health check", after: HEALTHY_WITHIN })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `path` on the gateway, as an `http://` URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The administrator's token the [`Server::client`] calls with, if one could be issued.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// GraphQL over HTTP to the gateway, as the administrator (or anonymously, without a secret).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A `graphql-transport-ws` connection to the gateway, initialized with `token`.
    pub async fn subscriptions(&self, token: &str) -> Result<crate::Subscriptions, Error> {
        crate::Subscriptions::connect(self.addr, token).await
    }

    /// Stops every role gracefully (requests in flight are finished) and waits for them.
    pub async fn stop(mut self) -> Result<(), Error> {
        self.shutdown.cancel();
        match self.running.take() {
            Some(running) => match running.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(Error::Stopped(format!("{error:#}"))),
                Err(joined) => Err(Error::Stopped(joined.to_string())),
            },
            None => Ok(()),
        }
    }

    /// Stops devart as a crash would: its tasks are dropped wherever they are, nothing is
    /// finished. An error if it had already ended by itself.
    pub async fn abort(mut self) -> Result<(), Error> {
        let Some(running) = self.running.take() else { return Ok(()) };
        running.abort();
        match running.await {
            Err(joined) if joined.is_cancelled() => Ok(()),
            Err(joined) => Err(Error::Stopped(joined.to_string())),
            Ok(Ok(())) => Err(Error::Stopped("it had ended before it was aborted".into())),
            Ok(Err(error)) => Err(Error::Stopped(format!("{error:#}"))),
        }
    }

    /// Why the roles ended, once they have.
    async fn ended(&mut self) -> Error {
        match self.running.take() {
            Some(running) => match running.await {
                Ok(Ok(())) => Error::Stopped("it ended while starting".into()),
                Ok(Err(error)) => Error::Stopped(format!("{error:#}")),
                Err(joined) => Error::Stopped(joined.to_string()),
            },
            None => Error::Stopped("it is not running".into()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A token for `role` signed with `config`'s JWT secret, valid for an hour; the subject is the
/// role's name.
pub fn token(config: &Config, role: devart_gateway::Role) -> Result<String, Error> {
    let secret = config.jwt_secret.as_ref().ok_or(Error::NoSecret)?;
    let key = devart_gateway::SigningKey::new(secret.0.clone().into_bytes());
    Ok(key.issue(&format!("{role:?}").to_lowercase(), role, chrono::Duration::hours(1)))
}
