//! `hive-bench`: measures a real rbee-hive with real demo workers and prints a table
//! (median, p99, min, max over the runs), also written as JSON.
//!
//! ```text
//! cargo build --release && cargo run --release -p hive-bench -- --out bench.json
//! ```
//!
//! Scenarios: job round trip; throughput at 1, 16 and 64 clients; `worker_list` with 10, 50
//! and 200 workers; delete of a worker that exits at once on SIGTERM (against its own exit
//! time) and of one that ignores SIGTERM (against its grace); spawn-to-ready (against the
//! worker's own exec-to-listening time); 64 concurrent spawns; shutdown with 100 workers
//! (against 100 workers' own parallel exit); restart with 200 live workers (`keep`); the
//! hive's memory (idle, after 100 000 jobs, after retention) and its start-up time to the
//! first `/health` answer; a 256 MiB `model_download` from a local file server, without and
//! with a sha256 check, against `curl -o` of the same file (`download`, skipped without curl);
//! a socket-activated restart under 64 clients, 2 000 idle connections, and `/health` under
//! a hostile load at a 1024 descriptor limit (`service`); with today's rbee queen (a minimal
//! one in this process), a spawn's ready line → the queen has the worker, and the hive's CPU
//! with 200 workers at 1 s without and with the queen subscribed, and the size of a
//! heartbeat message (`queen`).
//! A p99 is shown only over 100 samples or more.
//!
//!
//! # Layout
//! - `main`: the flags, the hive the first scenarios share, and which scenarios run.
//! - `throughput`: the job round trip and jobs per second at 1, 16 and 64 clients.
//! - `list`: `worker_list` with 10, 50 and 200 workers (and `/metrics` with them).
//! - `spawn`: spawn-to-ready and graceful delete (demo worker, llama-server), 64 at once.
//! - `cli`: `rbee-hive ps` and `rbee-hive spawn -q`.
//! - `delete`: the delete of a worker that ignores SIGTERM.
//! - `shutdown`: a hive's shutdown with 100 and with 3 workers.
//! - `restart`: a restart with 200 live workers (`keep`).
//! - `memory`: the hive's memory over many jobs and its start-up time.
//! - `download`: the download scenario (a file server in this process, curl, the hive).
//! - `observe`: the `/metrics` scrape, the sampler's cost, telemetry and logs latency.
//! - `service`: the service scenarios (socket activation, idle connections, hostile load).
//! - `queen`: the queen scenario (ready line → the queen's list, the subscription's cost).
//! - `minimal_queen`: today's rbee queen as far as a hive meets it, inside this process.
//! - `jobs`: the job bodies, and spawning and deleting workers in bulk.
//! - `client`: a minimal keep-alive HTTP/1.1 client.
//! - `hive`: starting, stopping and measuring a hive process.
//! - `worker`: the demo worker's own times, without the hive.
//! - `stats`: median, p99, min, max.
//! - `report`: the table printed and the JSON written.

mod cli;
mod client;
mod delete;
mod download;
mod hive;
mod jobs;
mod list;
mod memory;
mod minimal_queen;
mod observe;
mod queen;
mod report;
mod restart;
mod service;
mod shutdown;
mod spawn;
mod stats;
mod throughput;
mod worker;

use std::path::Path;

