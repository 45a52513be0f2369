//! Model and worker-binary catalogs and model downloads (issue 12), end to end: a real hive,
//! a local HTTP file server with fault switches (`crates/file-server`), real files on disk.

use std::time::Duration;

use file_server::{FileServer, Switches};
use rbee_hive_e2e::lines::assert_line;
use rbee_hive_e2e::os::files_in;
use rbee_hive_e2e::os::pid_alive;
use rbee_hive_e2e::wait::{holds_for, wait_for};
use rbee_hive_e2e::{TestHive, binaries};
use serde_json::{Value, json};

fn tiny_model() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tiny-llama.gguf"
    ))
    .expect("the tiny GGUF fixture")
}

fn op(operation: &str, fields: Value) -> Value {
    let mut body = json!({"operation": operation, "hive_id": "localhost"});
    for (key, value) in fields.as_object().expect("fields object") {
        body[key] = value.clone();
    }
    body
}

fn download(model: &str) -> Value {
    op("model_download", json!({"model": model}))
}

fn download_as(model: &str, id: &str) -> Value {
    op("model_download", json!({"model": model, "id": id}))
}

fn spawn(model: &str, worker: &str) -> Value {
    op(
        "worker_spawn",
        json!({"model": model, "worker": worker, "device": 0}),
    )
}

/// A hive whose hub endpoint is `server`.
async fn hive_with_hub(server: &FileServer) -> TestHive {
    TestHive::with_config(&[&hub(server)]).await
}

/// The config line that makes `server` the hub endpoint.
fn hub(server: &FileServer) -> String {
    format!("hf_endpoint = {:?}", server.url("/"))
}

fn error_of(lines: &[String]) -> Option<&str> {
    lines.iter().find_map(|l| l.strip_prefix("[ERROR] "))
}

/// Asserts that the job failed, its reason containing `needle`.
#[track_caller]
fn assert_fails_with(lines: &[String], needle: &str) {
    let reason = error_of(lines).unwrap_or_else(|| panic!("the job did not fail: {lines:#?}"));
    assert!(reason.contains(needle), "{reason:?}: {lines:#?}");
}

fn succeeded(lines: &[String]) -> bool {
    error_of(lines).is_none() && lines.last().map(String::as_str) == Some("[DONE]")
}

async fn model_entries(hive: &TestHive) -> Vec<Value> {
    let result = hive
        .job_result(op("model_list", json!({})))
        .await
        .expect("model_list result");
    result["models"].as_array().cloned().unwrap_or_default()
}

async fn model_status(hive: &TestHive, id: &str) -> Option<Value> {
    model_entries(hive)
        .await
        .into_iter()
        .find(|e| e["artifact"]["id"] == id)
        .map(|e| e["artifact"]["status"].clone())
}

