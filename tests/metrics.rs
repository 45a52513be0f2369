//! `GET /metrics` (issue 13, item 4): valid OpenMetrics (checked with a real parser), the
//! token like every route unless `metrics_public`, and numbers that follow what happened.

use rbee_hive_e2e::openmetrics::{parse, value};
use rbee_hive_e2e::{TestHive, demo_worker_type};
use serde_json::json;

async fn scrape(hive: &TestHive) -> (u16, String, String) {
    let response = hive.client.get(hive.url("/metrics")).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test]
async fn metrics_parse_and_follow_jobs_workers_and_stops() {
    let hive = TestHive::builder()
        .token("s3cret")
        .config("telemetry_interval_ms = 100")
        .config(&demo_worker_type("stubborn", &["--ignore-sigterm"], 30.0))
        .start()
        .await;
    // Like every route but /health, it needs the token.
    let anonymous = reqwest::get(hive.url("/metrics")).await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    let demo = hive.spawn_ready("demo").await;
    let stubborn = hive.spawn_ready("stubborn").await;
    let lines = hive
        .run_job(json!({"operation": "worker_delete", "hive_id": "localhost", "id": stubborn["id"], "grace_ms": 100}))
        .await;
    assert!(lines.iter().any(|l| l.contains("SIGKILL")), "{lines:#?}");
    let lines = hive
        .run_job(json!({"operation": "model_get", "hive_id": "localhost", "id": "nope"}))
        .await;
    assert!(lines.iter().any(|l| l.starts_with("[ERROR]")));
    // Wait for a resource sample of the demo worker.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let samples = loop {
        let (status, content_type, text) = scrape(&hive).await;
        assert_eq!(status, 200, "{text}");
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        let samples = parse(&text);
        if value(&samples, "rbee_hive_worker_resident_memory_bytes", &[]).is_some() {
            break samples;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no worker sample: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let id = demo["id"].as_str().unwrap();
    assert_eq!(
        value(
            &samples,
            "rbee_hive_workers",
            &[("state", "ready"), ("worker_type", "demo")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "rbee_hive_worker_sigkills_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "rbee_hive_jobs_total",
            &[("operation", "worker_spawn"), ("outcome", "succeeded")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &samples,
            "rbee_hive_jobs_total",
            &[("operation", "model_get"), ("outcome", "failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "rbee_hive_worker_spawn_to_ready_seconds_count",
            &[]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &samples,
            "rbee_hive_worker_stop_duration_seconds_count",
            &[]
        ),
        Some(1.0)
    );
    let memory = value(
        &samples,
        "rbee_hive_worker_resident_memory_bytes",
        &[
            ("worker_id", id),
            ("worker_type", "demo"),
            ("device", "CPU-0"),
        ],
    )
    .expect("the demo worker's memory");
    assert!(memory > 1_000_000.0, "{memory}");
    assert!(value(&samples, "rbee_hive_process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(value(&samples, "rbee_hive_process_open_fds", &[]).unwrap() >= 3.0);
}

#[tokio::test]
async fn metrics_can_be_public() {
    let hive = TestHive::builder()
        .token("s3cret")
        .config("metrics_public = true")
        .start()
        .await;
    let anonymous = reqwest::get(hive.url("/metrics")).await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 200);
    parse(&anonymous.text().await.unwrap());
    // Only /metrics: the rest still needs the token.
    let jobs = reqwest::get(hive.url("/v1/jobs")).await.unwrap();
    assert_eq!(jobs.status().as_u16(), 401);
}
