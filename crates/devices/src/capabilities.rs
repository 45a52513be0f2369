//! The body of `GET /capabilities` (PROTOCOL §2): [`Capabilities`], one [`Device`] per
//! NVIDIA GPU, then `CPU-0`. Plain values, serialised as the upstream queen reads them.

use serde::Serialize;

/// One compute device, as the upstream queen reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    /// `GPU-<index>` or `CPU-0`.
    pub id: String,
    /// Product name.
    pub name: String,
    /// `gpu` or `cpu`.
    pub device_type: &'static str,
    /// GPU memory in GiB (truncated); for the CPU, system memory in GiB.
    pub vram_gb: Option<u64>,
    /// CUDA compute capability such as `9.0`; null for the CPU.
    pub compute_capability: Option<String>,
}

/// The body of `GET /capabilities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// GPUs first, then `CPU-0`.
    pub devices: Vec<Device>,
}
