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
//! a hostile load at a 1024 descriptor limit (`service`).
//! A p99 is shown only over 100 samples or more.
//!
//! # Layout
//! - `client`: a minimal keep-alive HTTP/1.1 client.
//! - `download`: the download scenario (a file server in this process, curl, the hive).
//! - `hive`: starting, stopping and measuring a hive process.
//! - `service`: the service scenarios (socket activation, idle connections, hostile load).
//! - `worker`: the demo worker's own times, without the hive.
//! - `stats`: median, p99, min, max.

mod client;
mod download;
mod hive;
mod observe;
mod service;
mod stats;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use client::Connection;
use hive::BenchHive;
use stats::{Row, median, millis, summary};

const LIST: &str = r#"{"operation":"worker_list","hive_id":"localhost"}"#;
/// The narration action of a spawn's ready line.
const READY: &str = "worker_spawn_ready";

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
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench.json")]
    out: std::path::PathBuf,
    /// Run only these scenarios (comma-separated): round-trip, throughput, list, spawn,
    /// cli, stubborn, concurrent, shutdown, restart, memory, download, observe, service
    /// (or one of its parts: service-restart, service-idle, service-hostile).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

impl Args {
    fn runs(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

fn spawn_body(worker: &str) -> String {
    format!(
        r#"{{"operation":"worker_spawn","hive_id":"localhost","model":"bench","worker":"{worker}","device":0}}"#
    )
}

fn delete_body(id: &str, grace_ms: Option<u64>) -> String {
    match grace_ms {
        Some(ms) => format!(
            r#"{{"operation":"worker_delete","hive_id":"localhost","id":"{id}","grace_ms":{ms}}}"#
        ),
        None => format!(r#"{{"operation":"worker_delete","hive_id":"localhost","id":"{id}"}}"#),
    }
}

fn ready_id(stream: &str) -> anyhow::Result<String> {
    let line = stream
        .lines()
        .find(|l| l.contains("worker_spawn_ready"))
        .context("no ready line")?;
    let id = line
        .split("Worker ready: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .context("worker id")?;
    Ok(id.to_owned())
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
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    let llama = worker::find_llama_server();
    let llama_model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny-llama.gguf");
    let llama_line = llama
        .as_ref()
        .map(|p| format!("llama_server = {:?}\n", p.display().to_string()))
        .unwrap_or_default();
    let config = format!(
        "worker_ports = \"20000-{}\"\n{llama_line}{}",
        20000 + args.workers + 50,
        "[workers.stubborn]\ncommand = [\"rbee-demo-worker\", \"--worker-id\", \"{worker_id}\", \"--model\", \"{model}\", \
         \"--port\", \"{port}\", \"--hive-url\", \"{hive_url}\", \"--ignore-sigterm\"]\n"
    );
    let hive = BenchHive::start(&bin_dir, &config)?;

    if args.runs("round-trip") {
        eprintln!("1/11 job round trip ({} jobs)", args.round_trips);
        let mut connection = Connection::open(hive.addr).await?;
        for _ in 0..500 {
            connection.run(LIST).await?;
        }
        let mut samples = Vec::with_capacity(args.round_trips);
        for _ in 0..args.round_trips {
            let started = Instant::now();
            connection.run(LIST).await?;
            samples.push(started.elapsed());
        }
        let row = millis(
            "job round trip (POST worker_list + stream to [DONE])",
            &samples,
        );
        let met = row.median <= 1.0 && row.p99.is_some_and(|p99| p99 <= 5.0);
        rows.push(row.target("median ≤ 1 ms, p99 ≤ 5 ms", met));
    }

    if args.runs("throughput") {
        eprintln!("2/11 throughput");
        for clients in [1usize, 16, 64] {
            let jobs_per_run = 1000 * clients.min(8);
            let mut rates = Vec::new();
            for _ in 0..5 {
                rates.push(throughput(hive.addr, clients, jobs_per_run).await?);
            }
            let row = summary(&format!("throughput, {clients} client(s)"), "jobs/s", rates);
            rows.push(if clients == 64 {
                let met = row.median >= 5000.0;
                row.target("≥ 5000 jobs/s", met)
            } else {
                row
            });
        }
    }

    if args.runs("list") {
        eprintln!("3/11 worker_list with 10, 50, {} workers", args.workers);
        let mut list_medians = Vec::new();
        let mut spawned = 0usize;
        for count in [10, 50, args.workers] {
            spawn_many(hive.addr, count - spawned).await?;
            spawned = count;
            let mut connection = Connection::open(hive.addr).await?;
            let mut samples = Vec::new();
            for _ in 0..200 {
                let started = Instant::now();
                let text = connection.run(LIST).await?;
                samples.push(started.elapsed());
                let entries = text.matches("worker_list_entry").count();
                if entries != count {
                    bail!("worker_list showed {entries} workers, expected {count}");
                }
            }
            let row = millis(&format!("worker_list with {count} workers"), &samples);
            list_medians.push((count, row.median));
            rows.push(if count == args.workers {
                let met = row.median <= 5.0;
                row.target("median ≤ 5 ms (200 workers)", met)
            } else {
                row
            });
        }
        if let (Some((small, t_small)), Some((large, t_large))) =
            (list_medians.first(), list_medians.last())
        {
            notes.push(format!(
            "worker_list cost per worker: {:.1} µs ((median at {large} − median at {small}) / {})",
            (t_large - t_small) * 1000.0 / (large - small) as f64,
            large - small
        ));
        }
        // The same workers, scraped.
        rows.push(observe::scrape(hive.addr, spawned).await?);
        delete_all(hive.addr, spawned).await?;
    }

    if args.runs("spawn") {
        eprintln!(
            "4/11 spawn-to-ready and graceful delete ({} each), the worker's own times",
            args.repeats
        );
        let hive_url = format!("http://{}", hive.addr);
        let mut own_listen = Vec::new();
        let mut own_ready = Vec::new();
        let mut own_exit = Vec::new();
        for _ in 0..args.repeats {
            let own = worker::own_times(&bin_dir, &hive_url)?;
            own_listen.push(own.listening);
            own_ready.push(own.ready);
            own_exit.push(own.exit);
        }
        let mut spawn_times = Vec::new();
        let mut delete_times = Vec::new();
        let mut connection = Connection::open(hive.addr).await?;
        for _ in 0..args.repeats {
            let (text, to_ready) = connection.run_until(&spawn_body("demo"), READY).await?;
            spawn_times.push(to_ready);
            let id = ready_id(&text)?;
            let started = Instant::now();
            let text = connection.run(&delete_body(&id, None)).await?;
            delete_times.push(started.elapsed());
            if text.contains("worker_delete_sigkill") {
                bail!("a graceful delete needed SIGKILL");
            }
        }
        rows.push(millis("demo worker's own exec → listening", &own_listen));
        rows.push(millis(
            "demo worker's own exec → /health 200 (its readiness)",
            &own_ready,
        ));
        let row = millis(
            "spawn-to-ready through the hive (POST → ready line)",
            &spawn_times,
        );
        let over = row.median - median(&own_ready).as_secs_f64() * 1000.0;
        let over_listening = row.median - median(&own_listen).as_secs_f64() * 1000.0;
        rows.push(row.target(
            &format!(
                "≤ own readiness + 1.5 ms (is own + {over:.1} ms; listening + {over_listening:.1} ms)"
            ),
            over <= 1.5,
        ));
        rows.push(millis("demo worker's own SIGTERM → exit", &own_exit));
        let row = millis(
            "graceful delete through the hive (POST → [DONE])",
            &delete_times,
        );
        let over = row.median - median(&own_exit).as_secs_f64() * 1000.0;
        rows.push(row.target(
            &format!("≤ own + 1 ms (is own + {over:.1} ms)"),
            over <= 1.0,
        ));

        match &llama {
            Some(server) => {
                eprintln!(
                    "   llama-server on the tiny model: its own exec → healthy, and through the hive"
                );
                let mut own = Vec::new();
                let mut through = Vec::new();
                let body = format!(
                    r#"{{"operation":"worker_spawn","hive_id":"localhost","model":{:?},"worker":"llama","device":0}}"#,
                    llama_model.display().to_string()
                );
                for _ in 0..args.repeats.min(10) {
                    own.push(worker::llama_own_ready(server, &llama_model)?);
                    let (text, to_ready) = connection.run_until(&body, READY).await?;
                    through.push(to_ready);
                    connection
                        .run(&delete_body(&ready_id(&text)?, None))
                        .await?;
                }
                rows.push(millis(
                    "llama-server (tiny model), own exec → healthy",
                    &own,
                ));
                let row = millis("llama-server spawn-to-ready through the hive", &through);
                let over = row.median - median(&own).as_secs_f64() * 1000.0;
                rows.push(row.target(
                    &format!("≤ own + 20 ms (is own + {over:.1} ms)"),
                    over <= 20.0,
                ));
                notes.push(format!("llama-server: {}", server.display()));
            }
            None => notes
                .push("llama-server not found: its spawn-to-ready rows were skipped".to_owned()),
        }
    }

    if args.runs("cli") {
        eprintln!(
            "5/11 the command line: `rbee-hive ps` with 10 workers, `rbee-hive spawn` against HTTP"
        );
        let ids: Vec<String> = {
            let mut ids = Vec::new();
            let mut connection = Connection::open(hive.addr).await?;
            for _ in 0..10 {
                let text = connection.run(&spawn_body("demo")).await?;
                ids.push(ready_id(&text)?);
            }
            ids
        };
        let url = format!("http://{}", hive.addr);
        let mut ps = Vec::new();
        for _ in 0..args.repeats {
            ps.push(cli_run(&bin_dir, &url, &["ps"])?.0);
        }
        let row = millis("`rbee-hive ps` with 10 workers: exec → exit", &ps);
        let met = row.median <= 10.0;
        rows.push(row.target("≤ 10 ms", met));
        delete_ids(hive.addr, ids).await?;
        let mut through_cli = Vec::new();
        let mut through_http = Vec::new();
        let mut connection = Connection::open(hive.addr).await?;
        for _ in 0..args.repeats {
            let (elapsed, id) = cli_run(&bin_dir, &url, &["spawn", "bench", "-q"])?;
            through_cli.push(elapsed);
            connection.run(&delete_body(id.trim(), None)).await?;
            let started = Instant::now();
            let text = connection.run(&spawn_body("demo")).await?;
            through_http.push(started.elapsed());
            connection
                .run(&delete_body(&ready_id(&text)?, None))
                .await?;
        }
        rows.push(millis(
            "spawn through HTTP (POST → end of the stream)",
            &through_http,
        ));
        let row = millis("`rbee-hive spawn -q`: exec → exit", &through_cli);
        let over = row.median - median(&through_http).as_secs_f64() * 1000.0;
        rows.push(row.target(
            &format!("≤ HTTP + 10 ms (is HTTP {over:+.1} ms)"),
            over <= 10.0,
        ));
    }

    if args.runs("stubborn") {
        let mut connection = Connection::open(hive.addr).await?;
        eprintln!("6/11 delete of a SIGTERM-ignoring worker (grace 200 ms)");
        let grace_ms = 200;
        let mut stubborn = Vec::new();
        for _ in 0..args.repeats.min(10) {
            let text = connection.run(&spawn_body("stubborn")).await?;
            let id = ready_id(&text)?;
            let started = Instant::now();
            let text = connection.run(&delete_body(&id, Some(grace_ms))).await?;
            stubborn.push(started.elapsed());
            if !text.contains("worker_delete_sigkill") {
                bail!("a SIGTERM-ignoring worker was not SIGKILLed");
            }
        }
        let row = millis("delete, worker ignores SIGTERM (grace 200 ms)", &stubborn);
        let over = row.median - grace_ms as f64;
        rows.push(row.target(
            &format!("≤ grace + 20 ms (is grace + {over:.1} ms)"),
            over <= 20.0,
        ));
    }

    if args.runs("concurrent") {
        eprintln!("7/11 64 concurrent spawns (5 times)");
        let mut all_ready = Vec::new();
        for _ in 0..5 {
            let (elapsed, ids) = concurrent_spawns(hive.addr, 64).await?;
            all_ready.push(elapsed);
            delete_ids(hive.addr, ids).await?;
        }
        let row = millis(
            "64 concurrent spawns: first POST → last ready line",
            &all_ready,
        );
        let met = row.median <= 250.0;
        rows.push(row.target("≤ 250 ms", met));
    }

    hive.stop()?;

    if args.runs("shutdown") {
        eprintln!(
            "8/11 shutdown with 100 workers (3 times), 100 workers' own parallel exit, shutdown with 3 workers (10 times)"
        );
        let mut own_exits = Vec::new();
        let mut shutdowns = Vec::new();
        for _ in 0..3 {
            let mut hive = BenchHive::start(&bin_dir, &config)?;
            own_exits.push(worker::own_parallel_exit(
                &bin_dir,
                &format!("http://{}", hive.addr),
                100,
            )?);
            spawn_many(hive.addr, 100).await?;
            shutdowns.push(hive.stop_timed()?);
        }
        rows.push(millis(
            "100 demo workers' own exit, SIGTERM to all → last reaped",
            &own_exits,
        ));
        let row = millis(
            "hive shutdown with 100 workers (stop policy): SIGTERM → exit",
            &shutdowns,
        );
        let over = row.median - median(&own_exits).as_secs_f64() * 1000.0;
        rows.push(row.target(
            &format!("≤ own + 100 ms (is own {over:+.1} ms)"),
            over <= 100.0,
        ));
        // The common case: a few workers, each with its idle heartbeat connection open (what
        // made every shutdown wait a second for idle connections before issue 20).
        let mut small = Vec::new();
        for _ in 0..10 {
            let mut hive = BenchHive::start(&bin_dir, &config)?;
            spawn_many(hive.addr, 3).await?;
            // Their first heartbeats (sent once they listen) have arrived by now.
            tokio::time::sleep(Duration::from_millis(200)).await;
            small.push(hive.stop_timed()?);
        }
        let row = millis(
            "hive shutdown with 3 demo workers (stop policy): SIGTERM → exit",
            &small,
        );
        let met = row.median <= 300.0;
        rows.push(row.target("≤ 300 ms", met));
    }

    if args.runs("restart") {
        eprintln!("9/11 restart with 200 live workers (keep policy, 5 times)");
        let keep_config = format!("on_shutdown = \"keep\"\n{config}");
        let mut hive = BenchHive::start(&bin_dir, &keep_config)?;
        spawn_many(hive.addr, 200).await?;
        let mut to_health = Vec::new();
        let mut to_listed = Vec::new();
        for _ in 0..5 {
            hive.stop_timed()?;
            let (exec, health) = hive.restart()?;
            to_health.push(health);
            to_listed.push(until_listed_ready(hive.addr, 200, exec).await?);
        }
        delete_all(hive.addr, 200).await?;
        hive.stop()?;
        let row = millis(
            "restart with 200 live workers: exec → first /health",
            &to_health,
        );
        let met = row.median <= 50.0;
        rows.push(row.target("≤ 50 ms", met));
        let row = millis(
            "restart with 200 live workers: exec → worker_list shows 200 Ready",
            &to_listed,
        );
        let met = row.median <= 500.0;
        rows.push(row.target("≤ 500 ms", met));
    }

    if args.runs("memory") {
        eprintln!("10/11 memory ({} jobs) and start-up", args.memory_jobs);
        let retention_s = 5;
        let hive = BenchHive::start(&bin_dir, &format!("job_retention_s = {retention_s}\n"))?;
        // Idle: before any job or connection.
        let idle = hive.rss_kib()?;
        // Warm-up: the first jobs grow the allocator's and the runtime's fixed structures once.
        throughput(hive.addr, 64, 2_000).await?;
        wait_for_retention(hive.addr, retention_s).await?;
        let warm = hive.rss_kib()?;
        let started = Instant::now();
        let per_client = args.memory_jobs.div_ceil(64);
        throughput(hive.addr, 64, per_client * 64).await?;
        let after_jobs = hive.rss_kib()?;
        let jobs_elapsed = started.elapsed();
        wait_for_retention(hive.addr, retention_s).await?;
        let after_retention = hive.rss_kib()?;
        hive.stop()?;
        let mib = |kib: u64| kib as f64 / 1024.0;
        rows.push(
            summary("hive memory, idle (just started)", "MiB", vec![mib(idle)])
                .target("≤ 15 MiB", mib(idle) <= 15.0),
        );
        rows.push(summary(
            "hive memory, idle after a 2 000-job warm-up and retention",
            "MiB",
            vec![mib(warm)],
        ));
        rows.push(summary(
            &format!("hive memory right after {} more jobs", args.memory_jobs),
            "MiB",
            vec![mib(after_jobs)],
        ));
        let within = mib(after_retention) <= mib(warm) * 1.10;
        rows.push(
            summary(
                "hive memory after their retention passed",
                "MiB",
                vec![mib(after_retention)],
            )
            .target(
                &format!(
                    "within 10 % of idle after warm-up ({:+.1} %)",
                    (mib(after_retention) / mib(warm) - 1.0) * 100.0
                ),
                within,
            ),
        );
        notes.push(format!(
        "memory scenario: {} jobs at 64 clients in {:.1} s, retention {retention_s} s; memory measured 2 s after the \
         last finished job was freed (the allocator returns freed pages after 1 s)",
        args.memory_jobs,
        jobs_elapsed.as_secs_f64()
    ));
        let mut startups = Vec::new();
        for _ in 0..10 {
            startups.push(hive::startup_to_health(&bin_dir)?);
        }
        let row = millis("start-up: exec → first /health answer", &startups);
        let met = row.median <= 50.0;
        rows.push(row.target("≤ 50 ms", met));
    }

    if args.runs("download") {
        eprintln!(
            "11/11 download of 256 MiB: curl -o, model_download, with sha256 ({} rounds)",
            args.download_repeats
        );
        for place in download::places() {
            let outcome = download::run(&bin_dir, args.download_repeats, &place).await?;
            rows.extend(outcome.rows);
            notes.extend(outcome.notes);
        }
    }

    if args.runs("observe") {
        eprintln!("12/12 observing: sampling cost, telemetry and logs latency");
        rows.extend(observe::sampling_cost(&bin_dir).await?);
        rows.push(observe::telemetry_latency(&bin_dir).await?);
        rows.push(observe::logs_latency(&bin_dir).await?);
    }

    if args.runs("service") || args.runs("service-restart") {
        eprintln!("service: socket-activated restart under 64 clients");
        rows.extend(service::restart_under_load(&bin_dir).await?);
    }
    if args.runs("service") || args.runs("service-idle") {
        eprintln!("service: 2000 idle connections");
        rows.extend(service::idle_connections(&bin_dir).await?);
    }
    if args.runs("service") || args.runs("service-hostile") {
        eprintln!("service: /health under a hostile load at a 1024 fd limit");
        rows.extend(service::hostile(&bin_dir).await?);
    }

    print_table(&rows, &notes);
    let json = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": machine(),
        "rows": rows,
        "notes": notes,
    });
    std::fs::write(&args.out, serde_json::to_vec_pretty(&json)?)?;
    eprintln!("results written to {}", args.out.display());
    Ok(())
}

/// Jobs per second with `clients` connections sharing `jobs` round trips.
async fn throughput(
    addr: std::net::SocketAddr,
    clients: usize,
    jobs: usize,
) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut connections = Vec::new();
    for _ in 0..clients {
        connections.push(Connection::open(addr).await?);
    }
    let started = Instant::now();
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut connection| {
            let next = next.clone();
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < jobs {
                    connection.run(LIST).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

async fn spawn_many(addr: std::net::SocketAddr, count: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let next = next.clone();
            tokio::spawn(async move {
                let mut connection = Connection::open(addr).await?;
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    connection.run(&spawn_body("demo")).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Runs the `rbee-hive` client with `args` against `url`; returns exec → exit and its
/// stdout, failing unless it exits 0.
fn cli_run(
    bin_dir: &std::path::Path,
    url: &str,
    args: &[&str],
) -> anyhow::Result<(Duration, String)> {
    let started = Instant::now();
    let output = std::process::Command::new(bin_dir.join("rbee-hive"))
        .args(args)
        .env("RBEE_HIVE_URL", url)
        .env_remove("RBEE_HIVE_TOKEN_FILE")
        .env_remove("RBEE_HIVE_HIVE_ID")
        .stdin(std::process::Stdio::null())
        .output()?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        bail!(
            "rbee-hive {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok((elapsed, String::from_utf8(output.stdout)?))
}

/// Spawns `count` demo workers at once, each on its own connection; returns the time from
/// the first POST to the last ready line, and the workers' ids.
async fn concurrent_spawns(
    addr: std::net::SocketAddr,
    count: usize,
) -> anyhow::Result<(Duration, Vec<String>)> {
    let mut connections = Vec::new();
    for _ in 0..count {
        connections.push(Connection::open(addr).await?);
    }
    let started = Instant::now();
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut connection| {
            tokio::spawn(async move {
                let posted = Instant::now();
                let (text, to_ready) = connection.run_until(&spawn_body("demo"), READY).await?;
                anyhow::Ok((posted + to_ready, ready_id(&text)?))
            })
        })
        .collect();
    let mut last = started;
    let mut ids = Vec::new();
    for task in tasks {
        let (ready_at, id) = task.await??;
        last = last.max(ready_at);
        ids.push(id);
    }
    Ok((last - started, ids))
}

async fn delete_ids(addr: std::net::SocketAddr, ids: Vec<String>) -> anyhow::Result<()> {
    let tasks: Vec<_> = ids
        .into_iter()
        .map(|id| {
            tokio::spawn(async move {
                let mut connection = Connection::open(addr).await?;
                connection.run(&delete_body(&id, None)).await?;
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Polls `worker_list` until it shows `count` workers, all ready; returns the time since
/// `exec`.
async fn until_listed_ready(
    addr: std::net::SocketAddr,
    count: usize,
    exec: Instant,
) -> anyhow::Result<Duration> {
    let mut connection = Connection::open(addr).await?;
    loop {
        let text = connection.run(LIST).await?;
        let ready = text
            .lines()
            .filter(|l| l.contains("worker_list_entry") && l.ends_with("| ready"))
            .count();
        if ready == count {
            return Ok(exec.elapsed());
        }
        if exec.elapsed() > Duration::from_secs(30) {
            bail!("only {ready} of {count} workers listed ready 30 s after the restart");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn delete_all(addr: std::net::SocketAddr, count: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(1));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let next = next.clone();
            tokio::spawn(async move {
                let mut connection = Connection::open(addr).await?;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n > count {
                        return anyhow::Ok(());
                    }
                    connection
                        .run(&delete_body(&format!("worker-{n}"), None))
                        .await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Waits until the hive keeps no finished job, then 2 s more for the allocator to purge.
async fn wait_for_retention(addr: std::net::SocketAddr, retention_s: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(retention_s + 60);
    loop {
        if job_list(addr).await?.contains("\"jobs\":[]") {
            tokio::time::sleep(Duration::from_secs(2)).await;
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("finished jobs were not freed after retention");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn job_list(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /v1/jobs HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("model name"))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
    });
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    serde_json::json!({ "cpu": cpu, "cores": cores, "kernel": kernel.trim() })
}

fn print_table(rows: &[Row], notes: &[String]) {
    println!("| scenario | unit | n | median | p99 | min | max | target | met |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {:.3} | {} | {:.3} | {:.3} | {} | {} |",
            row.name,
            row.unit,
            row.samples,
            row.median,
            row.p99.map_or("—".to_owned(), |p99| format!("{p99:.3}")),
            row.min,
            row.max,
            row.target.as_deref().unwrap_or(""),
            match row.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            }
        );
    }
    for note in notes {
        println!("\n{note}");
    }
}