use anyhow::bail;
use clap::Parser;
use hive::BenchHive;
use report::Report;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "hive-bench",
    about = "Benchmarks rbee-hive with real demo workers"
)]
struct Args {
    /// Sequential round trips to time.
    #[arg(long, default_value_t = 5000)]
    round_trips: usize,
    /// Jobs for the memory scenario.
    #[arg(long, default_value_t = 100_000)]
    memory_jobs: usize,
    /// The largest worker count for the worker_list scenario.
    #[arg(long, default_value_t = 200)]
    workers: usize,
    /// Spawn/delete repetitions.
    #[arg(long, default_value_t = 20)]
    repeats: usize,
    /// Rounds of the download scenario (each: curl, model_download, with sha256; 256 MiB).
    #[arg(long, default_value_t = 5)]
    download_repeats: usize,
    /// Spawns of the queen scenario (each: spawn, the queen's list, delete).
    #[arg(long, default_value_t = 40)]
    queen_repeats: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench.json")]
    out: std::path::PathBuf,
    /// Run only these scenarios (comma-separated): round-trip, throughput, list, spawn,
    /// cli, stubborn, concurrent, shutdown, restart, memory, download, observe, service
    /// (or one of its parts: service-restart, service-idle, service-hostile), queen.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

impl Args {
    fn runs(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

/// The config of the hive the first scenarios share: ports for `workers` workers and more,
/// llama-server when one was found, and the `stubborn` worker type (ignores SIGTERM).
fn shared_config(workers: usize, llama: Option<&Path>) -> String {
    let llama_line = llama
        .map(|p| format!("llama_server = {:?}\n", p.display().to_string()))
        .unwrap_or_default();
    format!(
        "worker_ports = \"20000-{}\"\n{llama_line}{}",
        20000 + workers + 50,
        "[workers.stubborn]\ncommand = [\"rbee-demo-worker\", \"--worker-id\", \"{worker_id}\", \"--model\", \"{model}\", \
         \"--port\", \"{port}\", \"--hive-url\", \"{hive_url}\", \"--ignore-sigterm\"]\n"
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = hive::bin_dir()?;
    for program in ["rbee-hive", "rbee-demo-worker"] {
        if !bin_dir.join(program).exists() {
            bail!(
                "{program} not found in {}: run `cargo build --release` first",
                bin_dir.display()
            );
        }
    }
    let mut report = Report::default();

    let llama = worker::find_llama_server();
    let config = shared_config(args.workers, llama.as_deref());
    let hive = BenchHive::start(&bin_dir, &config)?;
    let addr = hive.addr;
    if args.runs("round-trip") {
        throughput::round_trip(addr, args.round_trips, &mut report).await?;
    }
    if args.runs("throughput") {
        throughput::clients(addr, &mut report).await?;
    }
    if args.runs("list") {
        list::run(addr, args.workers, &mut report).await?;
    }
    if args.runs("spawn") {
        spawn::spawn_and_delete(&bin_dir, addr, args.repeats, llama.as_deref(), &mut report)
            .await?;
    }
    if args.runs("cli") {
        cli::run(&bin_dir, addr, args.repeats, &mut report).await?;
    }
    if args.runs("stubborn") {
        delete::stubborn(addr, args.repeats, &mut report).await?;
    }
    if args.runs("concurrent") {
        spawn::concurrent(addr, &mut report).await?;
    }
    hive.stop()?;

    // Each of these starts hives of its own: one that fails is noted and the others still
    // run, so that a run keeps the rows it measured (a loaded machine can fail one).
    let mut failed = Vec::new();
    if args.runs("shutdown") {
        let result = shutdown::run(&bin_dir, &config, &mut report).await;
        note_failure(&mut report, &mut failed, "shutdown", result);
    }
    if args.runs("restart") {
        let result = restart::run(&bin_dir, &config, &mut report).await;
        note_failure(&mut report, &mut failed, "restart", result);
    }
    if args.runs("memory") {
        let result = memory::run(&bin_dir, args.memory_jobs, &mut report).await;
        note_failure(&mut report, &mut failed, "memory", result);
    }
    if args.runs("download") {
        eprintln!(
            "11/11 download of 256 MiB: curl -o, model_download, with sha256 ({} rounds)",
            args.download_repeats
        );
        for place in download::places() {
            let result = download::run(&bin_dir, args.download_repeats, &place)
                .await
                .map(|outcome| {
                    report.rows.extend(outcome.rows);
                    report.notes.extend(outcome.notes);
                });
            note_failure(&mut report, &mut failed, "download", result);
        }
    }

    if args.runs("observe") {
        eprintln!("12/12 observing: sampling cost, telemetry and logs latency");
        let result = async {
            report.rows.extend(observe::sampling_cost(&bin_dir).await?);
            report
                .rows
                .push(observe::telemetry_latency(&bin_dir).await?);
            report.rows.push(observe::logs_latency(&bin_dir).await?);
            anyhow::Ok(())
        }
        .await;
        note_failure(&mut report, &mut failed, "observe", result);
    }

    if args.runs("service") || args.runs("service-restart") {
        eprintln!("service: socket-activated restart under 64 clients");
        let result = service::restart_under_load(&bin_dir)
            .await
            .map(|rows| report.rows.extend(rows));
        note_failure(&mut report, &mut failed, "service-restart", result);
    }
    if args.runs("service") || args.runs("service-idle") {
        eprintln!("service: 2000 idle connections");
        let result = service::idle_connections(&bin_dir)
            .await
            .map(|rows| report.rows.extend(rows));
        note_failure(&mut report, &mut failed, "service-idle", result);
    }
    if args.runs("service") || args.runs("service-hostile") {
        eprintln!("service: /health under a hostile load at a 1024 fd limit");
        let result = service::hostile(&bin_dir)
            .await
            .map(|rows| report.rows.extend(rows));
        note_failure(&mut report, &mut failed, "service-hostile", result);
    }

    if args.runs("queen") {
        let result = queen::run(&bin_dir, args.queen_repeats, &mut report).await;
        note_failure(&mut report, &mut failed, "queen", result);
    }

    report.print();
    report.write(&args.out)?;
    eprintln!("results written to {}", args.out.display());
    if !failed.is_empty() {
        bail!(
            "these scenarios failed (their rows are missing): {}",
            failed.join(", ")
        );
    }
    Ok(())
}

/// Notes a scenario's failure in the report and in `failed` (the run then ends with an
/// error, after the rows of the others are printed and written).
fn note_failure(
    report: &mut Report,
    failed: &mut Vec<String>,
    scenario: &str,
    result: anyhow::Result<()>,
) {
    if let Err(error) = result {
        eprintln!("scenario {scenario} failed: {error:#}");
        report.notes.push(format!(
            "scenario {scenario} FAILED, its rows are missing: {error:#}"
        ));
        failed.push(scenario.to_owned());
    }
}
