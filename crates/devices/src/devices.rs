//! [`Devices`], the one handle on the machine's devices: detection for `/capabilities` and
//! for spawns ([`DeviceInventory`]), and GPU samples ([`GpuUsage`]) along the one fallback
//! path that [`GpuSource`] decides.
//!
//! Detection runs when it is asked (only GPU spawns and `/capabilities` ask: a few a minute
//! at most, each spawn loading a model for seconds), so there is no cache that could go
//! stale.

use futures::future::BoxFuture;
use worker_lifecycle::{DeviceInventory, DeviceKind, GpuSample, GpuUsage};

use crate::capabilities::Capabilities;
use crate::cpu;
use crate::nvidia_smi::NvidiaSmi;
use crate::nvml::Nvml;
use crate::source::{Backend, GpuSource};

/// What [`Devices`] asks and how.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Where GPU samples come from.
    pub gpu_source: GpuSource,
    /// The NVML library (the driver's `libnvidia-ml.so.1`), loaded on the first sample.
    pub nvml_library: String,
    /// The `nvidia-smi` program: detection, and samples where NVML is not used.
    pub nvidia_smi: String,
}

/// The machine's GPUs and CPU, and the GPU memory of its processes. Nothing is loaded or
/// run until it is asked; share it in an `Arc`.
pub struct Devices {
    source: GpuSource,
    nvidia_smi: NvidiaSmi,
    nvml: Nvml,
}

impl Devices {
    /// A handle that has asked nothing yet.
    pub fn new(config: DeviceConfig) -> Self {
        Self {
            source: config.gpu_source,
            nvidia_smi: NvidiaSmi::new(config.nvidia_smi),
            nvml: Nvml::new(
                config.nvml_library,
                config.gpu_source.fallback_of(Backend::Nvml),
            ),
        }
    }

    /// The machine's devices: one per NVIDIA GPU as `nvidia-smi` lists them, then `CPU-0`.
    /// No driver, or one that fails or hangs (5 s), means no GPU, not an error.
    pub async fn capabilities(&self) -> Capabilities {
        let mut devices = self.nvidia_smi.gpus().await;
        devices.push(cpu::device());
        Capabilities { devices }
    }
}

impl DeviceInventory for Devices {
    fn ordinals(&self, kind: DeviceKind) -> BoxFuture<'_, Vec<u32>> {
        Box::pin(async move {
            match kind {
                DeviceKind::Cpu => vec![0],
                DeviceKind::Gpu => self
                    .nvidia_smi
                    .gpus()
                    .await
                    .iter()
                    .filter_map(|gpu| gpu.id.strip_prefix("GPU-")?.parse().ok())
                    .collect(),
                // Metal devices are Apple GPUs; this hive detects none (it runs on Linux).
                DeviceKind::Metal => Vec::new(),
            }
        })
    }
}

impl GpuUsage for Devices {
    fn sample(&self) -> BoxFuture<'_, Option<GpuSample>> {
        Box::pin(async move {
            for backend in self.source.sampling_order() {
                let sample = match backend {
                    Backend::Nvml => self.nvml.sample().await,
                    Backend::NvidiaSmi => self.nvidia_smi.sample().await,
                };
                if sample.is_some() {
                    return sample;
                }
            }
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn without_a_driver(gpu_source: GpuSource) -> Devices {
        Devices::new(DeviceConfig {
            gpu_source,
            nvml_library: "/nonexistent/libnvidia-ml.so.1".to_owned(),
            nvidia_smi: "/nonexistent/nvidia-smi".to_owned(),
        })
    }

    #[tokio::test]
    async fn missing_nvidia_smi_means_cpu_only() {
        let caps = without_a_driver(GpuSource::Auto).capabilities().await;
        assert_eq!(caps.devices.len(), 1);
        assert_eq!(caps.devices[0].id, "CPU-0");
        assert!(caps.devices[0].vram_gb.unwrap_or(0) > 0);
    }

    #[tokio::test]
    async fn no_driver_no_gpu_and_no_sample_whatever_the_source() {
        for source in [
            GpuSource::Auto,
            GpuSource::Nvml,
            GpuSource::NvidiaSmi,
            GpuSource::None,
        ] {
            let devices = without_a_driver(source);
            assert_eq!(devices.ordinals(DeviceKind::Cpu).await, [0]);
            assert!(devices.ordinals(DeviceKind::Gpu).await.is_empty());
            assert!(devices.ordinals(DeviceKind::Metal).await.is_empty());
            assert!(devices.sample().await.is_none(), "{source:?}");
        }
    }

    /// A fake `nvidia-smi` in `dir` that answers as the captured H100 with process 7
    /// holding 100 MiB, and appends each first argument to `dir/calls`.
    fn fake_nvidia_smi(dir: &std::path::Path) -> String {
        let capture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/nvidia-smi/query-gpu-noheader-nounits.csv"
        );
        let script = format!(
            r#"#!/bin/sh
echo "$1" >> {dir}/calls
case "$1" in
  --query-compute-apps=*) echo "7, 100" ;;
  --query-gpu=index,memory.used,memory.total,utilization.gpu) echo "0, 1542, 81559, 37" ;;
  *) cat '{capture}' ;;
esac
"#,
            dir = dir.display()
        );
        let path = dir.join("nvidia-smi");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path.display().to_string()
    }

    #[tokio::test]
    async fn nvidia_smi_answers_when_nvml_does_not_load_unless_the_source_rules_it_out() {
        let dir = tempfile::tempdir().unwrap();
        let program = fake_nvidia_smi(dir.path());
        let calls = dir.path().join("calls");
        for (source, answers) in [
            (GpuSource::Auto, true),
            (GpuSource::NvidiaSmi, true),
            (GpuSource::Nvml, false),
            (GpuSource::None, false),
        ] {
            let _ = std::fs::remove_file(&calls);
            let devices = Devices::new(DeviceConfig {
                gpu_source: source,
                nvml_library: dir
                    .path()
                    .join("no-libnvidia-ml.so.1")
                    .display()
                    .to_string(),
                nvidia_smi: program.clone(),
            });
            let sample = devices.sample().await;
            let asked = std::fs::read_to_string(&calls).unwrap_or_default();
            assert_eq!(
                asked.contains("--query-compute-apps"),
                answers,
                "{source:?}: {asked}"
            );
            match sample {
                Some(sample) => {
                    assert!(answers, "{source:?}");
                    assert_eq!(sample.by_pid[&7], 100);
                    assert_eq!(sample.gpus[&0].used_mib, 1542);
                    assert_eq!(sample.gpus[&0].util_pct, 37.0);
                }
                None => assert!(!answers, "{source:?}"),
            }

            // Detection is nvidia-smi's, whatever the source.
            let caps = devices.capabilities().await;
            let ids: Vec<&str> = caps.devices.iter().map(|d| d.id.as_str()).collect();
            assert_eq!(ids, ["GPU-0", "CPU-0"], "{source:?}");
            assert_eq!(caps.devices[0].vram_gb, Some(79));
            assert_eq!(devices.ordinals(DeviceKind::Gpu).await, [0]);
        }
    }
}
