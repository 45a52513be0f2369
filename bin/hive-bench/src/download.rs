//! The `download` scenario: a 256 MiB file served from memory by a file server inside this
//! process, fetched by `curl -o` (the yardstick) and by the hive's `model_download` without
//! and with a `sha256` to check. The three alternate within each repeat, so that the page
//! cache, the disk's writeback and the machine's other load fall on all three alike.
//!
//! The hive fsyncs the file before it calls it available and curl does not, so curl is
//! also timed with an fsync of its file before it counts as done (`curl -o` + fsync): the
//! same durability, the fair yardstick where the disk is slower than the network. The
//! scenario runs twice: on the temporary folder's disk, where the target is judged against
//! `curl -o` + fsync, and, where there is one, on `/dev/shm` (tmpfs: an fsync costs nothing),
//! where it is judged against plain `curl -o`: the transfer path alone.
//!
//! The curl file and the hive's catalog lie in one temporary folder, so both write to the
//! same file system. Every downloaded model is deleted again (`model_delete`) before the
//! next, which frees the disk and keeps the ids free.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use file_server::FileServer;

use crate::client::Connection;
use crate::hive::BenchHive;
use crate::stats::{Row, median, millis};

/// The file's size: large enough that the transfer, not the job's set-up, dominates.
const SIZE: usize = 256 * 1024 * 1024;
/// The served file's name; `.gguf` so that the catalog names the model as it would a real one.
const FILE: &str = "bench.gguf";
/// The throughput the hive must reach, as a fraction of curl's.
const AT_LEAST: f64 = 0.8;

/// Where the files are written.
pub struct Place {
    /// Shown in the rows (`disk`, `tmpfs`).
    label: &'static str,
    /// The folder the temporary files go under (`None`: the system's temporary folder).
    base: Option<std::path::PathBuf>,
}

/// The places to measure: the temporary folder, and `/dev/shm` where it is a folder.
pub fn places() -> Vec<Place> {
    let mut places = vec![Place {
        label: "disk",
        base: None,
    }];
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        places.push(Place {
            label: "tmpfs",
            base: Some(shm.to_path_buf()),
        });
    }
    places
}

/// The rows and notes of the scenario.
#[derive(Default)]
pub struct Outcome {
    /// Table rows.
    pub rows: Vec<Row>,
    /// Notes below the table.
    pub notes: Vec<String>,
}

/// Runs the scenario with `repeats` rounds of curl, download, download with sha256 against
/// its own hive from `bin_dir`. Without curl it measures nothing and says so in a note.
pub async fn run(bin_dir: &Path, repeats: usize, place: &Place) -> anyhow::Result<Outcome> {
    if !curl_installed() {
        eprintln!("   curl not found: the download scenario is skipped");
        return Ok(Outcome {
            notes: vec!["curl not found: the download scenario was skipped".to_owned()],
            ..Outcome::default()
        });
    }
    let repeats = repeats.max(1);
    let server = FileServer::start().await;
    let digest = server.add(FILE, pseudo_random(SIZE));
    let url = server.url(&format!("/files/{FILE}"));

    let dir = match &place.base {
        Some(base) => tempfile::tempdir_in(base)?,
        None => tempfile::tempdir()?,
    };
    let catalog = dir.path().join("catalog");
    let curl_file = dir.path().join("curl.out");
    let hive = BenchHive::start(
        bin_dir,
        &format!("catalog_dir = {:?}\n", catalog.display().to_string()),
    )?;
    let mut connection = Connection::open(hive.addr).await?;

    // Once untimed, checked on disk: a fast wrong answer must fail the scenario, not pass it.
    // It also warms the server, the hive's client and the page cache for the first timed round.
    curl(&url, &curl_file, false).await?;
    download(&mut connection, &url, "bench-check", Some(&digest)).await?;
    let on_disk = catalog.join("models/bench-check").join(FILE);
    let size = std::fs::metadata(&on_disk)
        .with_context(|| format!("the downloaded model at {}", on_disk.display()))?
        .len();
    if size != SIZE as u64 {
        bail!(
            "model_download wrote {size} bytes to {}, expected {SIZE}",
            on_disk.display()
        );
    }
    delete(&mut connection, "bench-check").await?;
    if on_disk.exists() {
        bail!("model_delete left {} on disk", on_disk.display());
    }

    let mut by_curl = Vec::with_capacity(repeats);
    let mut by_curl_synced = Vec::with_capacity(repeats);
    let mut plain = Vec::with_capacity(repeats);
    let mut checked = Vec::with_capacity(repeats);
    for round in 1..=repeats {
        by_curl.push(curl(&url, &curl_file, false).await?);
        by_curl_synced.push(curl(&url, &curl_file, true).await?);
        let id = format!("bench-{round}");
        plain.push(download(&mut connection, &url, &id, None).await?);
        delete(&mut connection, &id).await?;
        let id = format!("bench-sha-{round}");
        checked.push(download(&mut connection, &url, &id, Some(&digest)).await?);
        delete(&mut connection, &id).await?;
    }
    drop(connection);
    hive.stop()?;

    let mut outcome = Outcome::default();
    let curl_median = median(&by_curl);
    let synced_median = median(&by_curl_synced);
    let plain_median = median(&plain);
    let checked_median = median(&checked);
    let label = place.label;
    outcome.rows.push(millis(
        &format!("{label}: curl -o of a 256 MiB file from a local server"),
        &by_curl,
    ));
    outcome.rows.push(millis(
        &format!("{label}: curl -o of the same file, then fsync of it"),
        &by_curl_synced,
    ));
    // Same bytes, so the throughput ratio is the inverse ratio of the times.
    let ratio = curl_median.as_secs_f64() / plain_median.as_secs_f64();
    let synced_ratio = synced_median.as_secs_f64() / plain_median.as_secs_f64();
    let (judged, against) = match place.base {
        // On tmpfs both are the transfer path alone.
        Some(_) => (ratio, "curl -o"),
        // On a disk the hive waits for the disk (fsync) and plain curl does not.
        None => (synced_ratio, "curl -o + fsync"),
    };
    outcome.rows.push(
        millis(
            &format!("{label}: model_download of the same file (POST → [DONE])"),
            &plain,
        )
        .target(
            &format!(
                "≥ {AT_LEAST} × {against}'s throughput (is {ratio:.2} × curl -o, {synced_ratio:.2} × curl -o + fsync)"
            ),
            judged >= AT_LEAST,
        ),
    );
    let cost = (checked_median.as_secs_f64() - plain_median.as_secs_f64()) * 1000.0;
    outcome.rows.push(
        millis(
            &format!("{label}: model_download with sha256 check"),
            &checked,
        )
        .comment(&format!("sha256 costs {cost:+.1} ms over no check")),
    );
    let rate = |d: Duration| SIZE as f64 / (1024.0 * 1024.0) / d.as_secs_f64();
    outcome.notes.push(format!(
        "download on {label} ({}): 256 MiB of pseudo-random bytes, {repeats} alternating rounds; \
         median throughput: curl -o {:.0} MiB/s, curl -o + fsync {:.0} MiB/s, model_download \
         {:.0} MiB/s, with sha256 check {:.0} MiB/s",
        dir.path().display(),
        rate(curl_median),
        rate(synced_median),
        rate(plain_median),
        rate(checked_median)
    ));
    Ok(outcome)
}

