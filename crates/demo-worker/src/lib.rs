//! The demo worker: a stand-in for `llm-worker-rbee` that needs no model and no GPU. It runs
//! as the `rbee-demo-worker` program of this crate, or inside the hive's own executable
//! (`rbee-hive demo-worker …`, what the built-in `demo` worker type starts), so the quick
//! start needs no second build.
//!
//! It takes the `llm-worker-rbee` flags (`--worker-id --model --port --hive-url`), serves
//! `GET /health`, sends heartbeats to the hive, answers `POST /v1/inference` with a small
//! deterministic reply that says it is a demo, and exits 0 on SIGTERM. It is **not** an
//! inference engine. For tests it can misbehave on request: start slowly, ignore SIGTERM,
//! exit with a code after a delay, or start child processes (each flag also has an
//! `RBEE_DEMO_*` environment variable).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};

/// Command-line flags.
#[derive(Debug, Parser, Clone)]
#[command(
    name = "rbee-demo-worker",
    version,
    about = "A demo worker for rbee-hive (no real inference)"
)]
pub struct Args {
    /// The worker id given by the hive.
    #[arg(long, default_value = "demo")]
    pub worker_id: String,
    /// The model name (only echoed back; nothing is loaded).
    #[arg(long, default_value = "demo-model")]
    pub model: String,
    /// Port to listen on (127.0.0.1).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// The hive's URL, for heartbeats.
    #[arg(long)]
    pub hive_url: Option<String>,
    /// Accepted for compatibility with llm-worker-rbee; ignored.
    #[arg(long, hide = true)]
    pub cuda_device: Option<u32>,
    /// Accepted for compatibility with llm-worker-rbee; ignored.
    #[arg(long, hide = true)]
    pub metal_device: Option<u32>,
    /// Wait this long before listening (a slow start).
    #[arg(long, env = "RBEE_DEMO_START_DELAY_MS", default_value_t = 0)]
    pub start_delay_ms: u64,
    /// Ignore SIGTERM (only SIGKILL ends it).
    #[arg(long, env = "RBEE_DEMO_IGNORE_SIGTERM")]
    pub ignore_sigterm: bool,
    /// On SIGTERM, take this long to shut down.
    #[arg(long, env = "RBEE_DEMO_STOP_DELAY_MS", default_value_t = 0)]
    pub stop_delay_ms: u64,
    /// Exit on its own after this long (with --exit-code).
    #[arg(long, env = "RBEE_DEMO_EXIT_AFTER_MS")]
    pub exit_after_ms: Option<u64>,
    /// The code for --exit-after-ms.
    #[arg(long, env = "RBEE_DEMO_EXIT_CODE", default_value_t = 1)]
    pub exit_code: i32,
    /// Start this many child processes that sleep until killed.
    #[arg(long, env = "RBEE_DEMO_CHILDREN", default_value_t = 0)]
    pub children: u32,
    /// Children ignore SIGTERM too.
    #[arg(long, env = "RBEE_DEMO_CHILDREN_IGNORE_SIGTERM")]
    pub children_ignore_sigterm: bool,
    /// Milliseconds between heartbeats (0: none).
    #[arg(long, env = "RBEE_DEMO_HEARTBEAT_MS", default_value_t = 5000)]
    pub heartbeat_ms: u64,
    /// Internal: run as a sleeping child process.
    #[arg(long, hide = true)]
    pub child_sleeper: bool,
}

#[derive(Clone)]
struct Worker {
    args: Args,
}

#[derive(Debug, Deserialize)]
struct InferenceRequest {
    prompt: String,
    #[serde(default)]
    max_tokens: Option<u32>,
}

/// Runs the demo worker until SIGTERM (or its misbehaviour) ends it; returns the exit code
/// its program should exit with. `relaunch` is the command that starts this program again
/// in demo-worker mode (the executable, and `demo-worker` when it runs inside the hive's
/// executable): children are started with it.
pub async fn run(args: Args, relaunch: &[std::ffi::OsString]) -> i32 {
    if args.child_sleeper {
        sleep_forever(args.ignore_sigterm).await;
    }
    let name = format!("rbee-demo-worker {}", args.worker_id);
    let exit_after = args.exit_after_ms.map(Duration::from_millis);
    let serving = serve(args.clone(), relaunch, name.clone());
    match exit_after {
        None => serving.await,
        Some(after) => tokio::select! {
            code = serving => code,
            _ = tokio::time::sleep(after) => {
                eprintln!("{name}: exiting with code {} after {} ms, as asked", args.exit_code, after.as_millis());
                args.exit_code
            }
        },
    }
}

