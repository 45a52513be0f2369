//! Live resource use per worker (issue 13, item 2): one sampler for all workers; each
//! worker's whole process group (memory, CPU over the last interval, threads), checked
//! against `/proc`, in `worker_list`, `worker_get`, `worker_process_*` and `rbee-hive ps`.

use std::time::Duration;

use rbee_hive_e2e::os::group_members;
use rbee_hive_e2e::wait::wait_for;
use rbee_hive_e2e::{TestHive, binaries};
use serde_json::json;

/// A worker type whose group holds a busy child beside the demo worker.
fn busy_type() -> String {
    let demo = binaries::program("rbee-demo-worker").display().to_string();
    let script = format!(
        "while :; do :; done & exec {demo} --worker-id {{worker_id}} --model {{model}} --port {{port}}"
    );
    format!(
        "telemetry_interval_ms = 200\n[workers.busy]\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\n"
    )
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_workers_whole_process_group_is_sampled_and_shown_everywhere() {
    let hive = TestHive::with_config(&[&busy_type()]).await;
    let worker = hive.spawn_ready("busy").await;
    let id = worker["id"].as_str().unwrap().to_owned();
    let pgid = worker["pgid"].as_u64().unwrap() as u32;

    // Wait for a sample that has seen the busy child for a whole interval.
    let stats = wait_for(
        "a sample has seen the busy child",
        Duration::from_secs(20),
        || async { hive.workers().await[0]["stats"].clone() },
        |stats| stats["processes"] == 2 && stats["cpu_pct"].as_f64().unwrap_or(0.0) > 20.0,
    )
    .await;
    assert!(stats["threads"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["uptime_s"].is_u64(), "{stats}");
    // Memory: the group's resident memory, as /proc sums it (within a tolerance: both move).
    let members = group_members(pgid);
    assert_eq!(members.len(), 2, "{members:?}");
    let from_proc: f64 = members.iter().map(|p| vm_rss_kib(*p)).sum::<u64>() as f64 / 1024.0;
    let sampled = stats["rss_mb"].as_f64().unwrap();
    assert!(
        (sampled - from_proc).abs() <= (from_proc * 0.25).max(2.0),
        "sampled {sampled} MiB, /proc says {from_proc} MiB"
    );
    // CPU: a busy loop uses most of a core; never more than the cores there are.
    let cores = std::thread::available_parallelism().unwrap().get() as f64;
    assert!(
        stats["cpu_pct"].as_f64().unwrap() <= cores * 100.0 + 5.0,
        "{stats}"
    );

    // worker_get's details and result, and the upstream process views.
    let lines = hive
        .run_job(json!({"operation": "worker_get", "hive_id": "localhost", "id": id}))
        .await;
    let details = lines
        .iter()
        .find_map(|l| l.strip_prefix("[hv-router ] worker_get_details: "))
        .expect("details");
    assert!(details.contains("\"stats\": {"), "{details}");
    assert!(
        details.find("\"id\"").unwrap() < details.find("\"stats\"").unwrap(),
        "the record's fields first: {details}"
    );
    let processes = hive
        .job_result(json!({"operation": "worker_process_list", "hive_id": "localhost"}))
        .await
        .unwrap();
    assert_eq!(
        processes["processes"][0]["stats"]["processes"], 2,
        "{processes}"
    );

    // rbee-hive ps shows CPU and memory.
    let output = hive.cli().arg("ps").output().unwrap();
    let ps = String::from_utf8(output.stdout).unwrap();
    let header = ps.lines().next().unwrap();
    assert!(
        header.ends_with("CPU    MEM") || (header.contains("CPU") && header.contains("MEM")),
        "{ps}"
    );
    let row = ps.lines().nth(1).unwrap();
    assert!(row.contains('%') && row.ends_with("MiB"), "{ps}");

    hive.delete_worker(&id).await;
    assert!(group_members(pgid).is_empty());
}
