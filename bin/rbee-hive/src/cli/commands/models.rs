//! `model list`, `model get`, `model download`, `model delete`.

use serde_json::{Value, json};

use super::{print_json, quiet_job, run_narrated, run_printing_id};
use crate::cli::client::{CliError, HiveClient};
use crate::cli::output::{self, Stream, Tone};
use crate::cli::{GlobalArgs, ModelDeleteArgs, ModelDownloadArgs, ModelIdArgs, show};

pub(super) async fn list(global: &GlobalArgs) -> Result<(), CliError> {
    let client = HiveClient::new(global)?;
    let hive_id = client.hive_id().await?;
    let result = quiet_job(
        &client,
        json!({"operation": "model_list", "hive_id": hive_id}),
    )
    .await?;
    if global.json {
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
                show::bytes(model["size"].as_u64().unwrap_or(0)),
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

pub(super) async fn get(global: &GlobalArgs, args: ModelIdArgs) -> Result<(), CliError> {
    let client = HiveClient::new(global)?;
    let hive_id = client.hive_id().await?;
    let result = quiet_job(
        &client,
        json!({"operation": "model_get", "hive_id": hive_id, "id": args.id}),
    )
    .await?;
    let text = match global.json {
        true => result.to_string(),
        false => serde_json::to_string_pretty(&result).unwrap_or_default(),
    };
    output::line(Stream::Stdout, Tone::Plain, &text);
    Ok(())
}

pub(super) async fn download(global: &GlobalArgs, args: ModelDownloadArgs) -> Result<(), CliError> {
    let client = HiveClient::new(global)?;
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
        global.json,
        "/artifact/id",
        "model",
    )
    .await
}

pub(super) async fn delete(global: &GlobalArgs, args: ModelDeleteArgs) -> Result<(), CliError> {
    let client = HiveClient::new(global)?;
    let hive_id = client.hive_id().await?;
    let operation = json!({"operation": "model_delete", "hive_id": hive_id, "id": args.id, "force": args.force});
    run_narrated(&client, &operation, Stream::Stderr, global.json, false).await
}
