//! Sync targets behind one small trait.
//!
//! The engine decides *what* is due (a run to open, media to upload, a
//! finished call, metrics, a status); a target decides how its server wants
//! it. Every operation must be idempotent on the server — sent twice, it
//! shows once — because a kill between the server's acknowledgement and the
//! state's commit makes the engine send it again.
//!
//! A target may keep a cursor in [`Remote::data`] (W&B's history offset):
//! the methods that send take `&mut Remote`, change it only after the
//! server acknowledged, and the engine stores every change in the state.

pub mod differences;
#[cfg(test)]
pub mod memory;
pub mod mlflow;
pub mod wandb;

use super::error::{SyncError, SyncResult};
use super::http::Auth;
use super::TargetSpec;
use crate::error::{Error, Result};
use crate::event::{MediaEvent, MetricEvent, Record};
use crate::format::RunMeta;
use crate::read::{CallView, RunView};
use differences::Difference;
use std::path::Path;

/// A run as the engine hands it to a target.
pub struct Snapshot<'a> {
    /// The run directory.
    pub dir: &'a Path,
    /// Its `run.json`.
    pub meta: &'a RunMeta,
    /// Its records, in log order.
    pub records: &'a [Record],
    /// Its folded records.
    pub view: &'a RunView,
    /// Config keys with the *first* value each was recorded with (what a
    /// tracker with immutable params gets, identical on every resend).
    pub first_config: &'a serde_json::Map<String, serde_json::Value>,
    /// Told before the target makes a remote run a search did not find;
    /// `None`: no one to tell (`verify` makes none).
    pub create_gate: Option<&'a dyn CreateGate>,
}

impl Snapshot<'_> {
    /// The finished calls: those whose data an upload sends.
    pub fn finished_calls(&self) -> impl Iterator<Item = &CallView> {
        self.view.calls.values().filter(|c| c.finished.is_some())
    }

    /// The media an upload sends: those outside calls and those of
    /// finished calls, each digest once.
    pub fn sent_media(&self) -> Vec<&MediaEvent> {
        let mut seen = std::collections::BTreeSet::new();
        self.view
            .media
            .iter()
            .filter(|m| m.call.is_none())
            .chain(self.finished_calls().flat_map(|c| c.media.iter()))
            .filter(|m| seen.insert(m.digest.clone()))
            .collect()
    }
}

/// `s` cut to at most `max` bytes (on a character boundary), ending in
/// `...` when cut: values in tags and messages.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// What a target asks before it makes a remote run that its search did not
/// find (MLflow: each create makes a new run). A create sent by a process
/// killed before it recorded the answer may still be on its way to the
/// server; the gate says how long to wait for it before searching again,
/// and notes that a create is about to be sent.
pub trait CreateGate: Sync {
    /// How long to wait, then search again, before creating (zero: create
    /// now).
    fn wait_before_create(&self) -> std::time::Duration;

    /// Notes that a create is about to be sent.
    fn creating(&self) -> SyncResult<()>;
}

/// A remote run: its id and whatever else the target needs to find it again.
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    /// The server's run id.
    pub id: String,
    /// Target-specific data (JSON), kept in the state.
    pub data: String,
}

/// A target's typed view of the data it keeps for a run (`Remote::data`,
/// stored as JSON in the sync state): each target reads and writes its own
/// struct, never loose JSON fields.
pub(crate) trait RemoteData: serde::Serialize + serde::de::DeserializeOwned {
    /// The target's name, for the error when the stored data is unreadable.
    const TARGET: &'static str;

    /// Reads the data kept in `remote`.
    fn of(remote: &Remote) -> SyncResult<Self> {
        serde_json::from_str(&remote.data).map_err(|e| {
            crate::sync::error::SyncError::permanent(format!(
                "corrupt {} data in the sync state for remote run {}: {e}",
                Self::TARGET,
                remote.id
            ))
        })
    }

    /// Keeps this as `remote`'s data.
    fn store(&self, remote: &mut Remote) {
        remote.data = serde_json::to_string(self).unwrap_or_default();
    }
}

/// The run status a tracker shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteStatus {
    /// Still being recorded.
    Running,
    /// Ended normally.
    Finished,
    /// Ended with an error.
    Failed,
    /// The writer died (crash).
    Killed,
}

impl RemoteStatus {
    /// Upper-case name (MLflow's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteStatus::Running => "RUNNING",
            RemoteStatus::Finished => "FINISHED",
            RemoteStatus::Failed => "FAILED",
            RemoteStatus::Killed => "KILLED",
        }
    }
}

/// A tracking server difflog-sync uploads to.
#[allow(async_fn_in_trait)]
pub trait Target {
    /// Identifies the target in the state (URL without credentials).
    fn key(&self) -> &str;

