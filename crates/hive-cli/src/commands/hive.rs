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
    // A hive older than today's rbee contract has no `/v1/queen`: nothing to say then.
    let queen: Option<Value> = client
        .get_typed(client.url_of(&["v1", "queen"])?)
        .await
        .ok();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for worker in &workers {
        *counts.entry(show::state(&worker.record)).or_default() += 1;
    }
    if global.json {
        print_json(&json!({
            "url": client.url(), "health": "ok", "version": version, "hive_id": hive_id,
            "devices": devices["devices"], "workers": workers.len(), "workers_by_state": counts,
            "queen": queen,
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
    if let Some(queen) = &queen {
        for line in queen_lines(queen) {
            say(line);
        }
    }
    Ok(())
}

/// What `status` says of the registrations with queens (`GET /v1/queen`).
fn queen_lines(report: &Value) -> Vec<String> {
    let queens = report["queens"].as_array().cloned().unwrap_or_default();
    let mut lines = Vec::new();
    if let Some(why) = report["not_registering"].as_str() {
        lines.push(format!("queen: not registering: {why}"));
    }
    if queens.is_empty() && lines.is_empty() {
        lines.push("queen: none (set queen_url to register with one)".to_owned());
    }
    for queen in &queens {
        let url = queen["queen_url"].as_str().unwrap_or("?");
        let open = queen["subscriptions_open"].as_u64().unwrap_or(0);
        let last = &queen["last_registration"];
        let registration = match (last["ok"].as_bool(), last["at"].as_str()) {
            (Some(true), Some(at)) => format!("registered at {at}"),
            (Some(false), Some(at)) => format!(
                "registration failed at {at} ({} in a row): {}",
                queen["failures"].as_u64().unwrap_or(0),
                last["message"].as_str().unwrap_or("?")
            ),
            _ => "not registered yet".to_owned(),
        };
        let subscribed = match open {
            0 => "not subscribed".to_owned(),
            1 => "subscribed".to_owned(),
            n => format!("{n} subscriptions open"),
        };
        lines.push(format!(
            "queen {url} ({}): {registration}; {subscribed}",
            queen["source"].as_str().unwrap_or("?")
        ));
    }
    lines
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_where_each_registration_stands() {
        let report = json!({"queens": [
            {"queen_url": "http://q:7833", "source": "configured", "subscriptions_open": 1,
             "failures": 0, "last_registration": {"ok": true, "message": "Subscribed", "at": "2026-12-08T00:00:00Z"}},
            {"queen_url": "http://r:7833", "source": "discovered", "subscriptions_open": 0,
             "failures": 3, "last_registration": {"ok": false, "message": "connection refused", "at": "2026-12-08T00:00:09Z"}},
        ]});
        assert_eq!(
            queen_lines(&report),
            [
                "queen http://q:7833 (configured): registered at 2026-12-08T00:00:00Z; subscribed",
                "queen http://r:7833 (discovered): registration failed at 2026-12-08T00:00:09Z (3 in a row): connection refused; not subscribed",
            ]
        );
        assert_eq!(
            queen_lines(&json!({"queens": []})),
            ["queen: none (set queen_url to register with one)"]
        );
        assert_eq!(
            queen_lines(&json!({"queens": [], "not_registering": "no"})),
            ["queen: not registering: no"]
        );
    }
}
