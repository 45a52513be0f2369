//! NVML, the driver's library (`libnvidia-ml`), loaded at run time by `nvml-wrapper`: a
//! GPU sample without starting a process. The library is loaded once, on the first sample,
//! and kept (a library that does not load is not tried again). Its calls block (they talk
//! to the driver), so loading and each query run on the blocking pool, bounded by a
//! timeout: a wedged driver must not stall sampling, and a query stuck in the driver is not
//! joined by more.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nvml_wrapper::enums::device::UsedGpuMemory;
use worker_lifecycle::{GpuSample, GpuState};

use crate::error::NvmlError;
use crate::source::Backend;

const MIB: u64 = 1024 * 1024;

/// How long loading the library or one query may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The library, loaded on the first sample.
pub(crate) struct Nvml {
    library: String,
    /// What answers when NVML does not (for the log).
    fallback: Option<Backend>,
    loaded: tokio::sync::OnceCell<Option<Arc<nvml_wrapper::Nvml>>>,
    /// Whether a failed or timed-out query was logged already (once is enough: it fails
    /// alike each interval).
    failure_logged: AtomicBool,
    /// Set while a query runs on the blocking pool.
    query_running: Arc<AtomicBool>,
}

impl Nvml {
    /// `library` is loaded on the first sample; `fallback` is what answers when NVML does
    /// not.
    pub(crate) fn new(library: String, fallback: Option<Backend>) -> Self {
        Self {
            library,
            fallback,
            loaded: tokio::sync::OnceCell::new(),
            failure_logged: AtomicBool::new(false),
            query_running: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Every GPU's memory and use and every compute process's GPU memory; none when the
    /// library does not load or the query fails (said in the log, once).
    pub(crate) async fn sample(&self) -> Option<GpuSample> {
        let nvml = self.library().await?;
        match self.query(nvml).await {
            Ok(sample) => Some(sample),
            // The last query is still stuck in the driver (logged when it timed out).
            Err(NvmlError::Busy) => None,
            Err(error @ NvmlError::QueryPanicked(_)) => {
                tracing::warn!("{error}");
                None
            }
            Err(error) => {
                if !self.failure_logged.swap(true, Ordering::Relaxed) {
                    match &error {
                        NvmlError::QueryTimeout(_) => {
                            tracing::warn!("{error}; {} meanwhile", self.then())
                        }
                        _ => tracing::warn!("{error}; later failures are not logged"),
                    }
                }
                None
            }
        }
    }

    /// The loaded library; `None` when it cannot be loaded.
    async fn library(&self) -> Option<Arc<nvml_wrapper::Nvml>> {
        self.loaded
            .get_or_init(|| async {
                match load(&self.library).await {
                    Ok(nvml) => {
                        tracing::info!("GPU memory per worker from NVML ({})", self.library);
                        Some(Arc::new(nvml))
                    }
                    Err(error @ NvmlError::Load { .. }) => {
                        let fallback = match self.fallback {
                            Some(backend) => format!("; using {}", backend.name()),
                            None => String::new(),
                        };
                        tracing::info!("{error}{fallback}");
                        None
                    }
                    Err(error @ NvmlError::LoadTimeout(_)) => {
                        tracing::warn!("{error}; not using it");
                        None
                    }
                    Err(error) => {
                        tracing::warn!("{error}");
                        None
                    }
                }
            })
            .await
            .clone()
    }

    /// One query on the blocking pool, unless the last one is still running.
    async fn query(&self, nvml: Arc<nvml_wrapper::Nvml>) -> Result<GpuSample, NvmlError> {
        if self.query_running.swap(true, Ordering::SeqCst) {
            return Err(NvmlError::Busy);
        }
        let running = self.query_running.clone();
        let query = tokio::task::spawn_blocking(move || {
            let sample = read_sample(&nvml);
            running.store(false, Ordering::SeqCst);
            sample
        });
        tokio::time::timeout(TIMEOUT, query)
            .await
            .map_err(|_| NvmlError::QueryTimeout(TIMEOUT))?
            .map_err(NvmlError::QueryPanicked)?
            .map_err(NvmlError::Query)
    }

    /// What the samples come from while NVML gives none, for the log.
    fn then(&self) -> String {
        match self.fallback {
            Some(backend) => format!("using {}", backend.name()),
            None => "no GPU sample".to_owned(),
        }
    }
}

/// Loads and initialises `library` on the blocking pool, within the timeout.
async fn load(library: &str) -> Result<nvml_wrapper::Nvml, NvmlError> {
    let path = library.to_owned();
    let loading = tokio::task::spawn_blocking(move || {
        nvml_wrapper::Nvml::builder()
            .lib_path(std::ffi::OsStr::new(&path))
            .init()
    });
    tokio::time::timeout(TIMEOUT, loading)
        .await
        .map_err(|_| NvmlError::LoadTimeout(TIMEOUT))?
        .map_err(NvmlError::LoadPanicked)?
        .map_err(|source| NvmlError::Load {
            library: library.to_owned(),
            source,
        })
}

/// Every GPU's memory and use, and the GPU memory of every compute process (summed over
/// GPUs, as `nvidia-smi --query-compute-apps` lists a process once per GPU).
fn read_sample(nvml: &nvml_wrapper::Nvml) -> Result<GpuSample, nvml_wrapper::error::NvmlError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_library_that_does_not_load_gives_no_sample_and_is_not_tried_again() {
        let nvml = Nvml::new(
            "/nonexistent/libnvidia-ml.so.1".to_owned(),
            Some(Backend::NvidiaSmi),
        );
        assert!(nvml.sample().await.is_none());
        assert_eq!(nvml.loaded.get().map(Option::is_none), Some(true));
        assert!(nvml.sample().await.is_none());
        assert!(!nvml.query_running.load(Ordering::SeqCst));
    }
}
