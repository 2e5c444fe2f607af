//! Syncing one run to its targets: what is due, in which order, and what
//! the state records once a server has acknowledged it. The run is read
//! once per pass and each target's pass runs on its own.
//!
//! Order per pass: open (find or create) the remote run; run-level data when
//! it changed; then every *finished* call in order — its media, then its
//! table and timings — so a live run syncs call by call and never shows a
//! half-written call; free-form metrics; finally the status (a live run stays
//! RUNNING; FINISHED, FAILED or KILLED once the log says so). A run with a
//! torn tail syncs up to the tear.

use super::error::{SyncError, SyncResult};
use super::state::State;
use super::targets::{CreateGate, Remote, RemoteStatus, Snapshot, Target};
use crate::event::{Event, MetricEvent};
use crate::read::{RunDir, RunState};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// What a pass over a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Everything that is due.
    All,
    /// Only the small things: the remote run, its run-level data and —
    /// where the target takes a table before its images — the tables of
    /// finished calls (thin links: every run's metadata and tables reach
    /// the server before any run's media).
    Metadata,
}

/// How many uploads run at once per run.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Finished calls sent together (their metrics in one request).
const CALL_BATCH: usize = 50;

/// Where a run stands at a target after a pass.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// The run id.
    pub run_id: String,
    /// The run directory.
    pub path: PathBuf,
    /// Live, finished, failed or crashed.
    pub state: RunState,
    /// Finished calls recorded.
    pub calls_recorded: usize,
    /// Finished calls uploaded.
    pub calls_uploaded: usize,
    /// Distinct media files recorded in finished calls and outside calls.
    pub media_recorded: usize,
    /// Media files uploaded.
    pub media_uploaded: usize,
    /// The remote status sent.
    pub status: Option<String>,
    /// The remote run id.
    pub remote_id: Option<String>,
}

/// The async runtime every sync command runs on (two workers: uploads
/// wait on the network, not the CPU).
pub fn runtime() -> crate::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| crate::Error::System {
            what: "start the async runtime",
            why: e.to_string(),
        })
}

