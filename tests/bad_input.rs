//! Bad input, tried and recorded (issue 4): every malformed request gets a clear 4xx with a
//! JSON error, or becomes a job that fails with a reason; the hive stays healthy and its
//! registry does not change. The table is printed (`cargo test --test bad_input -- --nocapture`).

use rbee_hive_e2e::TestHive;
use rbee_hive_e2e::lines::assert_no_line;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// What a bad request must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This status and JSON error code.
    Status(u16, &'static str),
    /// A job that fails, its reason containing this text.
    FailedJob(&'static str),
}

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    expect: Expect,
}

fn post(name: &'static str, body: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case {
        name,
        method: Method::POST,
        path: "/v1/jobs".into(),
        content_type: Some("application/json"),
        headers: Vec::new(),
        body: body.into(),
        expect,
    }
}

fn bad(code: &'static str) -> Expect {
    Expect::Status(400, code)
}

fn cases(job_id: &str) -> Vec<Case> {
    let long = "x".repeat(5000);
    let nested = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let huge = format!(
        "{{\"operation\":\"worker_list\",\"hive_id\":\"{}\"}}",
        "h".repeat(70_000)
    );
    let mut cases = vec![
        // Syntax
        post("empty body", "", bad("malformed_json")),
        post("unclosed object", "{", bad("malformed_json")),
        post(
            "missing closing brace",
            r#"{"operation":"worker_list","hive_id":"localhost""#,
            bad("malformed_json"),
        ),
        post(
            "trailing garbage",
            r#"{"operation":"worker_list","hive_id":"localhost"}x"#,
            bad("malformed_json"),
        ),
        post(
            "trailing comma",
            r#"{"operation":"worker_list","hive_id":"localhost",}"#,
            bad("malformed_json"),
        ),
        post(
            "single quotes",
            "{'operation':'worker_list'}",
            bad("malformed_json"),
        ),
        post(
            "invalid UTF-8",
            vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'],
            bad("malformed_json"),
        ),
        post(
            "byte order mark",
            "\u{feff}{\"operation\":\"worker_list\",\"hive_id\":\"h\"}",
            bad("malformed_json"),
        ),
        post(
            "deeply nested array",
            nested.clone(),
            bad("invalid_request"),
        ),
        post(
            "deeply nested field",
            format!(r#"{{"operation":"worker_list","hive_id":"h","x":{nested}}}"#),
            bad("malformed_json"),
        ),
        // Not an object
        post("null", "null", bad("invalid_request")),
        post("string", "\"worker_list\"", bad("invalid_request")),
        post("number", "42", bad("invalid_request")),
        post(
            "array",
            r#"[{"operation":"worker_list"}]"#,
            bad("invalid_request"),
        ),
        // Operation
        post(
            "no operation",
            r#"{"hive_id":"localhost"}"#,
            bad("missing_field"),
        ),
        post(
            "operation is a number",
            r#"{"operation":1,"hive_id":"localhost"}"#,
            bad("invalid_field"),
        ),
        post(
            "operation is null",
            r#"{"operation":null,"hive_id":"localhost"}"#,
            bad("invalid_field"),
        ),
        post(
            "unknown operation",
            r#"{"operation":"frobnicate","hive_id":"h"}"#,
            bad("unknown_operation"),
        ),
        post(
            "operation of the orchestrator",
            r#"{"operation":"worker_build","hive_id":"h"}"#,
            Expect::FailedJob("operation 'worker_build' is not run by this rbee-hive"),
        ),
        post(
            "operation in capitals",
            r#"{"operation":"WORKER_LIST","hive_id":"h"}"#,
            bad("unknown_operation"),
        ),
        post(
            "operation with a space",
            r#"{"operation":"worker_list ","hive_id":"h"}"#,
            bad("unknown_operation"),
        ),
        // Types
        post(
            "hive_id is a number",
            r#"{"operation":"worker_list","hive_id":7}"#,
            bad("invalid_field"),
        ),
        post(
            "hive_id is an array",
            r#"{"operation":"worker_list","hive_id":["h"]}"#,
            bad("invalid_field"),
        ),
        post(
            "id is an object",
            r#"{"operation":"worker_get","hive_id":"h","id":{"n":1}}"#,
            bad("invalid_field"),
        ),
        post(
            "device is negative",
            spawn(r#""device":-1"#),
            bad("invalid_field"),
        ),
        post(
            "device is a fraction",
            spawn(r#""device":1.5"#),
            bad("invalid_field"),
        ),
        post(
            "device is a string",
            spawn(r#""device":"0""#),
            bad("invalid_field"),
        ),
        post(
            "device is huge",
            spawn(r#""device":1e100"#),
            bad("invalid_field"),
        ),
        post(
            "device above u32",
            spawn(r#""device":4294967296"#),
            bad("invalid_field"),
        ),
        post(
            "model is a number",
            r#"{"operation":"worker_spawn","hive_id":"h","model":5,"worker":"demo","device":0}"#,
            bad("invalid_field"),
        ),
        post(
            "worker is a boolean",
            r#"{"operation":"worker_spawn","hive_id":"h","model":"m","worker":true,"device":0}"#,
            bad("invalid_field"),
        ),
        post(
            "grace_ms is a string",
            r#"{"operation":"worker_delete","hive_id":"h","id":"worker-1","grace_ms":"10"}"#,
            bad("invalid_field"),
        ),
        post(
            "grace_ms is negative",
            r#"{"operation":"worker_delete","hive_id":"h","id":"worker-1","grace_ms":-5}"#,
            bad("invalid_field"),
        ),
        post(
            "grace_ms is huge",
            r#"{"operation":"worker_delete","hive_id":"h","id":"worker-1","grace_ms":18446744073709551615}"#,
            Expect::FailedJob("field `grace_ms` must be at most 3600000"),
        ),
        // Missing fields
        post(
            "spawn without model",
            r#"{"operation":"worker_spawn","hive_id":"h","worker":"demo","device":0}"#,
            bad("missing_field"),
        ),
        post(
            "delete without id",
            r#"{"operation":"worker_delete","hive_id":"h"}"#,
            bad("missing_field"),
        ),
        post(
            "list without hive_id",
            r#"{"operation":"worker_list"}"#,
            bad("missing_field"),
        ),
        // Sizes
        post(
            "body over the limit",
            huge,
            Expect::Status(413, "body_too_large"),
        ),
        post(
            "hive_id over 256 bytes",
            format!(
                r#"{{"operation":"worker_list","hive_id":"{}"}}"#,
                &long[..300]
            ),
            Expect::FailedJob("field `hive_id` is longer than 256 bytes"),
        ),
        post(
            "model over 4096 bytes",
            format!(
                r#"{{"operation":"worker_spawn","hive_id":"h","model":"{long}","worker":"demo","device":0}}"#
            ),
            Expect::FailedJob("field `model` is longer than 4096 bytes"),
        ),
        post(
            "empty id",
            r#"{"operation":"worker_get","hive_id":"h","id":""}"#,
            Expect::FailedJob("field `id` must not be empty"),
        ),
        post(
            "empty hive_id",
            r#"{"operation":"worker_list","hive_id":""}"#,
            Expect::FailedJob("field `hive_id` must not be empty"),
        ),
        // Unicode and control characters
        post(
            "NUL in hive_id",
            r#"{"operation":"worker_list","hive_id":"a\u0000b"}"#,
            Expect::FailedJob("field `hive_id` must not contain control characters"),
        ),
        post(
            "newline in hive_id",
            r#"{"operation":"worker_list","hive_id":"a\nb"}"#,
            Expect::FailedJob("field `hive_id` must not contain control characters"),
        ),
        post(
            "escape sequence in model",
            spawn_model("\\u001b[31mred"),
            Expect::FailedJob("field `model` must not contain control characters"),
        ),
        post(
            "NUL in id",
            r#"{"operation":"worker_delete","hive_id":"h","id":"worker-1\u0000"}"#,
            Expect::FailedJob("field `id` must not contain control characters"),
        ),
        post(
            "lone surrogate",
            r#"{"operation":"worker_list","hive_id":"\ud800"}"#,
            bad("malformed_json"),
        ),
        post(
            "right-to-left override in id",
            r#"{"operation":"worker_get","hive_id":"h","id":"worker-\u202e1"}"#,
            Expect::FailedJob("field `id` must be a worker id"),
        ),
        post(
            "id with spaces",
            r#"{"operation":"worker_get","hive_id":"h","id":"worker 1"}"#,
            Expect::FailedJob("field `id` must be a worker id"),
        ),
        // Ids with path tricks: refused as unknown workers, nothing touched
        post(
            "id with slash",
            r#"{"operation":"worker_delete","hive_id":"h","id":"worker-1/../worker-2"}"#,
            Expect::FailedJob("not found"),
        ),
        post(
            "id with dot-dot",
            r#"{"operation":"worker_get","hive_id":"h","id":"../../etc/passwd"}"#,
            Expect::FailedJob("not found"),
        ),
        post(
            "id beyond u64",
            r#"{"operation":"worker_get","hive_id":"h","id":"worker-18446744073709551616"}"#,
            Expect::FailedJob("not found"),
        ),
        post(
            "id with leading zero",
            r#"{"operation":"worker_delete","hive_id":"h","id":"worker-01"}"#,
            Expect::FailedJob("not found"),
        ),
        post(
            "id is a pid",
            r#"{"operation":"worker_delete","hive_id":"h","id":"1"}"#,
            Expect::FailedJob("not found"),
        ),
        // Values that could become flags or paths
        post(
            "model starting with -",
            spawn_model("--help"),
            Expect::FailedJob("field `model` must not start with '-'"),
        ),
        post(
            "model that is a flag",
            spawn_model("-rf"),
            Expect::FailedJob("field `model` must not start with '-'"),
        ),
        post(
            "worker type with a path",
            r#"{"operation":"worker_spawn","hive_id":"h","model":"m","worker":"../../bin/sh","device":0}"#,
            Expect::FailedJob("field `worker` must be a worker type name"),
        ),
        post(
            "unknown worker type",
            r#"{"operation":"worker_spawn","hive_id":"h","model":"m","worker":"tpu","device":0}"#,
            Expect::FailedJob("unknown worker type 'tpu'"),
        ),
        // Keys
        post(
            "duplicated operation",
            r#"{"operation":"worker_list","operation":"worker_delete","hive_id":"h","id":"worker-1"}"#,
            bad("duplicate_key"),
        ),
        post(
            "duplicated id",
            r#"{"operation":"worker_delete","hive_id":"h","id":"worker-9","id":"worker-1"}"#,
            bad("duplicate_key"),
        ),
        post(
            "unknown fields are ignored",
            r#"{"operation":"worker_get","hive_id":"h","id":"worker-99","force":true}"#,
            Expect::FailedJob("not found"),
        ),
        // Content types
        Case {
            content_type: None,
            ..post(
                "no content type",
                r#"{"operation":"worker_list","hive_id":"h"}"#,
                Expect::Status(415, "unsupported_media_type"),
            )
        },
        Case {
            content_type: Some("text/plain"),
            ..post(
                "text/plain",
                r#"{"operation":"worker_list","hive_id":"h"}"#,
                Expect::Status(415, "unsupported_media_type"),
            )
        },
        Case {
            content_type: Some("application/x-www-form-urlencoded"),
            ..post(
                "form encoded",
                "operation=worker_list",
                Expect::Status(415, "unsupported_media_type"),
            )
        },
        Case {
            content_type: Some("multipart/form-data; boundary=x"),
            ..post(
                "multipart",
                "--x--",
                Expect::Status(415, "unsupported_media_type"),
            )
        },
    ];
    // Wrong methods and routes
    for (name, method, path) in [
        ("PUT on /v1/jobs", Method::PUT, "/v1/jobs".to_owned()),
        (
            "PATCH on a job",
            Method::PATCH,
            format!("/v1/jobs/{job_id}"),
        ),
        ("POST on /health", Method::POST, "/health".to_owned()),
        ("DELETE on /v1/jobs", Method::DELETE, "/v1/jobs".to_owned()),
        (
            "POST on a stream",
            Method::POST,
            format!("/v1/jobs/{job_id}/stream"),
        ),
    ] {
        cases.push(Case {
            method,
            path,
            content_type: None,
            ..post(name, "", Expect::Status(405, "method_not_allowed"))
        });
    }
    cases.push(Case {
        method: Method::GET,
        path: "/v1/jobs/job-..%2F..%2Fetc%2Fpasswd/stream".into(),
        ..post(
            "job id with path tricks",
            "",
            Expect::Status(404, "job_not_found"),
        )
    });
    cases.push(Case {
        method: Method::GET,
        path: format!("/v1/jobs/{job_id}/stream"),
        headers: vec![("last-event-id", "-1".into())],
        ..post("negative Last-Event-ID", "", bad("invalid_header"))
    });
    cases.push(Case {
        method: Method::GET,
        path: format!("/v1/jobs/{job_id}/stream?format=xml"),
        ..post("unknown stream format", "", bad("invalid_query"))
    });
    cases.push(Case {
        path: "/v1/heartbeat".into(),
        ..post(
            "heartbeat with a bad health",
            r#"{"worker_id":"worker-1","health_status":"sick"}"#,
            bad("invalid_heartbeat"),
        )
    });
    cases.push(Case {
        path: "/v1/heartbeat".into(),
        ..post(
            "heartbeat for an unknown worker",
            r#"{"worker_id":"worker-77","health_status":"healthy"}"#,
            Expect::Status(404, "worker_not_found"),
        )
    });
    cases
}

fn spawn(device: &str) -> String {
    format!(r#"{{"operation":"worker_spawn","hive_id":"h","model":"m","worker":"demo",{device}}}"#)
}

fn spawn_model(model: &str) -> String {
    format!(
        r#"{{"operation":"worker_spawn","hive_id":"h","model":"{model}","worker":"demo","device":0}}"#
    )
}

async fn send(hive: &TestHive, client: &reqwest::Client, case: &Case) -> (StatusCode, Value) {
    let mut request = client
        .request(case.method.clone(), hive.url(&case.path))
        .body(case.body.clone());
    if let Some(content_type) = case.content_type {
        request = request.header("content-type", content_type);
    }
    for (name, value) in &case.headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn registry_state(hive: &TestHive) -> Vec<(String, u64, String)> {
    hive.workers()
        .await
        .iter()
        .map(|w| {
            (
                w["id"].as_str().unwrap().to_owned(),
                w["pid"].as_u64().unwrap(),
                w["status"].to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_malformed_request_is_refused_clearly_and_changes_nothing() {
    let hive = TestHive::start().await;
    hive.spawn_ready("demo").await;
    let job_id = hive
        .submit(serde_json::json!({"operation": "worker_list", "hive_id": "h"}))
        .await;
    hive.stream_lines(&job_id).await;
    let before = registry_state(&hive).await;
    let client = reqwest::Client::new();
    let cases = cases(&job_id);
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    println!("{:<36} | {:<6} | result", "bad input", "status");
    for case in &cases {
        let (status, answer) = send(&hive, &client, case).await;
        let outcome = match case.expect {
            Expect::Status(code, error_code) => {
                assert_eq!(status.as_u16(), code, "{}: {answer}", case.name);
                assert_eq!(answer["code"], error_code, "{}: {answer}", case.name);
                let message = answer["error"].as_str().unwrap_or_default();
                assert!(
                    message.len() > 10,
                    "{}: the error says what to fix: {answer}",
                    case.name
                );
                format!("{error_code}: {message}")
            }
            Expect::FailedJob(reason) => {
                assert_eq!(status, StatusCode::OK, "{}: {answer}", case.name);
                let lines = hive.stream_lines(answer["job_id"].as_str().unwrap()).await;
                let error = lines
                    .iter()
                    .find(|l| l.starts_with("[ERROR] "))
                    .cloned()
                    .unwrap_or_default();
                assert!(error.contains(reason), "{}: {lines:#?}", case.name);
                assert_eq!(lines.last().map(String::as_str), Some("[DONE]"));
                format!("failed job: {error}")
            }
        };
        let outcome: String = outcome.chars().take(90).collect();
        println!("{:<36} | {:<6} | {outcome}", case.name, status.as_u16());
    }
    let health = client.get(hive.url("/health")).send().await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok", "the hive stays healthy");
    assert_eq!(
        registry_state(&hive).await,
        before,
        "the registry is unchanged"
    );
    println!("{} bad inputs tried", cases.len());
}

#[tokio::test]
async fn missing_or_wrong_tokens_are_refused() {
    let hive = TestHive::builder().token("right-token").start().await;
    let client = reqwest::Client::new();
    let body = r#"{"operation":"worker_list","hive_id":"h"}"#;
    for (name, header) in [
        ("no token", None),
        ("wrong token", Some("Bearer wrong-token")),
        ("empty bearer", Some("Bearer ")),
        ("basic auth", Some("Basic cmlnaHQtdG9rZW4=")),
        ("token as prefix", Some("Bearer right-token-and-more")),
        ("token without scheme", Some("right-token")),
        ("scheme glued to the token", Some("Bearerright-token")),
    ] {
        let mut request = client
            .post(hive.url("/v1/jobs"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(value) = header {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["code"], "unauthorized", "{name}");
    }
    assert_eq!(hive.job_count().await, 0);
    // The scheme is case-insensitive (RFC 7235).
    let response = client
        .post(hive.url("/v1/jobs"))
        .header("content-type", "application/json")
        .header("authorization", "bearer right-token")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn another_hive_id_is_refused_when_the_hive_has_one() {
    let hive = TestHive::builder().hive_id("box-a").start().await;
    // Well-formed: a job that fails with the reason, and changes nothing.
    let lines = hive
        .run_job(serde_json::json!({"operation": "worker_spawn", "hive_id": "box-b", "model": "m", "worker": "demo", "device": 0}))
        .await;
    assert_eq!(
        lines[lines.len() - 2],
        "[ERROR] this hive is 'box-a', not 'box-b'; address it as 'box-a'"
    );
    assert_no_line(&lines, "worker_spawn_start");
    let listed = hive
        .job_result(serde_json::json!({"operation": "worker_list", "hive_id": "box-a"}))
        .await
        .unwrap();
    assert_eq!(
        listed["workers"],
        serde_json::json!([]),
        "nothing was started"
    );
}

#[tokio::test]
async fn an_oversized_chunked_body_gets_413_too() {
    let hive = TestHive::start().await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..70).map(|_| Ok(vec![b' '; 1024])).collect();
    let response = reqwest::Client::new()
        .post(hive.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("the hive answers instead of breaking the connection");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["code"], "body_too_large");
    assert_eq!(hive.job_count().await, 0);
}
