//! A small HTTP file server for the download tests and the benchmark: files from memory at
//! `/files/<name>`, with `Range` (one `bytes=a-` or `bytes=a-b` range), `HEAD` and an `ETag`;
//! Hugging Face hub paths `/<owner>/<repo>/resolve/main/<name>` answer as the hub does for
//! LFS files: a 302 to the file with `X-Linked-Etag` (the sha256) and `X-Linked-Size`;
//! `/api/models/<owner>/<repo>` lists a repository's files (`siblings`) as the hub API does,
//! for the repositories given with [`FileServer::add_repo`] (404 for any other).
//!
//! Switches ([`Switches`]) make it slow, drop the connection after N body bytes, announce
//! a wrong sha256 or size, ignore `Range`, require a bearer token, or redirect somewhere
//! else.
//! Every request is recorded ([`FileServer::requests`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Fault switches; the default serves correctly and fast.
#[derive(Debug, Clone, Default)]
pub struct Switches {
    /// Send at most this many body bytes per second.
    pub bytes_per_second: Option<u64>,
    /// Break the connection after this many body bytes of a response.
    pub fail_after: Option<u64>,
    /// Announce a wrong sha256 in `X-Linked-Etag`.
    pub wrong_checksum: bool,
    /// Answer every request with the whole file (status 200), whatever its `Range`.
    pub ignore_range: bool,
    /// Require `Authorization: Bearer <token>` on hub paths (401 otherwise).
    pub require_token: Option<String>,
    /// Hub paths redirect here instead of to the file.
    pub redirect_to: Option<String>,
    /// Hub paths announce this size in `X-Linked-Size` instead of the file's.
    pub linked_size: Option<u64>,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// `GET`, `HEAD`, ….
    pub method: String,
    /// The path.
    pub path: String,
    /// The `Range` header.
    pub range: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Shared {
    files: HashMap<String, Bytes>,
    repos: HashMap<String, Vec<String>>,
    switches: Switches,
    requests: Vec<SeenRequest>,
}

type SharedState = Arc<Mutex<Shared>>;

/// A running server; it stops when dropped.
pub struct FileServer {
    addr: SocketAddr,
    state: SharedState,
    task: tokio::task::JoinHandle<()>,
}

impl FileServer {
    /// Starts a server on `127.0.0.1:0`.
    pub async fn start() -> Self {
        let state = SharedState::default();
        let app = Router::new()
            .route("/files/{name}", axum::routing::get(file))
            .route("/api/models/{owner}/{repo}", axum::routing::get(repo_info))
            .route(
                "/{owner}/{repo}/resolve/main/{name}",
                axum::routing::get(hub),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the file server");
        let addr = listener.local_addr().expect("file server address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    /// Serves `bytes` as `/files/<name>` (and through the hub paths); returns its sha256.
    pub fn add(&self, name: &str, bytes: impl Into<Bytes>) -> String {
        let bytes = bytes.into();
        let digest = sha256_hex(&bytes);
        self.state
            .lock()
            .expect("state")
            .files
            .insert(name.to_owned(), bytes);
        digest
    }

    /// Makes the hub API list `files` for repository `repo` (`owner/repo`). Listing is all
    /// it does: a listed file downloads only if it was [`add`](Self::add)ed too.
    pub fn add_repo(&self, repo: &str, files: &[&str]) {
        self.state.lock().expect("state").repos.insert(
            repo.to_owned(),
            files.iter().map(|f| (*f).to_owned()).collect(),
        );
    }

    /// Replaces the switches.
    pub fn set(&self, switches: Switches) {
        self.state.lock().expect("state").switches = switches;
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The requests seen so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.state.lock().expect("state").requests.clone()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The sha256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn record(state: &SharedState, method: &Method, path: String, headers: &HeaderMap) -> Switches {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut shared = state.lock().expect("state");
    shared.requests.push(SeenRequest {
        method: method.to_string(),
        path,
        range: text(header::RANGE),
        authorization: text(header::AUTHORIZATION),
    });
    shared.switches.clone()
}

async fn repo_info(
    State(state): State<SharedState>,
    Path((owner, repo)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let switches = record(
        &state,
        &method,
        format!("/api/models/{owner}/{repo}"),
        &headers,
    );
    if let Some(token) = &switches.require_token
        && headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(&format!("Bearer {token}"))
    {
        return (StatusCode::UNAUTHORIZED, "a token is required").into_response();
    }
    let id = format!("{owner}/{repo}");
    let Some(files) = state.lock().expect("state").repos.get(&id).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": "Repository not found"})),
        )
            .into_response();
    };
    let siblings: Vec<_> = files
        .iter()
        .map(|name| serde_json::json!({ "rfilename": name }))
        .collect();
    axum::Json(serde_json::json!({ "id": id, "siblings": siblings })).into_response()
}

async fn hub(
    State(state): State<SharedState>,
    Path((owner, repo, name)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let switches = record(
        &state,
        &method,
        format!("/{owner}/{repo}/resolve/main/{name}"),
        &headers,
    );
    if let Some(token) = &switches.require_token {
        let expected = format!("Bearer {token}");
        if headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(&expected)
        {
            return (StatusCode::UNAUTHORIZED, "a token is required").into_response();
        }
    }
    let Some(bytes) = state.lock().expect("state").files.get(&name).cloned() else {
        return (StatusCode::NOT_FOUND, "Entry not found").into_response();
    };
    let digest = if switches.wrong_checksum {
        "0".repeat(64)
    } else {
        sha256_hex(&bytes)
    };
    let location = switches
        .redirect_to
        .clone()
        .unwrap_or_else(|| format!("/files/{name}"));
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, location)
        .header("x-linked-etag", format!("\"{digest}\""))
        .header(
            "x-linked-size",
            switches.linked_size.unwrap_or(bytes.len() as u64),
        )
        .body(Body::empty())
        .expect("response")
}

async fn file(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let switches = record(&state, &method, format!("/files/{name}"), &headers);
    let Some(bytes) = state.lock().expect("state").files.get(&name).cloned() else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let total = bytes.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| !switches.ignore_range)
        .map(|text| parse_range(text, total).ok_or(()));
    let mut response = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{}\"", &sha256_hex(&bytes)[..16]));
    let (start, end) = match range {
        None => {
            response = response.status(StatusCode::OK);
            (0, total)
        }
        Some(Ok((start, end))) => {
            response = response.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{total}", end - 1),
            );
            (start, end)
        }
        Some(Err(())) => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{total}"))
                .body(Body::empty())
                .expect("response");
        }
    };
    let body = bytes.slice(start as usize..end as usize);
    response = response.header(header::CONTENT_LENGTH, body.len());
    if method == Method::HEAD {
        return response.body(Body::empty()).expect("response");
    }
    response
        .body(Body::from_stream(chunks(body, switches)))
        .expect("response")
}

