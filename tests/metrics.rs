//! `GET /metrics` (issue 13, item 4): valid OpenMetrics (checked with a real parser), the
//! token like every route unless `metrics_public`, numbers that follow what happened, and
//! no holes: every series whose labels are known up front is there at 0 (issue 20).

use std::time::Duration;

use rbee_hive_e2e::lines::assert_line;
use rbee_hive_e2e::openmetrics::{samples, validate, value};
use rbee_hive_e2e::wait::wait_for;
use rbee_hive_e2e::{TestHive, delete_body, demo_worker_type};
use serde_json::json;

async fn scrape(hive: &TestHive) -> (u16, String, String) {
    let response = hive.get("/metrics").await;
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
    let stubborn_id = stubborn["id"].as_str().unwrap();
    let lines = hive.run_job(delete_body(stubborn_id, Some(100))).await;
    assert_line(&lines, "SIGKILL");
    let lines = hive
        .run_job(json!({"operation": "model_get", "hive_id": "localhost", "id": "nope"}))
        .await;
    assert!(lines.iter().any(|l| l.starts_with("[ERROR]")));
    // Wait for a resource sample of the demo worker; every scrape is valid meanwhile.
    let (_, _, text) = wait_for(
        "a resource sample of the demo worker",
        Duration::from_secs(20),
        || scrape(&hive),
        |(status, content_type, text)| {
            assert_eq!(*status, 200, "{text}");
            assert!(
                content_type.starts_with("application/openmetrics-text"),
                "{content_type}"
            );
            assert!(text.ends_with("# EOF\n"), "{text}");
            value(
                &samples(text),
                "rbee_hive_worker_resident_memory_bytes",
                &[],
            )
            .is_some()
        },
    )
    .await;
    let samples = samples(&text);
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
    check_with_the_strict_parser(&text, &samples);
}

/// With the strict parser installed: the text is valid OpenMetrics, and the parser reads
/// the same numbers as the tests do.
#[cfg(openmetrics_parser)]
fn check_with_the_strict_parser(text: &str, samples: &[serde_json::Value]) {
    let strict = validate(text);
    for sample in samples {
        let name = sample["name"].as_str().unwrap();
        let labels: Vec<(&str, &str)> = sample["labels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
            .collect();
        let (strict, ours) = (value(&strict, name, &labels), sample["value"].as_f64());
        // The same number, give or take the last bit of a float's printing.
        let same = match (strict, ours) {
            (Some(a), Some(b)) => a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
            _ => false,
        };
        assert!(same, "{name} {labels:?}: {strict:?} against {ours:?}");
    }
}

#[cfg(not(openmetrics_parser))]
fn check_with_the_strict_parser(_: &str, _: &[serde_json::Value]) {}

#[tokio::test]
#[cfg_attr(
    not(openmetrics_parser),
    ignore = "Python's prometheus_client is not installed (.ci/run installs it; see tests/support/build.rs)"
)]
async fn metrics_are_valid_openmetrics_for_a_strict_parser() {
    let hive = TestHive::with_config(&["telemetry_interval_ms = 100"]).await;
    let (_, _, empty) = scrape(&hive).await;
    validate(&empty);
    hive.spawn_ready("demo").await;
    hive.run_job(json!({"operation": "model_get", "hive_id": "localhost", "id": "nope"}))
        .await;
    wait_for(
        "a resource sample of the demo worker",
        Duration::from_secs(20),
        || async { scrape(&hive).await.2 },
        |text| {
            let strict = validate(text);
            value(&strict, "rbee_hive_worker_resident_memory_bytes", &[]).is_some()
        },
    )
    .await;
    // And it is strict: text that is not OpenMetrics is refused.
    let refused = std::panic::catch_unwind(|| validate("# TYPE x counter\nx 1\n# EOF\n"));
    assert!(refused.is_err(), "a counter sample without _total");
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
    let text = anonymous.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"));
    assert!(value(&samples(&text), "rbee_hive_process_open_fds", &[]).is_some());
    // Only /metrics: the rest still needs the token.
    let jobs = reqwest::get(hive.url("/v1/jobs")).await.unwrap();
    assert_eq!(jobs.status().as_u16(), 401);
}

#[tokio::test]
async fn an_empty_hive_exports_every_known_series_at_zero() {
    let hive = TestHive::with_config(&[&demo_worker_type("mine", &[], 30.0)]).await;
    let (status, _, text) = scrape(&hive).await;
    assert_eq!(status, 200);
    let samples = samples(&text);
    for worker_type in ["demo", "cpu", "cuda", "llama", "mine"] {
        for state in ["starting", "ready", "busy", "stopped", "failed"] {
            assert_eq!(
                value(
                    &samples,
                    "rbee_hive_workers",
                    &[("state", state), ("worker_type", worker_type)]
                ),
                Some(0.0),
                "workers{{state={state}, worker_type={worker_type}}}"
            );
        }
        for counter in [
            "rbee_hive_worker_restarts_total",
            "rbee_hive_worker_crash_loops_total",
        ] {
            assert_eq!(
                value(&samples, counter, &[("worker_type", worker_type)]),
                Some(0.0),
                "{counter}{{worker_type={worker_type}}}"
            );
        }
    }
    for outcome in ["succeeded", "failed", "cancelled"] {
        for operation in [
            "worker_spawn",
            "worker_list",
            "worker_delete",
            "model_download",
        ] {
            assert_eq!(
                value(
                    &samples,
                    "rbee_hive_jobs_total",
                    &[("operation", operation), ("outcome", outcome)]
                ),
                Some(0.0),
                "jobs{{{operation}, {outcome}}}"
            );
        }
    }
    for reason in ["exit_code_0", "exit_code_nonzero", "signal", "unknown"] {
        assert_eq!(
            value(
                &samples,
                "rbee_hive_worker_exits_total",
                &[("reason", reason)]
            ),
            Some(0.0)
        );
    }
    for outcome in ["applied", "refused"] {
        assert_eq!(
            value(
                &samples,
                "rbee_hive_config_reloads_total",
                &[("outcome", outcome)]
            ),
            Some(0.0)
        );
    }
}
