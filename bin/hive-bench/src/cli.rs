//! The command line against a hive (`cli`): `rbee-hive ps` with 10 workers, and
//! `rbee-hive spawn -q` against the same spawn through HTTP.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::client::Connection;
use crate::jobs::{delete_body, delete_ids, ready_id, spawn_body};
use crate::report::Report;
use crate::stats::{median, millis};

/// `rbee-hive ps` and `rbee-hive spawn -q` from `bin_dir`, `repeats` times each.
pub async fn run(
    bin_dir: &Path,
    addr: SocketAddr,
    repeats: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    eprintln!(
        "5/11 the command line: `rbee-hive ps` with 10 workers, `rbee-hive spawn` against HTTP"
    );
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        let mut connection = Connection::open(addr).await?;
        for _ in 0..10 {
            let text = connection.run(&spawn_body("demo")).await?;
            ids.push(ready_id(&text)?);
        }
        ids
    };
    let url = format!("http://{addr}");
    let mut ps = Vec::new();
    for _ in 0..repeats {
        ps.push(cli_run(bin_dir, &url, &["ps"])?.0);
    }
    let row = millis("`rbee-hive ps` with 10 workers: exec → exit", &ps);
    let met = row.median <= 10.0;
    report.rows.push(row.target("≤ 10 ms", met));
    delete_ids(addr, ids).await?;
    let mut through_cli = Vec::new();
    let mut through_http = Vec::new();
    let mut connection = Connection::open(addr).await?;
    for _ in 0..repeats {
        let (elapsed, id) = cli_run(bin_dir, &url, &["spawn", "bench", "-q"])?;
        through_cli.push(elapsed);
        connection.run(&delete_body(id.trim(), None)).await?;
        let started = Instant::now();
        let text = connection.run(&spawn_body("demo")).await?;
        through_http.push(started.elapsed());
        connection
            .run(&delete_body(&ready_id(&text)?, None))
            .await?;
    }
    report.rows.push(millis(
        "spawn through HTTP (POST → end of the stream)",
        &through_http,
    ));
    let row = millis("`rbee-hive spawn -q`: exec → exit", &through_cli);
    let over = row.median - median(&through_http).as_secs_f64() * 1000.0;
    report.rows.push(row.target(
        &format!("≤ HTTP + 10 ms (is HTTP {over:+.1} ms)"),
        over <= 10.0,
    ));
    Ok(())
}

/// Runs the `rbee-hive` client with `args` against `url`; returns exec → exit and its
/// stdout, failing unless it exits 0.
fn cli_run(bin_dir: &Path, url: &str, args: &[&str]) -> anyhow::Result<(Duration, String)> {
    let started = Instant::now();
    let output = Command::new(bin_dir.join("rbee-hive"))
        .args(args)
        .env("RBEE_HIVE_URL", url)
        .env_remove("RBEE_HIVE_TOKEN_FILE")
        .env_remove("RBEE_HIVE_HIVE_ID")
        .stdin(Stdio::null())
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
