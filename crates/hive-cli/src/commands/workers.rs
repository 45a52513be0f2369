//! `spawn`, `ps`, `get`, `stop`, `prune`, `logs`.

use serde_json::{Value, json};

use hive_api::Operation;

use super::{narrate, print_json, request, run_printing_id};
use crate::client::{CliError, HiveClient, ListedWorker};
use crate::output::{self, Stream, Tone};
use crate::{GetArgs, GlobalArgs, LogsArgs, SpawnArgs, StopArgs, show};

pub(super) async fn spawn(global: &GlobalArgs, args: SpawnArgs) -> Result<(), CliError> {
    let client = HiveClient::new(global)?;
    let hive_id = client.hive_id().await?;
    let operation = request(Operation::WorkerSpawn {
        hive_id,
        model: args.model,
        worker: args.worker,
        device: args.device,
    });
    run_printing_id(
        &client,
        &operation,
        args.quiet,
        global.json,
        "/id",
        "worker",
    )
    .await
}

pub(super) async fn ps(global: &GlobalArgs) -> Result<(), CliError> {
    let client = HiveClient::new(global)?;
    if global.json {
        let url = client.url_of(&["v1", "workers"])?;
        print_json(&client.get_typed::<Value>(url).await?);
        return Ok(());
    }
    let workers = client.workers().await?;
    let now = chrono::Utc::now();
    let dash = |n: u64| match n {
        0 => "-".to_owned(),
        n => n.to_string(),
    };
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|ListedWorker { record, stats }| {
            let (cpu, memory) = show::cpu_and_memory(stats.as_ref());
            vec![
                record.id.clone(),
                record.model_id.clone(),
                record.worker_type.clone(),
                record.device.clone(),
                record.port.to_string(),
                dash(u64::from(record.pid)),
                show::state(record).to_owned(),
                show::uptime(record, now),
                cpu,
                memory,
            ]
        })
        .collect();
    let header = [
        "ID", "MODEL", "TYPE", "DEVICE", "PORT", "PID", "STATE", "UPTIME", "CPU", "MEM",
    ];
    output::line(Stream::Stdout, Tone::Plain, &output::table(&header, &rows));
    Ok(())
}

