//! End-to-end test fixtures: a real `rbee-hive` process on `127.0.0.1:0`, talked to over
//! real HTTP, and checks against the operating system.
//!
//! [`TestHive`] starts the daemon binary with its own temporary state dir and config, reads
//! the bound address from the daemon's one stdout line, and on `Drop` stops it and makes
//! sure that no process it started is left behind: every process started by a test hive
//! inherits `RBEE_TEST_TAG=<unique>` in its environment, and `Drop` looks for it in
//! `/proc/*/environ`. A leftover process is killed and fails the test.
//!
//! # Layout
//! - [`binaries`]: builds (once per test binary) and locates the workspace's programs.
//! - [`hive`]: [`TestHive`] and its builder.
//! - [`sse`]: parsing of stream bodies.
//! - [`os`]: process and port checks.
//! - [`openmetrics`]: a real OpenMetrics parser for `/metrics`.

pub mod binaries;
pub mod hive;
pub mod openmetrics;
pub mod os;
pub mod sse;

pub use hive::{HiveBuilder, TestHive, demo_worker_type, spawn_body};
