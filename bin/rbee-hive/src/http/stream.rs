//! `GET /v1/jobs/{id}/stream`: a job's narration as Server-Sent Events (PROTOCOL §4).
//!
//! Three encodings of the same log:
//! - text (default, for rbee clients): `data:` lines only, one event per narration, then
//!   the terminal lines (`[DONE]`; `[ERROR] <reason>` + `[DONE]`; `[CANCELLED]` + `[DONE]`);
//! - `?format=json`: `id:` + `event: narration|result` + JSON `data:`, ending `event: done`;
//! - `Accept: application/x-ndjson` (or `?format=ndjson`): one JSON object per line.
//!
//! The body ends right after the last terminal line: streams end when the job ends,
//! never on a timer. Each batch the log hands over is written as one chunk, so an event is
//! never split across writes. A client that goes away only drops its reader.

use std::convert::Infallible;
use std::fmt::Write as _;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use job_server::{JobEnd, JobId, JobState, LogEntry, LogReader, ReadItem};
use narration::Narration;
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::http::error::ApiError;

/// How the stream is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// rbee's `data:`-only lines.
    Text,
    /// SSE with `id:`/`event:` and JSON data.
    Json,
    /// Newline-delimited JSON, no SSE framing.
    Ndjson,
}

/// Query parameters of the stream route.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    format: Option<String>,
}

/// `GET /v1/jobs/{id}/stream`.
pub async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = choose_format(query.format.as_deref(), &headers)?;
    let after_seq = match headers.get("last-event-id") {
        None => 0,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or(ApiError::InvalidHeader {
                name: "Last-Event-ID",
                reason: "must be an event id (a number)",
            })?,
    };
    let job_id = JobId::parse(&id).ok_or_else(|| ApiError::JobNotFound(id.clone()))?;
    let reader = state
        .jobs
        .reader(&job_id, after_seq)
        .ok_or(ApiError::JobNotFound(id))?;
    let content_type = match format {
        StreamFormat::Text | StreamFormat::Json => "text/event-stream",
        StreamFormat::Ndjson => "application/x-ndjson",
    };
    let metrics = state.metrics.clone();
    let body = Body::from_stream(futures::stream::unfold(Some(reader), move |reader| {
        next_chunk(reader, format, metrics.clone())
    }));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

fn choose_format(format: Option<&str>, headers: &HeaderMap) -> Result<StreamFormat, ApiError> {
    match format {
        Some("json") => return Ok(StreamFormat::Json),
        Some("ndjson") => return Ok(StreamFormat::Ndjson),
        Some("text") => return Ok(StreamFormat::Text),
        Some(_) => {
            return Err(ApiError::InvalidQuery {
                name: "format",
                reason: "must be text, json or ndjson",
            });
        }
        None => {}
    }
    let accepts_ndjson = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|part| part.trim().starts_with("application/x-ndjson"))
        });
    Ok(if accepts_ndjson {
        StreamFormat::Ndjson
    } else {
        StreamFormat::Text
    })
}

async fn next_chunk(
    reader: Option<LogReader>,
    format: StreamFormat,
    metrics: crate::metrics::Metrics,
) -> Option<(Result<Bytes, Infallible>, Option<LogReader>)> {
    let mut reader = reader?;
    loop {
        let batch = reader.next_batch().await;
        if batch.is_empty() {
            return None;
        }
        let mut chunk = String::new();
        let mut ended = false;
        for item in &batch {
            ended |= matches!(item, ReadItem::End(_));
            if matches!(item, ReadItem::Gap { .. }) {
                metrics.stream_gap();
            }
            encode(item, format, &mut chunk);
        }
        if !chunk.is_empty() {
            return Some((Ok(Bytes::from(chunk)), (!ended).then_some(reader)));
        }
    }
}

