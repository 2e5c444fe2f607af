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
//! Each target works through its due runs in a sequence of its own (see
//! [`Daemon::run`]): one that is down or stalled holds only itself.
//!
//! # Cancel safety
//! SIGINT/SIGTERM (and a network change that finds a target stuck) drop
//! the sequences in flight. That is safe: the state advances
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
use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::{FuturesUnordered, StreamExt};
use notify::{RecursiveMode, Watcher};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
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

/// One target's result for one run in its sequence (`None`: not synced,
/// the folder is not a run yet or has no state).
struct Done {
    slot: usize,
    run: PathBuf,
    root: PathBuf,
    phase: Phase,
    result: Option<std::result::Result<super::engine::Progress, super::error::SyncError>>,
}

/// A run due to a target, with the root it belongs to.
type Due = (PathBuf, PathBuf);

/// The targets' sequences in flight; each ends with its slot's index.
type Sequences<'a> = FuturesUnordered<Pin<Box<dyn Future<Output = usize> + 'a>>>;

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
/// credentials. `metadata_first` (thin links): each target's sequence
/// sends every due run's metadata and tables before any media.
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
    let rt = super::engine::runtime()?;
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
        let mut daemon = Daemon::new(&canonical, &ts, &states, concurrency)?;
        daemon.metadata_first = metadata_first;
        daemon.run(files).await
    })
}

/// The daemon's loop and what it remembers between sequences.
struct Daemon<'a> {
    roots: &'a [PathBuf],
    /// Each target with its own queue, backoff and sequence.
    slots: Vec<Slot<'a>>,
    states: &'a HashMap<PathBuf, State>,
    concurrency: usize,
    /// Each sequence sends its runs' metadata and tables first.
    metadata_first: bool,
    /// Runs whose writer was alive when last synced.
    live: BTreeSet<(PathBuf, PathBuf)>,
    /// When live runs are next checked for a writer that died.
    next_liveness: Option<Instant>,
    /// The machine's network changes, where they can be followed.
    net: Option<NetEvents>,
}

/// One target of the daemon: what is due for it, and when it may be tried.
/// A target that is down or stalled waits alone; the others keep uploading.
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
    /// Its sequence in flight, if any.
    running: Option<Running>,
}

/// A target's sequence in flight: the runs it took and how it began.
struct Running {
    /// Runs it took whose outcome has not come yet: due again if it ends
    /// without them (it stopped at an error, or was dropped).
    taken: BTreeMap<PathBuf, PathBuf>,
    /// When it began (a target that has not answered since is stuck).
    started: SystemTime,
    /// A network change took something down while it ran.
    went_down: bool,
    /// Drops it (a network change found it stuck).
    abort: AbortHandle,
}

impl Slot<'_> {
    /// Whether a sequence may send to it now.
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

    /// Whether its sequence is stuck: no answer from the target since it
    /// began, or something went down meanwhile. A connection attempted
    /// while the link was down waits for its timeout (10 s) long after the
    /// link is back.
    fn stuck(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| r.went_down || self.t.last_answer().is_none_or(|a| a < r.started))
    }
}

impl<'a> Daemon<'a> {
    fn new(
        roots: &'a [PathBuf],
        ts: &'a [AnyTarget],
        states: &'a HashMap<PathBuf, State>,
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
                running: None,
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

    /// The loop. Each target works through its due runs in a sequence of
    /// its own, and a target whose sequence ended starts the next with
    /// whatever became due meanwhile — so a target that stalls (accepts
    /// connections and never answers) holds only itself, and runs recorded
    /// while it stalls reach the others at once.
    async fn run(&mut self, mut files: UnboundedReceiver<PathBuf>) -> Result<Stop> {
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Error::System {
                what: "handle SIGTERM",
                why: e.to_string(),
            })?;
        // One listener for the daemon's life (a `ctrl_c()` made anew each
        // loop could miss a signal that came in between). Returning drops
        // the sequences in flight: state is committed per acknowledged
        // batch and every request is idempotent, so that loses nothing.
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
        let (tx, mut done) = tokio::sync::mpsc::unbounded_channel::<Done>();
        let mut running: Sequences<'a> = FuturesUnordered::new();
        loop {
            self.start(&mut running, &tx);
            let wake = self.wake();
            tokio::select! {
                ev = files.recv() => {
                    let Some(p) = ev else { return Ok(Stop::Signal) };
                    self.mark(&p);
                    // Debounce: gather what the writer appends right after.
                    let until = Instant::now() + DEBOUNCE;
                    while let Ok(Some(p)) = tokio::time::timeout_at(until, files.recv()).await {
                        self.mark(&p);
                    }
                }
                Some(d) = done.recv() => {
                    if let Some(s) = self.take(d) {
                        return Ok(s);
                    }
                }
                Some(i) = running.next(), if !running.is_empty() => {
                    if let Some(s) = self.ended(i, &mut done) {
                        return Ok(s);
                    }
                }
                _ = sleep_until(wake) => {
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
                    let Some(change) = take_change(&mut self.net, &self.slots, change) else { continue };
                    self.network_changed(change);
                }
                _ = stop.changed() => return Ok(Stop::Signal),
            }
            if !self.live.is_empty() && self.next_liveness.is_none() {
                self.next_liveness = Some(Instant::now() + LIVENESS);
            }
        }
    }

