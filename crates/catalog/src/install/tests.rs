//! Installs against a real HTTP server on 127.0.0.1 (a few lines of HTTP/1.1 over tokio, so
//! that the catalog crate needs no web framework to test itself) and a real catalog folder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Path → body; every request's path is recorded.
#[derive(Clone, Default)]
struct Server {
    routes: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Server {
    async fn start(&self) -> Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let this = this.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let text = String::from_utf8_lossy(&head);
                    let path = text.split(' ').nth(1).unwrap_or("/").to_owned();
                    this.seen.lock().unwrap().push(path.clone());
                    let body = this.routes.lock().unwrap().get(&path).cloned();
                    let (status, body) = match body {
                        Some(body) => ("200 OK", body),
                        None => (
                            "404 Not Found",
                            b"{\"error\":\"Worker not found\"}".to_vec(),
                        ),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(&body).await;
                });
            }
        });
        Url::parse(&format!("http://{addr}")).unwrap()
    }

    fn route(&self, path: &str, body: impl Into<Vec<u8>>) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.to_owned(), body.into());
    }

    fn count(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

fn archive(script: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(script.len() as u64);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "w-0.2.0/bin/llm-worker-rbee-cpu", script)
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(2);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "w-0.2.0/README", &b"hi"[..])
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &builder.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const ID: &str = "llm-worker-rbee-cpu-bin";

/// A catalog server offering `ID` as a prebuilt archive whose PKGBUILD names `sum`.
async fn offering(sum: Option<&str>) -> (Server, Url, Vec<u8>) {
    let server = Server::default();
    let url = server.start().await;
    let bytes = archive(b"#!/bin/sh\necho worker\n");
    let sum = sum.map_or_else(|| sha256(&bytes), str::to_owned);
    server.route(
        &format!("/workers/{ID}"),
        serde_json::json!({
            "id": ID, "name": "LLM Worker (CPU, prebuilt)", "version": "0.2.0",
            "worker_type": "cpu", "platforms": ["linux"], "architectures": [ARCH],
            "pkgbuild_url": format!("/workers/{ID}/PKGBUILD"),
            "binary_name": "llm-worker-rbee-cpu", "new_field": {"x": 1}
        })
        .to_string(),
    );
    server.route(
        &format!("/workers/{ID}/PKGBUILD"),
        format!(
            "pkgname={ID}\npkgver=0.2.0\npkgrel=1\narch=('x86_64' 'aarch64')\n\
             source_{ARCH}=(\"{url}files/w-$pkgver.tar.gz\")\n\
             sha256sums_{ARCH}=(\n  '{sum}'  # the archive\n)\n\
             package() {{\n  install -Dm755 \"$srcdir/w\" \"$pkgdir/usr/bin/w\"\n}}\n"
        ),
    );
    server.route("/files/w-0.2.0.tar.gz", bytes.clone());
    (server, url, bytes)
}

fn installer(dir: &Path, url: Option<Url>) -> WorkerInstaller {
    WorkerInstaller::new(WorkerCatalog::new(dir), url, "test").unwrap()
}

fn work_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("workers/.install").join(ID))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn installs_a_verified_prebuilt_archive_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url, _) = offering(None).await;
    let installer = installer(dir.path(), Some(url));
    let id = CatalogId::parse(ID).unwrap();
    let steps = Mutex::new(Vec::new());
    let installed = installer
        .install(&id, |step| steps.lock().unwrap().push(step))
        .await
        .unwrap();
    assert!(installed.fresh);
    let path = dir
        .path()
        .join("workers")
        .join(ID)
        .join("w-0.2.0/bin/llm-worker-rbee-cpu");
    assert_eq!(installed.entry.artifact.path, path);
    assert_eq!(installed.entry.artifact.version, "0.2.0");
    assert_eq!(installed.entry.artifact.worker_type, WorkerKind::CpuLlm);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    let catalog = WorkerCatalog::new(dir.path());
    assert_eq!(catalog.list().unwrap(), vec![installed.entry.clone()]);
    assert_eq!(
        catalog.binary_for("cpu"),
        Some(path.canonicalize().unwrap())
    );
    let steps = steps.into_inner().unwrap();
    assert!(
        matches!(steps.first(), Some(InstallStep::Entry { .. })),
        "{steps:?}"
    );
    assert!(
        steps
            .iter()
            .any(|s| matches!(s, InstallStep::Verified { .. }))
    );
    assert_eq!(work_files(dir.path()), ["lock"]);

    // Again: found, nothing downloaded.
    let again = installer.install(&id, |_| {}).await.unwrap();
    assert!(!again.fresh);
    assert_eq!(again.entry, installed.entry);
    assert_eq!(server.count("/files/w-0.2.0.tar.gz"), 1);
}

