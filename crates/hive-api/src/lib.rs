//! The wire contract of rbee-hive's job API (PROTOCOL §3): the operations a client can
//! submit to `POST /v1/jobs`, their names, limits and errors, and the parser that turns a
//! request body into an [`Operation`] (validation happens at submit time, before any job
//! exists). The hive's job router matches on [`Operation`]; clients can build and
//! serialise one.
//!
//! # Layout
//! - `operation`: [`Operation`], [`OperationKind`] (the names), [`OperationError`], limits.
//! - `parse`: [`Operation::parse`], the hand-written parser that names the field at fault.

#![deny(unreachable_pub)]

mod operation;
mod parse;

pub use operation::{
    LoadDevice, MAX_FIELD_LEN, MAX_GRACE_MS, Operation, OperationError, OperationKind,
    UPSTREAM_ONLY_OPERATIONS, is_upstream_only, supported_operations,
};

/// The response header that names the hive's id (the `hive_id` its jobs accept).
pub const HIVE_ID_HEADER: &str = "x-rbee-hive-id";

/// The hive id used in narration when none is configured (and `hive_check`'s default alias).
pub const DEFAULT_HIVE_ID: &str = "localhost";
