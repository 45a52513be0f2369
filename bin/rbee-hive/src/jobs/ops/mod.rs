//! One module per operation; the module, the [`Operation`](crate::jobs::Operation) variant
//! and the operation name share one name. Today's rbee names for catalog operations
//! (`worker_list_installed`, `worker_installed_get`, `worker_remove`) have no module: the
//! router sends them to the handlers of the names they stand for.

pub mod hive_check;
pub mod model_delete;
pub mod model_download;
pub mod model_get;
pub mod model_list;
pub mod model_load;
pub mod model_unload;
pub mod worker_binary_delete;
pub mod worker_binary_get;
pub mod worker_binary_list;
pub mod worker_catalog_get;
pub mod worker_catalog_list;
pub mod worker_delete;
pub mod worker_get;
pub mod worker_install;
pub mod worker_list;
pub mod worker_process_delete;
pub mod worker_process_get;
pub mod worker_process_list;
pub mod worker_spawn;

use worker_lifecycle::{WorkerRecord, WorkerStats};

/// A worker's record with its last resource sample (`stats`: the whole process group's
/// memory, CPU over the last interval, threads, uptime) when there is one. Serialised
/// directly, its fields keep the record's (the protocol's) order, `stats` last.
#[derive(serde::Serialize)]
pub(crate) struct WorkerView<'a> {
    #[serde(flatten)]
    record: &'a WorkerRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<WorkerStats>,
}

impl<'a> WorkerView<'a> {
    /// `record` with `stats`.
    pub(crate) fn new(record: &'a WorkerRecord, stats: Option<WorkerStats>) -> Self {
        Self { record, stats }
    }
}

/// A worker's record as a JSON value with `stats` added (a map insert: `flatten` would
/// buffer every record once more; the order of a value's keys is not kept anyway).
pub(crate) fn worker_json(record: &WorkerRecord, stats: Option<WorkerStats>) -> serde_json::Value {
    let mut value = serde_json::to_value(record).unwrap_or_default();
    if let (Some(object), Some(stats)) = (value.as_object_mut(), stats) {
        object.insert(
            "stats".to_owned(),
            serde_json::to_value(stats).unwrap_or_default(),
        );
    }
    value
}
