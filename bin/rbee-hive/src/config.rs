//! Configuration: flags, `RBEE_HIVE_*` environment variables and the TOML config file,
//! merged as flag > environment > file > default (PROTOCOL §1).
//!
//! The keys are written once, in [`Config`]: the file is deserialised into it (a key it
//! leaves out keeps its default), then the flags given, each read by clap with its
//! environment variable, are put over it ([`ServeArgs`]). Unknown keys in the file are an
//! error, so a typo is never silently ignored.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use hive_cli::ServeArgs;
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
pub use hive_api::DEFAULT_HIVE_ID;

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

/// The merged configuration of one hive, and the config file's keys: every one is optional
/// there, and unknown ones are refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// TCP port.
    pub port: u16,
    /// Listen address.
    pub bind: IpAddr,
    /// Config file the settings came from, if any (not a key of the file).
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
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
    /// The orchestrator's URL: the hive registers with it, and workers get it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queen_url: Option<String>,
    /// The URL the queen and the workers reach this hive at (PROTOCOL §9); `None`: made
    /// from the listening address ([`Config::hive_urls`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_url: Option<String>,
    /// The worker catalog server (`GET /workers`, …) that `worker_catalog_list`/`get` and
    /// `worker_install` read; none by default (those operations then say so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_catalog_url: Option<String>,
    /// The worker type `model_load` starts; `None`: `llama` where its program is found and
    /// the device is a GPU, else the rbee worker type of the device's kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_worker: Option<String>,
    /// Where the token came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The API token, read from `token_file` (never printed, not a key of the file).
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
    /// Whether the telemetry stream (`/v1/heartbeats/stream`, and the queen's subscription
    /// paths) is served without the token: today's queen sends none.
    pub telemetry_public: bool,
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
            advertise_url: None,
            worker_catalog_url: None,
            load_worker: None,
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
            telemetry_public: false,
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

/// Puts the flags given (and the environment variables read in their place) over
/// `config`. Every flag is named, so a new one does not compile until it is applied.
fn apply_flags(args: ServeArgs, config: &mut Config) {
    let ServeArgs {
        port,
        bind,
        config: _,
        state_dir,
        catalog_dir,
        hive_id,
        queen_url,
        advertise_url,
        worker_catalog_url,
        load_worker,
        token_file,
        print_config: _,
    } = args;
    set(&mut config.port, port);
    set(&mut config.bind, bind);
    set(&mut config.state_dir, state_dir);
    set(&mut config.catalog_dir, catalog_dir);
    set(&mut config.hive_id, hive_id.map(Some));
    set(&mut config.queen_url, queen_url.map(Some));
    set(&mut config.advertise_url, advertise_url.map(Some));
    set(&mut config.worker_catalog_url, worker_catalog_url.map(Some));
    set(&mut config.token_file, token_file.map(Some));
    set(&mut config.load_worker, load_worker.map(Some));
}

/// `value`, when given, replaces what `slot` holds.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

