//! Nothing lost under crashes (issue 10): one regression test per defect found by the
//! adversarial soak. Each kills or stops the hive at the worst moment and checks the
//! operating system and the state file afterwards.

use std::time::Duration;

use nix::sys::signal::Signal;
use rbee_hive_e2e::lines::{assert_done, assert_line, assert_no_line, error_line};
use rbee_hive_e2e::os::{Bystander, group_members, pid_alive, port_free, signal_pid};
use rbee_hive_e2e::wait::{wait_for, wait_until, with_context};
use rbee_hive_e2e::{
    TestHive, delete_body, demo_worker_type, pid_of, port_of, slow_start_type, spawn_body,
    stubborn_type,
};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);

/// A demo worker with two children that ignore SIGTERM (the leader obeys it).
fn family() -> String {
    demo_worker_type(
        "family",
        &["--children", "2", "--children-ignore-sigterm"],
        10.0,
    )
}

/// The children of a worker: the other members of its process group, once both run.
async fn children_of(leader: u32) -> Vec<u32> {
    wait_until("the worker's two children run", PATIENCE, || {
        group_members(leader).len() == 3
    })
    .await;
    group_members(leader)
        .into_iter()
        .filter(|pid| *pid != leader)
        .collect()
}

fn all_gone(pids: &[u32]) -> bool {
    pids.iter().all(|pid| !pid_alive(*pid))
}

/// A hive with the config lines `settings` and the `family` type, and a `family` worker
/// whose two children run: the hive, the worker's leader and its children.
async fn hive_with_a_family(settings: &[&str]) -> (TestHive, u32, Vec<u32>) {
    let family = family();
    let hive = TestHive::with_config(&[settings, &[family.as_str()]].concat()).await;
    let record = hive.spawn_ready("family").await;
    let leader = pid_of(&record);
    let children = children_of(leader).await;
    (hive, leader, children)
}

// Defect 1: children of a lost worker ran forever.
#[tokio::test]
async fn the_children_of_a_worker_that_died_while_the_hive_was_down_are_stopped() {
    let (mut hive, leader, children) = hive_with_a_family(&["stop_grace_ms = 300"]).await;
    hive.kill_hard();
    signal_pid(leader, Signal::SIGKILL);
    wait_until("the leader is gone", PATIENCE, || !pid_alive(leader)).await;
    assert!(!all_gone(&children), "the children outlive their leader");
    let sentinel = Bystander::start();

    hive.restart();
    wait_until("the lost worker's children are stopped", PATIENCE, || {
        all_gone(&children)
    })
    .await;
    let worker = hive.worker("worker-1").await.expect("still listed");
    assert_eq!(worker["status"], json!({"Failed": {"reason": "lost"}}));
    assert!(worker["stop"]["sigkill_at"].is_string(), "{worker}");
    assert_done(&hive.run_job(delete_body("worker-1", Some(0))).await);
    assert!(hive.workers().await.is_empty());
    assert!(
        pid_alive(sentinel.pid()),
        "an unrelated process was signalled"
    );
}

#[tokio::test]
async fn a_stop_of_what_an_exited_leader_left_is_resumed_after_a_crash() {
    let mut hive = TestHive::builder()
        .config("stop_grace_ms = 3600000")
        .config(&demo_worker_type(
            "orphaner",
            &[
                "--children",
                "2",
                "--children-ignore-sigterm",
                "--exit-after-ms",
                "1000",
                "--exit-code",
                "3",
            ],
            10.0,
        ))
        .start()
        .await;
    let record = hive.spawn_ready("orphaner").await;
    let leader = pid_of(&record);
    let children = children_of(leader).await;
    wait_until("the leader exits on its own", PATIENCE, || {
        !pid_alive(leader)
    })
    .await;
    // Whenever the state file says the leader exited, it also says that what it left is
    // being stopped: never one without the other.
    wait_until("the exit is saved", PATIENCE, || {
        hive.state_file()["workers"][0]["exit"].is_object()
    })
    .await;
    let saved = hive.state_file();
    assert_eq!(
        saved["workers"][0]["stop"]["reason"], "leader_exited",
        "{saved}"
    );
    assert!(
        saved["workers"][0]["stop"]["finished_at"].is_null(),
        "{saved}"
    );
    assert!(
        !all_gone(&children),
        "an hour of grace, and they ignore SIGTERM"
    );
    hive.kill_hard();
    hive.restart();
    // The next hive resumes the stop (with what is left of the grace), and a delete with
    // no grace cuts it short.
    assert_done(&hive.run_job(delete_body("worker-1", Some(0))).await);
    assert!(all_gone(&children));
}

