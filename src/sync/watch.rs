//! `difflog-sync watch`: follows run directories as they appear and grow and
//! uploads what is new whenever the target is reachable.
//!
//! File-system events (`notify`, not polling) mark runs dirty; a short
//! debounce batches the appends of a busy writer. While the target is
//! unreachable, dirty runs are retried with exponential backoff and jitter
//! (honouring `Retry-After`), and the machine's network changes
//! ([`super::netwatch`]) cut the wait short: when a link, address or route
//! appears, pending runs are tried at once (one attempt per settled change)
//! and the backoff starts again from its first step. With nothing to do the
//! loop waits on its event channels alone — no timer — so an idle daemon
//! uses no CPU, except a liveness check every few seconds while some run is
//! live (a writer killed with SIGKILL leaves no event behind).
//!
//! # Cancel safety
//! SIGINT/SIGTERM drop the pass in flight. That is safe: the state advances
//! only after the server acknowledged an item, and every item is idempotent
//! on the server, so the next start redoes at most the interrupted item.

use super::engine::{sync_run_to_all, Phase};
use super::netwatch::{self, Change, NetEvents};
use super::retry::{Backoff, Class};
use super::state::{State, STATE_DIR};
use super::targets::{targets, AnyTarget, Target};
use super::TargetSpec;
use crate::error::{Error, Result};
use crate::format::rfc3339;
use crate::read::{find_runs, RunState};
use notify::{RecursiveMode, Watcher};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

/// How long to wait for more events before syncing.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// How long network changes must be quiet before the daemon acts on them (a
/// link brings its addresses and routes a moment after it comes up).
const NET_SETTLE: Duration = Duration::from_millis(200);
/// How often live runs are checked for a writer that died silently.
const LIVENESS: Duration = Duration::from_secs(5);
/// The longest wait between attempts while the target is unreachable.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Lowers [`BACKOFF_MAX`] (seconds), for tests and benchmarks that need an
/// outage longer than the cap without waiting minutes.
pub const BACKOFF_MAX_ENV: &str = "DIFFLOG_WATCH_BACKOFF_MAX_SECONDS";

/// One target's result for one run in a pass (`None`: not synced, the
/// folder is not a run yet or has no state).
struct Done {
    slot: usize,
    run: PathBuf,
    root: PathBuf,
    result: Option<std::result::Result<super::engine::Progress, super::error::SyncError>>,
}

/// A run due to a target, with the root it belongs to.
type Due = (PathBuf, PathBuf);

/// How a pass's uploads ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// Every target went through its runs (or stopped at an error).
    Done,
    /// SIGINT or SIGTERM.
    Signal,
    /// A network change found the pass stuck: start again.
    Restart,
}

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

/// Runs the daemon until a signal, or until every target refused the
/// credentials. `metadata_first` (thin links): each pass sends every due
/// run's metadata and tables before any media.
pub fn watch(
    roots: &[PathBuf],
    specs: &[TargetSpec],
    concurrency: usize,
    metadata_first: bool,
    out: &mut dyn Write,
) -> Result<Stop> {
    // Server answers reach these lines: printed by the one escaping rule.
    let mut esc = crate::terminal::Escaping::text(out);
    let out: &mut dyn Write = &mut esc;
    let mut canonical = Vec::new();
    for r in roots {
        std::fs::create_dir_all(r).map_err(|e| Error::io(r, "create watched root", e))?;
        canonical.push(
            r.canonicalize()
                .map_err(|e| Error::io(r, "resolve watched root", e))?,
        );
    }
    let ts = targets(specs)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::System {
            what: "start the async runtime",
            why: e.to_string(),
        })?;
    let mut states = HashMap::new();
    for r in &canonical {
        states.insert(r.clone(), State::open(r)?);
    }
    let (tx, files) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
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
    .map_err(|e| Error::System {
        what: "watch files",
        why: e.to_string(),
    })?;
    for r in &canonical {
        watcher
            .watch(r, RecursiveMode::Recursive)
            .map_err(|e| Error::System {
                what: "watch a runs folder",
                why: format!("{}: {e}", r.display()),
            })?;
    }
    let names: Vec<String> = ts.iter().map(|t| super::redact_url(t.key())).collect();
    let _ = writeln!(
        out,
        "watching {} for {}",
        display_roots(&canonical),
        names.join(", ")
    );
    let _ = out.flush();
    rt.block_on(async {
        let mut daemon = Daemon::new(&canonical, &ts, states, concurrency)?;
        daemon.metadata_first = metadata_first;
        daemon.run(files).await
    })
}

