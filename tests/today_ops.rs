//! Today's rbee operation names (PROTOCOL §9) end to end, with a real hive: the catalog
//! names of today's keeper, `model_load` / `model_unload` with real demo workers (and the
//! OS checked afterwards), `hive_check` passing and failing, `model_download` of a bare
//! `owner/repo` against a local fake hub, and both eras' names never answered 400.

use std::time::Duration;

use file_server::FileServer;
use rbee_hive_e2e::lines::{assert_done, assert_line, assert_no_line};
use rbee_hive_e2e::openmetrics::value;
use rbee_hive_e2e::os::{group_members, pid_alive, port_free};
use rbee_hive_e2e::wait::wait_for;
use rbee_hive_e2e::{TestHive, binaries, demo_worker_type};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn op(operation: &str, fields: Value) -> Value {
    let mut body = json!({"operation": operation, "hive_id": "localhost"});
    for (key, value) in fields.as_object().expect("fields object") {
        body[key] = value.clone();
    }
    body
}

fn error_of(lines: &[String]) -> Option<&str> {
    lines.iter().find_map(|l| l.strip_prefix("[ERROR] "))
}

#[track_caller]
fn assert_fails_with(lines: &[String], needle: &str) {
    let reason = error_of(lines).unwrap_or_else(|| panic!("the job did not fail: {lines:#?}"));
    assert!(reason.contains(needle), "{reason:?}: {lines:#?}");
}

fn tiny_model() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tiny-llama.gguf"
    ))
    .expect("the tiny GGUF fixture")
}

/// Puts model `id` into the hive's catalog by hand (as a user copying a file would).
fn place_model(hive: &TestHive, id: &str) {
    let folder = hive.catalog_dir().join("models").join(id);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join(format!("{id}.gguf")), tiny_model()).unwrap();
}

/// The config of a hive whose `model_load` starts the demo worker (type `loader`).
fn loader_config() -> Vec<String> {
    // The key first: after the table it would be read as the table's.
    vec![
        "load_worker = \"loader\"".to_owned(),
        demo_worker_type("loader", &[], 30.0),
    ]
}

async fn loader_hive() -> TestHive {
    let config = loader_config();
    let lines: Vec<&str> = config.iter().map(String::as_str).collect();
    TestHive::with_config(&lines).await
}

#[tokio::test]
async fn todays_worker_catalog_names_act_as_the_binary_operations_under_their_own_names() {
    let hive = TestHive::builder()
        .config("metrics_public = true")
        .start()
        .await;
    let id = "cpu-llm-worker-rbee-v0.1.0-linux";
    let binary = hive.install_worker_binary(id, "llm-worker-rbee-cpu");

    // The same lines as worker_binary_list / _get / _delete.
    let job = hive.submit(op("worker_list_installed", json!({}))).await;
    let lines = hive.stream_lines(&job).await;
    assert_line(
        &lines,
        "[hv-router ] worker_bin_list_result: Found 1 worker binary(ies)",
    );
    assert_line(
        &lines,
        &format!("[hv-router ] worker_bin_list_entry:   {id} | llm-worker-rbee-cpu | "),
    );
    assert_done(&lines);
    let (_, status) = hive.job_status(&job).await;
    assert_eq!(status["operation"], "worker_list_installed");
    assert_eq!(status["state"], "succeeded");

    let lines = hive
        .run_job(op("worker_installed_get", json!({"worker_id": id})))
        .await;
    assert_line(
        &lines,
        &format!(
            "[hv-router ] worker_bin_get_found: ✅ Worker: {id} | Name: llm-worker-rbee-cpu | Path: {}",
            binary.display()
        ),
    );
    assert_done(&lines);

    let lines = hive
        .run_job(op("worker_remove", json!({"worker_id": id})))
        .await;
    assert_line(
        &lines,
        &format!("[hv-router ] worker_bin_del_ok: ✅ Worker binary '{id}' deleted successfully"),
    );
    assert!(!binary.parent().unwrap().exists());
    let lines = hive
        .run_job(op("worker_installed_get", json!({"worker_id": id})))
        .await;
    assert_fails_with(&lines, "no entry");

    // Counted by the name sent, not by the name it stands for.
    let samples = hive.metrics().await;
    let jobs = |operation: &str, outcome: &str| {
        value(
            &samples,
            "rbee_hive_jobs_total",
            &[("operation", operation), ("outcome", outcome)],
        )
    };
    assert_eq!(jobs("worker_list_installed", "succeeded"), Some(1.0));
    assert_eq!(jobs("worker_installed_get", "succeeded"), Some(1.0));
    assert_eq!(jobs("worker_installed_get", "failed"), Some(1.0));
    assert_eq!(jobs("worker_remove", "succeeded"), Some(1.0));
    assert_eq!(jobs("worker_binary_list", "succeeded"), Some(0.0));
}