/// Appends the encoding of one log item to `out`.
pub fn encode(item: &ReadItem, format: StreamFormat, out: &mut String) {
    match (item, format) {
        (ReadItem::Event(event), StreamFormat::Text) => {
            if let LogEntry::Narration(narration) = &event.entry {
                write_data(out, &narration.text());
            }
        }
        (ReadItem::Gap { dropped, .. }, StreamFormat::Text) => {
            write_data(out, &gap_narration(*dropped).text())
        }
        (ReadItem::End(end), StreamFormat::Text) => {
            match end.state {
                JobState::Failed => write_data(
                    out,
                    &format!("[ERROR] {}", end.error.as_deref().unwrap_or("failed")),
                ),
                JobState::Cancelled => write_data(out, "[CANCELLED]"),
                _ => {}
            }
            write_data(out, "[DONE]");
        }
        (ReadItem::Event(event), StreamFormat::Json) => {
            let (kind, data) = event_json(event.seq, &event.entry);
            let _ = write!(out, "id: {}\nevent: {kind}\ndata: {data}\n\n", event.seq);
        }
        (ReadItem::Gap { dropped, last_seq }, StreamFormat::Json) => {
            let data = narration_json(*last_seq, &gap_narration(*dropped));
            let _ = write!(out, "id: {last_seq}\nevent: narration\ndata: {data}\n\n");
        }
        (ReadItem::End(end), StreamFormat::Json) => {
            let _ = write!(out, "event: done\ndata: {}\n\n", done_json(end));
        }
        // The keys in the order serde_json's map would sort them: {"data","event","id"}.
        (ReadItem::Event(event), StreamFormat::Ndjson) => {
            let (kind, data) = event_json(event.seq, &event.entry);
            let _ = writeln!(
                out,
                r#"{{"data":{data},"event":"{kind}","id":{}}}"#,
                event.seq
            );
        }
        (ReadItem::Gap { dropped, last_seq }, StreamFormat::Ndjson) => {
            let data = narration_json(*last_seq, &gap_narration(*dropped));
            let _ = writeln!(
                out,
                r#"{{"data":{data},"event":"narration","id":{last_seq}}}"#
            );
        }
        (ReadItem::End(end), StreamFormat::Ndjson) => {
            let _ = writeln!(out, r#"{{"data":{},"event":"done"}}"#, done_json(end));
        }
    }
}

/// One SSE event with a `data:` line per line of `text`.
fn write_data(out: &mut String, text: &str) {
    for line in text.split("\r\n").flat_map(|l| l.split(['\n', '\r'])) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
}

fn gap_narration(dropped: u64) -> Narration {
    job_server::NARRATE
        .action("narration_gap")
        .context(dropped)
        .human("⚠️ {} narration line(s) dropped: this job's buffer was full before they were read")
        .field("dropped", dropped)
        .warn()
        .build()
}

/// An event's kind and its JSON data: a narration serialised now, a result as it was
/// serialised when published.
fn event_json(seq: u64, entry: &LogEntry) -> (&'static str, std::borrow::Cow<'_, str>) {
    match entry {
        LogEntry::Narration(narration) => ("narration", narration_json(seq, narration).into()),
        LogEntry::Result(result) => ("result", result.get().into()),
    }
}

/// A narration as the structured formats send it; serialised straight from the narration,
/// the keys in alphabetical order (as they always were).
fn narration_json(seq: u64, n: &Narration) -> String {
    #[derive(serde::Serialize)]
    struct Data<'a> {
        action: &'a str,
        actor: &'a str,
        fields: &'a std::collections::BTreeMap<String, serde_json::Value>,
        human: &'a str,
        job_id: &'a Option<String>,
        level: &'a narration::Level,
        seq: u64,
        ts: &'a chrono::DateTime<chrono::Utc>,
    }
    serde_json::to_string(&Data {
        action: n.action,
        actor: n.actor,
        fields: &n.fields,
        human: &n.human,
        job_id: &n.job_id,
        level: &n.level,
        seq,
        ts: &n.ts,
    })
    .unwrap_or_default()
}

fn done_json(end: &JobEnd) -> serde_json::Value {
    json!({ "state": end.state, "error": end.error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_text_becomes_several_data_lines() {
        let mut out = String::new();
        write_data(&mut out, "{\n  \"a\": 1\r\n}");
        assert_eq!(out, "data: {\ndata:   \"a\": 1\ndata: }\n\n");
    }

    #[test]
    fn terminal_lines() {
        let mut out = String::new();
        encode(
            &ReadItem::End(JobEnd {
                state: JobState::Failed,
                error: Some("boom".into()),
            }),
            StreamFormat::Text,
            &mut out,
        );
        assert_eq!(out, "data: [ERROR] boom\n\ndata: [DONE]\n\n");
        out.clear();
        encode(
            &ReadItem::End(JobEnd {
                state: JobState::Cancelled,
                error: None,
            }),
            StreamFormat::Text,
            &mut out,
        );
        assert_eq!(out, "data: [CANCELLED]\n\ndata: [DONE]\n\n");
        out.clear();
        encode(
            &ReadItem::End(JobEnd {
                state: JobState::Succeeded,
                error: None,
            }),
            StreamFormat::Json,
            &mut out,
        );
        assert_eq!(
            out,
            "event: done\ndata: {\"error\":null,\"state\":\"succeeded\"}\n\n"
        );
    }
}