    /// Finds or creates the remote run of `run`. `known` is what the state
    /// remembered; without it the target must find an existing remote run
    /// before creating one, so a lost state never creates a second run.
    async fn open_run(&self, run: &Snapshot<'_>, known: Option<&Remote>) -> SyncResult<Remote>;

    /// Sends run-level data: params, tags, config and workflow.
    async fn sync_meta(&self, remote: &Remote, run: &Snapshot<'_>) -> SyncResult<()>;

    /// Told, before a stream of uploads starts, every file it will send:
    /// the media not acknowledged yet and the tables of `calls`. A target
    /// that hands out an upload URL per file asks for them all at once here
    /// (one round trip instead of one per file). Default: nothing to do.
    async fn prepare_uploads(
        &self,
        _remote: &Remote,
        _run: &Snapshot<'_>,
        _media: &[&MediaEvent],
        _calls: &[&CallView],
    ) -> SyncResult<()> {
        Ok(())
    }

    /// Uploads one media file (already checked to be inside the run).
    async fn upload_media(
        &self,
        remote: &Remote,
        media: &MediaEvent,
        file: &Path,
    ) -> SyncResult<()>;

    /// Whether a call's table may reach the server before its images (the
    /// thin-link order: every run's metadata and tables first). A target
    /// whose tables carry their images (W&B's table artifacts) says no.
    fn tables_before_media(&self) -> bool {
        false
    }

    /// Uploads one finished call's table (its media may still be uploading).
    async fn upload_table(
        &self,
        remote: &Remote,
        run: &Snapshot<'_>,
        call: &CallView,
    ) -> SyncResult<()>;

    /// Sends what completes finished calls whose media and tables are
    /// uploaded (timings, table lists). Given together so a target can batch.
    async fn finish_calls(
        &self,
        remote: &mut Remote,
        run: &Snapshot<'_>,
        calls: &[&CallView],
    ) -> SyncResult<()>;

    /// Sends free-form metrics (with the record timestamp in ms).
    async fn log_metrics(
        &self,
        remote: &mut Remote,
        run: &Snapshot<'_>,
        metrics: &[(MetricEvent, i64)],
    ) -> SyncResult<()>;

    /// Sets the remote run's status (`run`: what the run holds now, for a
    /// target that writes files when a run ends).
    async fn set_status(
        &self,
        remote: &mut Remote,
        run: &Snapshot<'_>,
        status: RemoteStatus,
        end_ms: Option<i64>,
    ) -> SyncResult<()>;

    /// Called after every pass over a live run, also one that had nothing
    /// to send: a target that declares runs dead after a silence (W&B)
    /// sends a heartbeat here when one is due. Default: nothing.
    async fn keep_alive(&self, _remote: &Remote) -> SyncResult<()> {
        Ok(())
    }

    /// Finds the remote run of `run` without creating one (`verify`):
    /// `known` first (what the state remembered), else the run the target
    /// would find after a lost state. `None` when the server has none (or
    /// only one it deleted).
    async fn find_remote(
        &self,
        _run: &Snapshot<'_>,
        _known: Option<&Remote>,
    ) -> SyncResult<Option<Remote>> {
        Err(self.cannot_verify())
    }

    /// Reads the remote run back, `concurrency` downloads at once, and
    /// lists how it differs from `run`: every image (the digest of the
    /// bytes the server returns), table, param, tag, metric, file, and the
    /// status against `status`. Empty when the server holds the run
    /// completely.
    async fn read_back(
        &self,
        _remote: &Remote,
        _run: &Snapshot<'_>,
        _status: RemoteStatus,
        _concurrency: usize,
    ) -> SyncResult<Vec<Difference>> {
        Err(self.cannot_verify())
    }

    /// The error of a target that cannot read runs back.
    fn cannot_verify(&self) -> SyncError {
        SyncError::permanent(format!(
            "{}: reading runs back is not supported for this target yet (MLflow only)",
            super::redact_url(self.key())
        ))
    }

    /// The machine's network changed: drop the connections this target
    /// holds (they may be dead), so the next request opens a fresh one.
    fn network_changed(&self);

    /// When this target's server last answered a request (any status).
    fn last_answer(&self) -> Option<std::time::SystemTime>;
}

/// Builds the target of a spec.
pub fn target(spec: &TargetSpec) -> Result<AnyTarget> {
    match spec {
        TargetSpec::Mlflow { base, auth } => mlflow::Mlflow::new(base, auth.clone())
            .map(|m| AnyTarget::Mlflow(Box::new(m)))
            .map_err(crate::sync::error::SyncError::into_error),
        TargetSpec::Wandb {
            base,
            entity,
            project,
            auth,
        } => {
            if matches!(auth, Auth::None) {
                return Err(Error::Invalid(
                    "no W&B API key: set WANDB_API_KEY (as for W&B's own client) or put \
                     `api_key = \"…\"` in a --config file (mode 0600)"
                        .into(),
                ));
            }
            if entity.is_empty() {
                return Err(Error::Invalid(
                    "--to wandb://ENTITY[/PROJECT]: the entity (user or team) is missing".into(),
                ));
            }
            wandb::Wandb::new(base, auth.clone(), entity, project.as_deref())
                .map(|w| AnyTarget::Wandb(Box::new(w)))
                .map_err(crate::sync::error::SyncError::into_error)
        }
    }
}

/// Builds the targets of `specs`, refusing one given twice (its state rows
/// and uploads would collide).
pub fn targets(specs: &[TargetSpec]) -> Result<Vec<AnyTarget>> {
    let mut out: Vec<AnyTarget> = Vec::new();
    for s in specs {
        let t = target(s)?;
        if out.iter().any(|o| o.key() == t.key()) {
            return Err(Error::Invalid(format!(
                "{} is given twice (--to and --config together list each target once)",
                crate::sync::redact_url(t.key())
            )));
        }
        out.push(t);
    }
    Ok(out)
}

/// Any of the supported targets (what `--to` chose).
pub enum AnyTarget {
    /// An MLflow tracking server.
    Mlflow(Box<mlflow::Mlflow>),
    /// Weights & Biases (cloud or self-hosted W&B Server).
    Wandb(Box<wandb::Wandb>),
}

/// Forwards a call to whichever target this is.
macro_rules! each {
    ($self:ident, $t:ident => $e:expr) => {
        match $self {
            AnyTarget::Mlflow($t) => $e,
            AnyTarget::Wandb($t) => $e,
        }
    };
}

impl Target for AnyTarget {
    fn key(&self) -> &str {
        each!(self, t => t.key())
    }

    async fn open_run(&self, run: &Snapshot<'_>, known: Option<&Remote>) -> SyncResult<Remote> {
        each!(self, t => t.open_run(run, known).await)
    }

    async fn sync_meta(&self, remote: &Remote, run: &Snapshot<'_>) -> SyncResult<()> {
        each!(self, t => t.sync_meta(remote, run).await)
    }

    async fn prepare_uploads(
        &self,
        remote: &Remote,
        run: &Snapshot<'_>,
        media: &[&MediaEvent],
        calls: &[&CallView],
    ) -> SyncResult<()> {
        each!(self, t => t.prepare_uploads(remote, run, media, calls).await)
    }

    async fn upload_media(
        &self,
        remote: &Remote,
        media: &MediaEvent,
        file: &Path,
    ) -> SyncResult<()> {
        each!(self, t => t.upload_media(remote, media, file).await)
    }

    fn tables_before_media(&self) -> bool {
        each!(self, t => t.tables_before_media())
    }

    async fn upload_table(
        &self,
        remote: &Remote,
        run: &Snapshot<'_>,
        call: &CallView,
    ) -> SyncResult<()> {
        each!(self, t => t.upload_table(remote, run, call).await)
    }

    async fn finish_calls(
        &self,
        remote: &mut Remote,
        run: &Snapshot<'_>,
        calls: &[&CallView],
    ) -> SyncResult<()> {
        each!(self, t => t.finish_calls(remote, run, calls).await)
    }

    async fn log_metrics(
        &self,
        remote: &mut Remote,
        run: &Snapshot<'_>,
        metrics: &[(MetricEvent, i64)],
    ) -> SyncResult<()> {
        each!(self, t => t.log_metrics(remote, run, metrics).await)
    }

    async fn set_status(
        &self,
        remote: &mut Remote,
        run: &Snapshot<'_>,
        status: RemoteStatus,
        end_ms: Option<i64>,
    ) -> SyncResult<()> {
        each!(self, t => t.set_status(remote, run, status, end_ms).await)
    }

    async fn keep_alive(&self, remote: &Remote) -> SyncResult<()> {
        each!(self, t => t.keep_alive(remote).await)
    }

    async fn find_remote(
        &self,
        run: &Snapshot<'_>,
        known: Option<&Remote>,
    ) -> SyncResult<Option<Remote>> {
        each!(self, t => t.find_remote(run, known).await)
    }

    async fn read_back(
        &self,
        remote: &Remote,
        run: &Snapshot<'_>,
        status: RemoteStatus,
        concurrency: usize,
    ) -> SyncResult<Vec<Difference>> {
        each!(self, t => t.read_back(remote, run, status, concurrency).await)
    }

    fn network_changed(&self) {
        each!(self, t => t.network_changed())
    }

    fn last_answer(&self) -> Option<std::time::SystemTime> {
        each!(self, t => t.last_answer())
    }
}

#[cfg(test)]
mod remote_data_tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct At {
        run: String,
        lines: u64,
    }

    impl RemoteData for At {
        const TARGET: &'static str = "Test";
    }

    #[test]
    fn remote_data_round_trips_and_unreadable_data_is_a_clear_error() {
        let mut remote = Remote {
            id: "r1".into(),
            data: String::new(),
        };
        let at = At {
            run: "x".into(),
            lines: 3,
        };
        at.store(&mut remote);
        assert_eq!(At::of(&remote).unwrap(), at);
        remote.data = "{\"run\": 5}".into();
        let e = At::of(&remote).unwrap_err();
        assert!(
            e.message.contains("corrupt Test data") && e.message.contains("r1"),
            "{e}"
        );
    }
}
