//! Self-test of the fake queen (`tests/support/queen.rs`) against a tiny SSE server written
//! here (not the hive): it must accept and refuse what today's queen accepts and refuses,
//! open one subscription per registration, unlist a hive whose connection ends and reconnect,
//! and forget everything when it is stopped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rbee_hive_e2e::queen::{FakeQueen, ReadyAnswer};
use rbee_hive_e2e::wait::{holds_for, wait_for, wait_until};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

const TIMEOUT: Duration = Duration::from_secs(10);

/// What the tiny hive tells its open streams.
#[derive(Debug, Clone)]
enum Command {
    /// Write this text (SSE lines) to every open stream.
    Send(String),
    /// Close the streams whose request path is this.
    Close(String),
}

/// One request the tiny hive received.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    /// Header lines, lowercased names.
    headers: Vec<(String, String)>,
    closed: bool,
}

/// A tiny SSE server on 127.0.0.1: answers every GET with `200 text/event-stream`, then
/// writes what the test sends, until the test closes it or the client goes away.
struct TinyHive {
    port: u16,
    commands: broadcast::Sender<Command>,
    requests: Arc<Mutex<Vec<Request>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TinyHive {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (commands, _) = broadcast::channel(64);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let commands = commands.clone();
            let requests = requests.clone();
            async move {
                loop {
                    let (socket, _) = listener.accept().await.unwrap();
                    tokio::spawn(serve(socket, commands.subscribe(), requests.clone()));
                }
            }
        });
        Self {
            port,
            commands,
            requests,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn send(&self, event: Option<&str>, data: &Value) {
        let mut text = String::new();
        if let Some(event) = event {
            text.push_str(&format!("event: {event}\n"));
        }
        text.push_str(&format!("data: {data}\n\n"));
        self.send_raw(&text);
    }

    fn send_raw(&self, text: &str) {
        self.commands.send(Command::Send(text.to_owned())).unwrap();
    }

    fn close(&self, path: &str) {
        self.commands.send(Command::Close(path.to_owned())).unwrap();
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn open_streams(&self) -> usize {
        self.requests().iter().filter(|r| !r.closed).count()
    }
}

impl Drop for TinyHive {
    fn drop(&mut self) {
        self.accept.abort();
        // The streams end when their sender is gone (the `Err` of `recv`).
    }
}

async fn serve(
    mut socket: tokio::net::TcpStream,
    mut commands: broadcast::Receiver<Command>,
    requests: Arc<Mutex<Vec<Request>>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8(head).unwrap();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap();
    let path = request_line.split(' ').nth(1).unwrap().to_owned();
    assert!(request_line.starts_with("GET "), "{request_line}");
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, value) = l.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let index = {
        let mut requests = requests.lock().unwrap();
        requests.push(Request {
            path: path.clone(),
            headers,
            closed: false,
        });
        requests.len() - 1
    };
    // No Content-Length and no chunking: the body runs until the connection closes.
    let answer =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n";
    if socket.write_all(answer.as_bytes()).await.is_ok() {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Ok(Command::Send(text)) => {
                        if socket.write_all(text.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                    Ok(Command::Close(p)) if p == path => break,
                    Ok(Command::Close(_)) => {}
                    Err(_) => break,
                },
                // The client closed its side (the queen stopped).
                read = socket.read(&mut buf) => if matches!(read, Ok(0) | Err(_)) { break },
            }
        }
    }
    requests.lock().unwrap()[index].closed = true;
}

fn worker(pid: u32, instance: &str) -> Value {
    json!({"pid": pid, "group": "llama", "instance": instance, "cpu_pct": 3.5, "rss_mb": 812,
           "io_r_mb_s": 0.0, "io_w_mb_s": 0.0, "uptime_s": 42, "gpu_util_pct": 0.0,
           "vram_mb": 0, "total_vram_mb": 0, "model": "tinyllama", "worker_id": "worker-3",
           "state": "ready"})
}

fn telemetry(hive_id: &str, workers: Vec<Value>) -> Value {
    json!({"type": "telemetry", "hive_id": hive_id,
           "hive_info": {"id": hive_id, "hostname": "box", "port": 7835,
                         "operational_status": "ready", "health_status": "healthy",
                         "version": "0.1.0"},
           "timestamp": "2026-12-07T17:20:24Z", "workers": workers})
}