#[tokio::test]
async fn a_model_downloads_by_url_and_by_hub_reference_then_lists_gets_and_spawns_by_id() {
    let server = FileServer::start().await;
    let bytes = tiny_model();
    let digest = server.add("tiny-llama.gguf", bytes.clone());
    let hive = hive_with_hub(&server).await;

    // By URL: the id comes from the file name.
    let lines = hive
        .run_job(download(&server.url("/files/tiny-llama.gguf")))
        .await;
    assert!(succeeded(&lines), "{lines:#?}");
    assert!(
        lines[0].contains(&format!(
            "model_download_start: 📥 Downloading model '{}' on hive 'localhost'",
            server.url("/files/tiny-llama.gguf")
        )),
        "{lines:#?}"
    );
    assert_line(
        &lines,
        "model_download_complete: ✅ Model 'tiny-llama' downloaded: 516.4 KiB in ",
    );
    let on_disk = hive.catalog_dir().join("models/tiny-llama/tiny-llama.gguf");
    assert_eq!(std::fs::read(&on_disk).unwrap(), bytes);
    assert_eq!(
        files_in(&hive.catalog_dir().join("models/tiny-llama")),
        ["metadata.json", "tiny-llama.gguf"],
        "no .part or lock file is left"
    );

    // By hub reference, with an id of our own: the hub's X-Linked-Etag is checked.
    let lines = hive
        .run_job(download_as("someone/tiny-GGUF:tiny-llama.gguf", "tiny"))
        .await;
    assert!(succeeded(&lines), "{lines:#?}");
    assert_line(&lines, "sha256 verified against the hub's X-Linked-Etag");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.path == "/someone/tiny-GGUF/resolve/main/tiny-llama.gguf"),
        "{:?}",
        server.requests()
    );

    // Listed with upstream's texts, and as upstream's JSON.
    let lines = hive.run_job(op("model_list", json!({}))).await;
    assert!(
        lines.contains(&"[hv-router ] model_list_result: Found 2 model(s)".to_owned()),
        "{lines:#?}"
    );
    assert!(
        lines.contains(
            &"[hv-router ] model_list_entry:   tiny | tiny-llama | 0.00 GB | available".to_owned()
        ),
        "{lines:#?}"
    );
    let entries = model_entries(&hive).await;
    let tiny = &entries[0];
    assert_eq!(tiny["artifact"]["id"], "tiny");
    assert_eq!(tiny["artifact"]["size"], bytes.len());
    assert_eq!(tiny["artifact"]["status"], "Available");
    assert!(tiny["added_at"].is_string() && tiny["last_accessed"].is_string());

    let lines = hive.run_job(op("model_get", json!({"id": "tiny"}))).await;
    assert!(
        lines.iter().any(|l| l.starts_with(
            "[hv-router ] model_get_found: ✅ Model: tiny | Name: tiny-llama | Path: "
        ) && l.ends_with("/models/tiny/tiny-llama.gguf")),
        "{lines:#?}"
    );
    let details = lines
        .iter()
        .find_map(|l| l.strip_prefix("[hv-router ] model_get_details: "))
        .expect("details line");
    assert!(details.contains("\"status\": \"Available\""), "{details}");
    assert_eq!(
        digest,
        file_server::sha256_hex(
            &std::fs::read(hive.catalog_dir().join("models/tiny/tiny-llama.gguf")).unwrap()
        )
    );

    // Downloading it again says upstream's line.
    let lines = hive
        .run_job(download_as("someone/tiny-GGUF:tiny-llama.gguf", "tiny"))
        .await;
    assert!(
        lines.contains(
            &"[hv-router ] model_download_exists: ⚠️  Model 'tiny' already exists in catalog"
                .to_owned()
        ),
        "{lines:#?}"
    );
    assert_fails_with(&lines, "already exists");

    // Spawn by catalog id: the demo type takes the id as its model name.
    let lines = hive.run_job(spawn("tiny", "demo")).await;
    assert!(succeeded(&lines), "{lines:#?}");
    let worker = hive.worker("worker-1").await.expect("worker-1");
    assert_eq!(worker["model_id"], "tiny");

    // A model in use is not deleted, and the refusal names the worker.
    let lines = hive
        .run_job(op("model_delete", json!({"id": "tiny"})))
        .await;
    let reason = error_of(&lines).expect("refused");
    assert!(reason.contains("in use by worker-1"), "{reason}");
    assert!(on_disk.exists());
    assert!(
        hive.catalog_dir()
            .join("models/tiny/tiny-llama.gguf")
            .exists()
    );

    // With force it is.
    let lines = hive
        .run_job(op("model_delete", json!({"id": "tiny", "force": true})))
        .await;
    assert!(succeeded(&lines), "{lines:#?}");
    assert!(
        lines.contains(
            &"[hv-router ] model_delete_complete: ✅ Model 'tiny' deleted successfully".to_owned()
        ),
        "{lines:#?}"
    );
    assert!(!hive.catalog_dir().join("models/tiny").exists());
    let lines = hive.run_job(op("model_get", json!({"id": "tiny"}))).await;
    assert!(
        lines.iter().any(|l| l.starts_with(
            "[hv-router ] model_get_error: ❌ Model 'tiny' not found: no entry 'tiny' in "
        ) && l.ends_with("known ids: tiny-llama")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn a_dropped_transfer_fails_keeps_its_part_and_resumes_with_a_range_request() {
    let server = FileServer::start().await;
    let bytes = tiny_model();
    server.add("tiny-llama.gguf", bytes.clone());
    let hive = hive_with_hub(&server).await;
    server.set(Switches {
        fail_after: Some(200_000),
        ..Switches::default()
    });
    let reference = "owner/repo:tiny-llama.gguf";
    let lines = hive.run_job(download(reference)).await;
    let reason = error_of(&lines).expect("the drop fails the job");
    assert!(reason.contains("download it again to resume"), "{reason}");
    let status = model_status(&hive, "tiny-llama").await.expect("listed");
    assert!(status["Failed"]["error"].is_string(), "{status}");
    let part = hive
        .catalog_dir()
        .join("models/tiny-llama/tiny-llama.gguf.part");
    let kept = std::fs::metadata(&part)
        .unwrap_or_else(|e| panic!("the .part is kept: {e} {lines:#?}"))
        .len();
    assert!(kept > 0 && kept <= 200_000, "{kept}");

    server.set(Switches::default());
    let lines = hive.run_job(download(reference)).await;
    assert!(succeeded(&lines), "{lines:#?}");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.range.as_deref() == Some(&format!("bytes={kept}-"))),
        "{:?}",
        server.requests()
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("sha256 verified against the hub's X-Linked-Etag")),
        "the resumed file is checked whole: {lines:#?}"
    );
    assert_eq!(
        std::fs::read(hive.catalog_dir().join("models/tiny-llama/tiny-llama.gguf")).unwrap(),
        bytes
    );
    assert!(!part.exists());
}

