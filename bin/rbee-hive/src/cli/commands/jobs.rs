//! `jobs`, `follow`, `cancel`, `submit`.

use serde_json::{Value, json};

use super::{narrate, print_json, raw, run_narrated};
use crate::cli::client::{CliError, HiveClient};
use crate::cli::output::{self, Stream, Tone};
use crate::cli::{GlobalArgs, JobArgs, SubmitArgs};

pub(super) async fn jobs(global: &GlobalArgs) -> Result<(), CliError> {
    let client = HiveClient::new(global)?;
    let answer: Value = client.get_typed(client.url_of(&["v1", "jobs"])?).await?;
    if global.json {
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
