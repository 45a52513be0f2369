//! Errors of the worker lifecycle.

/// What can go wrong with a worker operation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LifecycleError {
    /// No worker has this id.
    #[error("worker '{0}' not found")]
    NotFound(String),
    /// Spawning is not available in this build.
    #[error(
        "no worker can be started yet: this hive does not run worker processes (worker type '{0}')"
    )]
    SpawnUnavailable(String),
}
