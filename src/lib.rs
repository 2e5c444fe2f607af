//! # difflog
//!
//! An offline run recorder for diffusion image generation. Pipelines record
//! every call — config, one table per call, images, timings — into a
//! self-contained run directory on local disk, with no network; the sync
//! daemon (`difflog-sync`) later uploads runs to a tracker.
//!
//! The roles:
//! - [`run`]: the writer side — [`Run`], [`Init`], [`autolog()`], the media
//!   store and the background writer;
//! - [`pipeline`]: the [`Pipeline`] trait any pipeline implements to be recorded;
//! - [`pipelines`]: Stable Diffusion on candle and the tiny built-in models;
//! - [`read`]: the only code that parses a run directory;
//! - [`sync`]: `difflog-sync`, uploading runs to MLflow;
//! - [`verify`], [`replay`], [`pack`], [`report`], [`cli`], [`bench`]: what the `difflog` command does;
//! - [`format`] and [`event`]: the run directory format v1 (see `schemas/README.md`);
//!   [`recipe`]: the generation parameters every generated PNG carries;
//! - `provenance`: the marks a run can put on its generated images (a
//!   signed C2PA manifest, an invisible watermark) and their checks.
//!
//! The two-line start, as with W&B's diffusers autolog:
//!
//! ```no_run
//! # fn main() -> Result<(), difflog::Error> {
//! let _run = difflog::autolog(difflog::Init::project("diffusers_logging"))?;
//! // every `pipeline.call(&request)` from here on is recorded into ./runs/<run-id>/
//! // (`call` comes from `use difflog::AutologCall`)
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

#[cfg(feature = "models")]
pub mod bench;
#[cfg(feature = "models")]
pub mod cli;
pub mod error;
pub mod event;
pub mod format;
#[cfg(feature = "models")]
pub mod generate;
pub mod import;
pub mod meta;
pub mod pack;
pub mod paths;
pub mod pipeline;
#[cfg(feature = "models")]
pub mod pipelines;
#[cfg(feature = "watermark")]
pub mod provenance;
pub mod read;
pub mod recipe;
pub mod redact;
#[cfg(feature = "models")]
pub mod replay;
pub mod report;
pub mod run;
#[cfg(feature = "sync")]
pub mod sync;
pub mod terminal;
pub mod verify;

pub use error::{Error, Result};

/// The version `--version` prints: the crate's version and the git commit
/// the binaries were built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DIFFLOG_GIT_COMMIT"),
    ")"
);
pub use pipeline::{
    CallContext, CallSpec, ImageRow, ImageSink, Pipeline, PipelineError, PipelineInfo, VideoRow,
};
pub use run::autolog::{autolog, Autolog, AutologCall};
pub use run::{Init, Mode, Run};
