//! The command line of the `rbee-hive` executable: the daemon (`rbee-hive`, or
//! `rbee-hive serve`, with the daemon's flags), the client commands that drive a hive over
//! HTTP (`spawn`, `ps`, `get`, `stop`, `prune`, `logs`, `jobs`, `follow`, `cancel`,
//! `status`, `submit`, `model list|get|download|delete`), `completions` and `man`, and the
//! hidden `demo-worker` mode that the built-in `demo` worker type runs.
//!
//! As with git, cargo and pueue, the global flags (`--hive`, `--token-file`, `--json`,
//! `--hive-id`) go before or after the command. Client commands print a job's narration live
//! as it arrives and exit with one code per outcome, the same in every command ([`exit`]).
//!
//! # Layout
//! - this file: the flags and commands, and [`parse`] (no command is the daemon).
//! - `client`: the HTTP client: requests, a job's NDJSON stream, `CliError`.
//! - `commands`: one function per command.
//! - `show`: how records, sizes and times read for people.
//! - `output`: colours (only on a terminal, `NO_COLOR` honoured), tables, durations.
//! - `docs`: shell completions and the man page, made from these definitions.
//! - `serve_args`: [`ServeArgs`], the daemon's flags (the daemon applies them over its file).
//! - `units`: sizes for people (KiB, MiB, GiB), shared with the daemon's narration.

#![deny(unreachable_pub)]

mod client;
mod commands;
mod docs;
mod output;
mod serve_args;
mod show;
mod units;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub use commands::run;
pub use serve_args::ServeArgs;
pub use units::bytes;

/// The exit codes of the client commands, one per outcome.
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// The hive answered, and the job failed or the thing does not exist (an unknown
    /// worker, job or model).
    pub const FAILED: u8 = 1;
    /// A usage error, or a request the hive refused as malformed.
    pub const USAGE: u8 = 2;
    /// No hive reachable.
    pub const UNREACHABLE: u8 = 3;
    /// Ctrl-C while following a job (the job goes on).
    pub const INTERRUPTED: u8 = 130;
}

const ABOUT: &str = "rbee-hive: the worker manager daemon of an rbee cluster, and a client for it";

const LONG_ABOUT: &str =
    "rbee-hive: the worker manager daemon of an rbee cluster, and a client for it.