/// Whether `curl` runs at all.
fn curl_installed() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `curl -s -o <file> <url>`, timed from spawn to exit (and, if `fsync`, to the end of an
/// fsync of the file); checks the size, then removes the file (untimed).
async fn curl(url: &str, file: &Path, fsync: bool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    // tokio's process, so that waiting for curl does not hold a runtime thread the file
    // server needs.
    let status = tokio::process::Command::new("curl")
        .arg("-s")
        .arg("-o")
        .arg(file)
        .arg(url)
        .stdin(Stdio::null())
        .status()
        .await
        .context("run curl")?;
    if fsync {
        let path = file.to_path_buf();
        tokio::task::spawn_blocking(move || std::fs::File::open(path)?.sync_all()).await??;
    }
    let elapsed = started.elapsed();
    if !status.success() {
        bail!("curl {url} exited with {status}");
    }
    let size = std::fs::metadata(file)
        .with_context(|| format!("curl's file {}", file.display()))?
        .len();
    std::fs::remove_file(file)?;
    if size != SIZE as u64 {
        bail!("curl wrote {size} bytes, expected {SIZE}");
    }
    Ok(elapsed)
}

/// A `model_download` of `url` as `id`, timed from the POST to the end of its stream.
async fn download(
    connection: &mut Connection,
    url: &str,
    id: &str,
    sha256: Option<&str>,
) -> anyhow::Result<Duration> {
    let mut body = serde_json::json!({
        "operation": "model_download",
        "hive_id": "localhost",
        "model": url,
        "id": id,
    });
    if let Some(digest) = sha256 {
        body["sha256"] = digest.into();
    }
    let body = body.to_string();
    let started = Instant::now();
    let text = connection.run(&body).await?;
    let elapsed = started.elapsed();
    if !text.contains("model_download_complete") {
        bail!("model_download of {id} ended without model_download_complete:\n{text}");
    }
    if sha256.is_some() && !text.contains("sha256 verified") {
        bail!("model_download of {id} did not say it verified the sha256:\n{text}");
    }
    Ok(elapsed)
}

async fn delete(connection: &mut Connection, id: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({"operation": "model_delete", "hive_id": "localhost", "id": id});
    connection.run(&body.to_string()).await.map(drop)
}

/// `len` bytes from xorshift64: cheap to make (about 1 GB/s), and not compressible or
/// sparse, so that no layer can shortcut them as it could zeros.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut bytes = vec![0u8; len];
    for chunk in bytes.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_random_bytes_are_neither_zeros_nor_a_short_cycle() {
        let bytes = pseudo_random(1 << 16);
        assert_eq!(bytes.len(), 1 << 16);
        assert!(bytes.iter().filter(|&&b| b == 0).count() < 1024);
        assert_ne!(bytes[..4096], bytes[4096..8192]);
        assert_eq!(pseudo_random(13).len(), 13);
    }
}
