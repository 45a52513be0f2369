//! The command line (issue 11): the `rbee-hive` client subcommands against a real hive,
//! their output, their exit codes, and what a shell user relies on.

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use rbee_hive_e2e::os::pid_alive;
use rbee_hive_e2e::wait::wait_until;
use rbee_hive_e2e::{TestHive, demo_worker_type, slow_start_type};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(30);

fn run(mut command: Command) -> Output {
    command.output().expect("run rbee-hive")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn cli(hive: &TestHive, args: &[&str]) -> Output {
    let mut command = hive.cli();
    command.args(args);
    run(command)
}

/// `rbee-hive spawn m --worker slow`, running, and its stderr line by line as it comes.
fn spawn_slow(hive: &TestHive) -> (Child, Lines<BufReader<ChildStderr>>) {
    let mut child = hive
        .cli()
        .args(["spawn", "m", "--worker", "slow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    (child, lines)
}

#[tokio::test]
async fn spawn_ps_get_stop_and_prune_drive_real_workers() {
    let hive = TestHive::builder()
        .config(&demo_worker_type(
            "crashy",
            &[
                "--start-delay-ms",
                "60000",
                "--exit-after-ms",
                "100",
                "--exit-code",
                "3",
            ],
            10.0,
        ))
        .start()
        .await;
    // The built-in demo type needs no second build: the hive runs itself as the worker.
    let spawned = cli(&hive, &["spawn", "test-model", "-q"]);
    assert_eq!(spawned.status.code(), Some(0), "{}", stderr(&spawned));
    assert_eq!(stdout(&spawned), "worker-1\n", "only the id with --quiet");
    assert_eq!(stderr(&spawned), "", "nothing else with --quiet");
    let second = cli(&hive, &["spawn", "test-model"]);
    assert_eq!(stdout(&second), "worker-2\n");
    assert!(
        stderr(&second).contains("✅ Worker ready: worker-2"),
        "{}",
        stderr(&second)
    );
    let command = cli(&hive, &["get", "worker-1", "--field", "command"]);
    assert!(
        stdout(&command).contains("\"demo-worker\""),
        "{}",
        stdout(&command)
    );

    let ps = stdout(&cli(&hive, &["ps"]));
    let lines: Vec<&str> = ps.lines().collect();
    assert!(lines[0].starts_with("ID "), "{ps}");
    assert!(lines[0].contains("UPTIME"), "{ps}");
    assert!(
        lines[1].starts_with("worker-1 ") && lines[1].contains(" ready "),
        "{ps}"
    );
    assert!(
        !ps.contains('\x1b'),
        "no colours when not on a terminal: {ps:?}"
    );

    let record = hive.worker("worker-1").await.unwrap();
    let port = stdout(&cli(&hive, &["get", "worker-1", "--field", "port"]));
    assert_eq!(port.trim(), record["port"].to_string());
    let get = stdout(&cli(&hive, &["get", "worker-1"]));
    assert!(
        get.lines()
            .any(|l| l.starts_with("status:") && l.ends_with(" ready")),
        "{get}"
    );
    assert!(!get.contains('{'), "a readable record, no raw JSON: {get}");

    // A worker that crashes: the spawn fails with exit code 1, its reason last on stderr,
    // and the worker's output once.
    let failed = cli(&hive, &["spawn", "m", "--worker", "crashy"]);
    assert_eq!(failed.status.code(), Some(1));
    let err = stderr(&failed);
    let reason = &err[err.find("error: ").expect("a reason")..];
    assert!(
        reason.starts_with(
            "error: worker-3 exited before it was ready (exit code 3); last output:\n"
        ),
        "the reason comes last: {err}"
    );
    assert_eq!(
        err.matches("exiting with code 3").count(),
        1,
        "the worker's last output is printed once: {err}"
    );

    let pid = record["pid"].as_u64().unwrap() as u32;
    let stopped = cli(&hive, &["stop", "worker-1", "worker-2", "--grace", "2s"]);
    assert_eq!(stopped.status.code(), Some(0), "{}", stderr(&stopped));
    assert_eq!(stdout(&stopped), "worker-1\nworker-2\n");
    assert!(stderr(&stopped).contains("[worker-1] ✅ Worker deleted: worker-1"));
    assert!(!pid_alive(pid));

    let pruned = cli(&hive, &["prune"]);
    assert_eq!(pruned.status.code(), Some(0), "{}", stderr(&pruned));
    assert_eq!(stdout(&pruned), "worker-3\n");
    assert!(hive.workers().await.is_empty());
    let again = cli(&hive, &["prune"]);
    assert_eq!(again.status.code(), Some(0));
    assert!(stderr(&again).contains("nothing to prune"));
}

#[tokio::test]
async fn exit_codes_say_who_said_no() {
    let hive = TestHive::start().await;
    // 1: the job failed; its reason last, on stderr.
    let missing = cli(&hive, &["get", "worker-99"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        stderr(&missing).lines().last(),
        Some("error: worker 'worker-99' not found")
    );
    // 2: the hive refused the request; its error text and code.
    let refused = cli(
        &hive,
        &[
            "submit",
            r#"{"operation":"frobnicate","hive_id":"localhost"}"#,
        ],
    );
    assert_eq!(refused.status.code(), Some(2));
    let err = stderr(&refused);
    assert!(
        err.contains("(400 unknown_operation)")
            && err.contains("supported operations: worker_spawn"),
        "{err}"
    );
    let bad_json = cli(&hive, &["submit", "{not json"]);
    assert_eq!(bad_json.status.code(), Some(2));
    let finished = cli(
        &hive,
        &[
            "submit",
            r#"{"operation":"worker_list","hive_id":"localhost"}"#,
        ],
    );
    assert_eq!(finished.status.code(), Some(0));
    let job = stderr(&finished)
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("job "))
        .unwrap()
        .to_owned();
    let cancel = cli(&hive, &["cancel", &job]);
    assert_eq!(
        cancel.status.code(),
        Some(1),
        "a finished job cannot be cancelled: the hive answered, it could not be done"
    );
    assert!(stderr(&cancel).contains("409"), "{}", stderr(&cancel));
    // 3: no hive there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut nobody = hive.cli();
    nobody.args(["--hive", &format!("http://127.0.0.1:{port}"), "ps"]);
    let nobody = run(nobody);
    assert_eq!(nobody.status.code(), Some(3));
    assert_eq!(
        stderr(&nobody).trim(),
        format!(
            "error: no rbee-hive at http://127.0.0.1:{port} (connection refused); start one with `rbee-hive`"
        )
    );
}

#[tokio::test]
async fn narration_is_printed_as_it_arrives() {
    let hive = TestHive::with_config(&[&slow_start_type("slow", 1500, 30.0)]).await;
    let (mut child, mut lines) = spawn_slow(&hive);
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let started = line.starts_with("Started worker-1");
        seen.push(line);
        if started {
            break;
        }
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the process line came while the spawn was still waiting for the worker: {seen:?}"
    );
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let order: Vec<&String> = seen.iter().chain(&rest).collect();
    let position = |needle: &str| order.iter().position(|l| l.contains(needle)).unwrap();
    assert!(position("🚀 Spawning") < position("Started worker-1"));
    assert!(position("Started worker-1") < position("✅ Worker ready"));
    assert!(
        order
            .iter()
            .any(|l| l.starts_with("⏳ Waiting for worker-1")),
        "progress lines too: {order:?}"
    );
}

#[tokio::test]
async fn json_output_is_the_stream_events_or_the_result() {
    let hive = TestHive::start().await;
    let spawned = cli(&hive, &["spawn", "m", "--json"]);
    assert_eq!(spawned.status.code(), Some(0));
    let events: Vec<Value> = stdout(&spawned)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "result" && e["data"]["id"] == "worker-1")
    );
    assert_eq!(events.last().unwrap()["data"]["state"], "succeeded");
    let ps: Value = serde_json::from_str(&stdout(&cli(&hive, &["ps", "--json"]))).unwrap();
    assert_eq!(ps["workers"][0]["id"], "worker-1");
    let status: Value = serde_json::from_str(&stdout(&cli(&hive, &["status", "--json"]))).unwrap();
    assert_eq!(status["workers"], 1);
    assert_eq!(status["hive_id"], "localhost");
    assert!(
        status["version"]
            .as_str()
            .unwrap()
            .starts_with("rbee-hive/")
    );
    let jobs: Value = serde_json::from_str(&stdout(&cli(&hive, &["jobs", "--json"]))).unwrap();
    assert!(!jobs["jobs"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn the_token_is_sent_from_the_token_file() {
    let hive = TestHive::builder().token("s3cret").start().await;
    let with = cli(&hive, &["ps"]);
    assert_eq!(with.status.code(), Some(0), "{}", stderr(&with));
    let mut without = hive.cli();
    without.env_remove("RBEE_HIVE_TOKEN_FILE").arg("ps");
    let without = run(without);
    assert_eq!(without.status.code(), Some(2));
    assert!(stderr(&without).contains("(401 "), "{}", stderr(&without));
}

#[tokio::test]
async fn ctrl_c_stops_following_and_leaves_the_job_running() {
    let hive = TestHive::with_config(&[&slow_start_type("slow", 2000, 30.0)]).await;
    let (mut child, mut lines) = spawn_slow(&hive);
    let job = lines
        .next()
        .unwrap()
        .unwrap()
        .strip_prefix("job ")
        .expect("the job id comes first")
        .to_owned();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("Started worker-1") {
            break;
        }
    }
    rbee_hive_e2e::os::signal_pid(child.id(), Signal::SIGINT);
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let last = rest.last().unwrap();
    assert!(
        last.contains(&format!("stopped following {job}"))
            && last.contains(&format!("rbee-hive cancel {job}")),
        "{rest:?}"
    );
    // The job goes on without its follower.
    let (_, status) = hive.job_status(&job).await;
    assert_ne!(status["state"], "cancelled");
    wait_until("the spawn finishes on its own", PATIENCE, || {
        std::fs::read_to_string(hive.state_dir().join("workers.json"))
            .is_ok_and(|s| s.contains("\"Ready\""))
    })
    .await;
    let followed = cli(&hive, &["follow", &job]);
    assert_eq!(followed.status.code(), Some(0));
    assert!(stdout(&followed).contains("✅ Worker ready: worker-1"));
}

#[tokio::test]
async fn global_flags_go_before_or_after_and_an_unknown_command_says_so() {
    let hive = TestHive::start().await;
    let url = format!("http://{}", hive.addr);
    // Before the command, as with git, cargo and pueue, and after it.
    for args in [
        vec!["--hive", url.as_str(), "--json", "ps"],
        vec!["ps", "--hive", url.as_str(), "--json"],
    ] {
        let mut command = hive.cli();
        command.env_remove("RBEE_HIVE_URL").args(&args);
        let ps = run(command);
        assert_eq!(ps.status.code(), Some(0), "{args:?}: {}", stderr(&ps));
        let answer: Value = serde_json::from_str(&stdout(&ps)).unwrap();
        assert_eq!(answer["workers"], serde_json::json!([]), "{args:?}");
    }
    let unknown = cli(&hive, &["frobnicate"]);
    assert_eq!(unknown.status.code(), Some(2));
    let err = stderr(&unknown);
    assert!(
        err.starts_with("error: 'frobnicate' is not a command of `rbee-hive`; the commands are: serve, spawn, ps,"),
        "{err}"
    );
    let help = stdout(&cli(&hive, &["--help"]));
    assert!(
        help.contains("Run the daemon with `rbee-hive` (or `rbee-hive serve`)"),
        "{help}"
    );
    assert!(help.contains("rbee-hive serve --help"), "{help}");
    assert!(
        help.contains("  spawn ") && help.contains("  ps "),
        "{help}"
    );
    assert!(
        !help.contains("--state-dir <"),
        "the daemon's flags are under serve --help: {help}"
    );
    let serve_help = stdout(&cli(&hive, &["serve", "--help"]));
    assert!(serve_help.contains("--state-dir <"), "{serve_help}");
    assert!(
        serve_help.contains("when set, a job naming another hive_id fails with the reason (not set: any hive_id is accepted"),
        "{serve_help}"
    );
    let misplaced = cli(&hive, &["--port", "7900", "ps"]);
    assert_eq!(misplaced.status.code(), Some(2));
    assert!(stderr(&misplaced).contains("--port is a flag of the daemon"));
}

/// The one JSON object a `--json` command printed on stderr for its error.
fn json_error(output: &Output) -> Value {
    let err = stderr(output);
    assert_eq!(err.lines().count(), 1, "one object on stderr: {err}");
    serde_json::from_str(&err).unwrap_or_else(|e| panic!("{err}: {e}"))
}

#[tokio::test]
async fn one_exit_code_per_outcome_in_every_command_and_json_errors() {
    let hive = TestHive::start().await;
    // An unknown worker or job: 1 in every command that names one.
    for args in [
        vec!["get", "worker-99"],
        vec!["get", "worker-99", "--field", "url"],
        vec!["stop", "worker-99"],
        vec!["logs", "worker-99"],
        vec!["logs", "worker-99", "-f"],
        vec!["follow", "job-00000000-0000-0000-0000-000000000000"],
        vec!["cancel", "job-00000000-0000-0000-0000-000000000000"],
        vec!["model", "get", "no-such-model"],
    ] {
        let output = cli(&hive, &args);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty(), "{args:?}");
        let mut json = args.clone();
        json.insert(0, "--json");
        let output = cli(&hive, &json);
        assert_eq!(output.status.code(), Some(1), "{json:?}");
        let error = json_error(&output);
        assert_eq!(error["exit"], 1, "{json:?}: {error}");
        assert!(
            error["error"].as_str().unwrap().contains("99")
                || error["error"].as_str().unwrap().contains("not found")
                || error["error"].as_str().unwrap().contains("no-such-model"),
            "{json:?}: {error}"
        );
        assert!(!error["code"].as_str().unwrap().is_empty());
    }
    // A usage error and a malformed request: 2, as JSON too.
    let usage = cli(&hive, &["--json", "stop"]);
    assert_eq!(usage.status.code(), Some(2));
    assert_eq!(json_error(&usage)["code"], "usage");
    let malformed = cli(
        &hive,
        &[
            "--json",
            "submit",
            r#"{"operation":"frobnicate","hive_id":"x"}"#,
        ],
    );
    assert_eq!(malformed.status.code(), Some(2));
    let error = json_error(&malformed);
    assert_eq!(error["code"], "unknown_operation");
    assert_eq!(error["exit"], 2);
    // No hive: 3.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nobody = cli(
        &hive,
        &[
            "--json",
            "--hive",
            &format!("http://127.0.0.1:{port}"),
            "status",
        ],
    );
    assert_eq!(nobody.status.code(), Some(3));
    assert_eq!(json_error(&nobody)["code"], "unreachable");
}

