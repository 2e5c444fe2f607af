//! `difflog-sync watch`: follows run directories as they appear and grow and
//! uploads what is new whenever the target is reachable.
//!
//! File-system events (`notify`, not polling) mark runs dirty; a short
//! debounce batches the appends of a busy writer. While the target is
//! unreachable, dirty runs are retried with exponential backoff and jitter
//! (honouring `Retry-After`). With nothing to do the loop waits on the event
//! channel alone — no timer — so an idle daemon uses no CPU, except a
//! liveness check every few seconds while some run is live (a writer killed
//! with SIGKILL leaves no event behind).
//!
//! # Cancel safety
//! SIGINT/SIGTERM drop the pass in flight. That is safe: the state advances
//! only after the server acknowledged an item, and every item is idempotent
//! on the server, so the next start redoes at most the interrupted item.

use super::engine::sync_run;
use super::retry::{Backoff, Class};
use super::state::{State, STATE_DIR};
use super::targets::target;
use super::TargetSpec;
use crate::error::{Error, Result};
use crate::read::{find_runs, RunState};
use notify::{RecursiveMode, Watcher};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// How long to wait for more events before syncing.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// How often live runs are checked for a writer that died silently.
const LIVENESS: Duration = Duration::from_secs(5);

/// Why `watch` stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT or SIGTERM.
    Signal,
    /// The target refused the credentials.
    Auth(String),
}

/// The run directory an event path belongs to, if any.
fn run_of(roots: &[PathBuf], path: &Path) -> Option<(PathBuf, PathBuf)> {
    for root in roots {
        if let Ok(rel) = path.strip_prefix(root) {
            let first = rel.components().next()?;
            let name = first.as_os_str().to_string_lossy();
            if name.starts_with('.') || name == STATE_DIR {
                return None;
            }
            return Some((root.clone(), root.join(first.as_os_str())));
        }
    }
    None
}

/// Runs the daemon until a signal or refused credentials.
pub fn watch(
    roots: &[PathBuf],
    spec: &TargetSpec,
    concurrency: usize,
    out: &mut dyn Write,
) -> Result<Stop> {
    let mut canonical = Vec::new();
    for r in roots {
        std::fs::create_dir_all(r).map_err(|e| Error::io(r, "create watched root", e))?;
        canonical.push(
            r.canonicalize()
                .map_err(|e| Error::io(r, "resolve watched root", e))?,
        );
    }
    let t = target(spec)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start the async runtime: {e}")))?;
    let mut states = HashMap::new();
    for r in &canonical {
        states.insert(r.clone(), State::open(r)?);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            // Only changes matter. Reads (ours included: syncing a run opens
            // its files) raise access events that would wake us forever.
            use notify::event::{AccessKind, AccessMode, EventKind};
            let change = matches!(
                ev.kind,
                EventKind::Create(_)
                    | EventKind::Modify(_)
                    | EventKind::Remove(_)
                    | EventKind::Any
                    | EventKind::Access(AccessKind::Close(AccessMode::Write))
            );
            if change {
                for p in ev.paths {
                    let _ = tx.send(p);
                }
            }
        }
    })
    .map_err(|e| Error::Invalid(format!("cannot watch files: {e}")))?;
    for r in &canonical {
        watcher
            .watch(r, RecursiveMode::Recursive)
            .map_err(|e| Error::Invalid(format!("{}: cannot watch: {e}", r.display())))?;
    }
    let _ = writeln!(
        out,
        "watching {} for {}",
        display_roots(&canonical),
        super::redact_url(super::targets::Target::key(&t))
    );
    let _ = out.flush();

    rt.block_on(async {
        // Everything already there is due once at start.
        let mut dirty: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
        for r in &canonical {
            for run in find_runs(r)? {
                dirty.insert(run, r.clone());
            }
        }
        let mut live: BTreeSet<(PathBuf, PathBuf)> = BTreeSet::new();
        // Permanent errors already reported, so each is said once per run.
        let mut reported: HashMap<PathBuf, String> = HashMap::new();
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut retry_at: Option<Instant> = None;
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Error::Invalid(format!("cannot handle SIGTERM: {e}")))?;
        // One listener for the daemon's life (a `ctrl_c()` made anew each
        // loop could miss a signal that came in between), which also ends a
        // pass in the middle: state is committed per acknowledged batch and
        // every request is idempotent, so dropping a pass loses nothing.
        let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = sigterm.recv() => {}
            }
            let _ = stop_tx.send(true);
        });
        loop {
            let now = Instant::now();
            let wake = match (retry_at, live.is_empty(), dirty.is_empty()) {
                (Some(t), _, _) => Some(t),
                (None, _, false) => Some(now),
                (None, false, true) => Some(now + LIVENESS),
                (None, true, true) => None,
            };
            tokio::select! {
                ev = rx.recv() => {
                    let Some(p) = ev else { break };
                    if let Some((root, run)) = run_of(&canonical, &p) { dirty.insert(run, root); }
                    // Debounce: gather what the writer appends right after.
                    let until = Instant::now() + DEBOUNCE;
                    while let Ok(Some(p)) = tokio::time::timeout_at(until, rx.recv()).await {
                        if let Some((root, run)) = run_of(&canonical, &p) { dirty.insert(run, root); }
                    }
                    if retry_at.is_some() { continue; } // wait out the backoff
                }
                _ = sleep_until(wake) => {
                    if retry_at.is_none() && dirty.is_empty() {
                        // Liveness check: a silent crash ends a live run.
                        for (run, root) in &live { dirty.insert(run.clone(), root.clone()); }
                    }
                    retry_at = None;
                }
                _ = stop.changed() => return Ok(Stop::Signal),
            }
            let mut batch = std::mem::take(&mut dirty).into_iter();
            while let Some((run, root)) = batch.next() {
                if !run.join(crate::format::RUN_JSON).is_file() {
                    continue; // not (yet) a run: its run.json event will come
                }
                let Some(state) = states.get(&root) else { continue };
                // Cancel safety: see the stop listener above.
                let result = tokio::select! {
                    r = sync_run(&t, state, &run, concurrency) => r,
                    _ = stop.changed() => return Ok(Stop::Signal),
                };
                match result {
                    Ok(p) => {
                        backoff.reset();
                        let entry = (run.clone(), root.clone());
                        if p.state == RunState::Live { live.insert(entry); } else { live.remove(&entry); }
                        tracing::info!("{}: calls {}/{} status {:?}", p.run_id, p.calls_uploaded, p.calls_recorded, p.status);
                    }
                    Err(e) if e.class == Class::Auth => return Ok(Stop::Auth(e.message)),
                    Err(e) if e.class == Class::Transient => {
                        let d = backoff.next_delay(e.retry_after);
                        tracing::warn!("{}: {e}; retrying in {:.1} s", run.display(), d.as_secs_f64());
                        dirty.insert(run, root);
                        // The target is down for all runs: keep the rest for later.
                        dirty.extend(batch.by_ref());
                        retry_at = Some(Instant::now() + d);
                    }
                    Err(e) => {
                        // Permanent: reported once (and kept in the state);
                        // retried only when the run changes.
                        if reported.get(&run) != Some(&e.message) {
                            tracing::error!("{}: {e}", run.display());
                            let _ = writeln!(std::io::stderr(), "difflog-sync: {}: {e}", run.display());
                            reported.insert(run.clone(), e.message.clone());
                        }
                    }
                }
            }
        }
        Ok(Stop::Signal)
    })
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn display_roots(roots: &[PathBuf]) -> String {
    roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
