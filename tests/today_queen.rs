//! Today's rbee queen and this hive (issue 22, PROTOCOL §9): registration with backoff and
//! the 15 s rule, discovery, the telemetry the queen reads (held against strict copies of its
//! types), and the URL the hive's workers are given. The queen is `FakeQueen`
//! (tests/support/queen.rs), which parses with the upstream's own types and client.

use std::time::{Duration, Instant};

use rbee_hive_e2e::openmetrics::value;
use rbee_hive_e2e::queen::upstream::{HiveHeartbeatEvent, ProcessStats};
use rbee_hive_e2e::queen::{FakeQueen, ReadyAnswer};
use rbee_hive_e2e::sse::{Event, read_until};
use rbee_hive_e2e::wait::{holds_for, wait_for, wait_until};
use rbee_hive_e2e::{TestHive, delete_body, demo_worker_type, pid_of, port_of, spawn_body};
use serde_json::{Value, json};

const HIVE_ID: &str = "gpu-box";

/// A port nothing listens on now (bound, then released), for a queen that is not up yet.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A hive with id [`HIVE_ID`] that registers with `queen_url`, telemetry every 200 ms.
async fn hive_for_queen(queen_url: &str) -> TestHive {
    TestHive::builder()
        .hive_id(HIVE_ID)
        .config(&format!("queen_url = {queen_url:?}"))
        .config("telemetry_interval_ms = 200")
        .start()
        .await
}

/// The events of the stream at `path`, read until `until` holds for one (that one last).
async fn events_until(hive: &TestHive, path: &str, until: impl Fn(&Event) -> bool) -> Vec<Event> {
    let mut body = hive.get(path).await.bytes_stream();
    read_until(&mut body, &mut String::new(), until).await
}

/// A ready worker of `worker_type` on a hive whose id is [`HIVE_ID`].
async fn spawn_ready(hive: &TestHive, worker_type: &str) -> Value {
    let mut body = spawn_body(worker_type);
    body["hive_id"] = json!(HIVE_ID);
    hive.spawn_ready_with(body).await
}

async fn queen_report(hive: &TestHive) -> Value {
    hive.get_json("/v1/queen").await
}

#[tokio::test]
async fn registers_with_backoff_until_the_queen_is_up_and_the_queen_sees_its_workers() {
    let port = free_port();
    let queen_url = format!("http://127.0.0.1:{port}");
    let hive = hive_for_queen(&queen_url).await;
    // Nobody listens yet: the first try at once, the next after 2 s.
    let report = wait_for(
        "two failed registrations",
        Duration::from_secs(20),
        || queen_report(&hive),
        |r| r["queens"][0]["failures"].as_u64() >= Some(2),
    )
    .await;
    assert_eq!(report["queens"][0]["queen_url"], queen_url.as_str());
    assert_eq!(report["queens"][0]["source"], "configured");
    assert_eq!(report["queens"][0]["last_registration"]["ok"], false);
    let metrics = hive.metrics().await;
    let failed = value(
        &metrics,
        "rbee_hive_queen_registrations_total",
        &[("outcome", "failed")],
    );
    assert!(failed >= Some(2.0), "{failed:?}");
    assert!(hive.log().contains("next try in 2 s"), "{}", hive.log());

    let queen = FakeQueen::start_on(port).await;
    let registrations = queen
        .wait_for_registrations(1, Duration::from_secs(30))
        .await;
    assert_eq!(registrations[0].hive_id, HIVE_ID);
    let key_path = registrations[0]
        .hive_url
        .strip_prefix(&format!("http://{}", hive.addr))
        .expect("the hive_url is the hive's own address")
        .to_owned();
    let subscriptions = queen
        .wait_for_open_subscriptions(1, Duration::from_secs(10))
        .await;
    assert_eq!(
        subscriptions[0].path,
        format!("{key_path}/v1/heartbeats/stream")
    );
    let report = wait_for(
        "the hive counts the queen's subscription",
        Duration::from_secs(10),
        || queen_report(&hive),
        |r| r["queens"][0]["subscriptions_open"] == 1,
    )
    .await;
    assert_eq!(report["queens"][0]["last_registration"]["ok"], true);
    assert_eq!(report["queens"][0]["failures"], 0);
    let metrics = hive.metrics().await;
    assert_eq!(
        value(&metrics, "rbee_hive_queen_subscriptions", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &metrics,
            "rbee_hive_queen_registrations_total",
            &[("outcome", "ok")]
        ),
        Some(1.0)
    );
    let status = hive.cli().arg("status").output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains(&format!("queen {queen_url} (configured): registered at"))
            && status.contains("; subscribed"),
        "{status}"
    );

    let check = hive.run_job(json!({"operation": "hive_check"})).await;
    assert!(
        check.iter().any(|l| l.contains(&format!(
            "hive_check_queen: ✅ queen: {queen_url} registered, 1 subscription(s) open"
        ))),
        "{check:#?}"
    );

    // A worker the hive runs is in the queen's list, as the queen names it.
    let worker = spawn_ready(&hive, "demo").await;
    let seen = queen
        .wait_for_worker(HIVE_ID, pid_of(&worker), Duration::from_secs(10))
        .await;
    assert_eq!(seen.group, "demo");
    assert_eq!(seen.instance, port_of(&worker).to_string());
    assert_eq!(seen.model.as_deref(), worker["model_id"].as_str());
    assert!(seen.rss_mb > 0, "{seen:?}");
    let view = queen.hive(HIVE_ID);
    assert_eq!(view.workers_dropped, 0, "{:?}", view.last_worker_drop);
    assert_eq!(
        view.worker_ids,
        [format!("demo-{}", port_of(&worker))],
        "{view:?}"
    );
    // And out of it once deleted.
    let mut delete = delete_body(worker["id"].as_str().unwrap(), None);
    delete["hive_id"] = json!(HIVE_ID);
    let lines = hive.run_job(delete).await;
    assert_eq!(
        lines.last().map(String::as_str),
        Some("[DONE]"),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("[ERROR]")),
        "{lines:#?}"
    );
    queen
        .wait_for_hive(
            "the worker left the queen's list",
            HIVE_ID,
            Duration::from_secs(10),
            |v| v.workers.is_empty(),
        )
        .await;
    queen.stop().await;
}

