//! Today's worker catalog operations end to end (PROTOCOL §9): `worker_catalog_list`,
//! `worker_catalog_get` and `worker_install` against a real hive and a worker catalog server
//! started here (axum, serving upstream's routes: `/workers`, `/workers/{id}`,
//! `/workers/{id}/PKGBUILD`) with a real `.tar.gz` holding an executable and its real sha256.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rbee_hive_e2e::TestHive;
use rbee_hive_e2e::lines::assert_line;
use rbee_hive_e2e::os::files_in;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// This machine's architecture as PKGBUILDs name it.
const ARCH: &str = std::env::consts::ARCH;

/// The worker script inside the archive: it prints its arguments, so the test can run it.
const SCRIPT: &[u8] = b"#!/bin/sh\necho \"installed worker: $*\"\n";

/// Upstream's CPU PKGBUILD (bin/80-hono-worker-catalog/public/pkgbuilds), as served today.
const UPSTREAM_SOURCE_PKGBUILD: &str = r#"# PKGBUILD for llm-worker-rbee (CPU variant)
# Maintainer: rbee Core Team
# TEAM-378: Builds from main branch (no tags needed for development)

pkgname=llm-worker-rbee-cpu
pkgver=0.1.0
pkgrel=1
pkgdesc="LLM worker for rbee system (CPU-only)"
arch=('x86_64' 'aarch64')
url="https://github.com/veighnsche/llama-orch"
license=('GPL-3.0-or-later')
depends=('gcc')
makedepends=('rust' 'cargo' 'git')
source=("git+https://github.com/veighnsche/llama-orch.git#branch=main")
sha256sums=('SKIP')

build() {
    cd "$srcdir/llama-orch/bin/30_llm_worker_rbee"
    cargo build --release --no-default-features --features cpu
}

package() {
    cd "$srcdir/llama-orch"
    install -Dm755 "bin/30_llm_worker_rbee/target/release/llm-worker-rbee" \
        "$pkgdir/usr/local/bin/$pkgname"
}
"#;

/// A worker catalog server: entries, PKGBUILDs and files by name; counts file downloads.
struct CatalogServer {
    addr: SocketAddr,
    downloads: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Served {
    entries: Arc<Vec<Value>>,
    pkgbuilds: Arc<HashMap<String, String>>,
    files: Arc<HashMap<String, Vec<u8>>>,
    downloads: Arc<AtomicUsize>,
}

impl Drop for CatalogServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CatalogServer {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The config line that points a hive at this server.
    fn config(&self) -> String {
        format!("worker_catalog_url = {:?}", self.url())
    }

    fn downloads(&self) -> usize {
        self.downloads.load(Ordering::SeqCst)
    }

