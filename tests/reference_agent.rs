//! `devart agent`, the reference agent, run as a separate process against a running gateway:
//! it completes tasks with its command's output, fails attempts with its command's stderr, and a
//! task it held comes back soon after it is killed.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use devart::Role;
use serde_json::{json, Value};

use crate::support::{eventually, Running, TestEnv};

const REGISTER: &str = "mutation($input: RegisterAgentInput!) { registerAgent(input: $input) { apiKey } }";
const CREATE: &str = "mutation($input: CreateTaskInput!) { createTask(input: $input) { id } }";
const CLAIM: &str = "mutation { claimTask(leaseSeconds: 30) { id attempt } }";
const TASK: &str =
    "query($id: ID!) { task(id: $id) { status attempt failures result errors { attempt error } lease { agentId } } }";

async fn register(running: &Running, name: &str) -> String {
    let registered = running.graphql(REGISTER, json!({ "input": { "name": name, "capabilities": ["shell"] } })).await;
    registered["data"]["registerAgent"]["apiKey"].as_str().unwrap_or_else(|| panic!("{registered}")).to_owned()
}

async fn create_task(running: &Running, input: Value) -> String {
    let created = running.graphql(CREATE, json!({ "input": input })).await;
    created["data"]["createTask"]["id"].as_str().unwrap_or_else(|| panic!("{created}")).to_owned()
}

/// The task as the task board holds it, once `done` holds for it.
async fn task_when(running: &Running, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(Duration::from_secs(10), || async {
        let answer = running.graphql(TASK, json!({ "id": id })).await;
        let task = answer["data"]["task"].clone();
        done(&task).then_some(task)
    })
    .await
}