Run the daemon with `rbee-hive` (or `rbee-hive serve`); its flags (--port, --bind, --config,
--state-dir, …) are listed by `rbee-hive serve --help`. The other commands talk to a
running hive at --hive (default http://127.0.0.1:7835).";

const AFTER_HELP: &str = "Exit codes of the client commands: 0 done; 1 the job failed or the \
worker, job or model does not exist; 2 usage error, or a request the hive refused as \
malformed; 3 no hive reachable; 130 Ctrl-C while following (the job goes on).
With --json, every command prints JSON, and an error is one object on stderr: \
{\"error\": …, \"code\": …, \"exit\": N}.";

/// The `rbee-hive` executable.
#[derive(Debug, Parser)]
#[command(
    name = "rbee-hive",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// The flags every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The daemon's flags when no command is given (`rbee-hive --port 7835`, as the
    /// upstream queen starts a hive); hidden from the top-level help.
    #[command(flatten)]
    pub daemon: ServeArgs,
    /// What to do; none is the daemon.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The default hive URL of the client commands.
pub const DEFAULT_HIVE_URL: &str = "http://127.0.0.1:7835";

/// The flags of every command, before or after it.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// The hive's URL (client commands)
    #[arg(long, global = true, env = "RBEE_HIVE_URL", default_value = DEFAULT_HIVE_URL, value_name = "URL")]
    pub hive: String,
    /// A file holding the API token: the daemon requires it on every route but /health; the
    /// client commands send it
    #[arg(long, global = true, env = "RBEE_HIVE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Machine output: JSON on stdout, and an error as one JSON object on stderr
    #[arg(long, global = true)]
    pub json: bool,
    /// The hive's id. The daemon's own: when set, a job naming another hive_id fails with
    /// the reason (not set: any hive_id is accepted, narration says localhost). The client
    /// commands' hive_id (not set: the one the hive reports)
    #[arg(long, global = true, env = "RBEE_HIVE_HIVE_ID", value_name = "ID")]
    pub hive_id: Option<String>,
}

/// A command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (what `rbee-hive` does with no command)
    Serve(ServeArgs),
    /// Start a worker, follow it until it is ready, and print its id
    Spawn(SpawnArgs),
    /// List the workers: id, model, type, device, port, pid, state, uptime, CPU, memory
    Ps,
    /// Show one worker
    Get(GetArgs),
    /// Stop workers (their whole process trees) and remove them
    Stop(StopArgs),
    /// Remove the records of every stopped or failed worker
    Prune,
    /// Print a worker's output (its log); -f follows it until the worker is gone
    Logs(LogsArgs),
    /// List the jobs the hive keeps
    Jobs,
    /// Follow a job's narration until it ends
    Follow(JobArgs),
    /// Cancel a queued or running job
    Cancel(JobArgs),
    /// The hive's health, version, devices and worker counts
    Status,
    /// Submit any operation (a JSON object) and follow it
    Submit(SubmitArgs),
    /// The model catalog: list, get, download, delete
    #[command(subcommand)]
    Model(ModelCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(CompletionsArgs),
    /// Print the man page (roff)
    Man,
    /// Run the demo worker (what the built-in `demo` worker type starts)
    #[command(hide = true)]
    DemoWorker(rbee_demo_worker::Args),
}

/// A parsed command line: the global flags and the command (the daemon when none was given).
#[derive(Debug)]
pub struct Invocation {
    /// The flags every command takes.
    pub global: GlobalArgs,
    /// What to do.
    pub command: Command,
}

/// The clap definition, with the daemon's top-level flags hidden from the top-level help
/// (they are listed under `serve --help`).
pub fn definition() -> clap::Command {
    Cli::command().mut_args(|arg| match is_daemon_flag(&arg) {
        true => arg.hide(true),
        false => arg,
    })
}

/// Whether a top-level flag is one of the daemon's (every one but the global flags, help
/// and version).
fn is_daemon_flag(arg: &clap::Arg) -> bool {
    !arg.is_global_set() && !matches!(arg.get_id().as_str(), "help" | "version")
}

/// Parses the command line. With no command it is the daemon (`serve`), with the daemon's
/// flags given at the top level. On a usage error, `--help` or `--version`, prints what
/// to say (as JSON with `--json`) and returns the exit code instead.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Invocation, ExitCode> {
    let args: Vec<OsString> = args.into_iter().collect();
    // Known before clap has parsed anything, so that its errors are JSON too.
    let json = args
        .iter()
        .skip(1)
        .take_while(|arg| *arg != "--")
        .any(|arg| arg == "--json");
    let mut definition = definition();
    let matches = match definition.try_get_matches_from_mut(&args) {
        Ok(matches) => matches,
        Err(error) => return Err(usage_error(error, &args, json)),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => return Err(usage_error(error, &args, json)),
    };
    let command = match cli.command {
        None => Command::Serve(cli.daemon),
        Some(command) => {
            // A daemon flag before a client command (`rbee-hive --port 7900 ps`) is a mistake
            // worth saying, not something to ignore.
            if let Some(flag) = daemon_flag_given(&definition, &matches) {
                let name = matches.subcommand_name().unwrap_or("?");
                let sentence = format!(
                    "--{flag} is a flag of the daemon (`rbee-hive serve --{flag} …`), not of `{name}`"
                );
                return Err(client::report_usage(&sentence, json));
            }
            command
        }
    };
    let command = match command {
        Command::Serve(mut daemon) => {
            daemon.hive_id = cli.global.hive_id.clone();
            daemon.token_file = cli.global.token_file.clone();
            Command::Serve(daemon)
        }
        other => other,
    };
    Ok(Invocation {
        global: cli.global,
        command,
    })
}

/// The first daemon flag written on the command line at the top level.
fn daemon_flag_given(definition: &clap::Command, matches: &clap::ArgMatches) -> Option<String> {
    definition
        .get_arguments()
        .filter(|arg| is_daemon_flag(arg))
        .find_map(|arg| {
            let id = arg.get_id().as_str();
            (matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
                .then(|| arg.get_long().unwrap_or(id).to_owned())
        })
}

/// Prints a clap error (help and version are not errors) and returns its exit code. An
/// unknown command says so and lists the commands there are.
fn usage_error(error: clap::Error, args: &[OsString], json: bool) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand if json => {
            // `rbee-hive --json model`: a command that needs one of its own.
            let (path, commands) = commands_at(args, "");
            let sentence = format!("`{path}` needs a command: {}", commands.join(", "));
            return client::report_usage(&sentence, true);
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            return ExitCode::from(exit::USAGE);
        }
        _ => {}
    }
    let unknown = match (error.kind(), error.get(ContextKind::InvalidSubcommand)) {
        (ErrorKind::InvalidSubcommand, Some(ContextValue::String(name))) => Some(name.clone()),
        _ => None,
    };
    if let Some(name) = unknown {
        let (path, commands) = commands_at(args, &name);
        let sentence = format!(
            "'{name}' is not a command of `{path}`; the commands are: {}",
            commands.join(", ")
        );
        if json {
            return client::report_usage(&sentence, true);
        }
        output::line(
            output::Stream::Stderr,
            output::Tone::Error,
            &format!("error: {sentence}"),
        );
        output::line(
            output::Stream::Stderr,
            output::Tone::Plain,
            &format!("\nFor more, try '{path} --help'."),
        );
        return ExitCode::from(exit::USAGE);
    }
    if json {
        // clap's text up to its usage and tips, on one line, without its "error: ".
        let rendered = error.render().to_string();
        let sentence = rendered
            .lines()
            .take_while(|line| !line.trim().is_empty())
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ");
        let sentence = sentence.trim_start_matches("error: ");
        return client::report_usage(sentence, true);
    }
    let _ = error.print();
    ExitCode::from(exit::USAGE)
}

