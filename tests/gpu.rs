//! GPU memory per worker (issue 13, item 3), through a fake `nvidia-smi` that answers the
//! hive's queries as the real one does (the captures are in `crates/devices/fixtures/`) and a
//! fake NVML library (`tests/fixtures/fake-nvml.c`, built here with `cc`) that the hive
//! loads as it would the driver's: the worker's processes' GPU memory in its stats and in
//! `/metrics`, NVML first and `nvidia-smi` when NVML fails, and a delete that ends only once
//! that memory is back (or says who still holds it).

use std::path::Path;
use std::time::Duration;

use rbee_hive_e2e::lines::{assert_done, assert_line, assert_no_line};
use rbee_hive_e2e::openmetrics::value;
use rbee_hive_e2e::wait::wait_for;
use rbee_hive_e2e::{HiveBuilder, TestHive, demo_worker_type};
use serde_json::Value;

/// A fake `nvidia-smi`: one H100; `gpu-pids` lists pids that hold 1542 MiB while they run,
/// `stuck-pids` pids that the driver still reports after they are gone.
fn fake_nvidia_smi(dir: &Path) -> String {
    let script = format!(
        r#"#!/bin/sh
echo "$1" >> {dir}/smi-calls
case "$1" in
  --query-compute-apps=*)
    for pid in $(cat {dir}/gpu-pids 2>/dev/null); do [ -d /proc/$pid ] && echo "$pid, 1542"; done
    for pid in $(cat {dir}/stuck-pids 2>/dev/null); do echo "$pid, 1542"; done ;;
  --query-gpu=index,memory.used,memory.total,utilization.gpu) echo "0, 1542, 81559, 37" ;;
  *) echo "0, NVIDIA H100 80GB HBM3, 81559, 9.0" ;;
esac
"#,
        dir = dir.display()
    );
    let path = dir.join("fake-nvidia-smi");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// The hive `builder` makes, with the fake `nvidia-smi` of `fakes`, a sample every 100 ms
/// and the `cuda` type; and a `cuda` worker whose pid the fakes report as using GPU memory.
/// The hive and the worker's record.
async fn a_cuda_worker(builder: HiveBuilder, fakes: &Path) -> (TestHive, Value) {
    let hive = builder
        .nvidia_smi(&fake_nvidia_smi(fakes))
        .config("telemetry_interval_ms = 100")
        .config(&cuda_type())
        .start()
        .await;
    let worker = hive.spawn_ready("cuda").await;
    std::fs::write(fakes.join("gpu-pids"), worker["pid"].to_string()).unwrap();
    (hive, worker)
}

#[tokio::test]
async fn a_gpu_workers_memory_is_sampled_and_a_delete_waits_for_it() {
    let fakes = tempfile::tempdir().unwrap();
    let (hive, worker) = a_cuda_worker(TestHive::builder(), fakes.path()).await;
    let id = worker["id"].as_str().unwrap().to_owned();
    assert_eq!(worker["device"], "GPU-0");

    let stats = stats_when(&hive, &id, "a GPU sample", |s| s["vram_mb"] == 1542.0).await;
    assert_eq!(stats["gpu_util_pct"], 37.0);
    assert_eq!(stats["total_vram_mb"], 81559.0);
    let samples = hive.metrics().await;
    assert_eq!(
        value(
            &samples,
            "rbee_hive_worker_gpu_memory_bytes",
            &[("worker_id", &id)]
        ),
        Some(1542.0 * 1024.0 * 1024.0)
    );

    let lines = hive.delete_worker(&id).await;
    assert_line(
        &lines,
        "worker_delete_gpu_released: GPU memory released: 1.5 GiB in ",
    );

    // A driver that still reports the memory after the processes are gone: the delete ends
    // after its bounded wait and names who holds it.
    let worker = hive.spawn_ready("cuda").await;
    let id = worker["id"].as_str().unwrap().to_owned();
    let pid = worker["pid"].to_string();
    std::fs::write(fakes.path().join("stuck-pids"), &pid).unwrap();
    stats_when(&hive, &id, "a GPU sample of the second worker", |s| {
        s["vram_mb"] == 1542.0
    })
    .await;
    let lines = hive.delete_worker(&id).await;
    assert_line(
        &lines,
        &format!(
            "worker_delete_gpu_held: ⚠️  GPU memory still held after 10 s by PID {pid} (1542 MiB)"
        ),
    );
    assert_done(&lines);
}

/// A `cuda` worker type that runs the demo worker on a GPU.
fn cuda_type() -> String {
    demo_worker_type("cuda", &[], 30.0) + "device = \"gpu\"\n"
}

