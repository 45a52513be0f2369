//! A minimal HTTP/1.1 client for the benchmarks: one keep-alive connection, a `POST
//! /v1/jobs` and the job's stream read to its end. Hand-written so that the client costs
//! as little as possible and the numbers are the hive's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One keep-alive connection to the hive.
pub struct Connection {
    stream: BufReader<TcpStream>,
    host: String,
    line: String,
    /// The `content-type` of the last answer's head (empty without one).
    content_type: String,
}

impl Connection {
    /// Connects (with `TCP_NODELAY`).
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            host: addr.to_string(),
            line: String::new(),
            content_type: String::new(),
        })
    }

    async fn head(&mut self) -> anyhow::Result<(u16, Option<usize>)> {
        self.line.clear();
        self.stream.read_line(&mut self.line).await?;
        let status = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("status line")?;
        let mut length = None;
        self.content_type.clear();
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                bail!("connection closed in the headers");
            }
            let line = self.line.trim_end();
            if line.is_empty() {
                return Ok((status, length));
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().ok();
                } else if name.eq_ignore_ascii_case("content-type") {
                    self.content_type = value.trim().to_owned();
                }
            }
        }
    }

    /// Submits `body`; returns the job id.
    pub async fn submit(&mut self, body: &str) -> anyhow::Result<String> {
        let request = format!(
            "POST /v1/jobs HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let (status, length) = self.head().await?;
        let mut answer = vec![0; length.context("content-length")?];
        self.stream.read_exact(&mut answer).await?;
        if status != 200 {
            bail!(
                "POST answered {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let value: serde_json::Value = serde_json::from_slice(&answer)?;
        Ok(value["job_id"].as_str().context("job_id")?.to_owned())
    }

    /// Reads a job's stream to its end; returns the body and when (an instant) `marker`
    /// first appeared in it, if it did.
    async fn stream_watching(
        &mut self,
        job_id: &str,
        marker: &str,
    ) -> anyhow::Result<(String, Option<Instant>)> {
        let request = format!(
            "GET /v1/jobs/{job_id}/stream HTTP/1.1\r\nhost: {}\r\n\r\n",
            self.host
        );
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let (status, _) = self.head().await?;
        if status != 200 {
            bail!("stream answered {status}");
        }
        let mut body = Vec::new();
        let mut seen = None;
        loop {
            self.line.clear();
            self.stream.read_line(&mut self.line).await?;
            let size = usize::from_str_radix(self.line.trim(), 16).context("chunk size")?;
            let start = body.len();
            body.resize(start + size + 2, 0);
            self.stream.read_exact(&mut body[start..]).await?;
            body.truncate(start + size);
            if seen.is_none()
                && !marker.is_empty()
                && String::from_utf8_lossy(&body[start.saturating_sub(marker.len())..])
                    .contains(marker)
            {
                seen = Some(Instant::now());
            }
            if size == 0 {
                return Ok((String::from_utf8(body)?, seen));
            }
        }
    }

    /// Submits and reads the stream; fails unless it ends with `[DONE]` after a success.
    pub async fn run(&mut self, body: &str) -> anyhow::Result<String> {
        self.run_until(body, "").await.map(|(text, _)| text)
    }

    /// As [`run`](Self::run), and returns how long after the POST was sent `marker`
    /// appeared in the stream (a narration action such as `worker_spawn_ready`).
    pub async fn run_until(
        &mut self,
        body: &str,
        marker: &str,
    ) -> anyhow::Result<(String, Duration)> {
        let (text, started, at) = self.run_marked(body, marker).await?;
        Ok((text, at - started))
    }

    /// As [`run`](Self::run), and returns the instants at which the POST was sent and at
    /// which `marker` appeared in the stream (its end without a marker), for scenarios that
    /// compare them with another clock reading of this process.
    pub async fn run_marked(
        &mut self,
        body: &str,
        marker: &str,
    ) -> anyhow::Result<(String, Instant, Instant)> {
        let started = Instant::now();
        let job_id = self.submit(body).await?;
        let (text, seen) = self.stream_watching(&job_id, marker).await?;
        if !text.ends_with("data: [DONE]\n\n") || text.contains("data: [ERROR]") {
            bail!("job {job_id} did not succeed:\n{text}");
        }
        let at = match (marker.is_empty(), seen) {
            (true, _) => Instant::now(),
            (false, Some(at)) => at,
            (false, None) => bail!("job {job_id} never said {marker}:\n{text}"),
        };
        Ok((text, started, at))
    }

    /// `GET path`; returns the status and the body (which must carry a content-length).
    pub async fn get(&mut self, path: &str) -> anyhow::Result<(u16, String)> {
        let request = format!("GET {path} HTTP/1.1\r\nhost: {}\r\n\r\n", self.host);
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let (status, length) = self.head().await?;
        let mut body = vec![0; length.context("content-length")?];
        self.stream.read_exact(&mut body).await?;
        Ok((status, String::from_utf8(body)?))
    }

    /// `GET path` of a chunked stream: reads its head; then [`next_chunk`](Self::next_chunk).
    pub async fn open_stream(&mut self, path: &str) -> anyhow::Result<()> {
        let request = format!("GET {path} HTTP/1.1\r\nhost: {}\r\n\r\n", self.host);
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let (status, _) = self.head().await?;
        if status != 200 {
            bail!("GET {path} answered {status}");
        }
        Ok(())
    }

    /// `GET path` of an event stream as an SSE client asks for one (`accept:
    /// text/event-stream`); fails, as such a client does, unless the answer is 200 with
    /// `content-type: text/event-stream`. Then [`next_chunk`](Self::next_chunk).
    pub async fn open_event_stream(&mut self, path: &str) -> anyhow::Result<()> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\ncache-control: no-cache\r\n\r\n",
            self.host
        );
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let (status, _) = self.head().await?;
        if status != 200 {
            bail!("GET {path} answered {status}");
        }
        if !self
            .content_type
            .to_ascii_lowercase()
            .starts_with("text/event-stream")
        {
            bail!(
                "GET {path} answered content-type {:?}, not text/event-stream",
                self.content_type
            );
        }
        Ok(())
    }

    /// The next chunk of a stream opened with [`open_stream`](Self::open_stream); empty at
    /// its end.
    pub async fn next_chunk(&mut self) -> anyhow::Result<Vec<u8>> {
        self.line.clear();
        self.stream.read_line(&mut self.line).await?;
        let size = usize::from_str_radix(self.line.trim(), 16).context("chunk size")?;
        let mut chunk = vec![0; size + 2];
        self.stream.read_exact(&mut chunk).await?;
        chunk.truncate(size);
        Ok(chunk)
    }
}
