//! `jobs`, `follow`, `cancel`, `submit`.

use serde_json::{Value, json};

use super::{narrate, print_json, raw, run_narrated};
use crate::client::{CliError, HiveClient, unexpected};
use crate::output::{self, Stream, Tone};
use crate::{GlobalArgs, JobArgs, SubmitArgs};

pub(super) async fn jobs(global: &GlobalArgs) -> Result<(), CliError> {
    let client = HiveClient::new(global)?;
    let answer: Value = client.get_typed(client.url_of(&["v1", "jobs"])?).await?;
    if global.json {
        print_json(&answer);
        return Ok(());
    }
    /// `GET /v1/jobs`.
    #[derive(serde::Deserialize)]
    struct Jobs {
        jobs: Vec<job_server::JobSnapshot>,
    }
    let listed: Jobs = serde_json::from_value(answer).map_err(|e| {
        unexpected(format!(
            "the hive's job list is not one this client reads: {e}"
        ))
    })?;
    let rows: Vec<Vec<String>> = listed
        .jobs
        .into_iter()
        .map(|job| {
            let elapsed = chrono::Utc::now().signed_duration_since(job.created_at);
            let age = format!(
                "{} ago",
                output::short_duration(elapsed.to_std().unwrap_or_default())
            );
            let error = job
                .error
                .as_deref()
                .and_then(|e| e.lines().next())
                .unwrap_or("")
                .to_owned();
            vec![
                job.job_id.to_string(),
                job.operation,
                job.state.as_str().to_owned(),
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

pub(super) async fn follow(global: &GlobalArgs, args: JobArgs) -> Result<(), CliError> {
    let client = HiveClient::new(global)?;
    let json = global.json;
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

pub(super) async fn cancel(global: &GlobalArgs, args: JobArgs) -> Result<(), CliError> {
    let client = HiveClient::new(global)?;
    client.cancel(&args.job_id).await?;
    match global.json {
        true => print_json(&json!({"job_id": args.job_id, "status": "cancelled"})),
        false => output::line(
            Stream::Stdout,
            Tone::Plain,
            &format!("cancelled {}", args.job_id),
        ),
    }
    Ok(())
}

pub(super) async fn submit(global: &GlobalArgs, args: SubmitArgs) -> Result<(), CliError> {
    let operation: Value = serde_json::from_str(&args.operation).map_err(|e| {
        CliError::Usage(format!(
            "the operation is not valid JSON ({e}): {}",
            args.operation
        ))
    })?;
    let client = HiveClient::new(global)?;
    run_narrated(&client, &operation, Stream::Stdout, global.json, true).await
}