#[tokio::test]
async fn a_server_that_ignores_range_gets_a_clean_restart() {
    let server = FileServer::start().await;
    let bytes = tiny_model();
    server.add("m.gguf", bytes.clone());
    let hive = TestHive::start().await;
    let url = server.url("/files/m.gguf");
    // A transfer cut off after 1000 bytes, whose partial file then went bad on disk.
    server.set(Switches {
        fail_after: Some(1000),
        ..Switches::default()
    });
    let lines = hive.run_job(download(&url)).await;
    assert!(error_of(&lines).is_some(), "{lines:#?}");
    let folder = hive.catalog_dir().join("models/m");
    let part = folder.join("m.gguf.part");
    let kept = std::fs::metadata(&part).unwrap().len() as usize;
    std::fs::write(&part, vec![0xAA; kept]).unwrap();
    server.set(Switches {
        ignore_range: true,
        ..Switches::default()
    });
    let lines = hive.run_job(download(&url)).await;
    assert!(succeeded(&lines), "{lines:#?}");
    assert_eq!(
        server.requests().last().unwrap().range.as_deref(),
        Some(format!("bytes={kept}-").as_str()),
        "a resume was asked for"
    );
    assert_eq!(std::fs::read(folder.join("m.gguf")).unwrap(), bytes);
}

#[tokio::test]
async fn a_partial_file_from_another_url_is_not_continued() {
    let server = FileServer::start().await;
    let bytes = tiny_model();
    server.add("a.gguf", bytes.clone());
    server.add("b.gguf", vec![0x55; bytes.len()]);
    let hive = TestHive::start().await;
    server.set(Switches {
        fail_after: Some(100_000),
        ..Switches::default()
    });
    let lines = hive
        .run_job(download_as(&server.url("/files/b.gguf"), "same"))
        .await;
    assert!(error_of(&lines).is_some(), "{lines:#?}");
    server.set(Switches::default());
    // The same file name from another URL (as two repositories may both have): the other
    // file's partial bytes are not spliced in.
    std::fs::rename(
        hive.catalog_dir().join("models/same/b.gguf.part"),
        hive.catalog_dir().join("models/same/a.gguf.part"),
    )
    .unwrap();
    std::fs::rename(
        hive.catalog_dir().join("models/same/b.gguf.part.source"),
        hive.catalog_dir().join("models/same/a.gguf.part.source"),
    )
    .unwrap();
    let lines = hive
        .run_job(download_as(&server.url("/files/a.gguf"), "same"))
        .await;
    assert!(succeeded(&lines), "{lines:#?}");
    assert!(server.requests().last().unwrap().range.is_none());
    assert_eq!(
        std::fs::read(hive.catalog_dir().join("models/same/a.gguf")).unwrap(),
        bytes
    );
}

