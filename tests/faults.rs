//! Durability and faults (issue 4): restarts, crashes, dead workers, reused pids, clients
//! that go away or never read, cancellations in the middle of a stop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rbee_hive_e2e::lines::{assert_line, assert_nothing_signalled};
use rbee_hive_e2e::os::{pid_alive, port_free};
use rbee_hive_e2e::wait::{wait_for, wait_until};
use rbee_hive_e2e::{
    TestHive, delete_body, pid_of, port_of, slow_start_type, spawn_body, stubborn_type,
};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn the_state_file_holds_what_a_job_acknowledged_when_it_ends() {
    let hive = TestHive::start().await;
    hive.spawn_ready("demo").await;
    let state = hive.state_file();
    assert_eq!(state["workers"][0]["status"], "Ready", "{state}");
    assert_eq!(state["last_id"], 1);
    assert!(state["workers"][0]["start_ticks"].is_u64());
    assert_eq!(state["workers"][0]["pgid"], state["workers"][0]["pid"]);
    hive.delete_worker("worker-1").await;
    assert!(
        hive.state_file()["workers"].as_array().unwrap().is_empty(),
        "state file still lists the deleted worker"
    );
}

#[tokio::test]
async fn a_sigkilled_hive_is_restarted_and_adopts_its_workers() {
    let mut hive = TestHive::start().await;
    let first = hive.spawn_ready("demo").await;
    let second = hive.spawn_ready("demo").await;
    // A spawn's [DONE] comes once the state file holds the ready worker.
    hive.kill_hard();
    assert!(
        pid_alive(pid_of(&first)) && pid_alive(pid_of(&second)),
        "workers outlive a hive crash"
    );

    hive.restart();
    let workers = hive.workers().await;
    assert_eq!(workers.len(), 2, "{workers:?}");
    for (before, after) in [(&first, &workers[0]), (&second, &workers[1])] {
        assert_eq!(after["id"], before["id"]);
        assert_eq!(after["pid"], before["pid"]);
        assert_eq!(after["port"], before["port"]);
        assert_eq!(after["status"], "Ready");
    }
    // Ids are never reused: the next worker is worker-3.
    let third = hive.spawn_ready("demo").await;
    assert_eq!(third["id"], "worker-3");
    assert_ne!(third["port"], first["port"]);
    assert_ne!(third["port"], second["port"]);
    // Adopted workers delete like any other: SIGTERM through pidfds, waited on without
    // being their parent.
    let lines = hive.delete_worker("worker-1").await;
    assert_line(&lines, "worker_delete_sigterm");
    assert_eq!(
        lines[lines.len() - 2],
        "[hv-router ] worker_delete_complete: ✅ Worker deleted: worker-1"
    );
    assert!(!pid_alive(pid_of(&first)));
    assert!(port_free(port_of(&first)));
    // The rest are stopped by the hive's own shutdown when the test ends (checked by Drop).
}