#[tokio::test]
async fn a_checksum_mismatch_installs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = "0".repeat(64);
    let (_server, url, bytes) = offering(Some(&wrong)).await;
    let error = installer(dir.path(), Some(url))
        .install(&CatalogId::parse(ID).unwrap(), |_| {})
        .await
        .unwrap_err();
    match &error {
        InstallError::Checksum { expected, got, .. } => {
            assert_eq!(expected, &wrong);
            assert_eq!(got, &sha256(&bytes));
        }
        other => panic!("{other:?}"),
    }
    let text = error.to_string();
    assert!(
        text.contains(&wrong) && text.contains(&sha256(&bytes)),
        "{text}"
    );
    assert!(WorkerCatalog::new(dir.path()).list().unwrap().is_empty());
    assert!(!dir.path().join("workers").join(ID).exists());
    assert_eq!(work_files(dir.path()), ["lock"]);
}

#[tokio::test]
async fn a_source_only_entry_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::default();
    let url = server.start().await;
    server.route(
        "/workers/llm-worker-rbee-cpu",
        r#"{"id":"llm-worker-rbee-cpu","name":"LLM Worker (CPU)","version":"0.1.0",
            "worker_type":"cpu","platforms":["linux","macos"],"architectures":["x86_64","aarch64"],
            "binary_name":"llm-worker-rbee-cpu"}"#,
    );
    server.route(
        "/workers/llm-worker-rbee-cpu/PKGBUILD",
        "pkgname=llm-worker-rbee-cpu\npkgver=0.1.0\narch=('x86_64' 'aarch64')\n\
         source=(\"git+https://github.com/veighnsche/llama-orch.git#branch=main\")\n\
         sha256sums=('SKIP')\nbuild() {\n  cargo build --release\n}\n",
    );
    let error = installer(dir.path(), Some(url))
        .install(&CatalogId::parse("llm-worker-rbee-cpu").unwrap(), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(error, InstallError::SourceOnly { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains("git+https://github.com/veighnsche/llama-orch.git"),
        "{text}"
    );
    assert!(
        text.contains("build()") && text.contains("[workers.<name>]"),
        "{text}"
    );
    assert!(WorkerCatalog::new(dir.path()).list().unwrap().is_empty());
}

#[tokio::test]
async fn a_broken_entry_is_replaced_and_crash_leftovers_never_list() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url, _) = offering(None).await;
    // A crash mid-install left a complete-looking staging folder: it must not list.
    let leftover = dir.path().join("workers/.install").join(ID).join("staging");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join(METADATA), b"{}").unwrap();
    // An entry whose binary is gone.
    let folder = dir.path().join("workers").join(ID);
    std::fs::create_dir_all(&folder).unwrap();
    let now = Utc::now();
    let broken = Entry {
        artifact: WorkerArtifact {
            id: ID.into(),
            worker_type: WorkerKind::CpuLlm,
            platform: Platform::current(),
            path: folder.join("gone"),
            size: 1,
            status: ArtifactStatus::Available,
            version: "0.1.0".into(),
            added_at: now,
        },
        added_at: now,
        last_accessed: now,
    };
    disk::write_json_atomic(&folder.join(METADATA), &broken).unwrap();
    let catalog = WorkerCatalog::new(dir.path());
    assert_eq!(catalog.list().unwrap().len(), 1);

    let steps = Mutex::new(Vec::new());
    let installed = installer(dir.path(), Some(url))
        .install(&CatalogId::parse(ID).unwrap(), |s| {
            steps.lock().unwrap().push(s)
        })
        .await
        .unwrap();
    assert!(installed.fresh);
    assert!(
        steps.lock().unwrap().iter().any(
            |s| matches!(s, InstallStep::ReplacingBroken { reason } if reason.contains("gone"))
        ),
        "{steps:?}"
    );
    assert_eq!(catalog.list().unwrap(), vec![installed.entry]);
    assert!(!folder.join("gone").exists());
    assert_eq!(work_files(dir.path()), ["lock"]);
}

