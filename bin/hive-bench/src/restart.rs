//! A hive restarted on its state with 200 live workers (`restart`, the `keep` policy): the
//! time to its first `/health` answer and until `worker_list` shows them all ready again.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::client::Connection;
use crate::hive::BenchHive;
use crate::jobs::{LIST, delete_all, spawn_many};
use crate::report::Report;
use crate::stats::millis;

/// Five restarts of a hive (from `bin_dir`, with `config` and `on_shutdown = "keep"`) that
/// has 200 workers.
pub async fn run(bin_dir: &Path, config: &str, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("9/11 restart with 200 live workers (keep policy, 5 times)");
    let keep_config = format!("on_shutdown = \"keep\"\n{config}");
    let mut hive = BenchHive::start(bin_dir, &keep_config)?;
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
    report.rows.push(row.target("≤ 50 ms", met));
    let row = millis(
        "restart with 200 live workers: exec → worker_list shows 200 Ready",
        &to_listed,
    );
    let met = row.median <= 500.0;
    report.rows.push(row.target("≤ 500 ms", met));
    Ok(())
}

/// Polls `worker_list` until it shows `count` workers, all ready; returns the time since
/// `exec`.
async fn until_listed_ready(
    addr: SocketAddr,
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