#[tokio::test]
async fn links_planted_in_the_catalog_are_not_written_through() {
    let server = FileServer::start().await;
    server.add("x.gguf", tiny_model());
    let hive = TestHive::start().await;
    let victim = hive.dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let models = hive.catalog_dir().join("models");
    // A partial file that is a link.
    std::fs::create_dir_all(models.join("x")).unwrap();
    std::os::unix::fs::symlink(&victim, models.join("x/x.gguf.part")).unwrap();
    let lines = hive.run_job(download(&server.url("/files/x.gguf"))).await;
    assert!(error_of(&lines).is_some(), "{lines:#?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    // An entry folder that is a link.
    let outside = hive.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, models.join("y")).unwrap();
    let lines = hive
        .run_job(download_as(&server.url("/files/x.gguf"), "y"))
        .await;
    let reason = error_of(&lines).unwrap();
    assert!(reason.contains("is a link or not a folder"), "{reason}");
    assert!(files_in(&outside).is_empty(), "{:?}", files_in(&outside));
    // A download named like the catalog's own files.
    server.add("metadata.json", "{}");
    let lines = hive
        .run_job(download(&server.url("/files/metadata.json")))
        .await;
    assert_fails_with(&lines, "a name the catalog keeps for its own files");
}

#[tokio::test]
async fn a_checksum_mismatch_fails_and_leaves_no_available_entry() {
    let server = FileServer::start().await;
    server.add("tiny-llama.gguf", tiny_model());
    let hive = TestHive::with_config(&[&hub(&server), &file_model_type()]).await;
    server.set(Switches {
        wrong_checksum: true,
        ..Switches::default()
    });
    let lines = hive.run_job(download("owner/repo:tiny-llama.gguf")).await;
    let reason = error_of(&lines).expect("mismatch fails");
    assert!(
        reason.starts_with("sha256 mismatch: expected 0000"),
        "{reason}"
    );
    let status = model_status(&hive, "tiny-llama").await.expect("listed");
    assert!(
        status["Failed"]["error"]
            .as_str()
            .unwrap()
            .contains("sha256 mismatch")
    );
    assert_eq!(
        files_in(&hive.catalog_dir().join("models/tiny-llama")),
        ["metadata.json"],
        "neither the file nor its .part is kept"
    );

    // A sha256 given in the request is checked for a plain URL too.
    server.set(Switches::default());
    let lines = hive
        .run_job(op(
            "model_download",
            json!({"model": server.url("/files/tiny-llama.gguf"), "id": "other", "sha256": "ab".repeat(32)}),
        ))
        .await;
    assert_fails_with(&lines, "(the request's sha256)");
    // A spawn of a failed model is refused with its reason.
    let lines = hive.run_job(spawn("other", "filemodel")).await;
    let reason = error_of(&lines).unwrap();

    assert!(
        reason.starts_with("'other' cannot be used: its download failed: sha256 mismatch"),
        "{reason}"
    );
}

#[tokio::test]
async fn cancelling_a_download_stops_the_transfer_and_records_it_as_failed() {
    let server = FileServer::start().await;
    server.add("slow.gguf", tiny_model());
    server.set(Switches {
        bytes_per_second: Some(40_000),
        ..Switches::default()
    });
    let hive = TestHive::start().await;
    let job = hive.submit(download(&server.url("/files/slow.gguf"))).await;
    hive.stream_until(&job, |l| l.contains("model_download_progress: ⏬ slow: "))
        .await;
    assert_eq!(
        model_status(&hive, "slow").await,
        Some(json!("Downloading"))
    );
    assert!(hive.cancel(&job).await.status().is_success());
    let part = hive.catalog_dir().join("models/slow/slow.gguf.part");
    wait_for(
        "the download is recorded as cancelled",
        Duration::from_secs(10),
        || async { model_status(&hive, "slow").await.expect("listed") },
        |status| status["Failed"]["error"] == "download cancelled",
    )
    .await;
    // The transfer has stopped: the partial file no longer grows (for 300 ms; only a time
    // can show that it does not).
    let size = std::fs::metadata(&part).unwrap().len();
    let part_size = || std::fs::metadata(&part).unwrap().len();
    holds_for(
        "the partial file keeps its size",
        Duration::from_millis(300),
        part_size,
        |&now| now == size,
    )
    .await;
    assert!(!hive.catalog_dir().join("models/slow/slow.gguf").exists());
}