/// The first value each config key was recorded with.
pub fn first_config(run: &RunDir) -> Map<String, Value> {
    let mut m = Map::new();
    for r in run.records() {
        if let Event::Config(c) = &r.event {
            for (k, v) in &c.values {
                if !m.contains_key(k) {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
    }
    m
}

fn meta_digest(first: &Map<String, Value>, run: &RunDir, view: &crate::read::RunView) -> String {
    let v = serde_json::json!({
        "first": first,
        "config": view.config,
        "pipelines": view.pipelines.values().collect::<Vec<_>>(),
        "workflow": view.workflow(),
        "meta": run.meta,
    });
    crate::format::sha256_hex(v.to_string().as_bytes())
}

/// The status a run in `state` has on a tracker.
pub(crate) fn remote_status(state: RunState) -> RemoteStatus {
    match state {
        RunState::Live => RemoteStatus::Running,
        RunState::Finished => RemoteStatus::Finished,
        RunState::Failed => RemoteStatus::Failed,
        RunState::Crashed => RemoteStatus::Killed,
    }
}

fn state_err(e: crate::Error) -> SyncError {
    SyncError::local(&e)
}

/// Syncs one run; records the outcome (or the error) in the state.
///
/// A run whose files are exactly as they were when a pass without error
/// read them, and whose liveness has not changed since, is not read again:
/// a daemon starting over thousands of uploaded runs checks each with two
/// `stat`s, `run.json` and one state query, and the liveness check of a
/// live run that is quiet sends nothing.
pub async fn sync_run<T: Target>(
    target: &T,
    state: &State,
    dir: &Path,
    concurrency: usize,
) -> SyncResult<Progress> {
    let mut all = sync_run_to_all(&[target], state, dir, concurrency, Phase::All).await;
    all.pop()
        .unwrap_or_else(|| Err(SyncError::permanent("no target to sync to")))
}

/// Syncs one run to several targets: the run is read once (when any of
/// them needs it) and fed to every target at once; each target's outcome
/// is its own (one failing holds back no other) and is recorded in its own
/// state rows. One result per target, in order. With [`Phase::Metadata`]
/// only the metadata and tables are sent (a full pass must follow).
pub async fn sync_run_to_all<T: Target>(
    targets: &[&T],
    state: &State,
    dir: &Path,
    concurrency: usize,
    phase: Phase,
) -> Vec<SyncResult<Progress>> {
    sync_run_to_all_until(targets, state, dir, concurrency, phase, None).await
}

/// [`sync_run_to_all`] where each target's part must end by `deadline`
/// (`--run-timeout`): a target that does not answer in time fails alone
/// (transient: what it acknowledged is kept), and the others' results are
/// theirs — a stalled target never holds or fails another.
pub async fn sync_run_to_all_until<T: Target>(
    targets: &[&T],
    state: &State,
    dir: &Path,
    concurrency: usize,
    phase: Phase,
    deadline: Option<(tokio::time::Instant, std::time::Duration)>,
) -> Vec<SyncResult<Progress>> {
    // Taken before the run is read: if it grows during the pass, the next
    // check sees another fingerprint and reads it again.
    let fp = fingerprint(dir);
    let meta = match crate::read::read_meta(dir) {
        Ok(m) => m,
        Err(e) => return targets.iter().map(|_| Err(SyncError::local(&e))).collect(),
    };
    let mut results: Vec<Option<SyncResult<Progress>>> = Vec::new();
    for t in targets {
        results.push(
            match unchanged(t.key(), state, dir, &meta.id, fp.as_deref()) {
                Ok(Some((p, remote))) => Some(match (p.state, &remote) {
                    (RunState::Live, Some(remote)) => {
                        bounded_by(deadline, dir, async {
                            t.keep_alive(remote).await.map(|()| p)
                        })
                        .await
                    }
                    _ => Ok(p),
                }),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            },
        );
    }
    if results.iter().all(Option::is_some) {
        return results.into_iter().flatten().collect();
    }
    // Parsing a log takes milliseconds to seconds: on the blocking pool, so
    // the daemon's other work (signals, network changes, the other runs of
    // `upload`) goes on meanwhile. State queries stay inline: each is one
    // indexed row in SQLite, microseconds.
    let owned = dir.to_path_buf();
    let read = tokio::task::spawn_blocking(move || RunDir::open(&owned))
        .await
        .map_err(|e| SyncError::permanent(format!("{}: reading the run: {e}", dir.display())))
        .and_then(|r| r.map_err(|e| SyncError::local(&e)));
    let run = match read {
        Ok(run) => run,
        Err(e) => {
            return results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(e.clone())))
                .collect()
        }
    };
    let (run, fp) = (&run, fp.as_deref());
    let each = targets.iter().zip(results).map(|(t, r)| async move {
        match r {
            Some(r) => r,
            None => {
                bounded_by(
                    deadline,
                    dir,
                    sync_read(*t, state, run, fp, concurrency, phase),
                )
                .await
            }
        }
    });
    futures_util::future::join_all(each).await
}

/// `fut`, failed as transient when `deadline` passes first.
pub async fn bounded_by<T>(
    deadline: Option<(tokio::time::Instant, std::time::Duration)>,
    dir: &Path,
    fut: impl std::future::Future<Output = SyncResult<T>>,
) -> SyncResult<T> {
    let Some((at, limit)) = deadline else {
        return fut.await;
    };
    tokio::time::timeout_at(at, fut).await.unwrap_or_else(|_| {
        Err(SyncError {
            deadline: true,
            ..SyncError::transient(format!(
                "{}: not uploaded within {} s (--run-timeout); what the server \
                 acknowledged is kept, the rest is tried on the next upload",
                dir.display(),
                limit.as_secs()
            ))
        })
    })
}

/// One target's pass over a run already read; records the outcome.
async fn sync_read<T: Target>(
    target: &T,
    state: &State,
    run: &RunDir,
    fp: Option<&str>,
    concurrency: usize,
    phase: Phase,
) -> SyncResult<Progress> {
    let dir = run.path.as_path();
    let id = run.meta.id.clone();
    let result = match &run.log.problem {
        // Damage is not a crash's torn tail: a record was altered, removed
        // or crafted (a media digest that is a path, say). Nothing of such a
        // run is uploaded; a torn tail is, up to the tear.
        Some(p) if p.kind != crate::read::LogProblemKind::TornTail => Err(SyncError {
            local: Some("corrupt_log"),
            ..SyncError::permanent(format!(
                "{}: damaged, not uploaded: events.log byte {}: {} (see difflog verify)",
                dir.display(),
                p.offset,
                p.why
            ))
        }),
        _ => sync_inner(target, state, run, concurrency.max(1), phase).await,
    }
    .map_err(|e| e.in_run(target.key(), &id));
    let recorded = match &result {
        // Only a full pass makes the run "unchanged since" (skipped).
        Ok(_) => state
            .set_error(target.key(), &id, None)
            .and_then(|()| match (fp, phase) {
                (Some(fp), Phase::All) => state.set_fingerprint(target.key(), &id, fp),
                _ => Ok(()),
            }),
        Err(e) => state.set_error(target.key(), &id, Some(&e.message)),
    };
    recorded.map_err(state_err)?;
    result
}

/// Sizes and modification times of a run's `run.json` and event log. The
/// log only grows (a reopened run appends to it), so the same fingerprint
/// means the same run.
fn fingerprint(dir: &Path) -> Option<String> {
    let part = |name: &str| -> Option<String> {
        let md = std::fs::metadata(dir.join(name)).ok()?;
        let mtime = md
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some(format!("{}@{}", md.len(), mtime.as_nanos()))
    };
    Some(format!(
        "run.json={} events.log={}",
        part(crate::format::RUN_JSON)?,
        part(crate::format::EVENTS_LOG)?
    ))
}

/// The progress of a run that needs no pass: its last pass ended without
/// error, its files are unchanged since, and it is still what that pass
/// saw — completed and not live, or live with its status `RUNNING` sent.
fn unchanged(
    key: &str,
    state: &State,
    dir: &Path,
    id: &str,
    fp: Option<&str>,
) -> SyncResult<Option<(Progress, Option<Remote>)>> {
    let Some(fp) = fp else { return Ok(None) };
    let rec = state.run(key, id).map_err(state_err)?;
    if rec.fingerprint.as_deref() != Some(fp) || rec.last_error.is_some() {
        return Ok(None);
    }
    let live = crate::read::is_live(dir);
    // The run state whose status was sent; a live run must have been seen
    // live (still written, nothing appended since: nothing to send — its
    // writer dying is what the liveness check looks for, and then the run
    // gets a pass that ends it), a completed one not (a completed run that
    // is live again was reopened: a pass).
    let sent = [
        RunState::Live,
        RunState::Finished,
        RunState::Failed,
        RunState::Crashed,
    ]
    .into_iter()
    .find(|s| rec.status_sent.as_deref() == Some(remote_status(*s).as_str()));
    let run_state = match sent {
        Some(s) if (s == RunState::Live) == live => s,
        _ => return Ok(None),
    };
    // Everything recorded was uploaded: the counts are the state's.
    let calls = state.count_done(key, id, "call:").map_err(state_err)? as usize;
    let media = state.count_done(key, id, "media:").map_err(state_err)? as usize;
    let remote = known_remote(&rec);
    let progress = Progress {
        run_id: id.to_string(),
        path: dir.to_path_buf(),
        state: run_state,
        calls_recorded: calls,
        calls_uploaded: calls,
        media_recorded: media,
        media_uploaded: media,
        status: rec.status_sent,
        remote_id: rec.remote_id,
    };
    Ok(Some((progress, remote)))
}

/// What the steps of one pass over a run share.
struct Pass<'a, T> {
    target: &'a T,
    state: &'a State,
    run: &'a RunDir,
    key: &'a str,
    id: &'a str,
    snap: Snapshot<'a>,
    /// What the state remembered of the run before this pass.
    rec: crate::sync::state::RunRecord,
}