#[tokio::test]
async fn a_restarted_queen_hears_from_the_hive_again_and_never_twice_while_subscribed() {
    let queen = FakeQueen::start().await;
    let port = queen.port();
    let hive = hive_for_queen(&queen.url()).await;
    queen
        .wait_for_open_subscriptions(1, Duration::from_secs(10))
        .await;
    // Longer than the 15 s rule: while the subscription is open, no second registration
    // (each would give the queen one more subscription).
    holds_for(
        "one registration while the queen's subscription is open",
        Duration::from_secs(17),
        || {
            (
                queen.registrations().len(),
                queen.open_subscriptions().len(),
            )
        },
        |seen| *seen == (1, 1),
    )
    .await;

    // The queen restarts and forgets every hive.
    queen.stop().await;
    let stopped = Instant::now();
    wait_for(
        "the hive saw the subscription close",
        Duration::from_secs(10),
        || queen_report(&hive),
        |r| r["queens"][0]["subscriptions_open"] == 0,
    )
    .await;
    let queen = FakeQueen::start_on(port).await;
    queen
        .wait_for_registrations(1, Duration::from_secs(20))
        .await;
    queen
        .wait_for_open_subscriptions(1, Duration::from_secs(5))
        .await;
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "registered again {took:?} after the queen went away"
    );
    holds_for(
        "still one registration and one subscription",
        Duration::from_secs(2),
        || {
            (
                queen.registrations().len(),
                queen.open_subscriptions().len(),
            )
        },
        |seen| *seen == (1, 1),
    )
    .await;
    queen.stop().await;
}

#[tokio::test]
async fn a_hive_killed_and_restarted_is_found_again_by_the_queen_without_a_second_subscription() {
    let queen = FakeQueen::start().await;
    let mut hive = TestHive::builder()
        .hive_id(HIVE_ID)
        .port(free_port())
        .config(&format!("queen_url = {:?}", queen.url()))
        .config("telemetry_interval_ms = 200")
        .start()
        .await;
    queen
        .wait_for_open_subscriptions(1, Duration::from_secs(10))
        .await;
    // SIGKILL right after the registration was acknowledged and subscribed: the queen keeps
    // trying its subscription every 5 s; the next hive, on the same port, must not add one.
    hive.kill_hard();
    hive.restart();
    queen
        .wait_for_open_subscriptions(1, Duration::from_secs(15))
        .await;
    holds_for(
        "one registration, one subscription, after the hive's restart",
        Duration::from_secs(14),
        || {
            (
                queen.registrations().len(),
                queen.open_subscriptions().len(),
            )
        },
        |seen| *seen == (1, 1),
    )
    .await;
    let report = queen_report(&hive).await;
    assert_eq!(report["queens"][0]["subscriptions_open"], 1, "{report}");
    queen.stop().await;
}

