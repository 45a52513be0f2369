//! `model list`, `model get`, `model download`, `model delete`.

use hive_api::Operation;

use super::{print_json, quiet_job, request, run_narrated, run_printing_id};
use crate::client::{CliError, HiveClient, unexpected};
use crate::output::{self, Stream, Tone};
use crate::{GlobalArgs, ModelDeleteArgs, ModelDownloadArgs, ModelIdArgs, show};

pub(super) async fn list(global: &GlobalArgs) -> Result<(), CliError> {
    let client = HiveClient::new(global)?;
    let hive_id = client.hive_id().await?;
    let result = quiet_job(&client, request(Operation::ModelList { hive_id })).await?;
    if global.json {
        print_json(&result);
        return Ok(());
    }
    /// The result of `model_list`, as the hive's job publishes it.
    #[derive(serde::Deserialize)]
    struct ModelList {
        models: Vec<catalog::Entry<catalog::ModelArtifact>>,
    }
    let listed: ModelList = serde_json::from_value(result).map_err(|e| {
        unexpected(format!(
            "the hive's model list is not one this client reads: {e}"
        ))
    })?;
    let rows: Vec<Vec<String>> = listed
        .models
        .into_iter()
        .map(|entry| {
            let model = entry.artifact;
            let status = match model.status {
                catalog::ArtifactStatus::Failed { error } => format!("failed: {error}"),
                other => other.word().to_owned(),
            };
            vec![model.id, model.name, show::bytes(model.size), status]
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
        request(Operation::ModelGet {
            hive_id,
            id: args.id,
        }),
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
    let operation = request(Operation::ModelDownload {
        hive_id,
        model: args.model,
        id: args.id,
        sha256: args.sha256,
    });
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
    let operation = request(Operation::ModelDelete {
        hive_id,
        id: args.id,
        force: args.force,
    });
    run_narrated(&client, &operation, Stream::Stderr, global.json, false).await
}