#[tokio::test]
async fn keep_policy_leaves_workers_for_the_next_hive() {
    let mut hive = TestHive::with_config(&["on_shutdown = \"keep\""]).await;
    let worker = hive.spawn_ready("demo").await;
    hive.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        hive.wait_exit(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
    assert!(
        pid_alive(pid_of(&worker)),
        "on_shutdown = keep leaves the worker running"
    );
    hive.restart();
    let adopted = hive.worker("worker-1").await.expect("adopted");
    assert_eq!(adopted["pid"], worker["pid"]);
    hive.delete_worker("worker-1").await;
    assert!(!pid_alive(pid_of(&worker)));
}

#[tokio::test]
async fn a_worker_that_died_while_the_hive_was_down_is_reported_lost() {
    let (mut hive, worker) = TestHive::killed_with_a_worker().await;
    rbee_hive_e2e::os::signal_pid(pid_of(&worker), nix::sys::signal::Signal::SIGKILL);
    wait_until("the worker is gone", Duration::from_secs(5), || {
        !pid_alive(pid_of(&worker))
    })
    .await;
    hive.restart();
    let record = hive.worker("worker-1").await.expect("still listed");
    assert_eq!(record["status"], json!({"Failed": {"reason": "lost"}}));
    let list = hive
        .run_job(json!({"operation": "worker_list", "hive_id": "localhost"}))
        .await;
    assert!(list[2].ends_with("| failed"), "{list:#?}");
    assert_nothing_signalled(&hive.delete_worker("worker-1").await);
    assert!(hive.workers().await.is_empty());
}

#[tokio::test]
async fn a_recorded_pid_that_now_belongs_to_another_process_is_never_signalled() {
    let (mut hive, worker) = TestHive::killed_with_a_worker().await;
    rbee_hive_e2e::os::signal_pid(pid_of(&worker), nix::sys::signal::Signal::SIGKILL);
    // Pretend the pid was reused: point the record at an unrelated process of ours.
    let bystander = rbee_hive_e2e::os::Bystander::start();
    let path = hive.state_dir().join("workers.json");
    let mut state = hive.state_file();
    state["workers"][0]["pid"] = json!(bystander.pid());
    state["workers"][0]["pgid"] = json!(bystander.pid());
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();

    hive.restart();
    let record = hive.worker("worker-1").await.expect("still listed");
    assert_eq!(
        record["status"],
        json!({"Failed": {"reason": "lost"}}),
        "start time differs: not the worker"
    );
    hive.delete_worker("worker-1").await;
    assert!(
        pid_alive(bystander.pid()),
        "the hive signalled a process that is not its worker"
    );
}

#[tokio::test]
async fn a_corrupt_state_file_is_moved_aside_and_the_hive_starts_empty() {
    let mut hive = TestHive::start().await;
    hive.signal(nix::sys::signal::Signal::SIGTERM);
    hive.wait_exit(Duration::from_secs(10)).expect("stopped");
    std::fs::write(
        hive.state_dir().join("workers.json"),
        b"{\"version\":1,\"workers\":[tru",
    )
    .unwrap();
    hive.restart();
    assert!(hive.workers().await.is_empty());
    let aside: Vec<String> = std::fs::read_dir(hive.state_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("workers.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(
        hive.log().contains("is unusable"),
        "a clear log line: {}",
        hive.log()
    );
}

#[tokio::test]
async fn two_hives_on_one_state_dir_are_refused() {
    let hive = TestHive::start().await;
    let log = hive.start_second_on_same_state_dir();
    assert!(log.contains("is in use by another rbee-hive"), "{log}");
    assert!(log.contains(&format!("(pid {})", hive.pid())), "{log}");
}

#[tokio::test]
async fn a_second_signal_during_shutdown_skips_the_grace() {
    let mut hive = TestHive::with_config(&["stop_grace_ms = 3600000", &stubborn_type()]).await;
    let worker = hive.spawn_ready("stubborn").await;
    hive.signal(nix::sys::signal::Signal::SIGTERM);
    // The shutdown's stop is recorded, then SIGTERM goes to the worker, which ignores it.
    wait_until(
        "the shutdown sent SIGTERM to the worker",
        Duration::from_secs(30),
        || hive.state_file()["workers"][0]["stop"]["sigterm_at"].is_string(),
    )
    .await;
    assert!(
        pid_alive(pid_of(&worker)),
        "the worker ignores SIGTERM and has an hour of grace"
    );
    hive.signal(nix::sys::signal::Signal::SIGTERM);
    let status = hive
        .wait_exit(Duration::from_secs(30))
        .expect("the hive exits after the second signal, long before the grace is over");
    assert_eq!(status.code(), Some(0));
    assert!(!pid_alive(pid_of(&worker)));
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_does_not_stop_the_job() {
    let hive = TestHive::with_config(&[&slow_start_type("slowish", 800, 10.0)]).await;
    let job_id = hive.submit(spawn_body("slowish")).await;
    {
        let mut stream = TcpStream::connect(hive.addr).unwrap();
        write!(
            stream,
            "GET /v1/jobs/{job_id}/stream HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .unwrap();
        let mut first = [0u8; 64];
        let read = stream.read(&mut first).unwrap();
        assert!(read > 0);
    } // the client goes away here, mid-stream
    wait_for(
        "the job finishes",
        Duration::from_secs(15),
        || async { hive.job_status(&job_id).await.1 },
        |job| {
            // Until then, it runs.
            if job["state"] == "succeeded" {
                return true;
            }
            assert_eq!(job["state"], "running", "{job}");
            false
        },
    )
    .await;
    assert_eq!(hive.worker("worker-1").await.unwrap()["status"], "Ready");
    let lines = hive.stream_lines(&job_id).await;
    assert_eq!(
        lines.last().unwrap(),
        "[DONE]",
        "a later reader still gets everything"
    );
}

#[tokio::test]
async fn readers_that_never_read_do_not_slow_jobs_or_the_hive() {
    let hive = TestHive::start().await;
    hive.spawn_ready("demo").await;
    // 64 clients open the stream of a job and never read a byte.
    let job_id = hive
        .submit(json!({"operation": "worker_get", "hive_id": "localhost", "id": "worker-1"}))
        .await;
    let stalled: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut stream = TcpStream::connect(hive.addr).unwrap();
            write!(
                stream,
                "GET /v1/jobs/{job_id}/stream HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            .unwrap();
            stream
        })
        .collect();
    let (_, job) = hive.job_status(&job_id).await;
    assert_eq!(job["state"], "succeeded");
    // A hive that waited on the stalled readers would hang here (each stream has a deadline).
    for _ in 0..50 {
        let lines = hive
            .run_job(json!({"operation": "worker_list", "hive_id": "localhost"}))
            .await;
        assert_eq!(lines.last().unwrap(), "[DONE]");
    }
    drop(stalled);
}

#[tokio::test]
async fn a_job_cancelled_mid_delete_still_leaves_the_worker_fully_stopped() {
    let hive = TestHive::with_config(&[&stubborn_type()]).await;
    let worker = hive.spawn_ready("stubborn").await;
    let job_id = hive.submit(delete_body("worker-1", Some(1000))).await;
    hive.stream_until(&job_id, |l| l.contains("worker_delete_sigterm"))
        .await;
    assert_eq!(hive.cancel(&job_id).await.status(), StatusCode::OK);
    let lines = hive.stream_lines(&job_id).await;
    assert_eq!(
        &lines[lines.len() - 2..],
        ["[CANCELLED]", "[DONE]"],
        "{lines:#?}"
    );
    // The stop goes on without the job: SIGKILL after the grace, then the record goes.
    let stopped = "the worker is fully stopped (not left half-stopped)";
    hive.wait_until_all_gone(pid_of(&worker), stopped).await;
    assert!(port_free(port_of(&worker)));
}
