//! What goes wrong when the driver is asked: [`NvidiaSmiError`] for the program,
//! [`NvmlError`] for the library. Neither leaves the crate: a failure means no GPU or no GPU
//! sample, and the caller logs it (each message names the program or library, and what to
//! expect next is added where it is logged).

use std::time::Duration;

/// Why a run of `nvidia-smi` gave no output to parse.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NvidiaSmiError {
    /// It could not be started (most often: not installed).
    #[error("{program} not usable ({source})")]
    NotUsable {
        program: String,
        source: std::io::Error,
    },
    /// It exited unsuccessfully.
    #[error("{program} exited with {status}")]
    Failed {
        program: String,
        status: std::process::ExitStatus,
    },
    /// It did not answer in time (it was killed).
    #[error("{program} did not answer within {timeout:?}")]
    Timeout { program: String, timeout: Duration },
}

/// Why NVML gave no library handle or no sample.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NvmlError {
    /// The library did not load or initialise (no driver, wrong path).
    #[error("NVML not usable ({library}: {source})")]
    Load {
        library: String,
        source: nvml_wrapper::error::NvmlError,
    },
    /// Loading it did not finish in time.
    #[error("loading NVML took over {0:?}")]
    LoadTimeout(Duration),
    /// Loading it panicked.
    #[error("loading NVML failed: {0}")]
    LoadPanicked(tokio::task::JoinError),
    /// The previous query is still in the driver; no second one joins it.
    #[error("an NVML query is still running")]
    Busy,
    /// A query did not finish in time (it goes on in the blocking pool).
    #[error("an NVML query took over {0:?}")]
    QueryTimeout(Duration),
    /// A query failed.
    #[error("an NVML query failed ({0})")]
    Query(nvml_wrapper::error::NvmlError),
    /// A query panicked.
    #[error("an NVML query panicked: {0}")]
    QueryPanicked(tokio::task::JoinError),
}
