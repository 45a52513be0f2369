//! `model_download`: downloads a model into the catalog (a bare `owner/repo` first has its
//! GGUF file picked from the hub's list), narrating progress (at most once a
//! second while bytes arrive, at least every 5 s when they do not). Cancelling the job stops
//! the transfer unless another job follows it too; the `.part` file stays for a resume.

use std::time::Duration;

use catalog::{DownloadError, DownloadHandle, DownloadProgress, DownloadRequest};
use job_server::JobContext;
use tokio::time::{Instant, MissedTickBehavior};

use crate::jobs::NARRATE;
use crate::jobs::router::{OperationFailure, OperationServices};
use hive_cli::bytes;

/// How often progress is looked at (and narrated, when bytes arrived).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// The longest silence between two progress lines.
const PROGRESS_AT_LEAST: Duration = Duration::from_secs(5);

/// Downloads `request.model` into the model catalog.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
    mut request: DownloadRequest,
) -> Result<(), OperationFailure> {
    NARRATE
        .action("model_download_start")
        .context(&request.model)
        .context(hive_id)
        .human("📥 Downloading model '{}' on hive '{}'")
        .emit_to(job);
    let downloads = &services.downloads;
    if catalog::is_bare_repo(&request.model) {
        // Today's rbee sends `owner/repo` alone: its file is picked from the hub's list.
        NARRATE
            .action("model_download_listing")
            .context(&request.model)
            .context(catalog::QUANTS.join(", "))
            .human("🔎 Listing the files of '{}' to pick a GGUF file ({})")
            .emit_to(job);
        let picked = match downloads.pick_file(&request.model).await {
            Ok(picked) => picked,
            Err(error) => return Err(fail(job, error)),
        };
        NARRATE
            .action("model_download_pick")
            .context(&picked.file)
            .context(picked.quant)
            .field("file", &picked.file)
            .human("Picked '{}' ({})")
            .emit_to(job);
        request.id.get_or_insert_with(|| picked.default_id());
        request.model = picked.reference();
    }
    let started = downloads
        .resolve(&request)
        .and_then(|source| downloads.start(source, request.sha256.as_deref()));
    let handle = match started {
        Ok(handle) => handle,
        Err(error) => return Err(fail(job, error)),
    };
    let source = handle.source();
    if handle.joined {
        NARRATE
            .action("model_download_joined")
            .context(&source.id)
            .human("⏳ Model '{}' is already being downloaded; following that transfer")
            .emit_to(job);
    } else {
        NARRATE
            .action("model_download_source")
            .context(&source.id)
            .context(&source.url)
            .context(downloads.catalog().folder(&source.id).display())
            .human("Model '{}': {} → {}")
            .emit_to(job);
    }
    match follow(job, &handle).await {
        Ok(done) => {
            let model = &done.entry.artifact;
            let secs = done.elapsed.as_secs_f64();
            let checked = match done.verified_against {
                Some(source) => format!(", sha256 verified against {source}"),
                None => String::new(),
            };
            NARRATE
                .action("model_download_complete")
                .context(&model.id)
                .context(bytes(model.size))
                .context(format!("{secs:.1}"))
                .context(rate(done.transferred, done.elapsed))
                .context(checked)
                .field("size", model.size)
                .human("✅ Model '{}' downloaded: {} in {} s ({}){}")
                .emit_to(job);
            NARRATE
                .action("model_download_path")
                .context(model.path.display())
                .human("Path: {}")
                .emit_to(job);
            job.publish_result(&done.entry);
            Ok(())
        }
        Err(error) => Err(fail(job, error)),
    }
}

