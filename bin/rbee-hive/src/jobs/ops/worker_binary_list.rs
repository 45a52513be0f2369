//! `worker_binary_list`: the worker binaries of the catalog (upstream's texts), and the
//! entries as the result object.

use job_server::JobContext;
use serde_json::json;

use crate::jobs::NARRATE;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Lists the catalog's worker binaries.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
) -> Result<(), OperationFailure> {
    NARRATE
        .action("worker_bin_list_start")
        .context(hive_id)
        .human("📋 Listing worker binaries on hive '{}'")
        .emit_to(job);
    let binaries = services.worker_binaries.list()?;
    NARRATE
        .action("worker_bin_list_result")
        .context(binaries.len())
        .human("Found {} worker binary(ies)")
        .emit_to(job);
    if binaries.is_empty() {
        NARRATE
            .action("worker_bin_list_empty")
            .human("No worker binaries found")
            .emit_to(job);
    }
    for entry in &binaries {
        let binary = &entry.artifact;
        NARRATE
            .action("worker_bin_list_entry")
            .context(&binary.id)
            .context(binary.name())
            .context(format!("{:.2} MB", binary.size as f64 / 1e6))
            .human("  {} | {} | {}")
            .emit_to(job);
    }
    job.publish_result(&json!({ "worker_binaries": binaries }));
    Ok(())
}
