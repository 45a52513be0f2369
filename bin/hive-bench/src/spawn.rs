//! Spawning through the hive: spawn-to-ready and graceful delete against the demo worker's
//! own times, the same for llama-server when one is installed (`spawn`), and 64 spawns at
//! once (`concurrent`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::client::Connection;
use crate::jobs::{READY, delete_body, delete_ids, ready_id, spawn_body};
use crate::report::Report;
use crate::stats::{median, millis};
use crate::worker;

/// The tiny GGUF model of the tests, for llama-server.
fn tiny_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-llama.gguf")
}

/// `repeats` spawns and graceful deletes of a demo worker, against its own times measured
/// without the hive; then, with `llama` (a llama-server), its spawn-to-ready on the tiny model.
pub async fn spawn_and_delete(
    bin_dir: &Path,
    addr: SocketAddr,
    repeats: usize,
    llama: Option<&Path>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let llama_model = tiny_model();
    eprintln!("4/11 spawn-to-ready and graceful delete ({repeats} each), the worker's own times");
    let hive_url = format!("http://{addr}");
    let mut own_listen = Vec::new();
    let mut own_ready = Vec::new();
    let mut own_exit = Vec::new();
    for _ in 0..repeats {
        let own = worker::own_times(bin_dir, &hive_url)?;
        own_listen.push(own.listening);
        own_ready.push(own.ready);
        own_exit.push(own.exit);
    }
    let mut spawn_times = Vec::new();
    let mut delete_times = Vec::new();
    let mut connection = Connection::open(addr).await?;
    for _ in 0..repeats {
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
    report
        .rows
        .push(millis("demo worker's own exec → listening", &own_listen));
    report.rows.push(millis(
        "demo worker's own exec → /health 200 (its readiness)",
        &own_ready,
    ));
    let row = millis(
        "spawn-to-ready through the hive (POST → ready line)",
        &spawn_times,
    );
    let over = row.median - median(&own_ready).as_secs_f64() * 1000.0;
    let over_listening = row.median - median(&own_listen).as_secs_f64() * 1000.0;
    report.rows.push(row.target(
        &format!(
            "≤ own readiness + 1.5 ms (is own + {over:.1} ms; listening + {over_listening:.1} ms)"
        ),
        over <= 1.5,
    ));
    report
        .rows
        .push(millis("demo worker's own SIGTERM → exit", &own_exit));
    let row = millis(
        "graceful delete through the hive (POST → [DONE])",
        &delete_times,
    );
    let over = row.median - median(&own_exit).as_secs_f64() * 1000.0;
    report.rows.push(row.target(
        &format!("≤ own + 1 ms (is own + {over:.1} ms)"),
        over <= 1.0,
    ));

    match llama {
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
            for _ in 0..repeats.min(10) {
                own.push(worker::llama_own_ready(server, &llama_model)?);
                let (text, to_ready) = connection.run_until(&body, READY).await?;
                through.push(to_ready);
                connection
                    .run(&delete_body(&ready_id(&text)?, None))
                    .await?;
            }
            report.rows.push(millis(
                "llama-server (tiny model), own exec → healthy",
                &own,
            ));
            let row = millis("llama-server spawn-to-ready through the hive", &through);
            let over = row.median - median(&own).as_secs_f64() * 1000.0;
            report.rows.push(row.target(
                &format!("≤ own + 20 ms (is own + {over:.1} ms)"),
                over <= 20.0,
            ));
            report
                .notes
                .push(format!("llama-server: {}", server.display()));
        }
        None => report
            .notes
            .push("llama-server not found: its spawn-to-ready rows were skipped".to_owned()),
    }
    Ok(())
}

/// 64 demo workers spawned at once, five times: first POST → last ready line.
pub async fn concurrent(addr: SocketAddr, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("7/11 64 concurrent spawns (5 times)");
    let mut all_ready = Vec::new();
    for _ in 0..5 {
        let (elapsed, ids) = concurrent_spawns(addr, 64).await?;
        all_ready.push(elapsed);
        delete_ids(addr, ids).await?;
    }
    let row = millis(
        "64 concurrent spawns: first POST → last ready line",
        &all_ready,
    );
    let met = row.median <= 250.0;
    report.rows.push(row.target("≤ 250 ms", met));
    Ok(())
}

/// Spawns `count` demo workers at once, each on its own connection; returns the time from
/// the first POST to the last ready line, and the workers' ids.
async fn concurrent_spawns(
    addr: SocketAddr,
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
