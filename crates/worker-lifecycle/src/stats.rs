//! Live resource use of the workers, sampled by one task for all of them (never per
//! request): each interval it reads `/proc/<pid>/stat` of every process once (`procinfo`), adds up the
//! processes of each running worker's group (resident memory, CPU ticks, threads), and turns
//! the ticks into a CPU percentage over the interval. Readers get the last sample.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::procinfo;
use crate::record::WorkerRecord;
use crate::registry::Registry;

/// GPU memory and use as the driver reports them (`nvidia-smi`, or NVML).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuSample {
    /// GPU memory used by each process, in MiB, by pid.
    pub by_pid: HashMap<u32, u64>,
    /// Each GPU by index.
    pub gpus: HashMap<u32, GpuState>,
}

/// One GPU's memory and use.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GpuState {
    /// Used memory, MiB.
    pub used_mib: u64,
    /// Total memory, MiB.
    pub total_mib: u64,
    /// Utilisation, percent.
    pub util_pct: f64,
}

/// Where GPU samples come from. `None` when there is no GPU or no driver: the GPU fields
/// are then absent and nothing fails.
pub trait GpuUsage: Send + Sync + 'static {
    /// A sample now.
    fn sample(&self) -> futures::future::BoxFuture<'_, Option<GpuSample>>;
}

/// The last sample of one worker's process group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Processes in the worker's group.
    pub processes: u32,
    /// Their threads.
    pub threads: u64,
    /// Their resident memory, in MiB.
    pub rss_mb: f64,
    /// Their CPU use over the last interval, in percent of one core.
    pub cpu_pct: f64,
    /// What they read from storage over the last interval, MiB/s (`/proc/<pid>/io`).
    #[serde(default)]
    pub io_r_mb_s: f64,
    /// What they wrote to storage over the last interval, MiB/s.
    #[serde(default)]
    pub io_w_mb_s: f64,
    /// Seconds since its current run started (its start, or its last restart).
    pub uptime_s: u64,
    /// The pids of its group.
    pub pids: Vec<u32>,
    /// GPU memory its group holds, in MiB (GPU workers, when the driver reports it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vram_mb: Option<f64>,
    /// Utilisation of its GPU, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_util_pct: Option<f64>,
    /// Total memory of its GPU, in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_vram_mb: Option<f64>,
    /// When this was sampled.
    pub sampled_at: DateTime<Utc>,
}

impl WorkerStats {
    /// Whether this sample is of `record`'s current run: a run that ended (exited, or
    /// waiting to be restarted) has none, and another run's sample does not count for it.
    pub fn is_of_current_run(&self, record: &WorkerRecord) -> bool {
        record.is_launched()
            && record.exit.is_none()
            && !record.restart_pending()
            && self.pids.contains(&record.pid)
    }
}

/// The last samples, by worker id. A cheap `Clone` handle; its std mutex is held only to
/// copy a map in or out, never across an await.
#[derive(Debug, Clone, Default)]
pub(crate) struct StatsTable {
    samples: Arc<Mutex<HashMap<String, WorkerStats>>>,
}

impl StatsTable {
    pub(crate) fn get(&self, id: &str) -> Option<WorkerStats> {
        self.samples.lock().expect("stats lock").get(id).cloned()
    }

    pub(crate) fn all(&self) -> HashMap<String, WorkerStats> {
        self.samples.lock().expect("stats lock").clone()
    }

    fn replace(&self, samples: HashMap<String, WorkerStats>) {
        *self.samples.lock().expect("stats lock") = samples;
    }
}

/// Samples every `interval` until `stop`.
/// A group's running totals at one sample.
#[derive(Debug, Clone, Copy)]
struct Totals {
    ticks: u64,
    read_bytes: u64,
    write_bytes: u64,
    at: Instant,
}

/// Rates between two samples of one group.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Rates {
    cpu_pct: f64,
    io_r_mb_s: f64,
    io_w_mb_s: f64,
}

impl Totals {
    fn rates_since(&self, earlier: &Totals, ticks_per_second: f64) -> Rates {
        let seconds = self.at.duration_since(earlier.at).as_secs_f64();
        if seconds <= 0.0 {
            return Rates::default();
        }
        // A child that exited takes its counts with it: a rate is never below zero.
        let per_second = |now: u64, then: u64| now.saturating_sub(then) as f64 / seconds;
        let cpu = per_second(self.ticks, earlier.ticks) / ticks_per_second;
        const MIB: f64 = 1024.0 * 1024.0;
        Rates {
            cpu_pct: (cpu * 1000.0).round() / 10.0,
            io_r_mb_s: (per_second(self.read_bytes, earlier.read_bytes) / MIB * 100.0).round()
                / 100.0,
            io_w_mb_s: (per_second(self.write_bytes, earlier.write_bytes) / MIB * 100.0).round()
                / 100.0,
        }
    }
}

