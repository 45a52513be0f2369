//! The telemetry stream `GET /v1/heartbeats/stream` (issue 13, item 5): a snapshot, each
//! worker state change in order as it happens, periodic stats in the upstream shape, and
//! the end of the stream when the hive shuts down.

use std::time::Duration;

use futures::StreamExt;
use rbee_hive_e2e::TestHive;
use rbee_hive_e2e::openmetrics::value;
use rbee_hive_e2e::sse::{Event, events, read_until};
use rbee_hive_e2e::wait::wait_for_every;
use serde_json::{Value, json};

fn data(event: &Event) -> Value {
    serde_json::from_str(&event.data).unwrap()
}

#[tokio::test]
async fn a_snapshot_then_each_change_in_order_and_periodic_stats() {
    let mut hive = TestHive::with_config(&["telemetry_interval_ms = 200"]).await;
    let response = hive.get("/v1/heartbeats/stream").await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let first = read_until(&mut body, &mut buffer, |_| true).await;
    assert_eq!(first[0].event.as_deref(), Some("snapshot"));
    assert_eq!(data(&first[0])["workers"], json!([]));
    assert_eq!(data(&first[0])["hive"]["id"], "localhost");

    let worker = hive.spawn_ready("demo").await;
    let id = worker["id"].as_str().unwrap().to_owned();
    let changes = |events: &[Event]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.event.as_deref() == Some("worker"))
            .map(|e| data(e)["change"].as_str().unwrap().to_owned())
            .collect()
    };
    let seen = read_until(&mut body, &mut buffer, |e| {
        e.event.as_deref() == Some("worker") && data(e)["change"] == "ready"
    })
    .await;
    assert_eq!(changes(&seen), ["spawned", "ready"], "{seen:#?}");

    // Periodic stats, in the upstream shape.
    let seen = read_until(&mut body, &mut buffer, |e| {
        e.event.as_deref() == Some("telemetry")
            && data(e)["workers"].as_array().is_some_and(|w| !w.is_empty())
    })
    .await;
    let stats = &data(seen.last().unwrap())["workers"][0];
    assert_eq!(stats["worker_id"], id.as_str());
    assert_eq!(stats["pid"], worker["pid"]);
    assert_eq!(stats["model"], "test-model");
    assert_eq!(stats["state"], "ready");
    for field in ["cpu_pct", "rss_mb", "uptime_s"] {
        assert!(stats[field].is_number(), "{field}: {stats}");
    }

    // A heartbeat saying it is busy is a change too.
    let beat = hive
        .client
        .post(hive.url("/v1/heartbeat"))
        .json(&json!({"worker_id": id, "timestamp": "2026-01-01T00:00:00Z", "health_status": "healthy", "state": "busy"}))
        .send()
        .await
        .unwrap();
    assert!(beat.status().is_success());
    let seen = read_until(&mut body, &mut buffer, |e| {
        e.event.as_deref() == Some("worker") && data(e)["change"] == "busy"
    })
    .await;
    assert_eq!(changes(&seen), ["busy"], "{seen:#?}");

    hive.delete_worker(&id).await;
    let seen = read_until(&mut body, &mut buffer, |e| {
        e.event.as_deref() == Some("worker") && data(e)["change"] == "removed"
    })
    .await;
    assert_eq!(
        changes(&seen),
        ["stopping", "exited", "removed"],
        "{seen:#?}"
    );

    // The hive's shutdown ends the stream.
    hive.signal(nix::sys::signal::Signal::SIGTERM);
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(rest.is_ok(), "the stream ended with the hive");
    hive.wait_exit(Duration::from_secs(10))
        .expect("the hive exited");
}

/// Takes the whole chunks of a chunked HTTP/1.1 body off the front of `raw` (whose
/// response headers were taken off already) and appends their text to `body`.
fn take_chunks(raw: &mut Vec<u8>, body: &mut String) {
    loop {
        let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return;
        };
        let size = std::str::from_utf8(&raw[..line_end])
            .ok()
            .and_then(|hex| usize::from_str_radix(hex.trim(), 16).ok())
            .expect("a chunk size line");
        let start = line_end + 2;
        if size == 0 || raw.len() < start + size + 2 {
            return;
        }
        body.push_str(std::str::from_utf8(&raw[start..start + size]).expect("UTF-8 events"));
        raw.drain(..start + size + 2);
    }
}

