//! Reading `/metrics` in the tests.
//!
//! - [`samples`] reads the sample lines (`name{label="value",…} number`) of the text, to
//!   check the numbers; it validates nothing.
//! - [`validate`] checks the whole text with a real OpenMetrics parser, Python's
//!   `prometheus_client` (its `openmetrics.parser`, which refuses what the format does not
//!   allow). It is never installed by a test: `.ci/run` installs it into
//!   `~/.cache/rbee-hive/python`, and `tests/support/build.rs` compiles the test that needs it as
//!   ignored where it is missing (the summary then says so).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Map, Value, json};

/// The sample lines of `text` as `{"name", "labels", "value"}` objects.
pub fn samples(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| sample(line).unwrap_or_else(|| panic!("not a sample line: {line}")))
        .collect()
}

/// One sample line: its name, its labels (values unescaped) and its number.
fn sample(line: &str) -> Option<Value> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut labels = Map::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '}' => {
                    end = Some(i + 1);
                    break;
                }
                ',' => {}
                '=' => {
                    // A quoted value with \\, \" and \n escapes.
                    chars.next().filter(|(_, quote)| *quote == '"')?;
                    let mut value = String::new();
                    loop {
                        match chars.next()? {
                            (_, '"') => break,
                            (_, '\\') => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            (_, other) => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), json!(value));
                }
                other => key.push(other),
            }
        }
        rest = &inner[end?..];
    }
    let number = rest.split_whitespace().next()?;
    let value: f64 = match number {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(json!({"name": name, "labels": labels, "value": value}))
}

/// Where `.ci/run` installs the parser.
fn cache() -> PathBuf {
    std::env::var_os("RBEE_PYTHON_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/rbee-hive/python")
        })
}

/// Checks OpenMetrics `text` with Python's `prometheus_client` parser and returns its
/// samples as `{"name", "labels", "value", "type"}` objects. Panics with the parser's
/// reason if the text is not valid OpenMetrics (or with how to install the parser).
pub fn validate(text: &str) -> Vec<Value> {
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
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'prometheus_client'"),
        "Python's prometheus_client is not installed in {} (.ci/run installs it)",
        cache().display()
    );
    assert!(
        output.status.success(),
        "not valid OpenMetrics: {stderr}\n{text}"
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
