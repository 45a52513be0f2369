//! Device detection for `GET /capabilities`: one entry per NVIDIA GPU, then `CPU-0`.
//!
//! GPUs come from `nvidia-smi --query-gpu=index,name,memory.total,compute_cap
//! --format=csv,noheader,nounits`; when the program is absent, fails, hangs past a timeout
//! or prints nothing usable, the hive reports no GPU rather than an error. The CPU entry
//! comes from the real core count and `/proc/meminfo`.

use std::time::Duration;

use serde::Serialize;

/// How long `nvidia-smi` may take before the hive gives up on it.
pub const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(5);

/// The arguments given to `nvidia-smi`.
pub const NVIDIA_SMI_ARGS: &[&str] = &[
    "--query-gpu=index,name,memory.total,compute_cap",
    "--format=csv,noheader,nounits",
];

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

/// The devices a spawn may name: the same detection as `/capabilities`, run when a spawn
/// asks (only GPU spawns run `nvidia-smi`: a few a minute at most, each loading a model for
/// seconds, so no cache that could go stale).
#[derive(Debug, Clone)]
pub struct DetectedDevices {
    /// The `nvidia-smi` program.
    pub nvidia_smi: String,
}

impl worker_lifecycle::DeviceInventory for DetectedDevices {
    fn ordinals(
        &self,
        kind: worker_lifecycle::DeviceKind,
    ) -> futures::future::BoxFuture<'_, Vec<u32>> {
        Box::pin(async move {
            match kind {
                worker_lifecycle::DeviceKind::Cpu => vec![0],
                worker_lifecycle::DeviceKind::Gpu => detect_gpus(&self.nvidia_smi)
                    .await
                    .iter()
                    .filter_map(|gpu| gpu.id.strip_prefix("GPU-")?.parse().ok())
                    .collect(),
                // Metal devices are Apple GPUs; this hive detects none (it runs on Linux).
                worker_lifecycle::DeviceKind::Metal => Vec::new(),
            }
        })
    }
}

/// GPU memory per process and per GPU from `nvidia-smi` (two queries a sample).
#[derive(Debug, Clone)]
pub struct NvidiaSmiUsage {
    /// The `nvidia-smi` program.
    pub nvidia_smi: String,
}

impl worker_lifecycle::GpuUsage for NvidiaSmiUsage {
    fn sample(&self) -> futures::future::BoxFuture<'_, Option<worker_lifecycle::GpuSample>> {
        Box::pin(async move {
            let apps = run_nvidia_smi(
                &self.nvidia_smi,
                &[
                    "--query-compute-apps=pid,used_memory",
                    "--format=csv,noheader,nounits",
                ],
            )
            .await?;
            let gpus = run_nvidia_smi(
                &self.nvidia_smi,
                &[
                    "--query-gpu=index,memory.used,memory.total,utilization.gpu",
                    "--format=csv,noheader,nounits",
                ],
            )
            .await?;
            Some(worker_lifecycle::GpuSample {
                by_pid: parse_compute_apps(&apps),
                gpus: parse_gpu_usage(&gpus),
            })
        })
    }
}

async fn run_nvidia_smi(program: &str, args: &[&str]) -> Option<String> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(NVIDIA_SMI_TIMEOUT, command.output()).await {
        Ok(Ok(output)) if output.status.success() => {
            Some(String::from_utf8_lossy(&output.stdout).into_owned())
        }
        _ => None,
    }
}

/// `pid, used_memory` lines (noheader, nounits) → MiB by pid, summed per pid (a process on
/// several GPUs has a line for each).
pub fn parse_compute_apps(text: &str) -> std::collections::HashMap<u32, u64> {
    let mut by_pid = std::collections::HashMap::new();
    for line in text.lines() {
        let mut cols = line.split(',').map(str::trim);
        let (Some(pid), Some(used)) = (
            cols.next().and_then(|p| p.parse::<u32>().ok()),
            cols.next().and_then(|m| m.parse::<u64>().ok()),
        ) else {
            continue;
        };
        *by_pid.entry(pid).or_insert(0) += used;
    }
    by_pid
}

/// `index, memory.used, memory.total, utilization.gpu` lines (noheader, nounits).
pub fn parse_gpu_usage(text: &str) -> std::collections::HashMap<u32, worker_lifecycle::GpuState> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split(',').map(str::trim).collect();
            let index = cols.first()?.parse::<u32>().ok()?;
            Some((
                index,
                worker_lifecycle::GpuState {
                    used_mib: cols.get(1)?.parse().ok()?,
                    total_mib: cols.get(2)?.parse().ok()?,
                    // "[N/A]" on GPUs that do not report it.
                    util_pct: cols.get(3).and_then(|u| u.parse().ok()).unwrap_or(0.0),
                },
            ))
        })
        .collect()
}

/// Detects this machine's devices, running `nvidia_smi` for the GPUs.
pub async fn detect(nvidia_smi: &str) -> Capabilities {
    let mut devices = detect_gpus(nvidia_smi).await;
    devices.push(cpu_device());
    Capabilities { devices }
}

