//! What an operator meets when stopping devart: SIGTERM ends `devart serve` within its grace
//! period whatever state Postgres and NATS are in, and a second signal ends it at once; `/readyz`
//! says not ready while either is away, `/healthz` stays a liveness check.
//!
//! A private Postgres cluster and NATS server (`support::cluster`), so that either can be stopped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::cluster::{append, free_port, run, Nats, Postgres, Scratch};

const JWT_SECRET: &str = "operator-secret-operator-secret-operator";
/// Short, so the test is quick; the default is 10 s.
const GRACE: Duration = Duration::from_secs(3);
/// What a loaded machine may add to the grace period before the process is gone.
const SLACK: Duration = Duration::from_secs(2);

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Site {
    scratch: Scratch,
    postgres: Postgres,
    nats: Nats,
    listen: String,
}

impl Site {
    async fn new() -> Site {
        let scratch = Scratch::create();
        let postgres = Postgres::create(&scratch.0);
        let mut nats =
            Nats { port: free_port(), store: scratch.0.join("nats"), log: scratch.0.join("nats.log"), child: None };
        nats.start().await;
        let site = Site { listen: format!("127.0.0.1:{}", free_port()), scratch, postgres, nats };
        run(site.devart().arg("migrate"));
        site
    }

    fn devart(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_devart"));
        command
            .env("DATABASE_URL", format!("postgres://postgres@127.0.0.1:{}/devart", self.postgres.port))
            .env("NATS_URL", format!("nats://127.0.0.1:{}", self.nats.port))
            .env("DEVART_NATS_PREFIX", "operator")
            .env("DEVART_JWT_SECRET", JWT_SECRET)
            .env("DEVART_LISTEN", &self.listen)
            .env("DEVART_SHUTDOWN_GRACE", format!("{}s", GRACE.as_secs()))
            .env("DEVART_LOG", "info,sqlx=warn,async_nats=warn");
        command
    }

    /// `devart serve`, once its gateway answers.
    async fn serve(&self) -> Child {
        let mut serve = self
            .devart()
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(append(&self.scratch.0.join("gateway.log")))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let health = format!("http://{}/healthz", self.listen);
        while !reqwest::get(&health).await.is_ok_and(|r| r.status().is_success()) {
            assert!(serve.try_wait().unwrap().is_none(), "devart serve exited before it answered");
            assert!(Instant::now() < deadline, "the gateway did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        serve
    }

    /// An acknowledged `graphql-transport-ws` connection as an administrator.
    async fn socket(&self) -> Socket {
        let mut request = format!("ws://{}/graphql", self.listen).into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let token = devart_gateway::SigningKey::new(JWT_SECRET.as_bytes().to_vec()).issue(
            "operator",
            devart_gateway::Role::Admin,
            chrono::Duration::hours(1),
        );
        let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
        socket.send(Message::Text(init.to_string().into())).await.unwrap();
        match socket.next().await {
            Some(Ok(Message::Text(text))) => assert!(text.contains("connection_ack"), "{text}"),
            other => panic!("no connection_ack: {other:?}"),
        }
        socket
    }

    /// `/readyz`'s status and body, answered within its own time limit.
    async fn readiness(&self) -> (u16, serde_json::Value) {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let response = http.get(format!("http://{}/readyz", self.listen)).send().await.expect("/readyz answers");
        (response.status().as_u16(), response.json().await.unwrap())
    }

    fn stop_postgres(&self) {
        run(self.postgres.ctl().args(["stop", "--mode=immediate", "--wait"]));
    }

    fn start_postgres(&self) {
        run(self.postgres.ctl().args(["start", "--wait", "--log"]).arg(&self.postgres.log));
    }
}

fn signal(child: &Child, name: &str) {
    run(Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()));
}

/// Sends SIGTERM and waits for the process to end; how long it took, and whether it succeeded.
async fn terminate(mut serve: Child) -> (Duration, bool) {
    let started = Instant::now();
    signal(&serve, "TERM");
    loop {
        if let Some(status) = serve.try_wait().unwrap() {
            return (started.elapsed(), status.success());
        }
        if started.elapsed() > GRACE + Duration::from_secs(30) {
            let _ = serve.kill();
            let _ = serve.wait();
            panic!("devart serve still ran {:?} after SIGTERM", started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_serve_within_its_grace_whatever_postgres_and_nats_are_doing() {
    let mut site = Site::new().await;

    // Everything up: the parts finish at once, and the process says all went well; an open
    // WebSocket is told the server is going away (1001), so its client reconnects elsewhere.
    let serve = site.serve().await;
    let mut socket = site.socket().await;
    let (took, success) = terminate(serve).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the socket is closed when the server stops");
    assert_eq!(closed, Some(1001), "going away");
    eprintln!("stop with everything up: {took:?}");
    assert!(success, "a clean stop exits 0");
    assert!(took < GRACE, "a clean stop needs no grace: {took:?}");

    // NATS away (the case that once kept devart running for 40 minutes).
    let serve = site.serve().await;
    assert_eq!(site.readiness().await, (200, json!({ "postgres": true, "nats": true, "stopping": false })));
    site.nats.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, ready) = site.readiness().await;
    assert_eq!((status, &ready["nats"]), (503, &json!(false)), "{ready}");
    assert_eq!(reqwest::get(format!("http://{}/healthz", site.listen)).await.unwrap().status(), 200, "still alive");
    let (took, _) = terminate(serve).await;
    eprintln!("stop with NATS away: {took:?}");
    assert!(took <= GRACE + SLACK, "with NATS away, SIGTERM took {took:?}");
    site.nats.start().await;

    // Postgres away.
    let serve = site.serve().await;
    site.stop_postgres();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, ready) = site.readiness().await;
    assert_eq!((status, &ready["postgres"]), (503, &json!(false)), "{ready}");
    let (took, _) = terminate(serve).await;
    eprintln!("stop with Postgres away: {took:?}");
    assert!(took <= GRACE + SLACK, "with Postgres away, SIGTERM took {took:?}");
    site.start_postgres();

    // Both away.
    let serve = site.serve().await;
    site.stop_postgres();
    site.nats.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (took, _) = terminate(serve).await;
    eprintln!("stop with both away: {took:?}");
    assert!(took <= GRACE + SLACK, "with both away, SIGTERM took {took:?}");
    site.start_postgres();
    site.nats.start().await;

    // A second signal does not wait for the grace period.
    let mut serve = site.serve().await;
    site.nats.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    signal(&serve, "TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&serve, "TERM");
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < GRACE + Duration::from_secs(30), "devart serve ignored a second SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("stop with a second signal: {:?}, {status}", started.elapsed());
    assert_eq!(status.code(), Some(130), "a second signal exits 130 at once");
}
