//! Configuration: flags, `RBEE_HIVE_*` environment variables and the TOML config file,
//! merged as flag > environment > file > default (PROTOCOL §1).
//!
//! Clap reads each flag and its environment variable; the file fills what both left unset;
//! the defaults fill the rest. Unknown keys in the file are an error, so a typo is never
//! silently ignored.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use worker_lifecycle::WorkerTypeConfig;

/// Default TCP port, as in rbee.
pub const DEFAULT_PORT: u16 = 7835;
/// The public Hugging Face hub.
pub const DEFAULT_HF_ENDPOINT: &str = "https://huggingface.co";
/// File descriptors kept out of the connection cap: worker logs and pidfds, the state file,
/// catalog files, the listener.
pub const FD_RESERVE: u64 = 256;
/// The hive id used in narration when none is configured.
pub const DEFAULT_HIVE_ID: &str = "localhost";

/// The daemon's flags (`rbee-hive [serve] …`); each also has an environment variable.
#[derive(Debug, Clone, clap::Args, Default)]
pub struct ServeArgs {
    /// TCP port to listen on (0 picks a free one) [default: 7835]
    #[arg(long, env = "RBEE_HIVE_PORT")]
    pub port: Option<u16>,
    /// Address to listen on [default: 127.0.0.1]
    #[arg(long, env = "RBEE_HIVE_BIND")]
    pub bind: Option<IpAddr>,
    /// Config file (TOML) [default: $XDG_CONFIG_HOME/rbee/hive.toml or
    /// ~/.config/rbee/hive.toml, when it exists]
    #[arg(long, env = "RBEE_HIVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for worker logs and the state file [default: $XDG_STATE_HOME/rbee-hive]
    #[arg(long, env = "RBEE_HIVE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Model and worker-binary catalog [default: $XDG_CACHE_HOME/rbee or ~/.cache/rbee]
    #[arg(long, env = "RBEE_HIVE_CATALOG_DIR")]
    pub catalog_dir: Option<PathBuf>,
    /// This hive's id (the global `--hive-id`, shared with the client commands): when set,
    /// a job naming another `hive_id` fails with the reason; when not, any is accepted.
    #[arg(skip)]
    pub hive_id: Option<String>,
    /// URL of the queen-rbee orchestrator, passed to workers as {queen_url}
    #[arg(long, env = "RBEE_HIVE_QUEEN_URL")]
    pub queen_url: Option<String>,
    /// The file holding the API token (the global `--token-file`, shared with the client
    /// commands): when set, every route but /health needs it.
    #[arg(skip)]
    pub token_file: Option<PathBuf>,
    /// Print the merged configuration as TOML and exit
    #[arg(long)]
    pub print_config: bool,
}

/// The config file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    port: Option<u16>,
    bind: Option<IpAddr>,
    state_dir: Option<PathBuf>,
    catalog_dir: Option<PathBuf>,
    hf_endpoint: Option<String>,
    download_stall_timeout_s: Option<u64>,
    hive_id: Option<String>,
    queen_url: Option<String>,
    token_file: Option<PathBuf>,
    body_limit_bytes: Option<usize>,
    job_retention_s: Option<u64>,
    max_finished_jobs: Option<usize>,
    job_event_buffer: Option<usize>,
    shutdown_drain_s: Option<u64>,
    nvidia_smi: Option<String>,
    gpu_source: Option<GpuSource>,
    nvml_library: Option<String>,
    worker_ports: Option<String>,
    llama_server: Option<PathBuf>,
    stop_grace_ms: Option<u64>,
    on_shutdown: Option<ShutdownPolicy>,
    worker_logs_keep: Option<usize>,
    worker_logs_max_age_days: Option<f64>,
    telemetry_interval_ms: Option<u64>,
    telemetry_event_buffer: Option<usize>,
    log_level: Option<String>,
    header_timeout_s: Option<u64>,
    body_timeout_s: Option<u64>,
    idle_timeout_s: Option<u64>,
    max_connections: Option<usize>,
    metrics_public: Option<bool>,
    #[serde(default)]
    workers: BTreeMap<String, WorkerTypeConfig>,
}

/// Where the GPU memory and use of each worker come from.
pub use devices::GpuSource;

/// What happens to running workers when the hive shuts down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownPolicy {
    /// Stop every worker as a delete would (the default).
    #[default]
    Stop,
    /// Leave them running.
    Keep,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid config file {path}: {message}")]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The token file could not be read or is empty.
    #[error("cannot use token file {path}: {reason}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A value is out of range.
    #[error("invalid setting {key}: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A non-loopback address without a token.
    #[error(
        "refusing to listen on {0} without an API token: anyone on the network could start and stop workers. \
         Set --token-file (or RBEE_HIVE_TOKEN_FILE / token_file), or bind 127.0.0.1"
    )]
    ExposedWithoutToken(IpAddr),
}

