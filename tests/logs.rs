//! Worker logs over HTTP and the command line (issue 13, item 1): a worker's captured output,
//! whole, its last lines, and followed until the worker is gone; also after its removal.

use std::time::Duration;

use futures::StreamExt;
use rbee_hive_e2e::TestHive;
use rbee_hive_e2e::lines::assert_done;

async fn get(hive: &TestHive, path: &str) -> (u16, String) {
    let response = hive.get(path).await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn a_workers_log_is_read_whole_tailed_and_followed_until_the_worker_is_gone() {
    let hive = TestHive::start().await;
    let worker = hive.spawn_ready("demo").await;
    let id = worker["id"].as_str().unwrap().to_owned();
    let port = worker["port"].as_u64().unwrap();
    let on_disk = std::fs::read_to_string(worker["log_path"].as_str().unwrap()).unwrap();
    let listening = format!("listening on 127.0.0.1:{port}");
    assert!(on_disk.contains(&listening), "{on_disk}");

    let (status, whole) = get(&hive, &format!("/v1/workers/{id}/logs")).await;
    assert_eq!(status, 200);
    assert_eq!(whole, on_disk);
    let (_, last) = get(&hive, &format!("/v1/workers/{id}/logs?tail=1")).await;
    assert_eq!(last, format!("{}\n", on_disk.lines().last().unwrap()));

    // Follow: what the worker writes while it stops arrives, then the response ends.
    let response = hive
        .get(&format!("/v1/workers/{id}/logs?follow=true&tail=1"))
        .await;
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let mut body = response.bytes_stream();
    let mut followed = String::new();
    while !followed.contains(&listening) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("the existing lines come at once")
            .expect("not ended")
            .unwrap();
        followed.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_done(&hive.delete_worker(&id).await);
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rest = String::new();
        while let Some(chunk) = body.next().await {
            rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
        rest
    })
    .await
    .expect("a follow ends once the worker is gone");
    followed.push_str(&rest);
    assert!(
        followed.contains("SIGTERM received, stopping") && followed.ends_with("stopped\n"),
        "{followed}"
    );

    // The log of a removed worker is kept and still readable; following it ends at once.
    let (status, kept) = get(&hive, &format!("/v1/workers/{id}/logs?follow=true")).await;
    assert_eq!(status, 200);
    assert!(kept.ends_with("stopped\n"), "{kept}");

    // The command line.
    let output = hive.cli().args(["logs", &id, "-n", "2"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(printed.lines().count(), 2, "{printed}");
    assert!(printed.ends_with("stopped\n"), "{printed}");
}

#[tokio::test]
async fn bad_log_requests_get_clear_errors() {
    let hive = TestHive::start().await;
    let (status, body) = get(&hive, "/v1/workers/worker-7/logs").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("worker_not_found"), "{body}");
    let (status, body) = get(&hive, "/v1/workers/..%2F..%2Fetc%2Fpasswd/logs").await;
    assert_eq!(status, 404, "{body}");
    let worker = hive.spawn_ready("demo").await;
    let id = worker["id"].as_str().unwrap();
    let (status, body) = get(&hive, &format!("/v1/workers/{id}/logs?tail=-1")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("invalid_query") && body.contains("`tail`"),
        "{body}"
    );
    let (status, body) = get(&hive, &format!("/v1/workers/{id}/logs?follow=maybe")).await;
    assert_eq!(status, 400, "{body}");
    let output = hive.cli().args(["logs", "worker-99"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "not found: {output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("worker 'worker-99' not found"),
        "{output:?}"
    );
}

#[tokio::test]
async fn a_log_follower_does_not_hold_the_shutdown() {
    // With a drain of ten minutes, a follower that kept its connection open would keep the
    // hive from exiting for that long.
    let mut hive = TestHive::with_config(&["shutdown_drain_s = 600"]).await;
    let worker = hive.spawn_ready("demo").await;
    let id = worker["id"].as_str().unwrap();
    let response = hive
        .get(&format!("/v1/workers/{id}/logs?follow=true"))
        .await;
    let mut body = response.bytes_stream();
    body.next().await.expect("the log so far").unwrap();
    hive.signal(nix::sys::signal::Signal::SIGTERM);
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the follow ended when the shutdown began");
    let status = hive
        .wait_exit(Duration::from_secs(60))
        .expect("the hive exited without waiting for its drain");
    assert!(status.success(), "{status:?}");
}