async fn detect_gpus(program: &str) -> Vec<Device> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(NVIDIA_SMI_ARGS)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(NVIDIA_SMI_TIMEOUT, command.output()).await {
        Ok(Ok(output)) if output.status.success() => {
            parse_nvidia_smi_csv(&String::from_utf8_lossy(&output.stdout))
        }
        Ok(Ok(output)) => {
            tracing::warn!("{program} exited with {}; reporting no GPU", output.status);
            Vec::new()
        }
        Ok(Err(error)) => {
            tracing::debug!("{program} not usable ({error}); reporting no GPU");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!(
                "{program} did not answer within {NVIDIA_SMI_TIMEOUT:?}; reporting no GPU"
            );
            Vec::new()
        }
    }
}

/// Parses `index, name, memory.total [MiB], compute_cap` lines (noheader, nounits).
/// Lines that do not parse are skipped.
pub fn parse_nvidia_smi_csv(text: &str) -> Vec<Device> {
    text.lines()
        .filter_map(|line| {
            let mut cols = line.split(',').map(str::trim);
            let index: u32 = cols.next()?.parse().ok()?;
            let name = cols.next().filter(|n| !n.is_empty())?.to_owned();
            let memory_mib = cols.next().and_then(|m| m.parse::<u64>().ok());
            let compute_capability = cols
                .next()
                .filter(|c| !c.is_empty() && !c.starts_with('['))
                .map(str::to_owned);
            Some(Device {
                id: format!("GPU-{index}"),
                name,
                device_type: "gpu",
                vram_gb: memory_mib.map(|mib| mib / 1024),
                compute_capability,
            })
        })
        .collect()
}

fn cpu_device() -> Device {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        });
    let name = match model {
        Some(model) => format!("{model} ({cores} cores)"),
        None => format!("CPU ({cores} cores)"),
    };
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_mem_total_kib(&text))
        .map(|kib| kib / (1024 * 1024));
    Device {
        id: "CPU-0".to_owned(),
        name,
        device_type: "cpu",
        vram_gb: memory_gib,
        compute_capability: None,
    }
}

fn parse_mem_total_kib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_apps_from_the_real_capture() {
        let capture = include_str!("../fixtures/nvidia-smi/query-compute-apps-one-process.txt");
        // The capture holds the csv form with header and units first, then the noheader,
        // nounits form that the hive asks for: only the latter parses.
        let by_pid = parse_compute_apps(capture);
        assert_eq!(by_pid.len(), 1, "{by_pid:?}");
        assert_eq!(by_pid[&426], 1542);
        let empty = include_str!("../fixtures/nvidia-smi/query-compute-apps.csv");
        assert!(parse_compute_apps(empty).is_empty());
        // A process on two GPUs counts twice.
        assert_eq!(parse_compute_apps("7, 100\n7, 50\n")[&7], 150);
    }

    #[test]
    fn gpu_usage_lines() {
        let gpus = parse_gpu_usage("0, 1542, 81559, 37\n1, 0, 81559, [N/A]\nbad\n");
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[&0].used_mib, 1542);
        assert_eq!(gpus[&0].total_mib, 81559);
        assert_eq!(gpus[&0].util_pct, 37.0);
        assert_eq!(gpus[&1].util_pct, 0.0);
    }

    #[test]
    fn parses_the_h100_capture() {
        let text = include_str!("../fixtures/nvidia-smi/query-gpu-noheader-nounits.csv");
        assert_eq!(
            parse_nvidia_smi_csv(text),
            vec![Device {
                id: "GPU-0".into(),
                name: "NVIDIA H100 80GB HBM3".into(),
                device_type: "gpu",
                vram_gb: Some(79),
                compute_capability: Some("9.0".into()),
            }]
        );
    }

    #[test]
    fn skips_headers_and_garbage() {
        let text = include_str!("../fixtures/nvidia-smi/query-gpu.csv");
        // The header line does not parse; the data line does (memory has units here, so
        // it is unknown rather than wrong).
        let devices = parse_nvidia_smi_csv(text);
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].vram_gb, None);
        assert!(parse_nvidia_smi_csv("No devices were found\n").is_empty());
        assert!(parse_nvidia_smi_csv("").is_empty());
    }

    #[test]
    fn two_gpus_in_order() {
        let devices = parse_nvidia_smi_csv("0, A, 24576, 8.6\n1, B, 16384, [N/A]\n");
        assert_eq!(
            devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["GPU-0", "GPU-1"]
        );
        assert_eq!(devices[0].vram_gb, Some(24));
        assert_eq!(devices[1].compute_capability, None);
    }

    #[test]
    fn reads_mem_total() {
        assert_eq!(
            parse_mem_total_kib("MemTotal:       24572600 kB\nMemFree: 1 kB\n"),
            Some(24572600)
        );
    }

    #[tokio::test]
    async fn missing_nvidia_smi_means_cpu_only() {
        let caps = detect("/nonexistent/nvidia-smi").await;
        assert_eq!(caps.devices.len(), 1);
        assert_eq!(caps.devices[0].id, "CPU-0");
        assert!(caps.devices[0].vram_gb.unwrap_or(0) > 0);
    }
}