/// A worker's stats measured now, for one the sampler has not looked at yet (just
/// started): its leader's memory, and its CPU and I/O rates averaged since it started.
pub(crate) fn measure_now(record: &WorkerRecord) -> Option<WorkerStats> {
    let (usage, age_s) = procinfo::process_use(record.pid)?;
    let now = Instant::now();
    let started = now.checked_sub(Duration::from_secs_f64(age_s))?;
    let zero = Totals {
        ticks: 0,
        read_bytes: 0,
        write_bytes: 0,
        at: started,
    };
    let rates = totals_of(&usage, now).rates_since(&zero, procfs::ticks_per_second() as f64);
    Some(WorkerStats {
        processes: usage.processes,
        threads: usage.threads,
        rss_mb: mib(usage.rss_bytes),
        cpu_pct: rates.cpu_pct,
        io_r_mb_s: rates.io_r_mb_s,
        io_w_mb_s: rates.io_w_mb_s,
        uptime_s: uptime_s(record),
        pids: usage.pids,
        vram_mb: None,
        gpu_util_pct: None,
        total_vram_mb: None,
        sampled_at: Utc::now(),
    })
}

fn totals_of(usage: &procinfo::GroupUse, at: Instant) -> Totals {
    Totals {
        ticks: usage.ticks,
        read_bytes: usage.read_bytes,
        write_bytes: usage.write_bytes,
        at,
    }
}

/// Bytes in MiB, one decimal.
fn mib(bytes: u64) -> f64 {
    (bytes as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0
}

/// Seconds since its current run started (its start, or its last restart).
fn uptime_s(record: &WorkerRecord) -> u64 {
    let run_started_at = record.run_started_at.unwrap_or(record.started_at);
    (Utc::now() - run_started_at).num_seconds().max(0) as u64
}

pub(crate) async fn sampler(
    registry: Registry,
    table: StatsTable,
    interval: Duration,
    gpu: Option<std::sync::Arc<dyn GpuUsage>>,
    stop: CancellationToken,
) {
    let ticks_per_second = procfs::ticks_per_second() as f64;
    // The previous sample's totals per worker, to turn them into rates.
    let mut previous: HashMap<String, Totals> = HashMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let running: Vec<_> = registry
            .records()
            .into_iter()
            .filter(|r| r.is_launched() && r.exit.is_none() && r.pgid > 0)
            .collect();
        if running.is_empty() {
            previous.clear();
            table.replace(HashMap::new());
            continue;
        }
        let groups: Vec<u32> = running.iter().map(|r| r.pgid).collect();
        // The driver is asked only while GPU workers run (`nvidia-smi` costs tens of ms).
        let gpu_sample = match &gpu {
            Some(gpu) if running.iter().any(|r| r.device.starts_with("GPU-")) => gpu.sample().await,
            _ => None,
        };
        let Ok(usage) = tokio::task::spawn_blocking(move || procinfo::group_use(&groups)).await
        else {
            continue;
        };
        let now = Instant::now();
        let mut samples = HashMap::with_capacity(running.len());
        let mut next_previous = HashMap::with_capacity(running.len());
        for record in running {
            let group = usage.get(&record.pgid).cloned().unwrap_or_default();
            let totals = totals_of(&group, now);
            let rates = previous
                .get(&record.id)
                .map(|earlier| totals.rates_since(earlier, ticks_per_second))
                .unwrap_or_default();
            next_previous.insert(record.id.clone(), totals);
            let uptime_s = uptime_s(&record);
            let gpu_index = record
                .device
                .strip_prefix("GPU-")
                .and_then(|n| n.parse::<u32>().ok());
            let (vram_mb, gpu_state) = match (&gpu_sample, gpu_index) {
                (Some(sample), Some(index)) => (
                    Some(
                        group
                            .pids
                            .iter()
                            .filter_map(|pid| sample.by_pid.get(pid))
                            .sum::<u64>() as f64,
                    ),
                    sample.gpus.get(&index).copied(),
                ),
                _ => (None, None),
            };
            samples.insert(
                record.id.clone(),
                WorkerStats {
                    processes: group.processes,
                    threads: group.threads,
                    rss_mb: mib(group.rss_bytes),
                    cpu_pct: rates.cpu_pct,
                    io_r_mb_s: rates.io_r_mb_s,
                    io_w_mb_s: rates.io_w_mb_s,
                    uptime_s,
                    pids: group.pids.clone(),
                    vram_mb,
                    gpu_util_pct: gpu_state.map(|g| g.util_pct),
                    total_vram_mb: gpu_state.map(|g| g.total_mib as f64),
                    sampled_at: Utc::now(),
                },
            );
        }
        previous = next_previous;
        table.replace(samples);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_over_the_interval_and_never_negative() {
        let start = Instant::now();
        let earlier = Totals {
            ticks: 100,
            read_bytes: 0,
            write_bytes: 8 << 20,
            at: start,
        };
        let later = Totals {
            ticks: 150,
            read_bytes: 4 << 20,
            // A child that wrote exited: the group's total fell.
            write_bytes: 1 << 20,
            at: start + Duration::from_secs(2),
        };
        let rates = later.rates_since(&earlier, 100.0);
        assert_eq!(
            rates,
            Rates {
                cpu_pct: 25.0,
                io_r_mb_s: 2.0,
                io_w_mb_s: 0.0
            }
        );
        assert_eq!(earlier.rates_since(&earlier, 100.0), Rates::default());
    }
}
