//! The README's blocks, run as written (issues 11, 12, 20): the quick start, "The protocol
//! by hand" and the catalog cycle of "Models and worker binaries", each extracted from
//! README.md by its `<!-- readme-test: … -->` marker and run with `bash -euo pipefail`
//! against a fresh hive, so that the README cannot drift from what the hive does.
//! `RBEE_HIVE_URL` points both at the test's hive; `target/release` is the test's own build
//! of `rbee-hive`. In the quick start and the catalog cycle, every comment line under a
//! command is the output a newcomer sees: each must match a line of the real output (stdout
//! and stderr together), in order, where `…` stands for any text and a number for any
//! number ([`expect_comments`]).

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

/// The output lines the comments of `script` promise: every `# …` line that stands alone
/// (not a comment beside a command).
fn promised_lines(script: &str) -> Vec<String> {
    script
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .map(str::to_owned)
        .collect()
}

/// A promised line as a pattern: `…` is any text, a number any number, a run of spaces any
/// run of spaces (table columns widen), the rest as written.
fn pattern(promised: &str) -> regex::Regex {
    let mut pattern = String::from("^");
    let mut literal = String::new();
    let flush = |literal: &mut String, pattern: &mut String| {
        pattern.push_str(&regex::escape(literal));
        literal.clear();
    };
    let mut chars = promised.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '…' => {
                flush(&mut literal, &mut pattern);
                pattern.push_str(".*");
            }
            '0'..='9' => {
                flush(&mut literal, &mut pattern);
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
                pattern.push_str("[0-9]+");
            }
            ' ' if chars.peek() == Some(&' ') => {
                flush(&mut literal, &mut pattern);
                while chars.peek() == Some(&' ') {
                    chars.next();
                }
                pattern.push_str(" +");
            }
            other => literal.push(other),
        }
    }
    flush(&mut literal, &mut pattern);
    pattern.push('$');
    regex::Regex::new(&pattern).expect("a pattern")
}

/// Every promised line of `script` matches a line of `output`, in order (a line alone
/// `…` promises nothing but more lines).
fn expect_comments(script: &str, output: &str) {
    let lines: Vec<&str> = output.lines().collect();
    let mut next = 0;
    for promised in promised_lines(script) {
        if promised == "…" {
            continue;
        }
        let pattern = pattern(&promised);
        match lines[next..].iter().position(|line| pattern.is_match(line)) {
            Some(found) => next += found + 1,
            None => panic!(
                "the README promises the line\n  {promised}\nbut the output after line {next} has none like it:\n{}",
                lines[next..].join("\n")
            ),
        }
    }
}

#[test]
fn promised_lines_match_with_wildcards_for_text_numbers_and_column_widths() {
    let output = "job job-61ae\nStarted worker-12: PID 20963 on port 9101\nID        PID    STATE\nworker-1  20963  ready";
    expect_comments(
        "x\n# job job-…\n# Started worker-1: PID 18503 on port 9100\n# ID        PID  STATE\n# worker-1  1  …",
        output,
    );
    let missing = std::panic::catch_unwind(|| expect_comments("# Stopped worker-1", output));
    assert!(missing.is_err());
    let out_of_order =
        std::panic::catch_unwind(|| expect_comments("# worker-1  1  ready\n# job job-…", output));
    assert!(out_of_order.is_err());
}

/// Runs `script` in a directory whose `target/release` is the test's build, as a user would
/// paste it; returns its output (stderr into stdout, in the order written), failing the test
/// if any command fails.
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
        .args(["-euo", "pipefail", "-c", &format!("exec 2>&1\n{script}")])
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
    let script = block("quick-start");
    let out = run_as_pasted(&hive, &script);
    expect_comments(&script, &out);
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
    let script = block("catalog");
    let out = run_as_pasted(&hive, &script);
    expect_comments(&script, &out);
    assert!(
        out.lines().any(|l| l == "tiny-demo"),
        "the downloaded id alone on a line: {out}"
    );
    assert!(
        out.contains("tiny-demo  tiny-llama  516.4 KiB  available"),
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
