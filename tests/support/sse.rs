//! Parsing of stream bodies, strictly: tests see exactly what went over the wire.

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