/// The daemon's loop and what it remembers between passes.
struct Daemon<'a> {
    roots: &'a [PathBuf],
    /// Each target with its own queue and backoff.
    slots: Vec<Slot<'a>>,
    states: HashMap<PathBuf, State>,
    concurrency: usize,
    /// Each pass sends every due run's metadata and tables first.
    metadata_first: bool,
    /// Runs whose writer was alive at the last pass.
    live: BTreeSet<(PathBuf, PathBuf)>,
    /// When live runs are next checked for a writer that died.
    next_liveness: Option<Instant>,
    /// The machine's network changes, where they can be followed.
    net: Option<NetEvents>,
}

/// One target of the daemon: what is due for it, and when it may be tried.
/// A target that is down waits alone; the others keep uploading.
struct Slot<'a> {
    t: &'a AnyTarget,
    /// Runs to sync to it, with the root each belongs to.
    dirty: BTreeMap<PathBuf, PathBuf>,
    /// Permanent errors already reported, so each is said once per run.
    reported: HashMap<PathBuf, String>,
    backoff: Backoff,
    /// While it is unreachable: when to try again.
    retry_at: Option<Instant>,
    /// The last answer and next attempt written to the state.
    noted: (Option<String>, Option<String>),
    /// It refused the credentials: nothing more goes to it.
    refused: Option<String>,
}

impl Slot<'_> {
    /// Whether a pass may send to it now.
    fn ready(&self) -> bool {
        self.retry_at.is_none() && self.refused.is_none()
    }

    /// Ends the wait for a retry: the network came up, so the target may
    /// be reachable now. The backoff starts again from its first step.
    fn try_now(&mut self) {
        if self.retry_at.is_some() {
            tracing::info!(
                "network changed: trying {} now",
                super::redact_url(self.t.key())
            );
        }
        self.backoff.reset();
        self.retry_at = None;
    }
}

