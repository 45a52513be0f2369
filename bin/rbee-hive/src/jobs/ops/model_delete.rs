//! `model_delete`: removes a model's catalog folder. Refused while a worker that is not
//! gone uses the model (by its id, or by a path inside its folder) unless `force` is set.

use std::path::Path;

use catalog::CatalogId;
use job_server::JobContext;

use crate::jobs::NARRATE;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Deletes model `id`.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
    id: &str,
    force: bool,
) -> Result<(), OperationFailure> {
    NARRATE
        .action("model_delete_start")
        .context(id)
        .context(hive_id)
        .human("🗑️  Deleting model '{}' on hive '{}'")
        .emit_to(job);
    match delete(job, services, id, force).await {
        Ok(()) => {
            NARRATE
                .action("model_delete_complete")
                .context(id)
                .human("✅ Model '{}' deleted successfully")
                .emit_to(job);
            Ok(())
        }
        Err(error) => {
            NARRATE
                .action("model_delete_error")
                .context(id)
                .context(&error)
                .human("❌ Failed to delete model '{}': {}")
                .error()
                .emit_to(job);
            Err(error)
        }
    }
}

async fn delete(
    job: &JobContext,
    services: &OperationServices,
    id: &str,
    force: bool,
) -> Result<(), OperationFailure> {
    let id = CatalogId::parse(id)?;
    // Found first, so that an unknown id says so rather than "not in use".
    services.models.get(&id)?;
    let users = workers_using(services, &id);
    if !users.is_empty() {
        if !force {
            return Err(OperationFailure::ModelInUse {
                id: id.to_string(),
                workers: users,
            });
        }
        NARRATE
            .action("model_delete_forced")
            .context(&id)
            .context(users.join(", "))
            .human("⚠️  Deleting model '{}' although {} use it (force)")
            .emit_to(job);
    }
    // A model folder can hold gigabytes: removed on the blocking pool.
    let models = services.models.clone();
    let entry = tokio::task::spawn_blocking(move || models.remove(&id))
        .await
        .map_err(|e| catalog::CatalogError::Io {
            action: "remove",
            path: services.models.dir().to_path_buf(),
            reason: e.to_string(),
        })??;
    job.publish_result(&entry);
    Ok(())
}

/// The workers not yet gone whose model is `id` or a file in its folder.
pub(crate) fn workers_using(services: &OperationServices, id: &CatalogId) -> Vec<String> {
    let folder = services.models.folder(id).canonicalize().ok();
    services
        .workers
        .list()
        .into_iter()
        .filter(|worker| worker.is_active())
        .filter(|worker| {
            worker.model_id == id.as_str()
                || folder.as_ref().is_some_and(|folder| {
                    Path::new(&worker.model_id)
                        .canonicalize()
                        .is_ok_and(|path| path.starts_with(folder))
                })
        })
        .map(|worker| worker.id)
        .collect()
}
