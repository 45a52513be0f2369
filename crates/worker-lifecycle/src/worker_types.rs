//! The worker types: how each worker type is started (PROTOCOL §5).
//!
//! A worker type is a command template (program and arguments, no shell), environment
//! additions, a health path and a ready timeout. Placeholders `{worker_id} {model} {port}
//! {device} {device_ordinal} {hive_url} {queen_url}` are filled per worker, each value
//! inserted once and never scanned again, so a model name cannot inject anything. Built-in
//! types are `cpu`, `cuda`, `metal` (the `llm-worker-rbee-*` binaries), `demo` (this
//! project's demo worker) and `llama` (llama.cpp's `llama-server`); a configured type of the
//! same name replaces a built-in one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::LifecycleError;
use crate::supervisor::restart::{RestartMode, RestartPolicy};

/// The placeholders a template may use.
pub(crate) const PLACEHOLDERS: &[&str] = &[
    "worker_id",
    "model",
    "port",
    "device",
    "device_ordinal",
    "hive_url",
    "queen_url",
];

/// Which kind of device a worker type runs on; names the device `GPU-<n>`, `CPU-<n>`, `METAL-<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// `CPU-<n>`.
    Cpu,
    /// `GPU-<n>` (CUDA).
    Gpu,
    /// `METAL-<n>`.
    Metal,
}

impl DeviceKind {
    /// The lowercase name (`cpu`, `gpu`, `metal`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
            Self::Metal => "metal",
        }
    }

    /// The device name for an ordinal.
    pub(crate) fn device_name(self, ordinal: u32) -> String {
        match self {
            Self::Cpu => format!("CPU-{ordinal}"),
            Self::Gpu => format!("GPU-{ordinal}"),
            Self::Metal => format!("METAL-{ordinal}"),
        }
    }
}

/// One worker type as written in the config file (`[workers.<name>]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerTypeConfig {
    /// Program and arguments, with placeholders. May be left out for a built-in type's name
    /// (`[workers.cuda]` with only `restart = "on-failure"` keeps the built-in command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Environment additions, with placeholders.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Environment variables removed from the worker's environment (a trailing `*` matches a prefix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_remove: Vec<String>,
    /// Path of the health check (default `/health`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    /// How long the worker may take to become ready, in seconds (default 60).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_timeout_s: Option<f64>,
    /// The device kind (default from the type name: `cuda` → gpu, `metal` → metal, else cpu).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceKind>,
    /// Whether `model` is a file path that must exist before the worker is started
    /// (default: true for `llama`, false otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_is_path: Option<bool>,
    /// Whether a spawn must name a device that the hive detects for the type's device kind
    /// (default true; false for setups where detection cannot see the device).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_check: Option<bool>,
    /// Whether a worker that fails after it was ready is started again: `"never"`
    /// (default) or `"on-failure"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartMode>,
    /// At most this many restarts within `restart_window_s` (default 5); one more failure
    /// in the window and the worker stays `Failed` ("crash loop").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    /// The window that `max_restarts` counts in, in seconds (default 60).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_window_s: Option<f64>,
    /// The wait before the first restart in a window, in milliseconds (default 1000); it
    /// doubles with each further restart in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_backoff_ms: Option<u64>,
    /// The longest wait before a restart, in milliseconds (default 30000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_backoff_max_ms: Option<u64>,
}

/// A worker type, validated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WorkerTemplate {
    /// The type name.
    pub(crate) name: String,
    /// Program and arguments, with placeholders.
    pub(crate) command: Vec<String>,
    /// Environment additions, with placeholders.
    pub(crate) env: BTreeMap<String, String>,
    /// Variables removed from the inherited environment (`PREFIX*` for a prefix).
    pub(crate) env_remove: Vec<String>,
    /// Path of the health check.
    pub(crate) health_path: String,
    /// How long the worker may take to become ready.
    pub(crate) ready_timeout: Duration,
    /// The device kind.
    pub(crate) device: DeviceKind,
    /// Whether `model` must name an existing file (checked before anything starts).
    pub(crate) model_is_path: bool,
    /// Whether the device must be one the hive detects.
    pub(crate) device_check: bool,
    /// Whether and how a failed worker is started again.
    pub(crate) restart: RestartPolicy,
}

