//! The operations a client can submit (PROTOCOL §3), their names, limits and errors; the
//! parser is `parse`.
//!
//! Operation names have one source: the variants of [`Operation`]. [`OperationKind`] is
//! derived from them (strum), with the same snake_case rule that serde uses on the wire;
//! the parser, [`Operation::name`] and the list given to clients all come from it, and the
//! parser matches every kind exhaustively.

use serde::Serialize;

use strum::VariantArray;

/// One operation, with its validated fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, strum::EnumDiscriminants)]
#[serde(tag = "operation", rename_all = "snake_case")]
#[strum_discriminants(
    name(OperationKind),
    doc = "The name of an operation, without its fields.",
    derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray),
    strum(serialize_all = "snake_case")
)]
pub enum Operation {
    /// Start a worker process and wait until it is ready.
    WorkerSpawn {
        /// The hive the client addresses.
        hive_id: String,
        /// The model the worker serves.
        model: String,
        /// The worker type (`cpu`, `cuda`, `metal`, `demo`, or a configured one).
        worker: String,
        /// The device ordinal.
        device: u32,
    },
    /// List the registered workers.
    WorkerList {
        /// The hive the client addresses.
        hive_id: String,
    },
    /// Show one worker.
    WorkerGet {
        /// The hive the client addresses.
        hive_id: String,
        /// The worker id.
        id: String,
    },
    /// Stop a worker's whole process tree and remove it.
    WorkerDelete {
        /// The hive the client addresses.
        hive_id: String,
        /// The worker id.
        id: String,
        /// How long to wait after SIGTERM before SIGKILL, overriding the configured grace.
        #[serde(skip_serializing_if = "Option::is_none")]
        grace_ms: Option<u64>,
    },
    /// List the processes of this hive's workers (the upstream queen's name for a list).
    WorkerProcessList {
        /// The hive the client addresses.
        hive_id: String,
    },
    /// Show one worker process, found by pid.
    WorkerProcessGet {
        /// The hive the client addresses.
        hive_id: String,
        /// The process id (only this hive's workers are shown).
        pid: u64,
    },
    /// Stop one worker process, found by pid, as `worker_delete` does.
    WorkerProcessDelete {
        /// The hive the client addresses.
        hive_id: String,
        /// The process id (only this hive's workers are stopped).
        pid: u64,
    },
    /// List the worker binaries of the catalog.
    WorkerBinaryList {
        /// The hive the client addresses.
        hive_id: String,
    },
    /// Show one worker-binary catalog entry.
    WorkerBinaryGet {
        /// The hive the client addresses.
        hive_id: String,
        /// The entry id (upstream calls it `worker_type`).
        worker_type: String,
    },
    /// Remove one worker-binary catalog entry.
    WorkerBinaryDelete {
        /// The hive the client addresses.
        hive_id: String,
        /// The entry id (upstream calls it `worker_type`).
        worker_type: String,
    },
    /// List the models of the catalog.
    ModelList {
        /// The hive the client addresses.
        hive_id: String,
    },
    /// Show one model of the catalog.
    ModelGet {
        /// The hive the client addresses.
        hive_id: String,
        /// The catalog id.
        id: String,
    },
    /// Remove a model from the catalog (refused while a worker uses it, unless `force`).
    ModelDelete {
        /// The hive the client addresses.
        hive_id: String,
        /// The catalog id.
        id: String,
        /// Delete even when workers use it.
        force: bool,
    },
    /// Download a model into the catalog.
    ModelDownload {
        /// The hive the client addresses.
        hive_id: String,
        /// An `http(s)://` URL or a Hugging Face reference `owner/repo:file.gguf`.
        model: String,
        /// The catalog id (default: from the file name).
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The expected sha256 of the file.
        #[serde(skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    /// List the workers the worker catalog server offers (today's keeper).
    WorkerCatalogList {
        /// The hive the client addresses.
        hive_id: String,
    },
    /// Show one worker of the worker catalog server.
    WorkerCatalogGet {
        /// The hive the client addresses.
        hive_id: String,
        /// The catalog server's worker id.
        worker_id: String,
    },
    /// Install a prebuilt, checksum-verified worker from the worker catalog server into
    /// the worker catalog.
    WorkerInstall {
        /// The hive the client addresses.
        hive_id: String,
        /// The catalog server's worker id (also the installed entry's id).
        worker_id: String,
    },
    /// Today's rbee name for `worker_binary_list` (PROTOCOL §9); a kind of its own so that
    /// jobs and metrics carry the name the client sent.
    WorkerListInstalled {
        /// The hive the client addresses.
        hive_id: String,
    },
    /// Today's rbee name for `worker_binary_get`.
    WorkerInstalledGet {
        /// The hive the client addresses.
        hive_id: String,
        /// The worker-binary catalog entry id.
        worker_id: String,
    },
    /// Today's rbee name for `worker_binary_delete`.
    WorkerRemove {
        /// The hive the client addresses.
        hive_id: String,
        /// The worker-binary catalog entry id.
        worker_id: String,
    },
    /// Start a worker for a catalog model on a device (the worker type is the hive's
    /// `load_worker`), and wait until it is ready.
    ModelLoad {
        /// The hive the client addresses.
        hive_id: String,
        /// The catalog model id.
        id: String,
        /// The device, as today's keeper names it.
        device: LoadDevice,
    },
    /// Stop every worker serving a model.
    ModelUnload {
        /// The hive the client addresses.
        hive_id: String,
        /// The model id (a catalog id, or the model as a worker was given it).
        id: String,
    },
    /// The hive's narration self-test. Upstream sends no `hive_id`, only the alias the
    /// keeper knows the hive by, so no hive id is checked.
    HiveCheck {
        /// The hive's alias (default `localhost`), named in the narration.
        alias: String,
    },
}

/// A device as `model_load` names it: `"cpu"`, `"cuda:N"`, `"metal:N"`, `"GPU-N"`,
/// `"CPU-0"` (also `"cpu:N"`, `"METAL-N"`, and a bare kind for ordinal 0; the kind is
/// matched without regard to case). Serialised as the hive's device name (`GPU-1`), which
/// parses back to the same device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoadDevice {
    /// A CPU (`CPU-<n>`).
    Cpu(u32),
    /// An NVIDIA GPU by CUDA ordinal (`GPU-<n>`).
    Cuda(u32),
    /// An Apple GPU (`METAL-<n>`).
    Metal(u32),
}

