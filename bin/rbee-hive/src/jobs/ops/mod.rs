//! One module per operation; the module, the [`Operation`](crate::jobs::Operation) variant
//! and the operation name share one name.

pub mod model_delete;
pub mod model_download;
pub mod model_get;
pub mod model_list;
pub mod worker_binary_delete;
pub mod worker_binary_get;
pub mod worker_binary_list;
pub mod worker_delete;
pub mod worker_get;
pub mod worker_list;
pub mod worker_process_delete;
pub mod worker_process_get;
pub mod worker_process_list;
pub mod worker_spawn;
