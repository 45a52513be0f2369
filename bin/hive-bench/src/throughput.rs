//! Jobs one after another and many at once: the job round trip (`round-trip`) and the jobs
//! per second at 1, 16 and 64 clients (`throughput`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::client::Connection;
use crate::jobs::LIST;
use crate::report::Report;
use crate::stats::{millis, summary};

/// `round_trips` sequential `worker_list` jobs on one connection, after 500 to warm up.
pub async fn round_trip(
    addr: SocketAddr,
    round_trips: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    eprintln!("1/11 job round trip ({round_trips} jobs)");
    let mut connection = Connection::open(addr).await?;
    for _ in 0..500 {
        connection.run(LIST).await?;
    }
    let mut samples = Vec::with_capacity(round_trips);
    for _ in 0..round_trips {
        let started = Instant::now();
        connection.run(LIST).await?;
        samples.push(started.elapsed());
    }
    let row = millis(
        "job round trip (POST worker_list + stream to [DONE])",
        &samples,
    );
    let met = row.median <= 1.0 && row.p99.is_some_and(|p99| p99 <= 5.0);
    report
        .rows
        .push(row.target("median ≤ 1 ms, p99 ≤ 5 ms", met));
    Ok(())
}

/// Jobs per second at 1, 16 and 64 clients, five runs each.
pub async fn clients(addr: SocketAddr, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("2/11 throughput");
    for clients in [1usize, 16, 64] {
        let jobs_per_run = 1000 * clients.min(8);
        let mut rates = Vec::new();
        for _ in 0..5 {
            rates.push(measure(addr, clients, jobs_per_run).await?);
        }
        let row = summary(&format!("throughput, {clients} client(s)"), "jobs/s", rates);
        report.rows.push(if clients == 64 {
            let met = row.median >= 5000.0;
            row.target("≥ 5000 jobs/s", met)
        } else {
            row
        });
    }
    Ok(())
}

/// Jobs per second with `clients` connections sharing `jobs` round trips.
pub async fn measure(addr: SocketAddr, clients: usize, jobs: usize) -> anyhow::Result<f64> {
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