impl LoadDevice {
    /// The device's ordinal.
    pub fn ordinal(self) -> u32 {
        match self {
            Self::Cpu(n) | Self::Cuda(n) | Self::Metal(n) => n,
        }
    }

    /// The kind's lowercase name as a worker type of rbee calls it (`cpu`, `cuda`, `metal`).
    pub fn kind_name(self) -> &'static str {
        match self {
            Self::Cpu(_) => "cpu",
            Self::Cuda(_) => "cuda",
            Self::Metal(_) => "metal",
        }
    }
}

impl std::fmt::Display for LoadDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu(n) => write!(f, "CPU-{n}"),
            Self::Cuda(n) => write!(f, "GPU-{n}"),
            Self::Metal(n) => write!(f, "METAL-{n}"),
        }
    }
}

impl std::str::FromStr for LoadDevice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let refuse = || {
            format!(
                "must be a device such as \"cpu\", \"cuda:0\", \"metal:0\", \"GPU-0\" or \"CPU-0\", got {:?}",
                text.chars().take(64).collect::<String>()
            )
        };
        let (kind, ordinal) = match text.split_once([':', '-']) {
            Some((kind, ordinal)) => (kind, Some(ordinal)),
            None => (text, None),
        };
        let ordinal = match ordinal {
            None => 0,
            // Digits only: `u32::from_str` would also take a leading `+`.
            Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                digits.parse().map_err(|_| refuse())?
            }
            Some(_) => return Err(refuse()),
        };
        match kind.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu(ordinal)),
            "cuda" | "gpu" => Ok(Self::Cuda(ordinal)),
            "metal" => Ok(Self::Metal(ordinal)),
            _ => Err(refuse()),
        }
    }
}

