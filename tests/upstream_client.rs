//! The upstream rbee clients (queen-rbee's job client and rbee-keeper) against this hive
//! (issue 6), with a reader that follows their rules to the letter (`UPSTREAM.md`):
//!
//! - the body is a `serde_json::Value` re-serialised, so keys arrive in alphabetical order;
//! - `POST /v1/jobs` and then `GET /v1/jobs/{id}/stream` on **one keep-alive connection**;
//! - the POST status is not checked: a body without a string `job_id` is "Failed to parse
//!   job response"; a non-2xx stream is "SSE stream returned error: <body>";
//! - each chunk is decoded as UTF-8 and split into lines; `data: ` is stripped, any other
//!   non-empty line is passed on as data; the first line containing `[DONE]` ends the job
//!   with success, `[ERROR]` (reason after it) or `[CANCELLED]` with failure;
//! - the keeper prints each line as `[qn-fwd    ] forward_data   : <line>` and calls the job
//!   failed if a line contains `failed:`, or both `Job` and `failed`.

use std::time::Duration;

use rbee_hive_e2e::os::pid_alive;
use rbee_hive_e2e::wait::wait_for;
use rbee_hive_e2e::{TestHive, demo_worker_type, stubborn_type};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What the upstream job client concludes.
#[derive(Debug, PartialEq, Eq)]
enum JobOutcome {
    Success,
    Failure(String),
}

/// What a keeper user sees for one command.
#[derive(Debug)]
struct KeeperView {
    printed: Vec<String>,
    outcome: JobOutcome,
    keeper_says_failed: bool,
}

/// One keep-alive HTTP/1.1 connection, as the queen's job client holds it.
struct UpstreamConnection {
    stream: BufReader<TcpStream>,
    host: String,
}

struct Response {
    chunks: Vec<Vec<u8>>,
}

impl UpstreamConnection {
    async fn connect(hive: &TestHive) -> Self {
        let stream = TcpStream::connect(hive.addr).await.expect("connect");
        Self {
            stream: BufReader::new(stream),
            host: hive.addr.to_string(),
        }
    }

