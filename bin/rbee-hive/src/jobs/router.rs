//! The job router: one exhaustive match from [`Operation`] to its handler. There is no
//! wildcard arm, so a new operation does not compile until it is routed here.

use catalog::{
    CatalogError, DownloadError, Downloader, InstallError, ModelCatalog, WorkerCatalog,
    WorkerInstaller,
};
use job_server::JobContext;
use worker_lifecycle::{LifecycleError, WorkerManager};

use crate::jobs::Operation;
use crate::jobs::ops;

/// What operations need from the hive.
#[derive(Clone)]
pub struct OperationServices {
    /// The hive's workers.
    pub workers: WorkerManager,
    /// The model catalog.
    pub models: ModelCatalog,
    /// The worker-binary catalog.
    pub worker_binaries: WorkerCatalog,
    /// Model downloads into the model catalog.
    pub downloads: Downloader,
    /// The worker catalog server and installs from it into the worker-binary catalog.
    pub worker_installer: WorkerInstaller,
    /// GPU memory per process (a delete waits for a GPU worker's memory to come back).
    pub gpu: Option<std::sync::Arc<dyn worker_lifecycle::GpuUsage>>,
    /// The configuration in effect (`model_load`'s worker type, `hive_check`'s dirs).
    pub config: crate::config::LiveConfig,
    /// The machine's devices (`hive_check`).
    pub devices: std::sync::Arc<devices::Devices>,
    /// The registrations with queens (`hive_check`).
    pub queen: crate::queen::QueenLink,
}

/// Why an operation failed; its text is the job's failure reason.
#[derive(Debug, thiserror::Error)]
pub enum OperationFailure {
    /// The worker lifecycle refused or failed.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// A catalog refused or failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A download failed.
    #[error(transparent)]
    Download(#[from] DownloadError),
    /// The worker catalog server or a worker install failed.
    #[error(transparent)]
    Install(#[from] InstallError),
    /// A model that running workers use.
    #[error(
        "model '{id}' is in use by {}; stop them first, or delete with \"force\": true (rbee-hive model delete --force)",
        workers.join(", ")
    )]
    ModelInUse {
        /// The model's id.
        id: String,
        /// The workers using it.
        workers: Vec<String>,
    },
    /// `model_load`'s worker type runs on another kind of device than the one asked for.
    #[error("worker type '{worker}' runs on {kind} devices, not on {device}; {hint}")]
    DeviceMismatch {
        /// The worker type.
        worker: String,
        /// Its device kind.
        kind: &'static str,
        /// The device asked for.
        device: String,
        /// What to do instead.
        hint: String,
    },
    /// `hive_check` found what the hive needs missing.
    #[error("hive check failed: {}", failed.join("; "))]
    CheckFailed {
        /// One entry per failed check.
        failed: Vec<String>,
    },
    /// A spawn's model is neither a catalog id nor a path.
    #[error("model '{model}' is not in the catalog ({dir}) and is not a file path; {known}")]
    UnknownModel {
        /// The model as given.
        model: String,
        /// The model catalog folder.
        dir: std::path::PathBuf,
        /// The catalog's ids, as a phrase.
        known: String,
    },
}

/// Runs `operation` as the job `job`.
pub async fn dispatch(
    operation: Operation,
    job: JobContext,
    services: OperationServices,
) -> Result<(), OperationFailure> {
    match operation {
        Operation::WorkerSpawn {
            hive_id,
            model,
            worker,
            device,
        } => ops::worker_spawn::run(&job, &services, &hive_id, &model, &worker, device).await,
        Operation::WorkerList { hive_id } => ops::worker_list::run(&job, &services, &hive_id).await,
        Operation::WorkerGet { hive_id, id } => {
            ops::worker_get::run(&job, &services, &hive_id, &id).await
        }
        Operation::WorkerDelete {
            hive_id,
            id,
            grace_ms,
        } => ops::worker_delete::run(&job, &services, &hive_id, &id, grace_ms).await,
        Operation::WorkerProcessList { hive_id } => {
            ops::worker_process_list::run(&job, &services, &hive_id).await
        }
        Operation::WorkerProcessGet { hive_id, pid } => {
            ops::worker_process_get::run(&job, &services, &hive_id, pid).await
        }
        Operation::WorkerProcessDelete { hive_id, pid } => {
            ops::worker_process_delete::run(&job, &services, &hive_id, pid).await
        }
        Operation::WorkerBinaryList { hive_id } => {
            ops::worker_binary_list::run(&job, &services, &hive_id).await
        }
        Operation::WorkerBinaryGet {
            hive_id,
            worker_type,
        } => ops::worker_binary_get::run(&job, &services, &hive_id, &worker_type).await,
        Operation::WorkerBinaryDelete {
            hive_id,
            worker_type,
        } => ops::worker_binary_delete::run(&job, &services, &hive_id, &worker_type).await,
        Operation::ModelList { hive_id } => ops::model_list::run(&job, &services, &hive_id).await,
        Operation::ModelGet { hive_id, id } => {
            ops::model_get::run(&job, &services, &hive_id, &id).await
        }
        Operation::ModelDelete { hive_id, id, force } => {
            ops::model_delete::run(&job, &services, &hive_id, &id, force).await
        }
        Operation::ModelDownload {
            hive_id,
            model,
            id,
            sha256,
        } => {
            let request = catalog::DownloadRequest { model, id, sha256 };
            ops::model_download::run(&job, &services, &hive_id, request).await
        }
        // The operations below are rare and their futures large (a download's buffers, a
        // spawn awaited inside a load): boxed, so that every job's future, the common
        // `worker_list` included, stays the size it was.
        Operation::WorkerCatalogList { hive_id } => {
            Box::pin(ops::worker_catalog_list::run(&job, &services, &hive_id)).await
        }
        Operation::WorkerCatalogGet { hive_id, worker_id } => {
            Box::pin(ops::worker_catalog_get::run(
                &job, &services, &hive_id, &worker_id,
            ))
            .await
        }
        Operation::WorkerInstall { hive_id, worker_id } => {
            Box::pin(ops::worker_install::run(
                &job, &services, &hive_id, &worker_id,
            ))
            .await
        }
        // Today's rbee names (PROTOCOL §9): the same handlers as the names they stand for.
        Operation::WorkerListInstalled { hive_id } => {
            ops::worker_binary_list::run(&job, &services, &hive_id).await
        }
        Operation::WorkerInstalledGet { hive_id, worker_id } => {
            ops::worker_binary_get::run(&job, &services, &hive_id, &worker_id).await
        }
        Operation::WorkerRemove { hive_id, worker_id } => {
            ops::worker_binary_delete::run(&job, &services, &hive_id, &worker_id).await
        }
        Operation::ModelLoad {
            hive_id,
            id,
            device,
        } => Box::pin(ops::model_load::run(&job, &services, &hive_id, &id, device)).await,
        Operation::ModelUnload { hive_id, id } => {
            Box::pin(ops::model_unload::run(&job, &services, &hive_id, &id)).await
        }
        Operation::HiveCheck { alias } => {
            Box::pin(ops::hive_check::run(&job, &services, &alias)).await
        }
    }
}