    /// Serves three workers: `demo-worker-bin` (the archive with its real sha256),
    /// `bad-sum-bin` (the same archive, a wrong sha256) and upstream's source-only
    /// `llm-worker-rbee-cpu`.
    async fn start() -> (Self, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let archive = archive();
        let sum = hex_sha256(&archive);
        let file_url = format!("http://{addr}/files/demo-worker-0.3.0-linux-{ARCH}.tar.gz");
        let prebuilt = |id: &str, sum: &str| {
            format!(
                "# Prebuilt variant: the release archive per architecture.\n\
                 pkgname={id}\npkgver=0.3.0\npkgrel=1\n\
                 pkgdesc=\"Demo worker (prebuilt)\"\narch=('x86_64' 'aarch64')\n\
                 source_{ARCH}=(\n    \"{}\"\n)\nsha256sums_{ARCH}=(\n    '{sum}'  # release\n)\n\
                 package() {{\n    install -Dm755 \"$srcdir/demo-worker\" \"$pkgdir/usr/bin/demo-worker\"\n}}\n",
                file_url.replace("0.3.0", "${pkgver}")
            )
        };
        let entry = |id: &str, name: &str, kind: &str, binary: &str| {
            json!({
                "id": id, "implementation": "llm-worker-rbee", "worker_type": kind,
                "version": "0.3.0", "platforms": ["linux"], "architectures": ["x86_64", "aarch64"],
                "name": name, "description": "a test worker", "license": "GPL-3.0-or-later",
                "pkgbuild_url": format!("/workers/{id}/PKGBUILD"), "build_system": "cargo",
                "source": {"type": "tarball", "url": file_url},
                "build": {}, "depends": [], "makedepends": [],
                "binary_name": binary, "install_path": format!("/usr/local/bin/{binary}"),
                "supported_formats": ["gguf"], "supports_streaming": true,
                "supports_batching": false, "a_field_added_later": {"x": 1}
            })
        };
        let mut source_only = entry(
            "llm-worker-rbee-cpu",
            "LLM Worker (CPU)",
            "cpu",
            "llm-worker-rbee-cpu",
        );
        source_only["source"] = json!({"type": "git", "url": "https://github.com/user/llama-orch.git", "branch": "main"});
        let served = Served {
            entries: Arc::new(vec![
                entry(
                    "demo-worker-bin",
                    "Demo worker (prebuilt)",
                    "cpu",
                    "demo-worker",
                ),
                entry(
                    "bad-sum-bin",
                    "Demo worker (wrong sum)",
                    "cpu",
                    "demo-worker",
                ),
                source_only,
            ]),
            pkgbuilds: Arc::new(HashMap::from([
                (
                    "demo-worker-bin".to_owned(),
                    prebuilt("demo-worker-bin", &sum),
                ),
                (
                    "bad-sum-bin".to_owned(),
                    prebuilt("bad-sum-bin", &"0".repeat(64)),
                ),
                (
                    "llm-worker-rbee-cpu".to_owned(),
                    UPSTREAM_SOURCE_PKGBUILD.to_owned(),
                ),
            ])),
            files: Arc::new(HashMap::from([(
                format!("demo-worker-0.3.0-linux-{ARCH}.tar.gz"),
                archive.clone(),
            )])),
            downloads: Arc::new(AtomicUsize::new(0)),
        };
        let downloads = served.downloads.clone();
        let app = Router::new()
            .route("/workers", axum::routing::get(list))
            .route("/workers/{id}", axum::routing::get(get))
            .route("/workers/{id}/PKGBUILD", axum::routing::get(pkgbuild))
            .route("/files/{name}", axum::routing::get(file))
            .route(
                "/not-a-catalog/workers",
                axum::routing::get(|| async { axum::Json(json!([{"id": 1}])) }),
            )
            .with_state(served);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (
            Self {
                addr,
                downloads,
                task,
            },
            archive,
        )
    }
}

async fn list(State(served): State<Served>) -> Response {
    axum::Json(json!({ "workers": *served.entries })).into_response()
}

async fn get(State(served): State<Served>, UrlPath(id): UrlPath<String>) -> Response {
    match served.entries.iter().find(|e| e["id"] == id) {
        Some(entry) => axum::Json(entry.clone()).into_response(),
        None => not_found(),
    }
}

async fn pkgbuild(State(served): State<Served>, UrlPath(id): UrlPath<String>) -> Response {
    match served.pkgbuilds.get(&id) {
        Some(text) => text.clone().into_response(),
        None => not_found(),
    }
}

async fn file(State(served): State<Served>, UrlPath(name): UrlPath<String>) -> Response {
    match served.files.get(&name) {
        Some(bytes) => {
            served.downloads.fetch_add(1, Ordering::SeqCst);
            bytes.clone().into_response()
        }
        None => not_found(),
    }
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": "Worker not found"})),
    )
        .into_response()
}

/// A release archive: `demo-worker-0.3.0/bin/demo-worker` (mode 0644: the install makes it
/// executable) and a README.
fn archive() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(SCRIPT.len() as u64);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "demo-worker-0.3.0/bin/demo-worker", SCRIPT)
        .unwrap();
    let readme = b"the demo worker\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(readme.len() as u64);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "demo-worker-0.3.0/README", &readme[..])
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &builder.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn op(operation: &str, fields: Value) -> Value {
    let mut body = json!({"operation": operation, "hive_id": "localhost"});
    for (key, value) in fields.as_object().expect("fields object") {
        body[key] = value.clone();
    }
    body
}

fn install(id: &str) -> Value {
    op("worker_install", json!({"worker_id": id}))
}

/// Asserts that the job failed, its reason containing `needle`; returns the reason.
#[track_caller]
fn failure(lines: &[String], needle: &str) -> String {
    let reason = lines
        .iter()
        .find_map(|l| l.strip_prefix("[ERROR] "))
        .unwrap_or_else(|| panic!("the job did not fail: {lines:#?}"));
    assert!(reason.contains(needle), "{reason:?}: {lines:#?}");
    assert!(lines.iter().any(|l| l.contains("failed:")), "{lines:#?}");
    assert_eq!(lines.last().map(String::as_str), Some("[DONE]"));
    reason.to_owned()
}

#[track_caller]
fn succeeded(lines: &[String]) {
    assert!(
        !lines.iter().any(|l| l.starts_with("[ERROR]")),
        "the job failed: {lines:#?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("[DONE]"),
        "{lines:#?}"
    );
}

