//! `model_load` (today's rbee, PROTOCOL §9): starts a worker for a catalog model on a
//! device and ends when it is ready.
//!
//! This file owns only the choice of the worker type (the `load_worker` config key, or the
//! default: `llama` for a GPU where llama-server is found, else the rbee worker type of the
//! device's kind) and the check that the type runs on the kind of device asked for; the
//! start itself, its narration and its failure handling are `worker_spawn`'s.

use catalog::CatalogId;
use hive_api::LoadDevice;
use job_server::JobContext;
use worker_lifecycle::DeviceKind;

use crate::jobs::NARRATE;
use crate::jobs::ops::worker_spawn;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Starts a worker for catalog model `id` on `device`.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
    id: &str,
    device: LoadDevice,
) -> Result<(), OperationFailure> {
    NARRATE
        .action("model_load_start")
        .context(id)
        .context(device)
        .context(hive_id)
        .human("📦 Loading model '{}' on {} on hive '{}'")
        .emit_to(job);
    let worker = match usable_model(services, id).map(|()| pick(services, device)) {
        Ok(worker) => worker,
        Err(error) => return Err(load_error(job, id, error)),
    };
    NARRATE
        .action("model_load_worker")
        .context(&worker.name)
        .context(worker.why)
        .field("worker_type", &worker.name)
        .human("Worker type '{}' ({})")
        .emit_to(job);
    if let Err(error) = check_kind(services, &worker.name, device) {
        return Err(load_error(job, id, error));
    }
    worker_spawn::run(job, services, hive_id, id, &worker.name, device.ordinal()).await
}

/// The worker type a load uses, and why.
#[derive(Debug, PartialEq, Eq)]
struct Chosen {
    name: String,
    why: &'static str,
}

/// Narrates why a load cannot start, and hands the error on.
fn load_error(job: &JobContext, id: &str, error: OperationFailure) -> OperationFailure {
    NARRATE
        .action("model_load_error")
        .context(id)
        .context(&error)
        .human("❌ Cannot load model '{}': {}")
        .error()
        .emit_to(job);
    error
}

/// Only catalog models are loaded (a spawn takes paths too; a load names an entry), and
/// only usable ones (not downloading, not failed).
fn usable_model(services: &OperationServices, id: &str) -> Result<(), OperationFailure> {
    services.models.model_file(&CatalogId::parse(id)?)?;
    Ok(())
}

/// The worker type for `device`, from the configuration in effect now.
fn pick(services: &OperationServices, device: LoadDevice) -> Chosen {
    let configured = services.config.current().load_worker.clone();
    choose(configured, device, || {
        services
            .workers
            .worker_type_info("llama")
            .is_ok_and(|info| matches!(info.found, Some(Ok(_))))
    })
}

/// Refuses a type that is unknown or runs on another kind of device than `device`.
fn check_kind(
    services: &OperationServices,
    worker: &str,
    device: LoadDevice,
) -> Result<(), OperationFailure> {
    let info = services.workers.worker_type_info(worker)?;
    let wanted = device_kind(device);
    if info.device != wanted {
        return Err(OperationFailure::DeviceMismatch {
            worker: worker.to_owned(),
            kind: info.device.label(),
            device: device.to_string(),
            hint: format!(
                "load on a {} device, or set load_worker to a worker type for {} devices",
                info.device.label(),
                wanted.label()
            ),
        });
    }
    Ok(())
}

/// The choice itself: the configured type; else `llama` for a GPU when its program is
/// found (the built-in `llama` type names its device `GPU-<n>` and exports
/// `CUDA_VISIBLE_DEVICES`, so it does not stand for a CPU or Metal device); else the rbee
/// worker type of the device's kind.
fn choose(
    configured: Option<String>,
    device: LoadDevice,
    llama_found: impl FnOnce() -> bool,
) -> Chosen {
    if let Some(name) = configured {
        return Chosen {
            name,
            why: "load_worker",
        };
    }
    if matches!(device, LoadDevice::Cuda(_)) && llama_found() {
        return Chosen {
            name: "llama".to_owned(),
            why: "default: llama-server is installed",
        };
    }
    Chosen {
        name: device.kind_name().to_owned(),
        why: "default: the rbee worker for this kind of device",
    }
}

fn device_kind(device: LoadDevice) -> DeviceKind {
    match device {
        LoadDevice::Cpu(_) => DeviceKind::Cpu,
        LoadDevice::Cuda(_) => DeviceKind::Gpu,
        LoadDevice::Metal(_) => DeviceKind::Metal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_type_wins_then_llama_for_a_gpu_then_the_rbee_type() {
        let never = || panic!("not asked when a type is configured");
        assert_eq!(
            choose(Some("demo".into()), LoadDevice::Cuda(0), never).name,
            "demo"
        );
        assert_eq!(choose(None, LoadDevice::Cuda(1), || true).name, "llama");
        assert_eq!(choose(None, LoadDevice::Cuda(1), || false).name, "cuda");
        assert_eq!(choose(None, LoadDevice::Cpu(0), || true).name, "cpu");
        assert_eq!(choose(None, LoadDevice::Metal(0), || true).name, "metal");
    }
}