#[tokio::test]
async fn concurrent_installs_of_one_id_download_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url, _) = offering(None).await;
    let installer = installer(dir.path(), Some(url));
    let id = CatalogId::parse(ID).unwrap();
    let (a, b) = tokio::join!(
        installer.install(&id, |_| {}),
        installer.install(&id, |_| {})
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.entry, b.entry);
    assert!(a.fresh != b.fresh, "one installs, the other finds it");
    assert_eq!(server.count("/files/w-0.2.0.tar.gz"), 1);
    assert_eq!(WorkerCatalog::new(dir.path()).list().unwrap().len(), 1);
}

#[tokio::test]
async fn unconfigured_and_unreachable_servers_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let id = CatalogId::parse(ID).unwrap();
    let error = installer(dir.path(), None)
        .install(&id, |_| {})
        .await
        .unwrap_err();
    assert_eq!(error, InstallError::NotConfigured);
    assert!(error.to_string().contains("worker_catalog_url"));
    // A port nobody listens on: bind one, note it, let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let error = installer(dir.path(), Some(url))
        .install(&id, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(error, InstallError::Unreachable { .. }),
        "{error:?}"
    );
    let (_server, url, _) = offering(None).await;
    let error = installer(dir.path(), Some(url))
        .install(&CatalogId::parse("nope").unwrap(), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(error, InstallError::NotInCatalog { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_bare_executable_is_installed_under_its_binary_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::default();
    let url = server.start().await;
    let program = b"#!/bin/sh\necho bare\n".to_vec();
    server.route(
        "/workers/bare",
        r#"{"id":"bare","name":"Bare","version":"1.0","worker_type":"cuda","binary_name":"bare-worker"}"#,
    );
    server.route(
        "/workers/bare/PKGBUILD",
        format!(
            "pkgname=bare\npkgver=1.0\narch=(any)\nsource=(\"{url}files/bare-$pkgver\")\n\
             sha256sums=(\"{}\")\n",
            sha256(&program)
        ),
    );
    server.route("/files/bare-1.0", program.clone());
    let installed = installer(dir.path(), Some(url))
        .install(&CatalogId::parse("bare").unwrap(), |_| {})
        .await
        .unwrap();
    let path = dir.path().join("workers/bare/bare-worker");
    assert_eq!(installed.entry.artifact.path, path);
    assert_eq!(installed.entry.artifact.worker_type, WorkerKind::CudaLlm);
    assert_eq!(std::fs::read(&path).unwrap(), program);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o755
    );
}

#[tokio::test]
async fn a_download_that_is_not_an_archive_nor_a_program_installs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::default();
    let url = server.start().await;
    let page = b"<html>not found</html>".to_vec();
    server.route(
        "/workers/page",
        r#"{"id":"page","name":"Page","version":"1.0","worker_type":"cpu"}"#,
    );
    server.route(
        "/workers/page/PKGBUILD",
        format!(
            "pkgname=page\npkgver=1.0\nsource=(\"{url}files/page.tar.gz\")\nsha256sums=(\"{}\")\n",
            sha256(&page)
        ),
    );
    server.route("/files/page.tar.gz", page);
    let error = installer(dir.path(), Some(url))
        .install(&CatalogId::parse("page").unwrap(), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(error, InstallError::Archive { .. }), "{error:?}");
    assert!(error.to_string().contains("neither a .tar.gz"), "{error}");
    assert!(WorkerCatalog::new(dir.path()).list().unwrap().is_empty());
    let left: Vec<_> = std::fs::read_dir(dir.path().join("workers/.install/page"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["lock"]);
}