/// The merged configuration of one hive.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// TCP port.
    pub port: u16,
    /// Listen address.
    pub bind: IpAddr,
    /// Config file the settings came from, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_file: Option<PathBuf>,
    /// Worker logs and the state file live here.
    pub state_dir: PathBuf,
    /// The model and worker-binary catalogs live here (upstream's layout).
    pub catalog_dir: PathBuf,
    /// The Hugging Face endpoint that `owner/repo:file` downloads resolve against
    /// (`HF_ENDPOINT` overrides the file).
    pub hf_endpoint: String,
    /// A download that receives nothing for this long fails (it can be resumed).
    pub download_stall_timeout_s: u64,
    /// The hive id given explicitly; `None` accepts any `hive_id` in jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hive_id: Option<String>,
    /// The orchestrator's URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queen_url: Option<String>,
    /// Where the token came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The API token (never printed).
    #[serde(skip)]
    pub token: Option<String>,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// How long finished jobs are kept, in seconds.
    pub job_retention_s: u64,
    /// How many finished jobs are kept at most.
    pub max_finished_jobs: usize,
    /// How many narration lines one job keeps.
    pub job_event_buffer: usize,
    /// How long shutdown waits for open connections after ending every stream.
    pub shutdown_drain_s: u64,
    /// The `nvidia-smi` program used for GPU detection.
    pub nvidia_smi: String,
    /// Where GPU memory per worker comes from.
    pub gpu_source: GpuSource,
    /// The NVML library (the driver's `libnvidia-ml`), loaded at run time.
    pub nvml_library: String,
    /// Worker ports, `first-last`.
    pub worker_ports: String,
    /// The `llama-server` program of the built-in `llama` worker type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llama_server: Option<PathBuf>,
    /// Time between SIGTERM and SIGKILL when a delete does not say.
    pub stop_grace_ms: u64,
    /// What happens to workers at shutdown.
    pub on_shutdown: ShutdownPolicy,
    /// How many logs of removed workers are kept.
    pub worker_logs_keep: usize,
    /// How old the log of a removed worker may get before it is deleted, in days.
    pub worker_logs_max_age_days: f64,
    /// How often the workers' resource use is sampled, in milliseconds.
    pub telemetry_interval_ms: u64,
    /// How many worker events a telemetry reader may fall behind before it gets a gap.
    pub telemetry_event_buffer: usize,
    /// The daemon log's filter (`info`, `debug`, `rbee_hive=debug,info`, …); `RUST_LOG`
    /// wins when set.
    pub log_level: String,
    /// The longest wait for a request's head, in seconds.
    pub header_timeout_s: u64,
    /// The longest wait for the rest of a request's body, in seconds.
    pub body_timeout_s: u64,
    /// How long an idle keep-alive connection is kept between requests, in seconds.
    pub idle_timeout_s: u64,
    /// The most connections open at once (lowered to fit the file-descriptor limit).
    pub max_connections: usize,
    /// Whether `/metrics` is served without the token.
    pub metrics_public: bool,
    /// Configured worker types (`[workers.<name>]`), added to or replacing the built-in ones.
    pub workers: BTreeMap<String, WorkerTypeConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            port: DEFAULT_PORT,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            config_file: None,
            state_dir: default_state_dir(),
            catalog_dir: catalog::default_catalog_dir(),
            hf_endpoint: DEFAULT_HF_ENDPOINT.to_owned(),
            download_stall_timeout_s: 60,
            hive_id: None,
            queen_url: None,
            token_file: None,
            token: None,
            body_limit_bytes: 64 * 1024,
            job_retention_s: 600,
            max_finished_jobs: 10_000,
            job_event_buffer: 10_000,
            shutdown_drain_s: 10,
            nvidia_smi: "nvidia-smi".to_owned(),
            gpu_source: GpuSource::Auto,
            // The versioned name: the driver installs it; the bare `.so` link often comes
            // only with development packages.
            nvml_library: "libnvidia-ml.so.1".to_owned(),
            worker_ports: "9100-9199".to_owned(),
            llama_server: None,
            stop_grace_ms: 10_000,
            on_shutdown: ShutdownPolicy::Stop,
            worker_logs_keep: 100,
            worker_logs_max_age_days: 7.0,
            telemetry_interval_ms: 1000,
            telemetry_event_buffer: 4096,
            log_level: "info".to_owned(),
            header_timeout_s: 10,
            body_timeout_s: 30,
            idle_timeout_s: 75,
            max_connections: 2048,
            metrics_public: false,
            workers: BTreeMap::new(),
        }
    }
}

fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("rbee-hive");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/state/rbee-hive");
    }
    std::env::temp_dir().join("rbee-hive")
}

impl Config {
    /// Merges flags (and their environment variables) over the config file over defaults.
    pub fn load(mut cli: ServeArgs) -> Result<Self, ConfigError> {
        // A hive started with no flags (as the upstream queen restarts one) still finds the
        // config, and with it the state dir, of the hive it replaces.
        cli.config = cli.config.or_else(default_config_file);
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let defaults = Self::default();
        let token_file = cli.token_file.or(file.token_file);
        let token = token_file.as_deref().map(read_token).transpose()?;
        let config = Self {
            port: cli.port.or(file.port).unwrap_or(defaults.port),
            bind: cli.bind.or(file.bind).unwrap_or(defaults.bind),
            config_file: cli.config,
            state_dir: cli
                .state_dir
                .or(file.state_dir)
                .unwrap_or(defaults.state_dir),
            catalog_dir: cli
                .catalog_dir
                .or(file.catalog_dir)
                .unwrap_or(defaults.catalog_dir),
            hf_endpoint: std::env::var("HF_ENDPOINT")
                .ok()
                .filter(|v| !v.is_empty())
                .or(file.hf_endpoint)
                .unwrap_or(defaults.hf_endpoint),
            download_stall_timeout_s: file
                .download_stall_timeout_s
                .unwrap_or(defaults.download_stall_timeout_s),
            hive_id: cli.hive_id.or(file.hive_id),
            queen_url: cli.queen_url.or(file.queen_url),
            token_file,
            token,
            body_limit_bytes: file.body_limit_bytes.unwrap_or(defaults.body_limit_bytes),
            job_retention_s: file.job_retention_s.unwrap_or(defaults.job_retention_s),
            max_finished_jobs: file.max_finished_jobs.unwrap_or(defaults.max_finished_jobs),
            job_event_buffer: file.job_event_buffer.unwrap_or(defaults.job_event_buffer),
            shutdown_drain_s: file.shutdown_drain_s.unwrap_or(defaults.shutdown_drain_s),
            nvidia_smi: file.nvidia_smi.unwrap_or(defaults.nvidia_smi),
            gpu_source: file.gpu_source.unwrap_or(defaults.gpu_source),
            nvml_library: file.nvml_library.unwrap_or(defaults.nvml_library),
            worker_ports: file.worker_ports.unwrap_or(defaults.worker_ports),
            llama_server: file.llama_server,
            stop_grace_ms: file.stop_grace_ms.unwrap_or(defaults.stop_grace_ms),
            on_shutdown: file.on_shutdown.unwrap_or(defaults.on_shutdown),
            worker_logs_keep: file.worker_logs_keep.unwrap_or(defaults.worker_logs_keep),
            worker_logs_max_age_days: file
                .worker_logs_max_age_days
                .unwrap_or(defaults.worker_logs_max_age_days),
            telemetry_interval_ms: file
                .telemetry_interval_ms
                .unwrap_or(defaults.telemetry_interval_ms),
            telemetry_event_buffer: file
                .telemetry_event_buffer
                .unwrap_or(defaults.telemetry_event_buffer),
            log_level: file.log_level.unwrap_or(defaults.log_level),
            header_timeout_s: file.header_timeout_s.unwrap_or(defaults.header_timeout_s),
            body_timeout_s: file.body_timeout_s.unwrap_or(defaults.body_timeout_s),
            idle_timeout_s: file.idle_timeout_s.unwrap_or(defaults.idle_timeout_s),
            max_connections: file.max_connections.unwrap_or(defaults.max_connections),
            metrics_public: file.metrics_public.unwrap_or(defaults.metrics_public),
            workers: file.workers,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(id) = &self.hive_id
            && (id.is_empty() || id.len() > 256 || id.chars().any(char::is_control))
        {
            return Err(ConfigError::Invalid {
                key: "hive_id",
                reason: "must be 1 to 256 characters without control characters".into(),
            });
        }
        if self.body_limit_bytes < 256 {
            return Err(ConfigError::Invalid {
                key: "body_limit_bytes",
                reason: "must be at least 256".into(),
            });
        }
        self.worker_port_range()?;
        self.hf_endpoint_url()?;
        if self.download_stall_timeout_s == 0 {
            return Err(ConfigError::Invalid {
                key: "download_stall_timeout_s",
                reason: "must be at least 1".into(),
            });
        }
        if self.stop_grace_ms > 3_600_000 {
            return Err(ConfigError::Invalid {
                key: "stop_grace_ms",
                reason: "must be at most one hour".into(),
            });
        }
        if !(self.worker_logs_max_age_days >= 0.0 && self.worker_logs_max_age_days <= 36_500.0) {
            return Err(ConfigError::Invalid {
                key: "worker_logs_max_age_days",
                reason: "must be between 0 and 36500".into(),
            });
        }
        if let Err(error) = tracing_subscriber::EnvFilter::builder().parse(&self.log_level) {
            return Err(ConfigError::Invalid {
                key: "log_level",
                reason: format!("{:?} is not a log filter: {error}", self.log_level),
            });
        }
        for (key, value) in [
            ("header_timeout_s", self.header_timeout_s),
            ("body_timeout_s", self.body_timeout_s),
            ("idle_timeout_s", self.idle_timeout_s),
        ] {
            if !(1..=86_400).contains(&value) {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be between 1 and 86400".into(),
                });
            }
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(ConfigError::Invalid {
                key: "max_connections",
                reason: "must be between 1 and 1000000".into(),
            });
        }
        if !(1..=1_000_000).contains(&self.telemetry_event_buffer) {
            return Err(ConfigError::Invalid {
                key: "telemetry_event_buffer",
                reason: "must be between 1 and 1000000".into(),
            });
        }
        if !(50..=3_600_000).contains(&self.telemetry_interval_ms) {
            return Err(ConfigError::Invalid {
                key: "telemetry_interval_ms",
                reason: "must be between 50 and 3600000".into(),
            });
        }
        if self.job_event_buffer == 0 {
            return Err(ConfigError::Invalid {
                key: "job_event_buffer",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// Refuses a non-loopback listen address when no token is configured.
    /// `listening` is the address actually served (the inherited socket's, under socket
    /// activation; else `bind`).
    pub fn check_exposure(&self, listening: std::net::IpAddr) -> Result<(), ConfigError> {
        if !listening.is_loopback() && self.token.is_none() {
            return Err(ConfigError::ExposedWithoutToken(listening));
        }
        Ok(())
    }

    /// The hive id used in narration: the configured one, or `localhost`.
    pub fn effective_hive_id(&self) -> &str {
        self.hive_id.as_deref().unwrap_or(DEFAULT_HIVE_ID)
    }

    /// `hf_endpoint` as a URL (http or https).
    pub fn hf_endpoint_url(&self) -> Result<reqwest::Url, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            key: "hf_endpoint",
            reason,
        };
        let url = reqwest::Url::parse(&self.hf_endpoint)
            .map_err(|e| invalid(format!("{:?} is not a URL: {e}", self.hf_endpoint)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "{:?} must be an http(s) URL",
                self.hf_endpoint
            )));
        }
        Ok(url)
    }

    /// The worker port range parsed from `worker_ports` (`"9100-9199"`).
    pub fn worker_port_range(&self) -> Result<RangeInclusive<u16>, ConfigError> {
        let invalid = || ConfigError::Invalid {
            key: "worker_ports",
            reason: format!(
                "must be \"first-last\" with 1 <= first <= last <= 65535, got {:?}",
                self.worker_ports
            ),
        };
        let (first, last) = self.worker_ports.split_once('-').ok_or_else(invalid)?;
        let first: u16 = first.trim().parse().map_err(|_| invalid())?;
        let last: u16 = last.trim().parse().map_err(|_| invalid())?;
        if first == 0 || first > last {
            return Err(invalid());
        }
        Ok(first..=last)
    }

    /// The longest wait for the rest of a request's body.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_s)
    }

    /// The connection loop's bounds; `fd_limit` is the soft file-descriptor limit, of which
    /// [`FD_RESERVE`] are kept for workers, logs and the state file.
    pub fn connection_limits(&self, fd_limit: u64) -> crate::http::server::ConnectionLimits {
        let fits = usize::try_from(fd_limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
        crate::http::server::ConnectionLimits {
            header_timeout: Duration::from_secs(self.header_timeout_s),
            body_timeout: self.body_timeout(),
            idle_timeout: Duration::from_secs(self.idle_timeout_s),
            max_connections: self.max_connections.min(fits).max(1),
        }
    }

    /// The default stop grace.
    pub fn stop_grace(&self) -> Duration {
        Duration::from_millis(self.stop_grace_ms)
    }

    /// How many logs of removed workers are kept, and how long.
    pub fn worker_log_retention(&self) -> worker_lifecycle::LogRetention {
        worker_lifecycle::LogRetention {
            keep: self.worker_logs_keep,
            max_age: Duration::from_secs_f64(self.worker_logs_max_age_days * 86_400.0),
        }
    }

    /// How long finished jobs are kept.
    pub fn job_retention(&self) -> Duration {
        Duration::from_secs(self.job_retention_s)
    }

    /// The merged configuration as TOML, token left out.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

/// `$XDG_CONFIG_HOME/rbee/hive.toml`, else `~/.config/rbee/hive.toml`, when it exists.
pub fn default_config_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        })?;
    let path = base.join("rbee").join("hive.toml");
    path.is_file().then_some(path)
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn read_token(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::TokenFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ConfigError::TokenFile {
            path: path.to_owned(),
            reason: "the file is empty".into(),
        });
    }
    Ok(token.to_owned())
}

