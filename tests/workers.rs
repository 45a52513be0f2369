//! The worker lifecycle end to end (issue 3): real hive, real worker processes, and checks
//! against the operating system after each step. One behaviour per test.

use std::time::{Duration, Instant};

use rbee_hive_e2e::lines::{assert_done, assert_line, assert_nothing_signalled, error_line};
use rbee_hive_e2e::os::{group_members, pid_alive, port_free};
use rbee_hive_e2e::{
    TestHive, crashing_type, delete_body, demo_worker_type, pid_of, port_of, slow_start_type,
    spawn_body, stubborn_type,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[tokio::test]
async fn spawn_becomes_ready_and_list_and_get_show_a_true_pid_and_port() {
    let hive = TestHive::start().await;
    let lines = hive.run_job(spawn_body("demo")).await;
    assert_eq!(
        lines[0],
        "[hv-router ] worker_spawn_start: 🚀 Spawning demo worker for model 'test-model' on device 0 on hive 'localhost'"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("worker_spawn_command: Command: ")
                && l.contains("rbee-hive demo-worker"))
    );
    assert!(
        lines[lines.len() - 2]
            .starts_with("[hv-router ] worker_spawn_ready: ✅ Worker ready: worker-1 | PID ")
    );
    assert_eq!(lines.last().unwrap(), "[DONE]");

    let record = hive.worker("worker-1").await.expect("registered");
    let (pid, port) = (pid_of(&record), port_of(&record));
    assert!(pid_alive(pid));
    assert!(
        cmdline(pid).contains("rbee-hive demo-worker --worker-id worker-1"),
        "{}",
        cmdline(pid)
    );
    assert_eq!(
        group_members(pid),
        vec![pid],
        "the worker leads its own process group"
    );
    assert!(!port_free(port), "the worker listens on its port");
    let health = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(record["status"], "Ready");
    assert_eq!(record["device"], "CPU-0");
    assert_eq!(record["worker_type"], "demo");
    assert_eq!(record["model_id"], "test-model");
    assert_eq!(record["url"], format!("http://127.0.0.1:{port}"));

    let list = hive
        .run_job(json!({"operation": "worker_list", "hive_id": "localhost"}))
        .await;
    assert_eq!(
        list,
        vec![
            "[hv-router ] worker_list_start: 📋 Listing workers on hive 'localhost'".to_string(),
            "[hv-router ] worker_list_result: Found 1 worker(s)".into(),
            format!(
                "[hv-router ] worker_list_entry:   worker-1 | test-model | CPU-0 | port {port} | ready"
            ),
            "[DONE]".into(),
        ]
    );

    let get = hive
        .run_job(json!({"operation": "worker_get", "hive_id": "localhost", "id": "worker-1"}))
        .await;
    assert_eq!(
        get[0],
        "[hv-router ] worker_get_start: 🔍 Getting worker 'worker-1' on hive 'localhost'"
    );
    assert_eq!(
        get[1],
        format!(
            "[hv-router ] worker_get_found: ✅ Worker: worker-1 | Model: test-model | Device: CPU-0 | Port: {port}"
        )
    );
    let details = get[2]
        .strip_prefix("[hv-router ] worker_get_details: ")
        .expect("details line");
    assert!(
        details.starts_with("{\n  \"id\": \"worker-1\",\n  \"model_id\": \"test-model\","),
        "{details}"
    );
    let parsed: Value = serde_json::from_str(details).expect("pretty JSON");
    assert_eq!(parsed["pid"], pid);
    assert_eq!(parsed["port"], port);
    assert_eq!(get[3], "[DONE]");
}

#[tokio::test]
async fn graceful_delete_has_no_sigkill_and_ends_without_waiting_for_the_grace() {
    // An hour of grace: a delete that waited for it, or slept a fixed time, would not end
    // within the stream deadline of the fixture.
    let hive = TestHive::with_config(&["stop_grace_ms = 3600000"]).await;
    let record = hive.spawn_ready("demo").await;
    let (pid, port) = (pid_of(&record), port_of(&record));
    let lines = hive.delete_worker("worker-1").await;
    assert_eq!(
        lines,
        vec![
            "[hv-router ] worker_delete_start: 🗑️  Deleting worker 'worker-1' on hive 'localhost'"
                .to_string(),
            format!("[hv-router ] worker_delete_kill: Killing process PID {pid}"),
            "[hv-router ] worker_delete_sigterm: Sent SIGTERM to worker process".into(),
            "[hv-router ] worker_delete_complete: ✅ Worker deleted: worker-1".into(),
            "[DONE]".into(),
        ]
    );
    assert!(!pid_alive(pid));
    assert!(port_free(port));
    assert!(hive.workers().await.is_empty());
}