pub(super) async fn get(global: &GlobalArgs, args: GetArgs) -> Result<(), CliError> {
    let client = HiveClient::new(global)?;
    let value = client.worker(&args.id).await?;
    if let Some(field) = &args.field {
        let found = match value.get(field) {
            Some(found) => found,
            // `stats` is left out of the answer before the first sample of a run.
            None if field == "stats" => &Value::Null,
            None => {
                return Err(CliError::Usage(format!(
                    "a worker record has no field `{field}`; it has: {}",
                    value
                        .as_object()
                        .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
                        .unwrap_or_default()
                )));
            }
        };
        let text = match (found, global.json) {
            (_, true) => found.to_string(),
            (Value::Null, false) if field == "stats" => show::NO_SAMPLE.to_owned(),
            (Value::String(s), false) => s.clone(),
            (other, false) => other.to_string(),
        };
        output::line(Stream::Stdout, Tone::Plain, &text);
        return Ok(());
    }
    if global.json {
        print_json(&value);
        return Ok(());
    }
    let worker: ListedWorker = serde_json::from_value(value).map_err(|e| CliError::NotDone {
        status: 200,
        code: "unexpected_answer".to_owned(),
        message: format!(
            "the hive's record of {} is not what this client reads: {e}",
            args.id
        ),
    })?;
    let lines = show::record_lines(&worker.record, worker.stats.as_ref(), chrono::Utc::now());
    let rows: Vec<Vec<String>> = lines
        .into_iter()
        .map(|(label, value)| vec![format!("{label}:"), value])
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
/// several); prints each removed id on stdout — with `json`, one object at the end instead:
/// `{"stopped": [ids], "failed": [{"id", "error", "code", "exit"}]}`. The worst failure
/// decides the exit code.
async fn delete_all(
    client: &HiveClient,
    ids: &[String],
    grace: Option<std::time::Duration>,
    json: bool,
) -> Result<(), CliError> {
    let hive_id = client.hive_id().await?;
    let several = ids.len() > 1;
    let deletes = ids.iter().map(|id| {
        let operation = request(Operation::WorkerDelete {
            hive_id: hive_id.clone(),
            id: id.clone(),
            grace_ms: grace.map(|grace| grace.as_millis() as u64),
        });
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
                    |_| {},
                )
                .await
                .map(|_| ())
        }
    });
    let outcomes = futures::future::join_all(deletes).await;
    let mut stopped = Vec::new();
    let mut failed = Vec::new();
    let mut worst: Option<CliError> = None;
    for (id, outcome) in ids.iter().zip(outcomes) {
        match outcome {
            Ok(()) => {
                if !json {
                    output::line(Stream::Stdout, Tone::Plain, id);
                }
                stopped.push(id.clone());
            }
            Err(error) => {
                if several && !json {
                    output::line(
                        Stream::Stderr,
                        Tone::Error,
                        &format!("error: {id}: {error}"),
                    );
                }
                failed.push(json!({
                    "id": id, "error": error.to_string(), "code": error.code(),
                    "exit": error.exit_code(),
                }));
                if worst
                    .as_ref()
                    .is_none_or(|w| severity(&error) > severity(w))
                {
                    worst = Some(error);
                }
            }
        }
    }
    if json {
        print_json(&json!({"stopped": stopped, "failed": failed}));
    }
    match worst {
        None => Ok(()),
        Some(error) if several && error.exit_code() == crate::exit::FAILED => {
            Err(CliError::JobFailed {
                job_id: String::new(),
                reason: format!(
                    "not every worker could be stopped: {}",
                    failed
                        .iter()
                        .filter_map(|f| f["id"].as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
        }
        Some(error) => Err(error),
    }
}

/// How bad an outcome is, to pick the one that decides the exit code: Ctrl-C over no hive
/// over a refused request over a failed job.
fn severity(error: &CliError) -> u8 {
    match error.exit_code() {
        crate::exit::INTERRUPTED => 4,
        crate::exit::UNREACHABLE => 3,
        crate::exit::USAGE => 2,
        _ => 1,
    }
}

pub(super) async fn stop(global: &GlobalArgs, args: StopArgs) -> Result<(), CliError> {
    let client = HiveClient::new(global)?;
    delete_all(&client, &args.ids, args.grace, global.json).await
}

pub(super) async fn prune(global: &GlobalArgs) -> Result<(), CliError> {
    let client = HiveClient::new(global)?;
    let ended: Vec<String> = client
        .workers()
        .await?
        .into_iter()
        .filter(|w| w.record.status.is_terminal() && !w.record.is_stopping())
        .map(|w| w.record.id)
        .collect();
    if ended.is_empty() {
        if global.json {
            print_json(&json!({"stopped": [], "failed": []}));
        } else {
            output::line(
                Stream::Stderr,
                Tone::Dim,
                "nothing to prune: no stopped or failed worker",
            );
        }
        return Ok(());
    }
    delete_all(
        &client,
        &ended,
        Some(std::time::Duration::ZERO),
        global.json,
    )
    .await
}

pub(super) async fn logs(global: &GlobalArgs, args: LogsArgs) -> Result<(), CliError> {
    use std::io::Write;
    let client = HiveClient::new(global)?;
    let mut stdout = std::io::stdout();
    if global.json {
        // One object per line of output: {"worker_id", "line"}.
        let mut pending = Vec::new();
        let emit = |line: &[u8]| {
            let object = json!({"worker_id": args.id, "line": String::from_utf8_lossy(line)});
            output::line(Stream::Stdout, Tone::Plain, &object.to_string());
        };
        client
            .logs(&args.id, args.tail, args.follow, |bytes| {
                pending.extend_from_slice(bytes);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    emit(&line[..end]);
                }
            })
            .await?;
        if !pending.is_empty() {
            emit(&pending);
        }
        return Ok(());
    }
    client
        .logs(&args.id, args.tail, args.follow, |bytes| {
            // A closed pipe (`| head`) ends the output, not the command with an error.
            let _ = stdout.write_all(bytes).and_then(|()| stdout.flush());
        })
        .await
}
