//! `hive_check` (today's rbee, PROTOCOL §9): the hive's narration self-test.
//!
//! One line per check — state and catalog dirs writable, a free port in the worker range,
//! each worker type's program, the devices, the queen — then exactly
//! `✅ Hive narration check complete`. Only what the hive needs fails the job (the dirs, a
//! free port, the program of a configured type: one in `[workers.*]` or named by
//! `load_worker`); a built-in type whose program is absent, or no queen, is reported only.

use std::path::Path;

use job_server::JobContext;

use crate::config::Config;
use crate::jobs::NARRATE;
use crate::jobs::router::{OperationFailure, OperationServices};

/// The last line of a check that passed (upstream's text).
pub const COMPLETE: &str = "✅ Hive narration check complete";

/// Runs the self-test of the hive known as `alias`.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    alias: &str,
) -> Result<(), OperationFailure> {
    NARRATE
        .action("hive_check_start")
        .context(alias)
        .human("🔍 Starting hive narration check on hive '{}'")
        .emit_to(job);
    let config = services.config.current();
    let mut failed = Vec::new();
    let mut report = |action: &'static str, outcome: Outcome, what: String| {
        let (mark, builder) = match outcome {
            Outcome::Pass => ("✅", NARRATE.action(action)),
            Outcome::Note => ("⚠️ ", NARRATE.action(action).warn()),
            Outcome::Fail => {
                failed.push(what.clone());
                ("❌", NARRATE.action(action).error())
            }
        };
        builder
            .context(mark)
            .context(what)
            .human("{} {}")
            .emit_to(job);
    };

    for (action, label, dir) in [
        ("hive_check_state_dir", "state dir", &config.state_dir),
        ("hive_check_catalog_dir", "catalog dir", &config.catalog_dir),
    ] {
        match writable(dir) {
            Ok(()) => report(
                action,
                Outcome::Pass,
                format!("{label} writable: {}", dir.display()),
            ),
            Err(reason) => report(
                action,
                Outcome::Fail,
                format!("{label} not writable: {}: {reason}", dir.display()),
            ),
        }
    }

    match services.workers.free_port() {
        Ok(port) => report(
            "hive_check_port",
            Outcome::Pass,
            format!("free worker port: {port} (range {})", config.worker_ports),
        ),
        Err(error) => report(
            "hive_check_port",
            Outcome::Fail,
            format!("no free worker port: {error}"),
        ),
    }

    let type_names = services.workers.worker_type_names();
    if let Some(load_worker) = &config.load_worker
        && !type_names.contains(load_worker)
    {
        // Every model_load would fail: the hive needs it.
        report(
            "hive_check_worker",
            Outcome::Fail,
            format!(
                "load_worker '{load_worker}' names no worker type (there are: {})",
                type_names.join(", ")
            ),
        );
    }
    for name in type_names {
        let needed = config.workers.contains_key(&name)
            || config.load_worker.as_deref() == Some(name.as_str());
        let (outcome, what) = program_check(services, &name, needed);
        report("hive_check_worker", outcome, what);
    }

    let capabilities = services.devices.capabilities().await;
    let devices: Vec<String> = capabilities
        .devices
        .iter()
        .map(|device| format!("{} ({})", device.id, device.name))
        .collect();
    report(
        "hive_check_devices",
        Outcome::Pass,
        format!("devices: {}", devices.join(", ")),
    );

    for (outcome, what) in queen_check(&config, &services.queen) {
        report("hive_check_queen", outcome, what);
    }

    if !failed.is_empty() {
        NARRATE
            .action("hive_check_failed")
            .context(failed.len())
            .human("❌ Hive check found {} problem(s)")
            .error()
            .emit_to(job);
        return Err(OperationFailure::CheckFailed { failed });
    }
    NARRATE
        .action("hive_check_complete")
        .human(COMPLETE)
        .emit_to(job);
    Ok(())
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// It passed.
    Pass,
    /// Reported, not a failure (a built-in program that is absent, no queen).
    Note,
    /// Something the hive needs is missing: the job fails.
    Fail,
}

/// Whether `dir` exists (or can be made) and a file can be created in it; the probe file
/// is removed again.
fn writable(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    // One name per probe: two checks at once must not remove each other's file.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let number = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".hive-check-{}-{number}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| e.to_string())?;
    std::fs::remove_file(&probe).map_err(|e| e.to_string())
}

/// Whether worker type `name` can start: its program from the worker catalog, or found as
/// a spawn looks for it. A missing program fails the check only when `needed`.
fn program_check(services: &OperationServices, name: &str, needed: bool) -> (Outcome, String) {
    if let Some(binary) = services.worker_binaries.binary_for(name) {
        let what = format!(
            "worker type '{name}': {} (worker catalog)",
            binary.display()
        );
        return (Outcome::Pass, what);
    }
    let info = match services.workers.worker_type_info(name) {
        Ok(info) => info,
        Err(error) => return (Outcome::Fail, format!("worker type '{name}': {error}")),
    };
    match info.found {
        Some(Ok(path)) => (
            Outcome::Pass,
            format!("worker type '{name}': {}", path.display()),
        ),
        None => (
            Outcome::Pass,
            format!(
                "worker type '{name}': program '{}' is chosen per worker",
                info.program
            ),
        ),
        Some(Err(error)) if needed => (Outcome::Fail, format!("worker type '{name}': {error}")),
        Some(Err(_)) => (
            Outcome::Note,
            format!(
                "worker type '{name}': program '{}' not found (built-in type, not configured; not needed)",
                info.program
            ),
        ),
    }
}

/// The queen lines: each queen the hive registers with and where that stands (PROTOCOL
/// §9). No queen, or a queen not reached yet, is reported, never a failure: the hive works
/// without one.
fn queen_check(config: &Config, queen: &crate::queen::QueenLink) -> Vec<(Outcome, String)> {
    let report = queen.report();
    let mut lines = Vec::new();
    if let Some(why) = report.not_registering {
        lines.push((Outcome::Note, format!("queen: not registering: {why}")));
    }
    for status in &report.queens {
        let last = status.last_registration.as_ref();
        let text = match (status.subscriptions_open, last) {
            (open @ 1.., _) => format!(
                "queen: {} registered, {open} subscription(s) open",
                status.queen_url
            ),
            (0, Some(outcome)) if outcome.ok => format!(
                "queen: {} registered at {}, not subscribed yet",
                status.queen_url,
                outcome
                    .at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            (0, Some(outcome)) => format!(
                "queen: {} not reached ({} failed registration(s)): {}",
                status.queen_url, status.failures, outcome.message
            ),
            (0, None) => format!("queen: {} not registered yet", status.queen_url),
        };
        let outcome = if status.subscriptions_open > 0 {
            Outcome::Pass
        } else {
            Outcome::Note
        };
        lines.push((outcome, text));
    }
    if lines.is_empty() {
        let text = match &config.queen_url {
            Some(url) => format!("queen: {url} configured, not registering yet"),
            None => "queen: none configured (queen_url); the hive runs standalone".to_owned(),
        };
        lines.push((Outcome::Note, text));
    }
    lines
}
