//! One module per operation; the module, the [`Operation`](crate::jobs::Operation) variant
//! and the operation name share one name.

pub mod worker_delete;
pub mod worker_get;
pub mod worker_list;
pub mod worker_process_delete;
pub mod worker_process_get;
pub mod worker_process_list;
pub mod worker_spawn;
