//! The command line of the `rbee-hive` executable: the daemon (`rbee-hive`, or
//! `rbee-hive serve`, with the daemon's flags), client subcommands that drive a hive over
//! HTTP (`spawn`, `ps`, `get`, `stop`, `prune`, `jobs`, `follow`, `cancel`, `status`,
//! `submit`, `logs`, `model list|get|download|delete`), and the hidden `demo-worker` mode that the built-in `demo` worker type runs.
//!
//! Client subcommands print a job's narration live as it arrives (human text), and exit
//! with 0 on success, 1 when the job failed (its reason printed last, on stderr), 2 when the
//! hive refused the request (its error text and code), 3 when no hive answers, and 130 when
//! interrupted (Ctrl-C stops following and says how to cancel the job, which goes on).
//!
//! # Layout
//! - [`client`]: the HTTP client: submit, follow a job's NDJSON stream, errors and exit codes.
//! - [`commands`]: one function per subcommand.
//! - [`output`]: colours (only on a terminal, `NO_COLOR` honoured), tables, durations.

pub mod client;
pub mod commands;
pub mod output;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::ServeArgs;

/// The `rbee-hive` executable.
#[derive(Debug, Parser)]
#[command(
    name = "rbee-hive",
    version,
    about = "rbee-hive: the worker manager daemon of an rbee cluster, and a client for it",
    long_about = "rbee-hive: the worker manager daemon of an rbee cluster, and a client for it.\n\n\
                  With no subcommand (or `serve`) it runs the daemon: `rbee-hive --port 7835`.\n\
                  The other subcommands talk to a running hive (--hive, default http://127.0.0.1:7835).",
    after_help = "Exit codes of the client subcommands: 0 success, 1 the job failed, 2 the hive \
                  refused the request, 3 no hive reachable, 130 interrupted."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (what `rbee-hive` does with no subcommand)
    Serve(ServeArgs),
    /// Start a worker, follow it until it is ready, and print its id
    Spawn(SpawnArgs),
    /// List the workers: id, model, type, device, port, pid, state, uptime, CPU, memory
    Ps(ClientArgs),
    /// Show one worker
    Get(GetArgs),
    /// Stop workers (their whole process trees) and remove them
    Stop(StopArgs),
    /// Remove the records of every stopped or failed worker
    Prune(ClientArgs),
    /// List the jobs the hive keeps
    Jobs(ClientArgs),
    /// Follow a job's narration until it ends
    Follow(JobArgs),
    /// Cancel a queued or running job
    Cancel(JobArgs),
    /// The hive's health, version, devices and worker counts
    Status(ClientArgs),
    /// Submit any operation (a JSON object) and follow it
    Submit(SubmitArgs),
    /// Print a worker's output (its log); -f follows it until the worker is gone
    Logs(LogsArgs),
    /// The model catalog: list, get, download, delete
    #[command(subcommand)]
    Model(ModelCommand),
    /// Run the demo worker (what the built-in `demo` worker type starts)
    #[command(hide = true)]
    DemoWorker(rbee_demo_worker::Args),
}

/// The names of the subcommands, for [`parse`].
const SUBCOMMANDS: &[&str] = &[
    "serve",
    "spawn",
    "ps",
    "get",
    "stop",
    "prune",
    "jobs",
    "follow",
    "cancel",
    "status",
    "submit",
    "model",
    "logs",
    "demo-worker",
    "help",
];

/// Parses the command line; with no subcommand, it is `serve` (the upstream orchestrator
/// starts the daemon as `rbee-hive --port N`).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Cli {
    let mut args: Vec<OsString> = args.into_iter().collect();
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let top_level = ["-h", "--help", "-V", "--version"].contains(&first);
    if !SUBCOMMANDS.contains(&first) && !top_level {
        args.insert(1.min(args.len()), OsString::from("serve"));
    }
    Cli::parse_from(args)
}

/// How every client subcommand reaches the hive.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The hive's URL
    #[arg(long, env = "RBEE_HIVE_URL", default_value = "http://127.0.0.1:7835")]
    pub hive: String,
    /// A file holding the hive's API token (sent as a bearer token)
    #[arg(long, env = "RBEE_HIVE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Machine output: the job's JSON stream events, or the result object
    #[arg(long)]
    pub json: bool,
    /// The hive id to address (default: the one the hive reports)
    #[arg(long, env = "RBEE_HIVE_HIVE_ID")]
    pub hive_id: Option<String>,
}

/// `rbee-hive spawn`.
#[derive(Debug, clap::Args)]
pub struct SpawnArgs {
    /// The model (a name, or a file path for file-based worker types such as `llama`)
    pub model: String,
    /// The worker type
    #[arg(long, default_value = "demo")]
    pub worker: String,
    /// The device ordinal
    #[arg(long, default_value_t = 0)]
    pub device: u32,
    /// Print only the new worker's id (no narration)
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `rbee-hive get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The worker id (as `spawn` printed it)
    pub id: String,
    /// Print only this field of the record, raw (e.g. `url`, `port`, `pid`, `log_path`)
    #[arg(long)]
    pub field: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `rbee-hive stop`.
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// The worker ids
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Time between SIGTERM and SIGKILL (e.g. `500ms`, `2s`, `1m`; default: the hive's)
    #[arg(long, value_parser = output::parse_duration)]
    pub grace: Option<std::time::Duration>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `rbee-hive follow` and `rbee-hive cancel`.
#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// The job id (`job-…`)
    pub job_id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `rbee-hive submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The operation, a JSON object (e.g. '{"operation":"worker_list","hive_id":"localhost"}')
    pub operation: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `rbee-hive logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The worker id (a listed worker, or a removed one whose log is kept)
    pub id: String,
    /// Only the last N lines
    #[arg(short = 'n', long)]
    pub tail: Option<usize>,
    /// Keep printing what the worker writes, until it is gone
    #[arg(short, long)]
    pub follow: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `rbee-hive model …`: the hive's model catalog.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// List the models: id, name, size, status
    List(ClientArgs),
    /// Show one model's entry
    Get(ModelIdArgs),
    /// Download a model into the catalog (an http(s) URL or owner/repo:file.gguf) and print its id
    Download(ModelDownloadArgs),
    /// Delete a model from the catalog (refused while a worker uses it, unless --force)
    Delete(ModelDeleteArgs),
}

/// `rbee-hive model get`.
#[derive(Debug, clap::Args)]
pub struct ModelIdArgs {
    /// The catalog id
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `rbee-hive model download`.
#[derive(Debug, clap::Args)]
pub struct ModelDownloadArgs {
    /// An http(s):// URL, or a Hugging Face reference owner/repo:file.gguf
    pub model: String,
    /// The catalog id to give it (default: from the file name)
    #[arg(long)]
    pub id: Option<String>,
    /// The file's expected sha256 (hex)
    #[arg(long)]
    pub sha256: Option<String>,
    /// Print only the model's id (no narration)
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `rbee-hive model delete`.
#[derive(Debug, clap::Args)]
pub struct ModelDeleteArgs {
    /// The catalog id
    pub id: String,
    /// Delete even when running workers use it
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}