impl<T: Target> Pass<'_, T> {
    /// Lets the target change the remote data (a cursor) with `f`, and keeps
    /// what it changed in the state even when `f` failed part way.
    async fn tracked(
        &self,
        remote: &mut Remote,
        f: impl AsyncFnOnce(&mut Remote) -> SyncResult<()>,
    ) -> SyncResult<()> {
        let before = remote.data.clone();
        let sent = f(remote).await;
        keep_remote(self.state, self.key, self.id, remote, &before)?;
        sent
    }
}

async fn sync_inner<T: Target>(
    target: &T,
    state: &State,
    run: &RunDir,
    concurrency: usize,
    phase: Phase,
) -> SyncResult<Progress> {
    // Decide the state first: a run seen as live is never marked finished.
    let run_state = run.state();
    let view = run.view();
    let first = first_config(run);
    let rec = state.run(target.key(), &run.meta.id).map_err(state_err)?;
    let gate = Gate {
        state,
        key: target.key(),
        id: run.meta.id.as_str(),
        opening: rec.opening.clone(),
    };
    let p = Pass {
        target,
        state,
        run,
        key: target.key(),
        id: run.meta.id.as_str(),
        snap: Snapshot {
            dir: &run.path,
            meta: &run.meta,
            records: run.records(),
            view: &view,
            first_config: &first,
            create_gate: Some(&gate),
        },
        rec,
    };
    let known = known_remote(&p.rec);
    let mut remote = target.open_run(&p.snap, known.as_ref()).await?;
    let opened = remote.data.clone();
    if known.as_ref() != Some(&remote) {
        state
            .set_remote(p.key, p.id, &remote.id, &remote.data)
            .map_err(state_err)?;
    }
    if phase == Phase::Metadata {
        upload_metadata(&p, &remote, concurrency).await?;
        return progress_for_key(p.key, state, run, &view, run_state, Some(remote.id));
    }
    upload_calls(&p, &mut remote, concurrency).await?;
    send_metrics(&p, &mut remote).await?;
    send_status(&p, &mut remote, run_state, &opened).await?;
    if run_state == RunState::Live {
        target.keep_alive(&remote).await?;
    }
    progress_for_key(p.key, state, run, &view, run_state, Some(remote.id))
}

