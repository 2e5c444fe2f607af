//! What `difflog-sync upload` and `status` do and print. The binary only
//! parses arguments and calls these.

use super::counts::{Counts, CountsCache, Fresh};
use super::engine::{
    bounded_by, progress_from, recorded, runtime, sync_run, sync_run_to_all_until, Phase, Progress,
};
use super::error::SyncError;
use super::fleet;
use super::retry::{retry, Class, Decision, Policy};
use super::state::{Reachability, State, Summary};
use super::targets::{targets, AnyTarget, Target};
use super::{runs_by_root, runs_by_root_with, TargetSpec};
use crate::error::{Error, Result};
use crate::read::RunDir;
use futures_util::StreamExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Runs `upload` syncs at once.
pub const RUNS_AT_ONCE: usize = 4;

/// Exit code when credentials were refused.
pub const EXIT_AUTH: u8 = 3;

/// The outcome of `upload`.
pub struct UploadOutcome {
    /// Whether every run was uploaded completely.
    pub ok: bool,
    /// Whether credentials were refused.
    pub auth_failed: bool,
}

/// Syncs one run to `t`, retrying transient failures up to `attempts`
/// times in all; `first` is the failure of an attempt already made (the
/// first wait is then its backoff).
async fn sync_with_retries(
    t: &AnyTarget,
    state: &State,
    dir: &Path,
    concurrency: usize,
    attempts: u32,
    first: Option<SyncError>,
) -> std::result::Result<Progress, SyncError> {
    let policy = Policy {
        base: Duration::from_millis(500),
        max: Duration::from_secs(30),
        attempts,
    };
    let first = std::sync::Mutex::new(first);
    retry(
        policy,
        |_| {
            let failed = first.lock().unwrap_or_else(|p| p.into_inner()).take();
            async move {
                match failed {
                    Some(e) => Err(e),
                    None => sync_run(t, state, dir, concurrency).await,
                }
            }
        },
        |e: &SyncError| match e.class {
            Class::Transient => {
                tracing::warn!("{}: {e}; retrying", dir.display());
                Decision::Retry(e.retry_after)
            }
            _ => Decision::Stop,
        },
    )
    .await
}

/// The outcome of uploading one run.
type RunResult = (PathBuf, std::result::Result<Progress, SyncError>);

/// `difflog-sync upload`: one pass over the runs to every target, with a
/// progress bar and a summary per target; `json` prints one JSON object per
/// target instead (one line each). `metadata_first` (thin links): every
/// run's metadata and tables go first, then the media, one run at a time,
/// oldest first.
pub fn upload(
    paths: &[PathBuf],
    specs: &[TargetSpec],
    json_out: bool,
    concurrency: usize,
    run_timeout: Option<Duration>,
    metadata_first: bool,
    out: &mut dyn Write,
) -> Result<UploadOutcome> {
    // Server answers reach these lines: printed by the one escaping rule.
    let mut esc = crate::terminal::Escaping::new(out, json_out);
    let out: &mut dyn Write = &mut esc;
    // Archives are unpacked (and verified) first; kept until the end.
    let mut unpacked = Vec::new();
    let groups = runs_by_root_with(paths, &mut unpacked)?;
    let ts = targets(specs)?;
    let rt = runtime()?;
    let total: usize = groups.values().map(Vec::len).sum();
    let bar = progress_bar(total, json_out);
    let mut up = Uploads {
        results: ts.iter().map(|_| Vec::new()).collect(),
        refused: std::sync::Mutex::new(vec![false; ts.len()]),
    };
    let mut states = Vec::new();
    for root in groups.keys() {
        states.push(State::open(root)?);
    }
    if metadata_first {
        for (state, runs) in states.iter().zip(groups.values()) {
            rt.block_on(metadata_pass(&ts, state, runs, concurrency, run_timeout));
        }
    }
    let at_once = if metadata_first { 1 } else { RUNS_AT_ONCE };
    for (state, runs) in states.iter().zip(groups.values()) {
        rt.block_on(upload_runs(
            &ts,
            state,
            runs,
            &bar,
            (concurrency, at_once),
            run_timeout,
            &mut up,
        ));
        if up.refused().iter().all(|r| *r) {
            break;
        }
    }
    bar.finish_and_clear();
    let refused = up.refused();
    let mut ok = true;
    for (i, t) in ts.iter().enumerate() {
        // Report in run order (creation order), whatever order they finished in.
        up.results[i].sort_by(|a, b| a.0.cmp(&b.0));
        ok &= !refused[i] && up.results[i].iter().all(|(_, r)| r.is_ok());
        print_upload(out, t.key(), &up.results[i], refused[i], json_out)?;
    }
    let auth_failed = refused.iter().any(|r| *r);
    Ok(UploadOutcome { ok, auth_failed })
}

