//! A real OpenMetrics parser for the `/metrics` tests: Python's `prometheus_client`
//! (its `openmetrics.parser`, which refuses what the format does not allow), installed once
//! per machine into `~/.cache/rbee-hive/python` (`.ci/run` does it first).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Where the parser is installed.
fn cache() -> PathBuf {
    std::env::var_os("RBEE_PYTHON_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/rbee-hive/python")
        })
}

fn importable() -> bool {
    Command::new("python3")
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .env("PYTHONPATH", cache())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Parses OpenMetrics `text`; returns its samples as `{"name", "labels", "value"}` objects.
/// Panics with the parser's reason if the text is not valid OpenMetrics.
pub fn parse(text: &str) -> Vec<Value> {
    if !importable() {
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(cache())
            .arg("prometheus_client==0.21.1")
            .status()
            .expect("run pip");
        assert!(
            status.success() && importable(),
            "cannot install Python's prometheus_client into {} (run .ci/run once)",
            cache().display()
        );
    }
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"name": s.name, "labels": s.labels, "value": s.value, "type": family.type})
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .env("PYTHONPATH", cache())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "not valid OpenMetrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&output.stdout).expect("parser output")
}

/// The value of the sample `name` whose labels include `labels`.
pub fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s["name"] == name
                && labels
                    .iter()
                    .all(|(k, v)| s["labels"][*k].as_str() == Some(*v))
        })
        .and_then(|s| s["value"].as_f64())
}
