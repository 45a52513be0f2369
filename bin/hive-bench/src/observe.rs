//! The `observe` scenario (issue 13): what watching the workers costs and how fast it is.
//!
//! - `/metrics` scrape with 200 workers (sampled at least once), 200 scrapes;
//! - the sampler's cost: the hive's CPU time over 30 s with 100 idle workers, sampling every
//!   second, against the same with sampling once an hour;
//! - a state change → a telemetry reader: 20 spawns, each worker's `ready_at` (the hive's
//!   clock) against when its `ready` event arrives (same machine, same clock);
//! - `logs -f`: a worker printing a timestamp every 50 ms, followed for 5 s; each line's
//!   timestamp against when it arrives.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;

use crate::client::Connection;
use crate::hive::BenchHive;
use crate::jobs::spawn_body;
use crate::stats::{Row, millis, summary};

async fn spawn(addr: std::net::SocketAddr, count: usize, worker: &str) -> anyhow::Result<()> {
    let mut connection = Connection::open(addr).await?;
    for _ in 0..count {
        connection.run(&spawn_body(worker)).await?;
    }
    Ok(())
}

/// `/metrics` scraped 200 times against a hive that has `workers` workers.
pub async fn scrape(addr: std::net::SocketAddr, workers: usize) -> anyhow::Result<Row> {
    let mut connection = Connection::open(addr).await?;
    // Wait until every worker has a sample.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = connection.get("/metrics").await?;
        let sampled = text
            .matches("rbee_hive_worker_resident_memory_bytes{")
            .count();
        if sampled >= workers {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {sampled} of {workers} workers sampled");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut samples = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let (status, text) = connection.get("/metrics").await?;
        samples.push(started.elapsed());
        if status != 200 || !text.ends_with("# EOF\n") {
            bail!("/metrics answered {status}");
        }
    }
    let row = millis(&format!("/metrics scrape with {workers} workers"), &samples);
    let met = row.median <= 5.0;
    Ok(row.target("median ≤ 5 ms", met))
}

/// The CPU time a process has used (user + system, `/proc/<pid>/stat`) in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = procfs::process::Process::new(i32::try_from(pid)?)?.stat()?;
    let ticks = (stat.utime + stat.stime) as f64;
    Ok(ticks / procfs::ticks_per_second() as f64)
}

/// The hive's CPU use (percent of one core) over `window` with `workers` idle workers.
async fn hive_cpu(
    bin_dir: &Path,
    interval_ms: u64,
    workers: usize,
    window: Duration,
) -> anyhow::Result<f64> {
    let hive = BenchHive::start(
        bin_dir,
        &format!("telemetry_interval_ms = {interval_ms}\nworker_ports = \"20000-20999\"\n"),
    )?;
    spawn(hive.addr, workers, "demo").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = cpu_seconds(hive.pid())?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let used = cpu_seconds(hive.pid())? - before;
    let percent = used / started.elapsed().as_secs_f64() * 100.0;
    hive.stop()?;
    Ok(percent)
}

