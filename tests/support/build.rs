//! Looks for the strict OpenMetrics parser that `tests/metrics.rs` validates `/metrics`
//! with: Python's `prometheus_client` (its `openmetrics.parser`), from the cache that
//! `.ci/run` fills (`$RBEE_PYTHON_CACHE`, default `~/.cache/rbee-hive/python`) or the
//! system. Found: `cfg(openmetrics_parser)`. Not found: the validating test is compiled as
//! ignored (the summary says so) and the build prints how to install it; under CI (`CI`
//! set) the build fails instead, because `.ci/run` installs it. Nothing is installed by a
//! test at run time.

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(openmetrics_parser)");
    for var in ["RBEE_PYTHON_CACHE", "HOME", "PATH", "CI"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let cache = cache_dir();
    // The check runs again once the package is installed there.
    println!(
        "cargo::rerun-if-changed={}",
        cache.join("prometheus_client").display()
    );
    let importable = Command::new("python3")
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .env("PYTHONPATH", &cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if importable {
        println!("cargo::rustc-cfg=openmetrics_parser");
    } else if std::env::var_os("CI").is_some() {
        panic!(
            "Python's prometheus_client not found under CI: .ci/run installs it into {}",
            cache.display()
        );
    } else {
        println!(
            "cargo::warning=Python's prometheus_client is not installed: the test that validates /metrics \
             with it is ignored. Install it with: python3 -m pip install --target {} prometheus_client==0.21.1 \
             (.ci/run does)",
            cache.display()
        );
    }
}

fn cache_dir() -> PathBuf {
    std::env::var_os("RBEE_PYTHON_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/rbee-hive/python")
        })
}
