//! The `nvidia-smi` program: one runner (no stdin, killed when it outlives its timeout),
//! the two things asked of it (the GPUs, for detection; memory per process and per GPU,
//! for a sample), and the parsers of its `csv,noheader,nounits` output. The captures the
//! parsers are tested on are real (`fixtures/nvidia-smi/`, an H100).

use std::collections::HashMap;
use std::time::Duration;

use worker_lifecycle::{GpuSample, GpuState};

use crate::capabilities::Device;
use crate::error::NvidiaSmiError;

/// How long one run may take before the hive gives up on it.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The GPUs, for detection.
const GPU_LIST_ARGS: &[&str] = &[
    "--query-gpu=index,name,memory.total,compute_cap",
    "--format=csv,noheader,nounits",
];

/// GPU memory per process, for a sample.
const COMPUTE_APPS_ARGS: &[&str] = &[
    "--query-compute-apps=pid,used_memory",
    "--format=csv,noheader,nounits",
];

/// Memory and use per GPU, for a sample.
const GPU_USAGE_ARGS: &[&str] = &[
    "--query-gpu=index,memory.used,memory.total,utilization.gpu",
    "--format=csv,noheader,nounits",
];

/// The `nvidia-smi` program the hive runs.
#[derive(Debug, Clone)]
pub(crate) struct NvidiaSmi {
    program: String,
}

impl NvidiaSmi {
    pub(crate) fn new(program: String) -> Self {
        Self { program }
    }

    /// The GPUs it lists, in its order; none when it is absent, fails, hangs or prints
    /// nothing usable (said in the log: a debug line when it is not there at all).
    pub(crate) async fn gpus(&self) -> Vec<Device> {
        match self.run(GPU_LIST_ARGS).await {
            Ok(text) => parse_gpu_list(&text),
            Err(error @ NvidiaSmiError::NotUsable { .. }) => {
                tracing::debug!("{error}; reporting no GPU");
                Vec::new()
            }
            Err(error) => {
                tracing::warn!("{error}; reporting no GPU");
                Vec::new()
            }
        }
    }

    /// GPU memory per process and per GPU (two runs); none when either run fails.
    pub(crate) async fn sample(&self) -> Option<GpuSample> {
        let apps = self.run(COMPUTE_APPS_ARGS).await.ok()?;
        let gpus = self.run(GPU_USAGE_ARGS).await.ok()?;
        Some(GpuSample {
            by_pid: parse_compute_apps(&apps),
            gpus: parse_gpu_usage(&gpus),
        })
    }

    /// Runs it with `args`; its standard output when it exits successfully in time.
    async fn run(&self, args: &[&str]) -> Result<String, NvidiaSmiError> {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(TIMEOUT, command.output())
            .await
            .map_err(|_| NvidiaSmiError::Timeout {
                program: self.program.clone(),
                timeout: TIMEOUT,
            })?
            .map_err(|source| NvidiaSmiError::NotUsable {
                program: self.program.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(NvidiaSmiError::Failed {
                program: self.program.clone(),
                status: output.status,
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// Parses `index, name, memory.total [MiB], compute_cap` lines (noheader, nounits).
/// Lines that do not parse are skipped.
fn parse_gpu_list(text: &str) -> Vec<Device> {
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

/// `pid, used_memory` lines (noheader, nounits) → MiB by pid, summed per pid (a process on
/// several GPUs has a line for each).
fn parse_compute_apps(text: &str) -> HashMap<u32, u64> {
    let mut by_pid = HashMap::new();
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
fn parse_gpu_usage(text: &str) -> HashMap<u32, GpuState> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split(',').map(str::trim).collect();
            let index = cols.first()?.parse::<u32>().ok()?;
            Some((
                index,
                GpuState {
                    used_mib: cols.get(1)?.parse().ok()?,
                    total_mib: cols.get(2)?.parse().ok()?,
                    // "[N/A]" on GPUs that do not report it.
                    util_pct: cols.get(3).and_then(|u| u.parse().ok()).unwrap_or(0.0),
                },
            ))
        })
        .collect()
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
            parse_gpu_list(text),
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
        let devices = parse_gpu_list(text);
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].vram_gb, None);
        assert!(parse_gpu_list("No devices were found\n").is_empty());
        assert!(parse_gpu_list("").is_empty());
    }

    #[test]
    fn two_gpus_in_order() {
        let devices = parse_gpu_list("0, A, 24576, 8.6\n1, B, 16384, [N/A]\n");
        assert_eq!(
            devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["GPU-0", "GPU-1"]
        );
        assert_eq!(devices[0].vram_gb, Some(24));
        assert_eq!(devices[1].compute_capability, None);
    }

    #[tokio::test]
    async fn a_missing_or_failing_program_is_a_typed_error() {
        let missing = NvidiaSmi::new("/nonexistent/nvidia-smi".to_owned());
        let error = missing.run(GPU_LIST_ARGS).await.unwrap_err();
        assert!(
            matches!(error, NvidiaSmiError::NotUsable { .. }),
            "{error:?}"
        );
        assert!(missing.gpus().await.is_empty());
        assert!(missing.sample().await.is_none());
        let failing = NvidiaSmi::new("false".to_owned());
        let error = failing.run(GPU_LIST_ARGS).await.unwrap_err();
        assert!(matches!(error, NvidiaSmiError::Failed { .. }), "{error:?}");
        assert_eq!(error.to_string(), "false exited with exit status: 1");
    }
}
