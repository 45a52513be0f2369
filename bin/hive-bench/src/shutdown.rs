//! A hive's shutdown under the `stop` policy (`shutdown`): with 100 workers, against 100
//! demo workers' own parallel exit, and with 3 workers whose heartbeat connections are open.

use std::path::Path;
use std::time::Duration;

use crate::hive::BenchHive;
use crate::jobs::spawn_many;
use crate::report::Report;
use crate::stats::{median, millis};
use crate::worker;

/// Hives of their own (from `bin_dir`, with `config`), each stopped once.
pub async fn run(bin_dir: &Path, config: &str, report: &mut Report) -> anyhow::Result<()> {
    eprintln!(
        "8/11 shutdown with 100 workers (3 times), 100 workers' own parallel exit, shutdown with 3 workers (10 times)"
    );
    let mut own_exits = Vec::new();
    let mut shutdowns = Vec::new();
    for _ in 0..3 {
        let mut hive = BenchHive::start(bin_dir, config)?;
        own_exits.push(worker::own_parallel_exit(
            bin_dir,
            &format!("http://{}", hive.addr),
            100,
        )?);
        spawn_many(hive.addr, 100).await?;
        shutdowns.push(hive.stop_timed()?);
    }
    report.rows.push(millis(
        "100 demo workers' own exit, SIGTERM to all → last reaped",
        &own_exits,
    ));
    let row = millis(
        "hive shutdown with 100 workers (stop policy): SIGTERM → exit",
        &shutdowns,
    );
    let over = row.median - median(&own_exits).as_secs_f64() * 1000.0;
    report.rows.push(row.target(
        &format!("≤ own + 100 ms (is own {over:+.1} ms)"),
        over <= 100.0,
    ));
    // The common case: a few workers, each with its idle heartbeat connection open (what
    // made every shutdown wait a second for idle connections before issue 20).
    let mut small = Vec::new();
    for _ in 0..10 {
        let mut hive = BenchHive::start(bin_dir, config)?;
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
    report.rows.push(row.target("≤ 300 ms", met));
    Ok(())
}