    async fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
        let mut status_line = String::new();
        self.stream
            .read_line(&mut status_line)
            .await
            .expect("status line");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await.expect("header");
            let line = line.trim_end();
            if line.is_empty() {
                return (status, headers);
            }
            let (name, value) = line.split_once(':').expect("header line");
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }

    /// Reads one HTTP chunk; `None` at the last chunk.
    async fn read_chunk(&mut self) -> Option<Vec<u8>> {
        let mut size_line = String::new();
        self.stream
            .read_line(&mut size_line)
            .await
            .expect("chunk size");
        let size = usize::from_str_radix(size_line.trim(), 16).expect("hex chunk size");
        let mut data = vec![0; size + 2];
        self.stream.read_exact(&mut data).await.expect("chunk data");
        data.truncate(size);
        (size > 0).then_some(data)
    }

    async fn read_body(&mut self, headers: &[(String, String)]) -> Vec<Vec<u8>> {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        if let Some(length) = header("content-length") {
            let mut body = vec![0; length.parse().expect("length")];
            self.stream.read_exact(&mut body).await.expect("body");
            return vec![body];
        }
        assert_eq!(header("transfer-encoding").as_deref(), Some("chunked"));
        let mut chunks = Vec::new();
        while let Some(chunk) = self.read_chunk().await {
            chunks.push(chunk);
        }
        chunks
    }

    async fn request(&mut self, head: String, body: &[u8]) -> Response {
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.stream
            .get_mut()
            .write_all(&bytes)
            .await
            .expect("write request");
        // The upstream does not check the POST status; neither does this client.
        let (_status, headers) = self.read_head().await;
        let chunks = self.read_body(&headers).await;
        Response { chunks }
    }

    /// The queen's submit: `Err` is what its job client reports.
    async fn submit(&mut self, operation: &Value) -> Result<String, String> {
        // A Value re-serialised: serde_json's map is ordered, so the keys come out sorted.
        let body = serde_json::to_string(&serde_json::to_value(operation).unwrap()).unwrap();
        let head = format!(
            "POST /v1/jobs HTTP/1.1\r\ncontent-type: application/json\r\naccept: */*\r\nhost: {}\r\ncontent-length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let response = self.request(head, body.as_bytes()).await;
        let body = response.chunks.concat();
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["job_id"].as_str().map(str::to_owned))
            .ok_or_else(|| "Failed to parse job response".to_owned())
    }

    /// The queen's stream reading, line by line, as the keeper prints it.
    async fn stream(&mut self, job_id: &str) -> KeeperView {
        let head = format!(
            "GET /v1/jobs/{job_id}/stream HTTP/1.1\r\naccept: */*\r\nhost: {}\r\n\r\n",
            self.host
        );
        self.stream
            .get_mut()
            .write_all(head.as_bytes())
            .await
            .expect("write GET");
        let (status, headers) = self.read_head().await;
        let mut printed = Vec::new();
        if !(200..300).contains(&status) {
            let body =
                String::from_utf8_lossy(&self.read_body(&headers).await.concat()).into_owned();
            return KeeperView {
                printed,
                outcome: JobOutcome::Failure(format!("SSE stream returned error: {body}")),
                keeper_says_failed: true,
            };
        }
        let mut keeper_says_failed = false;
        let outcome = loop {
            let Some(chunk) = self.read_chunk().await else {
                break JobOutcome::Success;
            };
            let text = String::from_utf8(chunk).expect("each chunk is UTF-8");
            let mut ended = None;
            for line in text.lines() {
                let data = match line.strip_prefix("data: ") {
                    Some(data) => data,
                    None if line.is_empty() => continue,
                    None => line,
                };
                printed.push(format!("[qn-fwd    ] forward_data   : {data}"));
                keeper_says_failed |=
                    data.contains("failed:") || (data.contains("Job") && data.contains("failed"));
                if data.contains("[DONE]") {
                    ended = Some(JobOutcome::Success);
                } else if let Some(reason) = data.split("[ERROR]").nth(1) {
                    ended = Some(JobOutcome::Failure(reason.trim().to_owned()));
                } else if data.contains("[CANCELLED]") {
                    ended = Some(JobOutcome::Failure("cancelled".to_owned()));
                }
                if ended.is_some() {
                    break;
                }
            }
            if let Some(outcome) = ended {
                break outcome;
            }
        };
        KeeperView {
            printed,
            outcome,
            keeper_says_failed,
        }
    }

    /// One keeper command: POST, then the stream, on this one connection.
    async fn run(&mut self, operation: Value) -> Result<KeeperView, String> {
        let job_id = self.submit(&operation).await?;
        Ok(self.stream(&job_id).await)
    }
}

/// One keeper command: a fresh connection, POST then stream on it (the client stops reading
/// at the first terminal line, so the connection is not reused for the next command).
async fn keeper(hive: &TestHive, operation: Value) -> Result<KeeperView, String> {
    UpstreamConnection::connect(hive).await.run(operation).await
}

fn printed_text(view: &KeeperView) -> String {
    view.printed.join("\n")
}

/// Asserts that the keeper printed `needle` (in `text`, what it printed).
#[track_caller]
fn assert_printed(text: &str, needle: &str) {
    assert!(text.contains(needle), "{text}");
}

/// The keeper's `--device cuda:1` arrives as `worker: "cuda", device: 1`; this hive runs its
/// demo worker under the `cuda` name, on a hive whose `nvidia-smi` reports two GPUs, so that
/// the path is tested without a GPU.
fn cuda_as_demo() -> String {
    demo_worker_type("cuda", &[], 30.0) + "device = \"gpu\"\n"
}

