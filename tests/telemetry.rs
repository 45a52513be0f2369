//! The telemetry stream `GET /v1/heartbeats/stream` (issue 13, item 5): a snapshot, each
//! worker state change in order as it happens, periodic stats in the upstream shape, and
//! the end of the stream when the hive shuts down.

use std::time::Duration;

use futures::StreamExt;
use rbee_hive_e2e::TestHive;
use rbee_hive_e2e::sse::{Event, events};
use serde_json::{Value, json};

/// Reads events from `body` until `until` holds for one; returns those read.
async fn read_until(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
    until: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    let read = async {
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let event = events(&block).remove(0);
                let done = until(&event);
                seen.push(event);
                if done {
                    return;
                }
            }
            let chunk = body.next().await.expect("the stream goes on").unwrap();
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| panic!("no expected event; seen {seen:#?}"));
    seen
}

fn data(event: &Event) -> Value {
    serde_json::from_str(&event.data).unwrap()
}

#[tokio::test]
async fn a_snapshot_then_each_change_in_order_and_periodic_stats() {
    let mut hive = TestHive::builder()
        .config("telemetry_interval_ms = 200")
        .start()
        .await;
    let response = hive
        .client
        .get(hive.url("/v1/heartbeats/stream"))
        .send()
        .await
        .unwrap();
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

    hive.run_job(json!({"operation": "worker_delete", "hive_id": "localhost", "id": id}))
        .await;
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
