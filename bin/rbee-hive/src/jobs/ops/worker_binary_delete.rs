//! `worker_binary_delete`: removes a worker-binary catalog entry's folder. Workers already
//! running from it keep running (their executable stays open); new spawns of its type use
//! another entry or the configured command.

use catalog::CatalogId;
use job_server::JobContext;

use crate::jobs::NARRATE;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Deletes worker-binary entry `worker_type`.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
    worker_type: &str,
) -> Result<(), OperationFailure> {
    NARRATE
        .action("worker_bin_del_start")
        .context(worker_type)
        .context(hive_id)
        .human("🗑️  Deleting worker binary '{}' on hive '{}'")
        .emit_to(job);
    match CatalogId::parse(worker_type).and_then(|id| services.worker_binaries.remove(&id)) {
        Ok(()) => {
            NARRATE
                .action("worker_bin_del_ok")
                .context(worker_type)
                .human("✅ Worker binary '{}' deleted successfully")
                .emit_to(job);
            Ok(())
        }
        Err(error) => {
            NARRATE
                .action("worker_bin_del_err")
                .context(worker_type)
                .context(&error)
                .human("❌ Failed to delete worker binary '{}': {}")
                .error()
                .emit_to(job);
            Err(error.into())
        }
    }
}
