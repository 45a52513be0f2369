//! One function per client subcommand. Narration goes to stderr when the subcommand has a
//! result of its own for stdout (`spawn` prints the new worker's id, `stop` and `prune` the
//! ids they removed), and to stdout when the narration is the output (`follow`, `submit`).

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::cli::client::{CliError, HiveClient, JobEvent};
use crate::cli::output::{self, Stream, Tone};
use crate::cli::{
    ClientArgs, Command, GetArgs, JobArgs, LogsArgs, ModelCommand, ModelDeleteArgs,
    ModelDownloadArgs, ModelIdArgs, SpawnArgs, StopArgs, SubmitArgs,
};

/// Runs a client subcommand; prints its error last, on stderr, and returns its exit code.
pub async fn run(command: Command) -> ExitCode {
    let outcome = match command {
        Command::Spawn(args) => spawn(args).await,
        Command::Ps(args) => ps(args).await,
        Command::Get(args) => get(args).await,
        Command::Stop(args) => stop(args).await,
        Command::Prune(args) => prune(args).await,
        Command::Jobs(args) => jobs(args).await,
        Command::Follow(args) => follow(args).await,
        Command::Cancel(args) => cancel(args).await,
        Command::Status(args) => status(args).await,
        Command::Submit(args) => submit(args).await,
        Command::Logs(args) => logs(args).await,
        Command::Model(ModelCommand::List(args)) => model_list(args).await,
        Command::Model(ModelCommand::Get(args)) => model_get(args).await,
        Command::Model(ModelCommand::Download(args)) => model_download(args).await,
        Command::Model(ModelCommand::Delete(args)) => model_delete(args).await,
        Command::Serve(_) | Command::DemoWorker(_) => {
            Err(CliError::Usage("not a client subcommand".to_owned()))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::line(Stream::Stderr, Tone::Error, &format!("error: {error}"));
            ExitCode::from(error.exit_code())
        }
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

/// Prints a raw stream line (for `--json`).
fn raw(json: bool) -> impl FnMut(&str) {
    move |line: &str| {
        if json {
            output::line(Stream::Stdout, Tone::Plain, line);
        }
    }
}

/// Runs an operation whose narration nobody reads; returns its result object.
async fn quiet_job(client: &HiveClient, operation: Value) -> Result<Value, CliError> {
    let job_id = client.submit(&operation).await?;
    let result = client.follow(&job_id, |_| {}, |_| {}).await?;
    result.ok_or_else(|| CliError::Usage(format!("job {job_id} returned no result")))
}

fn print_json(value: &Value) {
    output::line(Stream::Stdout, Tone::Plain, &value.to_string());
}

async fn spawn(args: SpawnArgs) -> Result<(), CliError> {
    let client = HiveClient::new(&args.client)?;
    let hive_id = client.hive_id().await?;
    let operation = json!({
        "operation": "worker_spawn", "hive_id": hive_id, "model": args.model,
        "worker": args.worker, "device": args.device,
    });
    run_printing_id(
        &client,
        &operation,
        args.quiet,
        args.client.json,
        "/id",
        "worker",
    )
    .await
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
            .ok_or_else(|| CliError::Usage(format!("job {job_id} named no {what}")))?;
        output::line(Stream::Stdout, Tone::Plain, id);
    }
    Ok(())
}

/// The lowercase state of a record, `stopping` while a stop is under way.
fn state_of(worker: &Value) -> String {
    let stopping = worker["stop"].is_object() && worker["stop"]["finished_at"].is_null();
    let status = match &worker["status"] {
        Value::String(status) => status.to_lowercase(),
        Value::Object(object) => object
            .keys()
            .next()
            .cloned()
            .unwrap_or_default()
            .to_lowercase(),
        _ => "?".to_owned(),
    };
    match stopping && status != "stopped" && status != "failed" {
        true => "stopping".to_owned(),
        false => status,
    }
}

fn uptime_of(worker: &Value) -> String {
    let live = matches!(
        worker["status"].as_str(),
        Some("Starting" | "Ready" | "Busy")
    );
    let started = worker["started_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    match (live, started) {
        (true, Some(started)) => {
            let elapsed = chrono::Utc::now().signed_duration_since(started);
            output::short_duration(elapsed.to_std().unwrap_or_default())
        }
        _ => "-".to_owned(),
    }
}

async fn workers(client: &HiveClient) -> Result<Vec<Value>, CliError> {
    let hive_id = client.hive_id().await?;
    let result = quiet_job(
        client,
        json!({"operation": "worker_list", "hive_id": hive_id}),
    )
    .await?;
    Ok(result["workers"].as_array().cloned().unwrap_or_default())
}

async fn ps(args: ClientArgs) -> Result<(), CliError> {
    let client = HiveClient::new(&args)?;
    let workers = workers(&client).await?;
    if args.json {
        print_json(&json!({ "workers": workers }));
        return Ok(());
    }
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                text(&w["id"]),
                text(&w["model_id"]),
                text(&w["worker_type"]),
                text(&w["device"]),
                text(&w["port"]),
                text(&w["pid"]),
                state_of(w),
                uptime_of(w),
                match w["stats"]["cpu_pct"].as_f64() {
                    Some(cpu) => format!("{cpu:.1}%"),
                    None => "-".to_owned(),
                },
                match w["stats"]["rss_mb"].as_f64() {
                    Some(mb) => format!("{mb:.1} MiB"),
                    None => "-".to_owned(),
                },
            ]
        })
        .collect();
    let header = [
        "ID", "MODEL", "TYPE", "DEVICE", "PORT", "PID", "STATE", "UPTIME", "CPU", "MEM",
    ];
    output::line(Stream::Stdout, Tone::Plain, &output::table(&header, &rows));
    Ok(())
}

