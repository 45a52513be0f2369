//! The `rbee-hive` daemon: flags → config, tracing, bind, run. Everything else is in the library.

use anyhow::Context;
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
