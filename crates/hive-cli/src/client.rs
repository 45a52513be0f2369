//! The client side of the protocol: submit an operation, follow its job's stream
//! (`?format=ndjson`: one JSON event per line), and what can go wrong, with its exit code.

use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use worker_lifecycle::{WorkerRecord, WorkerStats};

use crate::GlobalArgs;
use crate::exit;
use crate::output::{self, Stream, Tone};

/// Why a client command did not succeed; each has its exit code ([`super::exit`]) and a
/// snake_case code for `--json`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// No hive answers at the URL (exit 3).
    #[error("no rbee-hive at {url} ({reason}); start one with `rbee-hive`")]
    Unreachable {
        /// The hive's URL.
        url: String,
        /// What the connection said.
        reason: String,
    },
    /// Something answered at the URL, but not as an rbee-hive does (exit 3).
    #[error("{url} answered {status} without an rbee-hive error body; is it an rbee-hive?")]
    NotAHive {
        /// The URL.
        url: String,
        /// The HTTP status it answered.
        status: u16,
    },
    /// The hive takes no request now: it is shutting down, or every connection is busy
    /// (exit 3).
    #[error("the hive is not available ({status} {code}): {message}")]
    Unavailable {
        /// The HTTP status.
        status: u16,
        /// The hive's error code.
        code: String,
        /// The hive's error text.
        message: String,
    },
    /// The hive refused the request as malformed or unauthorised (exit 2).
    #[error("the hive refused the request ({status} {code}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The hive's error code.
        code: String,
        /// The hive's error text.
        message: String,
    },
    /// The worker, job or model does not exist (exit 1).
    #[error("{message}")]
    NotFound {
        /// The hive's error code (`worker_not_found`, `job_not_found`).
        code: String,
        /// The hive's error text.
        message: String,
    },
    /// The hive answered that it could not do it (a job that already finished, an internal
    /// error) (exit 1).
    #[error("{message} ({status} {code})")]
    NotDone {
        /// The HTTP status.
        status: u16,
        /// The hive's error code.
        code: String,
        /// The hive's error text.
        message: String,
    },
    /// The command line asks for something that cannot be done as given (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The job failed (exit 1).
    #[error("{reason}")]
    JobFailed {
        /// The job.
        job_id: String,
        /// Its failure reason.
        reason: String,
    },
    /// The job was cancelled (exit 1).
    #[error("job {job_id} was cancelled")]
    JobCancelled {
        /// The job.
        job_id: String,
    },
    /// Ctrl-C while following (exit 130); the job goes on.
    #[error(
        "stopped following {job_id}; the job goes on. Follow it again with `rbee-hive follow {job_id}`, \
         or cancel it with `rbee-hive cancel {job_id}`"
    )]
    Interrupted {
        /// The job.
        job_id: String,
    },
}

impl CliError {
    /// The hive's answer `status` with its JSON error `code` and `message`, as an error of
    /// the command.
    pub(crate) fn from_answer(status: u16, code: String, message: String) -> Self {
        match status {
            404 => Self::NotFound { code, message },
            503 => Self::Unavailable {
                status,
                code,
                message,
            },
            400..=499 if status != 409 => Self::Refused {
                status,
                code,
                message,
            },
            _ => Self::NotDone {
                status,
                code,
                message,
            },
        }
    }

    /// The process exit code.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::JobFailed { .. }
            | Self::JobCancelled { .. }
            | Self::NotFound { .. }
            | Self::NotDone { .. } => exit::FAILED,
            Self::Refused { .. } | Self::Usage(_) => exit::USAGE,
            Self::Unreachable { .. } | Self::NotAHive { .. } | Self::Unavailable { .. } => {
                exit::UNREACHABLE
            }
            Self::Interrupted { .. } => exit::INTERRUPTED,
        }
    }

    /// The snake_case code of `--json` errors: the hive's own where it gave one.
    pub(crate) fn code(&self) -> &str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::NotAHive { .. } => "not_rbee_hive",
            Self::Unavailable { code, .. }
            | Self::Refused { code, .. }
            | Self::NotFound { code, .. }
            | Self::NotDone { code, .. } => code,
            Self::Usage(_) => "usage",
            Self::JobFailed { .. } => "job_failed",
            Self::JobCancelled { .. } => "job_cancelled",
            Self::Interrupted { .. } => "interrupted",
        }
    }

    /// Prints the error last, on stderr: `error: <sentence>`, or with `json` one object
    /// `{"error", "code", "exit"}`; returns the exit code.
    pub(crate) fn report(&self, json: bool) -> ExitCode {
        report(&self.to_string(), self.code(), self.exit_code(), json)
    }
}