impl Serialize for LoadDevice {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl OperationKind {
    /// The snake_case name on the wire.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// The operation names this hive accepts, in the order they are listed to clients.
pub fn supported_operations() -> String {
    OperationKind::VARIANTS
        .iter()
        .map(|kind| kind.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Operations of the rbee upstream that this hive does not run (PROTOCOL §8). A request for
/// one parses (it is well-formed) and becomes a job that fails with the reason, because the
/// upstream job client shows only what arrives in a stream. Names starting with `hive_` or
/// `queen_` are upstream operations too.
pub const UPSTREAM_ONLY_OPERATIONS: &[&str] = &[
    "worker_download",
    "worker_build",
    "worker_uninstall",
    "infer",
    "status",
];

/// Whether `name` is an operation of the rbee upstream that this hive does not run. A name
/// this hive runs (`hive_check`) is never one, whatever its prefix.
pub fn is_upstream_only(name: &str) -> bool {
    if name.parse::<OperationKind>().is_ok() {
        return false;
    }
    UPSTREAM_ONLY_OPERATIONS.contains(&name)
        || ["hive_", "queen_"]
            .iter()
            .any(|prefix| name.strip_prefix(prefix).is_some_and(is_snake_case))
}

fn is_snake_case(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The longest string accepted in any field.
pub const MAX_FIELD_LEN: usize = 4096;

/// The longest grace a delete may ask for (one hour).
pub const MAX_GRACE_MS: u64 = 3_600_000;

/// Why a request body is not a valid operation. Each message names what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OperationError {
    /// Not JSON at all.
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The same key twice (JSON parsers disagree on which one wins, so neither does).
    #[error("duplicate key `{0}` in the request body; each field may appear once")]
    DuplicateKey(String),
    /// JSON, but not an object.
    #[error("the request body must be a JSON object with an \"operation\" field, got {0}")]
    NotAnObject(&'static str),
    /// No `operation` key.
    #[error(
        "missing field `operation`; supported operations: {}",
        supported_operations()
    )]
    MissingOperation,
    /// An rbee operation that this hive does not perform.
    #[error(
        "operation '{name}' is not run by this rbee-hive; supported operations: {}",
        supported_operations()
    )]
    UnsupportedOperation {
        /// The name as sent.
        name: String,
    },
    /// `operation` names nothing this hive does.
    #[error(
        "unknown operation '{name}'; supported operations: {}",
        supported_operations()
    )]
    UnknownOperation {
        /// The name as sent (shortened if long).
        name: String,
    },
    /// A required field is absent.
    #[error("missing field `{field}` ({expected}) for operation {operation}")]
    MissingField {
        /// The operation.
        operation: &'static str,
        /// The field.
        field: &'static str,
        /// What it should hold.
        expected: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}, got {got}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it should hold.
        expected: &'static str,
        /// What it holds.
        got: String,
    },
    /// A field has the right type but an unusable value.
    #[error("field `{field}` {reason}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl OperationError {
    /// The snake_case error code of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::DuplicateKey(_) => "duplicate_key",
            Self::NotAnObject(_) => "invalid_request",
            Self::MissingOperation | Self::MissingField { .. } => "missing_field",
            Self::UnknownOperation { .. } => "unknown_operation",
            Self::UnsupportedOperation { .. } => "unsupported_operation",
            Self::WrongType { .. } | Self::InvalidValue { .. } => "invalid_field",
        }
    }
}

impl Operation {
    /// What kind of operation it is.
    pub fn kind(&self) -> OperationKind {
        self.into()
    }

    /// The snake_case operation name.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The hive the client addressed; `None` for an operation that names none
    /// (`hive_check` names only an alias).
    pub fn hive_id(&self) -> Option<&str> {
        let hive_id = match self {
            Self::WorkerSpawn { hive_id, .. }
            | Self::WorkerList { hive_id }
            | Self::WorkerGet { hive_id, .. }
            | Self::WorkerDelete { hive_id, .. }
            | Self::WorkerProcessList { hive_id }
            | Self::WorkerProcessGet { hive_id, .. }
            | Self::WorkerProcessDelete { hive_id, .. }
            | Self::WorkerBinaryList { hive_id }
            | Self::WorkerBinaryGet { hive_id, .. }
            | Self::WorkerBinaryDelete { hive_id, .. }
            | Self::ModelList { hive_id }
            | Self::ModelGet { hive_id, .. }
            | Self::ModelDelete { hive_id, .. }
            | Self::ModelDownload { hive_id, .. }
            | Self::WorkerCatalogList { hive_id }
            | Self::WorkerCatalogGet { hive_id, .. }
            | Self::WorkerInstall { hive_id, .. }
            | Self::WorkerListInstalled { hive_id }
            | Self::WorkerInstalledGet { hive_id, .. }
            | Self::WorkerRemove { hive_id, .. }
            | Self::ModelLoad { hive_id, .. }
            | Self::ModelUnload { hive_id, .. } => hive_id,
            Self::HiveCheck { .. } => return None,
        };
        Some(hive_id)
    }
}
