//! `worker_list` with 10, 50 and the most workers (`list`), and `/metrics` scraped with the
//! same workers.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::bail;

use crate::client::Connection;
use crate::jobs::{LIST, delete_all, spawn_many};
use crate::observe;
use crate::report::Report;
use crate::stats::millis;

/// `worker_list` timed 200 times at each worker count, the cost per worker, then the scrape.
pub async fn run(addr: SocketAddr, workers: usize, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("3/11 worker_list with 10, 50, {workers} workers");
    let mut list_medians = Vec::new();
    let mut spawned = 0usize;
    for count in [10, 50, workers] {
        spawn_many(addr, count - spawned).await?;
        spawned = count;
        let mut connection = Connection::open(addr).await?;
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
        report.rows.push(if count == workers {
            let met = row.median <= 5.0;
            row.target("median ≤ 5 ms (200 workers)", met)
        } else {
            row
        });
    }
    if let (Some((small, t_small)), Some((large, t_large))) =
        (list_medians.first(), list_medians.last())
    {
        report.notes.push(format!(
            "worker_list cost per worker: {:.1} µs ((median at {large} − median at {small}) / {})",
            (t_large - t_small) * 1000.0 / (large - small) as f64,
            large - small
        ));
    }
    // The same workers, scraped.
    report.rows.push(observe::scrape(addr, spawned).await?);
    delete_all(addr, spawned).await?;
    Ok(())
}
