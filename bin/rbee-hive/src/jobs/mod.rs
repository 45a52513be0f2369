//! Jobs of the hive: the operation enum, its router, and one file per operation.
//!
//! # Layout
//! - the operations themselves and their parser are the `hive-api` crate's
//!   ([`Operation`]; validation happens at POST time).
//! - [`router`]: [`router::dispatch`], the one exhaustive match from operation to handler.
//! - [`ops`]: one module per operation, named after it; each narrates its steps.

pub mod ops;
pub mod router;

pub use hive_api::{Operation, OperationError, OperationKind, supported_operations};

/// The narration actor of the job router (`hv-router`).
pub const NARRATE: narration::NarrationFactory = narration::NarrationFactory::new("hv-router");
