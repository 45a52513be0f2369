//! `model_list`: the models of the catalog, one line each (upstream's texts), and the
//! entries as the result object.

use job_server::JobContext;
use serde_json::json;

use crate::jobs::NARRATE;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Lists the catalog's models.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
) -> Result<(), OperationFailure> {
    NARRATE
        .action("model_list_start")
        .context(hive_id)
        .human("📋 Listing models on hive '{}'")
        .emit_to(job);
    let models = services.models.list()?;
    NARRATE
        .action("model_list_result")
        .context(models.len())
        .human("Found {} model(s)")
        .emit_to(job);
    if models.is_empty() {
        NARRATE
            .action("model_list_empty")
            .human("No models found")
            .emit_to(job);
    }
    for entry in &models {
        let model = &entry.artifact;
        NARRATE
            .action("model_list_entry")
            .context(&model.id)
            .context(&model.name)
            .context(format!("{:.2} GB", model.size as f64 / 1e9))
            .context(model.status.word())
            .human("  {} | {} | {} | {}")
            .emit_to(job);
    }
    job.publish_result(&json!({ "models": models }));
    Ok(())
}