// Defect 2: a delete cut by a `keep` shutdown was abandoned.
#[tokio::test]
async fn a_delete_cut_by_a_keep_shutdown_finishes_before_the_hive_exits() {
    let mut hive = TestHive::with_config(&["on_shutdown = \"keep\"", &stubborn_type()]).await;
    let record = hive.spawn_ready("stubborn").await;
    let job = hive.submit(delete_body("worker-1", Some(1500))).await;
    hive.stream_until(&job, |l| l.contains("worker_delete_sigterm"))
        .await;
    hive.signal(Signal::SIGTERM);
    let status = hive.wait_exit(PATIENCE).expect("the hive exits");
    assert_eq!(status.code(), Some(0));
    assert!(!pid_alive(pid_of(&record)), "the stop finished before exit");
    assert!(port_free(port_of(&record)));
    hive.restart();
    assert!(
        hive.workers().await.is_empty(),
        "a deleted worker never comes back"
    );
}

#[tokio::test]
async fn a_delete_cut_by_a_keep_shutdown_after_the_leader_exited_leaves_no_children() {
    let (mut hive, leader, children) = hive_with_a_family(&["on_shutdown = \"keep\""]).await;
    let _job = hive.submit(delete_body("worker-1", Some(1500))).await;
    wait_until("the leader obeyed SIGTERM", PATIENCE, || !pid_alive(leader)).await;
    hive.signal(Signal::SIGTERM);
    assert_eq!(
        hive.wait_exit(PATIENCE).and_then(|s| s.code()),
        Some(0),
        "the hive exits"
    );
    assert!(all_gone(&children), "no child of a deleted worker is left");
    hive.restart();
    let listed = hive.workers().await;
    assert!(
        listed.is_empty(),
        "not listed, not lost: {listed:#?}\n{}",
        hive.log()
    );
}

#[tokio::test]
async fn a_spawn_cut_by_a_keep_shutdown_does_not_come_back_lost() {
    let mut hive = TestHive::builder()
        .config("on_shutdown = \"keep\"\nstop_grace_ms = 500")
        .config(&demo_worker_type(
            "slow-family",
            &[
                "--start-delay-ms",
                "60000",
                "--children",
                "2",
                "--children-ignore-sigterm",
            ],
            120.0,
        ))
        .start()
        .await;
    let job = hive.submit(spawn_body("slow-family")).await;
    hive.stream_until(&job, |l| l.contains("worker_spawn_process"))
        .await;
    let pid = pid_of(&hive.worker("worker-1").await.expect("starting"));
    let children = children_of(pid).await;
    hive.signal(Signal::SIGTERM);
    assert_eq!(hive.wait_exit(PATIENCE).and_then(|s| s.code()), Some(0));
    assert!(
        !pid_alive(pid) && all_gone(&children),
        "a cancelled spawn leaves no process"
    );
    hive.restart();
    assert!(hive.workers().await.is_empty(), "not listed, not lost");
}

// Defect 3: success was reported before it was durable.
#[tokio::test]
async fn what_a_done_acknowledges_is_on_disk_when_the_hive_is_killed_right_after() {
    let mut hive = TestHive::start().await;
    for round in 1..=10 {
        let id = format!("worker-{round}");
        assert_done(&hive.run_job(spawn_body("demo")).await);
        hive.kill_hard();
        let saved = hive.state_file();
        let worker = saved["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == id.as_str())
            .unwrap_or_else(|| {
                panic!("round {round}: the acknowledged {id} is not saved: {saved}")
            });
        assert_eq!(worker["status"], "Ready", "round {round}: {saved}");
        hive.restart();
        assert_eq!(hive.worker(&id).await.expect("adopted")["status"], "Ready");
        // Every other round, delete it and check that the removal is on disk too.
        if round % 2 == 0 {
            assert_done(&hive.run_job(delete_body(&id, Some(10_000))).await);
            hive.kill_hard();
            assert!(
                !hive.saved_worker_ids().contains(&id),
                "round {round}: the deleted {id} is still saved"
            );
            hive.restart();
            assert!(hive.worker(&id).await.is_none(), "{id} came back");
        }
    }
}

#[tokio::test]
async fn a_hive_killed_during_a_spawn_never_hands_out_the_same_id_again() {
    let mut hive = TestHive::with_config(&[&slow_start_type("slowish", 1500, 30.0)]).await;
    let job = hive.submit(spawn_body("slowish")).await;
    hive.stream_until(&job, |l| l.contains("worker_spawn_process"))
        .await;
    hive.kill_hard();
    let log = hive.state_dir().join("workers/worker-1.log");
    hive.restart();
    // The half-started worker is found again and becomes ready.
    let adopted = hive
        .wait_for_worker("worker-1", PATIENCE, |r| r["status"] == "Ready")
        .await;
    assert!(pid_alive(pid_of(&adopted)));
    std::fs::write(&log, "written by worker-1\n").unwrap();
    let next = hive.spawn_ready("demo").await;
    assert_eq!(next["id"], "worker-2");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "written by worker-1\n",
        "the new worker opened another worker's log"
    );
}

