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

use super::engine::sync_run;
use super::netwatch::{self, Change, NetEvents};
use super::retry::{Backoff, Class};
use super::state::{State, STATE_DIR};
use super::targets::{target, AnyTarget, Target};
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
    let _ = writeln!(
        out,
        "watching {} for {}",
        display_roots(&canonical),
        super::redact_url(Target::key(&t))
    );
    let _ = out.flush();
    rt.block_on(async {
        let mut daemon = Daemon::new(&canonical, &t, states, concurrency)?;
        daemon.run(files).await
    })
}

/// The daemon's loop and what it remembers between passes.
struct Daemon<'a> {
    roots: &'a [PathBuf],
    t: &'a AnyTarget,
    states: HashMap<PathBuf, State>,
    concurrency: usize,
    /// Runs to sync, with the root each belongs to.
    dirty: BTreeMap<PathBuf, PathBuf>,
    /// Runs whose writer was alive at the last pass.
    live: BTreeSet<(PathBuf, PathBuf)>,
    /// Permanent errors already reported, so each is said once per run.
    reported: HashMap<PathBuf, String>,
    /// The machine's network changes, where they can be followed.
    net: Option<NetEvents>,
    backoff: Backoff,
    /// While the target is unreachable: when to try again.
    retry_at: Option<Instant>,
    /// The last answer and next attempt written to the state.
    noted: (Option<String>, Option<String>),
}

