//! Where each sample of GPU memory and use comes from: NVML (the driver's library, loaded
//! at run time by `nvml-wrapper`, so neither the build nor the tests need a GPU) and, when
//! NVML cannot be loaded or a query through it fails, `nvidia-smi`
//! ([`NvidiaSmiUsage`]), which costs a process start
//! (tens of milliseconds) per query. `gpu_source` in the config picks one or the other or
//! none.
//!
//! NVML calls block (they talk to the driver), so they run on the blocking pool; the library
//! is loaded once, on the first sample, and kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use worker_lifecycle::{GpuSample, GpuState, GpuUsage};

use crate::capabilities::NvidiaSmiUsage;
use crate::config::GpuSource;

const MIB: u64 = 1024 * 1024;

/// How long loading NVML or one query may take: a wedged driver must not stall sampling
/// (the next samples come from `nvidia-smi`, which has its own timeout).
const NVML_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// GPU samples by the configured source.
pub struct DriverGpuUsage {
    source: GpuSource,
    nvml_library: String,
    nvml: tokio::sync::OnceCell<Option<Arc<Nvml>>>,
    nvidia_smi: NvidiaSmiUsage,
    /// Whether a failed NVML query was logged already (once is enough: it fails alike each
    /// interval).
    nvml_failure_logged: AtomicBool,
    /// Set while an NVML query runs on the blocking pool: a query stuck in the driver is
    /// not joined by more.
    nvml_query_running: Arc<AtomicBool>,
}

impl DriverGpuUsage {
    /// A source that has loaded nothing yet.
    pub fn new(source: GpuSource, nvml_library: String, nvidia_smi: String) -> Self {
        Self {
            source,
            nvml_library,
            nvml: tokio::sync::OnceCell::new(),
            nvidia_smi: NvidiaSmiUsage { nvidia_smi },
            nvml_failure_logged: AtomicBool::new(false),
            nvml_query_running: Arc::new(AtomicBool::new(false)),
        }
    }

    /// NVML, loaded on the first call; `None` when it cannot be loaded.
    async fn nvml(&self) -> Option<Arc<Nvml>> {
        self.nvml
            .get_or_init(|| async {
                let library = self.nvml_library.clone();
                let loaded = tokio::time::timeout(
                    NVML_TIMEOUT,
                    tokio::task::spawn_blocking(move || {
                        Nvml::builder()
                            .lib_path(std::ffi::OsStr::new(&library))
                            .init()
                    }),
                )
                .await;
                let Ok(loaded) = loaded else {
                    tracing::warn!("loading NVML took over {NVML_TIMEOUT:?}; not using it");
                    return None;
                };
                match loaded {
                    Ok(Ok(nvml)) => {
                        tracing::info!("GPU memory per worker from NVML ({})", self.nvml_library);
                        Some(Arc::new(nvml))
                    }
                    Ok(Err(error)) => {
                        let fallback = match self.source {
                            GpuSource::Auto => "; using nvidia-smi",
                            _ => "",
                        };
                        tracing::info!(
                            "NVML not usable ({}: {error}){fallback}",
                            self.nvml_library
                        );
                        None
                    }
                    Err(join) => {
                        tracing::warn!("loading NVML failed: {join}");
                        None
                    }
                }
            })
            .await
            .clone()
    }

    async fn sample_nvml(&self) -> Option<GpuSample> {
        let nvml = self.nvml().await?;
        if self.nvml_query_running.swap(true, Ordering::SeqCst) {
            // The last query is still stuck in the driver.
            return None;
        }
        let running = self.nvml_query_running.clone();
        let query = tokio::task::spawn_blocking(move || {
            let sample = nvml_sample(&nvml);
            running.store(false, Ordering::SeqCst);
            sample
        });
        let Ok(result) = tokio::time::timeout(NVML_TIMEOUT, query).await else {
            if !self.nvml_failure_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "an NVML query took over {NVML_TIMEOUT:?}; using nvidia-smi meanwhile"
                );
            }
            return None;
        };
        match result {
            Ok(Ok(sample)) => Some(sample),
            Ok(Err(error)) => {
                if !self.nvml_failure_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!("an NVML query failed ({error}); later failures are not logged");
                }
                None
            }
            Err(join) => {
                tracing::warn!("an NVML query panicked: {join}");
                None
            }
        }
    }
}

impl GpuUsage for DriverGpuUsage {
    fn sample(&self) -> futures::future::BoxFuture<'_, Option<GpuSample>> {
        Box::pin(async move {
            match self.source {
                GpuSource::None => None,
                GpuSource::NvidiaSmi => self.nvidia_smi.sample().await,
                GpuSource::Nvml => self.sample_nvml().await,
                GpuSource::Auto => match self.sample_nvml().await {
                    Some(sample) => Some(sample),
                    None => self.nvidia_smi.sample().await,
                },
            }
        })
    }
}

/// Every GPU's memory and use, and the GPU memory of every compute process (summed over
/// GPUs, as `nvidia-smi --query-compute-apps` lists a process once per GPU).
fn nvml_sample(nvml: &Nvml) -> Result<GpuSample, NvmlError> {
    let mut by_pid: HashMap<u32, u64> = HashMap::new();
    let mut gpus = HashMap::new();
    for index in 0..nvml.device_count()? {
        let device = nvml.device_by_index(index)?;
        let memory = device.memory_info()?;
        // Some GPUs do not report utilisation; `nvidia-smi` prints "[N/A]" for them.
        let util_pct = device
            .utilization_rates()
            .map(|rates| f64::from(rates.gpu))
            .unwrap_or(0.0);
        gpus.insert(
            index,
            GpuState {
                used_mib: memory.used / MIB,
                total_mib: memory.total / MIB,
                util_pct,
            },
        );
        for process in device.running_compute_processes()? {
            if let UsedGpuMemory::Used(bytes) = process.used_gpu_memory {
                *by_pid.entry(process.pid).or_insert(0) += bytes / MIB;
            }
        }
    }
    Ok(GpuSample { by_pid, gpus })
}