#[tokio::test]
async fn a_registration_no_subscription_followed_is_made_again_after_fifteen_seconds() {
    let queen = FakeQueen::builder()
        .ready_answer(ReadyAnswer::Status(503))
        .start()
        .await;
    let hive = hive_for_queen(&queen.url()).await;
    queen
        .wait_for_registrations(2, Duration::from_secs(10))
        .await;
    // A queen that says ok but never subscribes (it lost the hive_url, say).
    queen.set_ready_answer(ReadyAnswer::Status(200));
    let answered_ok = |queen: &FakeQueen| {
        queen
            .registrations()
            .into_iter()
            .filter(|r| r.answer == ReadyAnswer::Status(200))
            .map(|r| r.at)
            .collect::<Vec<_>>()
    };
    wait_until(
        "a registration answered ok",
        Duration::from_secs(20),
        || !answered_ok(&queen).is_empty(),
    )
    .await;
    wait_until("the next one", Duration::from_secs(25), || {
        answered_ok(&queen).len() >= 2
    })
    .await;
    let times = answered_ok(&queen);
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_secs(14),
        "registered again {gap:?} after a success"
    );
    drop(hive);
    queen.stop().await;
}

#[tokio::test]
async fn discovery_registers_with_the_asking_queen_unless_the_token_says_otherwise() {
    let queen = FakeQueen::start().await;
    let asked = format!("/capabilities?queen_url={}", percent_encode(&queen.url()));

    // No token, loopback only: the queen that asks is registered with.
    let open = TestHive::with_config(&["hive_id = \"open\"", "telemetry_interval_ms = 200"]).await;
    let plain = open.get_json("/capabilities").await;
    assert_eq!(open.get_json(&asked).await, plain);
    queen
        .wait_for_hive(
            "the open hive subscribed",
            "open",
            Duration::from_secs(10),
            |v| v.open_connections == 1,
        )
        .await;
    let report = queen_report(&open).await;
    assert_eq!(report["queens"][0]["source"], "discovered");
    // Asked again: still one registration, the queen already has it.
    open.get_json(&asked.replace("/capabilities", "/v1/capabilities"))
        .await;
    holds_for(
        "one registration of the open hive",
        Duration::from_secs(1),
        || {
            queen
                .registrations()
                .iter()
                .filter(|r| r.hive_id == "open")
                .count()
        },
        |n| *n == 1,
    )
    .await;
    // Not an http URL: ignored, the answer unchanged.
    let junk = open
        .get_json("/capabilities?queen_url=ftp%3A%2F%2Fqueen")
        .await;
    assert_eq!(junk, plain);
    assert!(
        open.log().contains("ignoring the queen_url"),
        "{}",
        open.log()
    );

    // A token and `telemetry_public`: the queen's request, which has no token, is refused
    // and registers nothing; the operator's, with the token, registers.
    let guarded = TestHive::builder()
        .token("s3cret")
        .config("hive_id = \"guarded\"")
        .config("telemetry_public = true")
        .start()
        .await;
    let anonymous = reqwest::get(guarded.url(&asked)).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    guarded.get_json(&asked).await;
    queen
        .wait_for_hive(
            "the guarded hive subscribed",
            "guarded",
            Duration::from_secs(10),
            |v| v.open_connections == 1,
        )
        .await;

    // A token without `telemetry_public`: the queen could not read the stream, so the hive
    // does not register and says why.
    let closed = TestHive::builder()
        .token("s3cret")
        .config("hive_id = \"closed\"")
        .start()
        .await;
    closed.get_json(&asked).await;
    let report = queen_report(&closed).await;
    assert!(
        report["not_registering"]
            .as_str()
            .is_some_and(|why| why.contains("telemetry_public")),
        "{report}"
    );
    holds_for(
        "no registration of the closed hive",
        Duration::from_secs(1),
        || {
            queen
                .registrations()
                .iter()
                .filter(|r| r.hive_id == "closed")
                .count()
        },
        |n| *n == 0,
    )
    .await;
    queen.stop().await;
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every field the queen requires of a worker, and its JSON type there
/// (`ProcessStats`, monitor/src/lib.rs): `u` an unsigned integer, `f` any number, `s` a
/// string, `s?` a string or null.
const WORKER_FIELDS: &[(&str, &str)] = &[
    ("pid", "u"),
    ("group", "s"),
    ("instance", "s"),
    ("cpu_pct", "f"),
    ("rss_mb", "u"),
    ("io_r_mb_s", "f"),
    ("io_w_mb_s", "f"),
    ("uptime_s", "u"),
    ("gpu_util_pct", "f"),
    ("vram_mb", "u"),
    ("total_vram_mb", "u"),
    ("model", "s?"),
];

fn has_json_type(value: &Value, kind: &str) -> bool {
    match kind {
        "u" => value.is_u64(),
        "f" => value.is_number(),
        "s" => value.is_string(),
        "s?" => value.is_string() || value.is_null(),
        _ => unreachable!("a kind of WORKER_FIELDS"),
    }
}

#[tokio::test]
async fn the_heartbeat_holds_to_the_queens_types_field_by_field() {
    let hive = TestHive::builder()
        .hive_id(HIVE_ID)
        .config("telemetry_interval_ms = 200")
        .config(&demo_worker_type("writer", &[], 10.0))
        .start()
        .await;
    let worker = spawn_ready(&hive, "writer").await;
    let body = events_until(&hive, "/v1/heartbeats/stream", |event| {
        event.event.as_deref() == Some("heartbeat")
            && serde_json::from_str::<Value>(&event.data)
                .is_ok_and(|d| d["workers"].as_array().is_some_and(|w| !w.is_empty()))
    })
    .await;
    let heartbeat: &Event = body.last().unwrap();
    let data: Value = serde_json::from_str(&heartbeat.data).unwrap();

    // The message as the queen parses it: every worker kept.
    let HiveHeartbeatEvent::Telemetry {
        hive_id,
        timestamp,
        workers,
        ..
    } = serde_json::from_value(data.clone()).expect("the queen takes the message");
    assert_eq!(hive_id, HIVE_ID);
    chrono::DateTime::parse_from_rfc3339(&timestamp).expect("an RFC 3339 timestamp");
    let parsed: Vec<ProcessStats> = workers
        .iter()
        .map(|w| serde_json::from_value(w.clone()).expect("the queen keeps the worker"))
        .collect();
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].pid, pid_of(&worker));
    assert_eq!(parsed[0].group, "writer");
    assert_eq!(parsed[0].instance, port_of(&worker).to_string());
    // A CPU worker: no GPU figures are made up.
    assert_eq!(
        (
            parsed[0].gpu_util_pct,
            parsed[0].vram_mb,
            parsed[0].total_vram_mb
        ),
        (0.0, 0, 0)
    );

    // Field by field, type by type, as the JSON says it (not only as serde reads it).
    let entry = &data["workers"][0];
    for (field, kind) in WORKER_FIELDS {
        assert!(
            has_json_type(&entry[*field], kind),
            "{field} must be {kind}: {entry}"
        );
    }
    let info = &data["hive_info"];
    assert_eq!(info["id"], HIVE_ID);
    assert_eq!(info["port"], hive.addr.port());
    assert_eq!(info["operational_status"], "ready");
    assert_eq!(info["health_status"], "healthy");
    assert!(
        info["hostname"].is_string() && info["version"].is_string(),
        "{info}"
    );
    assert_eq!(data["type"], "telemetry");

    // The worker's own events of the stream are not the queen's shape: it drops them,
    // as it should, whatever their event name.
    for event in &body {
        let parses = serde_json::from_str::<HiveHeartbeatEvent>(&event.data).is_ok();
        assert_eq!(
            parses,
            event.event.as_deref() == Some("heartbeat"),
            "{event:?}"
        );
    }
}

