//! The jobs every scenario sends, and the helpers that send many of them: the request
//! bodies, the id and pid in a spawn's ready line, spawning and deleting workers in bulk.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;

use crate::client::Connection;

/// A `worker_list` job.
pub const LIST: &str = r#"{"operation":"worker_list","hive_id":"localhost"}"#;
/// The narration action of a spawn's ready line.
pub const READY: &str = "worker_spawn_ready";

/// A `worker_spawn` of the worker type `worker`.
pub fn spawn_body(worker: &str) -> String {
    format!(
        r#"{{"operation":"worker_spawn","hive_id":"localhost","model":"bench","worker":"{worker}","device":0}}"#
    )
}

/// A `worker_delete` of `id`, with its grace when given.
pub fn delete_body(id: &str, grace_ms: Option<u64>) -> String {
    match grace_ms {
        Some(ms) => format!(
            r#"{{"operation":"worker_delete","hive_id":"localhost","id":"{id}","grace_ms":{ms}}}"#
        ),
        None => format!(r#"{{"operation":"worker_delete","hive_id":"localhost","id":"{id}"}}"#),
    }
}

/// The worker id in a spawn's ready line.
pub fn ready_id(stream: &str) -> anyhow::Result<String> {
    let line = stream
        .lines()
        .find(|l| l.contains("worker_spawn_ready"))
        .context("no ready line")?;
    let id = line
        .split("Worker ready: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .context("worker id")?;
    Ok(id.to_owned())
}

/// The worker's pid in a spawn's ready line (`✅ Worker ready: worker-1 | PID 123 | …`).
pub fn ready_pid(stream: &str) -> anyhow::Result<u32> {
    let line = stream
        .lines()
        .find(|l| l.contains("worker_spawn_ready"))
        .context("no ready line")?;
    let pid = line
        .split("| PID ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .context("worker pid")?;
    Ok(pid)
}

/// Spawns `count` demo workers over 8 connections.
pub async fn spawn_many(addr: SocketAddr, count: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let next = next.clone();
            tokio::spawn(async move {
                let mut connection = Connection::open(addr).await?;
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    connection.run(&spawn_body("demo")).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Deletes the workers `ids`, each on its own connection, all at once.
pub async fn delete_ids(addr: SocketAddr, ids: Vec<String>) -> anyhow::Result<()> {
    let tasks: Vec<_> = ids
        .into_iter()
        .map(|id| {
            tokio::spawn(async move {
                let mut connection = Connection::open(addr).await?;
                connection.run(&delete_body(&id, None)).await?;
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Deletes `worker-1` to `worker-<count>` over 16 connections.
pub async fn delete_all(addr: SocketAddr, count: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(1));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let next = next.clone();
            tokio::spawn(async move {
                let mut connection = Connection::open(addr).await?;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n > count {
                        return anyhow::Ok(());
                    }
                    connection
                        .run(&delete_body(&format!("worker-{n}"), None))
                        .await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}
