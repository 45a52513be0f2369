//! One function per client command. Narration goes to stderr when the command has a result
//! of its own for stdout (`spawn` prints the new worker's id, `stop` and `prune` the ids
//! they removed), and to stdout when the narration is the output (`follow`, `submit`).
//! With `--json` every command prints JSON on stdout: the job's stream events (one object
//! a line) for the commands that follow a job, else one object.
//!
//! # Layout
//! - `workers`: `spawn`, `ps`, `get`, `stop`, `prune`, `logs`.
//! - `jobs`: `jobs`, `follow`, `cancel`, `submit`.
//! - `models`: `model list|get|download|delete`.
//! - `hive`: `status`, `completions`, `man`.

mod hive;
mod jobs;
mod models;
mod workers;

use std::process::ExitCode;

use serde_json::Value;

use crate::client::{CliError, HiveClient, JobEvent};
use crate::output::{self, Stream, Tone};
use crate::{Command, GlobalArgs, ModelCommand};

/// Runs a client command; prints its error last, on stderr (one JSON object with `--json`),
/// and returns its exit code.
pub async fn run(global: GlobalArgs, command: Command) -> ExitCode {
    let json = global.json;
    let outcome = match command {
        Command::Spawn(args) => workers::spawn(&global, args).await,
        Command::Ps => workers::ps(&global).await,
        Command::Get(args) => workers::get(&global, args).await,
        Command::Stop(args) => workers::stop(&global, args).await,
        Command::Prune => workers::prune(&global).await,
        Command::Logs(args) => workers::logs(&global, args).await,
        Command::Jobs => jobs::jobs(&global).await,
        Command::Follow(args) => jobs::follow(&global, args).await,
        Command::Cancel(args) => jobs::cancel(&global, args).await,
        Command::Submit(args) => jobs::submit(&global, args).await,
        Command::Status => hive::status(&global).await,
        Command::Completions(args) => hive::completions(args),
        Command::Man => hive::man(),
        Command::Model(ModelCommand::List) => models::list(&global).await,
        Command::Model(ModelCommand::Get(args)) => models::get(&global, args).await,
        Command::Model(ModelCommand::Download(args)) => models::download(&global, args).await,
        Command::Model(ModelCommand::Delete(args)) => models::delete(&global, args).await,
        Command::Serve(_) | Command::DemoWorker(_) => {
            Err(CliError::Usage("not a client command".to_owned()))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => error.report(json),
    }
}

/// Prints a narration event (each line of its text), prefixed; the job's own `failed`
/// line is left out because its reason is printed last anyway.
fn narrate(stream: Stream, prefix: &str, event: &JobEvent) {
    let JobEvent::Narration {
        level,
        actor,
        action,
        human,
    } = event
    else {
        return;
    };
    if actor == "job-exec" && action == "failed" {
        return;
    }
    let tone = match level.as_str() {
        "warn" => Tone::Warn,
        "error" => Tone::Error,
        _ => Tone::Plain,
    };
    for text in human.lines() {
        output::line(stream, tone, &format!("{prefix}{text}"));
    }
}

/// Prints a raw stream line on stdout (for `--json`).
fn raw(json: bool) -> impl FnMut(&str) {
    move |line: &str| {
        if json {
            output::line(Stream::Stdout, Tone::Plain, line);
        }
    }
}

/// The JSON body of a typed operation (the hive parses it back into the same value).
fn request(operation: hive_api::Operation) -> Value {
    serde_json::to_value(operation).expect("an operation is plain data and always serialises")
}

/// Runs an operation whose narration nobody reads; returns its result object.
async fn quiet_job(client: &HiveClient, operation: Value) -> Result<Value, CliError> {
    let job_id = client.submit(&operation).await?;
    let result = client.follow(&job_id, |_| {}, |_| {}).await?;
    result.ok_or_else(|| CliError::NotDone {
        status: 200,
        code: "no_result".to_owned(),
        message: format!("job {job_id} returned no result"),
    })
}

fn print_json(value: &impl serde::Serialize) {
    let text = serde_json::to_string(value).unwrap_or_default();
    output::line(Stream::Stdout, Tone::Plain, &text);
}

/// Runs an operation whose result names what it made: narration on stderr (unless `quiet`
/// or `json`), then that name alone on stdout (at `pointer` in the result), so that
/// `id=$(rbee-hive … -q)` works; with `json`, the stream's events instead.
async fn run_printing_id(
    client: &HiveClient,
    operation: &Value,
    quiet: bool,
    json: bool,
    pointer: &str,
    what: &str,
) -> Result<(), CliError> {
    let job_id = client.submit(operation).await?;
    let human = !quiet && !json;
    if human {
        output::line(Stream::Stderr, Tone::Dim, &format!("job {job_id}"));
    }
    let result = client
        .follow(
            &job_id,
            |event| {
                if human {
                    narrate(Stream::Stderr, "", event);
                }
            },
            raw(json),
        )
        .await?;
    if !json {
        let id = result
            .as_ref()
            .and_then(|r| r.pointer(pointer)?.as_str())
            .ok_or_else(|| CliError::NotDone {
                status: 200,
                code: "no_result".to_owned(),
                message: format!("job {job_id} named no {what}"),
            })?;
        output::line(Stream::Stdout, Tone::Plain, id);
    }
    Ok(())
}

/// Runs an operation and prints its narration to `stream` as it arrives (with `json`, the
/// stream's events on stdout instead); `announce` names the job first, on stderr.
async fn run_narrated(
    client: &HiveClient,
    operation: &Value,
    stream: Stream,
    json: bool,
    announce: bool,
) -> Result<(), CliError> {
    let job_id = client.submit(operation).await?;
    if announce && !json {
        output::line(Stream::Stderr, Tone::Dim, &format!("job {job_id}"));
    }
    client
        .follow(
            &job_id,
            |event| {
                if !json {
                    narrate(stream, "", event);
                }
            },
            raw(json),
        )
        .await
        .map(drop)
}