/// How long a create sent by a process that was killed may take to land.
const OPEN_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// The state's side of [`CreateGate`]: a create about to be sent is marked
/// (`<rfc3339> <pid>`, cleared when the remote run is recorded); a mark
/// another process left less than [`OPEN_SETTLE`] ago — killed, its create
/// may still be on its way to the server — means waiting until that create
/// has had time to land, so that the search that follows finds it instead
/// of making a second remote run.
struct Gate<'a> {
    state: &'a State,
    key: &'a str,
    id: &'a str,
    /// The mark the state held when the pass began.
    opening: Option<String>,
}

impl CreateGate for Gate<'_> {
    fn wait_before_create(&self) -> std::time::Duration {
        let Some((at, pid)) = self.opening.as_deref().and_then(|o| o.split_once(' ')) else {
            return std::time::Duration::ZERO;
        };
        if pid == std::process::id().to_string() {
            return std::time::Duration::ZERO;
        }
        let now_ms = crate::format::rfc3339_ms(&crate::format::now_rfc3339());
        let since = now_ms - crate::format::rfc3339_ms(at);
        let settle = OPEN_SETTLE.as_millis() as i64;
        if !(0..settle).contains(&since) {
            return std::time::Duration::ZERO;
        }
        let wait = std::time::Duration::from_millis((settle - since) as u64);
        tracing::info!(
            "another uploader began making this run's remote run {since} ms ago and stopped: waiting {wait:?} for its request to land"
        );
        wait
    }

    fn creating(&self) -> SyncResult<()> {
        let mark = format!("{} {}", crate::format::now_rfc3339(), std::process::id());
        self.state
            .set_opening(self.key, self.id, &mark)
            .map_err(state_err)
    }
}

/// The upload of the run-level data, unless the state says this state of
/// it was sent already; marked done once the target acknowledged it.
fn meta_job<'a, T: Target>(p: &'a Pass<'a, T>, remote: &'a Remote) -> SyncResult<Option<Job<'a>>> {
    let (target, state, key, id) = (p.target, p.state, p.key, p.id);
    let item = format!(
        "meta:{}",
        meta_digest(p.snap.first_config, p.run, p.snap.view)
    );
    if state.is_done(key, id, &item).map_err(state_err)? {
        return Ok(None);
    }
    Ok(Some(Box::pin(async move {
        target.sync_meta(remote, &p.snap).await?;
        state.mark_done(key, id, &item).map_err(state_err)
    })))
}

/// The item that marks a call's table sent ahead of its media.
fn table_item(call: &crate::read::CallView) -> String {
    format!("table:{}", call.started.call)
}

/// [`Phase::Metadata`]: run-level data and, where the target takes a table
/// before its images, the tables of finished calls not yet sent (each
/// marked `table:N`, so the full pass that follows does not send it again).
async fn upload_metadata<T: Target>(
    p: &Pass<'_, T>,
    remote: &Remote,
    concurrency: usize,
) -> SyncResult<()> {
    let (target, state, key, id) = (p.target, p.state, p.key, p.id);
    let mut jobs: Vec<Job<'_>> = meta_job(p, remote)?.into_iter().collect();
    if target.tables_before_media() {
        for call in p.snap.view.calls.values() {
            let done = |item: &str| state.is_done(key, id, item).map_err(state_err);
            let item = table_item(call);
            if call.finished.is_none()
                || done(&format!("call:{}", call.started.call))?
                || done(&item)?
            {
                continue;
            }
            jobs.push(Box::pin(async move {
                target.upload_table(remote, &p.snap, call).await?;
                state.mark_done(key, id, &item).map_err(state_err)
            }));
        }
    }
    stream::iter(jobs)
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}