    /// Starts a sequence for every ready target that has runs due and none
    /// in flight: it takes those runs and goes through them in order (with
    /// `metadata_first`, every run's metadata and tables before any
    /// media), stopping at its first error that is not the run's own
    /// (unreachable, refused, a server error). Each outcome reaches `tx`
    /// as it comes, so a sequence dropped half way keeps what it finished.
    fn start(&mut self, running: &mut Sequences<'a>, tx: &UnboundedSender<Done>) {
        let phases: &'static [Phase] = if self.metadata_first {
            &[Phase::Metadata, Phase::All]
        } else {
            &[Phase::All]
        };
        let (states, concurrency) = (self.states, self.concurrency);
        for (slot, s) in self.slots.iter_mut().enumerate() {
            if !s.ready() || s.running.is_some() || s.dirty.is_empty() {
                continue;
            }
            let taken = std::mem::take(&mut s.dirty);
            let runs: Vec<Due> = taken.iter().map(|(a, b)| (a.clone(), b.clone())).collect();
            let (abort, registration) = AbortHandle::new_pair();
            s.running = Some(Running {
                taken,
                started: SystemTime::now(),
                went_down: false,
                abort,
            });
            let (t, tx) = (s.t, tx.clone());
            let sequence = async move {
                for &phase in phases {
                    for (run, root) in &runs {
                        let result = match states.get(root) {
                            Some(state) if run.join(crate::format::RUN_JSON).is_file() => {
                                sync_run_to_all(&[t], state, run, concurrency, phase)
                                    .await
                                    .pop()
                            }
                            _ => None,
                        };
                        let halt = matches!(&result, Some(Err(e)) if e.class != Class::Permanent);
                        let (run, root) = (run.clone(), root.clone());
                        let _ = tx.send(Done {
                            slot,
                            run,
                            root,
                            phase,
                            result,
                        });
                        if halt {
                            return;
                        }
                    }
                }
            };
            running.push(Box::pin(async move {
                let _ = Abortable::new(sequence, registration).await;
                slot
            }));
        }
    }

    /// Acts on one outcome of a sequence. `Some` when the daemon must stop.
    fn take(&mut self, d: Done) -> Option<Stop> {
        let error = matches!(&d.result, Some(Err(_)));
        let halted = matches!(&d.result, Some(Err(e)) if e.class != Class::Permanent);
        if d.phase == Phase::All || halted {
            if let Some(r) = &mut self.slots[d.slot].running {
                r.taken.remove(&d.run);
            }
        }
        // The metadata part counts only when it failed (the rest follows).
        if d.phase == Phase::Metadata && !error {
            return None;
        }
        // None: not (yet) a run: its run.json event will come.
        let result = d.result?;
        let stop = self.outcome(d.slot, &d.run, &d.root, result);
        self.note_reachability();
        stop
    }

    /// Slot `i`'s sequence ended (went through its runs, stopped at an
    /// error, or was dropped): its outcomes are taken first, then the runs
    /// it did not finish are due again.
    fn ended(&mut self, i: usize, done: &mut UnboundedReceiver<Done>) -> Option<Stop> {
        while let Ok(d) = done.try_recv() {
            if let Some(s) = self.take(d) {
                return Some(s);
            }
        }
        let s = &mut self.slots[i];
        if let Some(r) = s.running.take() {
            if s.refused.is_none() {
                for (run, root) in r.taken {
                    s.dirty.entry(run).or_insert(root);
                }
            }
        }
        self.note_reachability();
        None
    }

    /// After a settled network change: something came up, so a target
    /// waiting for its retry is tried now and a stuck sequence is dropped
    /// (its runs are due again and it starts afresh at once).
    fn network_changed(&mut self, change: Change) {
        for s in &mut self.slots {
            if let Some(r) = &mut s.running {
                r.went_down |= change == Change::Down;
            }
        }
        if change != Change::Up {
            return;
        }
        for s in &mut self.slots {
            if s.stuck() {
                if let Some(r) = &s.running {
                    r.abort.abort();
                }
                s.try_now();
            } else if s.retry_at.is_some() {
                s.try_now();
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
    /// of an idle ready target with work (now), a target's retry, the
    /// liveness check. A target with a sequence in flight wakes the loop
    /// when it ends.
    fn wake(&self) -> Option<Instant> {
        let now = Instant::now();
        self.slots
            .iter()
            .filter(|s| s.refused.is_none() && s.running.is_none())
            .filter_map(|s| match (s.retry_at, s.dirty.is_empty()) {
                (Some(t), _) => Some(t),
                (None, false) => Some(now),
                (None, true) => None,
            })
            .chain(self.next_liveness)
            .min()
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
            running: None,
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