#[tokio::test]
async fn a_worker_started_just_before_a_crash_is_found_by_its_marker() {
    let (mut hive, record) = TestHive::killed_with_a_worker().await;
    // As if the hive had died between starting the process and saving its pid.
    let path = hive.state_dir().join("workers.json");
    let mut state = hive.state_file();
    let worker = &mut state["workers"][0];
    worker["pid"] = json!(0);
    worker["pgid"] = json!(0);
    worker["start_ticks"] = Value::Null;
    worker["status"] = json!("Starting");
    worker["ready_at"] = Value::Null;
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    hive.restart();
    let adopted = hive
        .wait_for_worker("worker-1", PATIENCE, |r| r["status"] == "Ready")
        .await;
    assert_eq!(adopted["pid"], record["pid"]);
    assert_done(&hive.run_job(delete_body("worker-1", Some(10_000))).await);
    assert!(!pid_alive(pid_of(&record)));
}

#[tokio::test]
async fn a_lost_state_file_does_not_make_ids_or_logs_reused() {
    let (mut hive, first) = TestHive::killed_with_a_worker().await;
    // Held still (not ended): with no hive to heartbeat to, it would write its complaints
    // into the log this test compares, at any moment.
    signal_pid(pid_of(&first), Signal::SIGSTOP);
    std::fs::remove_file(hive.state_dir().join("workers.json")).unwrap();
    let log = hive.state_dir().join("workers/worker-1.log");
    std::fs::write(&log, "worker-1's output\n").unwrap();
    hive.restart();
    let second = hive.spawn_ready("demo").await;
    assert_eq!(second["id"], "worker-2");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "worker-1's output\n"
    );
    // Nothing tells this hive about worker-1 any more: the test stops it.
    signal_pid(pid_of(&first), Signal::SIGKILL);
    wait_until("the forgotten worker is gone", PATIENCE, || {
        !pid_alive(pid_of(&first))
    })
    .await;
}

// Defect 4: a stop could not be cut short once the leader had exited.
#[tokio::test]
async fn a_second_delete_cuts_the_grace_short_after_the_leader_exited() {
    let (hive, leader, children) = hive_with_a_family(&[]).await;
    let first = hive.submit(delete_body("worker-1", Some(3_600_000))).await;
    wait_until("the leader obeyed SIGTERM", PATIENCE, || !pid_alive(leader)).await;
    assert!(!all_gone(&children), "the children ignore SIGTERM");
    assert_done(&hive.run_job(delete_body("worker-1", Some(0))).await);
    assert!(all_gone(&children));
    let first = hive.stream_lines(&first).await;
    assert_line(&first, "worker_delete_sigkill");
    assert_done(&first);
    assert!(hive.workers().await.is_empty());
}

#[tokio::test]
async fn a_second_sigterm_cuts_a_shutdown_short_after_the_leader_exited() {
    let (mut hive, leader, children) = hive_with_a_family(&["stop_grace_ms = 3600000"]).await;
    hive.signal(Signal::SIGTERM);
    wait_until("the leader obeyed SIGTERM", PATIENCE, || !pid_alive(leader)).await;
    assert!(!all_gone(&children), "the children ignore SIGTERM");
    hive.signal(Signal::SIGTERM);
    assert_eq!(hive.wait_exit(PATIENCE).and_then(|s| s.code()), Some(0));
    assert!(all_gone(&children));
}