/// A 2xx answer this client cannot read (exit 1): the hive answered, the command is not done.
pub(crate) fn unexpected(message: String) -> CliError {
    CliError::NotDone {
        status: 200,
        code: "unexpected_answer".to_owned(),
        message,
    }
}

/// Prints a usage error (exit 2) as [`CliError::report`] does.
pub(crate) fn report_usage(sentence: &str, json: bool) -> ExitCode {
    report(sentence, "usage", exit::USAGE, json)
}

fn report(sentence: &str, code: &str, exit: u8, json: bool) -> ExitCode {
    if json {
        let object = serde_json::json!({"error": sentence, "code": code, "exit": exit});
        output::line(Stream::Stderr, Tone::Plain, &object.to_string());
    } else {
        output::line(Stream::Stderr, Tone::Error, &format!("error: {sentence}"));
    }
    ExitCode::from(exit)
}

/// One event of a job's stream.
#[derive(Debug, Clone)]
pub(crate) enum JobEvent {
    /// A narration line.
    Narration {
        /// `info`, `warn` or `error`.
        level: String,
        /// The actor (`hv-router`, `job-exec`, …).
        actor: String,
        /// The action (`worker_spawn_ready`, …).
        action: String,
        /// The human text.
        human: String,
    },
    /// The operation's result object.
    Result(Value),
    /// The end: `succeeded`, `failed` or `cancelled`, with the failure reason.
    Done {
        /// The final state.
        state: String,
        /// Why it failed.
        error: Option<String>,
    },
}

/// A hive, as a client sees it.
#[derive(Debug, Clone)]
pub(crate) struct HiveClient {
    base: String,
    http: reqwest::Client,
    hive_id: Option<String>,
}