#[tokio::test]
async fn model_load_starts_the_load_worker_on_cpu_and_model_unload_stops_every_one() {
    let hive = loader_hive().await;
    place_model(&hive, "tiny");

    // Nothing serves it yet: an unload succeeds and says so.
    let lines = hive
        .run_job(op("model_unload", json!({"id": "tiny"})))
        .await;
    assert_line(
        &lines,
        "[hv-router ] model_unload_none: No worker is serving model 'tiny'; nothing to unload",
    );
    assert_done(&lines);

    let lines = hive
        .run_job(op("model_load", json!({"id": "tiny", "device": "cpu"})))
        .await;
    assert_eq!(
        lines[0],
        "[hv-router ] model_load_start: 📦 Loading model 'tiny' on CPU-0 on hive 'localhost'"
    );
    assert_line(
        &lines,
        "[hv-router ] model_load_worker: Worker type 'loader' (load_worker)",
    );
    // Narrated as worker_spawn narrates, and it ends when the worker is ready.
    assert_line(
        &lines,
        "[hv-router ] worker_spawn_start: 🚀 Spawning loader worker for model 'tiny' on device 0",
    );
    assert!(
        lines[lines.len() - 2]
            .starts_with("[hv-router ] worker_spawn_ready: ✅ Worker ready: worker-1 | PID "),
        "{lines:#?}"
    );
    assert_done(&lines);
    let first = hive.worker("worker-1").await.expect("worker-1");
    assert_eq!(first["status"], "Ready");
    assert_eq!(first["model_id"], "tiny");
    assert_eq!(first["worker_type"], "loader");
    assert_eq!(first["device"], "CPU-0");

    // `CPU-0` names the same device; a second worker for the same model.
    let lines = hive
        .run_job(op("model_load", json!({"id": "tiny", "device": "CPU-0"})))
        .await;
    assert_done(&lines);
    let second = hive.worker("worker-2").await.expect("worker-2");
    assert_eq!(second["model_id"], "tiny");
    // Another model's worker is left alone by the unload.
    place_model(&hive, "other");
    let lines = hive
        .run_job(op("model_load", json!({"id": "other", "device": "cpu"})))
        .await;
    assert_done(&lines);

    let processes: Vec<(u32, u16)> = [&first, &second]
        .iter()
        .map(|w| {
            (
                w["pid"].as_u64().unwrap() as u32,
                w["port"].as_u64().unwrap() as u16,
            )
        })
        .collect();
    assert!(processes.iter().all(|(pid, _)| pid_alive(*pid)));

    let lines = hive
        .run_job(op("model_unload", json!({"id": "tiny"})))
        .await;
    assert_line(
        &lines,
        "[hv-router ] model_unload_workers: Stopping 2 worker(s): worker-1, worker-2",
    );
    // Each stopped as worker_delete stops one.
    for id in ["worker-1", "worker-2"] {
        assert_line(
            &lines,
            &format!(
                "[hv-router ] worker_delete_start: 🗑️  Deleting worker '{id}' on hive 'localhost'"
            ),
        );
        assert_line(
            &lines,
            &format!("[hv-router ] worker_delete_complete: ✅ Worker deleted: {id}"),
        );
    }
    assert_line(
        &lines,
        "[hv-router ] model_unload_complete: ✅ Model 'tiny' unloaded: 2 worker(s) stopped",
    );
    assert_done(&lines);
    // The operating system agrees: no process of either group, both ports free.
    for (pid, port) in processes {
        assert!(!pid_alive(pid), "worker process {pid} is still alive");
        assert!(
            group_members(pid).is_empty(),
            "group {pid} has members left"
        );
        assert!(port_free(port), "port {port} is still held");
    }
    let workers = hive.workers().await;
    let ids: Vec<&str> = workers.iter().filter_map(|w| w["id"].as_str()).collect();
    assert_eq!(ids, ["worker-3"], "only the other model's worker is left");

    // And again: nothing left to stop.
    let lines = hive
        .run_job(op("model_unload", json!({"id": "tiny"})))
        .await;
    assert_line(
        &lines,
        "model_unload_none: No worker is serving model 'tiny'",
    );
    assert_done(&lines);
}

