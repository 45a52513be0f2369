//! Where GPU samples come from: [`GpuSource`], the config's choice, and the one decision
//! made from it: which of the driver's interfaces is asked, in what order. The first that
//! answers gives the sample; NVML comes first where both may be asked, because it costs no
//! process start (`nvidia-smi` costs tens of milliseconds a query).
//!
//! Detection (the GPUs of `/capabilities` and the devices a spawn may name) is not a
//! choice: it runs `nvidia-smi` whatever the source, as the `nvidia_smi` key and
//! `/capabilities` promise; `gpu_source = "none"` turns sampling off, not the GPUs.

use serde::{Deserialize, Serialize};

/// Where the GPU memory and use of each worker come from (`gpu_source` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GpuSource {
    /// NVML when its library loads, else `nvidia-smi`.
    #[default]
    Auto,
    /// NVML only.
    Nvml,
    /// `nvidia-smi` only.
    NvidiaSmi,
    /// No GPU sampling.
    None,
}

/// One of the driver's interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// The driver's library, `libnvidia-ml`.
    Nvml,
    /// The `nvidia-smi` program.
    NvidiaSmi,
}

impl Backend {
    /// How the log names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Nvml => "NVML",
            Backend::NvidiaSmi => "nvidia-smi",
        }
    }
}

impl GpuSource {
    /// The interfaces asked for a GPU sample, in order: the first that answers gives it.
    pub(crate) fn sampling_order(self) -> &'static [Backend] {
        match self {
            GpuSource::Auto => &[Backend::Nvml, Backend::NvidiaSmi],
            GpuSource::Nvml => &[Backend::Nvml],
            GpuSource::NvidiaSmi => &[Backend::NvidiaSmi],
            GpuSource::None => &[],
        }
    }

    /// The interface asked when `backend` gives no sample, if any.
    pub(crate) fn fallback_of(self, backend: Backend) -> Option<Backend> {
        let order = self.sampling_order();
        let at = order.iter().position(|b| *b == backend)?;
        order.get(at + 1).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvml_first_then_nvidia_smi_only_with_auto() {
        assert_eq!(
            GpuSource::Auto.sampling_order(),
            [Backend::Nvml, Backend::NvidiaSmi]
        );
        assert_eq!(GpuSource::Nvml.sampling_order(), [Backend::Nvml]);
        assert_eq!(GpuSource::NvidiaSmi.sampling_order(), [Backend::NvidiaSmi]);
        assert!(GpuSource::None.sampling_order().is_empty());
        assert_eq!(GpuSource::default(), GpuSource::Auto);
    }

    #[test]
    fn fallbacks() {
        assert_eq!(
            GpuSource::Auto.fallback_of(Backend::Nvml),
            Some(Backend::NvidiaSmi)
        );
        assert_eq!(GpuSource::Auto.fallback_of(Backend::NvidiaSmi), None);
        assert_eq!(GpuSource::Nvml.fallback_of(Backend::Nvml), None);
        assert_eq!(GpuSource::None.fallback_of(Backend::Nvml), None);
    }

    #[test]
    fn config_spelling() {
        for (text, source) in [
            ("auto", GpuSource::Auto),
            ("nvml", GpuSource::Nvml),
            ("nvidia-smi", GpuSource::NvidiaSmi),
            ("none", GpuSource::None),
        ] {
            let quoted = format!("{text:?}");
            assert_eq!(serde_json::from_str::<GpuSource>(&quoted).unwrap(), source);
            assert_eq!(serde_json::to_string(&source).unwrap(), quoted);
        }
        assert!(serde_json::from_str::<GpuSource>("\"nvidia_smi\"").is_err());
    }
}