#[tokio::test]
async fn the_upstream_client_drives_spawn_process_list_get_and_delete() {
    let hive = TestHive::builder()
        .config(&cuda_as_demo())
        .gpus(2)
        .start()
        .await;

    // rbee-keeper worker --hive gpu-box spawn --model tiny --device cuda:1
    let spawn = keeper(
            &hive,json!({"operation": "worker_spawn", "hive_id": "gpu-box", "model": "tiny", "worker": "cuda", "device": 1}))
        .await
        .expect("job accepted");
    assert_eq!(
        spawn.outcome,
        JobOutcome::Success,
        "{}",
        printed_text(&spawn)
    );
    assert!(!spawn.keeper_says_failed, "{}", printed_text(&spawn));
    assert_eq!(
        spawn.printed[0],
        "[qn-fwd    ] forward_data   : [hv-router ] worker_spawn_start: 🚀 Spawning cuda worker for model 'tiny' on device 1 on hive 'gpu-box'"
    );
    assert!(
        printed_text(&spawn).contains("device GPU-1"),
        "{}",
        printed_text(&spawn)
    );
    assert_eq!(
        spawn.printed.last().unwrap(),
        "[qn-fwd    ] forward_data   : [DONE]"
    );
    let worker = hive.worker("worker-1").await.unwrap();
    let pid = worker["pid"].as_u64().unwrap();
    assert_eq!(worker["device"], "GPU-1");

    // … process list
    let list = keeper(
        &hive,
        json!({"operation": "worker_process_list", "hive_id": "gpu-box"}),
    )
    .await
    .unwrap();
    assert_eq!(list.outcome, JobOutcome::Success);
    assert_eq!(
        list.printed[..2],
        [
            "[qn-fwd    ] forward_data   : [hv-router ] worker_proc_list_start: 📋 Listing worker processes on hive 'gpu-box'".to_string(),
            "[qn-fwd    ] forward_data   : [hv-router ] worker_proc_list_result: Found 1 worker process(es)".to_string(),
        ]
    );
    // Upstream's template order: PID | MB | CPU | elapsed | command, each filled.
    let entry = &list.printed[2];
    let fields: Vec<&str> = entry
        .split_once("worker_proc_list_entry:   ")
        .unwrap_or_else(|| panic!("{entry}"))
        .1
        .split(" | ")
        .collect();
    assert_eq!(fields.len(), 5, "{entry}");
    assert_eq!(fields[0], format!("PID {pid}"), "{entry}");
    let megabytes = fields[1]
        .strip_suffix(" MB")
        .unwrap_or_else(|| panic!("{entry}"));
    assert!(megabytes.parse::<f64>().unwrap() > 0.0, "{entry}");
    let cpu = fields[2]
        .strip_suffix("% CPU")
        .unwrap_or_else(|| panic!("{entry}"));
    assert!(cpu.parse::<f64>().is_ok(), "{entry}");
    assert!(
        fields[3]
            .chars()
            .all(|c| c.is_ascii_digit() || c == ':' || c == '-'),
        "elapsed as ps shows it: {entry}"
    );
    assert!(
        fields[4].contains("rbee-demo-worker --worker-id worker-1"),
        "{entry}"
    );

    // … process get <pid>
    let get = keeper(
        &hive,
        json!({"operation": "worker_process_get", "hive_id": "gpu-box", "pid": pid}),
    )
    .await
    .unwrap();
    assert_eq!(get.outcome, JobOutcome::Success, "{}", printed_text(&get));
    let text = printed_text(&get);
    assert_printed(
        &text,
        &format!("worker_proc_get_start: 🔍 Getting worker process PID {pid} on hive 'gpu-box'"),
    );
    assert_printed(&text, &format!("worker_proc_get_found: ✅ PID {pid}: "));
    assert_printed(&text, "worker_proc_get_details: {");
    assert!(
        text.contains("\"memory_kb\": ")
            && text.contains("\"cpu_percent\": ")
            && text.contains("\"elapsed\": "),
        "{text}"
    );
    assert_printed(&text, "\"worker_id\": \"worker-1\"");

    // … process delete <pid>
    let delete = keeper(
        &hive,
        json!({"operation": "worker_process_delete", "hive_id": "gpu-box", "pid": pid}),
    )
    .await
    .unwrap();
    assert_eq!(
        delete.outcome,
        JobOutcome::Success,
        "{}",
        printed_text(&delete)
    );
    let text = printed_text(&delete);
    assert_printed(
        &text,
        &format!("worker_proc_del_start: 🗑️  Deleting worker process PID {pid} on hive 'gpu-box'"),
    );
    assert_printed(
        &text,
        "worker_delete_sigterm: Sent SIGTERM to worker process",
    );
    assert_printed(
        &text,
        &format!("worker_proc_del_ok: ✅ Worker process PID {pid} deleted successfully"),
    );
    assert!(!pid_alive(pid as u32));
    assert!(hive.workers().await.is_empty());
}

