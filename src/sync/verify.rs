//! `difflog-sync verify --to TARGET RUNS`: proof that a run on the server
//! is complete. Each run is read back from each target and compared with
//! the run on disk (the target lists the differences); `--repair` makes
//! the state forget what differs, uploads the run again (which sends only
//! what was forgotten) and reads it back once more. Nothing on the server
//! is ever deleted: what is extra there is reported, never removed.

use super::engine::{first_config, known_remote, remote_status, runtime, sync_run};
use super::error::SyncError;
use super::retry::Class;
use super::state::{Forget, State};
use super::targets::differences::{Difference, Part};
use super::targets::{targets, AnyTarget, Snapshot, Target};
use super::TargetSpec;
use crate::error::{Error, Result};
use crate::read::{LogProblemKind, RunDir, RunView};
use futures_util::StreamExt;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Runs read back at once.
const RUNS_AT_ONCE: usize = 4;

/// What `verify` found for one run at one target.
pub struct Verified {
    /// The run directory.
    pub dir: PathBuf,
    /// The run's id, once the run was read.
    pub run_id: Option<String>,
    /// The remote run, when the server has one.
    pub remote_id: Option<String>,
    /// How the server's copy differs (after a repair: what still differs).
    pub differences: Vec<Difference>,
    /// What a repair sent again (`--repair` only).
    pub repaired: Vec<Difference>,
    /// Why the run could not be read back.
    pub error: Option<SyncError>,
}

impl Verified {
    /// Whether the server holds the run completely.
    pub fn complete(&self) -> bool {
        self.error.is_none() && self.differences.is_empty()
    }
}

/// The outcome of `verify`.
pub struct VerifyOutcome {
    /// Whether every run is complete at every target.
    pub ok: bool,
    /// Whether a target refused the credentials.
    pub auth_failed: bool,
}

/// Reads every run under `paths` (runs, roots of runs, archives) back from
/// each target and prints, per target, each run's result and a summary (or
/// one JSON object per line). `repair` sends what is missing or different
/// and reads the run back again.
pub fn verify(
    paths: &[PathBuf],
    specs: &[TargetSpec],
    json_out: bool,
    repair: bool,
    concurrency: usize,
    out: &mut dyn Write,
) -> Result<VerifyOutcome> {
    // Server answers reach these lines: printed by the one escaping rule.
    let mut esc = crate::terminal::Escaping::new(out, json_out);
    let out: &mut dyn Write = &mut esc;
    let mut unpacked = Vec::new();
    let groups = super::runs_by_root_with(paths, &mut unpacked)?;
    let ts = targets(specs)?;
    let rt = runtime()?;
    let mut ok = true;
    let mut auth_failed = false;
    for t in &ts {
        let mut results = Vec::new();
        for (root, runs) in &groups {
            let state = if repair {
                State::open(root)?
            } else {
                State::open_for_reading(root)?
            };
            let state = &state;
            let found = rt.block_on(
                futures_util::stream::iter(
                    runs.iter()
                        .map(|dir| verify_run(t, state, dir, repair, concurrency)),
                )
                .buffered(RUNS_AT_ONCE)
                .collect::<Vec<_>>(),
            );
            results.extend(found);
        }
        let refused = results
            .iter()
            .any(|r| r.error.as_ref().is_some_and(|e| e.class == Class::Auth));
        auth_failed |= refused;
        ok &= results.iter().all(Verified::complete);
        print(out, t.key(), &results, json_out)?;
    }
    Ok(VerifyOutcome { ok, auth_failed })
}

/// One run read back from `t`, repaired when asked.
async fn verify_run(
    t: &AnyTarget,
    state: &State,
    dir: &Path,
    repair: bool,
    concurrency: usize,
) -> Verified {
    let mut v = Verified {
        dir: dir.to_path_buf(),
        run_id: None,
        remote_id: None,
        differences: Vec::new(),
        repaired: Vec::new(),
        error: None,
    };
    let run = match RunDir::open(dir) {
        Ok(r) => r,
        Err(e) => {
            v.error = Some(SyncError::local(&e));
            return v;
        }
    };
    v.run_id = Some(run.meta.id.clone());
    if let Some(p) = run.log.problem.as_ref() {
        if p.kind != LogProblemKind::TornTail {
            v.error = Some(SyncError::permanent(format!(
                "{}: damaged: events.log byte {}: {} (see difflog verify)",
                dir.display(),
                p.offset,
                p.why
            )));
            return v;
        }
    }
    let view = run.view();
    match read_back(t, state, &run, &view, concurrency).await {
        Ok((remote, diffs)) => {
            v.remote_id = remote;
            v.differences = diffs;
        }
        Err(e) => {
            v.error = Some(e);
            return v;
        }
    }
    let to_send: Vec<Difference> = v
        .differences
        .iter()
        .filter(|d| d.part != Part::Nothing)
        .cloned()
        .collect();
    if !repair || to_send.is_empty() {
        return v;
    }
    let forget = forget_for(&to_send, &view);
    if let Err(e) = state.forget(t.key(), &run.meta.id, &forget) {
        v.error = Some(SyncError::local(&e));
        return v;
    }
    if let Err(e) = sync_run(t, state, dir, concurrency).await {
        v.error = Some(e);
        return v;
    }
    v.repaired = to_send;
    match read_back(t, state, &run, &view, concurrency).await {
        Ok((remote, diffs)) => {
            v.remote_id = remote;
            v.differences = diffs;
        }
        Err(e) => v.error = Some(e),
    }
    v
}

