//! Delete of a worker that ignores SIGTERM (`stubborn`): the grace, then SIGKILL.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::bail;

use crate::client::Connection;
use crate::jobs::{delete_body, ready_id, spawn_body};
use crate::report::Report;
use crate::stats::millis;

/// Up to 10 deletes of a SIGTERM-ignoring worker with a grace of 200 ms, against the grace.
pub async fn stubborn(addr: SocketAddr, repeats: usize, report: &mut Report) -> anyhow::Result<()> {
    let mut connection = Connection::open(addr).await?;
    eprintln!("6/11 delete of a SIGTERM-ignoring worker (grace 200 ms)");
    let grace_ms = 200;
    let mut stubborn = Vec::new();
    for _ in 0..repeats.min(10) {
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
    report.rows.push(row.target(
        &format!("≤ grace + 20 ms (is grace + {over:.1} ms)"),
        over <= 20.0,
    ));
    Ok(())
}