#[tokio::test]
async fn a_pid_that_is_not_a_managed_worker_fails_and_is_never_signalled() {
    let hive = TestHive::start().await;
    let bystander = rbee_hive_e2e::os::Bystander::start();
    let own = u64::from(hive.pid());
    for pid in [
        0,
        1,
        own,
        u64::from(bystander.pid()),
        i32::MAX as u64 + 1,
        u64::MAX,
    ] {
        for operation in ["worker_process_get", "worker_process_delete"] {
            let view = keeper(
                &hive,
                json!({"operation": operation, "hive_id": "localhost", "pid": pid}),
            )
            .await
            .unwrap();
            let JobOutcome::Failure(reason) = &view.outcome else {
                panic!("{operation} {pid}: {view:?}")
            };
            assert_eq!(
                reason,
                &format!(
                    "PID {pid} is not a running worker managed by this hive; only this hive's own worker processes \
                     can be shown or stopped (nothing was signalled)"
                )
            );
            assert!(
                view.keeper_says_failed,
                "the keeper marks it failed: {}",
                printed_text(&view)
            );
        }
    }
    assert!(
        pid_alive(bystander.pid()),
        "a stranger's process was signalled"
    );
    assert_eq!(hive.get_text("/health").await, "ok");
}

#[tokio::test]
async fn every_refusal_reaches_the_keeper_with_its_reason() {
    let hive = TestHive::builder().hive_id("gpu-box").start().await;
    // Operations of the upstream that this hive does not run, and a hive_id that is not
    // this hive's: the keeper shows the hive's reason (PROTOCOL §8), where a 400 showed it
    // nothing.
    let refused = [
        (
            json!({"operation": "worker_build", "hive_id": "gpu-box"}),
            "operation 'worker_build' is not run by this rbee-hive; supported operations: worker_spawn,",
        ),
        (
            json!({"operation": "worker_download", "hive_id": "gpu-box"}),
            "operation 'worker_download' is not run by this rbee-hive",
        ),
        (
            json!({"operation": "hive_install", "hive_id": "gpu-box"}),
            "operation 'hive_install' is not run by this rbee-hive",
        ),
        (
            json!({"operation": "worker_process_list", "hive_id": "tap"}),
            "this hive is 'gpu-box', not 'tap'; address it as 'gpu-box'",
        ),
    ];
    for (operation, reason) in refused {
        let view = keeper(&hive, operation.clone()).await.unwrap();
        match &view.outcome {
            JobOutcome::Failure(shown) => assert!(shown.starts_with(reason), "{shown}"),
            other => panic!("{operation}: {other:?}"),
        }
        assert!(view.keeper_says_failed, "{operation}");
    }
    // A name no rbee version knows is a client bug: still a 400.
    let (status, answer) = hive
        .post_job(&json!({"operation": "frobnicate", "hive_id": "gpu-box"}))
        .await;
    assert_eq!(status.as_u16(), 400);
    assert_eq!(answer["code"], "unknown_operation");
}

#[tokio::test]
async fn a_failing_get_reads_as_a_failure_to_the_keeper() {
    let hive = TestHive::start().await;
    let view = keeper(
        &hive,
        json!({"operation": "worker_get", "hive_id": "localhost", "id": "worker-5"}),
    )
    .await
    .unwrap();
    assert_eq!(
        view.outcome,
        JobOutcome::Failure("worker 'worker-5' not found".to_owned())
    );
    assert!(view.keeper_says_failed);
    assert!(
        !printed_text(&view).contains("[DONE]"),
        "the newer client stops at [ERROR]"
    );
    // An older client that only knows [DONE] also sees the failure line before it.
    let mut older = UpstreamConnection::connect(&hive).await;
    let job_id = older
        .submit(&json!({"operation": "worker_get", "hive_id": "x", "id": "worker-5"}))
        .await
        .unwrap();
    let lines = hive.stream_lines(&job_id).await;
    let failed_at = lines.iter().position(|l| l.contains("failed:")).unwrap();
    let done_at = lines.iter().position(|l| l.contains("[DONE]")).unwrap();
    assert!(failed_at < done_at);
}