async fn installed_ids(hive: &TestHive) -> Vec<String> {
    let result = hive
        .job_result(op("worker_binary_list", json!({})))
        .await
        .expect("worker_binary_list result");
    result["worker_binaries"]
        .as_array()
        .expect("worker_binaries")
        .iter()
        .map(|e| e["artifact"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn lists_gets_and_installs_a_prebuilt_worker_that_then_lists_as_a_binary() {
    let (server, archive) = CatalogServer::start().await;
    let hive = TestHive::with_config(&[&server.config()]).await;

    let lines = hive.run_job(op("worker_catalog_list", json!({}))).await;
    succeeded(&lines);
    assert_line(&lines, "Found 3 worker(s) in the catalog");
    assert_line(
        &lines,
        "demo-worker-bin | Demo worker (prebuilt) | v0.3.0 | cpu | linux / x86_64,aarch64",
    );
    assert_line(
        &lines,
        "llm-worker-rbee-cpu | LLM Worker (CPU) | v0.3.0 | cpu",
    );
    let listed = hive
        .job_result(op("worker_catalog_list", json!({})))
        .await
        .expect("worker_catalog_list result");
    assert_eq!(listed["workers"].as_array().unwrap().len(), 3);
    assert_eq!(listed["workers"][0]["a_field_added_later"]["x"], 1);

    let lines = hive
        .run_job(op(
            "worker_catalog_get",
            json!({"worker_id": "demo-worker-bin"}),
        ))
        .await;
    succeeded(&lines);
    assert_line(
        &lines,
        "✅ Worker: demo-worker-bin | Name: Demo worker (prebuilt) | Version: 0.3.0 | Type: cpu",
    );
    // The detail line is the entry as pretty JSON, unknown fields kept.
    let detail = lines
        .iter()
        .find(|l| l.contains("worker_cat_get_details"))
        .expect("a detail line");
    let json_text = &detail[detail.find('{').unwrap()..];
    let detail: Value = serde_json::from_str(&json_text.replace("\ndata: ", "\n")).unwrap();
    assert_eq!(detail["binary_name"], "demo-worker");
    assert_eq!(detail["a_field_added_later"]["x"], 1);

    let lines = hive.run_job(install("demo-worker-bin")).await;
    succeeded(&lines);
    assert_line(&lines, &format!("sha256 {}", hex_sha256(&archive)));
    assert_line(&lines, "✅ sha256 verified");
    assert_line(&lines, "✅ Worker 'demo-worker-bin' installed:");
    assert_eq!(server.downloads(), 1);

    assert_eq!(installed_ids(&hive).await, ["demo-worker-bin"]);
    let entry = hive
        .job_result(op(
            "worker_binary_get",
            json!({"worker_type": "demo-worker-bin"}),
        ))
        .await
        .expect("worker_binary_get result");
    let artifact = &entry["artifact"];
    assert_eq!(artifact["status"], "Available");
    assert_eq!(artifact["worker_type"], "CpuLlm");
    assert_eq!(artifact["platform"], "Linux");
    assert_eq!(artifact["version"], "0.3.0");
    assert_eq!(artifact["size"], SCRIPT.len());
    let path = std::path::PathBuf::from(artifact["path"].as_str().unwrap());
    let folder = hive.catalog_dir().join("workers/demo-worker-bin");
    assert_eq!(path, folder.join("demo-worker-0.3.0/bin/demo-worker"));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "mode {mode:o}");
    assert_eq!(std::fs::read(&path).unwrap(), SCRIPT);
    assert!(folder.join("demo-worker-0.3.0/README").is_file());
    // It runs.
    let output = std::process::Command::new(&path)
        .arg("--port")
        .arg("1")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "installed worker: --port 1\n"
    );
    // Nothing but the lock is left in the install's work folder.
    assert_eq!(
        files_in(&hive.catalog_dir().join("workers/.install/demo-worker-bin")),
        ["lock"]
    );

    // Installed already: said so, nothing downloaded.
    let lines = hive.run_job(install("demo-worker-bin")).await;
    succeeded(&lines);
    assert_line(&lines, "⚠️  Worker 'demo-worker-bin' is already installed");
    assert_eq!(server.downloads(), 1);
}

#[tokio::test]
async fn a_broken_install_is_installed_again_and_concurrent_installs_download_once() {
    let (server, _) = CatalogServer::start().await;
    let hive = TestHive::with_config(&[&server.config()]).await;

    let first = hive.submit(install("demo-worker-bin")).await;
    let second = hive.submit(install("demo-worker-bin")).await;
    let (a, b) = tokio::join!(hive.stream_lines(&first), hive.stream_lines(&second));
    succeeded(&a);
    succeeded(&b);
    assert_eq!(server.downloads(), 1, "{a:#?}\n{b:#?}");
    let said_installed = [&a, &b]
        .iter()
        .filter(|lines| lines.iter().any(|l| l.contains("installed: ")))
        .count();
    assert_eq!(said_installed, 1, "{a:#?}\n{b:#?}");
    assert_eq!(installed_ids(&hive).await, ["demo-worker-bin"]);

    // The binary goes missing: the entry is broken, and installed again.
    let binary = hive
        .catalog_dir()
        .join("workers/demo-worker-bin/demo-worker-0.3.0/bin/demo-worker");
    std::fs::remove_file(&binary).unwrap();
    let lines = hive.run_job(install("demo-worker-bin")).await;
    succeeded(&lines);
    assert_line(&lines, "cannot be used");
    assert_line(&lines, "✅ Worker 'demo-worker-bin' installed:");
    assert_eq!(server.downloads(), 2);
    assert!(binary.is_file());
}

#[tokio::test]
async fn a_wrong_checksum_installs_nothing() {
    let (server, archive) = CatalogServer::start().await;
    let hive = TestHive::with_config(&[&server.config()]).await;
    let lines = hive.run_job(install("bad-sum-bin")).await;
    let reason = failure(&lines, "sha256 mismatch");
    assert!(reason.contains(&"0".repeat(64)), "{reason}");
    assert!(reason.contains(&hex_sha256(&archive)), "{reason}");
    assert_line(&lines, "❌ Failed to install worker 'bad-sum-bin'");
    assert_eq!(server.downloads(), 1);
    assert!(installed_ids(&hive).await.is_empty());
    assert!(!hive.catalog_dir().join("workers/bad-sum-bin").exists());
    assert_eq!(
        files_in(&hive.catalog_dir().join("workers/.install/bad-sum-bin")),
        ["lock"]
    );
}

#[tokio::test]
async fn a_source_only_entry_fails_with_the_reason_and_what_to_do() {
    let (server, _) = CatalogServer::start().await;
    let hive = TestHive::with_config(&[&server.config()]).await;
    let lines = hive.run_job(install("llm-worker-rbee-cpu")).await;
    let reason = failure(&lines, "is offered only as source");
    assert!(
        reason.contains("git+https://github.com/veighnsche/llama-orch.git#branch=main"),
        "{reason}"
    );
    assert!(reason.contains("build()"), "{reason}");
    assert!(
        reason.contains("never runs a build script fetched from the network"),
        "{reason}"
    );
    assert!(reason.contains("[workers.<name>] command"), "{reason}");
    assert_eq!(server.downloads(), 0);
    assert!(installed_ids(&hive).await.is_empty());
}

#[tokio::test]
async fn unknown_ids_and_answers_of_another_shape_are_named() {
    let (server, _) = CatalogServer::start().await;
    let hive = TestHive::with_config(&[&server.config()]).await;
    for body in [
        op("worker_catalog_get", json!({"worker_id": "nope"})),
        install("nope"),
    ] {
        let lines = hive.run_job(body).await;
        failure(&lines, "worker 'nope' is not in the worker catalog");
    }
    let other = format!(
        "worker_catalog_url = {:?}",
        format!("{}/not-a-catalog", server.url())
    );
    let hive = TestHive::with_config(&[&other]).await;
    let lines = hive.run_job(op("worker_catalog_list", json!({}))).await;
    failure(&lines, "did not answer with the worker catalog's shape");
}

#[tokio::test]
async fn without_a_worker_catalog_url_each_operation_says_what_to_set() {
    let hive = TestHive::start().await;
    for body in [
        op("worker_catalog_list", json!({})),
        op(
            "worker_catalog_get",
            json!({"worker_id": "demo-worker-bin"}),
        ),
        install("demo-worker-bin"),
    ] {
        let lines = hive.run_job(body.clone()).await;
        let reason = failure(&lines, "no worker catalog server is configured");
        assert!(
            reason.contains("set worker_catalog_url"),
            "{body}: {reason}"
        );
    }
}

#[tokio::test]
async fn a_catalog_server_that_is_down_is_named_as_unreachable() {
    // A port that nobody listens on: bound, noted, let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let hive = TestHive::with_config(&[&format!("worker_catalog_url = {url:?}")]).await;
    for body in [
        op("worker_catalog_list", json!({})),
        op(
            "worker_catalog_get",
            json!({"worker_id": "demo-worker-bin"}),
        ),
        install("demo-worker-bin"),
    ] {
        let lines = hive.run_job(body.clone()).await;
        let reason = failure(&lines, "cannot be reached");
        assert!(reason.contains(&url), "{body}: {reason}");
    }
    assert!(installed_ids(&hive).await.is_empty());
}
