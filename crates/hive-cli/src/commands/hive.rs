//! `status`, `completions`, `man`.

use serde_json::{Value, json};

use super::print_json;
use crate::client::{CliError, HiveClient};
use crate::output::{self, Stream, Tone};
use crate::{CompletionsArgs, GlobalArgs, docs, show};

pub(super) async fn status(global: &GlobalArgs) -> Result<(), CliError> {
    let client = HiveClient::new(global)?;
    let (version, hive_id) = client.health().await?;
    let devices: Value = client.get_typed(client.url_of(&["capabilities"])?).await?;
    let workers = client.workers().await?;
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for worker in &workers {
        *counts.entry(show::state(&worker.record)).or_default() += 1;
    }
    if global.json {
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
            .map(|gib| format!(", {gib} GiB"))
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

pub(super) fn completions(args: CompletionsArgs) -> Result<(), CliError> {
    written(
        docs::completions(args.shell, &mut std::io::stdout().lock()),
        "the completion script",
    )
}

pub(super) fn man() -> Result<(), CliError> {
    written(
        docs::man_page(&mut std::io::stdout().lock()),
        "the man page",
    )
}

/// A closed pipe (`| head`) ends the output, not the command with an error.
fn written(outcome: std::io::Result<()>, what: &str) -> Result<(), CliError> {
    match outcome {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::Usage(format!("cannot write {what}: {e}")))
        }
        _ => Ok(()),
    }
}