#[tokio::test]
async fn ignores_sigterm_gets_sigkill_after_the_grace() {
    let hive = TestHive::with_config(&[&stubborn_type()]).await;
    let record = hive.spawn_ready("stubborn").await;
    let pid = pid_of(&record);
    let started = Instant::now();
    let lines = hive.run_job(delete_body("worker-1", Some(1500))).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "SIGKILL came before the grace: {elapsed:?}"
    );
    assert_line(&lines, "worker_delete_sigterm");
    assert!(
        lines.iter().any(|l| l == "[hv-router ] worker_delete_sigkill: Sent SIGKILL to worker process (still running after 1.5s of grace)"),
        "{lines:#?}"
    );
    // Progress once a second.
    assert_line(&lines, "worker_delete_waiting: ⏳ Waiting for PID");
    assert_eq!(
        lines[lines.len() - 2],
        "[hv-router ] worker_delete_complete: ✅ Worker deleted: worker-1"
    );
    assert!(!pid_alive(pid));
}

#[tokio::test]
async fn grandchildren_are_gone_after_delete() {
    let hive = TestHive::builder()
        .config(&demo_worker_type("parent", &["--children", "2"], 10.0))
        .config(&demo_worker_type(
            "parent-stubborn-kids",
            &["--children", "2", "--children-ignore-sigterm"],
            10.0,
        ))
        .start()
        .await;
    for (worker_type, id) in [("parent", "worker-1"), ("parent-stubborn-kids", "worker-2")] {
        let record = hive.spawn_ready(worker_type).await;
        let pid = pid_of(&record);
        let members = group_members(pid);
        assert_eq!(members.len(), 3, "leader and two children: {members:?}");
        let lines = hive.run_job(delete_body(id, Some(500))).await;
        assert_done(&lines);
        for member in &members {
            assert!(
                !pid_alive(*member),
                "{worker_type}: process {member} survived the delete"
            );
        }
        assert!(group_members(pid).is_empty());
    }
}

#[tokio::test]
async fn port_can_be_bound_again_after_delete() {
    let hive = TestHive::start().await;
    let record = hive.spawn_ready("demo").await;
    let port = port_of(&record);
    hive.delete_worker("worker-1").await;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("port is free again");
    drop(listener);
}

#[tokio::test]
async fn a_crash_is_reported_failed_with_its_exit_code() {
    let hive = TestHive::with_config(&[&crashing_type("crashy", 400, 3)]).await;
    let record = hive.spawn_ready("crashy").await;
    let port = port_of(&record);
    let failed = hive
        .wait_for_worker("worker-1", Duration::from_secs(10), |r| {
            r["status"].get("Failed").is_some()
        })
        .await;
    assert_eq!(
        failed["status"],
        json!({"Failed": {"reason": "exited with code 3"}})
    );
    assert_eq!(failed["exit"]["code"], 3);
    assert!(
        port_free(port),
        "the port is released when the worker exits"
    );
    let list = hive
        .run_job(json!({"operation": "worker_list", "hive_id": "localhost"}))
        .await;
    assert!(
        list[2].ends_with(&format!("| port {port} | failed")),
        "{list:#?}"
    );
    // Deleting a worker that already exited signals nothing and removes the record.
    let lines = hive.delete_worker("worker-1").await;
    assert_line(&lines, "worker_delete_exited");
    assert_nothing_signalled(&lines);
    assert!(hive.workers().await.is_empty());
}