async fn get(args: GetArgs) -> Result<(), CliError> {
    let client = HiveClient::new(&args.client)?;
    let hive_id = client.hive_id().await?;
    let record = quiet_job(
        &client,
        json!({"operation": "worker_get", "hive_id": hive_id, "id": args.id}),
    )
    .await?;
    if let Some(field) = &args.field {
        let value = record.get(field).ok_or_else(|| {
            CliError::Usage(format!(
                "a worker record has no field `{field}`; it has: {}",
                record
                    .as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            ))
        })?;
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        output::line(Stream::Stdout, Tone::Plain, &text);
        return Ok(());
    }
    if args.client.json {
        print_json(&record);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = record
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Null => "-".to_owned(),
                other => other.to_string(),
            };
            vec![format!("{key}:"), text]
        })
        .collect();
    let body = output::table(&["", ""], &rows);
    output::line(
        Stream::Stdout,
        Tone::Plain,
        body.split_once('\n').map_or("", |(_, rest)| rest),
    );
    Ok(())
}

/// Deletes the workers `ids` at once, narrating each (prefixed with its id when there are
/// several); prints each removed id on stdout. The worst failure decides the exit code.
async fn delete_all(
    client: &HiveClient,
    ids: &[String],
    grace: Option<std::time::Duration>,
    json: bool,
) -> Result<(), CliError> {
    let hive_id = client.hive_id().await?;
    let several = ids.len() > 1;
    let deletes = ids.iter().map(|id| {
        let mut operation = json!({"operation": "worker_delete", "hive_id": hive_id, "id": id});
        if let Some(grace) = grace {
            operation["grace_ms"] = json!(grace.as_millis() as u64);
        }
        let prefix = if several {
            format!("[{id}] ")
        } else {
            String::new()
        };
        async move {
            let job_id = client.submit(&operation).await?;
            client
                .follow(
                    &job_id,
                    |event| {
                        if !json {
                            narrate(Stream::Stderr, &prefix, event);
                        }
                    },
                    raw(json),
                )
                .await
                .map(|_| ())
        }
    });
    let outcomes = futures::future::join_all(deletes).await;
    let mut worst: Option<CliError> = None;
    for (id, outcome) in ids.iter().zip(outcomes) {
        match outcome {
            Ok(()) if !json => output::line(Stream::Stdout, Tone::Plain, id),
            Ok(()) => {}
            Err(error) => {
                if several {
                    output::line(
                        Stream::Stderr,
                        Tone::Error,
                        &format!("error: {id}: {error}"),
                    );
                }
                if worst
                    .as_ref()
                    .is_none_or(|w| severity(&error) > severity(w))
                {
                    worst = Some(error);
                }
            }
        }
    }
    match worst {
        None => Ok(()),
        Some(error) if several && error.exit_code() == 1 => Err(CliError::JobFailed {
            job_id: String::new(),
            reason: "not every worker could be stopped (see above)".to_owned(),
        }),
        Some(error) => Err(error),
    }
}

