//! The narration record and its one-line wire text (PROTOCOL §4).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// How much a narration matters; the daemon log uses it as the tracing level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// A normal step.
    Info,
    /// Something went wrong but the job goes on.
    Warn,
    /// The step failed.
    Error,
}

/// One narration: who (`actor`), which step (`action`), and the line a person reads (`human`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Narration {
    /// The component speaking, e.g. `hv-router`.
    pub actor: &'static str,
    /// The step, e.g. `worker_list_start`.
    pub action: &'static str,
    /// How much it matters.
    pub level: Level,
    /// The job this line belongs to, if any.
    pub job_id: Option<String>,
    /// The rendered human text (placeholders already filled).
    pub human: String,
    /// Machine-readable values for the structured stream format.
    pub fields: BTreeMap<String, serde_json::Value>,
    /// When it was emitted.
    pub ts: DateTime<Utc>,
}

impl Narration {
    /// The one-line text of PROTOCOL §4: actor padded to 10, action to 15, never truncated.
    pub fn text(&self) -> String {
        format_line(self.actor, self.action, &self.human)
    }
}

/// `format!("[{:<10}] {:<15}: {}", actor, action, human)`, the rbee line format.
pub(crate) fn format_line(actor: &str, action: &str, human: &str) -> String {
    format!("[{actor:<10}] {action:<15}: {human}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_actor_and_action() {
        assert_eq!(
            format_line(
                "hv-router",
                "worker_list_start",
                "📋 Listing workers on hive 'localhost'"
            ),
            "[hv-router ] worker_list_start: 📋 Listing workers on hive 'localhost'"
        );
        assert_eq!(
            format_line("job-exec", "failed", "Job x failed: boom"),
            "[job-exec  ] failed         : Job x failed: boom"
        );
    }

    #[test]
    fn never_truncates_long_names() {
        let line = format_line("a-very-long-actor", "an_action_longer_than_fifteen", "h");
        assert_eq!(line, "[a-very-long-actor] an_action_longer_than_fifteen: h");
    }
}