/// Run-level data, media and every finished call not yet acknowledged.
async fn upload_calls<T: Target>(
    p: &Pass<'_, T>,
    remote: &mut Remote,
    concurrency: usize,
) -> SyncResult<()> {
    let (target, state, run, key, id) = (p.target, p.state, p.run, p.key, p.id);
    let view = p.snap.view;
    // Uploads address the remote run only by what `open_run` returned; the
    // cursor a target advances in `finish_calls` lives in `remote` itself.
    let addr = remote.clone();
    // Media acknowledged by the server, committed to the state in one
    // transaction after each stream (a kill before that re-sends them, which
    // the target shows once).
    let acked = std::sync::Mutex::new(Vec::<String>::new());
    let commit_acked = || -> SyncResult<()> {
        let items = std::mem::take(&mut *acked.lock().unwrap_or_else(|p| p.into_inner()));
        state.mark_done_many(key, id, &items).map_err(state_err)
    };
    // Run-level data goes in the same stream of concurrent uploads as the
    // first media (each of its requests is a round trip worth overlapping).
    let mut first_jobs: Vec<Job<'_>> = meta_job(p, &addr)?.into_iter().collect();
    // Media outside calls (run.log_image).
    let loose: Vec<_> = view.media.iter().filter(|m| m.call.is_none()).collect();
    // The media each stream will upload, for `prepare_uploads`.
    let mut due_media = Vec::new();
    first_jobs.extend(media_jobs(
        target,
        state,
        run,
        &addr,
        &loose,
        &acked,
        &mut due_media,
    )?);

    let mut pending = Vec::new();
    for call in view.calls.values() {
        // A call still running (live run) is not complete yet.
        if call.finished.is_some()
            && !state
                .is_done(key, id, &format!("call:{}", call.started.call))
                .map_err(state_err)?
        {
            pending.push(call);
        }
    }
    // Bounded batches. Within one, media and tables share one stream of
    // `concurrency` uploads (media first, so a table rarely shows before its
    // images); a call is marked done only after everything of it arrived.
    // A batch's `finish_calls` overlaps the next batch's uploads; the
    // `finish_calls` themselves stay in order (W&B's history is a sequence).
    let mut batches = pending.chunks(CALL_BATCH);
    let mut finishing: Option<&[&crate::read::CallView]> = None;
    loop {
        let batch = batches.next();
        let mut jobs = std::mem::take(&mut first_jobs);
        let mut due = std::mem::take(&mut due_media);
        let calls: &[&crate::read::CallView] = batch.unwrap_or(&[]);
        if let Some(batch) = batch {
            let media: Vec<_> = batch.iter().flat_map(|c| c.media.iter()).collect();
            jobs.extend(media_jobs(
                target, state, run, &addr, &media, &acked, &mut due,
            )?);
            let (addr, snap) = (&addr, &p.snap);
            for call in batch {
                // Sent ahead of its media by a metadata pass: not again.
                if state
                    .is_done(key, id, &table_item(call))
                    .map_err(state_err)?
                {
                    continue;
                }
                jobs.push(Box::pin(target.upload_table(addr, snap, call)));
            }
        }
        let (addr_ref, snap) = (&addr, &p.snap);
        let uploads = async move {
            if !due.is_empty() || !calls.is_empty() {
                target.prepare_uploads(addr_ref, snap, &due, calls).await?;
            }
            stream::iter(jobs)
                .buffer_unordered(concurrency)
                .try_collect::<Vec<()>>()
                .await
        };
        let (finished, uploaded) = match finishing.take() {
            Some(done) => {
                let (sent, uploaded) = futures_util::join!(
                    p.tracked(remote, async |r| target
                        .finish_calls(r, &p.snap, done)
                        .await),
                    uploads
                );
                (Some((done, sent)), uploaded)
            }
            None => (None, uploads.await),
        };
        commit_acked()?;
        if let Some((done, sent)) = finished {
            sent?;
            let items: Vec<String> = done
                .iter()
                .map(|c| format!("call:{}", c.started.call))
                .collect();
            state.mark_done_many(key, id, &items).map_err(state_err)?;
        }
        uploaded?;
        match batch {
            Some(b) => finishing = Some(b),
            None => return Ok(()),
        }
    }
}

/// The run's own metrics (and loose images, for a target that keeps a
/// history) recorded since the last pass.
async fn send_metrics<T: Target>(p: &Pass<'_, T>, remote: &mut Remote) -> SyncResult<()> {
    let fresh: Vec<_> = p
        .run
        .records()
        .iter()
        .filter(|r| r.seq > p.rec.synced_seq)
        .collect();
    let metrics: Vec<(MetricEvent, i64)> = fresh
        .iter()
        .filter_map(|r| match &r.event {
            Event::Metric(m) => Some((m.clone(), crate::format::rfc3339_ms(&r.ts))),
            _ => None,
        })
        .collect();
    // Loose images are history for a target that keeps one (W&B): give it
    // the chance to send them even when no metric came with them.
    let loose_images = fresh
        .iter()
        .any(|r| matches!(&r.event, Event::Media(m) if m.call.is_none()));
    if !metrics.is_empty() || loose_images {
        p.tracked(remote, async |r| {
            p.target.log_metrics(r, &p.snap, &metrics).await
        })
        .await?;
    }
    let last_seq = p.run.records().last().map_or(0, |r| r.seq);
    if last_seq > p.rec.synced_seq {
        p.state
            .set_synced_seq(p.key, p.id, last_seq)
            .map_err(state_err)?;
    }
    Ok(())
}