/// What an upload gathered, per target.
struct Uploads {
    /// Each target's outcomes.
    results: Vec<Vec<RunResult>>,
    /// Targets that refused the credentials (no more runs go to them);
    /// read by the runs in flight as they start.
    refused: std::sync::Mutex<Vec<bool>>,
}

impl Uploads {
    /// Which targets refused the credentials so far.
    fn refused(&self) -> Vec<bool> {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn progress_bar(total: usize, hidden: bool) -> indicatif::ProgressBar {
    if hidden {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(total as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} runs  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b
}

/// Uploads the runs of one root, several at once (a small run is mostly
/// sequential round trips — find, create, finish — which overlap across
/// runs), each read once and fed to every target that has not refused the
/// credentials. A target that refuses them gets no further run (runs in
/// flight to it are dropped, their state behind, never ahead); the others
/// go on.
async fn upload_runs(
    ts: &[AnyTarget],
    state: &State,
    runs: &[PathBuf],
    bar: &indicatif::ProgressBar,
    (concurrency, at_once): (usize, usize),
    run_timeout: Option<Duration>,
    up: &mut Uploads,
) {
    let refused = &up.refused;
    let mut pending = futures_util::stream::iter(runs.iter().map(|dir| async move {
        let active: Vec<usize> = {
            let r = refused.lock().unwrap_or_else(|p| p.into_inner());
            (0..ts.len()).filter(|i| !r[*i]).collect()
        };
        let out = upload_one(ts, &active, state, dir, concurrency, run_timeout).await;
        bar.set_message(
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        bar.inc(1);
        (dir.clone(), out)
    }))
    .buffer_unordered(at_once);
    while let Some((dir, outcomes)) = pending.next().await {
        let mut r_now = refused.lock().unwrap_or_else(|p| p.into_inner());
        for (i, r) in outcomes {
            // A target's outcomes end with its refusal: runs that were in
            // flight to it when it refused are not reported.
            if r_now[i] {
                continue;
            }
            r_now[i] = matches!(&r, Err(e) if e.class == Class::Auth);
            up.results[i].push((dir.clone(), r));
        }
        if r_now.iter().all(|r| *r) {
            return;
        }
    }
}

/// The metadata and tables of every run, before any media (thin links).
/// Failures are left to the full pass that follows, which sends whatever
/// this one did not. `run_timeout` bounds each run's part for each target
/// here too.
async fn metadata_pass(
    ts: &[AnyTarget],
    state: &State,
    runs: &[PathBuf],
    concurrency: usize,
    run_timeout: Option<Duration>,
) {
    let refs: Vec<&AnyTarget> = ts.iter().collect();
    let refs = &refs;
    let mut pending = futures_util::stream::iter(runs.iter().map(|dir| async move {
        let deadline = run_timeout.map(|l| (tokio::time::Instant::now() + l, l));
        let r =
            sync_run_to_all_until(refs, state, dir, concurrency, Phase::Metadata, deadline).await;
        (dir, r)
    }))
    .buffer_unordered(RUNS_AT_ONCE);
    while let Some((dir, results)) = pending.next().await {
        for e in results.into_iter().filter_map(|r| r.err()) {
            tracing::debug!("{}: metadata first: {e}", dir.display());
        }
    }
}

/// One run to the targets `active` (indexes into `ts`): read once for all,
/// then each target's transient failures retried as `upload` does (6
/// attempts in all). A server that accepts and never answers (or keeps
/// asking to wait) holds the run for at most `run_timeout` — each target on
/// its own deadline: a stalled target fails alone, and the others' results
/// are theirs. What was acknowledged before is kept, the rest goes next
/// time.
async fn upload_one(
    ts: &[AnyTarget],
    active: &[usize],
    state: &State,
    dir: &Path,
    concurrency: usize,
    run_timeout: Option<Duration>,
) -> Vec<(usize, std::result::Result<Progress, SyncError>)> {
    let deadline = run_timeout.map(|l| (tokio::time::Instant::now() + l, l));
    let refs: Vec<&AnyTarget> = active.iter().map(|i| &ts[*i]).collect();
    let first = sync_run_to_all_until(&refs, state, dir, concurrency, Phase::All, deadline).await;
    let each = active.iter().zip(first).map(|(i, r)| async move {
        match r {
            Err(e) if e.class == Class::Transient && !e.deadline => {
                tracing::warn!("{}: {e}; retrying", dir.display());
                let retry = sync_with_retries(&ts[*i], state, dir, concurrency, 6, Some(e));
                (*i, bounded_by(deadline, dir, retry).await)
            }
            r => (*i, r),
        }
    });
    futures_util::future::join_all(each).await
}

/// The upload's report: a line per run and a summary, or one JSON object.
fn print_upload(
    out: &mut dyn Write,
    key: &str,
    results: &[RunResult],
    auth_failed: bool,
    json_out: bool,
) -> Result<()> {
    let w = |out: &mut dyn Write, s: String| {
        writeln!(out, "{s}").map_err(|e| Error::io("<stdout>", "write", e))
    };
    if json_out {
        let ok = !auth_failed && results.iter().all(|(_, r)| r.is_ok());
        let runs: Vec<_> = results
            .iter()
            .map(|(p, r)| match r {
                Ok(pr) => json!({"path": p, "ok": true, "progress": pr}),
                Err(e) => json!({
                    "path": p, "ok": false, "error": e.message, "error_code": e.code(),
                    "run": e.context.as_ref().map(|(_, run)| run),
                }),
            })
            .collect();
        return w(
            out,
            json!({"target": key, "ok": ok, "auth_failed": auth_failed, "runs": runs}).to_string(),
        );
    }
    for (p, r) in results {
        match r {
            Ok(pr) => w(
                out,
                format!(
                    "{}  {}  calls {}/{}  media {}/{}  status {}",
                    pr.run_id,
                    pr.state.as_str(),
                    pr.calls_uploaded,
                    pr.calls_recorded,
                    pr.media_uploaded,
                    pr.media_recorded,
                    pr.status.as_deref().unwrap_or("-")
                ),
            )?,
            Err(e) => w(out, format!("{}  FAILED: {}", p.display(), e.message))?,
        }
    }
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    w(
        out,
        format!(
            "{} run(s) to {}: {} uploaded, {} failed{}",
            results.len(),
            key,
            results.len() - failed,
            failed,
            if auth_failed {
                " (stopped: credentials refused)"
            } else {
                ""
            }
        ),
    )
}

/// The status rows of one run: one per target it has state for (from
/// `known`, the root's state by run id); and the run's counts to store in
/// the cache, when they were read afresh and may be cached.
fn status_rows(
    known: &std::collections::HashMap<String, Vec<Summary>>,
    cache: &CountsCache,
    dir: &Path,
) -> Result<(Vec<serde_json::Value>, Option<Fresh>)> {
    // The stamp is taken before the log is read: a write in between makes
    // the stored entry miss next time, never hit with old counts.
    let (hit, stamp) = cache.lookup(dir);
    let (counts, fresh) = match hit {
        Some(c) => (c, None),
        None => {
            let run = match RunDir::open(dir) {
                Ok(r) => r,
                Err(e) => {
                    let row = json!({"path": dir, "error": e.to_string(), "error_code": e.code()});
                    return Ok((vec![row], None));
                }
            };
            let (calls, media) = recorded(&run.view());
            let c = Counts {
                run_id: run.meta.id.clone(),
                calls,
                media,
                ended: crate::read::ended_state(run.records()),
            };
            let fresh = stamp
                .zip(cache.name_of(dir))
                .map(|(s, n)| (n, s, c.clone()));
            (c, fresh)
        }
    };
    let st = crate::read::state_now(dir, counts.ended);
    let targets = known
        .get(&counts.run_id)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut rows = Vec::new();
    if targets.is_empty() {
        rows.push(
            json!({"run_id": counts.run_id, "path": dir, "state": st, "target": null,
            "calls_recorded": counts.calls, "calls_uploaded": 0, "pending_calls": counts.calls}),
        );
    }
    for t in targets {
        let who = (counts.run_id.as_str(), dir);
        let p = progress_from(t, who, (counts.calls, counts.media), st);
        let rec = &t.record;
        rows.push(json!({
            "run_id": p.run_id, "path": dir, "state": st, "target": t.target,
            "calls_recorded": p.calls_recorded, "calls_uploaded": p.calls_uploaded,
            "pending_calls": p.calls_recorded.saturating_sub(p.calls_uploaded),
            "media_recorded": p.media_recorded, "media_uploaded": p.media_uploaded,
            "remote_status": p.status, "remote_id": p.remote_id,
            "last_error": rec.last_error, "updated": rec.updated,
        }));
    }
    Ok((rows, fresh))
}

/// One line on what `watch` last knew of a target's reachability.
fn target_line(r: &Reachability) -> String {
    let last = r.last_reachable.as_deref().unwrap_or("never");
    match &r.next_attempt {
        None => format!("target {}: reachable, last answered {last}", r.target),
        Some(next) => format!(
            "target {}: unreachable, last answered {last}, next attempt {next}",
            r.target
        ),
    }
}

/// `difflog-sync status`: per run and target, recorded vs uploaded, pending,
/// the last error, under a summary of the whole fleet; past
/// [`fleet::LIST_AT_MOST`] rows only the runs that need a look are listed,
/// unless `all`. Reads only local files; talks to no server. Each run's
/// counts come from the status cache while its files are unchanged
/// ([`super::counts`]); `fresh` reads every run's log again.
pub fn status(
    paths: &[PathBuf],
    json_out: bool,
    all: bool,
    fresh: bool,
    out: &mut dyn Write,
) -> Result<()> {
    // Stored errors quote servers: printed by the one escaping rule.
    let mut esc = crate::terminal::Escaping::new(out, json_out);
    let out: &mut dyn Write = &mut esc;
    let groups = runs_by_root(paths)?;
    let mut rows = Vec::new();
    let mut reach: BTreeMap<String, Reachability> = BTreeMap::new();
    for (root, runs) in &groups {
        let state = State::open_for_reading(root)?;
        let known = state.summaries()?;
        let cache = CountsCache::open(root, !fresh);
        // Runs are read on all cores (parsing dominates over thousands).
        let mut read = Vec::new();
        for r in crate::read::par_map(runs, |dir| status_rows(&known, &cache, dir)) {
            let (r, f) = r?;
            rows.extend(r);
            read.extend(f);
        }
        cache.save(&read, runs);
        for r in state.reachability()? {
            // The same target seen from several roots: the newest news.
            let newer = reach
                .get(&r.target)
                .is_none_or(|old| r.last_reachable > old.last_reachable);
            if newer {
                reach.insert(r.target.clone(), r);
            }
        }
    }
    let w = |out: &mut dyn Write, s: String| {
        writeln!(out, "{s}").map_err(|e| Error::io("<stdout>", "write", e))
    };
    let targets: Vec<_> = reach.into_values().collect();
    let summary = fleet::summarize(&rows);
    if json_out {
        rows.push(json!({"kind": "summary", "summary": summary}));
        rows.extend(targets.iter().map(|r| {
            json!({"kind": "target", "target": r.target, "reachable": r.next_attempt.is_none(),
                   "last_reachable": r.last_reachable, "next_attempt": r.next_attempt})
        }));
        return w(out, serde_json::Value::Array(rows).to_string());
    }
    for r in &targets {
        w(out, target_line(r))?;
    }
    if rows.is_empty() {
        return w(out, "no runs".into());
    }
    for line in fleet::render(&summary) {
        w(out, line)?;
    }
    let listed: Vec<&serde_json::Value> = if all || rows.len() <= fleet::LIST_AT_MOST {
        rows.iter().collect()
    } else {
        rows.iter().filter(|r| fleet::needs_attention(r)).collect()
    };
    let shown = if all {
        listed.len()
    } else {
        listed.len().min(fleet::LIST_AT_MOST)
    };
    if !all && rows.len() > fleet::LIST_AT_MOST {
        w(
            out,
            match listed.len() {
                0 => "every run is complete (--all lists them)".into(),
                n => format!("runs that need a look ({n}; --all lists every run):"),
            },
        )?;
    }
    for r in &listed[..shown] {
        if let Some(e) = r.get("error") {
            w(
                out,
                format!(
                    "{}  unreadable: {}",
                    r["path"].as_str().unwrap_or(""),
                    e.as_str().unwrap_or("")
                ),
            )?;
            continue;
        }
        let target = r["target"].as_str().unwrap_or("(not uploaded anywhere)");
        let mut line = format!(
            "{}  {}  {}  calls {}/{} uploaded, {} pending",
            r["run_id"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            target,
            r["calls_uploaded"],
            r["calls_recorded"],
            r["pending_calls"],
        );
        if let Some(m) = r["media_uploaded"].as_u64() {
            line.push_str(&format!(", media {m}/{}", r["media_recorded"]));
        }
        if let Some(s) = r["remote_status"].as_str() {
            line.push_str(&format!(", remote {s}"));
        }
        if let Some(e) = r["last_error"].as_str() {
            line.push_str(&format!("\n    last error: {e}"));
        }
        w(out, line)?;
    }
    if shown < listed.len() {
        w(
            out,
            format!("… and {} more (--all lists them)", listed.len() - shown),
        )?;
    }
    Ok(())
}