impl WorkerTemplate {
    /// One part of the template, filled in.
    pub(crate) fn fill(
        &self,
        part: &str,
        values: &TemplateValues<'_>,
    ) -> Result<String, LifecycleError> {
        fill(part, values).map_err(|reason| LifecycleError::Template {
            name: self.name.clone(),
            reason,
        })
    }

    /// The environment additions of one worker, filled in, with the marker of its processes
    /// (`RBEE_HIVE_WORKER=<marker>`) last.
    pub(crate) fn worker_env(
        &self,
        values: &TemplateValues<'_>,
        marker: String,
    ) -> Result<Vec<(String, String)>, LifecycleError> {
        let mut env = self
            .env
            .iter()
            .map(|(key, value)| Ok((key.clone(), self.fill(value, values)?)))
            .collect::<Result<Vec<_>, LifecycleError>>()?;
        env.push((crate::process::MARKER_VAR.to_owned(), marker));
        Ok(env)
    }
}

/// The values a template is filled with.
#[derive(Debug, Clone)]
pub(crate) struct TemplateValues<'a> {
    /// `{worker_id}`.
    pub(crate) worker_id: &'a str,
    /// `{model}`.
    pub(crate) model: &'a str,
    /// `{port}`.
    pub(crate) port: u16,
    /// `{device}`.
    pub(crate) device: &'a str,
    /// `{device_ordinal}`.
    pub(crate) device_ordinal: u32,
    /// `{hive_url}`.
    pub(crate) hive_url: &'a str,
    /// `{queen_url}` (empty when none is configured).
    pub(crate) queen_url: &'a str,
}

impl TemplateValues<'_> {
    fn get(&self, name: &str) -> Option<String> {
        Some(match name {
            "worker_id" => self.worker_id.to_owned(),
            "model" => self.model.to_owned(),
            "port" => self.port.to_string(),
            "device" => self.device.to_owned(),
            "device_ordinal" => self.device_ordinal.to_string(),
            "hive_url" => self.hive_url.to_owned(),
            "queen_url" => self.queen_url.to_owned(),
            _ => return None,
        })
    }
}

