//! The job server end to end (issue 2): a real hive, real HTTP, the exact wire text.

use std::time::Duration;

use rbee_hive_e2e::lines::{assert_done, assert_line};
use rbee_hive_e2e::sse;
use rbee_hive_e2e::wait::wait_for;
use rbee_hive_e2e::{TestHive, os};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn list_body() -> Value {
    json!({"operation": "worker_list", "hive_id": "localhost"})
}

#[tokio::test]
async fn empty_worker_list_stream_is_exact_and_closes_after_done() {
    let hive = TestHive::start().await;
    let job_id = hive.submit(list_body()).await;
    // `stream_body` reads to the end of the response: it returns because the stream closes
    // right after `[DONE]` (a stream that stayed open would fail the test at its deadline).
    let body = hive.stream_body(&job_id).await;
    assert_eq!(
        body,
        "data: [hv-router ] worker_list_start: 📋 Listing workers on hive 'localhost'\n\n\
         data: [hv-router ] worker_list_result: Found 0 worker(s)\n\n\
         data: [hv-router ] worker_list_empty: No workers found\n\n\
         data: [DONE]\n\n"
    );
}

#[tokio::test]
async fn job_runs_without_a_reader_and_a_late_stream_replays_everything() {
    let hive = TestHive::start().await;
    let job_id = hive.submit(list_body()).await;
    // Nobody reads the stream: the job must still run to the end.
    let (_, job) = wait_for(
        "the job finishes",
        Duration::from_secs(10),
        || hive.job_status(&job_id),
        |(status, job)| {
            assert_eq!(*status, StatusCode::OK);
            job["state"] == "succeeded"
        },
    )
    .await;
    assert_eq!(job["operation"], "worker_list");
    assert!(job["finished_at"].is_string());
    assert_eq!(job["error"], Value::Null);
    let lines = hive.stream_lines(&job_id).await;
    assert_eq!(lines.len(), 4);
    assert!(lines[0].contains("worker_list_start"));
    assert_eq!(lines[3], "[DONE]");
}

#[tokio::test]
async fn two_readers_get_the_same_lines() {
    let hive = TestHive::start().await;
    let job_id = hive.submit(list_body()).await;
    let (a, b) = tokio::join!(hive.stream_body(&job_id), hive.stream_body(&job_id));
    assert_eq!(a, b);
    assert_eq!(
        a,
        hive.stream_body(&job_id).await,
        "a third, later reader too"
    );
}

#[tokio::test]
async fn failing_job_ends_with_failed_line_error_and_done() {
    let hive = TestHive::start().await;
    let lines = hive
        .run_job(json!({"operation": "worker_get", "hive_id": "localhost", "id": "worker-9"}))
        .await;
    let job_line = lines[2].clone();
    assert_eq!(
        lines,
        vec![
            "[hv-router ] worker_get_start: 🔍 Getting worker 'worker-9' on hive 'localhost'".to_string(),
            "[hv-router ] worker_get_error: ❌ Worker 'worker-9' not found: worker 'worker-9' not found".into(),
            job_line.clone(),
            "[ERROR] worker 'worker-9' not found".into(),
            "[DONE]".into(),
        ]
    );
    assert!(
        job_line.starts_with("[job-exec  ] failed         : Job job-"),
        "{job_line}"
    );
    assert!(
        job_line.ends_with(" failed: worker 'worker-9' not found"),
        "{job_line}"
    );
}

#[tokio::test]
async fn failed_job_status_carries_the_reason() {
    let hive = TestHive::start().await;
    let job_id = hive
        .submit(json!({"operation": "worker_delete", "hive_id": "localhost", "id": "worker-4"}))
        .await;
    hive.stream_body(&job_id).await;
    let (_, job) = hive.job_status(&job_id).await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["error"], "worker 'worker-4' not found");
}

#[tokio::test]
async fn unknown_job_is_404_with_json_error() {
    let hive = TestHive::start().await;
    for id in [
        "job-00000000-0000-4000-8000-000000000000",
        "nonsense",
        "job-..%2F..%2Fetc",
    ] {
        for (method, path) in [
            ("GET", format!("/v1/jobs/{id}/stream")),
            ("GET", format!("/v1/jobs/{id}")),
            ("DELETE", format!("/v1/jobs/{id}")),
        ] {
            let request = hive
                .client
                .request(method.parse().unwrap(), hive.url(&path));
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], "job_not_found", "{method} {path}: {body}");
            assert!(body["error"].as_str().unwrap().contains("not found"));
        }
    }
}