impl Config {
    /// Merges flags (and their environment variables) over the config file over defaults.
    pub fn load(cli: ServeArgs) -> Result<Self, ConfigError> {
        // A hive started with no flags (as the upstream queen restarts one) still finds the
        // config, and with it the state dir, of the hive it replaces.
        let config_file = cli.config.clone().or_else(default_config_file);
        let mut config = match &config_file {
            Some(path) => read_file(path)?,
            None => Self::default(),
        };
        config.config_file = config_file;
        let hf_endpoint = std::env::var("HF_ENDPOINT").ok().filter(|v| !v.is_empty());
        set(&mut config.hf_endpoint, hf_endpoint);
        apply_flags(cli, &mut config);
        config.token = config.token_file.as_deref().map(read_token).transpose()?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(id) = &self.hive_id
            && (id.is_empty() || id.len() > 256 || id.chars().any(char::is_control))
        {
            let reason = "must be 1 to 256 characters without control characters";
            return Err(invalid("hive_id", reason));
        }
        if let Some(name) = &self.load_worker
            && (name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            let reason = "must be a worker type name: letters, digits, '-' and '_' (at most 64)";
            return Err(invalid("load_worker", reason));
        }
        if self.body_limit_bytes < 256 {
            return Err(invalid("body_limit_bytes", "must be at least 256"));
        }
        self.worker_port_range()?;
        self.hf_endpoint_url()?;
        if let Some(url) = &self.queen_url {
            http_url("queen_url", url)?;
        }
        if let Some(url) = &self.advertise_url {
            http_url("advertise_url", url)?;
        }
        self.worker_catalog_url()?;
        if self.download_stall_timeout_s == 0 {
            return Err(invalid("download_stall_timeout_s", "must be at least 1"));
        }
        if self.stop_grace_ms > 3_600_000 {
            return Err(invalid("stop_grace_ms", "must be at most one hour"));
        }
        let max_age = self.worker_logs_max_age_days;
        within("worker_logs_max_age_days", max_age, 0.0..=36_500.0)?;
        if let Err(error) = tracing_subscriber::EnvFilter::builder().parse(&self.log_level) {
            let reason = format!("{:?} is not a log filter: {error}", self.log_level);
            return Err(invalid("log_level", reason));
        }
        within("header_timeout_s", self.header_timeout_s, 1..=86_400)?;
        within("body_timeout_s", self.body_timeout_s, 1..=86_400)?;
        within("idle_timeout_s", self.idle_timeout_s, 1..=86_400)?;
        within("max_connections", self.max_connections, 1..=1_000_000)?;
        let events = self.telemetry_event_buffer;
        within("telemetry_event_buffer", events, 1..=1_000_000)?;
        let interval = self.telemetry_interval_ms;
        within("telemetry_interval_ms", interval, 50..=3_600_000)?;
        if self.job_event_buffer == 0 {
            return Err(invalid("job_event_buffer", "must be at least 1"));
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

    /// Where this hive is reached, served at `listening` (PROTOCOL §9): `advertise_url` when
    /// set; else `http://<address>:<port>`, with an all-addresses bind replaced by loopback
    /// for the workers (same machine) and by the hostname for the queen (another machine).
    pub fn hive_urls(&self, listening: std::net::SocketAddr) -> HiveUrls {
        if let Some(url) = &self.advertise_url {
            let url = url.trim_end_matches('/').to_owned();
            return HiveUrls {
                for_workers: url.clone(),
                for_queen: url,
            };
        }
        let port = listening.port();
        let at = |host: &str| format!("http://{host}:{port}");
        let address = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => at(&v4.to_string()),
            IpAddr::V6(v6) => at(&format!("[{v6}]")),
        };
        match listening.ip() {
            ip if ip.is_unspecified() => {
                let loopback = match ip {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                };
                HiveUrls {
                    for_workers: address(loopback),
                    for_queen: hostname().map_or_else(|| address(loopback), |name| at(&name)),
                }
            }
            ip => HiveUrls {
                for_workers: address(ip),
                for_queen: address(ip),
            },
        }
    }

    /// `hf_endpoint` as a URL (http or https).
    pub fn hf_endpoint_url(&self) -> Result<reqwest::Url, ConfigError> {
        let endpoint = &self.hf_endpoint;
        let url = reqwest::Url::parse(endpoint)
            .map_err(|e| invalid("hf_endpoint", format!("{endpoint:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            let reason = format!("{endpoint:?} must be an http(s) URL");
            return Err(invalid("hf_endpoint", reason));
        }
        Ok(url)
    }

    /// `worker_catalog_url` as a URL (http or https), when one is configured.
    pub fn worker_catalog_url(&self) -> Result<Option<reqwest::Url>, ConfigError> {
        let Some(text) = &self.worker_catalog_url else {
            return Ok(None);
        };
        let url = reqwest::Url::parse(text)
            .map_err(|e| invalid("worker_catalog_url", format!("{text:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            let reason = format!("{text:?} must be an http(s) URL");
            return Err(invalid("worker_catalog_url", reason));
        }
        Ok(Some(url))
    }

    /// The worker port range parsed from `worker_ports` (`"9100-9199"`).
    pub fn worker_port_range(&self) -> Result<RangeInclusive<u16>, ConfigError> {
        let ports = &self.worker_ports;
        let wrong = || {
            let reason = "must be \"first-last\" with 1 <= first <= last <= 65535";
            invalid("worker_ports", format!("{reason}, got {ports:?}"))
        };
        let (first, last) = ports.split_once('-').ok_or_else(wrong)?;
        let first: u16 = first.trim().parse().map_err(|_| wrong())?;
        let last: u16 = last.trim().parse().map_err(|_| wrong())?;
        if first == 0 || first > last {
            return Err(wrong());
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

/// Where this hive is reached ([`Config::hive_urls`]), without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HiveUrls {
    /// What the hive's own workers are given as `{hive_url}`.
    pub for_workers: String,
    /// What the hive registers with a queen as its `hive_url`.
    pub for_queen: String,
}

/// The machine's hostname, when it has one that fits in a URL.
pub(crate) fn hostname() -> Option<String> {
    let name = nix::unistd::gethostname().ok()?.into_string().ok()?;
    let fits = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    fits.then_some(name)
}

/// Refuses a value that is not an absolute `http(s)` URL with a host and no query.
pub(crate) fn http_url(key: &'static str, value: &str) -> Result<reqwest::Url, ConfigError> {
    let url = reqwest::Url::parse(value)
        .map_err(|e| invalid(key, format!("{value:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(
            key,
            format!("{value:?} must be an http(s) URL with a host"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            key,
            format!("{value:?} must have no query or fragment"),
        ));
    }
    Ok(url)
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

fn read_file(path: &Path) -> Result<Config, ConfigError> {
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

/// The error that `key` is invalid for `reason`.
fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    let reason = reason.into();
    ConfigError::Invalid { key, reason }
}

/// `Ok` when `value` is within `range` (a NaN is not), else "must be between … and …".
fn within<T>(key: &'static str, value: T, range: RangeInclusive<T>) -> Result<(), ConfigError>
where
    T: PartialOrd + Display,
{
    if range.contains(&value) {
        return Ok(());
    }
    let reason = format!("must be between {} and {}", range.start(), range.end());
    Err(invalid(key, reason))
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

    /// A file `name` holding `text`, in a directory of its own for each `test`.
    fn write(test: &str, name: &str, text: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("rbee-hive-config-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Loads `args` with a config file holding `text`.
    fn load_file(test: &str, text: &str, args: ServeArgs) -> Result<Config, ConfigError> {
        let config = Some(write(test, "hive.toml", text));
        Config::load(ServeArgs { config, ..args })
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
    fn workers_and_the_queen_reach_the_hive_at_the_address_it_serves() {
        let urls = |bind: &str, advertise: Option<&str>| {
            let config = Config {
                advertise_url: advertise.map(str::to_owned),
                ..Config::default()
            };
            config.hive_urls(bind.parse().unwrap())
        };
        let same = |url: &str| HiveUrls {
            for_workers: url.to_owned(),
            for_queen: url.to_owned(),
        };
        assert_eq!(urls("127.0.0.2:7000", None), same("http://127.0.0.2:7000"));
        assert_eq!(urls("[::1]:7000", None), same("http://[::1]:7000"));
        assert_eq!(
            urls("0.0.0.0:7000", Some("https://hive.example:8443/")),
            same("https://hive.example:8443")
        );
        let all_v4 = urls("0.0.0.0:7000", None);
        assert_eq!(all_v4.for_workers, "http://127.0.0.1:7000");
        let all_v6 = urls("[::]:7000", None);
        assert_eq!(all_v6.for_workers, "http://[::1]:7000");
        let host = hostname().unwrap();
        assert_eq!(all_v4.for_queen, format!("http://{host}:7000"));
        assert_eq!(all_v6.for_queen, format!("http://{host}:7000"));
    }

    #[test]
    fn queen_and_advertise_urls_must_be_http_urls() {
        for (queen, advertise) in [
            (Some("ftp://queen"), None),
            (Some("queen:7833"), None),
            (None, Some("http://hive:7835/?x=1")),
            (None, Some("http://")),
        ] {
            let args = ServeArgs {
                queen_url: queen.map(str::to_owned),
                advertise_url: advertise.map(str::to_owned),
                ..Default::default()
            };
            let error = Config::load(args).unwrap_err().to_string();
            let key = if queen.is_some() {
                "queen_url"
            } else {
                "advertise_url"
            };
            assert!(error.contains(key), "{queen:?} {advertise:?}: {error}");
        }
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let text = "port = 9000\nhive_id = \"from-file\"\nqueen_url = \"http://file\"\n\
                    job_retention_s = 5\n";
        let args = ServeArgs {
            port: Some(9001),
            queen_url: Some("http://flag".into()),
            ..Default::default()
        };
        let config = load_file("merge", text, args).unwrap();
        assert_eq!(config.port, 9001);
        assert_eq!(config.queen_url.as_deref(), Some("http://flag"));
        assert_eq!(config.hive_id.as_deref(), Some("from-file"));
        assert_eq!(config.job_retention_s, 5);
        assert_eq!(config.max_finished_jobs, 10_000);
        assert!(config.config_file.unwrap().ends_with("hive.toml"));
    }

    #[test]
    fn worker_catalog_url_from_file_or_flag_and_none_by_default() {
        let config = load_file("catalog-none", "", ServeArgs::default()).unwrap();
        assert_eq!(config.worker_catalog_url().unwrap(), None);
        let text = "worker_catalog_url = \"http://file:8787\"\n";
        let config = load_file("catalog-file", text, ServeArgs::default()).unwrap();
        let url = config.worker_catalog_url().unwrap().unwrap();
        assert_eq!(url.as_str(), "http://file:8787/");
        assert!(
            config
                .to_toml()
                .contains("worker_catalog_url = \"http://file:8787\"")
        );
        let args = ServeArgs {
            worker_catalog_url: Some("https://flag/catalog".into()),
            ..Default::default()
        };
        let config = load_file("catalog-flag", text, args).unwrap();
        assert_eq!(
            config.worker_catalog_url().unwrap().unwrap().as_str(),
            "https://flag/catalog"
        );
    }

    #[test]
    fn load_worker_from_file_or_flag_and_checked() {
        let config = load_file(
            "load-file",
            "load_worker = \"demo\"\n",
            ServeArgs::default(),
        );
        assert_eq!(config.unwrap().load_worker.as_deref(), Some("demo"));
        let args = ServeArgs {
            load_worker: Some("llama".into()),
            ..Default::default()
        };
        let config = load_file("load-flag", "load_worker = \"demo\"\n", args).unwrap();
        assert_eq!(config.load_worker.as_deref(), Some("llama"));
        let error = load_file("load-bad", "load_worker = \"../x\"\n", ServeArgs::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("invalid setting load_worker: "),
            "{error}"
        );
        assert_eq!(Config::default().load_worker, None);
    }

    #[test]
    fn worker_settings_from_file() {
        let text = "worker_ports = \"9500-9509\"\nstop_grace_ms = 250\non_shutdown = \"keep\"\n\
             [workers.slow]\ncommand = [\"rbee-demo-worker\", \"--port\", \"{port}\"]\nready_timeout_s = 3\n";
        let config = load_file("workers", text, ServeArgs::default()).unwrap();
        assert_eq!(config.worker_port_range().unwrap(), 9500..=9509);
        assert_eq!(config.stop_grace(), Duration::from_millis(250));
        assert_eq!(config.on_shutdown, ShutdownPolicy::Keep);
        assert_eq!(config.workers["slow"].ready_timeout_s, Some(3.0));
        assert!(config.to_toml().contains("[workers.slow]"));
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        // `config_file` and `token` are printed or kept, but are not keys of the file.
        for key in ["prot", "config_file", "token"] {
            let text = format!("{key} = \"x\"\n");
            let error = load_file("unknown", &text, ServeArgs::default()).unwrap_err();
            let expected = format!("unknown field `{key}`, expected one of `port`");
            assert!(error.to_string().contains(&expected), "{error}");
        }
    }

    #[test]
    fn invalid_values_are_named_with_the_reason() {
        for (text, reason) in [
            (
                "worker_ports = \"9600-9500\"",
                "must be \"first-last\" with 1 <= first",
            ),
            ("body_limit_bytes = 255", "must be at least 256"),
            (
                "worker_logs_max_age_days = nan",
                "must be between 0 and 36500",
            ),
            (
                "telemetry_interval_ms = 49",
                "must be between 50 and 3600000",
            ),
            ("job_event_buffer = 0", "must be at least 1"),
            (
                "worker_catalog_url = \"ftp://catalog\"",
                "\"ftp://catalog\" must be an http(s) URL",
            ),
            (
                "worker_catalog_url = \"localhost:8787\"",
                "\"localhost:8787\" must be an http(s) URL",
            ),
        ] {
            let error = load_file("invalid", text, ServeArgs::default()).unwrap_err();
            let key = text.split(' ').next().unwrap();
            let expected = format!("invalid setting {key}: {reason}");
            assert!(error.to_string().starts_with(&expected), "{error}");
        }
    }

    #[test]
    fn exposed_bind_needs_a_token() {
        let bind = Some("0.0.0.0".parse().unwrap());
        let config = Config::load(ServeArgs {
            bind,
            ..Default::default()
        })
        .unwrap();
        assert!(matches!(
            config.check_exposure(config.bind),
            Err(ConfigError::ExposedWithoutToken(_))
        ));
        let token_file = Some(write("token", "token", "s3cret\n"));
        let config = Config::load(ServeArgs {
            bind,
            token_file,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.token.as_deref(), Some("s3cret"));
        assert!(config.check_exposure(config.bind).is_ok());
        assert!(!config.to_toml().contains("s3cret"));
    }

    #[test]
    fn empty_token_file_is_refused() {
        let token_file = Some(write("empty-token", "token", "  \n"));
        let error = Config::load(ServeArgs {
            token_file,
            ..Default::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("empty"));
    }
}
