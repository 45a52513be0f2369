//! `GET /v1/workers/{id}/logs?tail=N&follow=true`: a worker's captured output as text.
//!
//! The log of a listed worker, or of a removed one whose log retention kept. `tail` sends
//! only the last N lines; `follow` keeps the response open and sends what the worker writes,
//! until the worker is gone (exited or removed) and its log is read to the end. New output
//! is looked for every [`FOLLOW_POLL`]; the file is read on the blocking pool.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::http::error::ApiError;

/// How often a follower looks for new output.
pub const FOLLOW_POLL: Duration = Duration::from_millis(20);
/// The most read and sent at once.
const CHUNK: usize = 64 * 1024;

/// `GET /v1/workers/{id}/logs`.
pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let tail = match query.get("tail") {
        None => None,
        Some(text) => Some(text.parse::<usize>().map_err(|_| ApiError::InvalidQuery {
            name: "tail",
            reason: "must be a number of lines",
        })?),
    };
    let follow = match query.get("follow").map(String::as_str) {
        None | Some("false" | "0") => false,
        Some("true" | "1" | "") => true,
        Some(_) => {
            return Err(ApiError::InvalidQuery {
                name: "follow",
                reason: "must be true or false",
            });
        }
    };
    let workers = state.services.workers.clone();
    let path = workers
        .log_file(&id)
        .map_err(|_| ApiError::WorkerNotFound(id.clone()))?;
    let (file, offset) = tokio::task::spawn_blocking(move || open_at_tail(path, tail))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("cannot read the log of {id}: {e}")))?;
    let reader = LogReader {
        file: Some(file),
        offset,
        follow,
        finishing: false,
        closing: state.closing.clone(),
    };
    let stream = futures::stream::unfold(reader, move |mut reader| {
        let workers = workers.clone();
        let id = id.clone();
        async move {
            loop {
                let file = reader.file.take()?;
                let offset = reader.offset;
                let (file, read) = tokio::task::spawn_blocking(move || {
                    let mut file = file;
                    let read = read_from(&mut file, offset);
                    (file, read)
                })
                .await
                .ok()?;
                let bytes = match read {
                    Ok(bytes) => bytes,
                    Err(error) => {
                        tracing::warn!(%error, worker = %id, "log read failed");
                        return None;
                    }
                };
                reader.file = Some(file);
                if !bytes.is_empty() {
                    reader.offset += bytes.len() as u64;
                    return Some((Ok::<Bytes, std::io::Error>(Bytes::from(bytes)), reader));
                }
                // At the end of what is written.
                if !reader.follow || reader.finishing {
                    return None;
                }
                if workers.is_gone(&id) {
                    // One more read for what it wrote before it went.
                    reader.finishing = true;
                    continue;
                }
                tokio::select! {
                    () = reader.closing.cancelled() => reader.finishing = true,
                    () = tokio::time::sleep(FOLLOW_POLL) => {}
                }
            }
        }
    });
    Ok((
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response())
}

struct LogReader {
    /// Cancelled when the hive's shutdown begins: a follower ends then, so that it does
    /// not hold the shutdown (workers are stopped after open connections have closed).
    closing: tokio_util::sync::CancellationToken,
    file: Option<std::fs::File>,
    offset: u64,
    follow: bool,
    finishing: bool,
}

/// Opens the log and finds where its last `tail` lines start (the start without `tail`).
fn open_at_tail(path: PathBuf, tail: Option<usize>) -> std::io::Result<(std::fs::File, u64)> {
    let mut file = std::fs::File::open(path)?;
    let Some(lines) = tail else {
        return Ok((file, 0));
    };
    let length = file.metadata()?.len();
    if lines == 0 {
        return Ok((file, length));
    }
    // Walk back block by block, counting line ends; a last line without its newline counts.
    let mut end = length;
    let mut newlines = 0usize;
    let mut block = vec![0u8; CHUNK];
    let mut skip_final_newline = true;
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let size = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block[..size])?;
        for i in (0..size).rev() {
            if block[i] != b'\n' {
                skip_final_newline = false;
                continue;
            }
            if skip_final_newline && start + i as u64 == length - 1 {
                continue;
            }
            newlines += 1;
            if newlines == lines {
                return Ok((file, start + i as u64 + 1));
            }
        }
        end = start;
    }
    Ok((file, 0))
}

/// Up to [`CHUNK`] bytes from `offset`.
fn read_from(file: &mut std::fs::File, offset: u64) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = vec![0u8; CHUNK];
    let n = file.read(&mut bytes)?;
    bytes.truncate(n);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(text: &str, lines: Option<usize>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.log");
        std::fs::write(&path, text).unwrap();
        let (mut file, offset) = open_at_tail(path, lines).unwrap();
        file.seek(SeekFrom::Start(offset)).unwrap();
        let mut out = String::new();
        file.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn the_last_lines() {
        assert_eq!(tail_of("a\nb\nc\n", Some(2)), "b\nc\n");
        assert_eq!(tail_of("a\nb\nc", Some(2)), "b\nc");
        assert_eq!(tail_of("a\nb\nc\n", Some(5)), "a\nb\nc\n");
        assert_eq!(tail_of("a\nb\nc\n", None), "a\nb\nc\n");
        assert_eq!(tail_of("a\nb\nc\n", Some(0)), "");
        assert_eq!(tail_of("", Some(3)), "");
        let long: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(tail_of(&long, Some(2)), "line 19998\nline 19999\n");
    }
}