/// The remote run of `run` and how it differs from the run on disk.
async fn read_back(
    t: &AnyTarget,
    state: &State,
    run: &RunDir,
    view: &RunView,
    concurrency: usize,
) -> std::result::Result<(Option<String>, Vec<Difference>), SyncError> {
    let first = first_config(run);
    let snap = Snapshot {
        dir: &run.path,
        meta: &run.meta,
        records: run.records(),
        view,
        first_config: &first,
        create_gate: None,
    };
    let rec = state
        .run(t.key(), &run.meta.id)
        .map_err(|e| SyncError::local(&e))?;
    let known = known_remote(&rec);
    let Some(remote) = t.find_remote(&snap, known.as_ref()).await? else {
        let detail = match &known {
            Some(k) => format!("{} was deleted on the server", k.id),
            None => "the server has none for this run (never uploaded there?)".to_string(),
        };
        let mut missing = Difference::missing("remote run", Part::Run);
        missing.detail = detail;
        return Ok((None, vec![missing]));
    };
    let status = remote_status(run.state());
    let diffs = t.read_back(&remote, &snap, status, concurrency).await?;
    Ok((Some(remote.id), diffs))
}

/// What the state must forget so that the next pass sends `diffs` again:
/// a media file and the calls that name it (a call's media go with the
/// call), a call and the last finished call (whose completion sends the
/// list of every table), run-level data, metrics, the status.
fn forget_for(diffs: &[Difference], view: &RunView) -> Forget {
    let mut f = Forget::default();
    let mut calls = std::collections::BTreeSet::new();
    for d in diffs {
        match &d.part {
            Part::Run | Part::Meta => f.prefixes.push("meta:".into()),
            Part::Media(digest) => {
                f.items.push(format!("media:{digest}"));
                for c in view.calls.values().filter(|c| c.finished.is_some()) {
                    if c.media.iter().any(|m| &m.digest == digest) {
                        calls.insert(c.started.call);
                    }
                }
            }
            Part::Call(n) => {
                calls.insert(*n);
            }
            Part::Metrics => f.metrics = true,
            Part::Status => f.status = true,
            Part::Nothing => {}
        }
    }
    if !calls.is_empty() {
        if let Some(last) = view
            .calls
            .values()
            .filter(|c| c.finished.is_some())
            .map(|c| c.started.call)
            .max()
        {
            calls.insert(last);
        }
    }
    for n in calls {
        f.items.push(format!("call:{n}"));
        f.items.push(format!("table:{n}"));
    }
    f.prefixes.dedup();
    f
}

/// The report of one target: a line per run and its differences, and a
/// summary; or one JSON object per run and one for the summary.
fn print(out: &mut dyn Write, key: &str, results: &[Verified], json_out: bool) -> Result<()> {
    let w = |out: &mut dyn Write, s: String| {
        writeln!(out, "{s}").map_err(|e| Error::io("<stdout>", "write", e))
    };
    let target = super::redact_url(key);
    let differ = results
        .iter()
        .filter(|r| r.error.is_none() && !r.differences.is_empty())
        .count();
    let errors = results.iter().filter(|r| r.error.is_some()).count();
    let repaired = results.iter().filter(|r| !r.repaired.is_empty()).count();
    let complete = results.len() - differ - errors;
    for r in results {
        let run = r
            .run_id
            .clone()
            .unwrap_or_else(|| r.dir.display().to_string());
        if json_out {
            w(
                out,
                json!({
                    "kind": "run", "target": target, "run": run, "path": r.dir,
                    "remote_id": r.remote_id, "complete": r.complete(),
                    "differences": r.differences, "repaired": r.repaired,
                    "error": r.error.as_ref().map(|e| &e.message),
                    "error_code": r.error.as_ref().map(SyncError::code),
                })
                .to_string(),
            )?;
            continue;
        }
        let fixed = if r.repaired.is_empty() {
            String::new()
        } else {
            format!(" (repaired {})", r.repaired.len())
        };
        match &r.error {
            Some(e) => w(out, format!("{run}  ERROR{fixed}: {}", e.message))?,
            None if r.differences.is_empty() => w(out, format!("{run}  complete{fixed}"))?,
            None => w(
                out,
                format!("{run}  {} difference(s){fixed}", r.differences.len()),
            )?,
        }
        // Also when a repair failed: what differs is still worth knowing.
        for d in &r.differences {
            w(out, format!("    {d}"))?;
        }
    }
    if json_out {
        return w(
            out,
            json!({
                "kind": "summary", "target": target, "runs": results.len(),
                "complete": complete, "differ": differ, "errors": errors,
                "repaired": repaired,
            })
            .to_string(),
        );
    }
    w(
        out,
        format!(
            "{} run(s) at {target}: {complete} complete, {differ} differ, {errors} could not be read back{}",
            results.len(),
            if repaired > 0 {
                format!(", {repaired} repaired")
            } else {
                String::new()
            }
        ),
    )
}