#[tokio::test]
async fn model_load_on_a_gpu_names_the_gpu_and_checks_that_the_hive_has_it() {
    // Two GPUs as nvidia-smi shows them, and a GPU worker type run by the demo worker.
    let hive = TestHive::builder()
        .gpus(2)
        .config("load_worker = \"gpuloader\"")
        .config(&format!(
            "{}device = \"gpu\"\n",
            demo_worker_type("gpuloader", &[], 30.0)
        ))
        .start()
        .await;
    place_model(&hive, "tiny");
    let lines = hive
        .run_job(op("model_load", json!({"id": "tiny", "device": "cuda:1"})))
        .await;
    assert_line(
        &lines,
        "model_load_start: 📦 Loading model 'tiny' on GPU-1 on hive 'localhost'",
    );
    assert_line(
        &lines,
        "worker_spawn_start: 🚀 Spawning gpuloader worker for model 'tiny' on device 1",
    );
    assert_done(&lines);
    assert_eq!(error_of(&lines), None, "{lines:#?}");
    let worker = hive.worker("worker-1").await.expect("worker-1");
    assert_eq!(worker["device"], "GPU-1");
    assert_eq!(worker["status"], "Ready");
    // `GPU-N` is the same kind; a GPU the hive does not have is refused by the spawn.
    let lines = hive
        .run_job(op("model_load", json!({"id": "tiny", "device": "GPU-2"})))
        .await;
    assert_fails_with(&lines, "GPU-2");
    // A CPU load with a GPU type is refused before anything starts.
    let lines = hive
        .run_job(op("model_load", json!({"id": "tiny", "device": "cpu"})))
        .await;
    assert_fails_with(
        &lines,
        "worker type 'gpuloader' runs on gpu devices, not on CPU-0",
    );
    let pid = worker["pid"].as_u64().unwrap() as u32;
    let lines = hive
        .run_job(op("model_unload", json!({"id": "tiny"})))
        .await;
    assert_done(&lines);
    assert!(!pid_alive(pid));
    assert!(hive.workers().await.is_empty());
}

