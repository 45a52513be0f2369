//! The `queen` scenario (issue 22): a hive with today's rbee queen, the minimal queen of
//! [`crate::minimal_queen`] inside this process.
//!
//! - spawn's ready line → the queen has the worker: a hive with `queen_url` at the default
//!   `telemetry_interval_ms` (1 000) registers on its own and the queen subscribes; then
//!   demo workers are spawned one at a time, and for each the instant the job stream
//!   delivers `worker_spawn_ready` is set against the instant the queen's parsed list first
//!   holds the worker's pid (one clock, this process's). With the POST → queen and POST →
//!   ready line beside it, which show whether the queen heard of the worker from the
//!   heartbeat of a state change or from the periodic one (up to 1 s later); and the
//!   delete's `[DONE]` against the first list without the worker. The same spawns on a
//!   hive without a queen come first, for reference.
//! - what the queen's subscription costs: the hive's CPU (`/proc/<pid>/stat` utime + stime
//!   over a 20 s window) with 200 idle demo workers at 1 s, without a telemetry reader and
//!   with the queen subscribed, three alternating fresh hives each; and the size of each
//!   heartbeat message with 200 workers, and the stream's bytes per second.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::client::Connection;
use crate::hive::BenchHive;
use crate::jobs::{READY, delete_body, ready_id, ready_pid, spawn_body, spawn_many};
use crate::minimal_queen::MinimalQueen;
use crate::observe::cpu_seconds;
use crate::report::Report;
use crate::stats::{Row, millis, summary};

/// The workers of the cost rows.
const COST_WORKERS: usize = 200;
/// Each cost window.
const WINDOW: Duration = Duration::from_secs(20);

/// Both parts of the scenario: `repeats` spawns for the latency, then the cost windows.
pub async fn run(bin_dir: &Path, repeats: usize, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("queen: spawn's ready line → the queen has the worker ({repeats} spawns)");
    report.rows.extend(ready_to_queen(bin_dir, repeats).await?);
    eprintln!(
        "queen: the hive's CPU with {COST_WORKERS} workers at 1 s, without and with the queen ({} s windows, 3 each)",
        WINDOW.as_secs()
    );
    let (rows, note) = subscription_cost(bin_dir).await?;
    report.rows.extend(rows);
    report.notes.push(note);
    Ok(())
}

/// Milliseconds from `from` to `to`, negative when `to` came first.
fn signed_ms(from: Instant, to: Instant) -> f64 {
    match to.checked_duration_since(from) {
        Some(after) => after.as_secs_f64() * 1000.0,
        None => -(from - to).as_secs_f64() * 1000.0,
    }
}

/// The reference: the same spawns (POST → ready line) and deletes on a hive with no queen
/// and no telemetry reader.
async fn spawns_without_queen(bin_dir: &Path, repeats: usize) -> anyhow::Result<Vec<Duration>> {
    let hive = BenchHive::start(bin_dir, "")?;
    let mut connection = Connection::open(hive.addr).await?;
    let mut post_to_ready = Vec::new();
    for _ in 0..repeats {
        let (text, posted, ready_at) = connection.run_marked(&spawn_body("demo"), READY).await?;
        post_to_ready.push(ready_at - posted);
        connection
            .run(&delete_body(&ready_id(&text)?, None))
            .await?;
    }
    drop(connection);
    hive.stop()?;
    Ok(post_to_ready)
}

/// A hive registered with the queen, `repeats` spawn → measure → delete; the same spawns
/// without a queen first, for reference.
async fn ready_to_queen(bin_dir: &Path, repeats: usize) -> anyhow::Result<Vec<Row>> {
    let alone = spawns_without_queen(bin_dir, repeats).await?;
    let queen = MinimalQueen::start().await?;
    // The default telemetry interval (1 000 ms): a heartbeat at a state change must not
    // have to wait for the tick.
    let hive = BenchHive::start(bin_dir, &format!("queen_url = {:?}\n", queen.url()))?;
    queen
        .wait_for(
            Duration::from_secs(10),
            "a registration and a first heartbeat",
            |seen| !seen.registrations.is_empty() && !seen.heartbeats.is_empty(),
        )
        .await?;
    let mut connection = Connection::open(hive.addr).await?;
    let mut ready_to_queen = Vec::new();
    let mut post_to_queen = Vec::new();
    let mut post_to_ready = Vec::new();
    let mut done_to_gone = Vec::new();
    let mut ready_to_ready_beat = Vec::new();
    for _ in 0..repeats {
        let (text, posted, ready_at) = connection.run_marked(&spawn_body("demo"), READY).await?;
        let pid = ready_pid(&text)?;
        // Far more than one interval: a worker the queen never lists fails the scenario.
        let seen_at = queen.first_seen(pid, Duration::from_secs(5)).await?;
        ready_to_queen.push(signed_ms(ready_at, seen_at));
        let ready_beat = queen.first_ready(pid, Duration::from_secs(5)).await?;
        ready_to_ready_beat.push(signed_ms(ready_at, ready_beat));
        post_to_queen.push(seen_at - posted);
        post_to_ready.push(ready_at - posted);
        let (_, _, done) = connection
            .run_marked(&delete_body(&ready_id(&text)?, None), "")
            .await?;
        // Also forgets the pid, which a later worker may get again.
        let gone_at = queen.gone(pid, Duration::from_secs(5)).await?;
        done_to_gone.push(signed_ms(done, gone_at));
    }
    let registrations = queen.seen(|seen| seen.registrations.len());
    drop(connection);
    hive.stop()?;
    if registrations != 1 {
        bail!("the hive registered {registrations} times with one queen that stayed subscribed");
    }
    let row = summary(
        "spawn's ready line → the queen has the worker (negative: before the line)",
        "ms",
        ready_to_queen,
    );
    let met = row.median <= 50.0;
    Ok(vec![
        row.target("median ≤ 50 ms", met),
        millis(
            "worker_spawn POST → the queen has the worker (interval 1 s)",
            &post_to_queen,
        ),
        millis(
            "worker_spawn POST → the ready line (the same spawns)",
            &post_to_ready,
        ),
        millis(
            "worker_spawn POST → the ready line, a hive without a queen or reader",
            &alone,
        ),
        summary(
            "spawn's ready line → a heartbeat lists the worker \"ready\" (negative: before)",
            "ms",
            ready_to_ready_beat,
        ),
        summary(
            "worker_delete's [DONE] → the queen no longer lists the worker (negative: before)",
            "ms",
            done_to_gone,
        ),
    ])
}

