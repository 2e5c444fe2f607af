//! The two-line start: `difflog::autolog(Init::project("…"))` opens a run and
//! makes it the active run, into which every [`AutologCall::call`] records.
//! `call` is the recorder's extension of [`Pipeline`] (the trait itself
//! knows nothing of recording), implemented for every pipeline.
//!
//! Rust runs no destructors for statics at exit, so unlike W&B's autolog the
//! active run is tied to a guard: keep it in a named binding
//! (`let _run = …`, not `let _ = …`) and the run finishes, durably, when the
//! guard goes out of scope.

use super::{Init, Run};
use crate::error::{Error, Result};
use crate::event::RunStatus;
use crate::pipeline::{CallContext, Pipeline, PipelineError};
use std::sync::{Arc, Mutex};

static ACTIVE: Mutex<Option<Arc<Run>>> = Mutex::new(None);

/// Starts a run and makes it the active run for [`AutologCall::call`].
/// Fails if another autolog run is active.
pub fn autolog(init: Init) -> Result<Autolog> {
    let mut g = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(run) = g.as_ref() {
        return Err(Error::Invalid(format!(
            "autolog is already active (run {}); drop its guard or call finish() first",
            run.id().unwrap_or("disabled")
        )));
    }
    let run = Arc::new(Run::create(init)?);
    *g = Some(Arc::clone(&run));
    Ok(Autolog { run })
}

/// The active run, if autolog was started.
pub fn active() -> Option<Arc<Run>> {
    ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Keeps the autolog run active; finishes it when dropped.
pub struct Autolog {
    run: Arc<Run>,
}

impl Autolog {
    /// The active run (to log config, metrics or images by hand).
    pub fn run(&self) -> &Run {
        &self.run
    }

    /// Ends the run and reports the first recording error, if any.
    pub fn finish(self) -> Result<()> {
        self.deactivate();
        self.run.close(RunStatus::Finished, None)
    }

    fn deactivate(&self) {
        let mut g = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(g.as_ref(), Some(r) if Arc::ptr_eq(r, &self.run)) {
            *g = None;
        }
    }
}

impl Drop for Autolog {
    fn drop(&mut self) {
        self.deactivate();
        // The run's own drop (when the last Arc goes) finishes it; finishing
        // here makes it durable now even if a pipeline call holds a clone.
        let status = if std::thread::panicking() {
            RunStatus::Failed
        } else {
            RunStatus::Finished
        };
        let error = (status == RunStatus::Failed).then(|| "the recording thread panicked".into());
        if let Err(e) = self.run.close(status, error) {
            eprintln!("difflog: {e}");
        }
    }
}

/// `pipeline.call(&request)`: runs a call, recorded into the active run
/// (see [`autolog()`]) if there is one. Implemented for every [`Pipeline`];
/// bring it into scope with `use difflog::AutologCall`.
pub trait AutologCall: Pipeline + Sized {
    /// Runs a call recorded into the active run, or unrecorded if there is none.
    fn call(&mut self, request: &Self::Request) -> Result<Self::Output, PipelineError> {
        match active() {
            Some(run) => run.record(self, request),
            None => {
                self.prepare(request)?;
                self.run(request, &mut CallContext::detached())
            }
        }
    }
}

impl<P: Pipeline> AutologCall for P {}
