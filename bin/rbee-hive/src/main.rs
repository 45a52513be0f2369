//! The `rbee-hive` executable: the daemon (flags → config, tracing, bind, run), the client
//! subcommands, and the demo worker mode. Everything else is in the library.

use std::process::ExitCode;

use anyhow::Context;
use hive_cli::Command;
use rbee_hive::config::{Config, ServeArgs};

/// jemalloc, with its background thread, gives freed memory back to the system, so the
/// hive's memory returns near its idle level once finished jobs pass their retention;
/// glibc's malloc kept it (hive-bench: 6 MiB idle, 21 MiB after 10 000 jobs and their
/// retention, against 9 MiB with this allocator).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options: purge freed pages after 1 s, and with `MADV_DONTNEED`
/// (muzzy pages, `MADV_FREE`, still count as resident until the kernel needs them). Its
/// background thread, which does the purging on time, is started by the daemon alone
/// ([`serve`]): a client command or a demo worker has no use for it.
#[allow(unsafe_code)]
// SAFETY: jemalloc reads this symbol once, as a NUL-terminated `const char *`, before its
// first allocation; a reference to a byte array is a thin pointer with that layout.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static JEMALLOC_CONF: &[u8; 37] = b"dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    // Parsed before any runtime exists: `--help`, a usage error or a client command do not
    // pay for the daemon's worker threads.
    let invocation = match hive_cli::parse(std::env::args_os()) {
        Ok(invocation) => invocation,
        Err(code) => return code,
    };
    match invocation.command {
        Command::Serve(args) => {
            if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
                eprintln!("warning: jemalloc's background thread did not start: {error}");
            }
            let outcome =
                runtime(tokio::runtime::Builder::new_multi_thread()).block_on(serve(args));
            match outcome {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("Error: {error:?}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::DemoWorker(args) => {
            let own = std::env::current_exe().expect("own executable");
            let relaunch = [own.into_os_string(), "demo-worker".into()];
            let code = runtime(tokio::runtime::Builder::new_multi_thread())
                .block_on(rbee_demo_worker::run(args, &relaunch));
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        // One request or one stream at a time: one thread is enough.
        client => runtime(tokio::runtime::Builder::new_current_thread())
            .block_on(hive_cli::run(invocation.global, client)),
    }
}

fn runtime(mut builder: tokio::runtime::Builder) -> tokio::runtime::Runtime {
    builder
        .enable_all()
        .build()
        .expect("cannot start the Tokio runtime")
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let print_config = args.print_config;
    let config = Config::load(args.clone()).context("invalid configuration")?;
    if print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    // Installed first: from here on SIGHUP reloads, and never ends the hive.
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    let set_log_filter = init_tracing(&config.log_level);
    // Said at once, so that a config that was not read (a forgotten `--` after `cargo run`
    // passes `--config` to cargo) is visible.
    tracing::info!(
        "config file: {}; state dir: {}; catalog: {}",
        config.config_file.as_ref().map_or(
            "none (defaults, flags and RBEE_HIVE_* variables only)".to_owned(),
            |p| p.display().to_string()
        ),
        config.state_dir.display(),
        config.catalog_dir.display()
    );
    let signals =
        rbee_hive::shutdown::Signals::install().context("cannot listen for SIGTERM/SIGINT")?;
    rbee_hive::service::spawn_test_wedge().context("cannot install the test hook")?;
    let listener = match rbee_hive::service::inherited_listener()? {
        Some(inherited) => {
            let listener = tokio::net::TcpListener::from_std(inherited)?;
            tracing::info!(
                "serving on the socket the service manager passed (LISTEN_FDS), {}; --bind and --port are not used",
                listener.local_addr()?
            );
            listener
        }
        None => bind(&config).await?,
    };
    config.check_exposure(listener.local_addr()?.ip())?;
    let hive = rbee_hive::Hive::start(listener, config)?;
    let reloader = hive.reloader()?.with_log_filter(set_log_filter);
    let closing = reloader.closing();
    tokio::spawn(async move {
        // Once the shutdown begins, SIGHUP is ignored: a reload then could change the
        // shutdown policy half-way, and READY=1 would follow STOPPING=1.
        loop {
            tokio::select! {
                () = closing.cancelled() => break,
                hangup = hangups.recv() => if hangup.is_none() { break },
            }
            tracing::info!("SIGHUP received: reloading the config");
            rbee_hive::service::reloading();
            match reloader.reload(Config::load(args.clone())) {
                Ok(report) => tracing::info!(
                    "config reloaded; applied: {}; waiting for a restart: {}",
                    list_or_none(&report.applied),
                    list_or_none(&report.needs_restart)
                ),
                Err(error) => {
                    tracing::warn!("config reload refused, the config in effect stays: {error}")
                }
            }
            rbee_hive::service::ready(reloader.workers());
        }
    });
    // The one line on stdout, printed once the hive is ready: scripts and tests read the
    // bound port from it.
    println!("rbee-hive listening on http://{}", hive.local_addr()?);
    hive.serve(signals.clone().first(), signals.second())
        .await?;
    Ok(())
}

/// The listen backlog: connections the kernel completes while the hive is busy wait there
/// instead of having their SYN dropped (a client retries a dropped SYN only after a second).
/// The kernel caps it at `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(config: &Config) -> anyhow::Result<tokio::net::TcpListener> {
    let address = std::net::SocketAddr::new(config.bind, config.port);
    let listen = || {
        let socket = match address {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As std and tokio do: a port whose last connections are in TIME_WAIT can be reused.
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        socket.listen(LISTEN_BACKLOG)
    };
    match listen() {
        Ok(listener) => Ok(listener),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "cannot listen on {}:{}: the address is in use (another rbee-hive? give this one \
             another port with --port)",
            config.bind,
            config.port
        ),
        Err(error) => {
            Err(error).with_context(|| format!("cannot listen on {}:{}", config.bind, config.port))
        }
    }
}

fn list_or_none(keys: &[String]) -> String {
    if keys.is_empty() {
        "none".to_owned()
    } else {
        keys.join(", ")
    }
}

/// The daemon log on stderr, filtered by `RUST_LOG` when set, else by `log_level`; returns
/// what changes `log_level` on a reload.
fn init_tracing(log_level: &str) -> rbee_hive::reload::LogFilterSetter {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let from_environment = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    let pinned = from_environment.is_some();
    let filter = from_environment.unwrap_or_else(|| {
        tracing_subscriber::EnvFilter::try_new(log_level)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    });
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    Box::new(move |level: &str| {
        if pinned {
            return Err("RUST_LOG is set, and wins over log_level".to_owned());
        }
        let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}