impl HiveClient {
    /// A client for the hive at `args.hive`, sending the token from `args.token_file`.
    pub(crate) fn new(args: &GlobalArgs) -> Result<Self, CliError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(path) = &args.token_file {
            let token = std::fs::read_to_string(path).map_err(|e| {
                CliError::Usage(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))
            })?;
            let value = format!("Bearer {}", token.trim()).parse().map_err(|_| {
                CliError::Usage(format!(
                    "the token file {} holds characters a header cannot carry",
                    path.display()
                ))
            })?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot make an HTTP client: {e}")))?;
        Ok(Self {
            base: args.hive.trim_end_matches('/').to_owned(),
            http,
            hive_id: args.hive_id.clone(),
        })
    }

    /// The hive's URL.
    pub(crate) fn url(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, error: &reqwest::Error) -> CliError {
        // The operating system's word for it is an `io::Error` somewhere down the chain.
        let mut source = std::error::Error::source(error);
        let mut io = None;
        while let Some(cause) = source {
            if let Some(found) = cause.downcast_ref::<std::io::Error>() {
                io = Some(found);
            }
            source = cause.source();
        }
        let reason = match io {
            Some(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                "connection refused".to_owned()
            }
            Some(io) => io.to_string(),
            None if error.is_timeout() => "no answer within 5 s".to_owned(),
            None => error.to_string(),
        };
        CliError::Unreachable {
            url: self.base.clone(),
            reason,
        }
    }

    /// Turns a non-2xx answer into the [`CliError`] its status means, with the hive's JSON
    /// error.
    async fn check(&self, response: reqwest::Response) -> Result<reqwest::Response, CliError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        match serde_json::from_str::<Value>(&body) {
            Ok(json) if json["error"].is_string() => Err(CliError::from_answer(
                status.as_u16(),
                json["code"].as_str().unwrap_or("error").to_owned(),
                json["error"].as_str().unwrap_or_default().to_owned(),
            )),
            _ => Err(CliError::NotAHive {
                url: self.base.clone(),
                status: status.as_u16(),
            }),
        }
    }

    /// `GET path` (a path of the hive), its body as `T`.
    pub(crate) async fn get_typed<T: serde::de::DeserializeOwned>(
        &self,
        url: reqwest::Url,
    ) -> Result<T, CliError> {
        let path = url.path().to_owned();
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let body = self
            .check(response)
            .await?
            .bytes()
            .await
            .map_err(|e| self.unreachable(&e))?;
        serde_json::from_slice(&body).map_err(|e| {
            unexpected(format!(
                "the hive's answer to {path} is not what this client reads: {e}"
            ))
        })
    }

    /// The URL of the hive's `segments` (each escaped as one path segment).
    pub(crate) fn url_of(&self, segments: &[&str]) -> Result<reqwest::Url, CliError> {
        let mut url = reqwest::Url::parse(&self.base)
            .map_err(|e| CliError::Usage(format!("bad hive URL {}: {e}", self.base)))?;
        url.path_segments_mut()
            .map_err(|()| CliError::Usage(format!("bad hive URL {}", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// `GET /v1/workers`: every listed worker with its last sample, in one request.
    pub(crate) async fn workers(&self) -> Result<Vec<ListedWorker>, CliError> {
        #[derive(Deserialize)]
        struct Workers {
            workers: Vec<ListedWorker>,
        }
        let url = self.url_of(&["v1", "workers"])?;
        Ok(self.get_typed::<Workers>(url).await?.workers)
    }

    /// `GET /v1/workers/{id}`: one worker with its last sample, as JSON (every field, for
    /// `get --field`).
    pub(crate) async fn worker(&self, id: &str) -> Result<Value, CliError> {
        self.get_typed(self.url_of(&["v1", "workers", id])?).await
    }

    /// `GET /v1/workers/{id}/logs`: passes each piece of the worker's output to `on_bytes`
    /// as it arrives (with `follow`, until the worker is gone).
    pub(crate) async fn logs(
        &self,
        id: &str,
        tail: Option<usize>,
        follow: bool,
        mut on_bytes: impl FnMut(&[u8]),
    ) -> Result<(), CliError> {
        let mut url = self.url_of(&["v1", "workers", id, "logs"])?;
        if let Some(lines) = tail {
            url.query_pairs_mut()
                .append_pair("tail", &lines.to_string());
        }
        if follow {
            url.query_pairs_mut().append_pair("follow", "true");
        }
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let response = self.check(response).await?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            on_bytes(&chunk.map_err(|e| self.unreachable(&e))?);
        }
        Ok(())
    }

    /// `GET /health`: the hive's version and id (from its response headers).
    pub(crate) async fn health(&self) -> Result<(String, String), CliError> {
        let response = self
            .http
            .get(format!("{}/health", self.base))
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let response = self.check(response).await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let version = header("server");
        let hive_id = header(hive_api::HIVE_ID_HEADER);
        Ok((version, hive_id))
    }

    /// The `hive_id` to put in operations: the one given, else the one the hive reports.
    pub(crate) async fn hive_id(&self) -> Result<String, CliError> {
        if let Some(id) = &self.hive_id {
            return Ok(id.clone());
        }
        let (_, id) = self.health().await?;
        Ok(if id.is_empty() {
            hive_api::DEFAULT_HIVE_ID.to_owned()
        } else {
            id
        })
    }

    /// Submits an operation; returns the job id.
    pub(crate) async fn submit(&self, operation: &Value) -> Result<String, CliError> {
        let response = self
            .http
            .post(format!("{}/v1/jobs", self.base))
            .json(operation)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let answer: Value = self
            .check(response)
            .await?
            .json()
            .await
            .map_err(|e| unexpected(format!("the hive's answer is not JSON: {e}")))?;
        answer["job_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| unexpected(format!("the hive's answer has no job_id: {answer}")))
    }

    /// Cancels a job.
    pub(crate) async fn cancel(&self, job_id: &str) -> Result<(), CliError> {
        let response = self
            .http
            .delete(format!("{}/v1/jobs/{job_id}", self.base))
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        self.check(response).await.map(drop)
    }

    /// Follows a job's stream, calling `on_event` with each event (and `on_line` with each
    /// raw NDJSON line) as it arrives; returns the result object, if any, once the job has
    /// succeeded. Ctrl-C stops following ([`CliError::Interrupted`]).
    pub(crate) async fn follow(
        &self,
        job_id: &str,
        mut on_event: impl FnMut(&JobEvent),
        mut on_line: impl FnMut(&str),
    ) -> Result<Option<Value>, CliError> {
        let following = async {
            let response = self
                .http
                .get(format!(
                    "{}/v1/jobs/{job_id}/stream?format=ndjson",
                    self.base
                ))
                .send()
                .await
                .map_err(|e| self.unreachable(&e))?;
            let response = self.check(response).await?;
            let mut body = response.bytes_stream();
            let mut pending = Vec::new();
            let mut result = None;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| self.unreachable(&e))?;
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let line = String::from_utf8_lossy(&line[..end]).into_owned();
                    on_line(&line);
                    let Some(event) = parse_event(&line) else {
                        continue;
                    };
                    on_event(&event);
                    match event {
                        JobEvent::Result(value) => result = Some(value),
                        JobEvent::Done { state, error } => {
                            return match state.as_str() {
                                "succeeded" => Ok(result),
                                "cancelled" => Err(CliError::JobCancelled {
                                    job_id: job_id.to_owned(),
                                }),
                                _ => Err(CliError::JobFailed {
                                    job_id: job_id.to_owned(),
                                    reason: error.unwrap_or_else(|| "the job failed".to_owned()),
                                }),
                            };
                        }
                        JobEvent::Narration { .. } => {}
                    }
                }
            }
            Err(CliError::Unreachable {
                url: self.base.clone(),
                reason: format!("the stream of {job_id} ended before the job did"),
            })
        };
        tokio::select! {
            outcome = following => outcome,
            _ = tokio::signal::ctrl_c() => Err(CliError::Interrupted { job_id: job_id.to_owned() }),
        }
    }
}