/// The remote status, when it changed — or when this pass sent something
/// the target tracks (W&B: history appended to a run that had been
/// completed reopens it, so the end is sent again).
async fn send_status<T: Target>(
    p: &Pass<'_, T>,
    remote: &mut Remote,
    run_state: RunState,
    opened: &str,
) -> SyncResult<()> {
    let status = remote_status(run_state);
    if p.rec.status_sent.as_deref() == Some(status.as_str())
        && (status == RemoteStatus::Running || opened == remote.data)
    {
        return Ok(());
    }
    let end = match status {
        RemoteStatus::Running => None,
        _ => p
            .run
            .records()
            .last()
            .map(|r| crate::format::rfc3339_ms(&r.ts)),
    };
    p.tracked(remote, async |r| {
        p.target.set_status(r, &p.snap, status, end).await
    })
    .await?;
    p.state
        .set_status(p.key, p.id, status.as_str())
        .map_err(state_err)
}

/// The remote run the state remembers, if any.
pub(crate) fn known_remote(rec: &crate::sync::state::RunRecord) -> Option<Remote> {
    match (&rec.remote_id, &rec.remote_data) {
        (Some(i), Some(d)) => Some(Remote {
            id: i.clone(),
            data: d.clone(),
        }),
        _ => None,
    }
}

/// Stores what a target changed in its remote data (a cursor it advanced
/// after an acknowledgement), whether or not the operation then failed.
fn keep_remote(
    state: &State,
    key: &str,
    id: &str,
    remote: &Remote,
    before: &str,
) -> SyncResult<()> {
    if remote.data != before {
        state
            .set_remote(key, id, &remote.id, &remote.data)
            .map_err(state_err)?;
    }
    Ok(())
}

type Job<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = SyncResult<()>> + 'a>>;

/// One upload job per media file not yet acknowledged (each also listed in
/// `due`); each records its acknowledgement in `acked` (committed to the
/// state after the stream).
fn media_jobs<'a, T: Target>(
    target: &'a T,
    state: &'a State,
    run: &'a RunDir,
    remote: &'a Remote,
    media: &[&'a crate::event::MediaEvent],
    acked: &'a std::sync::Mutex<Vec<String>>,
    due: &mut Vec<&'a crate::event::MediaEvent>,
) -> SyncResult<Vec<Job<'a>>> {
    let key = target.key();
    let id = run.meta.id.as_str();
    let mut jobs: Vec<Job<'a>> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for &m in media {
        if !seen.insert(m.digest.clone()) {
            continue;
        }
        if state
            .is_done(key, id, &format!("media:{}", m.digest))
            .map_err(state_err)?
        {
            continue;
        }
        let file = crate::read::run_file(&run.path, &m.path).map_err(|e| SyncError::local(&e))?;
        due.push(m);
        jobs.push(Box::pin(async move {
            target.upload_media(remote, m, &file).await?;
            acked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("media:{}", m.digest));
            Ok(())
        }));
    }
    Ok(jobs)
}

/// What the state says about a run at the target `key`, without talking to it.
pub fn progress_for_key(
    key: &str,
    state: &State,
    run: &RunDir,
    view: &crate::read::RunView,
    run_state: RunState,
    remote_id: Option<String>,
) -> SyncResult<Progress> {
    let id = run.meta.id.as_str();
    let rec = state.run(key, id).map_err(state_err)?;
    let summary = crate::sync::state::Summary {
        target: key.to_string(),
        calls_done: state.count_done(key, id, "call:").map_err(state_err)?,
        media_done: state.count_done(key, id, "media:").map_err(state_err)?,
        record: rec,
    };
    let who = (run.meta.id.as_str(), run.path.as_path());
    let mut p = progress_from(&summary, who, recorded(view), run_state);
    p.remote_id = remote_id.or(p.remote_id);
    Ok(p)
}