/// The command (`rbee-hive`, `rbee-hive model`) whose subcommand `unknown` was meant to
/// be, and its visible subcommands.
fn commands_at(args: &[OsString], unknown: &str) -> (String, Vec<String>) {
    let mut command = definition();
    let mut path = vec!["rbee-hive".to_owned()];
    for arg in args.iter().skip(1).filter_map(|arg| arg.to_str()) {
        if !unknown.is_empty() && arg == unknown {
            break;
        }
        let Some(next) = command.find_subcommand(arg).cloned() else {
            continue;
        };
        path.push(next.get_name().to_owned());
        command = next;
    }
    let commands = command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .map(|sub| sub.get_name().to_owned())
        .collect();
    (path.join(" "), commands)
}

/// `rbee-hive spawn`.
#[derive(Debug, clap::Args)]
pub struct SpawnArgs {
    /// The model (a name, a catalog id, or a file path for file-based worker types such as `llama`)
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
}

/// `rbee-hive get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The worker id (as `spawn` printed it)
    pub id: String,
    /// Print only this field of the record (e.g. `url`, `port`, `pid`, `log_path`, `stats`)
    #[arg(long)]
    pub field: Option<String>,
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
}

/// `rbee-hive follow` and `rbee-hive cancel`.
#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// The job id (`job-…`)
    pub job_id: String,
}

/// `rbee-hive submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The operation, a JSON object (e.g. '{"operation":"worker_list","hive_id":"localhost"}')
    pub operation: String,
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
}

/// `rbee-hive completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell
    pub shell: clap_complete::Shell,
}

/// `rbee-hive model …`: the hive's model catalog.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// List the models: id, name, size, status
    List,
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
}

/// `rbee-hive model delete`.
#[derive(Debug, clap::Args)]
pub struct ModelDeleteArgs {
    /// The catalog id
    pub id: String,
    /// Delete even when running workers use it
    #[arg(long)]
    pub force: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(line: &str) -> Invocation {
        let args = line.split_whitespace().map(OsString::from);
        parse(std::iter::once(OsString::from("rbee-hive")).chain(args))
            .unwrap_or_else(|_| panic!("{line} should parse"))
    }

    #[test]
    fn the_definition_is_consistent() {
        definition().debug_assert();
    }

    #[test]
    fn no_command_is_the_daemon_with_its_flags() {
        let Invocation { global, command } = parse_ok("--port 7900 --hive-id gpu-box");
        let Command::Serve(daemon) = command else {
            panic!("{command:?}")
        };
        assert_eq!(daemon.port, Some(7900));
        assert_eq!(daemon.hive_id.as_deref(), Some("gpu-box"));
        assert_eq!(global.hive_id.as_deref(), Some("gpu-box"));
        assert!(matches!(parse_ok("").command, Command::Serve(_)));
        let Command::Serve(daemon) = parse_ok("serve --port 7901 --token-file t").command else {
            panic!()
        };
        assert_eq!(daemon.port, Some(7901));
        assert_eq!(daemon.token_file, Some(PathBuf::from("t")));
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        for line in [
            "--hive http://h:1 --json ps",
            "ps --hive http://h:1 --json",
            "--json ps --hive http://h:1",
        ] {
            let Invocation { global, command } = parse_ok(line);
            assert!(matches!(command, Command::Ps), "{line}");
            assert_eq!(global.hive, "http://h:1", "{line}");
            assert!(global.json, "{line}");
        }
        let Invocation { global, command } = parse_ok("--hive-id b model --json list");
        assert!(matches!(command, Command::Model(ModelCommand::List)));
        assert_eq!(global.hive_id.as_deref(), Some("b"));
        assert!(global.json);
    }

    #[test]
    fn an_unknown_command_and_a_daemon_flag_on_a_client_command_are_usage_errors() {
        let run = |line: &str| {
            let args = line.split_whitespace().map(OsString::from);
            parse(std::iter::once(OsString::from("rbee-hive")).chain(args)).err()
        };
        assert_eq!(run("frobnicate"), Some(ExitCode::from(exit::USAGE)));
        assert_eq!(run("model frobnicate"), Some(ExitCode::from(exit::USAGE)));
        assert_eq!(run("--port 7900 ps"), Some(ExitCode::from(exit::USAGE)));
        assert_eq!(run("--json stop"), Some(ExitCode::from(exit::USAGE)));
        assert_eq!(run("--json model"), Some(ExitCode::from(exit::USAGE)));
    }

    #[test]
    fn the_commands_at_an_unknown_name_are_listed() {
        let args: Vec<OsString> = ["rbee-hive", "--json", "frobnicate"]
            .map(OsString::from)
            .to_vec();
        let (path, commands) = commands_at(&args, "frobnicate");
        assert_eq!(path, "rbee-hive");
        assert!(commands.contains(&"ps".to_owned()) && commands.contains(&"serve".to_owned()));
        assert!(!commands.contains(&"demo-worker".to_owned()));
        let args: Vec<OsString> = ["rbee-hive", "model", "lst"].map(OsString::from).to_vec();
        let (path, commands) = commands_at(&args, "lst");
        assert_eq!(path, "rbee-hive model");
        assert_eq!(commands, ["list", "get", "download", "delete"]);
    }
}
