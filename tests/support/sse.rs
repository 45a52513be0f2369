//! Parsing of stream bodies, strictly: tests see exactly what went over the wire.

use std::time::Duration;

use futures::StreamExt;

/// One parsed SSE event: its fields in order (`data` lines joined with `\n`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// `id:` if present.
    pub id: Option<String>,
    /// `event:` if present.
    pub event: Option<String>,
    /// The `data:` lines joined with newlines.
    pub data: String,
}

/// Splits an SSE body into events. Panics on a line that is not `id:`, `event:` or `data:`.
pub fn events(body: &str) -> Vec<Event> {
    let mut out = Vec::new();
    for block in body.split("\n\n").filter(|b| !b.is_empty()) {
        let mut event = Event::default();
        let mut data = Vec::new();
        for line in block.split('\n') {
            if let Some(v) = line.strip_prefix("data: ") {
                data.push(v);
            } else if let Some(v) = line.strip_prefix("id: ") {
                event.id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("event: ") {
                event.event = Some(v.to_owned());
            } else {
                panic!("unexpected SSE line {line:?} in {body:?}");
            }
        }
        event.data = data.join("\n");
        out.push(event);
    }
    assert!(
        body.is_empty() || body.ends_with("\n\n"),
        "body does not end with a blank line: {body:?}"
    );
    out
}

/// The data of each event of a default-format stream, which must carry `data:` lines only.
pub fn data_events(body: &str) -> Vec<String> {
    events(body)
        .into_iter()
        .map(|e| {
            assert!(
                e.id.is_none() && e.event.is_none(),
                "default format must be data-only: {body:?}"
            );
            e.data
        })
        .collect()
}

/// Reads events from `body` until `until` holds for one; returns those read (the last is the
/// one `until` took). `buffer` keeps what was read past it, for the next call. Fails the test
/// after 30 s.
pub async fn read_until<Chunk: AsRef<[u8]>>(
    body: &mut (impl futures::Stream<Item = reqwest::Result<Chunk>> + Unpin),
    buffer: &mut String,
    until: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    let read = async {
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let event = events(&block).remove(0);
                let done = until(&event);
                seen.push(event);
                if done {
                    return;
                }
            }
            let chunk = body.next().await.expect("the stream goes on").unwrap();
            buffer.push_str(&String::from_utf8_lossy(chunk.as_ref()));
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| panic!("no expected event; seen {seen:#?}"));
    seen
}