/// What a run holds that an upload sends: finished calls, and the
/// distinct media outside calls or in finished calls.
pub fn recorded(view: &crate::read::RunView) -> (usize, usize) {
    let finished = view.calls.values().filter(|c| c.finished.is_some()).count();
    let mut digests = std::collections::HashSet::new();
    for m in &view.media {
        let in_finished = m
            .call
            .is_none_or(|c| view.calls.get(&c).is_some_and(|cv| cv.finished.is_some()));
        if in_finished {
            digests.insert(m.digest.as_str());
        }
    }
    (finished, digests.len())
}

/// A run's progress at one target from what the state holds of it there;
/// `recorded` is [`recorded`] of its view (the same for every target).
pub fn progress_from(
    summary: &crate::sync::state::Summary,
    (run_id, path): (&str, &Path),
    recorded: (usize, usize),
    run_state: RunState,
) -> Progress {
    Progress {
        run_id: run_id.to_string(),
        path: path.to_path_buf(),
        state: run_state,
        calls_recorded: recorded.0,
        calls_uploaded: summary.calls_done as usize,
        media_recorded: recorded.1,
        media_uploaded: summary.media_done as usize,
        status: summary.record.status_sent.clone(),
        remote_id: summary.record.remote_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    //! The engine against the in-memory target: what a pass sends, that a
    //! second pass sends nothing, and that lost state, a failed request or a
    //! lost answer never show anything twice nor lose anything.
    use super::*;
    use crate::bench::{synthetic_image, SyntheticPipeline};
    use crate::sync::targets::memory::{Memory, Shown};
    use crate::{Init, Run};

    /// A run of `calls` calls of two images each, a metric and a config;
    /// finished unless `live` (then the writer is returned, still open).
    fn record(root: &Path, calls: u64, live: bool) -> (PathBuf, Option<Run>) {
        let run = Run::create(
            Init::project("engine")
                .config(serde_json::json!({"steps": 4}))
                .root(root),
        )
        .unwrap();
        let images = (0..calls * 2).map(|i| synthetic_image(i, 16)).collect();
        let mut p = SyntheticPipeline::new(images, 2);
        for i in 0..calls {
            run.record(&mut p, &i).unwrap();
        }
        run.log_metric("clip_score", 0.25, Some(1)).unwrap();
        run.flush().unwrap();
        let dir = crate::read::find_runs(root).unwrap().remove(0);
        if live {
            return (dir, Some(run));
        }
        run.finish().unwrap();
        (dir, None)
    }

    fn complete(shown: &Shown, calls: u32, images: usize) {
        assert!(shown.meta);
        assert_eq!(shown.media.len(), images);
        assert_eq!(shown.tables, (1..=calls).collect());
        assert_eq!(shown.finished, (1..=calls).collect());
        assert_eq!(shown.metrics.len(), 1);
        assert_eq!(shown.status, Some(RemoteStatus::Finished));
    }

    #[tokio::test]
    async fn a_pass_sends_everything_once_and_a_second_pass_sends_nothing() {
        let root = tempfile::tempdir().unwrap();
        let (dir, _) = record(root.path(), 3, false);
        let state = State::open(root.path()).unwrap();
        let t = Memory::default();
        let p = sync_run(&t, &state, &dir, 4).await.unwrap();
        assert_eq!((p.calls_uploaded, p.calls_recorded), (3, 3));
        let runs = t.runs();
        assert_eq!(runs.len(), 1);
        complete(runs.values().next().unwrap(), 3, 6);
        // open, meta, 6 media, 3 tables, finish, metrics, status.
        let sent = t.requests();
        assert_eq!(sent, 14, "{:?}", t.server.lock().unwrap().requests);
        sync_run(&t, &state, &dir, 4).await.unwrap();
        assert_eq!(t.requests(), sent, "the second pass sent something");
    }

    /// Issue 32: several targets, each complete. A target added later gets
    /// the whole run although another has it already (the state is kept
    /// per target), and a second pass sends nothing to either.
    #[tokio::test]
    async fn several_targets_each_get_the_whole_run_and_nothing_twice() {
        let root = tempfile::tempdir().unwrap();
        let (dir, _) = record(root.path(), 3, false);
        let state = State::open(root.path()).unwrap();
        let a = Memory::named("memory://a");
        let b = Memory::named("memory://b");
        sync_run(&a, &state, &dir, 4).await.unwrap();
        let whole = a.runs();
        assert_eq!(whole.len(), 1);
        let sent_a = a.requests();
        for r in sync_run_to_all(&[&a, &b], &state, &dir, 4, Phase::All).await {
            r.unwrap();
        }
        assert_eq!(a.requests(), sent_a, "A was sent the run again");
        let shown = |m: &Memory| -> Vec<Shown> { m.runs().into_values().collect() };
        assert_eq!(shown(&b), shown(&a), "B did not get the whole run");
        let sent_b = b.requests();
        for r in sync_run_to_all(&[&a, &b], &state, &dir, 4, Phase::All).await {
            r.unwrap();
        }
        assert_eq!((a.requests(), b.requests()), (sent_a, sent_b));
    }

    #[tokio::test]
    async fn a_lost_state_finds_the_same_remote_run_and_shows_nothing_twice() {
        let root = tempfile::tempdir().unwrap();
        let (dir, _) = record(root.path(), 2, false);
        let t = Memory::default();
        sync_run(&t, &State::open(root.path()).unwrap(), &dir, 4)
            .await
            .unwrap();
        let before = t.runs();
        std::fs::remove_dir_all(root.path().join(crate::sync::state::STATE_DIR)).unwrap();
        sync_run(&t, &State::open(root.path()).unwrap(), &dir, 4)
            .await
            .unwrap();
        assert_eq!(
            t.runs(),
            before,
            "a second remote run, or something changed"
        );
    }

    /// Every request of a pass fails once in turn (nothing done), or has its
    /// answer lost (done, but the engine does not know): the next pass
    /// completes the run, and the server shows exactly the run.
    #[tokio::test]
    async fn a_failed_request_or_a_lost_answer_anywhere_is_made_good_by_the_next_pass() {
        let root = tempfile::tempdir().unwrap();
        let (dir, _) = record(root.path(), 3, false);
        let want = {
            let t = Memory::default();
            let state_root = tempfile::tempdir().unwrap();
            sync_run(&t, &State::open(state_root.path()).unwrap(), &dir, 1)
                .await
                .unwrap();
            t.requests()
        };
        for lose in [false, true] {
            for at in 0..want {
                let state_root = tempfile::tempdir().unwrap();
                let t = Memory::default();
                {
                    let mut s = t.server.lock().unwrap();
                    if lose {
                        s.lose_at = Some(at);
                    } else {
                        s.fail_at = Some(at);
                    }
                }
                let state = State::open(state_root.path()).unwrap();
                let first = sync_run(&t, &state, &dir, 1).await;
                assert!(first.is_err(), "request {at} (lose {lose}): no error");
                let p = sync_run(&t, &state, &dir, 1).await.unwrap();
                assert_eq!(p.calls_uploaded, 3, "request {at} (lose {lose})");
                let runs = t.runs();
                assert_eq!(runs.len(), 1, "request {at} (lose {lose}): runs");
                complete(runs.values().next().unwrap(), 3, 6);
            }
        }
    }

    /// A live run sends its finished calls and stays running; once it ends,
    /// the rest and the final status follow.
    #[tokio::test]
    async fn a_live_run_syncs_call_by_call_and_ends_finished() {
        let root = tempfile::tempdir().unwrap();
        let (dir, run) = record(root.path(), 2, true);
        let state = State::open(root.path()).unwrap();
        let t = Memory::default();
        let p = sync_run(&t, &state, &dir, 4).await.unwrap();
        assert_eq!(p.state, RunState::Live);
        let shown = t.runs().into_values().next().unwrap();
        assert_eq!(shown.finished, [1, 2].into_iter().collect());
        assert_eq!(shown.status, Some(RemoteStatus::Running));
        let run = run.unwrap();
        let images = vec![synthetic_image(99, 16), synthetic_image(98, 16)];
        run.record(&mut SyntheticPipeline::new(images, 2), &7)
            .unwrap();
        run.finish().unwrap();
        sync_run(&t, &state, &dir, 4).await.unwrap();
        complete(&t.runs().into_values().next().unwrap(), 3, 6);
    }

    /// A run's deadline passing is said by a flag (not recognised by its
    /// text): `upload` does not retry it; any other failure is not one.
    #[tokio::test(start_paused = true)]
    async fn a_passed_deadline_is_flagged_as_one() {
        let dir = Path::new("run");
        let limit = std::time::Duration::from_secs(5);
        let at = Some((tokio::time::Instant::now() + limit, limit));
        let stalled = bounded_by(at, dir, std::future::pending::<SyncResult<()>>()).await;
        let e = stalled.unwrap_err();
        assert!(
            e.deadline && e.class == crate::sync::retry::Class::Transient,
            "{e}"
        );
        let at = Some((tokio::time::Instant::now() + limit, limit));
        let failed = bounded_by(at, dir, async {
            Err::<(), _>(SyncError::transient(
                "not uploaded within 5 s (--run-timeout)",
            ))
        })
        .await;
        assert!(!failed.unwrap_err().deadline);
    }
}