impl<'a> Daemon<'a> {
    fn new(
        roots: &'a [PathBuf],
        ts: &'a [AnyTarget],
        states: HashMap<PathBuf, State>,
        concurrency: usize,
    ) -> Result<Daemon<'a>> {
        // Everything already there is due once at start.
        let mut dirty = BTreeMap::new();
        for r in roots {
            for run in find_runs(r)? {
                dirty.insert(run, r.clone());
            }
        }
        let max = std::env::var(BACKOFF_MAX_ENV)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(BACKOFF_MAX, |s| Duration::from_secs_f64(s).min(BACKOFF_MAX));
        let slots = ts
            .iter()
            .map(|t| Slot {
                t,
                dirty: dirty.clone(),
                reported: HashMap::new(),
                // Not `retry::retry`: the daemon never gives up, and its waits
                // are raced against file events, signals and network changes.
                backoff: Backoff::new(Duration::from_secs(1), max),
                retry_at: None,
                noted: (None, None),
                refused: None,
            })
            .collect();
        Ok(Daemon {
            roots,
            slots,
            states,
            concurrency,
            metadata_first: false,
            live: BTreeSet::new(),
            next_liveness: None,
            net: None,
        })
    }

    async fn run(&mut self, mut files: UnboundedReceiver<PathBuf>) -> Result<Stop> {
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Error::System {
                what: "handle SIGTERM",
                why: e.to_string(),
            })?;
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
        self.net = match netwatch::listen() {
            Ok(n) => Some(n),
            Err(why) => {
                tracing::warn!(
                    "network changes are not followed ({why}); an unreachable target is retried with backoff alone"
                );
                None
            }
        };
        loop {
            tokio::select! {
                ev = files.recv() => {
                    let Some(p) = ev else { return Ok(Stop::Signal) };
                    self.mark(&p);
                    // Debounce: gather what the writer appends right after.
                    let until = Instant::now() + DEBOUNCE;
                    while let Ok(Some(p)) = tokio::time::timeout_at(until, files.recv()).await {
                        self.mark(&p);
                    }
                    // A target in its backoff waits it out.
                    if !self.slots.iter().any(|s| s.ready() && !s.dirty.is_empty()) { continue; }
                }
                _ = sleep_until(self.wake()) => {
                    let now = Instant::now();
                    for s in &mut self.slots {
                        if s.retry_at.is_some_and(|t| t <= now) { s.retry_at = None; }
                    }
                    if self.next_liveness.is_some_and(|t| t <= now) {
                        // Liveness check: a silent crash ends a live run.
                        self.next_liveness = None;
                        for s in self.slots.iter_mut().filter(|s| s.ready()) {
                            for (run, root) in &self.live { s.dirty.insert(run.clone(), root.clone()); }
                        }
                    }
                }
                change = next_change(&mut self.net) => {
                    let up = take_change(&mut self.net, &self.slots, change) == Some(Change::Up);
                    if !up || self.slots.iter().all(|s| s.retry_at.is_none()) { continue; }
                    for s in &mut self.slots { s.try_now(); }
                }
                _ = stop.changed() => return Ok(Stop::Signal),
            }
            if let Some(s) = self.pass(&mut stop).await {
                return Ok(s);
            }
            if !self.live.is_empty() && self.next_liveness.is_none() {
                self.next_liveness = Some(Instant::now() + LIVENESS);
            }
        }
    }

    /// Marks the run an event path belongs to as dirty, for every target.
    fn mark(&mut self, p: &Path) {
        if let Some((root, run)) = run_of(self.roots, p) {
            for s in self.slots.iter_mut().filter(|s| s.refused.is_none()) {
                s.dirty.insert(run.clone(), root.clone());
            }
        }
    }

    /// When the loop must wake up without an event, if ever: the earliest
    /// of a ready target with work (now), a target's retry, the liveness
    /// check.
    fn wake(&self) -> Option<Instant> {
        let now = Instant::now();
        self.slots
            .iter()
            .filter(|s| s.refused.is_none())
            .filter_map(|s| match (s.retry_at, s.dirty.is_empty()) {
                (Some(t), _) => Some(t),
                (None, false) => Some(now),
                (None, true) => None,
            })
            .chain(self.next_liveness)
            .min()
    }

    /// Syncs the runs due to the ready targets: each target works through
    /// its own runs, one after another, and the targets go side by side, so
    /// a target that stalls (accepts connections and never answers) holds
    /// only itself; one that fails to answer waits for its retry with the
    /// rest of its runs, and the others go on. `Some` when the daemon must
    /// stop.
    ///
    /// A network change during the pass drops the targets' idle
    /// connections. When something came up and the pass is stuck (no
    /// target has answered since the pass began, or a change took something
    /// down meanwhile), the pass is dropped and started again at once: a
    /// connection attempted while the link was down waits for its timeout
    /// (10 s) long after the link is back. Dropping a pass is safe (see the
    /// stop listener in `run`); what it finished counts, what it did not
    /// stays due.
    async fn pass(&mut self, stop: &mut tokio::sync::watch::Receiver<bool>) -> Option<Stop> {
        if self.metadata_first {
            // Every due run's metadata and tables before any media; only
            // the failures count here (the full pass follows).
            let done = std::sync::Mutex::new(Vec::new());
            let ended = self.by_target(Phase::Metadata, stop, &done).await;
            if ended == Ended::Signal {
                return Some(Stop::Signal);
            }
            for d in done.into_inner().unwrap_or_else(|p| p.into_inner()) {
                if let Some(Err(e)) = d.result {
                    if let Some(stop) = self.outcome(d.slot, &d.run, &d.root, Err(e)) {
                        return Some(stop);
                    }
                }
            }
            if ended == Ended::Restart {
                return self.restart();
            }
        }
        let done = std::sync::Mutex::new(Vec::new());
        let ended = self.by_target(Phase::All, stop, &done).await;
        if ended == Ended::Signal {
            return Some(Stop::Signal);
        }
        for d in done.into_inner().unwrap_or_else(|p| p.into_inner()) {
            self.slots[d.slot].dirty.remove(&d.run);
            // None: not (yet) a run: its run.json event will come.
            let Some(result) = d.result else { continue };
            if let Some(stop) = self.outcome(d.slot, &d.run, &d.root, result) {
                return Some(stop);
            }
        }
        if ended == Ended::Restart {
            return self.restart();
        }
        self.note_reachability();
        None
    }

    /// After a dropped pass: every target may be tried again now.
    fn restart(&mut self) -> Option<Stop> {
        for s in &mut self.slots {
            s.try_now();
        }
        None
    }

    /// `phase` of every run due to each ready target, the targets side by
    /// side, each through its runs in order; a target stops at its first
    /// error that is not the run's own (unreachable, refused, a server
    /// error): the rest of its runs wait. What ends is put in `done` as it
    /// ends, so a pass dropped half way keeps what it finished.
    async fn by_target(
        &mut self,
        phase: Phase,
        stop: &mut tokio::sync::watch::Receiver<bool>,
        done: &std::sync::Mutex<Vec<Done>>,
    ) -> Ended {
        let work: Vec<(usize, &AnyTarget, Vec<Due>)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.ready() && !s.dirty.is_empty())
            .map(|(i, s)| {
                let runs = s.dirty.iter().map(|(a, b)| (a.clone(), b.clone()));
                (i, s.t, runs.collect())
            })
            .collect();
        if work.is_empty() {
            return Ended::Done;
        }
        let ts: Vec<&AnyTarget> = work.iter().map(|w| w.1).collect();
        let (states, concurrency) = (&self.states, self.concurrency);
        let sequences = work.into_iter().map(|(slot, t, runs)| async move {
            for (run, root) in runs {
                let state = states.get(&root);
                let result = match state {
                    Some(state) if run.join(crate::format::RUN_JSON).is_file() => {
                        sync_run_to_all(&[t], state, &run, concurrency, phase)
                            .await
                            .pop()
                    }
                    _ => None,
                };
                let halt = matches!(&result, Some(Err(e)) if e.class != Class::Permanent);
                done.lock().unwrap_or_else(|p| p.into_inner()).push(Done {
                    slot,
                    run,
                    root,
                    result,
                });
                if halt {
                    break;
                }
            }
        });
        let all = futures_util::future::join_all(sequences);
        tokio::pin!(all);
        let started = std::time::SystemTime::now();
        let mut went_down = false;
        loop {
            tokio::select! {
                _ = &mut all => return Ended::Done,
                _ = stop.changed() => return Ended::Signal,
                change = next_change(&mut self.net) => {
                    let Some(change) = take_change(&mut self.net, &self.slots, change) else { continue };
                    went_down |= change == Change::Down;
                    let stuck = went_down
                        || ts.iter().all(|t| t.last_answer().is_none_or(|a| a < started));
                    if change == Change::Up && stuck {
                        return Ended::Restart;
                    }
                }
            }
        }
    }

    /// Acts on one target's outcome for `run`. `Some` when the daemon must
    /// stop (every target refused the credentials).
    fn outcome(
        &mut self,
        i: usize,
        run: &Path,
        root: &Path,
        result: std::result::Result<super::engine::Progress, super::error::SyncError>,
    ) -> Option<Stop> {
        let live = &mut self.live;
        let slot = &mut self.slots[i];
        match result {
            Ok(p) => {
                slot.backoff.reset();
                let entry = (run.to_path_buf(), root.to_path_buf());
                if p.state == RunState::Live {
                    live.insert(entry);
                } else {
                    live.remove(&entry);
                }
                tracing::info!(
                    "{}: {}: calls {}/{} status {:?}",
                    super::redact_url(slot.t.key()),
                    p.run_id,
                    p.calls_uploaded,
                    p.calls_recorded,
                    p.status
                );
            }
            Err(e) if e.class == Class::Auth => {
                slot.dirty.clear();
                slot.refused = Some(e.message.clone());
                let refused: Vec<&str> = self
                    .slots
                    .iter()
                    .filter_map(|s| s.refused.as_deref())
                    .collect();
                if refused.len() == self.slots.len() {
                    return Some(Stop::Auth(refused.join("; ")));
                }
                tracing::error!("credentials refused, no more uploads to this target: {e}");
                let _ = writeln!(
                    std::io::stderr(),
                    "difflog-sync: credentials refused, no more uploads to this target (the others go on): {e}"
                );
            }
            Err(e) if e.class == Class::Transient => {
                let d = slot.backoff.next_delay(e.retry_after);
                tracing::warn!(
                    "{}: {e}; retrying in {:.1} s",
                    run.display(),
                    d.as_secs_f64()
                );
                // The target is down for all runs: the rest of its runs wait.
                slot.dirty.insert(run.to_path_buf(), root.to_path_buf());
                slot.retry_at = Some(Instant::now() + d);
            }
            Err(e) => {
                // Permanent: reported once (and kept in the state);
                // retried only when the run changes.
                if slot.reported.get(run) != Some(&e.message) {
                    tracing::error!("{}: {e}", run.display());
                    let _ = writeln!(std::io::stderr(), "difflog-sync: {}: {e}", run.display());
                    slot.reported.insert(run.to_path_buf(), e.message.clone());
                }
            }
        }
        None
    }

    /// Writes what `status` shows of each target: when it last answered
    /// and, while it is unreachable, when the next attempt is due (only
    /// when either changed).
    fn note_reachability(&mut self) {
        for slot in &mut self.slots {
            let answered = slot.t.last_answer().map(rfc3339);
            let next = slot.retry_at.map(|at| {
                rfc3339(std::time::SystemTime::now() + at.saturating_duration_since(Instant::now()))
            });
            let now = (answered, next);
            if now == slot.noted || now == (None, None) {
                continue;
            }
            for state in self.states.values() {
                if let Err(e) =
                    state.set_reachability(slot.t.key(), now.0.as_deref(), now.1.as_deref())
                {
                    tracing::warn!("{e}");
                }
            }
            slot.noted = now;
        }
    }
}

