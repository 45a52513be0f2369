//! The README's blocks, run as written (issues 11, 12): the quick start, "The protocol by
//! hand" and the catalog cycle of "Models and worker binaries", each extracted from README.md by its `<!-- readme-test: … -->` marker and run with
//! `bash -euo pipefail` against a fresh hive, so that the README cannot drift from what the
//! hive does. `RBEE_HIVE_URL` points both at the test's hive; `target/release` is the test's
//! own build of `rbee-hive`.

use std::process::Command;

use rbee_hive_e2e::{TestHive, binaries};

/// The first ```` ```bash ```` block after `<!-- readme-test: {name} -->`.
fn block(name: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let marker = format!("<!-- readme-test: {name} -->");
    let after = &readme[readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"))..];
    let start = after
        .find("```bash\n")
        .expect("a bash block after the marker")
        + 8;
    let end = after[start..].find("```").expect("the end of the block") + start;
    after[start..end].to_owned()
}

/// Runs `script` in a directory whose `target/release` is the test's build, as a user would
/// paste it; returns stdout, failing the test (with both outputs) if any command fails.
fn run_as_pasted(hive: &TestHive, script: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("target")).unwrap();
    std::os::unix::fs::symlink(binaries::bin_dir(), dir.path().join("target/release")).unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::os::unix::fs::symlink(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"),
        dir.path().join("tests/fixtures"),
    )
    .unwrap();
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir.path())
        .env("RBEE_HIVE_URL", format!("http://{}", hive.addr))
        .env_remove("RBEE_HIVE_TOKEN_FILE")
        .env_remove("RBEE_HIVE_HIVE_ID")
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the block failed ({}):\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    stdout
}

#[tokio::test]
async fn the_quick_start_works_as_pasted() {
    let hive = TestHive::start().await;
    let out = run_as_pasted(&hive, &block("quick-start"));
    assert!(out.contains("(hive id localhost): ok"), "{out}");
    assert!(
        out.lines().any(|l| l == "worker-1"),
        "the spawned id: {out}"
    );
    assert!(
        out.contains(r#""text":"[demo worker, no real model] hello""#),
        "the worker answered: {out}"
    );
    let last_ps = out.rsplit("ID ").next().unwrap();
    assert!(!last_ps.contains("worker-1"), "stopped at the end: {out}");
    assert!(hive.workers().await.is_empty());
}

#[tokio::test]
async fn the_protocol_by_hand_works_as_pasted() {
    let hive = TestHive::start().await;
    let out = run_as_pasted(&hive, &block("protocol"));
    assert!(out.starts_with("ok"), "{out}");
    assert!(out.contains(r#""code":"missing_field""#), "{out}");
    assert!(
        out.contains("data: [hv-router ] worker_list_empty: No workers found"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l == "worker-1"),
        "the spawned id: {out}"
    );
    assert!(out.contains(r#""status":"ok""#), "the heartbeat: {out}");
    assert!(
        out.contains("worker_delete_complete: ✅ Worker deleted: worker-1"),
        "{out}"
    );
    assert!(hive.workers().await.is_empty());
}

#[tokio::test]
async fn the_catalog_cycle_works_as_pasted() {
    let hive = TestHive::start().await;
    let out = run_as_pasted(&hive, &block("catalog"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "tiny-demo", "the downloaded id: {out}");
    assert!(
        out.contains("tiny-demo  tiny-llama  0.00 GB  available"),
        "{out}"
    );
    assert!(
        out.contains("refused while worker-1 uses it"),
        "the delete was refused while in use: {out}"
    );
    assert!(
        !hive.catalog_dir().join("models/tiny-demo").exists(),
        "deleted at the end"
    );
    assert!(hive.workers().await.is_empty());
}