#[tokio::test]
async fn get_reads_as_text_json_covers_every_command_and_docs_are_generated() {
    // No sample comes before the test is over.
    let hive = TestHive::with_config(&["telemetry_interval_ms = 600000"]).await;
    let id = stdout(&cli(&hive, &["spawn", "m", "-q"])).trim().to_owned();
    let stats = cli(&hive, &["get", &id, "--field", "stats"]);
    assert_eq!(stdout(&stats), "no sample yet\n");
    let stats = cli(&hive, &["--json", "get", &id, "--field", "stats"]);
    assert_eq!(stdout(&stats), "null\n");
    let url = cli(&hive, &["--json", "get", &id, "--field", "url"]);
    let url: Value = serde_json::from_str(&stdout(&url)).unwrap();
    assert!(url.as_str().unwrap().starts_with("http://127.0.0.1:"));
    let logs = cli(&hive, &["--json", "logs", &id]);
    assert_eq!(logs.status.code(), Some(0));
    let lines: Vec<Value> = stdout(&logs)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(!lines.is_empty());
    assert!(
        lines
            .iter()
            .all(|l| l["worker_id"] == id.as_str() && l["line"].is_string())
    );

    // A worker killed by a signal reads as such.
    let pid = hive.worker(&id).await.unwrap()["pid"].as_u64().unwrap() as u32;
    rbee_hive_e2e::os::signal_pid(pid, Signal::SIGKILL);
    hive.wait_for_worker(&id, PATIENCE, |r| r["status"].is_object())
        .await;
    let get = stdout(&cli(&hive, &["get", &id]));
    let status = get.lines().find(|l| l.starts_with("status:")).unwrap();
    assert!(
        status.ends_with(" failed: killed by signal 9 (SIGKILL)"),
        "{get}"
    );
    let ps = stdout(&cli(&hive, &["ps"]));
    assert!(ps.lines().nth(1).unwrap().contains(" failed "), "{ps}");
    let pruned = cli(&hive, &["--json", "prune"]);
    assert_eq!(pruned.status.code(), Some(0), "{}", stderr(&pruned));
    let pruned: Value = serde_json::from_str(&stdout(&pruned)).unwrap();
    assert_eq!(pruned, serde_json::json!({"stopped": [id], "failed": []}));
    let again = cli(&hive, &["--json", "stop", "worker-98", "worker-99"]);
    assert_eq!(again.status.code(), Some(1));
    let summary: Value = serde_json::from_str(&stdout(&again)).unwrap();
    assert_eq!(summary["stopped"], serde_json::json!([]));
    assert_eq!(summary["failed"][1]["id"], "worker-99");
    assert_eq!(json_error(&again)["exit"], 1);
    assert_eq!(cli(&hive, &["--json", "model"]).status.code(), Some(2));

    let mut closed = hive.cli();
    closed.args(["completions", "bash"]).stdout(Stdio::piped());
    let mut child = closed.spawn().unwrap();
    drop(child.stdout.take());
    assert_eq!(
        child.wait().unwrap().code(),
        Some(0),
        "a closed pipe is not a failure"
    );
    let bash = cli(&hive, &["completions", "bash"]);
    assert_eq!(bash.status.code(), Some(0));
    assert!(
        stdout(&bash).contains("complete -F _rbee__hive"),
        "{}",
        stdout(&bash)
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert_eq!(
            cli(&hive, &["completions", shell]).status.code(),
            Some(0),
            "{shell}"
        );
    }
    let man = cli(&hive, &["man"]);
    assert_eq!(man.status.code(), Some(0));
    assert!(stdout(&man).contains(".TH rbee-hive 1"));
}