/// `bytes=a-` or `bytes=a-b` → `(start, end_exclusive)`; `None` when unsatisfiable.
fn parse_range(text: &str, total: u64) -> Option<(u64, u64)> {
    let (first, last) = text.trim().strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = first.trim().parse().ok()?;
    let end = match last.trim() {
        "" => total,
        last => last.parse::<u64>().ok()?.saturating_add(1).min(total),
    };
    (start < end).then_some((start, end))
}

/// The body in chunks, slowed down or broken off as the switches say.
fn chunks(
    body: Bytes,
    switches: Switches,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    const CHUNK: usize = 256 * 1024;
    let chunk = match switches.bytes_per_second {
        Some(rate) => (rate as usize / 20).clamp(1, CHUNK),
        None => CHUNK,
    };
    futures::stream::unfold((body, 0u64), move |(rest, sent)| {
        let switches = switches.clone();
        async move {
            if rest.is_empty() {
                return None;
            }
            if let Some(limit) = switches.fail_after
                && sent >= limit
            {
                // Time for the bytes already sent to leave, so the client sees a body that
                // breaks off rather than no response at all.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let error = std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "switch: fail after N bytes",
                );
                return Some((Err(error), (Bytes::new(), sent)));
            }
            let mut take = chunk.min(rest.len());
            if let Some(limit) = switches.fail_after {
                take = take.min((limit - sent) as usize).max(1);
            }
            if let Some(rate) = switches.bytes_per_second {
                tokio::time::sleep(Duration::from_secs_f64(take as f64 / rate as f64)).await;
            }
            let piece = rest.slice(..take);
            Some((Ok(piece), (rest.slice(take..), sent + take as u64)))
        }
    })
}
