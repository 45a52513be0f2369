//! Where narration goes.
//!
//! Every narration goes to the daemon log through `tracing` (target `narration`, with
//! `actor`, `action` and `job_id` fields). A narration emitted to a [`NarrationSink`] — the
//! handle of a running job, passed to the operation — also goes to that job's stream. There
//! is no process-wide table: context is passed, not looked up.

use crate::event::{Level, Narration};

/// Receives the narrations of one job. Must not block: it is called on the narrating task.
pub trait NarrationSink {
    /// The job the narrations belong to.
    fn job_id(&self) -> &str;

    /// Takes one narration of the job.
    fn push(&self, narration: Narration);
}

/// Writes a narration to the daemon log.
pub(crate) fn log(n: &Narration) {
    let job_id = n.job_id.as_deref().unwrap_or("-");
    match n.level {
        Level::Info => {
            tracing::info!(target: "narration", actor = n.actor, action = n.action, job_id, "{}", n.human)
        }
        Level::Warn => {
            tracing::warn!(target: "narration", actor = n.actor, action = n.action, job_id, "{}", n.human)
        }
        Level::Error => {
            tracing::error!(target: "narration", actor = n.actor, action = n.action, job_id, "{}", n.human)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::NarrationFactory;

    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);

    impl NarrationSink for Collect {
        fn job_id(&self) -> &str {
            "job-collect"
        }

        fn push(&self, narration: Narration) {
            assert_eq!(narration.job_id.as_deref(), Some("job-collect"));
            self.0.lock().unwrap().push(narration.text());
        }
    }

    const NARRATE: NarrationFactory = NarrationFactory::new("test");

    #[test]
    fn goes_to_the_sink_it_is_emitted_to() {
        let sink = Collect::default();
        NARRATE.action("one").human("1").emit_to(&sink);
        NARRATE.action("none").human("2").emit();
        assert_eq!(
            *sink.0.lock().unwrap(),
            vec!["[test      ] one            : 1".to_string()]
        );
    }
}
