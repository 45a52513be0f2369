//! Narration: the one human line that each step of a job says about itself.
//!
//! A narration is built with the seed's builder and emitted to the job it belongs to,
//! `NARRATE.action("worker_list_start").context(&hive_id).human("📋 Listing workers on hive '{}'").emit_to(job)`,
//! and goes to two places: that job's event log (through the [`NarrationSink`] the operation
//! was handed), and the daemon log through `tracing`, with the job id as a field. A line
//! that belongs to no job is `.emit()`ted to the daemon log only. This crate knows nothing
//! of jobs or HTTP, and keeps no global state: it only routes lines.
//!
//! # Layout
//! - `event`: the [`Narration`] record and its one-line text (`[actor     ] action         : human`).
//! - `builder`: [`NarrationFactory`] (one per actor) and [`NarrationBuilder`].
//! - `template`: fills `{}` and `{0}`/`{1}` placeholders from the contexts, in order.
//! - `sink`: where a narration goes: [`NarrationSink`] (a job), and the daemon log.

#![deny(unreachable_pub)]

mod builder;
mod event;
mod sink;
mod template;

pub use builder::{NarrationBuilder, NarrationFactory};
pub use event::{Level, Narration};
pub use sink::NarrationSink;