/// Acts on what [`next_change`] gave: forgets a listener that stopped (it
/// said why), and after any change drops every target's idle connections,
/// which may be dead. Returns the change.
fn take_change(
    net: &mut Option<NetEvents>,
    slots: &[Slot<'_>],
    change: Option<Change>,
) -> Option<Change> {
    let Some(change) = change else {
        *net = None;
        return None;
    };
    for s in slots {
        s.t.network_changed();
    }
    Some(change)
}

/// The next settled network change, or never when changes are not followed.
async fn next_change(net: &mut Option<NetEvents>) -> Option<Change> {
    match net {
        Some(n) => n.next(NET_SETTLE).await,
        None => std::future::pending().await,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 32 (tests that catch their bug): the link comes up while the
    /// server still refuses: the next wait is the backoff's first step again,
    /// not the pre-outage one.
    #[test]
    fn the_backoff_starts_again_when_the_link_comes_up() {
        let spec = crate::sync::TargetSpec::parse("mlflow+http://127.0.0.1:9").unwrap();
        let ts = crate::sync::targets::targets(&[spec]).unwrap();
        let base = Duration::from_secs(1);
        let mut slot = Slot {
            t: &ts[0],
            dirty: BTreeMap::new(),
            reported: HashMap::new(),
            backoff: Backoff::new(base, Duration::from_secs(300)),
            retry_at: None,
            noted: (None, None),
            refused: None,
        };
        // The outage: attempt after attempt fails, each wait longer.
        for _ in 0..6 {
            slot.backoff.next_delay(None);
        }
        slot.retry_at = Some(Instant::now() + Duration::from_secs(60));
        assert!(slot.backoff.next_delay(None) >= Duration::from_secs(32));
        slot.try_now();
        assert!(slot.ready());
        // The server still refuses: the wait is the first step (base/2..base).
        let d = slot.backoff.next_delay(None);
        assert!(
            d <= base,
            "after the link came up the wait was {d:?}, not the first step"
        );
    }
}