#[tokio::test]
async fn two_downloads_of_one_model_share_one_transfer() {
    let server = FileServer::start().await;
    let bytes = tiny_model();
    server.add("shared.gguf", bytes.clone());
    server.set(Switches {
        bytes_per_second: Some(150_000),
        ..Switches::default()
    });
    let hive = TestHive::start().await;
    let url = server.url("/files/shared.gguf");
    let first = hive.submit(download(&url)).await;
    let second = hive.submit(download(&url)).await;
    // Another URL under the same id does not join it.
    server.add("other.gguf", vec![1u8; 10]);
    let lines = hive
        .run_job(download_as(&server.url("/files/other.gguf"), "shared"))
        .await;
    assert_fails_with(&lines, "is being downloaded from");
    let (a, b) = tokio::join!(hive.stream_lines(&first), hive.stream_lines(&second));
    assert!(succeeded(&a), "{a:#?}");
    assert!(succeeded(&b), "{b:#?}");
    // Whichever job ran first started the transfer; the other followed it (jobs are tasks:
    // the one submitted second may run first).
    let joined = |lines: &[String]| {
        lines.iter().any(|l| {
            l.contains("Model 'shared' is already being downloaded; following that transfer")
        })
    };
    assert!(
        joined(&a) != joined(&b),
        "exactly one joined: {a:#?} {b:#?}"
    );
    let gets = server
        .requests()
        .iter()
        .filter(|r| r.path == "/files/shared.gguf")
        .count();
    assert_eq!(gets, 1, "{:?}", server.requests());
    assert_eq!(
        std::fs::read(hive.catalog_dir().join("models/shared/shared.gguf")).unwrap(),
        bytes
    );
}

#[tokio::test]
async fn ids_that_could_leave_the_catalog_are_refused_and_nothing_outside_is_touched() {
    let hive = TestHive::start().await;
    let models = hive.catalog_dir().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let victim = hive.dir.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("metadata.json"), "{}").unwrap();
    std::os::unix::fs::symlink(&victim, models.join("linked")).unwrap();
    for id in [
        "../victim",
        "..",
        "/etc",
        "-rf",
        ".hidden",
        "a/b",
        "linked/..",
        &"x".repeat(256),
    ] {
        for operation in ["model_get", "model_delete"] {
            let lines = hive.run_job(op(operation, json!({"id": id}))).await;
            let reason = error_of(&lines).unwrap_or_else(|| panic!("{operation} {id}: {lines:#?}"));
            assert!(
                reason.contains("invalid catalog id") || reason.contains("no entry"),
                "{operation} {id:?}: {reason}"
            );
        }
        let lines = hive
            .run_job(op("worker_binary_delete", json!({"worker_type": id})))
            .await;
        assert!(error_of(&lines).is_some(), "{id}: {lines:#?}");
    }
    // A linked folder is not an entry either.
    let lines = hive
        .run_job(op("model_delete", json!({"id": "linked"})))
        .await;
    assert_fails_with(&lines, "no entry 'linked'");
    assert!(victim.join("metadata.json").exists());
    // A NUL in an id is a value error: the job fails with the reason.
    let lines = hive
        .run_job(op("model_get", json!({"id": "a\u{0}b"})))
        .await;
    assert_fails_with(&lines, "control characters");
}

#[tokio::test]
async fn a_hand_placed_model_is_listed_and_spawns_by_id() {
    let hive = TestHive::with_config(&[&file_model_type()]).await;
    let folder = hive.catalog_dir().join("models/hand");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("My Model.gguf"), tiny_model()).unwrap();
    let lines = hive.run_job(op("model_list", json!({}))).await;
    assert!(
        lines.contains(
            &"[hv-router ] model_list_entry:   hand | My Model | 0.00 GB | available".to_owned()
        ),
        "{lines:#?}"
    );
    // A type whose model is a file gets the file's path.
    let lines = hive.run_job(spawn("hand", "filemodel")).await;
    assert!(succeeded(&lines), "{lines:#?}");
    let worker = hive.worker("worker-1").await.unwrap();
    assert!(
        worker["model_id"]
            .as_str()
            .unwrap()
            .ends_with("/models/hand/My Model.gguf"),
        "{worker}"
    );
    // The model is in use through its path.
    let lines = hive
        .run_job(op("model_delete", json!({"id": "hand"})))
        .await;
    assert_fails_with(&lines, "worker-1");

    // An unknown name that is not a path is refused with the catalog's ids.
    let lines = hive.run_job(spawn("nosuch", "filemodel")).await;
    let reason = error_of(&lines).unwrap();
    assert!(
        reason.starts_with("model 'nosuch' is not in the catalog (")
            && reason.ends_with("known ids: hand"),
        "{reason}"
    );
}

