//! Load (issue 4): many jobs in flight at once, and memory that returns to where it was
//! once finished jobs have passed their retention.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rbee_hive_e2e::lines::assert_line;
use rbee_hive_e2e::wait::wait_for_every;
use rbee_hive_e2e::{TestHive, slow_start_type, spawn_body};
use serde_json::json;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("hive status");
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_jobs_in_flight_all_end_with_their_terminal_lines() {
    let hive = Arc::new(TestHive::with_config(&[&slow_start_type("slow-start", 1500, 30.0)]).await);
    // One long job that 500 readers wait on while 500 more jobs run at the same time.
    let long_job = hive.submit(spawn_body("slow-start")).await;
    let mut tasks = Vec::new();
    for i in 0..500 {
        let hive = hive.clone();
        let long_job = long_job.clone();
        tasks.push(tokio::spawn(async move {
            let own = if i % 2 == 0 {
                hive.run_job(json!({"operation": "worker_list", "hive_id": "localhost"}))
                    .await
            } else {
                hive.run_job(
                    json!({"operation": "worker_get", "hive_id": "localhost", "id": "worker-999"}),
                )
                .await
            };
            let shared = hive.stream_lines(&long_job).await;
            (own, shared)
        }));
    }
    let mut ended = 0;
    for task in tasks {
        let (own, shared) = task.await.expect("client task");
        assert_eq!(own.last().map(String::as_str), Some("[DONE]"), "{own:#?}");
        assert_eq!(shared.last().map(String::as_str), Some("[DONE]"));
        assert_line(&shared, "worker_spawn_ready");
        ended += 1;
    }
    assert_eq!(ended, 500);
    assert_eq!(hive.get_text("/health").await, "ok");
}

async fn submit_many(hive: &Arc<TestHive>, count: usize, clients: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let hive = hive.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"operation": "worker_list", "hive_id": "localhost"});
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let (status, _) = hive.post_job(&body).await;
                assert!(status.is_success());
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
}

async fn wait_until_no_jobs_are_kept(hive: &TestHive) {
    // Each look lists every job the hive keeps: not too often.
    wait_for_every(
        "finished jobs are freed",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || hive.job_count(),
        |&kept| kept == 0,
    )
    .await;
    // The hive's allocator gives freed pages back after about a second. Nothing announces
    // it; the measurement is the memory after this time, so the sleep is part of it.
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_jobs_leave_memory_where_it_was_after_retention() {
    let hive = Arc::new(TestHive::with_config(&["job_retention_s = 1"]).await);
    let pid = hive.pid();
    // Warm up with the very load that is measured, so that the baseline holds the
    // allocator's working set and fragmentation at that load's peak: what stays above it
    // afterwards grows with the number of jobs (a leak), not with the peak's height. (A
    // 20 000-job warm-up left 0.5–3 MB of fragmentation above the baseline, and once
    // 10.02 %.)
    submit_many(&hive, 100_000, 16).await;
    wait_until_no_jobs_are_kept(&hive).await;
    let before = rss_kib(pid);
    let started = Instant::now();
    submit_many(&hive, 100_000, 16).await;
    let elapsed = started.elapsed();
    let peak = rss_kib(pid);
    wait_until_no_jobs_are_kept(&hive).await;
    let after = rss_kib(pid);
    println!(
        "100000 jobs in {elapsed:?}; hive RSS before {before} KiB, right after {peak} KiB, after retention {after} KiB"
    );
    assert!(
        after as f64 <= before as f64 * 1.10,
        "memory did not come back: before {before} KiB, after retention {after} KiB (peak {peak} KiB)"
    );
}