/// What one window saw.
struct Window {
    /// The hive's CPU, percent of one core.
    cpu: f64,
    /// With the queen: each heartbeat message's size in the window.
    heartbeat_bytes: Vec<f64>,
    /// With the queen: bytes the stream carried per second in the window.
    stream_bytes_per_s: Option<f64>,
}

/// A fresh hive with [`COST_WORKERS`] idle demo workers at the default 1 s interval, its CPU
/// over [`WINDOW`]; with the queen, registered and subscribed throughout.
async fn hive_cpu(bin_dir: &Path, with_queen: bool) -> anyhow::Result<Window> {
    let queen = MinimalQueen::start().await?;
    let queen_line = if with_queen {
        format!("queen_url = {:?}\n", queen.url())
    } else {
        String::new()
    };
    let hive = BenchHive::start(
        bin_dir,
        &format!("{queen_line}worker_ports = \"20000-20999\"\n"),
    )?;
    spawn_many(hive.addr, COST_WORKERS).await?;
    if with_queen {
        queen
            .wait_for(
                Duration::from_secs(10),
                "a heartbeat listing every worker",
                |seen| {
                    seen.heartbeats
                        .last()
                        .is_some_and(|h| h.parsed == COST_WORKERS)
                },
            )
            .await?;
    }
    // As the observe scenario: the spawns' own work settles first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (bytes_before, beats_before) =
        queen.seen(|seen| (seen.stream_bytes, seen.heartbeats.len()));
    let before = cpu_seconds(hive.pid())?;
    let started = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let used = cpu_seconds(hive.pid())? - before;
    let elapsed = started.elapsed().as_secs_f64();
    let (bytes, beats) = queen.seen(|seen| {
        (
            seen.stream_bytes - bytes_before,
            seen.heartbeats[beats_before..].to_vec(),
        )
    });
    hive.stop()?;
    let window = Window {
        cpu: used / elapsed * 100.0,
        heartbeat_bytes: beats.iter().map(|h| h.message_bytes as f64).collect(),
        stream_bytes_per_s: with_queen.then(|| bytes as f64 / elapsed),
    };
    if with_queen {
        // Every heartbeat of the window lists every worker, and the queen's strict types take
        // each one: else the row would measure a queen that sees less than it should.
        if let Some(short) = beats
            .iter()
            .find(|h| h.listed != COST_WORKERS || h.parsed != COST_WORKERS)
        {
            bail!(
                "a heartbeat listed {} workers, {} parsed, of {COST_WORKERS}",
                short.listed,
                short.parsed
            );
        }
        let span = beats
            .first()
            .zip(beats.last())
            .map_or(0.0, |(a, b)| (b.at - a.at).as_secs_f64());
        if beats.len() < WINDOW.as_secs() as usize - 1 || span < WINDOW.as_secs_f64() - 2.0 {
            bail!(
                "only {} heartbeats over {span:.1} s of a {} s window at 1 s",
                beats.len(),
                WINDOW.as_secs()
            );
        }
    } else if !beats.is_empty() {
        bail!("the queen got heartbeats from a hive that was not given its URL");
    }
    Ok(window)
}

/// The cost rows: three alternating windows without and with the queen.
async fn subscription_cost(bin_dir: &Path) -> anyhow::Result<(Vec<Row>, String)> {
    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut message_bytes = Vec::new();
    let mut per_second = Vec::new();
    for _ in 0..3 {
        without.push(hive_cpu(bin_dir, false).await?.cpu);
        let window = hive_cpu(bin_dir, true).await?;
        with.push(window.cpu);
        message_bytes.extend(window.heartbeat_bytes);
        per_second.extend(window.stream_bytes_per_s);
    }
    let median = |values: &[f64]| {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let cost = median(&with) - median(&without);
    let heartbeats = message_bytes.len();
    let rows = vec![
        summary(
            &format!(
                "hive CPU, {COST_WORKERS} idle workers at 1 s, no telemetry reader ({} s windows)",
                WINDOW.as_secs()
            ),
            "% core",
            without,
        ),
        summary(
            &format!(
                "hive CPU, {COST_WORKERS} idle workers at 1 s, the queen subscribed ({} s windows)",
                WINDOW.as_secs()
            ),
            "% core",
            with,
        )
        .comment(&format!("the subscription costs {cost:+.2} % of a core")),
        summary(
            &format!("heartbeat message with {COST_WORKERS} workers (event: heartbeat, as sent)"),
            "bytes",
            message_bytes,
        ),
    ];
    let note = format!(
        "queen scenario: the subscribed stream carried a median {:.0} bytes/s over the windows \
         ({heartbeats} heartbeats: one per tick, beside the tick's `event: telemetry`, which the queen drops)",
        median(&per_second)
    );
    Ok((rows, note))
}