/// The hive's send queue towards the client at `client_port`, in bytes, from
/// `/proc/net/tcp` (tx_queue of the hive's end of that connection).
fn send_queue_towards(hive_port: u16, client_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let local_port = u16::from_str_radix(cols.get(1)?.rsplit(':').next()?, 16).ok()?;
        let remote_port = u16::from_str_radix(cols.get(2)?.rsplit(':').next()?, 16).ok()?;
        if local_port != hive_port || remote_port != client_port {
            return None;
        }
        u64::from_str_radix(cols.get(4)?.split(':').next()?, 16).ok()
    })
}

#[tokio::test]
async fn a_reader_that_stops_reading_gets_a_gap_and_never_holds_the_hive() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hive =
        TestHive::with_config(&["telemetry_interval_ms = 100", "telemetry_event_buffer = 8"]).await;
    let worker = hive.spawn_ready("demo").await;
    let id = worker["id"].as_str().unwrap().to_owned();

    // A reader with a small receive window that reads nothing after its request.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(hive.addr).await.unwrap();
    let client_port = stream.local_addr().unwrap().port();
    stream
        .write_all(b"GET /v1/heartbeats/stream HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();

    // Heartbeats that flip the worker between busy and ready: each is a change event with
    // the whole record. Go on until the hive's send queue towards the reader stops growing
    // (its socket is full, so its reader is not polled), then make more changes than the
    // buffer holds.
    let beat = |state: &'static str| {
        hive.client
            .post(hive.url("/v1/heartbeat"))
            .json(&json!({"worker_id": id, "timestamp": "2026-01-01T00:00:00Z", "health_status": "healthy", "state": state}))
            .send()
    };
    let (queued, flat_batches) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    wait_for_every(
        "the hive's send queue towards the reader stops growing (bytes queued)",
        Duration::from_secs(120),
        Duration::ZERO,
        || async {
            for state in ["busy", "ready"].repeat(50) {
                assert!(beat(state).await.unwrap().status().is_success());
            }
            send_queue_towards(hive.addr.port(), client_port).expect("the reader's connection")
        },
        |&now| {
            let flat = if now == queued.replace(now) {
                flat_batches.get() + 1
            } else {
                0
            };
            flat_batches.set(flat);
            flat >= 2
        },
    )
    .await;
    for state in ["busy", "ready"].repeat(10) {
        assert!(beat(state).await.unwrap().status().is_success());
    }
    // The hive answers everyone else meanwhile.
    assert!(hive.get("/health").await.status().is_success());
    hive.run_job(json!({"operation": "worker_list", "hive_id": "localhost"}))
        .await;
    // The last change: the worker is busy.
    assert!(beat("busy").await.unwrap().status().is_success());

    // Now read: a gap with how many changes were missed, then the truth.
    let read = async {
        let mut raw = Vec::new();
        let mut body = String::new();
        let mut headers_read = false;
        let mut chunk = vec![0; 64 * 1024];
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the stream ended");
            raw.extend_from_slice(&chunk[..n]);
            if !headers_read {
                let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                raw.drain(..end + 4);
                headers_read = true;
            }
            take_chunks(&mut raw, &mut body);
            // Events before the gap are of no interest: keep from the last event on.
            match body.find("event: gap\n") {
                Some(gap) => {
                    if let Some(at) = body[gap..].find("event: telemetry\n")
                        && body[gap + at..].contains("\n\n")
                    {
                        return body[gap..].to_owned();
                    }
                }
                None => {
                    let keep = body.rfind("\n\n").map_or(0, |end| end + 2);
                    body.drain(..keep);
                }
            }
        }
    };
    let after_gap = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("a gap and a telemetry event after it");
    let blocks: Vec<Event> = after_gap
        .split_inclusive("\n\n")
        .filter(|b| b.ends_with("\n\n"))
        .map(|b| events(b).remove(0))
        .collect();
    assert_eq!(blocks[0].event.as_deref(), Some("gap"));
    assert!(
        data(&blocks[0])["missed"].as_u64().unwrap() > 0,
        "{:?}",
        blocks[0]
    );
    let mut telemetry = blocks
        .iter()
        .filter(|e| e.event.as_deref() == Some("telemetry"));
    let truth = data(telemetry.next().unwrap());
    assert_eq!(truth["workers"][0]["worker_id"], id.as_str());

    let samples = hive.metrics().await;
    assert!(value(&samples, "rbee_hive_stream_gaps_total", &[]).is_some_and(|gaps| gaps >= 1.0));
}