#[tokio::test]
async fn bad_inputs_get_their_status_and_json_error_and_create_no_job() {
    let hive = TestHive::with_config(&["body_limit_bytes = 1024"]).await;
    let cases: Vec<(&str, &str, String, StatusCode, &str, &str)> = vec![
        ("malformed JSON", "application/json", "{\"operation\":".into(), StatusCode::BAD_REQUEST, "malformed_json", "not valid JSON"),
        ("not an object", "application/json", "[1,2]".into(), StatusCode::BAD_REQUEST, "invalid_request", "JSON object"),
        ("no operation", "application/json", "{\"hive_id\":\"localhost\"}".into(), StatusCode::BAD_REQUEST, "missing_field", "`operation`"),
        (
            "unknown operation",
            "application/json",
            "{\"operation\":\"frobnicate\",\"hive_id\":\"localhost\"}".into(),
            StatusCode::BAD_REQUEST,
            "unknown_operation",
            "worker_spawn, worker_list, worker_get, worker_delete",
        ),
        ("missing field", "application/json", "{\"operation\":\"worker_get\",\"hive_id\":\"localhost\"}".into(), StatusCode::BAD_REQUEST, "missing_field", "`id`"),
        (
            "mistyped field",
            "application/json",
            "{\"operation\":\"worker_spawn\",\"hive_id\":\"localhost\",\"model\":\"m\",\"worker\":\"cpu\",\"device\":\"zero\"}".into(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "`device`",
        ),
        (
            "too large",
            "application/json",
            format!("{{\"operation\":\"worker_list\",\"hive_id\":\"{}\"}}", "x".repeat(2000)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "1024 bytes",
        ),
        ("wrong content type", "text/plain", list_body().to_string(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "application/json"),
    ];
    for (name, content_type, body, status, code, needle) in cases {
        let response = hive
            .client
            .post(hive.url("/v1/jobs"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{name}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{name}"
        );
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["code"], code, "{name}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(needle),
            "{name}: {answer}"
        );
    }
    assert_eq!(hive.job_count().await, 0, "no bad request became a job");
    assert_eq!(hive.get_text("/health").await, "ok");
}

#[tokio::test]
async fn explicit_hive_id_refuses_other_ids_and_any_id_is_accepted_otherwise() {
    let hive = TestHive::builder().hive_id("gpu-box").start().await;
    // Well-formed, addressed to another hive: a job that fails with the reason (the
    // upstream clients show only what arrives in a stream).
    let lines = hive.run_job(list_body()).await;
    assert_eq!(
        &lines[lines.len() - 2..],
        [
            "[ERROR] this hive is 'gpu-box', not 'localhost'; address it as 'gpu-box'",
            "[DONE]"
        ],
        "{lines:#?}"
    );
    assert_line(&lines, "failed:");
    let lines = hive
        .run_job(json!({"operation": "worker_list", "hive_id": "gpu-box"}))
        .await;
    assert!(lines[0].ends_with("Listing workers on hive 'gpu-box'"));

    let open = TestHive::start().await;
    let lines = open
        .run_job(json!({"operation": "worker_list", "hive_id": "tap"}))
        .await;
    assert_eq!(
        lines[0],
        "[hv-router ] worker_list_start: 📋 Listing workers on hive 'tap'"
    );
}

#[tokio::test]
async fn json_format_has_ids_a_result_and_ends_with_done() {
    let hive = TestHive::start().await;
    let job_id = hive.submit(list_body()).await;
    let response = hive
        .get(&format!("/v1/jobs/{job_id}/stream?format=json"))
        .await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = sse::events(&response.text().await.unwrap());
    let kinds: Vec<_> = events.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(
        kinds,
        ["narration", "narration", "narration", "result", "done"]
    );
    let ids: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(
        ids,
        [
            Some("1".into()),
            Some("2".into()),
            Some("3".into()),
            Some("4".into()),
            None
        ]
    );
    let first: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(first["seq"], 1);
    assert_eq!(first["job_id"], job_id);
    assert_eq!(first["actor"], "hv-router");
    assert_eq!(first["action"], "worker_list_start");
    assert_eq!(first["level"], "info");
    assert_eq!(first["human"], "📋 Listing workers on hive 'localhost'");
    assert!(first["ts"].is_string() && first["fields"].is_object());
    let result: Value = serde_json::from_str(&events[3].data).unwrap();
    assert_eq!(result, json!({"workers": []}));
    let done: Value = serde_json::from_str(&events[4].data).unwrap();
    assert_eq!(done, json!({"state": "succeeded", "error": null}));
}

#[tokio::test]
async fn last_event_id_resumes_after_that_event() {
    let hive = TestHive::start().await;
    let job_id = hive.submit(list_body()).await;
    let response = hive
        .client
        .get(hive.url(&format!("/v1/jobs/{job_id}/stream?format=json")))
        .header("Last-Event-ID", "2")
        .send()
        .await
        .unwrap();
    let events = sse::events(&response.text().await.unwrap());
    assert_eq!(events[0].id.as_deref(), Some("3"));
    assert_eq!(events.len(), 3, "event 3, the result, and done");
    let bad = hive
        .client
        .get(hive.url(&format!("/v1/jobs/{job_id}/stream?format=json")))
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn ndjson_format_is_one_object_per_line() {
    let hive = TestHive::start().await;
    let job_id = hive.submit(list_body()).await;
    let response = hive
        .client
        .get(hive.url(&format!("/v1/jobs/{job_id}/stream")))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let objects: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 5);
    assert_eq!(objects[0]["event"], "narration");
    assert_eq!(
        objects[4],
        json!({"event": "done", "data": {"state": "succeeded", "error": null}})
    );
}

#[tokio::test]
async fn token_protects_every_route_but_health() {
    let hive = TestHive::builder().token("s3cret-token").start().await;
    let anonymous = reqwest::Client::new();
    let health = anonymous.get(hive.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    for (method, path) in [
        ("POST", "/v1/jobs"),
        ("GET", "/capabilities"),
        ("GET", "/v1/jobs"),
    ] {
        let response = anonymous
            .request(method.parse().unwrap(), hive.url(path))
            .header("content-type", "application/json")
            .body(list_body().to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized");
    }
    let wrong = anonymous
        .post(hive.url("/v1/jobs"))
        .bearer_auth("s3cret-tokeN")
        .json(&list_body())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    // The fixture's client sends the right token.
    assert_done(&hive.run_job(list_body()).await);
}

#[tokio::test]
async fn sigterm_exits_zero_and_health_stops_answering() {
    let mut hive = TestHive::start().await;
    hive.run_job(list_body()).await;
    hive.signal(nix::sys::signal::Signal::SIGTERM);
    let status = hive
        .wait_exit(Duration::from_secs(5))
        .expect("hive exits within 5 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", hive.log());
    let refused = reqwest::Client::new().get(hive.url("/health")).send().await;
    assert!(refused.is_err(), "/health still answers after exit");
    assert!(os::port_free(hive.addr.port()));
}

#[tokio::test]
async fn capabilities_report_cpu_and_parse_nvidia_smi() {
    let hive = TestHive::start().await;
    // Point the hive at an `nvidia-smi` that prints the real H100 capture.
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/devices/fixtures/nvidia-smi/query-gpu-noheader-nounits.csv"
    );
    let fake = hive.dir.path().join("nvidia-smi");
    std::fs::write(&fake, format!("#!/bin/sh\nexec cat '{fixture}'\n")).unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let failing = hive.dir.path().join("nvidia-smi-failing");
    std::fs::write(
        &failing,
        "#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &failing,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let cpu_only = hive.get_json("/capabilities").await;
    let devices = cpu_only["devices"].as_array().unwrap();
    assert_eq!(
        devices.len(),
        1,
        "the test hive's nvidia-smi does not exist: {cpu_only}"
    );
    assert_eq!(devices[0]["id"], "CPU-0");
    assert_eq!(devices[0]["device_type"], "cpu");
    assert_eq!(devices[0]["compute_capability"], Value::Null);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(devices[0]["vram_gb"], kib / 1024 / 1024);
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(
        devices[0]["name"]
            .as_str()
            .unwrap()
            .contains(&format!("({cores} cores)"))
    );
    assert_eq!(hive.get_json("/v1/capabilities").await, cpu_only);

    let with_gpu = TestHive::builder()
        .nvidia_smi(fake.to_str().unwrap())
        .start()
        .await;
    let caps = with_gpu.get_json("/capabilities").await;
    assert_eq!(
        caps["devices"][0],
        json!({"id": "GPU-0", "name": "NVIDIA H100 80GB HBM3", "device_type": "gpu", "vram_gb": 79, "compute_capability": "9.0"})
    );
    assert_eq!(caps["devices"][1]["id"], "CPU-0");

    let broken = TestHive::builder()
        .nvidia_smi(failing.to_str().unwrap())
        .start()
        .await;
    let caps = broken.get_json("/capabilities").await;
    assert_eq!(
        caps["devices"].as_array().unwrap().len(),
        1,
        "a failing nvidia-smi means no GPU: {caps}"
    );
}

#[tokio::test]
async fn print_config_shows_the_merged_result() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hive.toml");
    std::fs::write(
        &config,
        "port = 9000\nhive_id = \"from-file\"\nqueen_url = \"http://file\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(rbee_hive_e2e::binaries::program("rbee-hive"))
        .arg("--config")
        .arg(&config)
        .args(["--print-config", "--port", "9100"])
        .env("RBEE_HIVE_PORT", "9050")
        .env("RBEE_HIVE_HIVE_ID", "from-env")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("port = 9100"), "flag beats env: {text}");
    assert!(
        text.contains("hive_id = \"from-env\""),
        "env beats file: {text}"
    );
    assert!(
        text.contains("queen_url = \"http://file\""),
        "file beats default: {text}"
    );
    assert!(text.contains("bind = \"127.0.0.1\""), "default: {text}");
}

#[tokio::test]
async fn non_loopback_bind_without_token_is_refused() {
    let output = std::process::Command::new(rbee_hive_e2e::binaries::program("rbee-hive"))
        .args(["--bind", "0.0.0.0", "--port", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0 without an API token"),
        "{stderr}"
    );
}
