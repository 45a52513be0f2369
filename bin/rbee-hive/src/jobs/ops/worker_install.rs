//! `worker_install`: installs a prebuilt, checksum-verified worker that the worker catalog
//! server offers for this platform into the worker-binary catalog, narrating each step
//! (the work is `catalog::WorkerInstaller`'s). An id already installed and usable is left
//! alone; an entry that only builds from source fails with what to do instead.

use catalog::{CatalogId, InstallStep};
use hive_cli::bytes;
use job_server::JobContext;

use crate::jobs::NARRATE;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Installs the catalog server's worker `worker_id`.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
    worker_id: &str,
) -> Result<(), OperationFailure> {
    let installer = &services.worker_installer;
    NARRATE
        .action("worker_install_start")
        .context(worker_id)
        .context(hive_id)
        .context(installer.server().map_or_else(
            |_| "(no worker catalog server configured)".to_owned(),
            |s| s.base().to_string(),
        ))
        .human("📦 Installing worker '{}' on hive '{}' from {}")
        .emit_to(job);
    let outcome = match CatalogId::parse(worker_id) {
        Ok(id) => installer
            .install(&id, |step| narrate_step(job, worker_id, step))
            .await
            .map_err(OperationFailure::from),
        Err(error) => Err(error.into()),
    };
    let installed = match outcome {
        Ok(installed) => installed,
        Err(error) => {
            NARRATE
                .action("worker_install_error")
                .context(worker_id)
                .context(&error)
                .human("❌ Failed to install worker '{}': {}")
                .error()
                .emit_to(job);
            return Err(error);
        }
    };
    let binary = &installed.entry.artifact;
    if installed.fresh {
        NARRATE
            .action("worker_install_complete")
            .context(&binary.id)
            .context(binary.path.display())
            .context(bytes(binary.size))
            .field("path", &binary.path)
            .human("✅ Worker '{}' installed: {} ({})")
            .emit_to(job);
    } else {
        NARRATE
            .action("worker_install_exists")
            .context(&binary.id)
            .context(binary.path.display())
            .field("path", &binary.path)
            .human("⚠️  Worker '{}' is already installed ({}); nothing was downloaded")
            .emit_to(job);
    }
    job.publish_result(&installed.entry);
    Ok(())
}

fn narrate_step(job: &JobContext, worker_id: &str, step: InstallStep) {
    match step {
        InstallStep::Entry { name, version } => NARRATE
            .action("worker_install_entry")
            .context(name)
            .context(version)
            .human("Catalog entry: {} v{}")
            .emit_to(job),
        InstallStep::Chosen {
            pkgbuild,
            url,
            sha256,
        } => NARRATE
            .action("worker_install_source")
            .context(catalog::PLATFORM)
            .context(catalog::ARCH)
            .context(&url)
            .context(&sha256)
            .context(pkgbuild)
            .field("url", &url)
            .field("sha256", &sha256)
            .human("Prebuilt for {}/{}: {} (sha256 {}), as its PKGBUILD {} names it")
            .emit_to(job),
        InstallStep::Waiting => NARRATE
            .action("worker_install_wait")
            .context(worker_id)
            .human("⏳ Another install of '{}' is running; waiting for it")
            .emit_to(job),
        InstallStep::ReplacingBroken { reason } => NARRATE
            .action("worker_install_replace")
            .context(worker_id)
            .context(reason)
            .human("⚠️  Installed worker '{}' cannot be used ({}); installing it again")
            .warn()
            .emit_to(job),
        InstallStep::Progress { received, total } => {
            let of = match total {
                Some(total) if total > 0 => format!(
                    " of {} ({:.0}%)",
                    bytes(total),
                    received as f64 * 100.0 / total as f64
                ),
                _ => String::new(),
            };
            NARRATE
                .action("worker_install_progress")
                .context(bytes(received))
                .context(of)
                .field("received", received)
                .field("total", total)
                .human("Downloaded {}{}")
                .emit_to(job)
        }
        InstallStep::Verified { bytes: size } => NARRATE
            .action("worker_install_verified")
            .context(bytes(size))
            .human("✅ sha256 verified ({})")
            .emit_to(job),
        InstallStep::Unpacked {
            entries,
            executable,
        } => NARRATE
            .action("worker_install_unpacked")
            .context(entries)
            .context(executable.display())
            .human("Unpacked {} archive entry(ies); the worker is {}")
            .emit_to(job),
    }
}