/// A worker as `GET /v1/workers` lists it: its record and its last resource sample.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ListedWorker {
    /// The record.
    #[serde(flatten)]
    pub record: WorkerRecord,
    /// The last sample of its current run, if there is one.
    #[serde(default)]
    pub stats: Option<WorkerStats>,
}

/// One NDJSON line of a stream: `{"event": "narration"|"result"|"done", "data": …}`.
pub(crate) fn parse_event(line: &str) -> Option<JobEvent> {
    let value: Value = serde_json::from_str(line).ok()?;
    let data = &value["data"];
    let text = |key: &str| data[key].as_str().unwrap_or("").to_owned();
    match value["event"].as_str()? {
        "narration" => Some(JobEvent::Narration {
            level: text("level"),
            actor: text("actor"),
            action: text("action"),
            human: text("human"),
        }),
        "result" => Some(JobEvent::Result(data.clone())),
        "done" => Some(JobEvent::Done {
            state: text("state"),
            error: data["error"].as_str().map(str::to_owned),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_kinds_of_event() {
        let narration = r#"{"event":"narration","id":1,"data":{"seq":1,"actor":"hv-router","action":"worker_list_start","level":"info","human":"📋 Listing workers","fields":{}}}"#;
        assert!(matches!(
            parse_event(narration),
            Some(JobEvent::Narration { ref human, ref action, .. }) if human == "📋 Listing workers" && action == "worker_list_start"
        ));
        let result = r#"{"event":"result","id":2,"data":{"workers":[]}}"#;
        assert!(
            matches!(parse_event(result), Some(JobEvent::Result(v)) if v["workers"].is_array())
        );
        let done = r#"{"event":"done","data":{"state":"failed","error":"worker 'x' not found"}}"#;
        assert!(matches!(
            parse_event(done),
            Some(JobEvent::Done { ref state, error: Some(ref e) }) if state == "failed" && e == "worker 'x' not found"
        ));
        assert!(parse_event("not json").is_none());
    }

    #[test]
    fn exit_codes() {
        let failed = CliError::JobFailed {
            job_id: "j".into(),
            reason: "r".into(),
        };
        assert_eq!(failed.exit_code(), 1);
        assert_eq!(
            CliError::Unreachable {
                url: "u".into(),
                reason: "r".into()
            }
            .exit_code(),
            3
        );
        assert_eq!(CliError::Usage("u".into()).exit_code(), 2);
        let answer = |status| CliError::from_answer(status, "c".into(), "m".into()).exit_code();
        assert_eq!(
            [400, 401, 404, 409, 413, 415, 500, 503].map(answer),
            [2, 2, 1, 1, 2, 2, 1, 3]
        );
        assert_eq!(
            CliError::Interrupted { job_id: "j".into() }.exit_code(),
            130
        );
    }
}