fn severity(error: &CliError) -> u8 {
    match error.exit_code() {
        3 => 3,
        2 => 2,
        _ => 1,
    }
}

async fn stop(args: StopArgs) -> Result<(), CliError> {
    let client = HiveClient::new(&args.client)?;
    delete_all(&client, &args.ids, args.grace, args.client.json).await
}

async fn prune(args: ClientArgs) -> Result<(), CliError> {
    let client = HiveClient::new(&args)?;
    let ended: Vec<String> = workers(&client)
        .await?
        .iter()
        .filter(|w| matches!(state_of(w).as_str(), "stopped" | "failed"))
        .filter_map(|w| w["id"].as_str().map(str::to_owned))
        .collect();
    if ended.is_empty() {
        output::line(
            Stream::Stderr,
            Tone::Dim,
            "nothing to prune: no stopped or failed worker",
        );
        return Ok(());
    }
    delete_all(&client, &ended, Some(std::time::Duration::ZERO), args.json).await
}

async fn jobs(args: ClientArgs) -> Result<(), CliError> {
    let client = HiveClient::new(&args)?;
    let answer = client.get_json("/v1/jobs").await?;
    if args.json {
        print_json(&answer);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = answer["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|job| {
            let age = job["created_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| {
                    let elapsed = chrono::Utc::now().signed_duration_since(t);
                    format!(
                        "{} ago",
                        output::short_duration(elapsed.to_std().unwrap_or_default())
                    )
                })
                .unwrap_or_default();
            let error = job["error"]
                .as_str()
                .and_then(|e| e.lines().next())
                .unwrap_or("")
                .to_owned();
            vec![
                job["job_id"].as_str().unwrap_or("").to_owned(),
                job["operation"].as_str().unwrap_or("").to_owned(),
                job["state"].as_str().unwrap_or("").to_owned(),
                age,
                error,
            ]
        })
        .collect();
    output::line(
        Stream::Stdout,
        Tone::Plain,
        &output::table(&["JOB", "OPERATION", "STATE", "CREATED", "ERROR"], &rows),
    );
    Ok(())
}

async fn follow(args: JobArgs) -> Result<(), CliError> {
    let client = HiveClient::new(&args.client)?;
    let json = args.client.json;
    client
        .follow(
            &args.job_id,
            |event| {
                if !json {
                    narrate(Stream::Stdout, "", event);
                }
            },
            raw(json),
        )
        .await
        .map(drop)
}

async fn cancel(args: JobArgs) -> Result<(), CliError> {
    let client = HiveClient::new(&args.client)?;
    client.cancel(&args.job_id).await?;
    output::line(
        Stream::Stdout,
        Tone::Plain,
        &format!("cancelled {}", args.job_id),
    );
    Ok(())
}

async fn status(args: ClientArgs) -> Result<(), CliError> {
    let client = HiveClient::new(&args)?;
    let (version, hive_id) = client.health().await?;
    let devices = client.get_json("/capabilities").await?;
    let workers = workers(&client).await?;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for worker in &workers {
        *counts.entry(state_of(worker)).or_default() += 1;
    }
    if args.json {
        print_json(&json!({
            "url": client.url(), "health": "ok", "version": version, "hive_id": hive_id,
            "devices": devices["devices"], "workers": workers.len(), "workers_by_state": counts,
        }));
        return Ok(());
    }
    let say = |text: String| output::line(Stream::Stdout, Tone::Plain, &text);
    say(format!(
        "{} at {} (hive id {hive_id}): ok",
        if version.is_empty() {
            "rbee-hive"
        } else {
            &version
        },
        client.url()
    ));
    for device in devices["devices"].as_array().into_iter().flatten() {
        let memory = device["vram_gb"]
            .as_u64()
            .map(|gb| format!(", {gb} GiB"))
            .unwrap_or_default();
        say(format!(
            "device {}: {}{memory}",
            device["id"].as_str().unwrap_or("?"),
            device["name"].as_str().unwrap_or("?")
        ));
    }
    let by_state = counts
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect::<Vec<_>>()
        .join(", ");
    say(match workers.len() {
        0 => "workers: none".to_owned(),
        n => format!("workers: {n} ({by_state})"),
    });
    Ok(())
}

