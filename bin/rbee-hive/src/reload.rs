//! A reload (SIGHUP, or `systemctl reload`): the config is read again from the same flags,
//! environment and file, and what may change while the hive serves is put in effect: the
//! token, the worker types, the port range of new workers, the default stop grace, the body
//! limit, `metrics_public`, the shutdown policy and drain, the log filter. Running workers
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

/// The keys a reload applies (`token` stands for the token file's content).
const RELOADABLE: &[&str] = &[
    "token",
    "token_file",
    "body_limit_bytes",
    "metrics_public",
    "workers",
    "worker_ports",
    "stop_grace_ms",
    "on_shutdown",
    "shutdown_drain_s",
    "log_level",
];

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
            workers: new.workers.clone(),
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
        let mut report = ReloadReport::default();
        for (key, changed) in changed_keys(&old, &new) {
            if !changed {
                continue;
            }
            if RELOADABLE.contains(&key.as_str()) {
                report.applied.push(key);
            } else {
                report.needs_restart.push(key);
            }
        }
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

/// Every key of the config, and whether `new` changes it.
fn changed_keys(old: &Config, new: &Config) -> Vec<(String, bool)> {
    let as_map = |config: &Config| match serde_json::to_value(config) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (before, after) = (as_map(old), as_map(new));
    let mut keys: Vec<String> = before.keys().chain(after.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    let mut changes: Vec<(String, bool)> = keys
        .into_iter()
        .map(|key| {
            let changed = before.get(&key) != after.get(&key);
            (key, changed)
        })
        .collect();
    // The token is never serialised; it changes with its file's content.
    changes.push(("token".to_owned(), old.token != new.token));
    changes
}
