//! A reload (SIGHUP, or `systemctl reload`): the config is read again from the same flags,
//! environment and file, and what may change while the hive serves is put in effect: the
//! token, the worker types, the port range of new workers, the default stop grace, the body
//! limit, `metrics_public`, `telemetry_public`, the shutdown policy and drain, the log filter. Running workers
//! are untouched: each keeps the command, port and type it was started with. A file that
//! does not load, or a config that does not check, changes nothing. A key that needs a
//! restart (the listen address, the state dir, …) keeps its value, and the log says so.

use std::net::IpAddr;

use worker_lifecycle::{LifecycleError, Reconfigure};

use crate::AppState;
use crate::config::{Config, ConfigError};

/// Puts a new log filter in effect (the daemon's tracing subscriber).
pub type LogFilterSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file or the merged config is not valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The worker types are not valid.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Keys whose new value is in effect.
    pub applied: Vec<String>,
    /// Keys whose new value waits for a restart.
    pub needs_restart: Vec<String>,
}

/// Reloads a serving hive's configuration.
pub struct Reloader {
    state: AppState,
    listening: IpAddr,
    log_filter: Option<LogFilterSetter>,
}

impl Reloader {
    pub(crate) fn new(state: AppState, listening: IpAddr) -> Self {
        Self {
            state,
            listening,
            log_filter: None,
        }
    }

    /// Also puts `log_level` in effect through `setter`.
    pub fn with_log_filter(mut self, setter: LogFilterSetter) -> Self {
        self.log_filter = Some(setter);
        self
    }

    /// Cancelled when the hive's shutdown begins: reloads end then.
    pub fn closing(&self) -> tokio_util::sync::CancellationToken {
        self.state.closing.clone()
    }

    /// The workers of the hive (for the status said after a reload).
    pub fn workers(&self) -> &worker_lifecycle::WorkerManager {
        &self.state.services.workers
    }

    /// Applies `loaded` (the config as read again) and counts the reload in `/metrics`.
    pub fn reload(&self, loaded: Result<Config, ConfigError>) -> Result<ReloadReport, ReloadError> {
        let result = self.apply(loaded);
        self.state
            .metrics
            .reload(if result.is_ok() { "applied" } else { "refused" });
        result
    }

    fn apply(&self, loaded: Result<Config, ConfigError>) -> Result<ReloadReport, ReloadError> {
        let new = loaded?;
        let old = self.state.config.current();
        let effective = Config {
            token: new.token.clone(),
            token_file: new.token_file.clone(),
            body_limit_bytes: new.body_limit_bytes,
            metrics_public: new.metrics_public,
            telemetry_public: new.telemetry_public,
            workers: new.workers.clone(),
            // Read by each model_load when it starts.
            load_worker: new.load_worker.clone(),
            worker_ports: new.worker_ports.clone(),
            stop_grace_ms: new.stop_grace_ms,
            on_shutdown: new.on_shutdown,
            shutdown_drain_s: new.shutdown_drain_s,
            log_level: new.log_level.clone(),
            ..(*old).clone()
        };
        // A reload must not open the hive: no token on a non-loopback socket is refused, as
        // at start-up.
        effective.check_exposure(self.listening)?;
        // What `effective` takes from `new` is applied; what differs between them waits.
        let report = ReloadReport {
            applied: changed_keys(&old, &effective),
            needs_restart: changed_keys(&effective, &new),
        };
        self.state.services.workers.reconfigure(Reconfigure {
            worker_types: effective.workers.clone(),
            ports: effective.worker_port_range()?,
            stop_grace: effective.stop_grace(),
        })?;
        if old.log_level != effective.log_level
            && let Some(setter) = &self.log_filter
            && let Err(error) = setter(&effective.log_level)
        {
            tracing::warn!("log_level {:?} not applied: {error}", effective.log_level);
        }
        self.state.config.replace(effective);
        Ok(report)
    }
}

/// The keys of the config whose value differs between `a` and `b`.
fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let as_map = |config: &Config| match serde_json::to_value(config) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (a_keys, b_keys) = (as_map(a), as_map(b));
    let mut keys: Vec<String> = a_keys.keys().chain(b_keys.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    keys.retain(|key| a_keys.get(key) != b_keys.get(key));
    // The token is never serialised; it changes with its file's content.
    if a.token != b.token {
        keys.push("token".to_owned());
    }
    keys
}