async fn serve(args: Args, relaunch: &[std::ffi::OsString], name: String) -> i32 {
    let started = Instant::now();
    // Listening for SIGTERM before anything else: a SIGTERM that came after the port was
    // bound but before a listener existed would be caught by the handler and lost (the
    // process would neither die nor stop).
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    for _ in 0..args.children {
        let Some((program, leading)) = relaunch.split_first() else {
            eprintln!("{name}: cannot start a child process: no command to start it with");
            break;
        };
        let mut child = std::process::Command::new(program);
        child
            .args(leading)
            .arg("--child-sleeper")
            .stdin(Stdio::null());
        if args.children_ignore_sigterm {
            child.arg("--ignore-sigterm");
        }
        match child.spawn() {
            Ok(child) => println!("{name}: started child process {}", child.id()),
            Err(error) => eprintln!("{name}: cannot start a child process: {error}"),
        }
    }
    if args.start_delay_ms > 0 {
        println!("{name}: starting slowly ({} ms)", args.start_delay_ms);
        let delay = tokio::time::sleep(Duration::from_millis(args.start_delay_ms));
        tokio::pin!(delay);
        loop {
            tokio::select! {
                _ = &mut delay => break,
                _ = terminate.recv() => {
                    if !args.ignore_sigterm {
                        println!("{name}: SIGTERM received while starting, stopping");
                        return 0;
                    }
                    println!("{name}: ignoring SIGTERM, as asked");
                }
            }
        }
    }
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("{name}: error: cannot listen on {address}: {error}");
            return 2;
        }
    };
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!(
        "{name}: listening on {bound} (model '{}', a demo: no inference) {} ms after start",
        args.model,
        started.elapsed().as_millis()
    );
    if let (Some(hive_url), true) = (args.hive_url.clone(), args.heartbeat_ms > 0) {
        tokio::spawn(heartbeats(
            hive_url,
            args.worker_id.clone(),
            Duration::from_millis(args.heartbeat_ms),
        ));
    }
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/inference", post(inference))
        .with_state(Worker { args: args.clone() });
    let shutdown = stop_signal(
        terminate,
        name.clone(),
        args.ignore_sigterm,
        args.stop_delay_ms,
    );
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        eprintln!("{name}: server error: {error}");
        return 1;
    }
    println!("{name}: stopped");
    0
}

async fn inference(
    State(worker): State<Worker>,
    Json(request): Json<InferenceRequest>,
) -> Json<Value> {
    let words: Vec<&str> = request.prompt.split_whitespace().collect();
    let limit = request.max_tokens.unwrap_or(16) as usize;
    let echoed: Vec<&str> = words.iter().rev().take(limit).copied().collect();
    Json(json!({
        "worker_id": worker.args.worker_id,
        "model": worker.args.model,
        "demo": true,
        "text": format!("[demo worker, no real model] {}", echoed.join(" ")),
        "tokens": echoed.len(),
    }))
}

async fn stop_signal(
    mut terminate: tokio::signal::unix::Signal,
    name: String,
    ignore: bool,
    delay_ms: u64,
) {
    loop {
        terminate.recv().await;
        if ignore {
            println!("{name}: ignoring SIGTERM, as asked");
            continue;
        }
        println!("{name}: SIGTERM received, stopping");
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        return;
    }
}

async fn heartbeats(hive_url: String, worker_id: String, every: Duration) {
    let client = reqwest::Client::new();
    let url = format!("{}/v1/heartbeat", hive_url.trim_end_matches('/'));
    loop {
        let beat = json!({
            "worker_id": worker_id,
            "timestamp": chrono::Utc::now(),
            "health_status": "healthy",
            "state": "ready",
        });
        if let Err(error) = client
            .post(&url)
            .json(&beat)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            eprintln!("rbee-demo-worker {worker_id}: heartbeat to {url} failed: {error}");
        }
        tokio::time::sleep(every).await;
    }
}

async fn sleep_forever(ignore_sigterm: bool) -> ! {
    if ignore_sigterm {
        let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
        loop {
            terminate.recv().await;
        }
    }
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