impl<'a> Daemon<'a> {
    fn new(
        roots: &'a [PathBuf],
        t: &'a AnyTarget,
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
        Ok(Daemon {
            roots,
            t,
            states,
            concurrency,
            dirty,
            live: BTreeSet::new(),
            reported: HashMap::new(),
            net: None,
            // Not `retry::retry`: the daemon never gives up, and its waits
            // are raced against file events, signals and network changes.
            backoff: Backoff::new(Duration::from_secs(1), max),
            retry_at: None,
            noted: (None, None),
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
                    if self.retry_at.is_some() { continue; } // wait out the backoff
                }
                _ = sleep_until(self.wake()) => {
                    if self.retry_at.is_none() && self.dirty.is_empty() {
                        // Liveness check: a silent crash ends a live run.
                        for (run, root) in &self.live { self.dirty.insert(run.clone(), root.clone()); }
                    }
                    self.retry_at = None;
                }
                change = next_change(&mut self.net) => {
                    let up = take_change(&mut self.net, self.t, change) == Some(Change::Up);
                    if !up || self.retry_at.is_none() { continue; }
                    self.try_now();
                }
                _ = stop.changed() => return Ok(Stop::Signal),
            }
            if let Some(s) = self.pass(&mut stop).await {
                return Ok(s);
            }
        }
    }

    /// Ends the wait for a retry: the network came up, so the target may
    /// be reachable now. The backoff starts again from its first step.
    fn try_now(&mut self) {
        tracing::info!(
            "network changed: trying {} now",
            super::redact_url(self.t.key())
        );
        self.backoff.reset();
        self.retry_at = None;
    }

    /// Marks the run an event path belongs to as dirty.
    fn mark(&mut self, p: &Path) {
        if let Some((root, run)) = run_of(self.roots, p) {
            self.dirty.insert(run, root);
        }
    }

    /// When the loop must wake up without an event, if ever.
    fn wake(&self) -> Option<Instant> {
        match (self.retry_at, self.live.is_empty(), self.dirty.is_empty()) {
            (Some(t), _, _) => Some(t),
            (None, _, false) => Some(Instant::now()),
            (None, false, true) => Some(Instant::now() + LIVENESS),
            (None, true, true) => None,
        }
    }

    /// Syncs the dirty runs, one after another, until the target fails to
    /// answer (the rest then waits for the retry). `Some` when the daemon
    /// must stop.
    ///
    /// A network change during the pass drops the target's idle connections.
    /// When something came up and the pass is stuck (the target has not
    /// answered since the pass began, or a change took something down
    /// meanwhile), the pass is dropped and started again at once: a
    /// connection attempted while the link was down waits for its timeout
    /// (10 s) long after the link is back. Dropping a pass is safe (see the
    /// stop listener in `run`); a pass that is making progress is left alone.
    async fn pass(&mut self, stop: &mut tokio::sync::watch::Receiver<bool>) -> Option<Stop> {
        let mut batch = std::mem::take(&mut self.dirty).into_iter();
        let started = std::time::SystemTime::now();
        let mut went_down = false;
        while let Some((run, root)) = batch.next() {
            if !run.join(crate::format::RUN_JSON).is_file() {
                continue; // not (yet) a run: its run.json event will come
            }
            let Some(state) = self.states.get(&root) else {
                continue;
            };
            let t = self.t;
            let result = {
                let sync = sync_run(t, state, &run, self.concurrency);
                tokio::pin!(sync);
                loop {
                    tokio::select! {
                        r = &mut sync => break Some(r),
                        _ = stop.changed() => return Some(Stop::Signal),
                        change = next_change(&mut self.net) => {
                            let Some(change) = take_change(&mut self.net, t, change) else { continue };
                            went_down |= change == Change::Down;
                            let stuck = went_down || t.last_answer().is_none_or(|a| a < started);
                            if change == Change::Up && stuck { break None; }
                        }
                    }
                }
            };
            let Some(result) = result else {
                // Start again now, on fresh connections, this run first.
                self.dirty.insert(run, root);
                self.dirty.extend(batch.by_ref());
                self.try_now();
                return None;
            };
            match result {
                Ok(p) => {
                    self.backoff.reset();
                    let entry = (run.clone(), root.clone());
                    if p.state == RunState::Live {
                        self.live.insert(entry);
                    } else {
                        self.live.remove(&entry);
                    }
                    tracing::info!(
                        "{}: calls {}/{} status {:?}",
                        p.run_id,
                        p.calls_uploaded,
                        p.calls_recorded,
                        p.status
                    );
                }
                Err(e) if e.class == Class::Auth => return Some(Stop::Auth(e.message)),
                Err(e) if e.class == Class::Transient => {
                    let d = self.backoff.next_delay(e.retry_after);
                    tracing::warn!(
                        "{}: {e}; retrying in {:.1} s",
                        run.display(),
                        d.as_secs_f64()
                    );
                    self.dirty.insert(run, root);
                    // The target is down for all runs: keep the rest for later.
                    self.dirty.extend(batch.by_ref());
                    self.retry_at = Some(Instant::now() + d);
                    break;
                }
                Err(e) => {
                    // Permanent: reported once (and kept in the state);
                    // retried only when the run changes.
                    if self.reported.get(&run) != Some(&e.message) {
                        tracing::error!("{}: {e}", run.display());
                        let _ = writeln!(std::io::stderr(), "difflog-sync: {}: {e}", run.display());
                        self.reported.insert(run.clone(), e.message.clone());
                    }
                }
            }
        }
        self.note_reachability();
        None
    }

    /// Writes what `status` shows of the target: when it last answered and,
    /// while it is unreachable, when the next attempt is due (only when
    /// either changed).
    fn note_reachability(&mut self) {
        let answered = self.t.last_answer().map(rfc3339);
        let next = self.retry_at.map(|at| {
            rfc3339(std::time::SystemTime::now() + at.saturating_duration_since(Instant::now()))
        });
        let now = (answered, next);
        if now == self.noted || now == (None, None) {
            return;
        }
        for state in self.states.values() {
            if let Err(e) = state.set_reachability(self.t.key(), now.0.as_deref(), now.1.as_deref())
            {
                tracing::warn!("{e}");
            }
        }
        self.noted = now;
    }
}

/// Acts on what [`next_change`] gave: forgets a listener that stopped (it
/// said why), and after any change drops the target's idle connections,
/// which may be dead. Returns the change.
fn take_change(
    net: &mut Option<NetEvents>,
    t: &AnyTarget,
    change: Option<Change>,
) -> Option<Change> {
    let Some(change) = change else {
        *net = None;
        return None;
    };
    t.network_changed();
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
