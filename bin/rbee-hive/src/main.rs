//! The `rbee-hive` daemon: flags → config, tracing, bind, run. Everything else is in the library.

use anyhow::Context;

/// jemalloc, with its background thread, gives freed memory back to the system, so the
/// hive's memory returns near its idle level once finished jobs pass their retention;
/// glibc's malloc kept it (hive-bench: 6 MiB idle, 21 MiB after 10 000 jobs and their
/// retention, against 9 MiB with this allocator).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options: purge freed pages after 1 s, and with `MADV_DONTNEED`
/// (muzzy pages, `MADV_FREE`, still count as resident until the kernel needs them).
#[allow(unsafe_code)]
// SAFETY: jemalloc reads this symbol once, as a NUL-terminated `const char *`, before its
// first allocation; a reference to a byte array is a thin pointer with that layout.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static JEMALLOC_CONF: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";
use clap::Parser;
use rbee_hive::config::{Cli, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let print_config = cli.print_config;
    let config = Config::load(cli).context("invalid configuration")?;
    if print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    config.check_exposure()?;
    let signals =
        rbee_hive::shutdown::Signals::install().context("cannot listen for SIGTERM/SIGINT")?;
    let listener = tokio::net::TcpListener::bind((config.bind, config.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", config.bind, config.port))?;
    let hive = rbee_hive::Hive::start(listener, config)?;
    // The one line on stdout, printed once the hive is ready: scripts and tests read the
    // bound port from it.
    println!("rbee-hive listening on http://{}", hive.local_addr()?);
    hive.serve(signals.clone().first(), signals.second())
        .await?;
    Ok(())
}
