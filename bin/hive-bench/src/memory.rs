//! The hive's memory and start-up (`memory`): resident memory idle, after a warm-up, right
//! after many jobs and after their retention passed; exec → first `/health` answer.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::hive::{self, BenchHive};
use crate::report::Report;
use crate::stats::{millis, summary};
use crate::throughput;

/// `jobs` jobs at 64 clients through a hive (from `bin_dir`) that keeps finished jobs 5 s.
pub async fn run(bin_dir: &Path, jobs: usize, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("10/11 memory ({jobs} jobs) and start-up");
    let retention_s = 5;
    let hive = BenchHive::start(bin_dir, &format!("job_retention_s = {retention_s}\n"))?;
    // Idle: before any job or connection.
    let idle = hive.rss_kib()?;
    // Warm-up: the first jobs grow the allocator's and the runtime's fixed structures once.
    throughput::measure(hive.addr, 64, 2_000).await?;
    wait_for_retention(hive.addr, retention_s).await?;
    let warm = hive.rss_kib()?;
    let started = Instant::now();
    let per_client = jobs.div_ceil(64);
    throughput::measure(hive.addr, 64, per_client * 64).await?;
    let after_jobs = hive.rss_kib()?;
    let jobs_elapsed = started.elapsed();
    wait_for_retention(hive.addr, retention_s).await?;
    let after_retention = hive.rss_kib()?;
    hive.stop()?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    report.rows.push(
        summary("hive memory, idle (just started)", "MiB", vec![mib(idle)])
            .target("≤ 15 MiB", mib(idle) <= 15.0),
    );
    report.rows.push(summary(
        "hive memory, idle after a 2 000-job warm-up and retention",
        "MiB",
        vec![mib(warm)],
    ));
    report.rows.push(summary(
        &format!("hive memory right after {jobs} more jobs"),
        "MiB",
        vec![mib(after_jobs)],
    ));
    let within = mib(after_retention) <= mib(warm) * 1.10;
    report.rows.push(
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
    report.notes.push(format!(
        "memory scenario: {jobs} jobs at 64 clients in {:.1} s, retention {retention_s} s; memory measured 2 s \
         after the last finished job was freed (the allocator returns freed pages after 1 s)",
        jobs_elapsed.as_secs_f64()
    ));
    let mut startups = Vec::new();
    for _ in 0..10 {
        startups.push(hive::startup_to_health(bin_dir)?);
    }
    let row = millis("start-up: exec → first /health answer", &startups);
    let met = row.median <= 50.0;
    report.rows.push(row.target("≤ 50 ms", met));
    Ok(())
}

/// Waits until the hive keeps no finished job, then 2 s more for the allocator to purge.
async fn wait_for_retention(addr: SocketAddr, retention_s: u64) -> anyhow::Result<()> {
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

/// The hive's `/v1/jobs` answer, headers and all.
async fn job_list(addr: SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /v1/jobs HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}