/// Fills `{name}` placeholders in one template string. `{{` and `}}` are literal braces.
/// Unknown placeholders are an error (templates are checked at start-up, so this is rare).
pub(crate) fn fill(template: &str, values: &TemplateValues<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(pos) = rest.find(['{', '}']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if tail.starts_with('}') {
            return Err(format!("unmatched '}}' in {template:?}"));
        } else {
            let close = tail
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in {template:?}"))?;
            let name = &tail[1..close];
            let value = values.get(name).ok_or_else(|| {
                format!(
                    "unknown placeholder {{{name}}} in {template:?}; known: {}",
                    PLACEHOLDERS.join(", ")
                )
            })?;
            out.push_str(&value);
            rest = &tail[close + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The worker types of one hive.
#[derive(Debug, Clone)]
pub(crate) struct WorkerTypes {
    types: BTreeMap<String, WorkerTemplate>,
}

impl WorkerTypes {
    /// The built-in types, replaced or extended by `configured`. Every template is checked.
    /// `llama_server`, when given, is the program of the built-in `llama` type;
    /// `demo_worker`, when given, the command that starts the demo worker (program and
    /// leading arguments, such as the hive's own executable and `demo-worker`).
    pub(crate) fn new(
        configured: &BTreeMap<String, WorkerTypeConfig>,
        llama_server: Option<&Path>,
        demo_worker: Option<&[String]>,
    ) -> Result<Self, LifecycleError> {
        let mut types = builtin_types();
        if let (Some(program), Some(llama)) = (llama_server, types.get_mut("llama")) {
            llama.command[0] = program.display().to_string();
        }
        if let (Some(prefix), Some(demo)) = (demo_worker, types.get_mut("demo"))
            && !prefix.is_empty()
        {
            demo.command.splice(0..1, prefix.iter().cloned());
        }
        for (name, config) in configured {
            let template = template_from_config(name, config, types.get(name))?;
            types.insert(name.clone(), template);
        }
        let probe = TemplateValues {
            worker_id: "worker-0",
            model: "m",
            port: 1,
            device: "CPU-0",
            device_ordinal: 0,
            hive_url: "http://127.0.0.1:1",
            queen_url: "",
        };
        for template in types.values() {
            let invalid = |reason: String| LifecycleError::InvalidWorkerType {
                name: template.name.clone(),
                reason,
            };
            if template.command.is_empty() || template.command[0].is_empty() {
                return Err(invalid("`command` must name a program".into()));
            }
            for part in template.command.iter().chain(template.env.values()) {
                fill(part, &probe).map_err(invalid)?;
            }
            if !template.health_path.starts_with('/') {
                return Err(invalid("`health_path` must start with '/'".into()));
            }
        }
        Ok(Self { types })
    }

    /// The names of every type, built-in and configured, in order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.types.keys().cloned().collect()
    }

    /// One type.
    pub(crate) fn get(&self, name: &str) -> Result<&WorkerTemplate, LifecycleError> {
        self.types
            .get(name)
            .ok_or_else(|| LifecycleError::UnknownWorkerType {
                name: name.to_owned(),
                known: self.types.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }
}

/// A configured type. One with a `command` replaces the built-in type of its name; one
/// without takes what it leaves out from that built-in type (command, environment, …).
fn template_from_config(
    name: &str,
    config: &WorkerTypeConfig,
    builtin: Option<&WorkerTemplate>,
) -> Result<WorkerTemplate, LifecycleError> {
    let builtin = builtin.filter(|_| config.command.is_none());
    let invalid = |reason: &str| LifecycleError::InvalidWorkerType {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    let command = match (&config.command, builtin) {
        (Some(command), _) => command.clone(),
        (None, Some(builtin)) => builtin.command.clone(),
        (None, None) => {
            return Err(invalid(
                "`command` is needed (only a built-in type's name may leave it out)",
            ));
        }
    };
    let ready_timeout = match config.ready_timeout_s {
        Some(seconds) => seconds_in(seconds, 86_400.0)
            .ok_or_else(|| invalid("`ready_timeout_s` must be between 0 and 86400"))?,
        None => builtin.map_or(Duration::from_secs(60), |b| b.ready_timeout),
    };
    let restart =
        RestartPolicy::from_config(config, builtin.map(|b| b.restart)).map_err(invalid)?;
    let mut env = builtin.map(|b| b.env.clone()).unwrap_or_default();
    let mut env_remove = builtin.map(|b| b.env_remove.clone()).unwrap_or_default();
    env.extend(config.env.clone());
    env_remove.extend(config.env_remove.iter().cloned());
    Ok(WorkerTemplate {
        name: name.to_owned(),
        command,
        env,
        env_remove,
        health_path: config
            .health_path
            .clone()
            .or_else(|| builtin.map(|b| b.health_path.clone()))
            .unwrap_or_else(|| "/health".to_owned()),
        ready_timeout,
        device: config
            .device
            .or(builtin.map(|b| b.device))
            .unwrap_or(default_device(name)),
        model_is_path: config
            .model_is_path
            .or(builtin.map(|b| b.model_is_path))
            .unwrap_or(name == "llama"),
        device_check: config
            .device_check
            .or(builtin.map(|b| b.device_check))
            .unwrap_or(true),
        restart,
    })
}

/// `seconds` as a duration if it is above 0 and at most `max`.
/// `seconds` as a duration, if it is above 0 and at most `max`.
pub(crate) fn seconds_in(seconds: f64, max: f64) -> Option<Duration> {
    (seconds > 0.0 && seconds <= max).then(|| Duration::from_secs_f64(seconds))
}

fn default_device(name: &str) -> DeviceKind {
    match name {
        "cuda" => DeviceKind::Gpu,
        "metal" => DeviceKind::Metal,
        "llama" => DeviceKind::Gpu,
        _ => DeviceKind::Cpu,
    }
}

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn builtin_types() -> BTreeMap<String, WorkerTemplate> {
    let rbee = |program: &str, extra: &[&str]| {
        let mut command = strings(&[
            program,
            "--worker-id",
            "{worker_id}",
            "--model",
            "{model}",
            "--port",
            "{port}",
        ]);
        command.extend(strings(&["--hive-url", "{hive_url}"]));
        command.extend(strings(extra));
        command
    };
    let template = |name: &str,
                    command: Vec<String>,
                    env: &[(&str, &str)],
                    env_remove: &[&str],
                    timeout: u64| {
        (
            name.to_owned(),
            WorkerTemplate {
                name: name.to_owned(),
                command,
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                env_remove: strings(env_remove),
                health_path: "/health".to_owned(),
                ready_timeout: Duration::from_secs(timeout),
                device: default_device(name),
                model_is_path: name == "llama",
                // One llama-server build runs on what it was built for (a CPU build runs on
                // a machine without GPU), so its device is not checked.
                device_check: name != "llama",
                restart: RestartPolicy::default(),
            },
        )
    };
    BTreeMap::from([
        template("cpu", rbee("llm-worker-rbee-cpu", &[]), &[], &[], 300),
        template(
            "cuda",
            rbee(
                "llm-worker-rbee-cuda",
                &["--cuda-device", "{device_ordinal}"],
            ),
            &[],
            &[],
            300,
        ),
        template(
            "metal",
            rbee(
                "llm-worker-rbee-metal",
                &["--metal-device", "{device_ordinal}"],
            ),
            &[],
            &[],
            300,
        ),
        template("demo", rbee("rbee-demo-worker", &[]), &[], &[], 30),
        template(
            "llama",
            strings(&[
                "llama-server",
                "-m",
                "{model}",
                "--port",
                "{port}",
                "--host",
                "127.0.0.1",
            ]),
            &[("CUDA_VISIBLE_DEVICES", "{device_ordinal}")],
            &["LLAMA_ARG_*"],
            600,
        ),
    ])
}

/// How to get the program of worker type `name`, for a "program not found" message.
pub(crate) fn program_hint(name: &str) -> String {
    match name {
        "cpu" | "cuda" | "metal" => format!(
            "llm-worker-rbee-{name} is built from the rbee repository (https://github.com/veighnsche/llama-orch); \
             put it beside rbee-hive or on PATH, or set `command` in [workers.{name}]"
        ),
        "llama" => "install llama.cpp's llama-server (README, \"Real workers\") and set \
                    `llama_server = \"/path/to/llama-server\"` in the config file"
            .to_owned(),
        "demo" => "build it with `cargo build --release` (rbee-hive runs it itself unless \
                   [workers.demo] replaces the built-in type)"
            .to_owned(),
        other => format!("check `command` in [workers.{other}] of the config file"),
    }
}

/// Finds a worker program: a path with a `/` is used as given; a bare name is looked up
/// beside the hive's own executable first (where `cargo build` and rbee installs put the
/// workers), then on `PATH`. `type_name` picks the hint of the error.
pub(crate) fn resolve_program(program: &str, type_name: &str) -> Result<PathBuf, LifecycleError> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(LifecycleError::ProgramNotFound {
                program: program.to_owned(),
                searched: program.to_owned(),
                hint: program_hint(type_name),
            })
        };
    }
    let mut searched = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        let candidate = dir.join(program);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
        searched.push(format!("beside the hive ({})", dir.display()));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(program);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    searched.push("on PATH".to_owned());
    Err(LifecycleError::ProgramNotFound {
        program: program.to_owned(),
        searched: searched.join(" or "),
        hint: program_hint(type_name),
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> TemplateValues<'static> {
        TemplateValues {
            worker_id: "worker-7",
            model: "tiny {port}",
            port: 9100,
            device: "GPU-1",
            device_ordinal: 1,
            hive_url: "http://127.0.0.1:7835",
            queen_url: "",
        }
    }

    #[test]
    fn fills_each_placeholder_once() {
        assert_eq!(fill("--port={port}", &values()).unwrap(), "--port=9100");
        // A value holding a placeholder is not filled again.
        assert_eq!(fill("{model}", &values()).unwrap(), "tiny {port}");
        assert_eq!(
            fill("{{literal}} {device}/{device_ordinal}", &values()).unwrap(),
            "{literal} GPU-1/1"
        );
        assert!(
            fill("{nope}", &values())
                .unwrap_err()
                .contains("unknown placeholder {nope}")
        );
        assert!(fill("{port", &values()).is_err());
        assert!(fill("port}", &values()).is_err());
    }

    #[test]
    fn builtins_follow_the_protocol() {
        let worker_types = WorkerTypes::new(&BTreeMap::new(), None, None).unwrap();
        let cuda = worker_types.get("cuda").unwrap();
        let command: Vec<String> = cuda
            .command
            .iter()
            .map(|p| fill(p, &values()).unwrap())
            .collect();
        assert_eq!(
            command.join(" "),
            "llm-worker-rbee-cuda --worker-id worker-7 --model tiny {port} --port 9100 \
             --hive-url http://127.0.0.1:7835 --cuda-device 1"
        );
        assert_eq!(cuda.device.device_name(1), "GPU-1");
        assert_eq!(
            worker_types.get("metal").unwrap().device.device_name(0),
            "METAL-0"
        );
        assert_eq!(
            worker_types.get("cpu").unwrap().device.device_name(0),
            "CPU-0"
        );
        let llama = worker_types.get("llama").unwrap();
        assert_eq!(llama.command[0], "llama-server");
        assert!(llama.model_is_path);
        assert_eq!(llama.device.device_name(1), "GPU-1");
        assert_eq!(
            fill(&llama.env["CUDA_VISIBLE_DEVICES"], &values()).unwrap(),
            "1"
        );
        assert_eq!(llama.env_remove, ["LLAMA_ARG_*"]);
        assert!(!worker_types.get("demo").unwrap().model_is_path);
        let with_path = WorkerTypes::new(
            &BTreeMap::new(),
            Some(Path::new("/opt/llama/llama-server")),
            None,
        )
        .unwrap();
        assert_eq!(
            with_path.get("llama").unwrap().command[0],
            "/opt/llama/llama-server"
        );
        let error = worker_types.get("tpu").unwrap_err().to_string();
        assert!(error.contains("cpu, cuda, demo, llama, metal"), "{error}");
    }

    #[test]
    fn configured_types_replace_builtins_and_are_checked() {
        let parse = |toml_text: &str| -> BTreeMap<String, WorkerTypeConfig> {
            let table: BTreeMap<String, BTreeMap<String, WorkerTypeConfig>> =
                toml_from_str(toml_text);
            table.into_iter().next().map(|(_, v)| v).unwrap_or_default()
        };
        let configured = parse(
            "[workers.cpu]\ncommand = [\"/opt/w\", \"{port}\"]\nready_timeout_s = 2.5\n\
             [workers.custom]\ncommand = [\"x\"]\ndevice = \"gpu\"\n",
        );
        let worker_types = WorkerTypes::new(&configured, None, None).unwrap();
        assert_eq!(
            worker_types.get("cpu").unwrap().command,
            ["/opt/w", "{port}"]
        );
        assert_eq!(
            worker_types.get("cpu").unwrap().ready_timeout,
            Duration::from_millis(2500)
        );
        assert_eq!(worker_types.get("custom").unwrap().device, DeviceKind::Gpu);

        let bad = parse("[workers.bad]\ncommand = [\"x\", \"{modle}\"]\n");
        assert!(
            WorkerTypes::new(&bad, None, None)
                .unwrap_err()
                .to_string()
                .contains("unknown placeholder {modle}")
        );
        let empty = parse("[workers.bad]\ncommand = []\n");
        assert!(WorkerTypes::new(&empty, None, None).is_err());
    }

    #[test]
    fn restart_policies_are_read_checked_and_inherited() {
        let parse = |toml_text: &str| -> BTreeMap<String, WorkerTypeConfig> {
            let table: BTreeMap<String, BTreeMap<String, WorkerTypeConfig>> =
                toml_from_str(toml_text);
            table.into_iter().next().map(|(_, v)| v).unwrap_or_default()
        };
        let configured = parse(
            "[workers.cuda]\nrestart = \"on-failure\"\nmax_restarts = 3\n\
             restart_backoff_ms = 200\nrestart_backoff_max_ms = 500\n\
             [workers.custom]\ncommand = [\"x\"]\n",
        );
        let worker_types = WorkerTypes::new(&configured, None, None).unwrap();
        let cuda = worker_types.get("cuda").unwrap();
        // No `command`: the built-in's command and device stay.
        assert_eq!(cuda.command[0], "llm-worker-rbee-cuda");
        assert_eq!(cuda.device, DeviceKind::Gpu);
        assert_eq!(cuda.ready_timeout, Duration::from_secs(300));
        let policy = cuda.restart;
        assert_eq!(policy.mode, RestartMode::OnFailure);
        assert_eq!(policy.max_restarts, 3);
        assert_eq!(policy.window, Duration::from_secs(60));
        let delays: Vec<u64> = (0..5).map(|n| policy.delay(n).as_millis() as u64).collect();
        assert_eq!(delays, [200, 400, 500, 500, 500]);
        assert_eq!(
            worker_types.get("custom").unwrap().restart,
            RestartPolicy::default()
        );
        assert_eq!(RestartPolicy::default().delay(40), Duration::from_secs(30));

        for (text, complaint) in [
            ("[workers.x]\nrestart = \"always\"\ncommand = [\"x\"]\n", ""),
            (
                "[workers.nocommand]\nrestart = \"on-failure\"\n",
                "`command` is needed",
            ),
            (
                "[workers.cpu]\nrestart_backoff_ms = 900\nrestart_backoff_max_ms = 100\n",
                "must not be below",
            ),
            ("[workers.cpu]\nrestart_window_s = 0\n", "restart_window_s"),
        ] {
            let parsed: Result<BTreeMap<String, BTreeMap<String, WorkerTypeConfig>>, _> =
                toml::from_str(text);
            match parsed {
                // An unknown mode is a syntax error of the file.
                Err(error) => assert!(complaint.is_empty(), "{text}: {error}"),
                Ok(table) => {
                    let configured = table.into_values().next().unwrap();
                    let error = WorkerTypes::new(&configured, None, None)
                        .unwrap_err()
                        .to_string();
                    assert!(error.contains(complaint), "{text}: {error}");
                }
            }
        }
    }

    fn toml_from_str<T: serde::de::DeserializeOwned>(text: &str) -> T {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn resolves_programs() {
        assert!(resolve_program("sh", "custom").unwrap().ends_with("sh"));
        assert!(resolve_program("/bin/sh", "custom").is_ok());
        let error = resolve_program("no-such-worker-program", "custom")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("no-such-worker-program") && error.contains("PATH"),
            "{error}"
        );
        let cuda = resolve_program("llm-worker-rbee-cuda", "cuda")
            .unwrap_err()
            .to_string();
        assert!(cuda.contains("built from the rbee repository"), "{cuda}");
        let llama = resolve_program("/nowhere/llama-server", "llama")
            .unwrap_err()
            .to_string();
        assert!(llama.contains("llama_server = "), "{llama}");
    }
}

/// Property tests (a fuzz target run on every `cargo test`) for the template filler.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn fill_never_panics(template in ".{0,40}", model in ".{0,20}") {
            let values = TemplateValues {
                worker_id: "worker-1",
                model: &model,
                port: 9100,
                device: "CPU-0",
                device_ordinal: 0,
                hive_url: "http://127.0.0.1:7835",
                queen_url: "",
            };
            let _ = fill(&template, &values);
        }

        #[test]
        fn values_are_inserted_verbatim(model in ".{0,30}", before in "[a-z -]{0,10}", after in "[a-z -]{0,10}") {
            let values = TemplateValues {
                worker_id: "worker-1",
                model: &model,
                port: 9100,
                device: "CPU-0",
                device_ordinal: 0,
                hive_url: "http://127.0.0.1:7835",
                queen_url: "",
            };
            let filled = fill(&format!("{before}{{model}}{after}"), &values).unwrap();
            prop_assert_eq!(filled, format!("{before}{model}{after}"));
        }
    }
}
