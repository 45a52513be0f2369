//! The narration builder, in the seed's shape:
//! `NARRATE.action("…").job_id(&id).context(&a).context(&b).human("… {} … {}").emit()`.

use std::collections::BTreeMap;
use std::fmt::Display;

use chrono::Utc;
use serde::Serialize;

use crate::event::{Level, Narration};
use crate::sink::{self, NarrationSink};
use crate::template;

/// One per actor: `pub const NARRATE: NarrationFactory = NarrationFactory::new("hv-router");`.
#[derive(Debug, Clone, Copy)]
pub struct NarrationFactory {
    actor: &'static str,
}

impl NarrationFactory {
    /// A factory whose narrations all come from `actor`.
    pub const fn new(actor: &'static str) -> Self {
        Self { actor }
    }

    /// The actor this factory speaks for.
    pub const fn actor(&self) -> &'static str {
        self.actor
    }

    /// Starts a narration of step `action`.
    pub fn action(&self, action: &'static str) -> NarrationBuilder {
        NarrationBuilder {
            actor: self.actor,
            action,
            level: Level::Info,
            contexts: Vec::new(),
            human: String::new(),
            fields: BTreeMap::new(),
        }
    }
}

/// A narration being built; nothing happens until [`NarrationBuilder::emit`].
#[derive(Debug, Clone)]
#[must_use = "a narration does nothing until .emit()"]
pub struct NarrationBuilder {
    actor: &'static str,
    action: &'static str,
    level: Level,
    contexts: Vec<String>,
    human: String,
    fields: BTreeMap<String, serde_json::Value>,
}

impl NarrationBuilder {
    /// The value for the next `{}` (and for `{N}`, N being its position among the contexts).
    pub fn context(mut self, value: impl Display) -> Self {
        self.contexts.push(value.to_string());
        self
    }

    /// The human template; placeholders are filled at [`emit`](Self::emit).
    pub fn human(mut self, template: impl AsRef<str>) -> Self {
        self.human = template.as_ref().to_owned();
        self
    }

    /// A machine-readable value for the structured (`?format=json`) stream.
    pub fn field(mut self, key: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.fields.insert(key.to_owned(), value);
        self
    }

    /// Marks the line as a warning.
    pub fn warn(mut self) -> Self {
        self.level = Level::Warn;
        self
    }

    /// Marks the line as an error.
    pub fn error(mut self) -> Self {
        self.level = Level::Error;
        self
    }

    /// The narration this builder describes, placeholders filled, without sending it.
    pub fn build(self) -> Narration {
        Narration {
            actor: self.actor,
            action: self.action,
            level: self.level,
            job_id: None,
            human: template::fill(&self.human, &self.contexts),
            fields: self.fields,
            ts: Utc::now(),
        }
    }

    /// Sends the narration to the daemon log only (lines that belong to no job).
    pub fn emit(self) {
        sink::log(&self.build());
    }

    /// Sends the narration to `job`'s stream and to the daemon log, with the job's id.
    pub fn emit_to(self, job: &impl NarrationSink) {
        let mut narration = self.build();
        narration.job_id = Some(job.job_id().to_owned());
        sink::log(&narration);
        job.push(narration);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NARRATE: NarrationFactory = NarrationFactory::new("hv-router");

    #[test]
    fn builds_the_seed_line() {
        let n = NARRATE
            .action("worker_list_start")
            .context("localhost")
            .human("📋 Listing workers on hive '{}'")
            .build();
        assert_eq!(
            n.text(),
            "[hv-router ] worker_list_start: 📋 Listing workers on hive 'localhost'"
        );
    }

    #[test]
    fn every_context_lands_in_its_own_placeholder() {
        let n = NARRATE
            .action("worker_get_found")
            .context("worker-1")
            .context("test-model")
            .context("GPU-0")
            .context(9100)
            .human("✅ Worker: {} | Model: {} | Device: {} | Port: {}")
            .build();
        assert_eq!(
            n.human,
            "✅ Worker: worker-1 | Model: test-model | Device: GPU-0 | Port: 9100"
        );
    }

    #[test]
    fn fields_and_level() {
        let n = NARRATE
            .action("x")
            .field("port", 9100)
            .error()
            .human("h")
            .build();
        assert_eq!(n.fields["port"], serde_json::json!(9100));
        assert_eq!(n.level, Level::Error);
    }
}
