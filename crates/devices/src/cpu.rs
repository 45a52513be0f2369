//! `CPU-0`, the one CPU entry of `/capabilities`: its model and the real core count in the
//! name, system memory (`MemTotal` of `/proc/meminfo`) in `vram_gb`.

use crate::capabilities::Device;

/// The machine's CPU as one device.
pub(crate) fn device() -> Device {
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
    fn reads_mem_total() {
        assert_eq!(
            parse_mem_total_kib("MemTotal:       24572600 kB\nMemFree: 1 kB\n"),
            Some(24572600)
        );
        assert_eq!(parse_mem_total_kib("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn this_machines_cpu() {
        let cpu = device();
        assert_eq!(cpu.id, "CPU-0");
        assert_eq!(cpu.device_type, "cpu");
        assert!(cpu.vram_gb.is_some());
        assert!(cpu.name.ends_with(" cores)"), "{}", cpu.name);
    }
}