#[tokio::test]
async fn exit_before_ready_fails_the_spawn_with_the_code_and_output() {
    let hive = TestHive::builder()
        .config(&demo_worker_type(
            "dies-early",
            &[
                "--start-delay-ms",
                "5000",
                "--exit-after-ms",
                "100",
                "--exit-code",
                "7",
            ],
            10.0,
        ))
        .start()
        .await;
    let lines = hive.run_job(spawn_body("dies-early")).await;
    let error = error_line(&lines);
    assert!(
        error.contains("worker-1 exited before it was ready (exit code 7)"),
        "{lines:#?}"
    );
    assert!(
        error.contains("exiting with code 7 after 100 ms, as asked"),
        "the worker's own output: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[job-exec  ] failed         : ")),
        "{lines:#?}"
    );
    assert_done(&lines);
    let record = hive.worker("worker-1").await.expect("kept as failed");
    assert_eq!(record["exit"]["code"], 7);
}

#[tokio::test]
async fn the_ready_timeout_stops_the_worker() {
    let hive = TestHive::with_config(&[&slow_start_type("never-ready", 60_000, 0.5)]).await;
    let lines = hive.run_job(spawn_body("never-ready")).await;
    let error = error_line(&lines);
    assert!(
        error.contains("worker-1 was not ready within 500ms and was stopped"),
        "{error}"
    );
    let record = hive.worker("worker-1").await.expect("kept as failed");
    assert!(!pid_alive(pid_of(&record)));
    assert!(
        record["status"]["Failed"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("not ready within 500ms")
    );
    assert!(port_free(port_of(&record)));
}

#[tokio::test]
async fn port_bind_failure_is_reported_as_such() {
    // The worker is told to listen on a port that someone else holds.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let hive = TestHive::builder()
        .config(&format!(
            "[workers.fixed-port]\ncommand = [\"rbee-demo-worker\", \"--worker-id\", \"{{worker_id}}\", \"--port\", \"{taken}\"]\n"
        ))
        .start()
        .await;
    let lines = hive.run_job(spawn_body("fixed-port")).await;
    let error = error_line(&lines);
    assert!(
        error.contains("worker-1 could not bind its port"),
        "{error}"
    );
    assert_line(&lines, "Address already in use");
    drop(squatter);
}

#[tokio::test]
async fn eight_concurrent_spawns_get_eight_distinct_ports() {
    let hive = TestHive::start().await;
    let spawns = (0..8).map(|_| hive.run_job(spawn_body("demo")));
    let results = futures::future::join_all(spawns).await;
    for lines in &results {
        assert_line(lines, "worker_spawn_ready");
    }
    let workers = hive.workers().await;
    assert_eq!(workers.len(), 8);
    let ports: std::collections::BTreeSet<u64> = workers
        .iter()
        .map(|w| w["port"].as_u64().unwrap())
        .collect();
    let ids: std::collections::BTreeSet<&str> =
        workers.iter().map(|w| w["id"].as_str().unwrap()).collect();
    assert_eq!(ports.len(), 8, "{ports:?}");
    assert_eq!(ids.len(), 8, "{ids:?}");
    for worker in &workers {
        assert!(
            !port_free(port_of(worker)),
            "each worker really listens on its own port"
        );
    }
}

#[tokio::test]
async fn two_concurrent_deletes_both_end_cleanly() {
    let hive = TestHive::builder()
        .config(&demo_worker_type(
            "slow-stop",
            &["--stop-delay-ms", "300"],
            10.0,
        ))
        .start()
        .await;
    let record = hive.spawn_ready("slow-stop").await;
    let pid = pid_of(&record);
    let (a, b) = tokio::join!(
        hive.delete_worker("worker-1"),
        hive.delete_worker("worker-1")
    );
    for lines in [&a, &b] {
        assert_eq!(
            lines[lines.len() - 2],
            "[hv-router ] worker_delete_complete: ✅ Worker deleted: worker-1",
            "{lines:#?}"
        );
        assert_eq!(lines.last().unwrap(), "[DONE]");
    }
    assert!(!pid_alive(pid));
    assert!(hive.workers().await.is_empty());
}

#[tokio::test]
async fn delete_during_starting_cancels_the_start() {
    let hive = TestHive::with_config(&[&slow_start_type("slow-start", 30_000, 60.0)]).await;
    let (spawn_job, starting) = hive.spawn_starting("slow-start", "worker-1").await;
    let pid = pid_of(&starting);
    let delete = hive.delete_worker("worker-1").await;
    assert_done(&delete);
    assert_line(&delete, "worker_delete_complete");
    let spawn = hive.stream_lines(&spawn_job).await;
    let error = error_line(&spawn);
    assert_eq!(
        error,
        "[ERROR] worker-1 was stopped while it was starting (it was deleted)"
    );
    assert!(!pid_alive(pid));
    assert!(hive.workers().await.is_empty());
}

#[tokio::test]
async fn an_exit_during_a_delete_ends_cleanly() {
    // The worker takes 300 ms to stop and also exits on its own at about the same time.
    let hive = TestHive::builder()
        .config(&demo_worker_type(
            "racy",
            &[
                "--stop-delay-ms",
                "300",
                "--exit-after-ms",
                "1200",
                "--exit-code",
                "4",
            ],
            10.0,
        ))
        .start()
        .await;
    let record = hive.spawn_ready("racy").await;
    // The race is the behaviour under test: the delete is sent about 200 ms before the
    // worker exits on its own, so that the exit falls into the 300 ms the stop takes.
    // Nothing can be waited for here; the sleep places the delete in time.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let lines = hive.delete_worker("worker-1").await;
    assert_eq!(
        lines[lines.len() - 2],
        "[hv-router ] worker_delete_complete: ✅ Worker deleted: worker-1",
        "{lines:#?}"
    );
    assert!(!pid_alive(pid_of(&record)));
    assert!(hive.workers().await.is_empty());
}

#[tokio::test]
async fn a_pid_that_is_not_a_worker_is_never_signalled() {
    let hive = TestHive::with_config(&[&crashing_type("crashy", 200, 1)]).await;
    let record = hive.spawn_ready("crashy").await;
    hive.wait_for_worker("worker-1", Duration::from_secs(10), |r| {
        r["status"].get("Failed").is_some()
    })
    .await;
    // The recorded pid now belongs to nobody the hive owns; an unrelated process runs beside.
    let bystander = rbee_hive_e2e::os::Bystander::start();
    let lines = hive.delete_worker("worker-1").await;
    assert_nothing_signalled(&lines);
    assert!(
        pid_alive(bystander.pid()),
        "an unrelated process was signalled"
    );
    assert!(!pid_alive(pid_of(&record)));
    // Ids that are not workers are refused without touching anything.
    for id in ["worker-0", "worker-99", "1", "worker-1/../2", "0"] {
        let lines = hive.delete_worker(id).await;
        assert_eq!(
            error_line(&lines),
            format!("[ERROR] worker '{id}' not found")
        );
    }
}

#[tokio::test]
async fn spawn_narrates_progress_at_least_once_a_second() {
    let hive = TestHive::with_config(&[&slow_start_type("slowish", 2300, 30.0)]).await;
    let lines = hive.run_job(spawn_body("slowish")).await;
    let waiting = lines
        .iter()
        .filter(|l| l.contains("worker_spawn_waiting: ⏳ Waiting for worker-1 to become ready"))
        .count();
    assert!(waiting >= 2, "{lines:#?}");
    assert_line(&lines, "worker_spawn_ready");
}

#[tokio::test]
async fn unknown_worker_type_and_missing_program_fail_clearly_and_start_nothing() {
    let hive =
        TestHive::with_config(&["[workers.ghost]\ncommand = [\"/nonexistent/worker-binary\"]\n"])
            .await;
    let lines = hive.run_job(spawn_body("tpu")).await;
    assert!(
        lines.iter().any(|l| l.starts_with(
            "[ERROR] unknown worker type 'tpu'; known types: cpu, cuda, demo, ghost, llama, metal"
        )),
        "{lines:#?}"
    );
    let lines = hive.run_job(spawn_body("ghost")).await;
    assert!(lines.iter().any(|l| l.starts_with("[ERROR] worker program '/nonexistent/worker-binary' not found")), "{lines:#?}");
    assert!(hive.workers().await.is_empty());
    // No id was used by the failures.
    hive.spawn_ready("demo").await;
    assert!(hive.worker("worker-1").await.is_some());
}

#[tokio::test]
async fn heartbeats_are_recorded_and_move_ready_and_busy() {
    let hive =
        TestHive::with_config(&[&demo_worker_type("quiet", &["--heartbeat-ms", "0"], 10.0)]).await;
    hive.spawn_ready("quiet").await;
    let beat = |body: Value| {
        let client = hive.client.clone();
        let url = hive.url("/v1/heartbeat");
        async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, answer) = beat(json!({"worker_id": "worker-1", "timestamp": "2026-01-01T00:00:00Z", "health_status": "healthy", "state": "busy"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "ok");
    let record = hive.worker("worker-1").await.unwrap();
    assert_eq!(record["status"], "Busy");
    assert_eq!(record["health"], "healthy");
    assert!(record["last_heartbeat"].is_string());
    beat(json!({"worker_id": "worker-1", "timestamp": "2026-01-01T00:00:01Z", "health_status": "degraded", "state": "ready"})).await;
    let record = hive.worker("worker-1").await.unwrap();
    assert_eq!(
        (record["status"].clone(), record["health"].clone()),
        (json!("Ready"), json!("degraded"))
    );
    let (status, answer) = beat(json!({"worker_id": "worker-9", "timestamp": "2026-01-01T00:00:00Z", "health_status": "healthy"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["code"], "worker_not_found");
    let (status, _) = beat(json!({"worker_id": "worker-1", "health_status": "sick"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_demo_worker_heartbeats_on_its_own() {
    let hive = TestHive::with_config(&[&demo_worker_type(
        "chatty",
        &["--heartbeat-ms", "100"],
        10.0,
    )])
    .await;
    hive.spawn_ready("chatty").await;
    let record = hive
        .wait_for_worker("worker-1", Duration::from_secs(10), |r| {
            r["last_heartbeat"].is_string()
        })
        .await;
    assert_eq!(record["health"], "healthy");
    let port = port_of(&record);
    let reply: Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/inference"))
        .json(&json!({"prompt": "hello there"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["demo"], true);
    assert_eq!(reply["text"], "[demo worker, no real model] there hello");
}

#[tokio::test]
async fn cancelling_a_running_spawn_ends_its_stream_and_stops_the_worker() {
    let hive = TestHive::with_config(&[&slow_start_type("slow-start", 30_000, 60.0)]).await;
    let (job_id, starting) = hive.spawn_starting("slow-start", "worker-1").await;
    let response = hive.cancel(&job_id).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"job_id": job_id, "status": "cancelled"})
    );
    let lines = hive.stream_lines(&job_id).await;
    assert_eq!(
        &lines[lines.len() - 2..],
        ["[CANCELLED]", "[DONE]"],
        "{lines:#?}"
    );
    let (_, job) = hive.job_status(&job_id).await;
    assert_eq!(job["state"], "cancelled");
    assert_eq!(hive.cancel(&job_id).await.status(), StatusCode::CONFLICT);
    // The cancelled spawn leaves nothing behind.
    hive.wait_until_all_gone(pid_of(&starting), "the cancelled spawn's worker is gone")
        .await;
}

#[tokio::test]
async fn sigterm_ends_open_streams_with_terminal_lines_and_stops_workers() {
    let mut hive = TestHive::with_config(&[&slow_start_type("slow-start", 30_000, 60.0)]).await;
    let ready = hive.spawn_ready("demo").await;
    let (job_id, _) = hive.spawn_starting("slow-start", "worker-2").await;
    let stream = hive.get(&format!("/v1/jobs/{job_id}/stream")).await;
    hive.signal(nix::sys::signal::Signal::SIGTERM);
    let body = tokio::time::timeout(Duration::from_secs(15), stream.text())
        .await
        .expect("stream ended")
        .unwrap();
    assert!(
        body.ends_with("data: [CANCELLED]\n\ndata: [DONE]\n\n"),
        "{body}"
    );
    let status = hive.wait_exit(Duration::from_secs(15)).expect("hive exits");
    assert_eq!(status.code(), Some(0), "{}", hive.log());
    assert!(
        !pid_alive(pid_of(&ready)),
        "on_shutdown = stop stops every worker"
    );
    assert!(hive.tagged_processes().is_empty());
}