/// A configured type whose model is a file path, run by the demo worker.
fn file_model_type() -> String {
    let demo = binaries::program("rbee-demo-worker").display().to_string();
    format!(
        "[workers.filemodel]\ncommand = [{demo:?}, \"--worker-id\", \"{{worker_id}}\", \"--model\", \"{{model}}\", \"--port\", \"{{port}}\"]\nmodel_is_path = true\n"
    )
}

#[tokio::test]
async fn a_spawn_does_not_reveal_whether_a_path_exists() {
    let hive = TestHive::with_config(&[&file_model_type()]).await;
    let mut reasons = Vec::new();
    for path in ["/nonexistent", "/root", "/etc/shadow", "/etc/hostname"] {
        let lines = hive.run_job(spawn(path, "filemodel")).await;
        let reason = error_of(&lines)
            .unwrap_or_else(|| panic!("{path}: {lines:#?}"))
            .to_owned();
        reasons.push(reason.replace(path, "<path>"));
    }
    assert!(reasons.windows(2).all(|w| w[0] == w[1]), "{reasons:#?}");
    assert!(hive.workers().await.is_empty());
}

#[tokio::test]
async fn the_hub_token_goes_to_the_hub_only_and_redirects_stay_on_http() {
    let server = FileServer::start().await;
    let elsewhere = FileServer::start().await;
    server.add("t.gguf", tiny_model());
    elsewhere.add("t.gguf", tiny_model());
    let hive = TestHive::builder()
        .config(&hub(&server))
        .env("HF_TOKEN", "hf_secret")
        .start()
        .await;
    server.set(Switches {
        require_token: Some("hf_secret".into()),
        redirect_to: Some(elsewhere.url("/files/t.gguf")),
        ..Switches::default()
    });
    let lines = hive.run_job(download("o/r:t.gguf")).await;
    assert!(succeeded(&lines), "{lines:#?}");
    assert_eq!(
        server.requests()[0].authorization.as_deref(),
        Some("Bearer hf_secret")
    );
    assert!(
        elsewhere
            .requests()
            .iter()
            .all(|r| r.authorization.is_none()),
        "the token leaked to another host: {:?}",
        elsewhere.requests()
    );

    // Without the token the hub's 401 comes back with a hint.
    let tokenless = hive_with_hub(&server).await;
    let lines = tokenless.run_job(download("o/r:t.gguf")).await;
    let reason = error_of(&lines).unwrap();
    assert!(
        reason.contains("answered HTTP 401") && reason.contains("HF_TOKEN"),
        "{reason}"
    );

    // A redirect to another scheme is not followed.
    server.set(Switches {
        redirect_to: Some("file:///etc/passwd".into()),
        ..Switches::default()
    });
    let lines = tokenless.run_job(download_as("o/r:t.gguf", "t2")).await;
    let reason = error_of(&lines).unwrap();
    assert!(reason.contains("only http(s) is followed"), "{reason}");
    assert!(!tokenless.catalog_dir().join("models/t2/t.gguf").exists());

    // A repository without a file names what to give.
    let lines = tokenless.run_job(download("TheBloke/TinyLlama-GGUF")).await;
    assert_fails_with(&lines, "names no file");
}