#[tokio::test]
async fn a_second_sigterm_during_a_long_delete_ends_the_hive_without_the_grace() {
    let mut hive = TestHive::with_config(&[&stubborn_type()]).await;
    let record = hive.spawn_ready("stubborn").await;
    let job = hive.submit(delete_body("worker-1", Some(3_600_000))).await;
    hive.stream_until(&job, |l| l.contains("worker_delete_sigterm"))
        .await;
    // Both signals before the shutdown has reached its workers: the second one must still
    // cut the delete's hour of grace short.
    hive.signal(Signal::SIGTERM);
    hive.signal(Signal::SIGTERM);
    assert_eq!(hive.wait_exit(PATIENCE).and_then(|s| s.code()), Some(0));
    assert!(!pid_alive(pid_of(&record)));
}

// Defect 1, the group id taken over: a group that emptied while the hive was down may be
// someone else's by the time it starts again.
#[tokio::test]
async fn a_group_id_taken_by_another_program_while_the_hive_was_down_is_never_signalled() {
    let (mut hive, record) = TestHive::killed_with_a_worker().await;
    signal_pid(pid_of(&record), Signal::SIGKILL);
    wait_until("the worker is gone", PATIENCE, || {
        !pid_alive(pid_of(&record))
    })
    .await;
    // Another program's group whose leader has exited: `sh` leads a new session and group,
    // starts `sleep` in it, and exits.
    let output = std::process::Command::new("setsid")
        .args(["sh", "-c", "sleep 86400 >/dev/null 2>&1 & echo $$"])
        .output()
        .expect("setsid");
    let group: u32 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    wait_until("the foreign group's leader is gone", PATIENCE, || {
        !pid_alive(group)
    })
    .await;
    let stranger = group_members(group);
    assert_eq!(stranger.len(), 1, "the foreign group is its sleep");
    // The state file says the worker's group is that group (as if the id had been reused).
    let path = hive.state_dir().join("workers.json");
    let mut state = hive.state_file();
    state["workers"][0]["pid"] = json!(group);
    state["workers"][0]["pgid"] = json!(group);
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    hive.restart();
    let worker = hive.worker("worker-1").await.expect("listed");
    assert_eq!(worker["status"], json!({"Failed": {"reason": "lost"}}));
    assert_done(&hive.run_job(delete_body("worker-1", Some(0))).await);
    let survived = pid_alive(stranger[0]);
    signal_pid(stranger[0], Signal::SIGKILL);
    assert!(survived, "another program's process was signalled");
}

// Defect 5: a readiness answer from someone else counted.
#[tokio::test]
async fn a_health_answer_from_another_program_does_not_make_a_worker_ready() {
    let hive = TestHive::with_config(&[&slow_start_type("mute", 600_000, 6.0)]).await;
    let job = hive.submit(spawn_body("mute")).await;
    let lines = hive
        .stream_until(&job, |l| l.contains("worker_spawn_process"))
        .await;
    let port = lines
        .iter()
        .find_map(|l| {
            l.split(" on port ")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u16>()
                .ok()
        })
        .expect("port in the process line");
    // Another program (this test) answers the worker's health checks on its port.
    let impostor = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the worker has not bound its port yet");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = impostor.accept().await {
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await;
        }
    });
    let lines = hive.stream_lines(&job).await;
    assert_no_line(&lines, "worker_spawn_ready");
    let error = error_line(&lines);
    assert!(
        error.starts_with("[ERROR] worker-1 was not ready within 6s and was stopped")
            && error.contains(&format!(
                "port {port} is held by pid {}",
                std::process::id()
            )),
        "{error}"
    );
}

// Defect 6: devices were not checked.
#[tokio::test]
async fn a_spawn_must_name_a_device_the_hive_has() {
    let gpu_demo = demo_worker_type("cuda", &[], 30.0) + "device = \"gpu\"\n";
    let unchecked = demo_worker_type("anywhere", &[], 30.0) + "device_check = false\n";
    let cpu_only = TestHive::with_config(&[&gpu_demo, &unchecked]).await;
    let spawn = |worker: &str, device: u32| json!({"operation": "worker_spawn", "hive_id": "localhost", "model": "m", "worker": worker, "device": device});
    let lines = cpu_only.run_job(spawn("demo", 5)).await;
    assert!(
        error_line(&lines).starts_with(
            "[ERROR] device CPU-5 does not exist on this hive for worker type 'demo' (its cpu devices: CPU-0)"
        ),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains("worker_spawn_process")));
    let lines = cpu_only.run_job(spawn("cuda", 0)).await;
    assert!(
        error_line(&lines).contains("(this hive detects no gpu device)"),
        "{lines:#?}"
    );
    assert_done(&cpu_only.run_job(spawn("anywhere", 7)).await);
    assert_eq!(
        cpu_only.worker("worker-1").await.unwrap()["device"],
        "CPU-7"
    );
    assert_eq!(cpu_only.workers().await.len(), 1, "nothing else started");

    let two_gpus = TestHive::builder().config(&gpu_demo).gpus(2).start().await;
    let lines = two_gpus.run_job(spawn("cuda", 2)).await;
    assert!(
        error_line(&lines).contains("(its gpu devices: GPU-0, GPU-1)"),
        "{lines:#?}"
    );
    assert_done(&two_gpus.run_job(spawn("cuda", 1)).await);
    assert_eq!(two_gpus.workers().await[0]["device"], "GPU-1");
}

