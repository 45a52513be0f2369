//! The machine's compute devices as the hive sees them: its NVIDIA GPUs and its CPU, and the
//! GPU memory and use of each process.
//!
//! This crate knows the GPU driver's two interfaces, NVML (the driver's library, loaded at
//! run time, so neither the build nor the tests need a GPU) and the `nvidia-smi` program,
//! and knows nothing of HTTP, jobs or workers. Its whole surface is [`Devices`], one handle
//! made from a [`DeviceConfig`], and plain values: [`Capabilities`] (the body of
//! `GET /capabilities`) and its [`Device`]s, and [`GpuSource`], the config's choice of where
//! GPU samples come from. [`Devices`] implements the lifecycle's
//! [`DeviceInventory`](worker_lifecycle::DeviceInventory) (which devices a spawn may name)
//! and [`GpuUsage`](worker_lifecycle::GpuUsage) (GPU memory per process).
//!
//! Which interface answers is decided in one place: a GPU sample comes from NVML, and from
//! `nvidia-smi` when NVML cannot be loaded or a query through it fails (`gpu_source =
//! "auto"`), or from one of them only, or from none. The GPUs a spawn may name and
//! `/capabilities` lists come from `nvidia-smi`, whatever `gpu_source` says. Nothing here
//! fails loudly: a machine without a driver, or with a driver that hangs or errs, has no
//! GPU and gives no GPU sample, and the log says why once.
//!
//! # Layout
//! - `devices`: [`Devices`] and [`DeviceConfig`]: detection, and the one fallback path of
//!   GPU sampling.
//! - `source`: [`GpuSource`] and the pure decision of which interface is asked, in what
//!   order.
//! - `capabilities`: [`Capabilities`] and [`Device`], the wire shape of `/capabilities`.
//! - `cpu`: `CPU-0`, from the core count, `/proc/cpuinfo` and `/proc/meminfo`.
//! - `nvidia_smi`: the program: one runner with a timeout, its queries and their parsers.
//! - `nvml`: NVML: loaded once, on the first sample; queries on the blocking pool, bounded.
//! - `error`: what goes wrong when the driver is asked (logged, never returned).

#![deny(unreachable_pub)]

mod capabilities;
mod cpu;
mod devices;
mod error;
mod nvidia_smi;
mod nvml;
mod source;

pub use capabilities::{Capabilities, Device};
pub use devices::{DeviceConfig, Devices};
pub use source::GpuSource;
