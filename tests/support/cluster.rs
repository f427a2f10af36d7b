//! A Postgres cluster and a NATS server of a test's own (scratch directory, free ports), for tests
//! that stop, crash or restart them without disturbing the tests sharing the usual ones.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use uuid::Uuid;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A directory for the cluster, NATS's storage and every log; removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn create() -> Scratch {
        let scratch = Scratch(std::env::temp_dir().join(format!("devart-chaos-{}", Uuid::new_v4().simple())));
        std::fs::create_dir(&scratch.0).unwrap();
        if running_as_root() {
            // initdb and postgres refuse to run as root: the cluster belongs to `postgres`.
            run(Command::new("chown").arg("postgres:postgres").arg(&scratch.0));
        }
        scratch
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The logs say why; they go with the directory, so show their ends first.
            for name in ["gateway.log", "relay.log", "projections.log", "nats.log", "postgres.log"] {
                let text = std::fs::read_to_string(self.0.join(name)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("--- the end of {name}");
                for line in &lines[lines.len().saturating_sub(20)..] {
                    eprintln!("{line}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Postgres cluster of its own, run by the `postgres` user when the test runs as root; stopped
/// on drop.
pub struct Postgres {
    data: PathBuf,
    pub log: PathBuf,
    pub port: u16,
}

impl Postgres {
    pub fn create(scratch: &Path) -> Postgres {
        let postgres = Postgres { data: scratch.join("pg"), log: scratch.join("postgres.log"), port: free_port() };
        run(as_postgres("initdb").arg("-D").arg(&postgres.data).args([
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]));
        let settings = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n",
            postgres.port,
            scratch.display()
        );
        OpenOptions::new()
            .append(true)
            .open(postgres.data.join("postgresql.conf"))
            .unwrap()
            .write_all(settings.as_bytes())
            .unwrap();
        run(postgres.ctl().args(["start", "--wait", "--log"]).arg(&postgres.log));
        postgres
    }

    pub fn ctl(&self) -> Command {
        let mut command = as_postgres("pg_ctl");
        command.arg("--pgdata").arg(&self.data);
        command
    }

    pub fn crash_and_restart(&self) {
        run(self.ctl().args(["restart", "--mode=immediate", "--wait", "--log"]).arg(&self.log));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.ctl().args(["stop", "--mode=immediate"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// A NATS server with JetStream of its own, restartable on the same port and storage; killed on
/// drop.
pub struct Nats {
    pub port: u16,
    pub store: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Nats {
    pub async fn start(&mut self) {
        let child = Command::new(NATS_SERVER)
            .args(["--jetstream", "--addr", "127.0.0.1", "--port", &self.port.to_string(), "--store_dir"])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(append(&self.log))
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "nats-server did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            kill_9(child);
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command to its end, letting the clients go on meanwhile (it blocks this worker thread
/// only, so it needs the multi-threaded runtime); panics with its output if it fails.
pub fn run(command: &mut Command) {
    let output =
        tokio::task::block_in_place(|| command.output()).unwrap_or_else(|e| panic!("{command:?} does not start: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One of Postgres's programs, run as `postgres` when the test runs as root.
fn as_postgres(program: &str) -> Command {
    let path = Path::new(PG_BIN).join(program);
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `kill -9`, and the exit collected.
pub fn kill_9(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub fn append(path: &Path) -> File {
    OpenOptions::new().create(true).append(true).open(path).unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