/// The configuration in effect: read by every request, replaced whole by a reload (SIGHUP).
/// A cheap `Clone` handle; its lock is held only to copy the `Arc` in or out.
#[derive(Debug, Clone)]
pub struct LiveConfig(Arc<std::sync::RwLock<Arc<Config>>>);

impl LiveConfig {
    /// The configuration `config`.
    pub fn new(config: Config) -> Self {
        Self(Arc::new(std::sync::RwLock::new(Arc::new(config))))
    }

    /// The configuration now.
    pub fn current(&self) -> Arc<Config> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `config` in effect.
    pub fn replace(&self, config: Config) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("rbee-hive-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn defaults_work_with_nothing_configured() {
        let config = Config::load(ServeArgs::default()).unwrap();
        assert_eq!(config.port, 7835);
        assert_eq!(config.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(config.effective_hive_id(), "localhost");
        assert!(config.check_exposure(config.bind).is_ok());
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = temp_dir("merge");
        let file = write(
            &dir,
            "hive.toml",
            "port = 9000\nhive_id = \"from-file\"\njob_retention_s = 5\n",
        );
        let config = Config::load(ServeArgs {
            config: Some(file),
            port: Some(9001),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.port, 9001);
        assert_eq!(config.hive_id.as_deref(), Some("from-file"));
        assert_eq!(config.job_retention_s, 5);
        assert_eq!(config.max_finished_jobs, 10_000);
    }

    #[test]
    fn worker_settings_from_file() {
        let dir = temp_dir("workers");
        let file = write(
            &dir,
            "hive.toml",
            "worker_ports = \"9500-9509\"\nstop_grace_ms = 250\non_shutdown = \"keep\"\n\
             [workers.slow]\ncommand = [\"rbee-demo-worker\", \"--port\", \"{port}\"]\nready_timeout_s = 3\n",
        );
        let config = Config::load(ServeArgs {
            config: Some(file),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.worker_port_range().unwrap(), 9500..=9509);
        assert_eq!(config.stop_grace(), Duration::from_millis(250));
        assert_eq!(config.on_shutdown, ShutdownPolicy::Keep);
        assert_eq!(config.workers["slow"].ready_timeout_s, Some(3.0));
        assert!(config.to_toml().contains("[workers.slow]"));
        let bad = write(&dir, "bad.toml", "worker_ports = \"9600-9500\"\n");
        let error = Config::load(ServeArgs {
            config: Some(bad),
            ..Default::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("worker_ports"), "{error}");
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = temp_dir("unknown");
        let file = write(&dir, "hive.toml", "prot = 9000\n");
        let error = Config::load(ServeArgs {
            config: Some(file),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            error.to_string().contains("unknown field `prot`"),
            "{error}"
        );
    }

    #[test]
    fn exposed_bind_needs_a_token() {
        let config = Config::load(ServeArgs {
            bind: Some("0.0.0.0".parse().unwrap()),
            ..Default::default()
        })
        .unwrap();
        assert!(matches!(
            config.check_exposure(config.bind),
            Err(ConfigError::ExposedWithoutToken(_))
        ));
        let dir = temp_dir("token");
        let token = write(&dir, "token", "s3cret\n");
        let config = Config::load(ServeArgs {
            bind: Some("0.0.0.0".parse().unwrap()),
            token_file: Some(token),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.token.as_deref(), Some("s3cret"));
        assert!(config.check_exposure(config.bind).is_ok());
        assert!(!config.to_toml().contains("s3cret"));
    }

    #[test]
    fn empty_token_file_is_refused() {
        let dir = temp_dir("empty-token");
        let token = write(&dir, "token", "  \n");
        let error = Config::load(ServeArgs {
            token_file: Some(token),
            ..Default::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("empty"));
    }
}