/// The sampler's cost: three alternating windows with and without sampling.
pub async fn sampling_cost(bin_dir: &Path) -> anyhow::Result<Vec<Row>> {
    let window = Duration::from_secs(30);
    let mut with = Vec::new();
    let mut without = Vec::new();
    for _ in 0..3 {
        with.push(hive_cpu(bin_dir, 1000, 100, window).await?);
        without.push(hive_cpu(bin_dir, 3_600_000, 100, window).await?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (m_with, m_without) = (median(&mut with.clone()), median(&mut without.clone()));
    let cost = m_with - m_without;
    Ok(vec![
        summary(
            "hive CPU, 100 idle workers, sampling every 1 s (30 s windows)",
            "% core",
            with,
        )
        .target(
            &format!("sampling ≤ 1 % of a core (is {cost:+.2} %)"),
            cost <= 1.0,
        ),
        summary(
            "hive CPU, 100 idle workers, sampling once an hour (30 s windows)",
            "% core",
            without,
        ),
    ])
}

/// When, by this machine's clock, in seconds since the epoch.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An RFC 3339 time (`2026-11-30T09:00:00.123456789Z`) in seconds since the epoch.
fn epoch_seconds(text: &str) -> Option<f64> {
    let (date, time) = text.trim_end_matches('Z').split_once('T')?;
    let mut parts = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut hms = time.split(':');
    let h: f64 = hms.next()?.parse().ok()?;
    let min: f64 = hms.next()?.parse().ok()?;
    let sec: f64 = hms.next()?.trim_end_matches("+00:00").parse().ok()?;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec)
}

/// A state change → the telemetry reader.
pub async fn telemetry_latency(bin_dir: &Path) -> anyhow::Result<Row> {
    let hive = BenchHive::start(bin_dir, "")?;
    let mut reader = Connection::open(hive.addr).await?;
    reader.open_stream("/v1/heartbeats/stream").await?;
    let mut pending = String::new();
    let mut latencies = Vec::new();
    let spawner = tokio::spawn(spawn(hive.addr, 20, "demo"));
    while latencies.len() < 20 {
        let chunk = reader.next_chunk().await?;
        let received = now();
        if chunk.is_empty() {
            bail!("the telemetry stream ended");
        }
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find("\n\n") {
            let block: String = pending.drain(..end + 2).collect();
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            if !block.starts_with("event: worker") {
                continue;
            }
            let event: serde_json::Value = serde_json::from_str(data)?;
            if event["change"] == "ready"
                && let Some(at) = event["worker"]["ready_at"].as_str().and_then(epoch_seconds)
            {
                latencies.push(Duration::from_secs_f64((received - at).max(0.0)));
            }
        }
    }
    spawner.await??;
    hive.stop()?;
    let row = millis("a state change (ready) → a telemetry reader", &latencies);
    let met = row.median <= 10.0;
    Ok(row.target("median ≤ 10 ms", met))
}

/// A line written by a worker → a `logs?follow=true` reader.
pub async fn logs_latency(bin_dir: &Path) -> anyhow::Result<Row> {
    let demo = bin_dir.join("rbee-demo-worker");
    let script = format!(
        "while :; do date +%s.%N; sleep 0.05; done & exec {} --worker-id {{worker_id}} --model {{model}} --port {{port}}",
        demo.display()
    );
    let hive = BenchHive::start(
        bin_dir,
        &format!("[workers.ticker]\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\n"),
    )?;
    spawn(hive.addr, 1, "ticker").await?;
    let mut reader = Connection::open(hive.addr).await?;
    reader
        .open_stream("/v1/workers/worker-1/logs?follow=true&tail=0")
        .await?;
    let mut pending = String::new();
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let chunk = reader.next_chunk().await?;
        let received = now();
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            if let Ok(written) = line.trim().parse::<f64>() {
                latencies.push(Duration::from_secs_f64((received - written).max(0.0)));
            }
        }
    }
    drop(reader);
    hive.stop()?;
    let row = millis(
        "a worker's log line → a logs?follow=true reader",
        &latencies,
    );
    let met = row.median <= 50.0;
    Ok(row.target("median ≤ 50 ms", met))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's CPU time as the kernel accounts it to `getrusage`, in seconds.
    fn rusage_seconds() -> f64 {
        use nix::sys::resource::{UsageWho, getrusage};
        use nix::sys::time::TimeValLike;
        let usage = getrusage(UsageWho::RUSAGE_SELF).unwrap();
        (usage.user_time() + usage.system_time()).num_microseconds() as f64 / 1e6
    }

    #[test]
    fn cpu_time_is_user_plus_system_in_seconds() {
        // Some CPU time to measure (ticks are 10 ms at the usual 100 per second).
        let started = Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let stat = cpu_seconds(std::process::id()).unwrap();
        let rusage = rusage_seconds();
        // The same quantity at two granularities: within a few ticks of each other, so a
        // wrong tick rate (a factor) would show.
        assert!(stat > 0.0, "no CPU time read");
        assert!(
            (stat - rusage).abs() < 0.05,
            "stat {stat} s, rusage {rusage} s"
        );
    }
}
