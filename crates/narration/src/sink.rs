//! Where narration goes.
//!
//! Every narration goes to the daemon log through `tracing` (target `narration`, with
//! `actor`, `action` and `job_id` fields). A narration that names a job also goes to the
//! [`JobSink`] attached for that job id, if any: the job server attaches one per running job
//! and detaches it when the job ends, so lines emitted after the end go to the daemon log
//! only. The table is process-wide because job ids are unique (`job-<uuid>`), which lets
//! several hives share one process in tests.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use crate::event::{Level, Narration};

/// Receives the narrations of one job. Must not block: it is called on the narrating task.
pub trait JobSink: Send + Sync {
    /// Takes one narration of the job.
    fn push(&self, narration: Narration);
}

type SinkTable = HashMap<String, Arc<dyn JobSink>>;

// std RwLock: held only for a map lookup or update, never across an await.
static JOB_SINKS: LazyLock<RwLock<SinkTable>> = LazyLock::new(|| RwLock::new(HashMap::new()));

/// Detaches its job's sink when dropped.
#[must_use = "the sink is detached as soon as the guard is dropped"]
pub struct JobSinkGuard {
    job_id: String,
}

impl Drop for JobSinkGuard {
    fn drop(&mut self) {
        let mut table = JOB_SINKS.write().unwrap_or_else(|e| e.into_inner());
        table.remove(&self.job_id);
        // After a burst of jobs the table would keep its largest size; shrink it (only when
        // it is 4× too big, so this stays amortised O(1)).
        if table.capacity() > 64 && table.capacity() > table.len() * 4 {
            let target = table.len() * 2;
            table.shrink_to(target);
        }
    }
}

/// Routes narrations that name `job_id` to `sink` until the guard is dropped.
pub fn attach_job_sink(job_id: &str, sink: Arc<dyn JobSink>) -> JobSinkGuard {
    let mut table = JOB_SINKS.write().unwrap_or_else(|e| e.into_inner());
    table.insert(job_id.to_owned(), sink);
    JobSinkGuard {
        job_id: job_id.to_owned(),
    }
}

/// Sends `narration` to the daemon log and, if it names a job with an attached sink, there.
pub fn dispatch(narration: Narration) {
    log(&narration);
    let Some(job_id) = narration.job_id.as_deref() else {
        return;
    };
    let sink = {
        let table = JOB_SINKS.read().unwrap_or_else(|e| e.into_inner());
        table.get(job_id).cloned()
    };
    if let Some(sink) = sink {
        sink.push(narration);
    }
}

fn log(n: &Narration) {
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

    impl JobSink for Collect {
        fn push(&self, narration: Narration) {
            self.0.lock().unwrap().push(narration.text());
        }
    }

    const NARRATE: NarrationFactory = NarrationFactory::new("test");

    #[test]
    fn routes_by_job_id_until_detached() {
        let sink = Arc::new(Collect::default());
        let guard = attach_job_sink("job-sink-test-a", sink.clone());
        NARRATE
            .action("one")
            .job_id("job-sink-test-a")
            .human("1")
            .emit();
        NARRATE
            .action("other")
            .job_id("job-sink-test-b")
            .human("2")
            .emit();
        NARRATE.action("none").human("3").emit();
        drop(guard);
        NARRATE
            .action("late")
            .job_id("job-sink-test-a")
            .human("4")
            .emit();
        assert_eq!(
            *sink.0.lock().unwrap(),
            vec!["[test      ] one            : 1".to_string()]
        );
    }
}
