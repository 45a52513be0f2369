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
//! - [`hive`]: [`TestHive`] and its builder; the request bodies, worker types and record
//!   fields the tests share.
//! - [`lines`]: checks on a job's lines (`[DONE]`, `[ERROR]`, a line that says …).
//! - [`sse`]: parsing of stream bodies.
//! - [`os`]: process and port checks.
//! - [`wait`]: waiting for a condition with a deadline (never a fixed sleep).
//! - [`openmetrics`]: a real OpenMetrics parser for `/metrics`.
//! - [`queen`]: [`queen::FakeQueen`], a test double of today's rbee queen (registration,
//!   subscription to the hive's telemetry stream, the queen's view of hives and workers).

pub mod binaries;
pub mod hive;
pub mod lines;
pub mod openmetrics;
pub mod os;
pub mod queen;
pub mod sse;
pub mod wait;

pub use hive::{
    HiveBuilder, TestHive, crashing_type, delete_body, demo_worker_type, pid_of, port_of,
    slow_start_type, spawn_body, stubborn_type,
};
