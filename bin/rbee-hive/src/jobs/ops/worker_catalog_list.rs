//! `worker_catalog_list`: the workers that the worker catalog server (`worker_catalog_url`)
//! offers, one line each, and the entries as the result object.

use job_server::JobContext;
use serde_json::json;

use crate::jobs::NARRATE;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Lists the worker catalog server's workers.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
) -> Result<(), OperationFailure> {
    let installer = &services.worker_installer;
    let server = installer.server();
    NARRATE
        .action("worker_cat_list_start")
        .context(hive_id)
        .context(
            server
                .as_ref()
                .map_or_else(|_| "(none configured)".to_owned(), |s| s.base().to_string()),
        )
        .human("📋 Listing the worker catalog for hive '{}' at {}")
        .emit_to(job);
    let listed = match server {
        Ok(server) => server.list().await,
        Err(error) => Err(error),
    };
    let workers = match listed {
        Ok(workers) => workers,
        Err(error) => {
            NARRATE
                .action("worker_cat_list_error")
                .context(&error)
                .human("❌ Cannot list the worker catalog: {}")
                .error()
                .emit_to(job);
            return Err(error.into());
        }
    };
    NARRATE
        .action("worker_cat_list_result")
        .context(workers.len())
        .human("Found {} worker(s) in the catalog")
        .emit_to(job);
    if workers.is_empty() {
        NARRATE
            .action("worker_cat_list_empty")
            .human("The worker catalog offers no workers")
            .emit_to(job);
    }
    for worker in &workers {
        NARRATE
            .action("worker_cat_list_entry")
            .context(&worker.id)
            .context(&worker.name)
            .context(&worker.version)
            .context(&worker.worker_type)
            .context(worker.platforms_phrase())
            .human("  {} | {} | v{} | {} | {}")
            .emit_to(job);
    }
    job.publish_result(&json!({ "workers": workers }));
    Ok(())
}