#[tokio::test]
async fn worker_binaries_are_listed_got_deleted_and_used_by_spawn() {
    let hive = TestHive::start().await;
    let id = "cpu-llm-worker-rbee-v0.1.0-linux";
    let binary = hive.install_worker_binary(id, "llm-worker-rbee-cpu");
    let size = std::fs::metadata(&binary).unwrap().len();

    let lines = hive.run_job(op("worker_binary_list", json!({}))).await;
    assert!(
        lines.contains(
            &"[hv-router ] worker_bin_list_result: Found 1 worker binary(ies)".to_owned()
        ),
        "{lines:#?}"
    );
    let megabytes = format!("{:.2} MB", size as f64 / 1e6);
    assert!(
        lines.contains(&format!(
            "[hv-router ] worker_bin_list_entry:   {id} | llm-worker-rbee-cpu | {megabytes}"
        )),
        "{lines:#?}"
    );
    let lines = hive
        .run_job(op("worker_binary_get", json!({"worker_type": id})))
        .await;
    assert!(
        lines.contains(&format!(
            "[hv-router ] worker_bin_get_found: ✅ Worker: {id} | Name: llm-worker-rbee-cpu | Path: {}",
            binary.display()
        )),
        "{lines:#?}"
    );

    // `cpu` workers run the catalog's binary (there is no llm-worker-rbee-cpu otherwise).
    let lines = hive.run_job(spawn("m", "cpu")).await;
    assert!(succeeded(&lines), "{lines:#?}");
    let worker = hive.worker("worker-1").await.unwrap();
    assert_eq!(
        worker["command"][0].as_str().unwrap(),
        binary.canonicalize().unwrap().display().to_string()
    );
    let pid = worker["pid"].as_u64().unwrap() as u32;
    let lines = hive
        .run_job(op("worker_delete", json!({"id": "worker-1"})))
        .await;
    assert!(succeeded(&lines), "{lines:#?}");
    assert!(!pid_alive(pid));

    let lines = hive
        .run_job(op("worker_binary_delete", json!({"worker_type": id})))
        .await;
    assert!(
        lines.contains(&format!(
            "[hv-router ] worker_bin_del_ok: ✅ Worker binary '{id}' deleted successfully"
        )),
        "{lines:#?}"
    );
    assert!(!binary.parent().unwrap().exists());
    let lines = hive
        .run_job(op("worker_binary_get", json!({"worker_type": id})))
        .await;
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "[hv-router ] worker_bin_get_error: ❌ Worker binary '{id}' not found: no entry"
        ))),
        "{lines:#?}"
    );
    // Without the catalog entry, `cpu` needs its program again.
    let lines = hive.run_job(spawn("m", "cpu")).await;
    assert_fails_with(&lines, "worker program 'llm-worker-rbee-cpu' not found");
}

#[tokio::test]
async fn a_download_cut_by_a_hive_crash_reads_as_interrupted_and_resumes() {
    let server = FileServer::start().await;
    let bytes = tiny_model();
    server.add("crash.gguf", bytes.clone());
    server.set(Switches {
        bytes_per_second: Some(100_000),
        ..Switches::default()
    });
    let mut hive = TestHive::start().await;
    let url = server.url("/files/crash.gguf");
    let job = hive.submit(download(&url)).await;
    hive.stream_until(&job, |l| {
        l.contains("model_download_progress: ⏬ crash: ") && !l.contains(" 0 B")
    })
    .await;
    hive.kill_hard();
    hive.restart();
    let status = model_status(&hive, "crash")
        .await
        .expect("listed after the crash");
    assert!(
        status["Failed"]["error"]
            .as_str()
            .unwrap()
            .starts_with("interrupted:"),
        "a download nobody runs is not shown as downloading: {status}"
    );
    let part = hive.catalog_dir().join("models/crash/crash.gguf.part");
    let kept = std::fs::metadata(&part).expect("the .part survives").len();
    assert!(kept > 0);

    server.set(Switches::default());
    let lines = hive.run_job(download(&url)).await;
    assert!(succeeded(&lines), "{lines:#?}");
    assert_line(&lines, "model_download_resume");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.range.as_deref().is_some_and(|range| range != "bytes=0-")),
        "{:?}",
        server.requests()
    );
    assert_eq!(
        std::fs::read(hive.catalog_dir().join("models/crash/crash.gguf")).unwrap(),
        bytes
    );
    assert_eq!(model_status(&hive, "crash").await, Some(json!("Available")));
}

#[tokio::test]
async fn a_download_larger_than_the_free_disk_space_is_refused_before_any_byte_is_written() {
    let server = FileServer::start().await;
    server.add("huge.gguf", tiny_model());
    server.set(Switches {
        // One exbibyte: more than any test machine's disk.
        linked_size: Some(1 << 60),
        ..Switches::default()
    });
    let hive = hive_with_hub(&server).await;
    let lines = hive.run_job(download("o/r:huge.gguf")).await;
    let reason = error_of(&lines).expect("refused");
    assert!(
        reason.starts_with("not enough disk space in ")
            && reason.contains(&format!("needs {} more bytes", 1u64 << 60)),
        "{reason}"
    );
    assert_eq!(
        files_in(&hive.catalog_dir().join("models/huge")),
        ["metadata.json"],
        "no partial file"
    );
    let status = model_status(&hive, "huge").await.unwrap();
    assert!(
        status["Failed"]["error"]
            .as_str()
            .unwrap()
            .starts_with("not enough disk space")
    );
}