#[tokio::test]
async fn after_sigterm_health_stops_answering_within_five_seconds() {
    let mut hive = TestHive::with_config(&["stop_grace_ms = 8000", &stubborn_type()]).await;
    hive.spawn_ready("stubborn").await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    hive.signal(nix::sys::signal::Signal::SIGTERM);
    // The upstream's stop check: poll /health until it stops answering (the hive stops
    // accepting at once; the deadline only catches a hive that never does).
    wait_for(
        "/health stops answering after SIGTERM (answered)",
        Duration::from_secs(30),
        || async { client.get(hive.url("/health")).send().await.is_ok() },
        |answered| !answered,
    )
    .await;
    // The hive itself still stops its stubborn worker (SIGKILL after the 8 s grace) and exits 0.
    let status = hive.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn every_catalog_command_of_the_keeper_succeeds_or_shows_the_hives_reason() {
    let hive = TestHive::start().await;
    let succeeds =
        |view: &KeeperView| view.outcome == JobOutcome::Success && !view.keeper_says_failed;
    // rbee-keeper model --hive h list / worker --hive h binary list: empty lists succeed.
    let view = keeper(
        &hive,
        json!({"hive_id": "gpu-box", "operation": "model_list"}),
    )
    .await
    .unwrap();
    assert!(succeeds(&view), "{view:#?}");
    assert!(
        printed_text(&view).contains(
            "[qn-fwd    ] forward_data   : [hv-router ] model_list_start: 📋 Listing models on hive 'gpu-box'\n\
             [qn-fwd    ] forward_data   : [hv-router ] model_list_result: Found 0 model(s)\n\
             [qn-fwd    ] forward_data   : [hv-router ] model_list_empty: No models found"
        ),
        "{view:#?}"
    );
    let view = keeper(
        &hive,
        json!({"hive_id": "gpu-box", "operation": "worker_binary_list"}),
    )
    .await
    .unwrap();
    assert!(succeeds(&view), "{view:#?}");
    assert!(
        printed_text(&view).contains("worker_bin_list_empty: No worker binaries found"),
        "{view:#?}"
    );

    // get / delete / download of what is not there: the reason reaches the keeper.
    for (operation, reason) in [
        (
            json!({"hive_id": "gpu-box", "id": "tinyllama", "operation": "model_get"}),
            "no entry 'tinyllama' in ",
        ),
        (
            json!({"hive_id": "gpu-box", "id": "tinyllama", "operation": "model_delete"}),
            "no entry 'tinyllama' in ",
        ),
        (
            json!({"hive_id": "gpu-box", "model": "TheBloke/TinyLlama-GGUF", "operation": "model_download"}),
            "'TheBloke/TinyLlama-GGUF' names no file",
        ),
        (
            json!({"hive_id": "gpu-box", "operation": "worker_binary_get", "worker_type": "cpu-llm-worker-rbee-v0.1.0-linux"}),
            "no entry 'cpu-llm-worker-rbee-v0.1.0-linux' in ",
        ),
        (
            json!({"hive_id": "gpu-box", "operation": "worker_binary_delete", "worker_type": "cpu-llm-worker-rbee-v0.1.0-linux"}),
            "no entry 'cpu-llm-worker-rbee-v0.1.0-linux' in ",
        ),
        (
            json!({"hive_id": "gpu-box", "model": "-rf", "operation": "worker_spawn", "worker": "cpu", "device": 0}),
            "field `model` must not start with '-'",
        ),
    ] {
        let view = keeper(&hive, operation.clone()).await.unwrap();
        match &view.outcome {
            JobOutcome::Failure(shown) => {
                assert!(shown.starts_with(reason), "{operation}: {shown}")
            }
            other => panic!("{operation}: {other:?}"),
        }
        assert!(view.keeper_says_failed, "{operation}: {view:#?}");
    }
}