async fn submit(args: SubmitArgs) -> Result<(), CliError> {
    let operation: Value = serde_json::from_str(&args.operation).map_err(|e| {
        CliError::Usage(format!(
            "the operation is not valid JSON ({e}): {}",
            args.operation
        ))
    })?;
    let client = HiveClient::new(&args.client)?;
    run_narrated(&client, &operation, Stream::Stdout, args.client.json, true).await
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

async fn model_list(args: ClientArgs) -> Result<(), CliError> {
    let client = HiveClient::new(&args)?;
    let hive_id = client.hive_id().await?;
    let result = quiet_job(
        &client,
        json!({"operation": "model_list", "hive_id": hive_id}),
    )
    .await?;
    if args.json {
        print_json(&result);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = result["models"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|entry| {
            let model = &entry["artifact"];
            let status = match &model["status"] {
                Value::String(status) => status.to_lowercase(),
                Value::Object(failed) => match failed.get("Failed") {
                    Some(f) => format!("failed: {}", f["error"].as_str().unwrap_or("?")),
                    None => "?".to_owned(),
                },
                _ => "?".to_owned(),
            };
            vec![
                model["id"].as_str().unwrap_or("?").to_owned(),
                model["name"].as_str().unwrap_or("?").to_owned(),
                format!("{:.2} GB", model["size"].as_f64().unwrap_or(0.0) / 1e9),
                status,
            ]
        })
        .collect();
    output::line(
        Stream::Stdout,
        Tone::Plain,
        &output::table(&["ID", "NAME", "SIZE", "STATUS"], &rows),
    );
    Ok(())
}

async fn model_get(args: ModelIdArgs) -> Result<(), CliError> {
    let client = HiveClient::new(&args.client)?;
    let hive_id = client.hive_id().await?;
    let result = quiet_job(
        &client,
        json!({"operation": "model_get", "hive_id": hive_id, "id": args.id}),
    )
    .await?;
    let text = match args.client.json {
        true => result.to_string(),
        false => serde_json::to_string_pretty(&result).unwrap_or_default(),
    };
    output::line(Stream::Stdout, Tone::Plain, &text);
    Ok(())
}

async fn model_download(args: ModelDownloadArgs) -> Result<(), CliError> {
    let client = HiveClient::new(&args.client)?;
    let hive_id = client.hive_id().await?;
    let mut operation =
        json!({"operation": "model_download", "hive_id": hive_id, "model": args.model});
    if let Some(id) = &args.id {
        operation["id"] = json!(id);
    }
    if let Some(sha256) = &args.sha256 {
        operation["sha256"] = json!(sha256);
    }
    run_printing_id(
        &client,
        &operation,
        args.quiet,
        args.client.json,
        "/artifact/id",
        "model",
    )
    .await
}

async fn model_delete(args: ModelDeleteArgs) -> Result<(), CliError> {
    let client = HiveClient::new(&args.client)?;
    let hive_id = client.hive_id().await?;
    let operation = json!({"operation": "model_delete", "hive_id": hive_id, "id": args.id, "force": args.force});
    run_narrated(&client, &operation, Stream::Stderr, args.client.json, false).await
}

async fn logs(args: LogsArgs) -> Result<(), CliError> {
    use std::io::Write;
    let client = HiveClient::new(&args.client)?;
    let mut stdout = std::io::stdout();
    client
        .logs(&args.id, args.tail, args.follow, |bytes| {
            // A closed pipe (`| head`) ends the output, not the command with an error.
            let _ = stdout.write_all(bytes).and_then(|()| stdout.flush());
        })
        .await
}