/// `devart agent` against `running`, with the key in the environment, `args` and then the command.
fn agent(running: &Running, key: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_devart"));
    command
        .arg("agent")
        .args(["--url", &running.url("/graphql")])
        .args(args)
        .env("DEVART_AGENT_KEY", key)
        .env("DEVART_LOG", "info,devart=debug")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn run_once(command: &mut tokio::process::Command) -> Output {
    let output = tokio::time::timeout(Duration::from_secs(30), command.output()).await;
    output.expect("the agent finishes its task in time").expect("the agent runs")
}

#[tokio::test]
async fn the_reference_agent_runs_a_task_and_completes_it_with_the_commands_output() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let key = register(&running, "shell-1").await;

    // Without a key, a usage error; with nothing to do, `--once` says so with exit status 3.
    let no_key = run_once(agent(&running, &key, &["--once", "--", "true"]).env_remove("DEVART_AGENT_KEY")).await;
    assert_eq!(no_key.status.code(), Some(2), "{}", String::from_utf8_lossy(&no_key.stderr));
    let idle = run_once(&mut agent(&running, &key, &["--once", "--", "true"])).await;
    assert_eq!(idle.status.code(), Some(3), "{}", String::from_utf8_lossy(&idle.stderr));

    let input = json!({ "repo": "devart", "files": ["src/agent.rs"] });
    let id = create_task(&running, json!({ "title": "say ok", "input": input })).await;
    let script = r#"printf '{"ok": true, "task": "%s", "attempt": %s, "input": %s, "stdin": %s}\n' \
        "$DEVART_TASK_ID" "$DEVART_TASK_ATTEMPT" "$DEVART_TASK_INPUT" "$(cat)""#;
    let output = run_once(
        // The key on the command line this time.
        agent(&running, &key, &["--once", "--capabilities", "shell", "--key", &key, "--", "sh", "-c", script])
            .env_remove("DEVART_AGENT_KEY"),
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let secret = key.splitn(3, '_').nth(2).unwrap();
    assert!(!stderr.contains(secret), "the key is never logged: {stderr}");

    let task = task_when(&running, &id, |t| t["status"] == "COMPLETED").await;
    let result = &task["result"];
    assert_eq!(result["ok"], true, "{task}");
    assert_eq!(result["task"], id.as_str());
    assert_eq!(result["attempt"], 1);
    assert_eq!(result["input"], input);
    assert_eq!(result["stdin"]["id"], id.as_str(), "the task on stdin");
    assert_eq!(result["stdin"]["title"], "say ok");
    assert_eq!(result["stdin"]["input"], input);
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_failing_command_fails_the_attempt_with_its_stderr() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let key = register(&running, "shell-1").await;
    let id = create_task(&running, json!({ "title": "break", "maxAttempts": 2 })).await;

    let output = run_once(&mut agent(&running, &key, &["--once", "--", "sh", "-c", "echo broken >&2; exit 1"])).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let task = task_when(&running, &id, |t| t["failures"] == 1).await;
    assert_eq!(task["status"], "PENDING", "retried: one attempt left");
    assert_eq!(task["attempt"], 1);
    assert_eq!(task["errors"][0]["attempt"], 1);
    let error = task["errors"][0]["error"].as_str().unwrap();
    assert!(error.contains("broken"), "{error}");
    assert!(error.contains("exit status: 1"), "{error}");

    // Exit status 2 is a usage error: the attempt is not retried, and the task fails for good.
    let retried = eventually(Duration::from_secs(10), || async {
        let output = run_once(&mut agent(&running, &key, &["--once", "--", "sh", "-c", "exit 2"])).await;
        (output.status.code() == Some(0)).then_some(())
    });
    retried.await;
    let task = task_when(&running, &id, |t| t["status"] == "FAILED").await;
    assert_eq!(task["failures"], 2);
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_killed_agent_s_task_is_claimable_again_within_lease_plus_two_seconds() {
    const LEASE: Duration = Duration::from_secs(2);
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let key = register(&running, "shell-1").await;
    let other = register(&running, "shell-2").await;
    let id = create_task(&running, json!({ "title": "sleep" })).await;

    // Its own process group, so that the agent and its command die together.
    let mut worker = agent(&running, &key, &["--lease-secs", "2", "--poll-ms", "100", "--", "sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("the agent starts");
    let pid = worker.id().expect("the agent runs");
    task_when(&running, &id, |t| t["status"] == "IN_PROGRESS").await;

    // Heartbeats keep the task the agent's beyond the first lease.
    let held_until = Instant::now() + LEASE + Duration::from_secs(1);
    while Instant::now() < held_until {
        let claimed = running.graphql_as(&other, CLAIM, json!({})).await;
        assert_eq!(claimed["data"]["claimTask"], Value::Null, "{claimed}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let killed_at = Instant::now();
    let kill = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status().unwrap();
    assert!(kill.success());
    worker.wait().await.unwrap();

    let claimed = loop {
        let answer = running.graphql_as(&other, CLAIM, json!({})).await;
        let claimed = &answer["data"]["claimTask"];
        if !claimed.is_null() {
            break claimed.clone();
        }
        assert!(killed_at.elapsed() < Duration::from_secs(30), "the task never came back: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reclaimed_after = killed_at.elapsed();
    eprintln!("reclaimed {reclaimed_after:?} after the kill (lease {LEASE:?})");
    assert_eq!(claimed["id"], id.as_str());
    assert_eq!(claimed["attempt"], 2);
    assert!(reclaimed_after <= LEASE + Duration::from_secs(2), "reclaimed only after {reclaimed_after:?}");
    running.stop().await;
    env.cleanup().await;
}

/// The pid the command wrote to `file`, once it did.
async fn command_pid(file: &std::path::Path) -> u32 {
    eventually(Duration::from_secs(10), || async { std::fs::read_to_string(file).ok()?.trim().parse().ok() }).await
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn a_cancelled_task_s_command_is_killed_at_the_next_heartbeat() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let key = register(&running, "shell-1").await;
    let id = create_task(&running, json!({ "title": "sleep" })).await;
    let pid_file = std::env::temp_dir().join(format!("devart-agent-{id}.pid"));
    let script = format!("echo $$ > {}; exec sleep 60", pid_file.display());

    let worker = agent(&running, &key, &["--once", "--lease-secs", "3", "--", "sh", "-c", &script]).output();
    let worker = tokio::spawn(worker);
    let pid = command_pid(&pid_file).await;
    let cancelled = running.graphql("mutation($id: ID!) { cancelTask(id: $id) { status } }", json!({ "id": id })).await;
    assert_eq!(cancelled["data"]["cancelTask"]["status"], "CANCELLED", "{cancelled}");

    // A heartbeat a second later tells the agent; it kills the command and, with `--once`, is done.
    let output = tokio::time::timeout(Duration::from_secs(5), worker).await.expect("the agent stops in time");
    let output = output.unwrap().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!alive(pid), "the command was killed");
    let task = task_when(&running, &id, |t| t["status"] == "CANCELLED").await;
    assert_eq!(task["failures"], 0);
    std::fs::remove_file(&pid_file).ok();
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_stopped_agent_kills_its_command_and_gives_the_task_back() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let key = register(&running, "shell-1").await;
    let id = create_task(&running, json!({ "title": "sleep" })).await;
    let pid_file = std::env::temp_dir().join(format!("devart-agent-{id}.pid"));
    let script = format!("echo $$ > {}; exec sleep 60", pid_file.display());

    let mut worker =
        agent(&running, &key, &["--", "sh", "-c", &script]).stderr(Stdio::null()).spawn().expect("the agent starts");
    let pid = command_pid(&pid_file).await;
    let term = std::process::Command::new("kill")
        .args(["-TERM", &worker.id().expect("the agent runs").to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::time::timeout(Duration::from_secs(10), worker.wait()).await.expect("the agent stops in time");
    assert!(status.unwrap().success());
    assert!(!alive(pid), "the command was killed");

    // The attempt failed as retryable: the task is queued again without waiting for the lease.
    let task = task_when(&running, &id, |t| t["failures"] == 1).await;
    assert_eq!(task["status"], "PENDING");
    let error = task["errors"][0]["error"].as_str().unwrap();
    assert!(error.contains("stopped"), "{error}");
    std::fs::remove_file(&pid_file).ok();
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_agents_key_comes_from_a_file_and_a_key_on_the_command_line_is_warned_about() {
    let env = TestEnv::new().await;
    let running = env.start(&[Role::Gateway, Role::Relay, Role::Projections]).await;
    let key = register(&running, "shell-files").await;
    let dir = std::env::temp_dir().join(format!("devart-key-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("key");
    std::fs::write(&file, format!("{key}\n")).unwrap();
    let file = file.to_str().unwrap();
    let done = |task: &Value| task["status"] == "COMPLETED";
    let secret = key.splitn(3, '_').nth(2).unwrap().to_owned();

    // `DEVART_AGENT_KEY_FILE`, as a container platform mounts a secret.
    let id = create_task(&running, json!({ "title": "from the variable's file" })).await;
    let output = run_once(
        agent(&running, &key, &["--once", "--", "true"])
            .env_remove("DEVART_AGENT_KEY")
            .env("DEVART_AGENT_KEY_FILE", file),
    )
    .await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    task_when(&running, &id, done).await;

    // `--key-file`: nothing secret on the command line, and no warning.
    let id = create_task(&running, json!({ "title": "from --key-file" })).await;
    let output =
        run_once(agent(&running, &key, &["--once", "--key-file", file, "--", "true"]).env_remove("DEVART_AGENT_KEY"))
            .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("on the command line"), "{stderr}");
    task_when(&running, &id, done).await;

    // Both the variable and its file: a usage error naming them, not their values.
    let both = run_once(agent(&running, &key, &["--once", "--", "true"]).env("DEVART_AGENT_KEY_FILE", file)).await;
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert_eq!(both.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("DEVART_AGENT_KEY_FILE") && !stderr.contains(&secret), "{stderr}");

    // `--key` still works, warned about once, the key itself never printed.
    let output =
        run_once(agent(&running, &key, &["--once", "--key", &key, "--", "true"]).env_remove("DEVART_AGENT_KEY")).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches("puts a secret on the command line").count(), 1, "{stderr}");
    assert!(!stderr.contains(&secret), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}