/// Builds the fake NVML library into `dir`; it reads its steering files from `dir`.
fn fake_nvml(dir: &Path) -> String {
    let library = dir.join("libnvidia-ml.so.1");
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&library)
        .arg(format!("-DFAKE_DIR=\"{}\"", dir.display()))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/fake-nvml.c"
        ))
        .status()
        .expect("cc (gcc) builds the fake NVML library");
    assert!(status.success(), "cc failed: {status}");
    library.display().to_string()
}

/// Polls `worker_get` until `accept` takes the worker's stats, and returns them.
async fn stats_when(
    hive: &TestHive,
    id: &str,
    what: &str,
    accept: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let record = wait_for(
        what,
        Duration::from_secs(20),
        || async { hive.worker(id).await.unwrap() },
        |record| accept(&record["stats"]),
    )
    .await;
    record["stats"].clone()
}

#[tokio::test]
async fn nvml_is_asked_first_and_nvidia_smi_answers_when_it_fails() {
    let fakes = tempfile::tempdir().unwrap();
    let with_nvml = TestHive::builder().nvml_library(&fake_nvml(fakes.path()));
    let (hive, worker) = a_cuda_worker(with_nvml, fakes.path()).await;
    let id = worker["id"].as_str().unwrap().to_owned();

    // NVML's numbers (2048 MiB, 42 %), not nvidia-smi's (1542 MiB, 37 %).
    let stats = stats_when(&hive, &id, "an NVML sample", |s| s["vram_mb"] == 2048.0).await;
    assert_eq!(stats["gpu_util_pct"], 42.0);
    assert_eq!(stats["total_vram_mb"], 81559.0);
    let smi_calls = std::fs::read_to_string(fakes.path().join("smi-calls")).unwrap_or_default();
    assert!(
        !smi_calls.contains("--query-compute-apps"),
        "nvidia-smi was asked while NVML answered: {smi_calls}"
    );

    // NVML's process query fails: the next samples come from nvidia-smi.
    std::fs::write(fakes.path().join("fail-processes"), "").unwrap();
    let stats = stats_when(&hive, &id, "nvidia-smi answers in NVML's place", |s| {
        s["vram_mb"] == 1542.0
    })
    .await;
    assert_eq!(stats["gpu_util_pct"], 37.0);

    // NVML answers again, and the delete's wait for the memory goes through it.
    std::fs::remove_file(fakes.path().join("fail-processes")).unwrap();
    stats_when(&hive, &id, "NVML answers again", |s| s["vram_mb"] == 2048.0).await;
    let lines = hive.delete_worker(&id).await;
    assert_line(
        &lines,
        "worker_delete_gpu_released: GPU memory released: 2.0 GiB in ",
    );
}

#[tokio::test]
async fn gpu_sampling_is_off_with_gpu_source_none_and_absent_when_nvml_is_missing() {
    let fakes = tempfile::tempdir().unwrap();
    let nvml = fake_nvml(fakes.path());
    // `nvml` without a library to load; `none` with everything there.
    for (source, library) in [("nvml", None), ("none", Some(nvml.as_str()))] {
        let mut builder = TestHive::builder().config(&format!("gpu_source = \"{source}\""));
        if let Some(library) = library {
            builder = builder.nvml_library(library);
        }
        let (hive, worker) = a_cuda_worker(builder, fakes.path()).await;
        let id = worker["id"].as_str().unwrap().to_owned();
        let _ = std::fs::remove_file(fakes.path().join("nvml-calls"));

        // Two samples after the pid was written: the GPU fields stay absent.
        let first = stats_when(&hive, &id, "a sample", |s| s["sampled_at"].is_string()).await;
        stats_when(&hive, &id, "a second sample", |s| {
            s["sampled_at"].is_string() && s["sampled_at"] != first["sampled_at"]
        })
        .await;
        let stats = stats_when(&hive, &id, "a third sample", |s| {
            s["sampled_at"].is_string() && s["sampled_at"] != first["sampled_at"]
        })
        .await;
        assert!(stats.get("vram_mb").is_none(), "{source}: {stats}");
        assert!(stats.get("gpu_util_pct").is_none(), "{source}: {stats}");
        let smi_calls = std::fs::read_to_string(fakes.path().join("smi-calls")).unwrap_or_default();
        assert!(
            !smi_calls.contains("--query-compute-apps"),
            "{source}: {smi_calls}"
        );
        assert!(
            !fakes.path().join("nvml-calls").exists(),
            "{source}: NVML was asked"
        );

        let lines = hive.delete_worker(&id).await;
        assert_done(&lines);
        assert_no_line(&lines, "GPU memory");
    }
}
