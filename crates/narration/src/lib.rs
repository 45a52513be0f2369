//! Narration: the one human line that each step of a job says about itself.
//!
//! A narration is built with the seed's builder,
//! `NARRATE.action("worker_list_start").job_id(&job_id).context(&hive_id).human("📋 Listing workers on hive '{}'").emit()`,
//! and goes to two places: the event log of its job (when it names one, through a
//! [`JobSink`] that the job server attaches), and the daemon log through `tracing`, with the
//! job id as a field. This crate knows nothing of jobs or HTTP; it only routes lines.
//!
//! # Layout
//! - [`event`]: the [`Narration`] record and its one-line text (`[actor     ] action         : human`).
//! - [`builder`]: [`NarrationFactory`] (one per actor) and [`NarrationBuilder`].
//! - [`template`]: fills `{}` and `{0}`/`{1}` placeholders from the contexts, in order.
//! - [`sink`]: where a narration goes: the job sinks by job id, and the daemon log.

pub mod builder;
pub mod event;
pub mod sink;
pub mod template;

pub use builder::{NarrationBuilder, NarrationFactory};
pub use event::{Level, Narration};
pub use sink::{JobSink, JobSinkGuard, attach_job_sink};