async fn register(queen: &FakeQueen, hive_id: &str, hive_url: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/hive/ready", queen.url()))
        .json(&json!({"hive_id": hive_id, "hive_url": hive_url}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A queen with a fast retry, a tiny hive, and one registration whose stream is open.
async fn subscribed(hive_id: &str, retry: Duration) -> (FakeQueen, TinyHive) {
    let queen = FakeQueen::builder().retry_period(retry).start().await;
    let hive = TinyHive::start().await;
    let (status, body) = register(&queen, hive_id, &hive.url()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "ok", "message": format!("Subscribed to hive {hive_id} SSE stream")})
    );
    queen.wait_for_open_subscriptions(1, TIMEOUT).await;
    (queen, hive)
}

#[tokio::test]
async fn a_valid_message_lists_its_workers() {
    let (queen, hive) = subscribed("box", Duration::from_secs(5)).await;
    let request = &hive.requests()[0];
    assert_eq!(request.path, "/v1/heartbeats/stream");
    assert!(
        request
            .headers
            .contains(&("accept".into(), "text/event-stream".into()))
    );
    assert!(
        !request
            .headers
            .iter()
            .any(|(name, _)| name == "authorization")
    );
    assert!(queen.hive("box").listed);

    hive.send(
        Some("heartbeat"),
        &telemetry("box", vec![worker(27499, "9100"), worker(27500, "9101")]),
    );
    let stats = queen.wait_for_worker("box", 27499, TIMEOUT).await;
    assert_eq!(stats.rss_mb, 812);
    assert_eq!(stats.model.as_deref(), Some("tinyllama"));
    let view = queen.hive("box");
    assert_eq!(view.worker_ids, ["llama-9100", "llama-9101"]);
    assert_eq!(queen.worker_ids(), ["llama-9100", "llama-9101"]);
    assert_eq!((view.messages_accepted, view.messages_dropped), (1, 0));

    // Each accepted message replaces the whole list.
    hive.send(
        Some("heartbeat"),
        &telemetry("box", vec![worker(27501, "9102")]),
    );
    let view = queen
        .wait_for_hive("the list is replaced", "box", TIMEOUT, |v| {
            v.messages_accepted == 2
        })
        .await;
    assert_eq!(view.worker_ids, ["llama-9102"]);
    queen.stop().await;
}

#[tokio::test]
async fn a_message_missing_a_required_field_is_dropped() {
    let (queen, hive) = subscribed("box", Duration::from_secs(5)).await;
    hive.send(
        Some("heartbeat"),
        &telemetry("box", vec![worker(1, "9100")]),
    );
    queen.wait_for_worker("box", 1, TIMEOUT).await;

    for (n, field) in ["timestamp", "type", "hive_id", "hive_info", "workers"]
        .iter()
        .enumerate()
    {
        let mut message = telemetry("box", vec![worker(2, "9101")]);
        message.as_object_mut().unwrap().remove(*field);
        hive.send(Some("heartbeat"), &message);
        let view = queen
            .wait_for_hive(
                &format!("a message without {field} is dropped"),
                "box",
                TIMEOUT,
                |v| v.messages_dropped == n as u64 + 1,
            )
            .await;
        assert!(
            view.last_drop.as_deref().unwrap().contains(field),
            "{view:?}"
        );
        // Dropped silently: the last accepted list stays.
        assert_eq!(view.worker_ids, ["llama-9100"]);
        assert_eq!(view.messages_accepted, 1);
    }
    // A wrong JSON type drops the message too; `hive_info` may be any JSON, even null.
    let mut message = telemetry("box", vec![]);
    message["hive_id"] = json!(7);
    hive.send(None, &message);
    queen
        .wait_for_hive("a number hive_id is dropped", "box", TIMEOUT, |v| {
            v.messages_dropped == 6
        })
        .await;
    let mut message = telemetry("box", vec![worker(3, "9103")]);
    message["hive_info"] = Value::Null;
    hive.send(None, &message);
    queen.wait_for_worker("box", 3, TIMEOUT).await;
    queen.stop().await;
}

#[tokio::test]
async fn a_bad_worker_is_dropped_alone() {
    let (queen, hive) = subscribed("box", Duration::from_secs(5)).await;
    let mut fraction = worker(2, "9102");
    fraction["rss_mb"] = json!(812.5);
    let mut float_integer = worker(3, "9103");
    float_integer["uptime_s"] = json!(42.0);
    let mut pid_string = worker(4, "9104");
    pid_string["pid"] = json!("4");
    let mut group_number = worker(5, "9105");
    group_number["group"] = json!(5);
    let mut no_cpu = worker(6, "9106");
    no_cpu.as_object_mut().unwrap().remove("cpu_pct");
    // Accepted: `model` absent or null (an `Option`), an integer in a float field, extras.
    let mut no_model = worker(7, "9107");
    no_model.as_object_mut().unwrap().remove("model");
    let mut null_model = worker(8, "9108");
    null_model["model"] = Value::Null;
    let mut integer_cpu = worker(9, "9109");
    integer_cpu["cpu_pct"] = json!(3);
    hive.send(
        Some("heartbeat"),
        &telemetry(
            "box",
            vec![
                worker(1, "9101"),
                fraction,
                float_integer,
                pid_string,
                group_number,
                no_cpu,
                no_model,
                null_model,
                integer_cpu,
            ],
        ),
    );
    let view = queen
        .wait_for_hive("the message is accepted", "box", TIMEOUT, |v| {
            v.messages_accepted == 1
        })
        .await;
    let pids: Vec<u32> = view.workers.iter().map(|w| w.pid).collect();
    assert_eq!(pids, [1, 7, 8, 9], "{view:?}");
    assert_eq!(view.workers_dropped, 5);
    assert_eq!(view.workers[1].model, None);
    assert_eq!(view.workers[3].cpu_pct, 3.0);

    // The fraction alone, reported with serde's reason.
    let mut fraction = worker(2, "9102");
    fraction["rss_mb"] = json!(812.5);
    hive.send(
        Some("heartbeat"),
        &telemetry("box", vec![fraction, worker(1, "9101")]),
    );
    let view = queen
        .wait_for_hive("the second message is accepted", "box", TIMEOUT, |v| {
            v.messages_accepted == 2
        })
        .await;
    assert_eq!(view.worker_ids, ["llama-9101"]);
    assert!(
        view.last_worker_drop.as_deref().unwrap().contains("812.5"),
        "{view:?}"
    );
    queen.stop().await;
}

#[tokio::test]
async fn our_old_telemetry_shape_and_other_events_list_nothing() {
    let (queen, hive) = subscribed("box", Duration::from_secs(5)).await;
    let old = json!({"workers": [{"pid": 1, "worker_id": "w", "model": "m", "state": "ready",
                                  "cpu_pct": 0.0, "rss_mb": 1.5, "uptime_s": 3}],
                     "at": "2026-12-07T17:20:24Z"});
    hive.send(Some("telemetry"), &old);
    hive.send(Some("snapshot"), &json!({"workers": []}));
    hive.send(Some("worker"), &json!({"id": "worker-1", "state": "ready"}));
    hive.send_raw(": a comment is no message\n\n");
    let view = queen
        .wait_for_hive("three drops", "box", TIMEOUT, |v| v.messages_dropped == 3)
        .await;
    assert_eq!(view.messages_accepted, 0);
    assert!(view.workers.is_empty());
    assert!(queen.worker_ids().is_empty());
    assert!(view.listed, "the hive is listed, with no worker");

    // The event name is not looked at: telemetry under any name is accepted.
    hive.send(Some("worker"), &telemetry("box", vec![worker(1, "9100")]));
    queen.wait_for_worker("box", 1, TIMEOUT).await;
    queen.stop().await;
}

#[tokio::test]
async fn workers_are_stored_under_the_message_hive_id() {
    let (queen, hive) = subscribed("box", Duration::from_secs(5)).await;
    hive.send(None, &telemetry("other", vec![worker(1, "9100")]));
    queen.wait_for_worker("other", 1, TIMEOUT).await;
    let view = queen.hive("box");
    assert!(view.workers.is_empty());
    assert_eq!(view.last_message_hive_id.as_deref(), Some("other"));
    assert!(!queen.hive("other").listed);
    queen.stop().await;
}

#[tokio::test]
async fn two_registrations_open_two_subscriptions() {
    let queen = FakeQueen::start().await;
    let hive = TinyHive::start().await;
    assert_eq!(register(&queen, "box", &hive.url()).await.0, 200);
    assert_eq!(register(&queen, "box", &hive.url()).await.0, 200);
    let open = queen.wait_for_open_subscriptions(2, TIMEOUT).await;
    assert!(open.iter().all(|s| s.path == "/v1/heartbeats/stream"));
    wait_until("the tiny hive has two streams", TIMEOUT, || {
        hive.open_streams() == 2
    })
    .await;
    let registrations = queen.registrations();
    assert_eq!(registrations.len(), 2);
    assert!(registrations[0].peer.ip().is_loopback());

    // The stream URL is `hive_url` + "/v1/heartbeats/stream", by string concatenation.
    assert_eq!(
        register(&queen, "box", &format!("{}/q7", hive.url()))
            .await
            .0,
        200
    );
    assert_eq!(
        register(&queen, "box", &format!("{}/", hive.url())).await.0,
        200
    );
    let open = queen.wait_for_open_subscriptions(4, TIMEOUT).await;
    let mut paths: Vec<&str> = open.iter().map(|s| s.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "//v1/heartbeats/stream",
            "/q7/v1/heartbeats/stream",
            "/v1/heartbeats/stream",
            "/v1/heartbeats/stream"
        ]
    );
    assert_eq!(queen.hive("box").open_connections, 4);
    queen.stop().await;
}

