//! `CPU-0`, the one CPU entry of `/capabilities`: its model and the real core count in the
//! name, system memory (`MemTotal` of `/proc/meminfo`, through `procfs`) in `vram_gb`.

use crate::capabilities::Device;

/// The machine's CPU as one device.
pub(crate) fn device() -> Device {
    use procfs::Current;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let model = procfs::CpuInfo::current()
        .ok()
        .and_then(|info| info.model_name(0).map(|name| name.trim().to_owned()));
    let name = match model {
        Some(model) => format!("{model} ({cores} cores)"),
        None => format!("CPU ({cores} cores)"),
    };
    // `procfs` gives MemTotal in bytes.
    let memory_gib = procfs::Meminfo::current()
        .ok()
        .map(|meminfo| meminfo.mem_total / (1024 * 1024 * 1024));
    Device {
        id: "CPU-0".to_owned(),
        name,
        device_type: "cpu",
        vram_gb: memory_gib,
        compute_capability: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machines_cpu() {
        let cpu = device();
        assert_eq!(cpu.id, "CPU-0");
        assert_eq!(cpu.device_type, "cpu");
        assert!(cpu.vram_gb.is_some());
        assert!(cpu.name.ends_with(" cores)"), "{}", cpu.name);
    }
}