#[tokio::test]
async fn workers_reach_the_hive_at_the_address_it_serves() {
    // The hive on another loopback address: its workers must not be sent to 127.0.0.1.
    let hive = TestHive::builder()
        .arg("--bind")
        .arg("127.0.0.2")
        .config(&demo_worker_type(
            "chatty",
            &["--heartbeat-ms", "100"],
            10.0,
        ))
        .start()
        .await;
    assert_eq!(hive.addr.ip().to_string(), "127.0.0.2");
    let worker = hive.spawn_ready("chatty").await;
    let command = worker["command"].as_array().unwrap();
    let hive_url = command
        .iter()
        .skip_while(|part| *part != "--hive-url")
        .nth(1)
        .and_then(Value::as_str);
    assert_eq!(hive_url, Some(format!("http://{}", hive.addr).as_str()));
    hive.wait_for_worker(
        worker["id"].as_str().unwrap(),
        Duration::from_secs(10),
        |r| r["last_heartbeat"].is_string(),
    )
    .await;

    // `advertise_url` wins: the worker is told that URL (here, the same hive by another name).
    let advertised = format!("http://localhost:{}", free_port());
    let hive = TestHive::builder()
        .arg("--advertise-url")
        .arg(&advertised)
        .config(&demo_worker_type("chatty", &[], 10.0))
        .start()
        .await;
    let worker = hive.spawn_ready("chatty").await;
    let told = worker["command"]
        .as_array()
        .unwrap()
        .iter()
        .skip_while(|part| *part != "--hive-url")
        .nth(1)
        .cloned();
    assert_eq!(told, Some(json!(advertised)));
}