#[tokio::test]
async fn a_dropped_connection_unlists_the_hive_and_the_retry_reconnects() {
    let retry = Duration::from_millis(1500);
    let (queen, hive) = subscribed("box", retry).await;
    hive.send(None, &telemetry("box", vec![worker(1, "9100")]));
    queen.wait_for_worker("box", 1, TIMEOUT).await;

    hive.close("/v1/heartbeats/stream");
    let view = queen.wait_unlisted("box", TIMEOUT).await;
    assert_eq!(view.open_connections, 0);
    assert_eq!(view.removals, 1);
    // Upstream keeps the workers of an unlisted hive until the next message.
    assert_eq!(view.worker_ids, ["llama-9100"]);

    queen.wait_for_open_subscriptions(1, TIMEOUT).await;
    queen.wait_listed("box", TIMEOUT).await;
    let attempts = queen.subscription_attempts();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(attempts[1].attempt, 2);
    let (ended, reason) = attempts[0].ended.clone().unwrap();
    assert!(
        attempts[1].started - ended >= retry,
        "retried after {:?}",
        attempts[1].started - ended
    );
    assert!(reason.contains("Stream ended"), "{reason}");
    assert_eq!(hive.requests().len(), 2);
    queen.stop().await;
}

#[tokio::test]
async fn the_end_of_either_of_two_connections_unlists_the_hive() {
    let retry = Duration::from_millis(1500);
    let (queen, hive) = subscribed("box", retry).await;
    assert_eq!(
        register(&queen, "box", &format!("{}/b", hive.url()))
            .await
            .0,
        200
    );
    queen.wait_for_open_subscriptions(2, TIMEOUT).await;

    // Upstream: `remove_hive` on the end of one loop's connection, although the other loop
    // still has its connection open.
    hive.close("/b/v1/heartbeats/stream");
    let view = queen.wait_unlisted("box", TIMEOUT).await;
    assert_eq!(view.open_connections, 1);
    // Its next attempt lists it again.
    queen.wait_for_open_subscriptions(2, TIMEOUT).await;
    queen.wait_listed("box", TIMEOUT).await;
    queen.stop().await;
}

