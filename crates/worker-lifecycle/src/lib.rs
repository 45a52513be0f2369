//! Worker lifecycle: the workers of a hive, their records, and the processes behind them.
//!
//! This crate owns workers and knows nothing of HTTP or jobs.
//!
//! # Layout
//! - [`record`]: [`WorkerRecord`] (PROTOCOL §5) and [`WorkerStatus`].
//! - [`registry`]: [`Registry`], the cheap-`Clone` handle to the hive's workers.
//! - [`error`]: [`LifecycleError`], what can go wrong.

pub mod error;
pub mod record;
pub mod registry;

pub use error::LifecycleError;
pub use record::{WorkerRecord, WorkerStatus};
pub use registry::Registry;