// Defect 7: worker logs piled up.
#[tokio::test]
async fn logs_of_removed_workers_are_pruned_beyond_the_configured_number() {
    let hive = TestHive::with_config(&["worker_logs_keep = 2"]).await;
    for round in 1..=5 {
        hive.spawn_ready("demo").await;
        let id = format!("worker-{round}");
        assert_done(&hive.run_job(delete_body(&id, Some(10_000))).await);
    }
    hive.spawn_ready("demo").await;
    let logs = hive.state_dir().join("workers");
    let names = || {
        let mut names: Vec<String> = std::fs::read_dir(&logs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    wait_until("only the kept logs are left", PATIENCE, || {
        names() == ["worker-4.log", "worker-5.log", "worker-6.log"]
    })
    .await;
}

#[tokio::test]
async fn a_run_the_state_file_does_not_name_is_stopped_by_the_next_hive() {
    use std::os::unix::process::CommandExt;
    let (mut hive, recorded) = TestHive::killed_with_a_worker().await;
    // As if the hive had been killed after starting worker-2 and before the save that names
    // it (a worker starts while its reservation is being saved): a process with worker-2's
    // marker and its log, and no record.
    let instance = hive.state_file()["instance"]
        .as_str()
        .expect("the instance is saved")
        .to_owned();
    std::fs::write(hive.state_dir().join("workers/worker-2.log"), "").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut unrecorded = std::process::Command::new(rbee_hive_e2e::binaries::program("rbee-hive"))
        .args(["demo-worker", "--worker-id", "worker-2", "--port"])
        .arg(port.to_string())
        .env("RBEE_HIVE_WORKER", format!("{instance}/worker-2"))
        .env("RBEE_TEST_TAG", &hive.tag)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    wait_until("the unrecorded run listens", PATIENCE, || !port_free(port)).await;
    hive.restart();
    // Its spawn was never acknowledged: it is stopped, not adopted, and nothing else is.
    let status = wait_for(
        with_context("the unrecorded run exits", || hive.log()),
        PATIENCE,
        || std::future::ready(unrecorded.try_wait().unwrap()),
        Option::is_some,
    )
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "it exited on SIGTERM: {status:?}");
    assert!(
        hive.log().contains("stopping worker-2"),
        "the hive says so: {}",
        hive.log()
    );
    assert!(hive.worker("worker-2").await.is_none(), "not listed");
    let adopted = hive.worker("worker-1").await.unwrap();
    assert_eq!(
        adopted["pid"], recorded["pid"],
        "the recorded worker is adopted"
    );
    assert!(pid_alive(pid_of(&recorded)));
    // Its id is not handed out again.
    let next = hive.spawn_ready("demo").await;
    assert_eq!(next["id"], "worker-3");
}

#[tokio::test]
async fn workers_spawned_right_after_a_restart_are_never_taken_for_unrecorded_runs() {
    // The start-up scan for runs the state file does not name runs in the background; the
    // workers spawned meanwhile carry the same marker prefix and must be left alone.
    let (mut hive, _) = TestHive::killed_with_a_worker().await;
    hive.restart();
    let spawns = (0..6).map(|_| hive.spawn_ready("demo"));
    let spawned = futures::future::join_all(spawns).await;
    // The log holds both hives' lines: the second scan is the restarted hive's.
    wait_until(
        "the restarted hive's start-up scan is over",
        PATIENCE,
        || hive.log().matches("start-up scan: 0 run(s)").count() >= 2,
    )
    .await;
    for worker in spawned {
        let id = worker["id"].as_str().unwrap();
        let now = hive.worker(id).await.unwrap();
        assert_eq!(now["status"], "Ready", "{now:#}\n{}", hive.log());
        assert!(pid_alive(pid_of(&worker)));
    }
    assert!(
        !hive.log().contains("its spawn was never acknowledged"),
        "{}",
        hive.log()
    );
}