#[tokio::test]
async fn a_refused_or_ended_stream_is_retried() {
    let retry = Duration::from_millis(300);
    let queen = FakeQueen::builder().retry_period(retry).start().await;
    // Nothing listens on this port: each attempt fails at once.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert_eq!(
        register(&queen, "gone", &format!("http://127.0.0.1:{port}"))
            .await
            .0,
        200
    );
    let attempts = wait_for(
        "three failed attempts",
        TIMEOUT,
        || std::future::ready(queen.subscription_attempts()),
        |a| a.len() >= 3 && a[2].ended.is_some(),
    )
    .await;
    assert!(attempts.iter().all(|a| a.opened.is_none()));
    assert!(!queen.hive("gone").listed);
    assert!(queen.hive("gone").removals >= 3);

    // A `hive_url` from which no request can be built ends the loop (upstream panics).
    assert_eq!(register(&queen, "bad", "not a url").await.0, 200);
    holds_for(
        "the bad hive is never listed",
        retry * 3,
        || queen.hive("bad"),
        |v| !v.listed,
    )
    .await;
    assert!(
        queen
            .subscription_attempts()
            .iter()
            .all(|a| a.hive_id != "bad")
    );
    queen.stop().await;
}

#[tokio::test]
async fn a_stopped_queen_closes_its_streams_and_a_restarted_one_forgets_the_hive() {
    let retry = Duration::from_millis(300);
    let (queen, hive) = subscribed("box", retry).await;
    hive.send(None, &telemetry("box", vec![worker(1, "9100")]));
    queen.wait_for_worker("box", 1, TIMEOUT).await;
    let port = queen.port();

    queen.stop().await;
    wait_until("the tiny hive sees its stream closed", TIMEOUT, || {
        hive.open_streams() == 0
    })
    .await;
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/health"))
            .await
            .is_err()
    );

    let queen = FakeQueen::builder()
        .port(port)
        .retry_period(retry)
        .start()
        .await;
    assert_eq!(queen.port(), port);
    assert!(
        reqwest::get(format!("{}/health", queen.url()))
            .await
            .unwrap()
            .status()
            .is_success()
    );
    holds_for(
        "the restarted queen has forgotten the hive",
        retry * 4,
        || queen.hive("box"),
        |v| !v.listed && v.workers.is_empty() && v.open_connections == 0,
    )
    .await;
    assert!(queen.registrations().is_empty());
    assert_eq!(hive.requests().len(), 1);

    assert_eq!(register(&queen, "box", &hive.url()).await.0, 200);
    queen.wait_for_open_subscriptions(1, TIMEOUT).await;
    queen.wait_listed("box", TIMEOUT).await;
    queen.stop().await;

    // `start_on` is the same restart with upstream's retry period.
    let queen = FakeQueen::start_on(port).await;
    assert_eq!(queen.url(), format!("http://127.0.0.1:{port}"));
    queen.stop().await;
}

