//! `Hive::serve` in-process, with the shutdown passed in as a future (no signals, no child
//! hive process): the fixed shutdown order, observed from a client and from the OS.

use std::time::Duration;

use rbee_hive::Hive;
use rbee_hive::config::Config;
use serde_json::{Value, json};

/// A hive whose `sleeper` workers never answer their health check (they stay `Starting`).
fn config(dir: &std::path::Path) -> Config {
    let workers =
        toml::from_str("[sleeper]\ncommand = [\"sleep\", \"3600\"]\nready_timeout_s = 3600\n")
            .unwrap();
    Config {
        state_dir: dir.to_owned(),
        nvidia_smi: dir.join("no-nvidia-smi").display().to_string(),
        worker_ports: "39100-39119".into(),
        stop_grace_ms: 5000,
        workers,
        ..Config::default()
    }
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn the_injected_shutdown_ends_streams_stops_workers_and_returns() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hive = Hive::start(listener, config(dir.path())).unwrap();
    let base = format!("http://{}", hive.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(hive.serve(
        async {
            let _ = stopped.await;
        },
        std::future::pending(),
    ));
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    let submitted: Value = client
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"operation": "worker_spawn", "hive_id": "h", "model": "m", "worker": "sleeper", "device": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_id = submitted["job_id"].as_str().unwrap().to_owned();
    let mut stream = client
        .get(format!("{base}/v1/jobs/{job_id}/stream"))
        .send()
        .await
        .unwrap();
    // Read until the worker process is started.
    let mut text = String::new();
    while !text.contains("worker_spawn_process") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.chunk())
            .await
            .expect("the spawn narrates its process")
            .unwrap()
            .expect("the stream is open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let pid: u32 = text
        .split("PID ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|pid| pid.parse().ok())
        .expect("the pid in the process line");
    assert!(pid_alive(pid));

    stop.send(()).unwrap();
    // The open stream ends with its terminal lines…
    let rest = tokio::time::timeout(Duration::from_secs(30), stream.text())
        .await
        .expect("the stream ends")
        .unwrap();
    assert!(
        rest.ends_with("data: [CANCELLED]\n\ndata: [DONE]\n\n"),
        "{text}{rest}"
    );
    // …serve returns once the cancelled spawn's worker is stopped…
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
    assert!(!pid_alive(pid), "the worker of the cancelled spawn is gone");
    // …and nothing listens any more.
    assert!(client.get(format!("{base}/health")).send().await.is_err());
}