/// Narrates progress until the transfer ends.
async fn follow(
    job: &JobContext,
    handle: &DownloadHandle,
) -> Result<catalog::Downloaded, DownloadError> {
    let finished = handle.finished();
    tokio::pin!(finished);
    let mut ticks = tokio::time::interval_at(Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut last_received = None;
    let mut last_line = Instant::now();
    let mut announced_resume = false;
    let announce_resume = |announced: &mut bool, progress: &DownloadProgress| {
        if progress.resumed_from > 0 && !*announced {
            *announced = true;
            NARRATE
                .action("model_download_resume")
                .context(bytes(progress.resumed_from))
                .human("↪️  Resumed after {} already on disk")
                .emit_to(job);
        }
    };
    loop {
        tokio::select! {
            outcome = &mut finished => {
                announce_resume(&mut announced_resume, &handle.progress());
                return outcome;
            }
            _ = ticks.tick() => {
                let progress = handle.progress();
                announce_resume(&mut announced_resume, &progress);
                let moved = last_received != Some(progress.received);
                if moved || last_line.elapsed() >= PROGRESS_AT_LEAST {
                    narrate_progress(job, &handle.source().id, &progress, moved);
                    last_received = Some(progress.received);
                    last_line = Instant::now();
                }
            }
        }
    }
}

fn narrate_progress(
    job: &JobContext,
    id: &catalog::CatalogId,
    progress: &DownloadProgress,
    moved: bool,
) {
    // The two counters are read one after the other while the transfer moves them.
    let this_run = progress.received.saturating_sub(progress.resumed_from);
    let speed = this_run as f64 / progress.elapsed.as_secs_f64().max(0.001);
    let (of_total, eta) = match progress.total {
        Some(total) if total > 0 => {
            let percent = progress.received as f64 * 100.0 / total as f64;
            let eta = eta(total.saturating_sub(progress.received), speed, moved);
            (format!(" of {} ({percent:.1}%)", bytes(total)), eta)
        }
        _ => (" (size unknown)".to_owned(), String::new()),
    };
    let stalled = if moved {
        ""
    } else {
        ", no data since the last line"
    };
    NARRATE
        .action("model_download_progress")
        .context(id)
        .context(bytes(progress.received))
        .context(of_total)
        .context(rate(this_run, progress.elapsed))
        .context(eta)
        .context(stalled)
        .field("received", progress.received)
        .human("⏬ {}: {}{} at {}{}{}")
        .emit_to(job);
}

/// Narrates a failed download (upstream's "already exists" line for an existing model).
fn fail(job: &JobContext, error: DownloadError) -> OperationFailure {
    if let DownloadError::AlreadyExists { id, .. } = &error {
        NARRATE
            .action("model_download_exists")
            .context(id)
            .human("⚠️  Model '{}' already exists in catalog")
            .error()
            .emit_to(job);
    } else {
        NARRATE
            .action("model_download_error")
            .context(&error)
            .human("❌ Download failed: {}")
            .error()
            .emit_to(job);
    }
    error.into()
}

/// `, ETA 3 min 12 s` at `speed` bytes a second; unknown while no byte arrives (the average
/// speed then says nothing of when it ends: a stalled transfer read `6980 h 48 min`).
fn eta(remaining: u64, speed: f64, moved: bool) -> String {
    match speed > 0.0 && moved {
        true => format!(", ETA {}", duration(remaining as f64 / speed)),
        false => ", ETA unknown".to_owned(),
    }
}

fn rate(count: u64, elapsed: Duration) -> String {
    let per_second = count as f64 / elapsed.as_secs_f64().max(0.001);
    format!("{}/s", bytes(per_second as u64))
}

fn duration(secs: f64) -> String {
    let secs = secs.round() as u64;
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_is_unknown_while_no_byte_arrives() {
        assert_eq!(eta(1_000_000, 10_000.0, true), ", ETA 1 min 40 s");
        assert_eq!(eta(25_000_000_000, 1_000.0, false), ", ETA unknown");
        assert_eq!(eta(1_000, 0.0, true), ", ETA unknown");
    }

    #[test]
    fn human_durations() {
        assert_eq!(duration(59.4), "59 s");
        assert_eq!(duration(61.0), "1 min 1 s");
        assert_eq!(duration(7300.0), "2 h 1 min");
    }
}