#[tokio::test]
async fn model_load_refuses_bad_devices_unknown_models_and_a_type_of_another_kind() {
    let hive = loader_hive().await;
    place_model(&hive, "tiny");

    // A device that is no device: a failed job naming the field (an invalid value).
    let (status, _) = hive
        .post_job(&op("model_load", json!({"id": "tiny", "device": "tpu:0"})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let lines = hive
        .run_job(op("model_load", json!({"id": "tiny", "device": "tpu:0"})))
        .await;
    assert_fails_with(
        &lines,
        "field `device` must be a device such as \"cpu\", \"cuda:0\", \"metal:0\", \"GPU-0\" or \"CPU-0\", got \"tpu:0\"",
    );
    // A device ordinal of the worker_spawn kind is a mistyped field: 400.
    let (status, answer) = hive
        .post_job(&op("model_load", json!({"id": "tiny", "device": 0})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["code"], "invalid_field");

    // The loader runs on CPUs; a GPU load is refused before anything starts.
    let lines = hive
        .run_job(op("model_load", json!({"id": "tiny", "device": "cuda:0"})))
        .await;
    assert_fails_with(
        &lines,
        "worker type 'loader' runs on cpu devices, not on GPU-0",
    );
    // A model that is not in the catalog.
    let lines = hive
        .run_job(op("model_load", json!({"id": "nosuch", "device": "cpu"})))
        .await;
    assert_line(&lines, "model_load_error: ❌ Cannot load model 'nosuch': ");
    assert_fails_with(&lines, "nosuch");
    assert!(hive.workers().await.is_empty());

    // load_worker is read by each load: a reload (SIGHUP) changes it for the next one.
    let file = hive.dir.path().join("hive.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let changed = text.replace("load_worker = \"loader\"", "load_worker = \"ghost\"");
    assert_ne!(text, changed);
    std::fs::write(&file, changed).unwrap();
    hive.signal(nix::sys::signal::Signal::SIGHUP);
    let lines = wait_for(
        "model_load uses the reloaded load_worker",
        Duration::from_secs(10),
        // On a GPU: neither type starts anything there (the loader runs on CPUs).
        || hive.run_job(op("model_load", json!({"id": "tiny", "device": "cuda:0"}))),
        |lines| {
            lines
                .iter()
                .any(|l| l.contains("Worker type 'ghost' (load_worker)"))
        },
    )
    .await;
    assert_fails_with(&lines, "unknown worker type 'ghost'");
    assert!(hive.workers().await.is_empty());

    // Without load_worker a CPU load takes rbee's cpu worker, whose program this machine
    // does not have: the spawn's own refusal, nothing started.
    let plain = TestHive::start().await;
    place_model(&plain, "tiny");
    let lines = plain
        .run_job(op("model_load", json!({"id": "tiny", "device": "cpu"})))
        .await;
    assert_line(
        &lines,
        "model_load_worker: Worker type 'cpu' (default: the rbee worker for this kind of device)",
    );
    assert_fails_with(&lines, "worker program 'llm-worker-rbee-cpu' not found");
    assert!(plain.workers().await.is_empty());
}

#[tokio::test]
async fn hive_check_narrates_one_line_per_check_and_completes() {
    // An explicit hive id: hive_check carries only an alias, and is not refused for it.
    let config = loader_config();
    let hive = config
        .iter()
        .fold(TestHive::builder().hive_id("gpu-box"), |b, line| {
            b.config(line)
        })
        .start()
        .await;
    let lines = hive
        .run_job(json!({"operation": "hive_check", "alias": "gpu-box"}))
        .await;
    assert_eq!(
        lines[0],
        "[hv-router ] hive_check_start: 🔍 Starting hive narration check on hive 'gpu-box'"
    );
    assert_line(
        &lines,
        &format!(
            "hive_check_state_dir: ✅ state dir writable: {}",
            hive.state_dir().display()
        ),
    );
    assert_line(
        &lines,
        &format!(
            "hive_check_catalog_dir: ✅ catalog dir writable: {}",
            hive.catalog_dir().display()
        ),
    );
    assert_line(&lines, "hive_check_port: ✅ free worker port: ");
    assert_line(
        &lines,
        &format!(
            "hive_check_worker: ✅ worker type 'loader': {}",
            binaries::program("rbee-demo-worker").display()
        ),
    );
    // A built-in type whose program is absent is reported, not a failure.
    assert_line(
        &lines,
        "hive_check_worker: ⚠️  worker type 'cpu': program 'llm-worker-rbee-cpu' not found (built-in type, not configured; not needed)",
    );
    assert_line(&lines, "hive_check_devices: ✅ devices: ");
    assert_line(&lines, "CPU-0");
    assert_line(
        &lines,
        "hive_check_queen: ⚠️  queen: none configured (queen_url); the hive runs standalone",
    );
    assert_eq!(
        lines[lines.len() - 2],
        "[hv-router ] hive_check_complete: ✅ Hive narration check complete"
    );
    assert_done(&lines);
    // The probe files are gone.
    for dir in [hive.state_dir(), hive.catalog_dir()] {
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".hive-check"))
            .collect();
        assert!(left.is_empty(), "{left:?} in {}", dir.display());
    }

    // Without an alias: `localhost`; with a queen that is not up: it says so, and that is
    // no failure (the hive works without one).
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let queen_url = format!("http://{nobody}");
    let queen = TestHive::builder()
        .arg("--queen-url")
        .arg(&queen_url)
        .start()
        .await;
    let lines = queen.run_job(json!({"operation": "hive_check"})).await;
    assert_line(&lines, "Starting hive narration check on hive 'localhost'");
    let said = lines
        .iter()
        .find(|l| l.contains("hive_check_queen: "))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(
        said.contains(&format!("queen: {queen_url} not registered yet"))
            || said.contains(&format!("queen: {queen_url} not reached")),
        "{said}"
    );
    assert_line(&lines, "✅ Hive narration check complete");
    assert_done(&lines);
}

#[tokio::test]
async fn hive_check_fails_listing_what_the_hive_needs() {
    let hive = TestHive::with_config(&[
        "[workers.ghost]\ncommand = [\"/nonexistent/ghost-worker\", \"--port\", \"{port}\"]\n",
    ])
    .await;
    // The catalog dir cannot be made: a file stands where it should be (a check that holds
    // for root too, whom permissions do not stop).
    std::fs::write(hive.catalog_dir(), b"not a folder").unwrap();
    let lines = hive.run_job(json!({"operation": "hive_check"})).await;
    assert_line(
        &lines,
        &format!(
            "hive_check_catalog_dir: ❌ catalog dir not writable: {}: ",
            hive.catalog_dir().display()
        ),
    );
    assert_line(&lines, "hive_check_worker: ❌ worker type 'ghost': ");
    assert_line(&lines, "hive_check_state_dir: ✅ state dir writable");
    assert_line(
        &lines,
        "hive_check_failed: ❌ Hive check found 2 problem(s)",
    );
    assert_no_line(&lines, "Hive narration check complete");
    let reason = error_of(&lines).expect("the check fails");
    assert!(
        reason.starts_with("hive check failed: catalog dir not writable: ")
            && reason.contains(
                "; worker type 'ghost': worker program '/nonexistent/ghost-worker' not found"
            ),
        "{reason}"
    );
    assert_done(&lines);
}

#[tokio::test]
async fn model_download_of_a_bare_repository_picks_its_file_by_quantisation() {
    let server = FileServer::start().await;
    let bytes = tiny_model();
    server.add("tiny.Q4_K_M.gguf", bytes.clone());
    server.add("tiny.Q8_0.gguf", b"the q8 file".to_vec());
    server.add("tiny.F16.gguf", b"the f16 file".to_vec());
    server.add_repo(
        "someone/tiny-GGUF",
        &[
            "README.md",
            "tiny.Q8_0.gguf",
            "tiny.Q4_K_M.gguf",
            "tiny.F16.gguf",
        ],
    );
    server.add_repo("someone/q8-GGUF", &["tiny.F16.gguf", "tiny.Q8_0.gguf"]);
    server.add_repo("someone/f16-GGUF", &["config.json", "tiny.F16.gguf"]);
    server.add_repo("someone/odd-GGUF", &["m.IQ2_XS.gguf", "README.md"]);
    let hive = TestHive::with_config(&[&format!("hf_endpoint = {:?}", server.url("/"))]).await;

    // Q4_K_M over Q8_0; the id is the reference with '/' replaced by '-'.
    let lines = hive
        .run_job(op("model_download", json!({"model": "someone/tiny-GGUF"})))
        .await;
    assert_line(
        &lines,
        "model_download_listing: 🔎 Listing the files of 'someone/tiny-GGUF' to pick a GGUF file (Q4_K_M, Q5_K_M, Q4_0, Q5_0, Q8_0, F16)",
    );
    assert_line(
        &lines,
        "[hv-router ] model_download_pick: Picked 'tiny.Q4_K_M.gguf' (Q4_K_M)",
    );
    assert_line(
        &lines,
        "model_download_complete: ✅ Model 'someone-tiny-GGUF' downloaded",
    );
    assert_done(&lines);
    let on_disk = hive
        .catalog_dir()
        .join("models/someone-tiny-GGUF/tiny.Q4_K_M.gguf");
    assert_eq!(std::fs::read(&on_disk).unwrap(), bytes);
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert!(
        paths.contains(&"/api/models/someone/tiny-GGUF".to_owned()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/someone/tiny-GGUF/resolve/main/tiny.Q4_K_M.gguf".to_owned()),
        "{paths:?}"
    );
    assert!(!paths.iter().any(|p| p.contains("Q8_0")), "{paths:?}");

    // The fallbacks, in order: Q8_0 over F16, then F16; an explicit id is kept.
    let lines = hive
        .run_job(op("model_download", json!({"model": "someone/q8-GGUF"})))
        .await;
    assert_line(
        &lines,
        "model_download_pick: Picked 'tiny.Q8_0.gguf' (Q8_0)",
    );
    assert_done(&lines);
    assert_eq!(
        std::fs::read(
            hive.catalog_dir()
                .join("models/someone-q8-GGUF/tiny.Q8_0.gguf")
        )
        .unwrap(),
        b"the q8 file"
    );
    let lines = hive
        .run_job(op(
            "model_download",
            json!({"model": "someone/f16-GGUF", "id": "half"}),
        ))
        .await;
    assert_line(&lines, "model_download_pick: Picked 'tiny.F16.gguf' (F16)");
    assert_done(&lines);
    assert!(
        hive.catalog_dir()
            .join("models/half/tiny.F16.gguf")
            .exists()
    );

    // No file of any quantisation: a failed job listing what the repository has.
    let lines = hive
        .run_job(op("model_download", json!({"model": "someone/odd-GGUF"})))
        .await;
    assert_fails_with(
        &lines,
        "the repository has no GGUF file of Q4_K_M, Q5_K_M, Q4_0, Q5_0, Q8_0, F16; it has: m.IQ2_XS.gguf, README.md",
    );
    assert!(!hive.catalog_dir().join("models/someone-odd-GGUF").exists());
    // A repository the hub does not know.
    let lines = hive
        .run_job(op("model_download", json!({"model": "someone/missing"})))
        .await;
    assert_fails_with(&lines, "the hub knows no repository of that name");
}

/// Well-formed bodies of every operation name of both eras (PROTOCOL §3, §8, §9;
/// UPSTREAM.md), each with the fields its clients send.
fn every_era_body(name: &str) -> Value {
    let fields = match name {
        "worker_spawn" => json!({"model": "m", "worker": "nosuch", "device": 0}),
        "worker_get" | "worker_delete" => json!({"id": "worker-99"}),
        "worker_process_get" | "worker_process_delete" => json!({"pid": 1}),
        "worker_binary_get" | "worker_binary_delete" => json!({"worker_type": "nosuch"}),
        "model_get" | "model_delete" | "model_unload" => json!({"id": "nosuch"}),
        "model_download" => json!({"model": "o/r:nosuch.gguf"}),
        "worker_installed_get" | "worker_remove" | "worker_install" | "worker_catalog_get" => {
            json!({"worker_id": "nosuch"})
        }
        "model_load" => json!({"id": "nosuch", "device": "cuda:1"}),
        "hive_check" => return json!({"operation": "hive_check", "alias": "gpu-box"}),
        _ => json!({}),
    };
    op(name, fields)
}

#[tokio::test]
async fn every_operation_name_of_either_era_is_accepted_and_an_unknown_one_is_not() {
    let server = FileServer::start().await;
    let hive = TestHive::with_config(&[&format!("hf_endpoint = {:?}", server.url("/"))]).await;
    let names = [
        // The seed's era (PROTOCOL §3, §8) and what its queen forwards (UPSTREAM.md).
        "worker_spawn",
        "worker_list",
        "worker_get",
        "worker_delete",
        "worker_process_list",
        "worker_process_get",
        "worker_process_delete",
        "worker_binary_list",
        "worker_binary_get",
        "worker_binary_delete",
        "model_list",
        "model_get",
        "model_delete",
        "model_download",
        "worker_download",
        "worker_build",
        "infer",
        "status",
        "hive_start",
        "hive_stop",
        // Today's keeper (PROTOCOL §9).
        "worker_catalog_list",
        "worker_catalog_get",
        "worker_list_installed",
        "worker_installed_get",
        "worker_remove",
        "worker_install",
        "model_load",
        "model_unload",
        "hive_check",
    ];
    for name in names {
        let body = every_era_body(name);
        let (status, answer) = hive.post_job(&body).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body} answered {answer}");
        let job = answer["job_id"].as_str().expect("job_id");
        // Each becomes a job that ends (refused ones as failed jobs with the reason).
        let lines = hive.stream_lines(job).await;
        assert_eq!(lines.last().map(String::as_str), Some("[DONE]"), "{name}");
    }
    for unknown in ["frobnicate", "hive-check", "model_loads", "Model_load"] {
        let (status, answer) = hive.post_job(&op(unknown, json!({}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{unknown}: {answer}");
        assert_eq!(answer["code"], "unknown_operation", "{unknown}");
        let message = answer["error"].as_str().unwrap();
        assert!(
            message.contains("model_load, model_unload, hive_check"),
            "{message}"
        );
    }
    assert!(hive.workers().await.is_empty());
}
