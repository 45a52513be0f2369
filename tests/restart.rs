//! Restart policies (issue 14, item 4): a worker type with `restart = "on-failure"` has its
//! failed workers started again with the same id and port after an exponential backoff,
//! until `max_restarts` failures in `restart_window_s` make it a crash loop; never after a
//! delete or during a shutdown; a restart that was due when the hive died is made by the
//! next hive; each run's output stays in the log.

use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use rbee_hive_e2e::lines::{assert_done, assert_line};
use rbee_hive_e2e::openmetrics::value;
use rbee_hive_e2e::os::{pid_alive, port_free, signal_pid};
use rbee_hive_e2e::sse::events;
use rbee_hive_e2e::wait::{holds_for, wait_for, wait_until};
use rbee_hive_e2e::{TestHive, crashing_type, demo_worker_type, pid_of};
use serde_json::{Value, json};

/// A worker type `name` that runs the demo worker, becomes ready, and exits with code 3
/// `exit_after_ms` later, with its restart policy.
fn crashing_with(name: &str, exit_after_ms: u64, policy: &str) -> String {
    format!("{}{policy}\n", crashing_type(name, exit_after_ms, 3))
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .unwrap_or_else(|| panic!("a time, not {value}"))
        .parse()
        .unwrap()
}

fn failed_reason(record: &Value) -> String {
    record["status"]["Failed"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The state file's record of worker `id` (null if it has none).
fn saved(hive: &TestHive, id: &str) -> Value {
    hive.state_file()["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until the state file's record of worker `id` satisfies `check`; returns it.
async fn saved_record(hive: &TestHive, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_for(
        &format!("the state file holds the expected record of {id}"),
        Duration::from_secs(20),
        || std::future::ready(saved(hive, id)),
        check,
    )
    .await
}

/// How long from now until `time` (nothing if it has passed).
fn until(time: DateTime<Utc>) -> Duration {
    (time - Utc::now()).to_std().unwrap_or_default()
}

/// A hive with the `crashing_with(name, 200, policy)` type, killed once its worker's first
/// run has failed and the state file says that a restart waits: the hive, the worker's
/// first record and its saved record.
async fn killed_while_a_restart_waits(name: &str, policy: &str) -> (TestHive, Value, Value) {
    let mut hive = TestHive::with_config(&[&crashing_with(name, 200, policy)]).await;
    let first = hive.spawn_ready(name).await;
    let id = first["id"].as_str().unwrap();
    let waiting = saved_record(&hive, id, |r| r.get("restart_at").is_some()).await;
    hive.kill_hard();
    (hive, first, waiting)
}

/// Deletes worker `id`; its job's lines, which end with `[DONE]`.
async fn delete(hive: &TestHive, id: &str) -> Vec<String> {
    let lines = hive.delete_worker(id).await;
    assert_done(&lines);
    lines
}

#[tokio::test]
async fn a_crash_looping_worker_is_restarted_with_backoff_until_the_limit() {
    let hive = TestHive::with_config(&[&crashing_with(
        "crashy",
        300,
        "restart = \"on-failure\"\nmax_restarts = 3\nrestart_window_s = 60\n\
         restart_backoff_ms = 200\nrestart_backoff_max_ms = 5000",
    )])
    .await;
    let telemetry = hive.get("/v1/heartbeats/stream").await;
    let first = hive.spawn_ready("crashy").await;
    let id = first["id"].as_str().unwrap().to_owned();
    let port = first["port"].as_u64().unwrap() as u16;

    let last = hive
        .wait_for_worker(&id, Duration::from_secs(60), |r| {
            failed_reason(r).starts_with("crash loop")
        })
        .await;
    let reason = failed_reason(&last);
    // Four exits: the first run and three restarts, then no more.
    assert!(
        reason.starts_with(
            "crash loop: 4 exits in 60 s (max_restarts = 3); last failure: exited with code 3"
        ),
        "{reason}"
    );
    // The last output lines of the last run are in the reason.
    assert!(
        reason.contains("exiting with code 3 after 300 ms, as asked"),
        "{reason}"
    );
    assert_eq!(last["restart_count"], 3, "{last:#}");
    assert_eq!(last["id"], id.as_str());
    assert_eq!(last["port"], port);
    assert_eq!(last["exit"]["code"], 3);
    assert!(last.get("restart_at").is_none(), "{last:#}");

    // The backoff is in the timestamps: each restart was due 200 ms × 2^n after the run
    // before it ended, and each run started no sooner.
    let runs = last["past_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{last:#}");
    let mut starts: Vec<DateTime<Utc>> = runs[1..].iter().map(|r| time(&r["started_at"])).collect();
    starts.push(time(&last["run_started_at"]));
    let mut pids: Vec<u32> = runs
        .iter()
        .map(|r| r["pid"].as_u64().unwrap() as u32)
        .collect();
    pids.push(pid_of(&last));
    for (n, run) in runs.iter().enumerate() {
        let ended = time(&run["exit"]["at"]);
        let due = time(&run["restart_at"]);
        let backoff = chrono::Duration::milliseconds(200 << n);
        assert!(due - ended >= backoff, "run {n}: {run:#}");
        assert!(
            starts[n] >= due,
            "run {} started before it was due: {last:#}",
            n + 1
        );
        assert_eq!(run["exit"]["code"], 3);
        assert_eq!(run["reason"], "exited with code 3");
    }
    assert_eq!(pids[0], pid_of(&first));
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 4, "each run is a new process: {pids:?}");
    assert!(pids.iter().all(|p| !pid_alive(*p)), "{pids:?}");
    wait_until("the port is given back", Duration::from_secs(10), || {
        port_free(port)
    })
    .await;

    // Every run's output is in the log, each restart after a line of the hive's.
    let log = hive.get_text(&format!("/v1/workers/{id}/logs")).await;
    assert_eq!(
        log.matches("exiting with code 3 after 300 ms").count(),
        4,
        "{log}"
    );
    for restart in 1..=3 {
        assert!(
            log.contains(&format!("==== rbee-hive: {id} restart {restart} at ")),
            "{log}"
        );
    }

    let samples = hive.metrics().await;
    let by_type = [("worker_type", "crashy")];
    assert_eq!(
        value(&samples, "rbee_hive_worker_restarts_total", &by_type),
        Some(3.0)
    );
    assert_eq!(
        value(&samples, "rbee_hive_worker_crash_loops_total", &by_type),
        Some(1.0)
    );

    // The telemetry stream narrates it: three restarts, then the crash loop.
    let mut body = telemetry.bytes_stream();
    let mut text = String::new();
    let changes = tokio::time::timeout(Duration::from_secs(20), async {
        use futures::StreamExt;
        loop {
            let complete = text.rfind("\n\n").map_or("", |end| &text[..end + 2]);
            let changes: Vec<String> = events(complete)
                .iter()
                .filter(|e| e.event.as_deref() == Some("worker"))
                .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
                .filter(|d| d["worker"]["id"] == id.as_str())
                .map(|d| d["change"].as_str().unwrap().to_owned())
                .collect();
            if changes.last().is_some_and(|c| c == "crash_loop") {
                return changes;
            }
            let chunk = body.next().await.expect("the stream goes on").unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no crash_loop event in {text}"));
    let count = |name: &str| changes.iter().filter(|c| *c == name).count();
    assert_eq!(
        (count("restarting"), count("restarted"), count("crash_loop")),
        (3, 3, 1),
        "{changes:?}"
    );
    assert_eq!(changes[0], "spawned", "{changes:?}");
    let mut hive = hive;
    hive.signal(Signal::SIGTERM);
    hive.wait_exit(Duration::from_secs(30));
}

#[tokio::test]
async fn no_restart_after_a_delete_a_clean_exit_or_for_a_type_without_the_policy() {
    let hive = TestHive::with_config(&[
        &crashing_with(
            "patient",
            200,
            "restart = \"on-failure\"\nrestart_backoff_ms = 4000",
        ),
        &crashing_type("clean", 200, 0),
        "restart = \"on-failure\"\nrestart_backoff_ms = 100",
        &crashing_with("plain", 200, ""),
    ])
    .await;

    // A delete while the restart waits for its backoff: nothing runs again.
    let patient = hive.spawn_ready("patient").await;
    let id = patient["id"].as_str().unwrap().to_owned();
    let waiting = hive
        .wait_for_worker(&id, Duration::from_secs(20), |r| {
            r.get("restart_at").is_some()
        })
        .await;
    assert_eq!(waiting["status"], "Starting", "{waiting:#}");
    assert_eq!(waiting["exit"]["code"], 3);
    let lines = delete(&hive, &id).await;
    // The delete came during the wait, not after a restart.
    assert_line(&lines, "had already exited");
    assert!(hive.worker(&id).await.is_none());
    assert!(port_free(waiting["port"].as_u64().unwrap() as u16));

    // Exit code 0 is not a failure; a type without `restart` keeps the default, never.
    let clean = hive.spawn_ready("clean").await;
    let plain = hive.spawn_ready("plain").await;
    for (worker, status) in [
        (&clean, json!("Stopped")),
        (&plain, json!({"Failed": {"reason": "exited with code 3"}})),
    ] {
        let id = worker["id"].as_str().unwrap();
        let ended = hive
            .wait_for_worker(id, Duration::from_secs(20), |r| r["exit"].is_object())
            .await;
        assert_eq!(ended["status"], status, "{ended:#}");
        assert_eq!(ended["restart_count"], 0);
        assert!(ended.get("restart_at").is_none(), "{ended:#}");
    }

    // Absence needs a time: past the deleted worker's restart time, no process carries its
    // marker, and the others were not started again.
    let due = time(&waiting["restart_at"]);
    holds_for(
        "no worker process runs",
        until(due + chrono::Duration::milliseconds(500)),
        || hive.tagged_processes(),
        Vec::is_empty,
    )
    .await;
    assert!(hive.worker(&id).await.is_none());
    for worker in [&clean, &plain] {
        let now = hive.worker(worker["id"].as_str().unwrap()).await.unwrap();
        assert_eq!(now["restart_count"], 0, "{now:#}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_due_when_the_hive_was_killed_is_made_by_the_next_hive() {
    // Killed while the restart waits, once the wait is on disk (a restart is made only then;
    // a hive killed before that finds the worker lost).
    let (mut hive, first, waiting) = killed_while_a_restart_waits(
        "slowcrash",
        "restart = \"on-failure\"\nrestart_backoff_ms = 3000\nmax_restarts = 1",
    )
    .await;
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(hive.tagged_processes().is_empty());

    hive.restart();
    let second = hive
        .wait_for_worker(&id, Duration::from_secs(30), |r| {
            r["restart_count"] == 1 && r["status"] == "Ready"
        })
        .await;
    assert_eq!(second["port"], first["port"]);
    assert_ne!(pid_of(&second), pid_of(&first));
    assert!(time(&second["run_started_at"]) >= time(&waiting["restart_at"]));
    // Its second failure is past `max_restarts = 1`: a crash loop, and its port given back.
    let last = hive
        .wait_for_worker(&id, Duration::from_secs(30), |r| {
            failed_reason(r).starts_with("crash loop: 2 exits")
        })
        .await;
    assert!(!pid_alive(pid_of(&last)));
    wait_until("the port is given back", Duration::from_secs(10), || {
        port_free(last["port"].as_u64().unwrap() as u16)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_started_but_not_recorded_before_a_crash_is_adopted_not_started_twice() {
    let (mut hive, first, record) = killed_while_a_restart_waits(
        "onceagain",
        "restart = \"on-failure\"\nrestart_backoff_ms = 3000",
    )
    .await;
    let id = first["id"].as_str().unwrap().to_owned();
    // What a hive killed right after it started the next run, before it saved the new pid,
    // leaves: the state file says "restart pending", and the run is up, marked as the
    // worker's. This one does not exit by itself.
    let saved = hive.state_file();
    let command: Vec<String> = record["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|part| part.as_str().unwrap().to_owned())
        .take_while(|part| part != "--exit-after-ms")
        .collect();
    let marker = format!("{}/{id}", saved["instance"].as_str().unwrap());
    let mut unrecorded = std::process::Command::new(&command[0]);
    std::os::unix::process::CommandExt::process_group(&mut unrecorded, 0);
    let unrecorded = unrecorded
        .args(&command[1..])
        .env("RBEE_HIVE_WORKER", &marker)
        .env("RBEE_TEST_TAG", &hive.tag)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let unrecorded_pid = unrecorded.id();
    // Reaped by a thread: the test process is its parent, not the hive.
    std::thread::spawn(move || {
        let mut unrecorded = unrecorded;
        let _ = unrecorded.wait();
    });

    hive.restart();
    let adopted = hive
        .wait_for_worker(&id, Duration::from_secs(30), |r| r["status"] == "Ready")
        .await;
    assert_eq!(pid_of(&adopted), unrecorded_pid, "{adopted:#}");
    assert_eq!(adopted["restart_count"], 1);
    assert!(adopted.get("restart_at").is_none(), "{adopted:#}");
    assert!(hive.log().contains("found by its marker"), "{}", hive.log());
    // Past the time the restart was due, still this one process and no second run.
    let due = time(&record["restart_at"]);
    holds_for(
        "the adopted run is the one process",
        until(due + chrono::Duration::milliseconds(500)),
        || hive.tagged_processes(),
        |running| running == &[unrecorded_pid],
    )
    .await;
    delete(&hive, &id).await;
    wait_until("the adopted run is gone", Duration::from_secs(10), || {
        !pid_alive(unrecorded_pid)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hive_killed_while_stopping_what_a_failed_leader_left_still_restarts_it() {
    // The state a hive leaves when it is SIGKILLed after it saw a worker's leader exit with
    // code 3 and began stopping the child the leader left: `Failed`, the exit, and a
    // `leader_exited` stop under way. Written by hand, for both cases: the child is gone by
    // the time the next hive starts, or it still runs.
    for child_survives in [false, true] {
        let mut hive = TestHive::with_config(&[&format!(
            "{}restart = \"on-failure\"\nrestart_backoff_ms = 100\n",
            demo_worker_type("family", &["--children", "1"], 10.0)
        )])
        .await;
        let first = hive.spawn_ready("family").await;
        let id = first["id"].as_str().unwrap().to_owned();
        let leader = pid_of(&first);
        let child = wait_for_child(&hive, leader).await;
        hive.kill_hard();
        signal_pid(leader, Signal::SIGKILL);
        if !child_survives {
            signal_pid(child, Signal::SIGKILL);
        }
        wait_until("the leader is gone", Duration::from_secs(10), || {
            !pid_alive(leader)
        })
        .await;
        let path = hive.state_dir().join("workers.json");
        let mut state = hive.state_file();
        let now = Utc::now().to_rfc3339();
        let record = &mut state["workers"][0];
        record["status"] = json!({"Failed": {"reason": "exited with code 3"}});
        record["exit"] = json!({"code": 3, "signal": null, "at": now});
        record["stop"] = json!({
            "reason": "leader_exited", "grace_ms": 1000, "requested_at": now,
            "sigterm_at": null, "sigkill_at": null, "finished_at": null
        });
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();

        hive.restart();
        let again = hive
            .wait_for_worker(&id, Duration::from_secs(30), |r| {
                r["restart_count"] == 1 && r["status"] == "Ready"
            })
            .await;
        assert_eq!(
            again["past_runs"][0]["reason"], "exited with code 3",
            "{again:#}"
        );
        assert_eq!(again["port"], first["port"]);
        assert!(!pid_alive(child), "the child the leader left is stopped");
        delete(&hive, &id).await;
    }
}

/// The one child of worker leader `leader` (the demo worker's `--children 1`).
async fn wait_for_child(hive: &TestHive, leader: u32) -> u32 {
    let child = || {
        hive.tagged_processes()
            .into_iter()
            .find(|p| *p != leader && rbee_hive_e2e::os::group_members(leader).contains(p))
    };
    wait_for(
        &format!("a child of {leader} runs"),
        Duration::from_secs(10),
        || std::future::ready(child()),
        Option::is_some,
    )
    .await
    .expect("a child")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_never_restarts_stop_cancels_the_wait_and_keep_hands_it_on() {
    for policy in ["stop", "keep"] {
        let mut hive = TestHive::with_config(&[
            &format!("on_shutdown = \"{policy}\""),
            &crashing_with(
                "waits",
                200,
                "restart = \"on-failure\"\nrestart_backoff_ms = 2000",
            ),
        ])
        .await;
        let first = hive.spawn_ready("waits").await;
        let id = first["id"].as_str().unwrap().to_owned();
        hive.wait_for_worker(&id, Duration::from_secs(20), |r| {
            r.get("restart_at").is_some()
        })
        .await;
        hive.signal(Signal::SIGTERM);
        assert!(
            hive.wait_exit(Duration::from_secs(30)).is_some(),
            "{policy}: the hive did not exit"
        );
        assert!(
            hive.tagged_processes().is_empty(),
            "{policy}: a worker was started during the shutdown"
        );
        let record = saved(&hive, &id);
        assert!(record.is_object(), "{:#}", hive.state_file());
        match policy {
            "stop" => {
                assert!(record.get("restart_at").is_none(), "{record:#}");
                assert_eq!(
                    failed_reason(&record),
                    "exited with code 3; not restarted: the hive shut down"
                );
                hive.restart();
                let after = hive.worker(&id).await.unwrap();
                assert_eq!(after["restart_count"], 0, "{after:#}");
                assert!(after.get("restart_at").is_none());
            }
            _ => {
                assert!(record.get("restart_at").is_some(), "{record:#}");
                hive.restart();
                let again = hive
                    .wait_for_worker(&id, Duration::from_secs(30), |r| r["restart_count"] == 1)
                    .await;
                assert_ne!(pid_of(&again), pid_of(&first));
                // With `keep`, the hive's own shutdown at the end of the test would leave
                // this run behind: it is deleted first.
                hive.delete_worker(&id).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_turns_the_policy_on_applies_to_running_workers() {
    let hive = TestHive::with_config(&[&demo_worker_type("steady", &[], 10.0)]).await;
    let first = hive.spawn_ready("steady").await;
    let id = first["id"].as_str().unwrap().to_owned();
    let config = hive.dir.path().join("hive.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\nrestart = \"on-failure\"\nrestart_backoff_ms = 100\n"),
    )
    .unwrap();
    hive.signal(Signal::SIGHUP);
    wait_until("the reload is applied", Duration::from_secs(10), || {
        hive.log().contains("config reloaded")
    })
    .await;
    // SIGKILL from outside (an OOM kill, say) is a failure.
    signal_pid(pid_of(&first), Signal::SIGKILL);
    let again = hive
        .wait_for_worker(&id, Duration::from_secs(20), |r| {
            r["restart_count"] == 1 && r["status"] == "Ready"
        })
        .await;
    assert_eq!(
        again["past_runs"][0]["reason"],
        "killed by signal 9 (SIGKILL)"
    );
    assert_ne!(pid_of(&again), pid_of(&first));
    delete(&hive, &id).await;
    assert!(!pid_alive(pid_of(&again)));
}