#[tokio::test]
async fn registration_can_fail_and_bad_bodies_are_refused_as_upstream() {
    let queen = FakeQueen::builder()
        .ready_answer(ReadyAnswer::Status(503))
        .start()
        .await;
    let hive = TinyHive::start().await;
    assert_eq!(register(&queen, "box", &hive.url()).await.0, 503);
    assert_eq!(queen.registrations()[0].answer, ReadyAnswer::Status(503));

    // axum's `Json` refusals, as upstream's handler gives them.
    let client = reqwest::Client::new();
    let url = format!("{}/v1/hive/ready", queen.url());
    let no_type = client
        .post(&url)
        .body(r#"{"hive_id":"a","hive_url":"b"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(no_type.status().as_u16(), 415);
    let missing = client
        .post(&url)
        .json(&json!({"hive_id": "box"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 422);
    let rejected = queen.rejected_registrations();
    assert_eq!(
        rejected.iter().map(|r| r.status).collect::<Vec<_>>(),
        [415, 422]
    );
    assert!(rejected[1].reason.contains("hive_url"), "{rejected:?}");

    // A hanging queen: the client's own timeout ends the call.
    queen.set_ready_answer(ReadyAnswer::Hang);
    let hung = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .post(&url)
        .json(&json!({"hive_id": "box", "hive_url": hive.url()}))
        .send()
        .await;
    assert!(hung.unwrap_err().is_timeout());
    holds_for(
        "no subscription while registration fails",
        Duration::from_millis(500),
        || queen.subscription_attempts().len(),
        |n| *n == 0,
    )
    .await;

    queen.set_ready_answer(ReadyAnswer::Subscribe);
    assert_eq!(register(&queen, "box", &hive.url()).await.0, 200);
    queen.wait_for_open_subscriptions(1, TIMEOUT).await;
    assert_eq!(queen.registrations().len(), 3);
    queen.stop().await;
}
